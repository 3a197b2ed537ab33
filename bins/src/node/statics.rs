//! keepalived's `static_ipaddress`, `static_routes` and `static_rules`: addresses, routes
//! and rules the node holds whatever the VRRP states, added at its start (addresses, then
//! routes — one may take an address as its source —, then rules), deleted at its stop in
//! the reverse order, and at a reload, the ones no longer configured deleted and the new
//! ones added (keepalived 2.2.7's `vrrp_daemon.c`
//! `start_vrrp` / `stop_vrrp` and `clear_diff_static_*`). A failure is logged and the
//! others still applied: one bad route does not stop the node.

use std::net::IpAddr;

use lb_vrrp::route::VirtualRoute;
use lb_vrrp::rule::VirtualRule;
use lb_vrrp::vip::{Vip, VipManager};

use crate::config::model::{Config, VirtualIp};

/// The address as lb-vrrp adds it: its `dev`, else `default_interface` (validation
/// refuses one with neither; logged if it gets here all the same).
fn vip(cfg: &Config, a: &VirtualIp) -> Option<Vip> {
    let mut v: Vip = match a.to_string().parse() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(address = %a, error = %e, "static address skipped");
            return None;
        }
    };
    if v.dev.is_none() {
        v.dev = cfg.global.default_interface.clone();
    }
    if v.dev.is_none() {
        tracing::error!(address = %a, "static address skipped: no dev and no default_interface");
        return None;
    }
    Some(v)
}

/// Every static address of `cfg` as lb-vrrp adds it ([`vip`]).
fn vips(cfg: &Config) -> Vec<Vip> {
    cfg.static_ipaddress
        .iter()
        .filter_map(|a| vip(cfg, a))
        .collect()
}

/// Whether `cfg` has any static address, route or rule.
fn has_statics(cfg: &Config) -> bool {
    !(cfg.static_ipaddress.is_empty()
        && cfg.static_routes.is_empty()
        && cfg.static_rules.is_empty())
}

fn manager() -> Option<VipManager> {
    VipManager::new()
        .map_err(|e| tracing::error!(error = %e, "static addresses and routes: no netlink"))
        .ok()
}

/// Deletes what `old` has and `new` does not (routes first), then adds all of `new`'s
/// (addresses first; what is there already counts as added). `old`: `None` at the start.
pub(crate) async fn apply(old: Option<&Config>, new: &Config) {
    apply_keeping(old, new, &Held::default()).await;
}

/// What the Master instances of a new configuration hold now: a static address, route or
/// rule that moved into them is not deleted by the statics' diff (it would be gone until
/// the speaker's next refresh put it back).
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) routes: Vec<VirtualRoute>,
    pub(crate) rules: Vec<VirtualRule>,
}

/// [`apply`], leaving in place the old static entries that `held` names.
pub(crate) async fn apply_keeping(old: Option<&Config>, new: &Config, held: &Held) {
    if !old.is_some_and(has_statics) && !has_statics(new) {
        return;
    }
    let Some(mgr) = manager() else { return };
    if let Some(old) = old {
        let rules: Vec<&VirtualRule> = old
            .static_rules
            .iter()
            .filter(|r| !new.static_rules.contains(r) && !held.rules.contains(r))
            .collect();
        let routes: Vec<&VirtualRoute> = old
            .static_routes
            .iter()
            .filter(|r| !new.static_routes.contains(r) && !held.routes.contains(r))
            .collect();
        let new_vips = vips(new);
        let vips: Vec<Vip> = vips(old)
            .into_iter()
            .filter(|v| !new_vips.contains(v) && !held.addresses.contains(&v.addr))
            .collect();
        remove(&mgr, rules, routes, &vips).await;
    }
    for a in &new.static_ipaddress {
        let Some(v) = vip(new, a) else { continue };
        match VipManager::ifindex(v.dev.as_deref().unwrap_or_default()) {
            Ok(i) => match mgr.add(i, &v).await {
                Ok(()) => tracing::info!(address = %a, "static address added"),
                Err(e) => tracing::error!(address = %a, error = %e, "adding a static address"),
            },
            Err(e) => tracing::error!(address = %a, error = %e, "adding a static address"),
        }
    }
    for r in &new.static_routes {
        match mgr.add_route(r).await {
            Ok(_) => tracing::info!(route = %r, "static route added"),
            Err(e) => tracing::error!(error = %e, "adding a static route"),
        }
    }
    for r in &new.static_rules {
        match mgr.add_rule(r).await {
            Ok(_) => tracing::info!(rule = %r, "static rule added"),
            Err(e) => tracing::error!(error = %e, "adding a static rule"),
        }
    }
}

/// Deletes `cfg`'s static rules, routes, then addresses (the node stops).
pub(crate) async fn clear(cfg: &Config) {
    if !has_statics(cfg) {
        return;
    }
    let Some(mgr) = manager() else { return };
    remove(
        &mgr,
        cfg.static_rules.iter().collect(),
        cfg.static_routes.iter().collect(),
        &vips(cfg),
    )
    .await;
}

async fn remove(
    mgr: &VipManager,
    rules: Vec<&VirtualRule>,
    routes: Vec<&VirtualRoute>,
    vips: &[Vip],
) {
    for r in rules {
        match mgr.remove_rule(r).await {
            Ok(()) => tracing::info!(rule = %r, "static rule deleted"),
            Err(e) => tracing::error!(error = %e, "deleting a static rule"),
        }
    }
    for r in routes {
        match mgr.remove_route(r).await {
            Ok(()) => tracing::info!(route = %r, "static route deleted"),
            Err(e) => tracing::error!(error = %e, "deleting a static route"),
        }
    }
    for v in vips {
        let Ok(i) = VipManager::ifindex(v.dev.as_deref().unwrap_or_default()) else {
            // Its interface is gone, and the address with it.
            continue;
        };
        match mgr.remove(i, v).await {
            Ok(()) => tracing::info!(address = %v.addr, "static address deleted"),
            Err(e) => tracing::error!(address = %v.addr, error = %e, "deleting a static address"),
        }
    }
}

/// How often [`watch`] looks, besides netlink's notices of link and address changes.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Adds back what someone deleted of `cfg`'s static entries, as keepalived reinstates
/// them (its netlink monitor): addresses, routes with a `dev` and rules, those without
/// `no_track` (keepalived tracks those only). Looks at each netlink notice of a link or
/// address change and every second (a route's or rule's deletion makes no such notice).
/// `None` when there is nothing to watch. Aborted at the next reload and at the stop.
pub(crate) fn watch(cfg: &Config) -> Option<tokio::task::JoinHandle<()>> {
    let vips = vips(cfg);
    let routes: Vec<VirtualRoute> = cfg
        .static_routes
        .iter()
        .filter(|r| r.dev.is_some() && !r.no_track)
        .cloned()
        .collect();
    let rules: Vec<VirtualRule> = cfg
        .static_rules
        .iter()
        .filter(|r| !r.no_track)
        .cloned()
        .collect();
    if vips.is_empty() && routes.is_empty() && rules.is_empty() {
        return None;
    }
    let mgr = manager()?;
    Some(tokio::spawn(async move {
        let notices = lb_vrrp::vip::LinkNotices::open()
            .map_err(|e| tracing::warn!(error = %e, "no netlink notices: static entries are checked every second only"))
            .ok();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What failed to come back, logged once until it does.
        let mut failing: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut report = |what: String, r: Result<bool, String>| match r {
            Ok(true) => {
                failing.remove(&what);
                tracing::warn!(entry = %what, "static entry deleted by someone else: added back");
            }
            Ok(false) => {
                failing.remove(&what);
            }
            Err(e) => {
                if failing.insert(what.clone()) {
                    tracing::error!(entry = %what, error = %e, "static entry deleted by someone else: cannot add it back (tried again every second)");
                }
            }
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = lb_vrrp::vip::next_notice(notices.as_ref(), |_| true) => {}
            }
            let ifs = lb_vrrp::vip::Interfaces::read();
            for v in &vips {
                let dev = v.dev.as_deref().unwrap_or_default();
                if ifs.has_address(dev, v.addr) || !ifs.link_is_up(dev) {
                    continue;
                }
                let r = match VipManager::ifindex(dev) {
                    Ok(i) => mgr
                        .add(i, v)
                        .await
                        .map(|()| true)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                report(format!("address {} dev {dev}", v.addr), r);
            }
            for r in &routes {
                let added = mgr.add_route(r).await.map_err(|e| e.to_string());
                report(format!("route {r}"), added);
            }
            for r in &rules {
                let added = mgr.add_rule(r).await.map_err(|e| e.to_string());
                report(format!("rule {r}"), added);
            }
        }
    }))
}
