//! The node's VRRP instances: one `lb_vrrp` speaker per sync group and one for the instances
//! outside any group, state kept for `lbctl status`, keepalived-style notify scripts, and
//! `track_service` wired to the virtual servers' liveness.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lb_vrrp::driver::{NoticeKind, Speaker, SpeakerHandle, TrackScript, VrrpInstanceConfig};
use lb_vrrp::machine::{Reason, State, TrackId, TrackState, TrackWeight};
use lb_vrrp::track::{ProcessPattern, TrackFile, TrackProcess};
use lb_vrrp::vmac::UseVmac;

use super::bfd::BfdStates;
use lb_vrrp::vip::Vip;
use lb_vrrp::wire::{AdvertInterval, Auth, Priority, Version, Vrid};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::{notify, NodeError};
use crate::admin::{TrackedStatus, VrrpState, VrrpStatus};
use crate::config::model::{Config, NotifyDeleted, ParamMatch, SyncGroup, VrrpInstance};

/// What `lbctl status` says of a track, in the speaker's order: kind (`service`,
/// `interface`, `script`, `process`, `file`), name, weight, reverse.
type TrackMeta = (&'static str, String, i32, bool);

/// The scripts' last results a hand-over carries: by instance, then by script name.
pub(crate) type Carried = HashMap<String, HashMap<String, bool>>;

/// The virtual routes and rules each instance had installed when it was handed over, by
/// instance ([`lb_vrrp::driver::InstanceStatus::installed_routes`]).
pub(crate) type Installed = HashMap<
    String,
    (
        Vec<lb_vrrp::route::VirtualRoute>,
        Vec<lb_vrrp::rule::VirtualRule>,
    ),
>;

/// What `lbctl status` shows of each instance, by name.
pub(crate) type VrrpTable = Arc<RwLock<HashMap<String, VrrpStatus>>>;

/// One speaker and the instances it runs, in order.
#[derive(Debug)]
pub(crate) struct SpeakerRuntime {
    /// Instance configurations, in the speaker's order (the index is the speaker's index).
    pub(crate) instances: Vec<VrrpInstance>,
    /// The sync group's name, if these instances form one.
    pub(crate) group: Option<String>,
    /// The sync group's settings (its notify scripts) as started.
    pub(crate) sync_group: Option<SyncGroup>,
    /// The [`instance_globals`] it started with.
    pub(crate) globals: InstanceGlobals,
    handle: SpeakerHandle,
    /// Each instance's tracks in the speaker's order ([`track_meta`]): to read the
    /// scripts' own last results back at a hand-over.
    meta: HashMap<String, Vec<TrackMeta>>,
    run: JoinHandle<()>,
    /// Applies the speaker's events (status table, notify scripts).
    events_task: JoinHandle<()>,
    /// The instances a reload removes ([`SpeakerRuntime::stop_removed`]), set before the
    /// speaker stops: the events task notifies their stop as `notify_deleted` says.
    deleted: Arc<std::sync::Mutex<HashSet<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

fn to_state(s: State) -> VrrpState {
    match s {
        State::Initialize => VrrpState::Init,
        State::Backup => VrrpState::Backup,
        State::Master => VrrpState::Master,
        State::Fault => VrrpState::Fault,
    }
}

/// What `lbctl status` says of each track of `vi`, in the speaker's [`TrackId`] order
/// (track_service, track_interface, track_bfd, scripts, processes, files): kind, name, weight as
/// configured (a reference's own, else its definition's), reverse.
fn track_meta(cfg: &Config, vi: &VrrpInstance) -> Vec<TrackMeta> {
    let mut out = Vec::new();
    for t in &vi.track_service {
        out.push((
            "service",
            t.virtual_server.clone(),
            t.weight.unwrap_or(0),
            false,
        ));
    }
    for t in &vi.track_interface {
        out.push(("interface", t.interface.clone(), t.weight, t.reverse));
    }
    for t in &vi.track_bfd {
        let b = cfg.bfd_instances.iter().find(|b| b.name == t.bfd);
        out.push((
            "bfd",
            t.bfd.clone(),
            t.weight.or(b.map(|b| b.weight)).unwrap_or(0),
            t.reverse.or(b.map(|b| b.reverse)).unwrap_or(false),
        ));
    }
    for t in &vi.track_script {
        let s = cfg.vrrp_scripts.iter().find(|s| s.name == t.script);
        out.push((
            "script",
            t.script.clone(),
            t.weight.or(s.map(|s| s.weight)).unwrap_or(0),
            t.reverse.or(s.map(|s| s.reverse)).unwrap_or(false),
        ));
    }
    for t in &vi.track_process {
        let p = cfg
            .vrrp_track_processes
            .iter()
            .find(|p| p.name == t.process);
        out.push((
            "process",
            t.process.clone(),
            t.weight.or(p.map(|p| p.weight)).unwrap_or(1),
            t.reverse.or(p.map(|p| p.reverse)).unwrap_or(false),
        ));
    }
    for t in &vi.track_file {
        let f = cfg.track_files.iter().find(|f| f.name == t.file);
        let Some(weight) = file_weight(vi, t.weight.or(f.map(|f| f.weight)).unwrap_or(1)) else {
            continue; // ignored, as instance_config ignores it
        };
        out.push((
            "file",
            t.file.clone(),
            weight,
            t.reverse.or(f.map(|f| f.reverse)).unwrap_or(false),
        ));
    }
    out
}

/// The weight a `track_file` of `vi` counts with, or `None` when it is ignored: an
/// address owner's priority never moves, so keepalived (vrrp_complete_instance) makes the
/// default weight 1 a 0 (any value but 0 faults the owner) and ignores a file with any
/// other weight but 0.
fn file_weight(vi: &VrrpInstance, weight: i32) -> Option<i32> {
    match (vi.priority == 255, weight) {
        (false, w) | (true, w @ 0) => Some(w),
        (true, 1) => Some(0),
        (true, _) => None,
    }
}

/// A track's status from what the speaker counts (`st`, the state its weight applies to)
/// and what the configuration says of it.
/// `owner`: the instance is an address owner, whose priority never moves.
fn tracked_status(
    (kind, name, weight, reverse): &TrackMeta,
    st: TrackState,
    owner: bool,
) -> TrackedStatus {
    let (state, priority_change, fault) = if *kind == "file" {
        let fault = st.healthy == Some(false);
        (if fault { "fault" } else { "ok" }, st.offset, fault)
    } else {
        // The speaker holds a reversed check's opposite result on the opposite weight.
        let w = if *reverse { -*weight } else { *weight };
        let own = st.healthy.map(|h| h != *reverse);
        let change = match st.healthy {
            Some(true) if w > 0 => w,
            Some(false) if w < 0 => w,
            _ => 0,
        };
        let state = match own {
            Some(true) => "up",
            Some(false) => "down",
            None => "unknown",
        };
        (state, change, w == 0 && st.healthy == Some(false))
    };
    TrackedStatus {
        kind: (*kind).to_owned(),
        name: name.clone(),
        weight: *weight,
        reverse: *reverse,
        state: state.to_owned(),
        priority_change: if owner { 0 } else { priority_change },
        fault,
    }
}

/// Maps one instance onto the library's configuration.
/// `live`: each virtual server's liveness, for the initial state of `track_service`;
/// `bfd`: each BFD session, for the initial state of `track_bfd`.
/// `carried`: the last results of the scripts of the instance this one replaces at a
/// hand-over, by script name.
fn instance_config(
    cfg: &Config,
    vi: &VrrpInstance,
    live: &HashMap<String, watch::Receiver<bool>>,
    bfd: &BfdStates,
    carried: Option<&HashMap<String, bool>>,
) -> Result<VrrpInstanceConfig, String> {
    let vrid = Vrid::new(vi.virtual_router_id).ok_or("virtual_router_id must be 1..=255")?;
    let mut c = VrrpInstanceConfig::new(&vi.name, &vi.interface, vrid);
    c.priority = Priority(vi.priority);
    c.advert_int = AdvertInterval::from_duration(vi.advert_int)
        .ok_or_else(|| format!("advert_int {:?} is out of range", vi.advert_int))?;
    c.version = if vi.version == 3 {
        Version::V3
    } else {
        Version::V2
    };
    if let Some(a) = &vi.authentication {
        c.authentication = Auth::password(&a.auth_pass);
    }
    for v in &vi.virtual_ipaddress {
        let vip: Vip = v.to_string().parse().map_err(|e| format!("{v}: {e}"))?;
        c.virtual_ipaddress.push(vip);
    }
    for v in &vi.virtual_ipaddress_excluded {
        let vip: Vip = v.to_string().parse().map_err(|e| format!("{v}: {e}"))?;
        c.virtual_ipaddress_excluded.push(vip);
    }
    c.virtual_routes = vi.virtual_routes.clone();
    c.virtual_rules = vi.virtual_rules.clone();
    c.unicast_src_ip = vi.unicast_src_ip;
    c.track_src_ip = vi.track_src_ip && vi.unicast_src_ip.is_some();
    c.unicast_peer = vi.unicast_peer.clone();
    c.unicast_ttl = vi.unicast_ttl;
    c.down_timer_adverts = vi.down_timer_adverts;
    c.dont_track_primary = vi.dont_track_primary;
    c.mcast_dst_ip = vi.mcast_dst_ip.or(if vi.is_v6() {
        cfg.global.vrrp_mcast_group6.map(std::net::IpAddr::V6)
    } else {
        cfg.global.vrrp_mcast_group4.map(std::net::IpAddr::V4)
    });
    c.nopreempt = vi.nopreempt;
    c.preempt_delay = vi.preempt_delay;
    c.accept = vi.accept;
    c.skip_check_adv_addr = vi.skip_check_adv_addr;
    c.garp_master_delay = vi.garp_master_delay;
    c.garp_master_repeat = vi.garp_master_repeat;
    c.garp_master_refresh = vi.garp_master_refresh;
    c.garp_master_refresh_repeat = vi.garp_master_refresh_repeat;
    c.garp_lower_prio_repeat = vi.garp_lower_prio_repeat;
    c.garp_lower_prio_delay = vi.garp_lower_prio_delay;
    c.lower_prio_no_advert = vi.lower_prio_no_advert;
    c.higher_prio_send_advert = vi.higher_prio_send_advert;
    c.garp_interval = cfg.global.vrrp_garp_interval;
    c.gna_interval = cfg.global.vrrp_gna_interval;
    if vi.use_vmac {
        // Named by Config::with_defaults when not configured.
        let name = match &vi.vmac_name {
            Some(n) => n.clone(),
            None => lb_vrrp::vmac::default_name(vrid),
        };
        c.use_vmac = Some(UseVmac {
            name,
            mac: vi.vmac_mac()?,
            xmit_base: vi.vmac_xmit_base,
        });
    }
    // Tracks 0..n are the track_service entries, then the track_interface entries, then
    // the track_bfd entries (all driven by us), then the scripts (driven by the speaker).
    let bfd_weights: Vec<(i32, bool)> = track_meta(cfg, vi)
        .into_iter()
        .filter(|(kind, ..)| *kind == "bfd")
        .map(|(_, _, w, r)| (w, r))
        .collect();
    c.track = vi
        .track_service
        .iter()
        .map(|t| TrackWeight(t.weight.unwrap_or(0).clamp(-254, 254) as i16))
        .chain(
            // `reverse`: the opposite weight on the opposite state (set_track below).
            vi.track_interface
                .iter()
                .map(|t| (t.weight, t.reverse))
                .chain(bfd_weights.iter().copied())
                .map(|(w, reverse)| {
                    let w = w.clamp(-254, 254) as i16;
                    TrackWeight(if reverse { -w } else { w })
                }),
        )
        .collect();
    // Their state before the start, so that a weight-0 one already failing faults the
    // instance from the first instant (a down tracked link: keepalived's "entering FAULT
    // state (interface eth1 down)"), not after it was Master for a moment.
    c.track_initial = vi
        .track_service
        .iter()
        .map(|t| live.get(&t.virtual_server).is_none_or(|rx| *rx.borrow()))
        .chain(
            vi.track_interface
                .iter()
                .map(|t| lb_vrrp::vip::link_is_up(&t.interface) != t.reverse),
        )
        // A session not Up yet counts as down from the start (keepalived's tracked BFD
        // starts down: an unweighted track_bfd holds the instance in FAULT until its
        // session is Up).
        .chain(
            vi.track_bfd
                .iter()
                .zip(&bfd_weights)
                .map(|(t, (_, reverse))| {
                    let up = bfd
                        .get(&t.bfd)
                        .is_some_and(|rx| super::bfd::is_up(&rx.borrow()) == Some(true));
                    up != *reverse
                }),
        )
        .collect();
    for t in &vi.track_script {
        let s = cfg
            .vrrp_scripts
            .iter()
            .find(|s| s.name == t.script)
            .ok_or_else(|| format!("track_script {} is not defined", t.script))?;
        let mut ts = TrackScript::new(&s.script);
        ts.interval = s.interval;
        ts.timeout = s.timeout.unwrap_or(s.interval);
        ts.weight = TrackWeight(t.weight.unwrap_or(s.weight).clamp(-254, 254) as i16);
        ts.reverse = t.reverse.unwrap_or(s.reverse);
        let carried_result = carried.and_then(|c| c.get(&t.script)).copied();
        // init_fail: the script's own result starts as failed — but a reversed weight-0
        // one then faults the instance at the start, as keepalived's
        // initialise_track_script_state does whatever `reverse` says (its own result
        // starts as success). A result a reload carried wins, and runs as any other's.
        let weight0_reversed = ts.weight.0 == 0 && ts.reverse;
        ts.initial = carried_result.or(s.init_fail.then_some(weight0_reversed));
        ts.init_fail = s.init_fail && carried_result.is_none();
        ts.rise = s.rise;
        ts.fall = s.fall;
        if let Some(user) = &s.user {
            ts.run_as = Some(
                super::run_as_cached(user, s.group.as_deref())
                    .map_err(|e| format!("vrrp_script {}: {e}", s.name))?,
            );
        }
        c.track_script.push(ts);
    }
    for t in &vi.track_process {
        let p = cfg
            .vrrp_track_processes
            .iter()
            .find(|p| p.name == t.process)
            .ok_or_else(|| format!("track_process {} is not defined", t.process))?;
        let param_match = match (p.param_match, p.params.is_empty()) {
            (Some(m), _) => Some(match m {
                ParamMatch::Exact => lb_vrrp::track::ParamMatch::Exact,
                ParamMatch::Partial => lb_vrrp::track::ParamMatch::Partial,
                ParamMatch::Initial => lb_vrrp::track::ParamMatch::Initial,
            }),
            (None, false) => Some(lb_vrrp::track::ParamMatch::Exact),
            (None, true) => None,
        };
        let pattern = ProcessPattern {
            process: p.process.clone(),
            // Parameters are compared on the command line, so its first word is too, as
            // keepalived does.
            full_command: p.full_command || param_match.is_some(),
            params: p.params.clone(),
            param_match,
        };
        let mut tp = TrackProcess::new(&p.name, pattern);
        tp.quorum = p.effective_quorum();
        tp.quorum_max = p.quorum_max.unwrap_or(u32::MAX);
        tp.fork_delay = p.fork_delay;
        tp.terminate_delay = p.terminate_delay;
        tp.weight = TrackWeight(t.weight.unwrap_or(p.weight).clamp(-254, 254) as i16);
        tp.reverse = t.reverse.unwrap_or(p.reverse);
        c.track_process.push(tp);
    }
    for t in &vi.track_file {
        let f = cfg
            .track_files
            .iter()
            .find(|f| f.name == t.file)
            .ok_or_else(|| format!("track_file {} is not defined", t.file))?;
        let mut tf = TrackFile::new(&f.name, &f.file);
        let Some(weight) = file_weight(vi, t.weight.unwrap_or(f.weight)) else {
            tracing::warn!(instance = %vi.name, track_file = %f.name, "an address owner's priority never moves: this weighted track_file is ignored, as keepalived ignores it (give it weight 0 to fault the owner)");
            continue;
        };
        tf.weight = weight;
        tf.reverse = t.reverse.unwrap_or(f.reverse);
        tf.init = f.init_file.map(|v| (v, f.init_overwrite));
        c.track_file.push(tf);
    }
    Ok(c)
}

/// Writes the `init_file` values of the `track_file`s an instance tracks: at start as
/// configured, at a reload (`start` false) only into files that do not exist (keepalived
/// overwrites none on reload). Failures are logged.
pub(crate) fn init_track_files(cfg: &Config, start: bool) {
    let files: Vec<TrackFile> = cfg
        .track_files
        .iter()
        .filter(|f| {
            cfg.vrrp_instances
                .iter()
                .any(|vi| vi.track_file.iter().any(|t| t.file == f.name))
        })
        .map(|f| {
            let mut t = TrackFile::new(&f.name, &f.file);
            t.init = f.init_file.map(|v| (v, f.init_overwrite && start));
            t
        })
        .collect();
    if let Err(e) = lb_vrrp::driver::init_track_files(&files) {
        tracing::error!(error = %e, "init_file: the file reads as 0");
    }
}

/// The `vrrp_script`s, `vrrp_track_process`es and `track_file`s a reload added, removed
/// or changed, by name.
#[derive(Debug, Default)]
pub(crate) struct ChangedTracks {
    pub(crate) scripts: Vec<String>,
    pub(crate) processes: Vec<String>,
    pub(crate) files: Vec<String>,
    pub(crate) bfds: Vec<String>,
}

/// Groups instances as the config says: each sync group on one speaker, and every other
/// instance on a speaker of its own, so that a reload changing one instance leaves the
/// others running (keepalived restarts only what changed).
pub(crate) fn groups(cfg: &Config) -> Vec<(Option<String>, Vec<VrrpInstance>)> {
    let mut out = Vec::new();
    let mut grouped = Vec::new();
    for g in &cfg.sync_groups {
        let members: Vec<VrrpInstance> = g
            .group
            .iter()
            .filter_map(|n| cfg.vrrp_instances.iter().find(|v| &v.name == n).cloned())
            .collect();
        grouped.extend(g.group.iter().cloned());
        out.push((Some(g.name.clone()), members));
    }
    for v in cfg
        .vrrp_instances
        .iter()
        .filter(|v| !grouped.contains(&v.name))
    {
        out.push((None, vec![v.clone()]));
    }
    out
}

/// Deletes the VMACs of `old`'s instances that a failed successor did not take over, and
/// puts back the settings changed for them ([`lb_vrrp::vmac::discard`]).
pub(crate) async fn discard_vmacs(old: &[VrrpInstance]) {
    let vmacs: Vec<(String, String)> = old
        .iter()
        .filter(|vi| vi.use_vmac)
        .filter_map(|vi| Some((vi.vmac_name.clone()?, vi.interface.clone())))
        .collect();
    if vmacs.is_empty() {
        return;
    }
    // Netlink and nft calls, blocking: off the event loop.
    let done = tokio::task::spawn_blocking(move || {
        for (name, base) in &vmacs {
            lb_vrrp::vmac::discard(name, base);
        }
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "reload: removing the VMACs nobody took over");
    }
}

/// After a hand-over: removes from the interfaces the VIPs (advertised or excluded) that a
/// Master instance of `old` held on an interface where its namesake in `new` no longer has
/// that address (whatever the prefix or label: the kernel's address lookup does not tell
/// prefixes apart, and the successor may already hold the address). A changed prefix or
/// label alone keeps the old one until the next transition. Failures are logged.
pub(crate) async fn remove_dropped_vips(
    old: &[VrrpInstance],
    new: &[VrrpInstance],
    masters: &HashSet<String>,
) {
    let mgr = match lb_vrrp::vip::VipManager::new() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "reload: cannot open netlink to remove dropped VIPs");
            return;
        }
    };
    // (address, the interface it is on) of every VIP of `vi`, with its text.
    let all = |vi: &VrrpInstance| -> Vec<(std::net::IpAddr, String, String)> {
        vi.virtual_ipaddress
            .iter()
            .chain(&vi.virtual_ipaddress_excluded)
            .map(|v| (v.address, vi.vip_dev(v), v.to_string()))
            .collect()
    };
    for vi in old.iter().filter(|vi| masters.contains(&vi.name)) {
        let successor = new.iter().find(|n| n.name == vi.name);
        let kept = successor.map(all).unwrap_or_default();
        let Ok(ifindex) = lb_vrrp::vip::VipManager::ifindex(&vi.interface) else {
            continue;
        };
        let mut removed = Vec::new();
        for (addr, dev, text) in all(vi) {
            if kept.iter().any(|(a, d, _)| *a == addr && *d == dev) {
                continue;
            }
            let Ok(mut vip) = text.parse::<Vip>() else {
                continue;
            };
            // Where it is (a VMAC's VIPs are on the VMAC).
            vip.dev = Some(dev);
            match mgr.remove(ifindex, &vip).await {
                Ok(()) => {
                    tracing::info!(instance = %vi.name, vip = %vip.addr, "reload: VIP no longer configured, removed");
                }
                Err(e) => {
                    tracing::error!(instance = %vi.name, vip = %vip.addr, error = %e, "reload: removing a VIP no longer configured");
                }
            }
            // Out of the drop set only if the successor no longer has it anywhere.
            if !kept.iter().any(|(a, _, _)| *a == addr) {
                removed.push(vip.addr);
            }
        }
        // Out of the no_accept drop set too (the successor keeps only its own).
        if !vi.accept && !removed.is_empty() {
            let cleared = match lb_vrrp::accept::DropRules::install().await {
                Ok(rules) => rules.accept_addresses(&removed).await,
                Err(e) => Err(e),
            };
            if let Err(e) = cleared {
                tracing::error!(instance = %vi.name, error = %e, "reload: clearing no_accept drop rules of removed VIPs");
            }
        }
    }
}

/// After a hand-over whose successor did not start: the handed-over instances `old` lose
/// their routes and rules (`installed`), the VIPs of those that were Master (`masters`)
/// and their VMACs, run notify_stop (and `group`'s) as stopped without a word, and show
/// STOP in `table`.
pub(crate) async fn stop_failed_handover(
    old: &[VrrpInstance],
    group: Option<&SyncGroup>,
    installed: &Installed,
    masters: &HashSet<String>,
    table: &VrrpTable,
) {
    remove_dropped_routes(old, &[], installed).await;
    remove_dropped_vips(old, &[], masters).await;
    discard_vmacs(old).await;
    notify_stopped(old, group);
    let mut t = table
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for vi in old {
        if let Some(st) = t.get_mut(&vi.name) {
            st.state = VrrpState::Stop;
        }
    }
}

/// At a reload's hand-over, before the successor starts: deletes the virtual rules, then
/// routes, that `old`'s instances had installed (`installed`, from the hand-over) and that
/// their successors in `new` do not have as written (keepalived's clear_diff_vrrp_vrules /
/// _vroutes, which likewise delete only what was set). A route whose gateway, source or
/// any other setting changed is deleted here and added again by the successor, which adds
/// all of its routes when it resumes as Master. `new` empty: every installed one.
pub(crate) async fn remove_dropped_routes(
    old: &[VrrpInstance],
    new: &[VrrpInstance],
    installed: &Installed,
) {
    let dropped: Vec<(
        &str,
        Vec<&lb_vrrp::rule::VirtualRule>,
        Vec<&lb_vrrp::route::VirtualRoute>,
    )> = old
        .iter()
        .filter_map(|vi| {
            let (routes, rules) = installed.get(&vi.name)?;
            let successor = new.iter().find(|n| n.name == vi.name);
            let kept_rules = successor.map(|n| n.virtual_rules.as_slice()).unwrap_or(&[]);
            let kept_routes = successor
                .map(|n| n.virtual_routes.as_slice())
                .unwrap_or(&[]);
            Some((
                vi.name.as_str(),
                rules
                    .iter()
                    .filter(|r| !kept_rules.contains(r))
                    .collect::<Vec<_>>(),
                routes
                    .iter()
                    .filter(|r| !kept_routes.contains(r))
                    .collect::<Vec<_>>(),
            ))
        })
        .filter(|(_, rules, routes)| !rules.is_empty() || !routes.is_empty())
        .collect();
    if dropped.is_empty() {
        return;
    }
    let mgr = match lb_vrrp::vip::VipManager::new() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "reload: cannot open netlink to delete dropped routes");
            return;
        }
    };
    for (name, rules, routes) in dropped {
        for r in rules {
            match mgr.remove_rule(r).await {
                Ok(()) => {
                    tracing::info!(instance = %name, rule = %r, "reload: virtual rule no longer configured, deleted");
                }
                Err(e) => {
                    tracing::error!(instance = %name, error = %e, "reload: deleting a virtual rule no longer configured");
                }
            }
        }
        for r in routes {
            match mgr.remove_route(r).await {
                Ok(()) => {
                    tracing::info!(instance = %name, route = %r, "reload: virtual route no longer configured, deleted");
                }
                Err(e) => {
                    tracing::error!(instance = %name, error = %e, "reload: deleting a virtual route no longer configured");
                }
            }
        }
    }
}

/// What starting a speaker for `members` (of configuration `cfg`; `sync_group`: they form
/// one) would fail on, checked before a running speaker hands over to it: the instance
/// settings, the interfaces and sockets (a speaker is built and dropped), tracked virtual
/// servers, and the no_accept table.
pub(crate) async fn precheck(
    cfg: &Config,
    sync_group: bool,
    members: &[VrrpInstance],
    live: &HashMap<String, watch::Receiver<bool>>,
    bfd: &BfdStates,
) -> Result<(), NodeError> {
    let configs = members
        .iter()
        .map(|vi| {
            for ts in &vi.track_service {
                if !live.contains_key(&ts.virtual_server) {
                    return Err(NodeError::Start(format!(
                        "vrrp_instance {}: track_service names unknown virtual server {}",
                        vi.name, ts.virtual_server
                    )));
                }
            }
            instance_config(cfg, vi, live, bfd, None)
                .map_err(|e| NodeError::Start(format!("vrrp_instance {}: {e}", vi.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Speaker::check(configs, sync_group).map_err(|e| NodeError::Start(format!("VRRP: {e}")))?;
    if members.iter().any(|vi| !vi.accept) {
        lb_vrrp::accept::DropRules::install()
            .await
            .map_err(|e| NodeError::Start(format!("no_accept: {e}")))?;
    }
    Ok(())
}

/// See [`instance_globals`].
pub(crate) type InstanceGlobals = (
    Option<std::net::Ipv4Addr>,
    Option<std::net::Ipv6Addr>,
    Duration,
    Duration,
);

/// The `global_defs` settings every instance's configuration takes (advert groups,
/// gratuitous ARP / NA spacing): a reload that changes them changes every instance.
pub(crate) fn instance_globals(cfg: &Config) -> InstanceGlobals {
    let g = &cfg.global;
    (
        g.vrrp_mcast_group4,
        g.vrrp_mcast_group6,
        g.vrrp_garp_interval,
        g.vrrp_gna_interval,
    )
}

/// Applies one [`lb_vrrp::driver::Notice`]: the status table's effective priority,
/// keepalived's notify FIFO line and, for a lower-priority master heard,
/// `notify_master_rx_lower_pri` (`instances`: the speaker's, by name).
fn notice(
    n: &lb_vrrp::driver::Notice,
    instances: &HashMap<String, VrrpInstance>,
    table: &VrrpTable,
) {
    let Some(vi) = instances.get(&n.instance) else {
        return;
    };
    match n.kind {
        NoticeKind::PriorityChanged => {
            if let Some(s) = table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(&n.instance)
            {
                s.effective_priority = n.priority.0;
            }
            if vi.notify_priority_changes {
                let word = if n.state == State::Master {
                    "MASTER_PRIORITY"
                } else {
                    "BACKUP_PRIORITY"
                };
                super::fifo::vrrp(&format!(
                    "INSTANCE \"{}\" {word} {}\n",
                    n.instance, n.priority.0
                ));
            }
        }
        NoticeKind::MasterRxLowerPriority => {
            tracing::warn!(instance = %n.instance, "MASTER heard an advert of lower priority: another node took over while they could not hear each other");
            super::fifo::vrrp(&format!(
                "INSTANCE \"{}\" MASTER_RX_LOWER_PRI {}\n",
                n.instance, n.priority.0
            ));
            if let Some(s) = &vi.notify_master_rx_lower_pri {
                notify(s, &[] as &[&str]);
            }
        }
    }
}

/// The word of keepalived's notify FIFO line for a state (`None`: Initialize, whose word
/// depends on why the instance stopped).
fn state_word(s: State) -> Option<&'static str> {
    match s {
        State::Master => Some("MASTER"),
        State::Backup => Some("BACKUP"),
        State::Fault => Some("FAULT"),
        State::Initialize => None,
    }
}

/// A sync group's STOP: `notify_stop`, `notify … GROUP NAME STOP 0`, the FIFO line.
fn notify_group_stop(g: &SyncGroup) {
    if let Some(s) = &g.notify_stop {
        notify(s, &[]);
    }
    if let Some(s) = &g.notify {
        notify(s, &["GROUP", &g.name, "STOP", "0"]);
    }
    super::fifo::vrrp(&format!("GROUP \"{}\" STOP 0\n", g.name));
}

/// Notifies STOP for `old`'s instances and their sync group `group`, which stopped without
/// their speaker's events: a successor that failed to start after a reload's hand-over
/// (its predecessor was stopped silently, to be resumed). Each instance: `notify_stop`,
/// the FIFO line and `notify … INSTANCE NAME STOP PRIO` with its base priority; then the
/// group's STOP.
pub(crate) fn notify_stopped(old: &[VrrpInstance], group: Option<&SyncGroup>) {
    for vi in old {
        if let Some(s) = &vi.notify_stop {
            notify(s, &[]);
        }
        super::fifo::vrrp(&format!("INSTANCE \"{}\" STOP {}\n", vi.name, vi.priority));
        if let Some(s) = &vi.notify {
            notify(s, &["INSTANCE", &vi.name, "STOP", &vi.priority.to_string()]);
        }
    }
    if let Some(g) = group {
        notify_group_stop(g);
    }
}

/// A sync group's state from its members' (a group in sync has one; one caught
/// mid-change counts as MASTER if any member is, else as its first member).
fn group_state(members: impl Iterator<Item = State>) -> Option<State> {
    let mut first = None;
    for s in members {
        if s == State::Master {
            return Some(s);
        }
        if s != State::Initialize {
            first = first.or(Some(s));
        }
    }
    first
}

/// Whether `a` and `b` are the same virtual router across a reload, as keepalived 2.2.7's
/// `vrrp_exist` matches one: interface, VRID, address family, VMAC or not, unicast or
/// not, and for unicast the source address (as written: keepalived compares the resolved
/// one). Unlike keepalived, a change of multicast group is not a new router (lb-node
/// hands the instance over, keeping its state).
pub(crate) fn same_virtual_router(a: &VrrpInstance, b: &VrrpInstance) -> bool {
    a.interface == b.interface
        && a.virtual_router_id == b.virtual_router_id
        && a.is_v6() == b.is_v6()
        && a.use_vmac == b.use_vmac
        && a.unicast_peer.is_empty() == b.unicast_peer.is_empty()
        && (a.unicast_peer.is_empty() || a.unicast_src_ip == b.unicast_src_ip)
}

/// Whether instance `b` of a new configuration can take over from `a` at a hand-over: the
/// same interface, VRID and family, and the same VMAC (the successor takes it over with the
/// VIPs on it).
pub(crate) fn can_continue(a: &VrrpInstance, b: &VrrpInstance) -> bool {
    a.interface == b.interface
        && a.virtual_router_id == b.virtual_router_id
        && a.is_v6() == b.is_v6()
        && (a.use_vmac, &a.vmac_name, a.vmac_mac().ok())
            == (b.use_vmac, &b.vmac_name, b.vmac_mac().ok())
}

/// Whether a running speaker (`group`, `instances`) is the one the new configuration's
/// group (`g`, `members`) continues: the same sync group, or the same lone instance — by
/// name, or renamed on the same interface, VRID, family and VMAC ([`can_continue`]; as
/// keepalived's `vrrp_exist`, which matches by VRID, not name).
pub(crate) fn same_group(
    group: &Option<String>,
    instances: &[VrrpInstance],
    g: &Option<String>,
    members: &[VrrpInstance],
) -> bool {
    match (group, g) {
        (Some(a), Some(b)) => a == b,
        (None, None) => match (instances, members) {
            ([a], [b]) => a.name == b.name || can_continue(a, b),
            _ => instances.first().map(|v| &v.name) == members.first().map(|v| &v.name),
        },
        _ => false,
    }
}

/// The new configuration's group that continues a running speaker (`group`,
/// `instances`), among `new_groups` ([`groups`]): for a lone instance, first one that goes
/// on with its virtual router ([`can_continue`]: renamed, or kept), and only then one of
/// the same name ([`same_group`]). A name reused by another virtual router in the same
/// reload (`VI_1` renamed `VI_WEB`, a new `VI_1` on another VRID) would otherwise take the
/// speaker, which then stops with priority 0 while `VI_WEB` starts afresh: keepalived's
/// `vrrp_exist` matches by interface, VRID and family alone. Returns the group's index in
/// `new_groups` with its members.
pub(crate) fn successor<'a>(
    group: &Option<String>,
    instances: &[VrrpInstance],
    new_groups: &'a [(Option<String>, Vec<VrrpInstance>)],
) -> Option<(usize, &'a Vec<VrrpInstance>)> {
    let continued = new_groups
        .iter()
        .position(|(g, m)| match (group, g, instances, &m[..]) {
            (None, None, [a], [b]) => can_continue(a, b),
            _ => false,
        });
    continued
        .or_else(|| {
            new_groups
                .iter()
                .position(|(g, m)| same_group(group, instances, g, m))
        })
        .map(|i| (i, &new_groups[i].1))
}

/// The node's one spacing of gratuitous ARPs / NAs, shared by its speakers.
static GARP_PACER: std::sync::LazyLock<lb_vrrp::driver::GarpPacer> =
    std::sync::LazyLock::new(lb_vrrp::driver::GarpPacer::new);

/// The node's runners of tracked scripts, shared by its speakers: a `vrrp_script` runs
/// once per `interval` however many instances (in sync groups or not) track it, as
/// keepalived runs it.
static SCRIPT_RUNNERS: std::sync::LazyLock<lb_vrrp::driver::ScriptRunners> =
    std::sync::LazyLock::new(lb_vrrp::driver::ScriptRunners::default);

/// Gives the node's pacer the configuration's `garp_group`s: at the start, and at each
/// reload (which changes no instance for them).
pub(crate) fn set_garp_groups(cfg: &Config) {
    GARP_PACER.set_groups(
        cfg.garp_groups
            .iter()
            .map(|g| lb_vrrp::driver::GarpGroup {
                interfaces: g.interfaces.clone(),
                garp_interval: g.garp_interval,
                gna_interval: g.gna_interval,
            })
            .collect(),
    );
}

/// When this node started: `vrrp_startup_delay` counts from it ([`mark_start`]).
static STARTED: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

/// Records the node's start (its first call; later ones change nothing).
pub(crate) fn mark_start() {
    STARTED.get_or_init(tokio::time::Instant::now);
}

impl SpeakerRuntime {
    /// Starts the instances of one group. `previous`: the states of the instances of the
    /// speaker this one replaces (a reload, see [`SpeakerRuntime::handover`]): those that
    /// were Master start as Master at once, keeping their VIPs, and an instance's first
    /// transition into the state it had runs no notify script (the state did not change
    /// for anyone outside; keepalived keeps it across a reload). `carried`: the last
    /// results of their scripts, by instance and script name, which the new instances'
    /// scripts of the same name start from (a script's weight otherwise counts only from
    /// its next result).
    // What the instances follow (virtual servers' liveness, BFD sessions) and what they
    // take over (`previous`, `carried`) are separate inputs of one start.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        cfg: &Config,
        group: Option<String>,
        instances: Vec<VrrpInstance>,
        table: &VrrpTable,
        live: &HashMap<String, watch::Receiver<bool>>,
        bfd: &BfdStates,
        previous: &HashMap<String, State>,
        carried: &HashMap<String, HashMap<String, bool>>,
        installed: &Installed,
    ) -> Result<Self, NodeError> {
        let configs = instances
            .iter()
            .map(|vi| {
                let mut c = instance_config(cfg, vi, live, bfd, carried.get(&vi.name))
                    .map_err(|e| NodeError::Start(format!("vrrp_instance {}: {e}", vi.name)))?;
                c.resume_master = previous.get(&vi.name) == Some(&State::Master);
                if let Some((routes, rules)) = installed.get(&vi.name) {
                    c.installed_routes.clone_from(routes);
                    c.installed_rules.clone_from(rules);
                }
                Ok(c)
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let mut speaker = Speaker::new(configs, group.is_some())
            .map_err(|e| NodeError::Start(format!("VRRP: {e}")))?;
        // Once the instances can start (keepalived: at their completion).
        for vi in instances.iter().filter(|vi| vi.promote_secondaries) {
            super::promote::enable(&vi.interface);
        }
        // vrrp_startup_delay counts from the node's start.
        let started = *STARTED.get_or_init(tokio::time::Instant::now);
        speaker.set_startup_delay(
            (started + cfg.global.vrrp_startup_delay)
                .saturating_duration_since(tokio::time::Instant::now()),
        );
        // vrrp_garp_interval / vrrp_gna_interval space the messages of every instance
        // together, as keepalived's.
        speaker.set_garp_pacer(GARP_PACER.clone());
        speaker.set_script_runners(SCRIPT_RUNNERS.clone());
        let handle = speaker.handle();
        let mut events = speaker.subscribe();
        let mut tasks = Vec::new();
        {
            let mut t = table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for vi in &instances {
                let mut st = VrrpStatus::initial(vi, group.clone());
                // A handed-over instance shows what it had until its successor's first
                // event (the state it resumes, the priority its carried scripts give),
                // not INIT at its base priority.
                if let (Some(_), Some(old)) = (previous.get(&vi.name), t.get(&vi.name)) {
                    st.state = old.state;
                    st.effective_priority = old.effective_priority;
                    st.master_address = old.master_address;
                    st.tracks.clone_from(&old.tracks);
                }
                t.insert(vi.name.clone(), st);
            }
        }
        let by_name: HashMap<String, VrrpInstance> = instances
            .iter()
            .map(|v| (v.name.clone(), v.clone()))
            .collect();
        let meta: HashMap<String, Vec<TrackMeta>> = instances
            .iter()
            .map(|v| (v.name.clone(), track_meta(cfg, v)))
            .collect();
        let tracks = meta.clone();
        // This node's advert source per instance, shown as the master's address while it is
        // master. (The speaker's events do not carry the address of another master, so a
        // backup shows none.)
        let own_addr: HashMap<String, std::net::IpAddr> = instances
            .iter()
            .filter_map(|vi| {
                let vips: Vec<std::net::IpAddr> = vi
                    .virtual_ipaddress
                    .iter()
                    .chain(&vi.virtual_ipaddress_excluded)
                    .map(|v| v.address)
                    .collect();
                vi.unicast_src_ip
                    .or_else(|| lb_vrrp::vip::primary_address(&vi.interface, vi.is_v6(), &vips))
                    .map(|a| (vi.name.clone(), a))
            })
            .collect();
        let group_cfg = group
            .as_ref()
            .and_then(|g| cfg.sync_groups.iter().find(|s| &s.name == g).cloned());
        let sync_group = group_cfg.clone();
        let tbl = Arc::clone(table);
        let own = own_addr.clone();
        let mut quiet: HashMap<String, State> = instances
            .iter()
            .filter_map(|vi| previous.get(&vi.name).map(|s| (vi.name.clone(), *s)))
            .collect();
        // Ends once the speaker is gone (`Closed`), after the events it sent last, such as
        // the transitions to Initialize that run `notify_stop`.
        // What is not a transition: keepalived's notify FIFO lines MASTER_PRIORITY /
        // BACKUP_PRIORITY (with notify_priority_changes) and MASTER_RX_LOWER_PRI, and its
        // notify_master_rx_lower_pri script. Read by the same task as the transitions,
        // which it reads first (the speaker sends a step's notices after its transitions),
        // so that the FIFO lines keep their order and none is lost at a stop.
        let mut notices = speaker.subscribe_notices();
        let deleted: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
        let write_states = cfg.global.fifo_write_vrrp_states_on_reload;
        let removed = Arc::clone(&deleted);
        let events_task = tokio::spawn(async move {
            // The group's state as last written to the notify FIFOs (one GROUP line per
            // change, not one per member).
            let mut group_written: Option<State> = None;
            let (mut events_open, mut notices_open) = (true, true);
            loop {
                let ev = tokio::select! {
                    biased;
                    r = events.recv(), if events_open => match r {
                        Ok(ev) => ev,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // A skipped first event must not silence a later genuine one.
                            quiet.clear();
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            events_open = false;
                            continue;
                        }
                    },
                    r = notices.recv(), if notices_open => {
                        match r {
                            Ok(n) => notice(&n, &by_name, &tbl),
                            Err(broadcast::error::RecvError::Lagged(k)) => {
                                tracing::warn!(skipped = k, "VRRP notices skipped: their FIFO lines and notify_master_rx_lower_pri runs are lost");
                            }
                            Err(broadcast::error::RecvError::Closed) => notices_open = false,
                        }
                        continue;
                    }
                    else => return,
                };
                tracing::info!(instance = %ev.instance, vrid = ev.vrid.get(), from = ?ev.from, to = ?ev.to, reason = ?ev.reason, priority = ev.priority.0, "VRRP transition");
                if let Some(s) = tbl
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_mut(&ev.instance)
                {
                    s.state = to_state(ev.to);
                    s.effective_priority = ev.priority.0;
                    s.master_address = match ev.to {
                        State::Master => own.get(&ev.instance).copied(),
                        _ => None,
                    };
                }
                // Back in the state it had before a reload hand-over (Master again, with no
                // priority-0 advert in between): nothing changed for anyone outside, so no
                // notify script runs.
                let resumed = quiet.remove(&ev.instance) == Some(ev.to);
                let Some(vi) = by_name.get(&ev.instance) else {
                    continue;
                };
                if resumed || ev.reason == Reason::Reload {
                    // The group's state too: a member that follows is not a change (MASTER
                    // wins over a member caught mid-change).
                    let before = group_written;
                    group_written = group_state(group_written.into_iter().chain([ev.to]));
                    // fifo_write_vrrp_states_on_reload: the states the reload kept, the
                    // group's first (keepalived's vrrp_init_state).
                    if write_states {
                        if let (Some(g), Some(w)) = (&group_cfg, group_written.and_then(state_word))
                        {
                            if before != group_written {
                                super::fifo::vrrp(&format!("GROUP \"{}\" {w} 0\n", g.name));
                            }
                        }
                        if let Some(word) = state_word(ev.to) {
                            super::fifo::vrrp(&format!(
                                "INSTANCE \"{}\" {word} {}\n",
                                vi.name, ev.priority.0
                            ));
                        }
                    }
                    continue;
                }
                let deleted = ev.to == State::Initialize
                    && removed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains(&ev.instance);
                let (specific, word) = match ev.to {
                    State::Master => (vi.notify_master.as_ref(), "MASTER"),
                    State::Backup => (vi.notify_backup.as_ref(), "BACKUP"),
                    State::Fault => (vi.notify_fault.as_ref(), "FAULT"),
                    // Removed by a reload (keepalived's clear_diff_vrrp): DELETED, or
                    // FAULT unless it was in FAULT already. keepalived 2.2.7 picks the
                    // state's own script before it turns DELETED into FAULT, so the
                    // latter runs no notify_fault.
                    State::Initialize if deleted => match &vi.notify_deleted {
                        NotifyDeleted::Deleted(script) => (script.as_ref(), "DELETED"),
                        NotifyDeleted::Fault if ev.from == State::Fault => continue,
                        NotifyDeleted::Fault => (None, "FAULT"),
                    },
                    State::Initialize => (vi.notify_stop.as_ref(), "STOP"),
                };
                if let Some(s) = specific {
                    notify(s, &[]);
                }
                super::fifo::vrrp(&format!(
                    "INSTANCE \"{}\" {word} {}\n",
                    vi.name, ev.priority.0
                ));
                let prio = ev.priority.0.to_string();
                if let Some(s) = vi.notify.as_ref() {
                    notify(s, &["INSTANCE", &vi.name, word, &prio]);
                }
                // The group's notifications, once per change of the group's state, as
                // keepalived's send_group_notifies (priority 0). Its STOP is notified
                // once, when it stops (`stop`).
                if let Some(g) = &group_cfg {
                    let gs = match ev.to {
                        State::Master => g.notify_master.as_ref(),
                        State::Backup => g.notify_backup.as_ref(),
                        State::Fault => g.notify_fault.as_ref(),
                        State::Initialize => continue,
                    };
                    if group_written == Some(ev.to) {
                        continue;
                    }
                    group_written = Some(ev.to);
                    if let Some(s) = gs {
                        notify(s, &[]);
                    }
                    if let Some(s) = g.notify.as_ref() {
                        notify(s, &["GROUP", &g.name, word, "0"]);
                    }
                    super::fifo::vrrp(&format!("GROUP \"{}\" {word} 0\n", g.name));
                }
            }
        });
        // track_service: a virtual server with no live backend lowers the priority (or
        // faults the instance) — the node whose service is dead gives the VIPs away.
        for (idx, vi) in instances.iter().enumerate() {
            for (k, ts) in vi.track_service.iter().enumerate() {
                let Some(rx) = live.get(&ts.virtual_server) else {
                    return Err(NodeError::Start(format!(
                        "vrrp_instance {}: track_service names unknown virtual server {}",
                        vi.name, ts.virtual_server
                    )));
                };
                let mut rx = rx.clone();
                let h = handle.clone();
                let (inst, vs) = (vi.name.clone(), ts.virtual_server.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let up = *rx.borrow_and_update();
                        tracing::info!(instance = %inst, virtual_server = %vs, live = up, "tracked service");
                        h.set_track(idx, TrackId(k), up);
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        // track_interface: a link that is down or not running (or missing) faults the
        // instance, or changes its priority by the weight, as keepalived does. Link state is
        // read at netlink's notice of a change and every 200 ms, as the speaker reads the
        // instance's own interface.
        for (idx, vi) in instances.iter().enumerate() {
            for (k, ti) in vi.track_interface.iter().enumerate() {
                let id = TrackId(vi.track_service.len() + k);
                let h = handle.clone();
                let (inst, ifname, reverse) = (vi.name.clone(), ti.interface.clone(), ti.reverse);
                tasks.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(lb_vrrp::driver::LINK_POLL);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let notices = lb_vrrp::vip::LinkNotices::open()
                        .map_err(|e| tracing::warn!(interface = %ifname, error = %e, "no netlink link notices: the tracked interface is polled only"))
                        .ok();
                    let mut last = None;
                    loop {
                        // Only this interface's notices (all while it has no index yet).
                        let index = lb_vrrp::vip::VipManager::ifindex(&ifname).ok();
                        tokio::select! {
                            _ = tick.tick() => {}
                            () = lb_vrrp::vip::next_notice(notices.as_ref(), |i| index.is_none_or(|x| x == i)) => {}
                        }
                        let up = lb_vrrp::vip::link_is_up(&ifname);
                        if last != Some(up) {
                            tracing::info!(instance = %inst, interface = %ifname, up, "tracked interface");
                            h.set_track(idx, id, up != reverse);
                            last = Some(up);
                        }
                    }
                }));
            }
        }
        // track_bfd: a session that is not Up faults the instance, or changes its priority
        // by the weight, as keepalived does; Up lets it go.
        for (idx, vi) in instances.iter().enumerate() {
            for (k, tb) in vi.track_bfd.iter().enumerate() {
                let id = TrackId(vi.track_service.len() + vi.track_interface.len() + k);
                let Some(rx) = bfd.get(&tb.bfd) else {
                    return Err(NodeError::Start(format!(
                        "vrrp_instance {}: track_bfd names bfd_instance {}, which does not run",
                        vi.name, tb.bfd
                    )));
                };
                let mut rx = rx.clone();
                let reverse = tb
                    .reverse
                    .or_else(|| {
                        cfg.bfd_instances
                            .iter()
                            .find(|b| b.name == tb.bfd)
                            .map(|b| b.reverse)
                    })
                    .unwrap_or(false);
                let h = handle.clone();
                let (inst, name) = (vi.name.clone(), tb.bfd.clone());
                tasks.push(tokio::spawn(async move {
                    // Not Up counts as down, from the start (track_initial); each
                    // transition after that is applied, a missed flap as a down and an up.
                    let mut last: super::bfd::Seen = None;
                    loop {
                        let st = *rx.borrow_and_update();
                        let steps = if last.is_none() {
                            vec![super::bfd::is_up(&st) == Some(true)]
                        } else {
                            super::bfd::transitions(last, &st)
                        };
                        for &up in &steps {
                            tracing::info!(instance = %inst, bfd_instance = %name, up, "tracked BFD session");
                            h.set_track(idx, id, up != reverse);
                        }
                        last = super::bfd::after(last, &st, &steps);
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        // Events come only with state changes; a tracked script or service with a weight
        // changes the effective priority without one. Refresh state and priority from the
        // speaker four times a second so `lbctl status` shows them.
        {
            let h = handle.clone();
            let tbl = Arc::clone(table);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Some(now) = h.status().await else { return };
                    let mut t = tbl
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for st in now {
                        if let Some(s) = t.get_mut(&st.instance) {
                            s.state = to_state(st.state);
                            s.effective_priority = st.priority.0;
                            s.counters = crate::admin::VrrpCounters::from_machine(&st.counters);
                            s.tracks = tracks
                                .get(&st.instance)
                                .map(|meta| {
                                    meta.iter()
                                        .zip(&st.tracks)
                                        .map(|(m, t)| tracked_status(m, *t, s.base_priority == 255))
                                        .collect()
                                })
                                .unwrap_or_default();
                            s.master_address = match st.state {
                                // The speaker's own source (it may have changed
                                // since start-up, or appeared only later).
                                State::Master => {
                                    st.master.or_else(|| own_addr.get(&st.instance).copied())
                                }
                                State::Backup => st.master,
                                _ => None,
                            };
                        }
                    }
                }
            }));
        }
        let name = group.clone().unwrap_or_else(|| "(ungrouped)".into());
        let run = tokio::spawn(async move {
            if let Err(e) = speaker.run().await {
                tracing::error!(group = %name, error = %e, "VRRP speaker stopped with an error");
            }
        });
        Ok(Self {
            instances,
            group,
            sync_group,
            globals: instance_globals(cfg),
            handle,
            meta,
            run,
            events_task,
            deleted,
            tasks,
        })
    }

    /// True if `new` (the group's instances in a new configuration) differs from the
    /// running instances only in base priorities.
    /// Whether any of this speaker's instances tracks one of `scripts` (by name).
    /// Whether an instance tracks a script, process or file a reload changed.
    pub(crate) fn tracks_any(&self, changed: &ChangedTracks) -> bool {
        self.instances.iter().any(|v| {
            v.track_script
                .iter()
                .any(|t| changed.scripts.contains(&t.script))
                || v.track_process
                    .iter()
                    .any(|t| changed.processes.contains(&t.process))
                || v.track_file.iter().any(|t| changed.files.contains(&t.file))
                || v.track_bfd.iter().any(|t| changed.bfds.contains(&t.bfd))
        })
    }

    pub(crate) fn only_priorities_differ(&self, new: &[VrrpInstance]) -> bool {
        priorities_only_change(&self.instances, new)
    }

    /// Applies new base priorities in place: no restart, so no priority-0 advert, no
    /// flap and no gratuitous ARPs; the election follows the new priorities.
    pub(crate) fn set_priorities(&mut self, new: &[VrrpInstance], table: &VrrpTable) {
        let mut t = table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, (a, b)) in self.instances.iter().zip(new).enumerate() {
            if a.priority != b.priority {
                self.handle.set_priority(i, Priority(b.priority));
                if let Some(s) = t.get_mut(&b.name) {
                    s.base_priority = b.priority;
                }
                tracing::info!(instance = %b.name, from = a.priority, to = b.priority, "priority changed by reload");
            }
        }
        self.instances = new.to_vec();
    }

    /// keepalived's `fifo_write_vrrp_states_on_reload` for a speaker the reload kept
    /// running: each instance's state and effective priority, then the sync group's
    /// (its first member's), to the notify FIFOs.
    /// The group's line first, as keepalived's `vrrp_init_state` writes them. Bounded (2 s):
    /// a speaker stuck in an action must not hang the reload.
    pub(crate) async fn write_states(&self) {
        let Ok(Some(now)) =
            tokio::time::timeout(Duration::from_secs(2), self.handle.status()).await
        else {
            tracing::warn!(group = ?self.group, "fifo_write_vrrp_states_on_reload: the speaker did not answer within 2 s; no state lines");
            return;
        };
        if let (Some(g), Some(word)) = (
            &self.group,
            group_state(now.iter().map(|st| st.state)).and_then(state_word),
        ) {
            super::fifo::vrrp(&format!("GROUP \"{g}\" {word} 0\n"));
        }
        for st in &now {
            if let Some(word) = state_word(st.state) {
                super::fifo::vrrp(&format!(
                    "INSTANCE \"{}\" {word} {}\n",
                    st.instance, st.priority.0
                ));
            }
        }
    }

    /// Whether a speaker for `new` (the group's instances in a new configuration) can take
    /// over from this one with [`SpeakerRuntime::handover`]: the same instances in the same
    /// order, each the same virtual router (interface, VRID, address family, VMAC). Any
    /// other setting may differ (VIPs, scripts, timers, authentication).
    pub(crate) fn can_hand_over(&self, new: &[VrrpInstance]) -> bool {
        self.instances.len() == new.len()
            && self
                .instances
                .iter()
                .zip(new)
                // A renamed instance continues too (keepalived matches by VRID); the
                // caller moves what the hand-over returns under its old name.
                .all(|(a, b)| can_continue(a, b))
    }

    /// Stops the speaker for a successor (a reload that changed the group): no priority-0
    /// advert, no notify script, VIPs and drop rules left in place; keepalived keeps an
    /// instance's state across a reload the same way. Returns each instance's state at the
    /// moment it stopped; waits (at most 5 s). The caller starts the successor at once with
    /// these as its `previous` states, and removes the VIPs the new configuration no longer
    /// has.
    pub(crate) async fn handover(self) -> (HashMap<String, State>, Carried, Installed) {
        // Bounded: a speaker stuck in an action (a netlink or nft call) must not hang the
        // reload; its successor then starts afresh.
        let statuses = tokio::time::timeout(Duration::from_secs(5), self.handle.handover())
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        // Each script's own last result (the speaker holds a reversed one inverted).
        let carried: Carried = statuses
            .iter()
            .filter_map(|st| {
                let results = self
                    .meta
                    .get(&st.instance)?
                    .iter()
                    .zip(&st.tracks)
                    .filter(|((kind, ..), _)| *kind == "script")
                    .filter_map(|((_, name, _, reverse), t)| {
                        Some((name.clone(), t.healthy? != *reverse))
                    })
                    .collect();
                Some((st.instance.clone(), results))
            })
            .collect();
        let installed: Installed = statuses
            .iter()
            .map(|s| {
                (
                    s.instance.clone(),
                    (s.installed_routes.clone(), s.installed_rules.clone()),
                )
            })
            .collect();
        let states = statuses
            .into_iter()
            .map(|s| (s.instance, s.state))
            .collect();
        self.wind_down("hand over").await;
        (states, carried, installed)
    }

    /// Waits for the speaker's run to end (at most 5 s, then aborts it, logging that it
    /// did not `what` in time), aborts the track and refresh tasks, and lets the events
    /// task apply the last events (at most 2 s): → Initialize runs `notify_stop`, which
    /// aborting it could lose. Returns the instances.
    async fn wind_down(self, what: &str) -> Vec<VrrpInstance> {
        let mut run = self.run;
        if tokio::time::timeout(Duration::from_secs(5), &mut run)
            .await
            .is_err()
        {
            tracing::warn!("VRRP speaker did not {what} within 5 s");
            run.abort();
        }
        for t in self.tasks {
            t.abort();
        }
        let mut events_task = self.events_task;
        if tokio::time::timeout(Duration::from_secs(2), &mut events_task)
            .await
            .is_err()
        {
            events_task.abort();
        }
        self.instances
    }

    /// Sends priority 0 from masters, removes the VIPs, and waits (at most 5 s); then
    /// notifies the sync group's STOP (`notify_stop`, `notify … GROUP NAME STOP 0`, the
    /// FIFO line), once, whatever state its members were in (keepalived's shutdown
    /// notifies every group).
    pub(crate) async fn stop(self, table: &VrrpTable) {
        self.stop_removed(table, None).await;
    }

    /// [`SpeakerRuntime::stop`] at a reload to `new`: an instance whose virtual router
    /// `new` does not have ([`same_virtual_router`]) is removed, and is notified as its
    /// `notify_deleted` says instead of STOP; a sync group that `new` does not have is not
    /// notified (keepalived 2.2.7's `clear_diff_vrrp`). The others are notified STOP:
    /// they restart. `None` (the node stops): every instance and the group stop.
    pub(crate) async fn stop_removed(self, table: &VrrpTable, new: Option<&Config>) {
        let group_gone = new.is_some_and(|c| {
            self.sync_group
                .as_ref()
                .is_some_and(|g| !c.sync_groups.iter().any(|n| n.name == g.name))
        });
        if let Some(c) = new {
            let gone: HashSet<String> = self
                .instances
                .iter()
                .filter(|a| !c.vrrp_instances.iter().any(|b| same_virtual_router(a, b)))
                .map(|a| a.name.clone())
                .collect();
            for name in &gone {
                tracing::info!(instance = %name, "VRRP instance removed by the reload");
            }
            *self
                .deleted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = gone;
        }
        self.handle.shutdown();
        let group = self.sync_group.clone().filter(|_| !group_gone);
        let instances = self.wind_down("stop").await;
        // keepalived's notify_shutdown: the group's after its instances'.
        if let Some(g) = group {
            notify_group_stop(&g);
        }
        let mut t = table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for vi in &instances {
            if let Some(s) = t.get_mut(&vi.name) {
                s.state = VrrpState::Stop;
            }
        }
    }
}

/// Whether `new` differs from `old` in base priorities only, none of them becoming or
/// ceasing to be the address owner's 255: what depends on owning the address (a tracked
/// file's default weight 0, the owner's tracks ignored, RFC 5798's owner behaviour) is set
/// when an instance starts, so such a change goes through a hand-over instead.
fn priorities_only_change(old: &[VrrpInstance], new: &[VrrpInstance]) -> bool {
    old.len() == new.len()
        && old.iter().zip(new).all(|(a, b)| {
            let mut a = a.clone();
            let owner_changes = (a.priority == 255) != (b.priority == 255);
            a.priority = b.priority;
            a == *b && !owner_changes
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A priority-only reload is applied in place, but not one making an instance the
    /// address owner (255) or ceasing to be it: that was applied in place too, keeping the
    /// tracks built for the old priority (an owner whose tracked file should fault it
    /// stayed Master).
    #[test]
    fn becoming_or_ceasing_to_be_the_owner_is_not_priority_only() {
        let with = |p: u8| {
            let mut v = VrrpInstance::new("VI_1", "eth0", 51);
            v.priority = p;
            vec![v]
        };
        assert!(priorities_only_change(&with(100), &with(150)));
        assert!(priorities_only_change(&with(100), &with(100)));
        assert!(!priorities_only_change(&with(100), &with(255)));
        assert!(!priorities_only_change(&with(255), &with(100)));
        let mut other = with(150);
        other[0].virtual_router_id = 52;
        assert!(!priorities_only_change(&with(100), &other));
    }

    /// `lbctl status` shows a track's own state and what it does now: a reversed script
    /// that succeeds is `up` and takes its weight off; a weight-0 one failing faults; a
    /// file shows its added value.
    #[test]
    fn tracked_status_reads_reverse_and_files() {
        let st = |healthy, offset| TrackState { healthy, offset };
        let rev = ("script", "chk".to_owned(), 10, true);
        let t = tracked_status(&rev, st(Some(false), 0), false);
        assert_eq!(
            (t.state.as_str(), t.priority_change, t.fault),
            ("up", -10, false)
        );
        let t = tracked_status(&rev, st(Some(true), 0), false);
        assert_eq!(
            (t.state.as_str(), t.priority_change, t.fault),
            ("down", 0, false)
        );
        let zero = ("process", "nginx".to_owned(), 0, false);
        let t = tracked_status(&zero, st(Some(false), 0), false);
        assert_eq!(
            (t.state.as_str(), t.priority_change, t.fault),
            ("down", 0, true)
        );
        let t = tracked_status(&("script", "s".to_owned(), 5, false), st(None, 0), false);
        assert_eq!((t.state.as_str(), t.priority_change), ("unknown", 0));
        let file = ("file", "maint".to_owned(), 2, false);
        let t = tracked_status(&file, st(Some(true), -40), false);
        assert_eq!(
            (t.state.as_str(), t.priority_change, t.fault),
            ("ok", -40, false)
        );
        let t = tracked_status(&file, st(Some(false), 0), false);
        assert_eq!((t.state.as_str(), t.fault), ("fault", true));
        // An owner's priority never moves: no change shown.
        let down = ("process", "nginx".to_owned(), -30, false);
        let t = tracked_status(&down, st(Some(false), 0), true);
        assert_eq!((t.state.as_str(), t.priority_change), ("down", 0));
    }

    /// track_bfd entries follow the interfaces in the user-driven tracks, with the
    /// session's default weight and `reverse` unless the reference sets its own; a
    /// session not Up starts as failed (reversed: as healthy); track_meta lists them in
    /// the same place.
    #[test]
    fn track_bfd_follows_the_interfaces_and_starts_down_until_up() {
        let text = "[[bfd_instance]]\nname = \"a\"\nneighbor_ip = \"198.18.0.1\"\nweight = -20\n\
                    [[bfd_instance]]\nname = \"b\"\nneighbor_ip = \"198.18.0.2\"\nreverse = true\n\
                    [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"lo\"\nvirtual_router_id = 51\n\
                    virtual_ipaddress = [\"198.18.0.250\"]\n\
                    track_interface = [{ interface = \"lo\", weight = 5 }]\n\
                    track_bfd = [{ bfd = \"a\" }, { bfd = \"b\", weight = 30 }]\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let fresh = super::super::bfd::fresh();
        let up = lb_health::bfd::SessionStatus {
            state: lb_health::bfd::SessionState::Up,
            ..fresh
        };
        let (_a_tx, a) = watch::channel(up);
        let (_b_tx, b) = watch::channel(fresh);
        let bfd = BfdStates::from([("a".to_owned(), a), ("b".to_owned(), b)]);
        let c = instance_config(
            &config,
            &config.vrrp_instances[0],
            &HashMap::new(),
            &bfd,
            None,
        )
        .unwrap();
        assert_eq!(
            c.track,
            [TrackWeight(5), TrackWeight(-20), TrackWeight(-30)]
        );
        // lo is up; a is Up; b is not Up, reversed: healthy.
        assert_eq!(c.track_initial, [true, true, true]);
        let meta = track_meta(&config, &config.vrrp_instances[0]);
        let kinds: Vec<&str> = meta.iter().map(|m| m.0).collect();
        assert_eq!(kinds, ["interface", "bfd", "bfd"]);
        assert_eq!((meta[1].2, meta[1].3), (-20, false));
        assert_eq!((meta[2].2, meta[2].3), (30, true));
    }

    /// A tracked interface's and a tracked service's state before the start reach the
    /// speaker (a weight-0 one already down faults the instance from the first instant).
    #[test]
    fn tracks_start_in_their_current_state() {
        let text = "[[virtual_server]]\nname = \"web\"\nlisten = \"198.18.0.250:80\"\n\
                    [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
                    [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"lo\"\nvirtual_router_id = 51\n\
                    virtual_ipaddress = [\"198.18.0.250\"]\n\
                    track_service = [{ virtual_server = \"web\" }]\n\
                    track_interface = [{ interface = \"lo\" }, { interface = \"nosuch9\" }]\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let (_tx, rx) = watch::channel(false);
        let live = HashMap::from([("web".to_owned(), rx)]);
        let c = instance_config(
            &config,
            &config.vrrp_instances[0],
            &live,
            &BfdStates::new(),
            None,
        )
        .unwrap();
        assert_eq!(c.track_initial, [false, true, false]);
    }

    /// keepalived's `init_fail`: a script's own result starts failed, except a reversed
    /// weight-0 one's, which starts succeeding so that the instance faults at the start
    /// (keepalived faults it whatever `reverse` says); a result a reload carried wins and
    /// runs as any other.
    #[test]
    fn init_fail_starts_the_script_failed_and_faults_weight_zero_trackers() {
        let text = "[[vrrp_script]]\nname = \"s\"\nscript = \"/bin/true\"\ninit_fail = true\n\
                    [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"lo\"\nvirtual_router_id = 51\n\
                    virtual_ipaddress = [\"198.18.0.250\"]\n\
                    track_script = [{ script = \"s\", weight = 0 }, { script = \"s\", weight = 0, reverse = true }, { script = \"s\", weight = -10, reverse = true }]\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let live = HashMap::new();
        let c = instance_config(
            &config,
            &config.vrrp_instances[0],
            &live,
            &BfdStates::new(),
            None,
        )
        .unwrap();
        let got: Vec<(Option<bool>, bool)> = c
            .track_script
            .iter()
            .map(|t| (t.initial, t.init_fail))
            .collect();
        assert_eq!(
            got,
            [(Some(false), true), (Some(true), true), (Some(false), true)]
        );
        let carried = HashMap::from([("s".to_owned(), true)]);
        let c = instance_config(
            &config,
            &config.vrrp_instances[0],
            &live,
            &BfdStates::new(),
            Some(&carried),
        )
        .unwrap();
        assert!(c
            .track_script
            .iter()
            .all(|t| t.initial == Some(true) && !t.init_fail));
    }

    /// An address owner counts its track_files with weight 0 (any value but 0 is FAULT),
    /// as keepalived; others keep theirs. Process settings reach the speaker.
    #[test]
    fn owners_count_default_weight_files_with_weight_zero_and_ignore_weighted_ones() {
        let text = |prio: u8| {
            format!(
                "[[track_file]]\nname = \"m\"\nfile = \"/run/m\"\nweight = -3\n\
                 [[track_file]]\nname = \"d\"\nfile = \"/run/d\"\n\
                 [[vrrp_track_process]]\nname = \"p\"\nprocess = \"/usr/sbin/nginx\"\n\
                 params = [\"-g\"]\nquorum_max = 0\nreverse = true\n\
                 [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"lo\"\nvirtual_router_id = 51\n\
                 priority = {prio}\nvirtual_ipaddress = [\"198.18.0.250\"]\n\
                 track_file = [{{ file = \"m\" }}, {{ file = \"d\" }}]\ntrack_process = [{{ process = \"p\", weight = 5 }}]\n"
            )
        };
        let live = HashMap::new();
        // An owner: the default weight 1 becomes 0, a weighted file is ignored.
        for (prio, weights) in [(255, vec![0]), (100, vec![-3, 1])] {
            let (config, _) =
                crate::config::toml::parse_str(&text(prio), std::path::Path::new("t.toml"))
                    .unwrap();
            let c = instance_config(
                &config,
                &config.vrrp_instances[0],
                &live,
                &BfdStates::new(),
                None,
            )
            .unwrap();
            let got: Vec<i32> = c.track_file.iter().map(|f| f.weight).collect();
            assert_eq!(got, weights, "priority {prio}");
            assert_eq!(
                track_meta(&config, &config.vrrp_instances[0]).len(),
                1 + weights.len(),
                "status names the same tracks"
            );
            let p = &c.track_process[0];
            assert_eq!(
                (p.quorum, p.quorum_max, p.weight.0, p.reverse),
                (0, 0, 5, true)
            );
            assert!(
                p.pattern.full_command,
                "parameters compare the command line"
            );
            assert_eq!(
                p.pattern.param_match,
                Some(lb_vrrp::track::ParamMatch::Exact)
            );
        }
    }

    /// The speaker gets the excluded addresses apart from the advertised ones, and the
    /// script's user resolved.
    #[test]
    fn instance_config_keeps_excluded_vips_apart_and_resolves_script_users() {
        let text = "[[vrrp_script]]\nname = \"chk\"\nscript = \"/bin/true\"\nuser = \"nobody\"\n\
                    [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
                    virtual_ipaddress = [\"198.18.0.250\"]\n\
                    virtual_ipaddress_excluded = [\"198.18.0.251\", \"2001:db8::1/64\"]\n\
                    track_script = [{ script = \"chk\" }]\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let c = instance_config(
            &config,
            &config.vrrp_instances[0],
            &HashMap::new(),
            &BfdStates::new(),
            None,
        )
        .unwrap();
        let addrs = |v: &[Vip]| v.iter().map(|v| v.addr.to_string()).collect::<Vec<_>>();
        assert_eq!(addrs(&c.virtual_ipaddress), ["198.18.0.250"]);
        assert_eq!(
            addrs(&c.virtual_ipaddress_excluded),
            ["198.18.0.251", "2001:db8::1"]
        );
        assert_eq!(
            c.track_script[0].run_as,
            Some(lb_vrrp::driver::RunAs::resolve("nobody", None).unwrap())
        );
    }

    /// An instance's group: its `mcast_dst_ip`, else the global group of its family, else
    /// none (RFC 5798's, chosen by the driver); its VMAC, named by the defaults.
    #[test]
    fn instance_config_takes_groups_and_vmacs() {
        let text = "[global]\nvrrp_mcast_group4 = \"224.0.0.119\"\nvrrp_gna_interval = \"5ms\"\n\
                    [[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
                    virtual_ipaddress = [\"198.18.0.250\"]\nuse_vmac = true\n\
                    [[vrrp_instance]]\nname = \"B\"\ninterface = \"eth0\"\nvirtual_router_id = 52\n\
                    mcast_dst_ip = \"224.0.0.120\"\ndown_timer_adverts = 5\n\
                    virtual_ipaddress = [\"198.18.0.251\"]\n\
                    [[vrrp_instance]]\nname = \"C\"\ninterface = \"eth0\"\nvirtual_router_id = 53\n\
                    version = 3\nvirtual_ipaddress = [\"fd00:18::1\"]\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let c: Vec<VrrpInstanceConfig> = config
            .vrrp_instances
            .iter()
            .map(|vi| instance_config(&config, vi, &HashMap::new(), &BfdStates::new(), None))
            .collect::<Result<_, _>>()
            .unwrap();
        let groups: Vec<Option<String>> = c
            .iter()
            .map(|c| c.mcast_dst_ip.map(|g| g.to_string()))
            .collect();
        assert_eq!(
            groups,
            [Some("224.0.0.119".into()), Some("224.0.0.120".into()), None]
        );
        let vmac = c[0].use_vmac.as_ref().expect("A uses a VMAC");
        assert_eq!(
            (vmac.name.as_str(), vmac.mac),
            ("vrrp.51", [0, 0, 0x5e, 0, 1, 51])
        );
        assert!(c[1].use_vmac.is_none());
        assert_eq!((c[0].down_timer_adverts, c[1].down_timer_adverts), (3, 5));
        // The gratuitous ARP / NA spacing is every instance's.
        assert!(c.iter().all(
            |c| (c.garp_interval, c.gna_interval) == (Duration::ZERO, Duration::from_millis(5))
        ));
    }
}
