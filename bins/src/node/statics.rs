//! keepalived's `static_ipaddress` and `static_routes`: addresses and routes the node
//! holds whatever the VRRP states, added at its start (addresses first: a route may take
//! one as its source), deleted at its stop (routes first), and at a reload, the ones no
//! longer configured deleted and the new ones added (keepalived 2.2.7's `vrrp_daemon.c`
//! `start_vrrp` / `stop_vrrp` and `clear_diff_static_*`). A failure is logged and the
//! others still applied: one bad route does not stop the node.

use lb_vrrp::route::VirtualRoute;
use lb_vrrp::vip::{Vip, VipManager};

use crate::config::model::{Config, VirtualIp};

/// The address as lb-vrrp adds it: its `dev`, else `default_interface`.
fn vip(cfg: &Config, a: &VirtualIp) -> Option<Vip> {
    let mut v: Vip = a.to_string().parse().ok()?;
    if v.dev.is_none() {
        v.dev = cfg.global.default_interface.clone();
    }
    v.dev.is_some().then_some(v)
}

fn manager() -> Option<VipManager> {
    VipManager::new()
        .map_err(|e| tracing::error!(error = %e, "static addresses and routes: no netlink"))
        .ok()
}

/// Deletes what `old` has and `new` does not (routes first), then adds all of `new`'s
/// (addresses first; what is there already counts as added). `old`: `None` at the start.
pub(crate) async fn apply(old: Option<&Config>, new: &Config) {
    if old.is_none_or(|o| o.static_ipaddress.is_empty() && o.static_routes.is_empty())
        && new.static_ipaddress.is_empty()
        && new.static_routes.is_empty()
    {
        return;
    }
    let Some(mgr) = manager() else { return };
    if let Some(old) = old {
        let routes: Vec<&VirtualRoute> = old
            .static_routes
            .iter()
            .filter(|r| !new.static_routes.contains(r))
            .collect();
        let new_vips: Vec<Vip> = new
            .static_ipaddress
            .iter()
            .filter_map(|a| vip(new, a))
            .collect();
        let vips: Vec<Vip> = old
            .static_ipaddress
            .iter()
            .filter_map(|a| vip(old, a))
            .filter(|v| !new_vips.contains(v))
            .collect();
        remove(&mgr, routes, &vips).await;
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
            Ok(()) => tracing::info!(route = %r, "static route added"),
            Err(e) => tracing::error!(error = %e, "adding a static route"),
        }
    }
}

/// Deletes `cfg`'s static routes, then its static addresses (the node stops).
pub(crate) async fn clear(cfg: &Config) {
    if cfg.static_ipaddress.is_empty() && cfg.static_routes.is_empty() {
        return;
    }
    let Some(mgr) = manager() else { return };
    let vips: Vec<Vip> = cfg
        .static_ipaddress
        .iter()
        .filter_map(|a| vip(cfg, a))
        .collect();
    remove(&mgr, cfg.static_routes.iter().collect(), &vips).await;
}

async fn remove(mgr: &VipManager, routes: Vec<&VirtualRoute>, vips: &[Vip]) {
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
