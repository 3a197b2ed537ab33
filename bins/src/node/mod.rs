//! The `lb-node` runtime: composes `lb-core` pools, `lb-health` checks, `lb-proxy` listeners
//! and `lb-vrrp` speakers from one [`Config`], serves the admin socket, and handles signals.
//!
//! * Virtual servers start first, their listeners bound with `IP_FREEBIND` so a backup node
//!   already listens on VIPs it does not hold; then the VRRP instances.
//! * Health events change the pools (`inhibit_on_failure` keeps a failed backend at weight
//!   0; otherwise it leaves the set), and a virtual server with no live backend lowers the
//!   priority of the instances that `track_service` it (weight 0: FAULT), so the node whose
//!   service is dead gives the VIPs away.
//! * Passive health: every connection's outcome (connect refused, timed out, reset, HTTP
//!   5xx) feeds Envoy-style outlier detection — 5 consecutive failures eject a backend for
//!   30 s × its ejection count (≤ 300 s), never more than half the backends nor the
//!   last one that serves — applied
//!   together with the active checks (a backend is down while either says so).
//! * `SIGTERM`/`SIGINT`: masters send priority 0 and remove their VIPs, listeners close,
//!   established connections drain up to `drain_deadline` (also those still held by
//!   virtual servers that earlier reloads replaced), exit 0.
//! * `SIGHUP`: reload. A configuration with errors is rejected (logged with file:line:col)
//!   and the running one stays. VRRP groups are the sync groups and, each on its own, the
//!   instances outside one. Unchanged groups keep running (no flap, no GARP), and so do
//!   groups where only base priorities changed (applied in place); a group restarts when
//!   its instances, its sync group's settings (notify scripts) or a script, process or
//!   file its instances track changed, as keepalived leaves alone what a reload does not
//!   touch; a restart on the same interface and VRID is a hand-over (a Master stays
//!   Master, and each script of the same name starts from its predecessor's last result,
//!   as keepalived keeps a script's state across a reload). A group that
//!   fails to start is tried again by the next SIGHUP, even with the file unchanged. Unchanged virtual servers are untouched; a weight-only change
//!   applies in place without dropping a connection; other changes restart that virtual
//!   server, letting the old one drain. The new version keeps, per real server address,
//!   the admin state set with `lbctl` (also one set while the reload runs: the retired
//!   version and its started replacement both take it) and its checks' verdict
//!   while the checks probe the same (keepalived keeps its checkers' state across a reload
//!   when they compare equal), its passive health's ejections
//!   (Envoy keeps a host's outlier state across cluster updates), its quorum state and its
//!   counters' totals. A restarted TCP or HTTP virtual server accepts on a
//!   duplicate of the running listening socket, started before the old proxy stops
//!   accepting (`vs::Listeners`): no connection is refused and none queued is lost. A
//!   restarted UDP virtual server likewise receives on a duplicate of the running socket
//!   while the old one's sessions carry the replies to what it forwarded until they go
//!   idle or `drain_deadline`: no datagram meets a closed port and no reply is lost. A
//!   client's next datagram takes its session over, socket and all, when its real server
//!   is still eligible: the flow stays on that real server, which sees the same source
//!   address and port, as IPVS's connection entries outlive a keepalived reload
//!   (`lb_proxy::udp::UdpProxyConfig::session_donor`).
//!   A virtual server whose new version fails to start (its new address taken by another
//!   program, say) keeps running its previous version, still accepting on its old address,
//!   as HAProxy's old process outlives a failed reload; the error is logged, and the next
//!   reload tries again even if the file did not change. One that routes to virtual
//!   servers the reload restarted is started anew on its previous configuration instead
//!   (on its running socket), so it routes to their new pools, not the retired ones. A virtual server added by a
//!   reload that fails to start is not running, and the instances tracking it see it dead.
//!   A virtual server that goes away, or moves to an address overlapping its own
//!   (`0.0.0.0:53` → `127.0.0.1:53`), stops accepting (UDP: ends its sessions) before
//!   anything binds, so its port is refused at once and the overlapping address can be
//!   bound; such a move has no previous version to fall back on. An HTTP virtual server whose
//!   routes name one that restarts or goes away restarts too, so no proxy keeps a stale
//!   pool.
//! * HTTP routes (`[[virtual_server.http.route]]`): the proxy of an HTTP virtual server is
//!   handed the pools of the virtual servers it routes to (with their passive-health
//!   observers), so their health checks steer routed requests at once; targets start first,
//!   and `lbctl status` counts routed requests on the target's backends.
//!
//! Exit codes (also in `lb-node --help`): 0 clean stop; 1 invalid configuration; 2 usage;
//! 3 start-up failure (a listener, socket or interface that cannot be used).

mod access_log;
mod bfd;
mod dump;
mod fifo;
mod file_check;
mod pidfile;
mod promote;
mod statics;
mod vrrp;
mod vs;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use lb_core::{BackendId, Pool};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin::{
    self, AdminHandler, AdminState, BackendStatus, HttpCounters, HttpVsCounters, NodeStatus,
    Status, VirtualServerStatus,
};
use crate::config::model::{Config, NotifyScript, Protocol};
use crate::config::{self, diff, Format};
use vrrp::{SpeakerRuntime, VrrpTable};
use vs::{Listeners, Proxy, VsRuntime};

/// How long the virtual servers started by a reload retry binding an address that is still
/// in use, all of them together: one whose kept socket was closed while a stopping proxy
/// still held a duplicate (a restarted virtual server takes the kept socket over instead).
/// One window for the whole reload, as those proxies all stop at once: 2 s each, one after
/// another, held a SIGTERM for 2 s per virtual server moved to a busy address.
const RELOAD_BIND_WAIT: Duration = Duration::from_secs(2);

/// Exit code: start-up failure.
pub const EXIT_START: u8 = 3;

pub use dump::{DumpFiles, DEFAULT_DATA_FILE, DEFAULT_STATS_FILE};
pub use pidfile::DEFAULT_PID_FILE;

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration did not load; every error, one per line.
    #[error("{0}")]
    Config(String),
    /// A component could not start (the message names it).
    #[error("{0}")]
    Start(String),
}

/// `lbctl weight` changes sent to the health appliers and not known applied. Each admin
/// connection that changed a weight waits for every change pending when it asks (its own
/// among them), so that two connections changing weights at once are each answered after
/// their own change is applied (the first used to take both, the second none).
#[derive(Debug, Default)]
struct PendingWeights(Mutex<Vec<futures::future::Shared<tokio::sync::oneshot::Receiver<()>>>>);

impl PendingWeights {
    /// A change sent; `ack` completes (or closes, its virtual server gone) once applied.
    fn push(&self, ack: tokio::sync::oneshot::Receiver<()>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(futures::FutureExt::shared(ack));
    }

    /// Ends once every change pending now is applied.
    fn applied(&self) -> admin::Applied {
        let pending = {
            let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Applied ones are done with.
            all.retain(|ack| ack.peek().is_none());
            all.clone()
        };
        Box::pin(async move {
            for ack in pending {
                // A closed channel: the virtual server stopped; nothing more to wait for.
                let _ = ack.await;
            }
        })
    }
}

/// What the admin socket reads: the running virtual servers and VRRP instances.
#[derive(Debug)]
struct Shared {
    started: Instant,
    config_path: String,
    router_id: RwLock<Option<String>>,
    /// Virtual servers in configuration order: name, status frame, pool, HTTP stats source.
    vservers: RwLock<Vec<VsView>>,
    vrrp: VrrpTable,
    /// Instance names in configuration order.
    vrrp_order: RwLock<Vec<String>>,
    /// The busy-polling switch (`[global] busy_polling`), when on.
    busy_polling: Option<lb_proxy::busy_poll::BusyPolling>,
    /// Virtual servers of the configuration that a reload could not start, with why.
    failed_vservers: RwLock<Vec<VirtualServerStatus>>,
    /// How the last SIGHUP reload ended.
    last_reload: RwLock<Option<admin::ReloadStatus>>,
    /// `lbctl weight` changes not known applied ([`AdminHandler::weights_applied`]).
    weights_pending: PendingWeights,
    /// The open access log files, for their counters.
    access_logs: Arc<access_log::AccessLogFiles>,
    /// The BFD sessions, in configuration order.
    bfd: RwLock<
        Vec<(
            config::model::BfdInstance,
            watch::Receiver<lb_health::bfd::SessionStatus>,
        )>,
    >,
}

#[derive(Debug, Clone)]
struct VsView {
    frame: VirtualServerStatus,
    pool: Arc<Pool>,
    /// This virtual server's own HTTP proxy (HTTP mode only).
    http: Option<HttpStatsFn>,
    /// Its TCP or UDP proxy's counters (L4 modes).
    l4: Option<L4StatsFn>,
    /// The proxies of the HTTP virtual servers that route requests to this one's pool: they
    /// count those requests, under this virtual server's name.
    routed: Vec<HttpStatsFn>,
    /// Why each backend's health last changed (by backend id).
    notes: vs::HealthNotes,
    /// Its active checks' states (what each one fails with now).
    checks: Option<lb_health::CheckStates>,
    /// Runs `quorum_up`/`quorum_down`: told at once of an `lbctl` admin change (the
    /// liveness task looks only every 200 ms and at health events).
    quorum: Arc<vs::QuorumNotifier>,
    /// While a reload runs: the pool of the replacement of this virtual server, started
    /// and serving but not yet published. `lbctl backend` commands apply to both pools
    /// (see [`Node::adopt_replacement`]).
    replacement: Option<Arc<Pool>>,
    /// Wakes its health applier task after an admin change ([`VsRuntime::admin_changed`]),
    /// and the replacement's while a reload runs.
    admin_changed: Arc<tokio::sync::Notify>,
    replacement_admin_changed: Option<Arc<tokio::sync::Notify>>,
    /// The applier task's channel for new configured weights (`lbctl weight`).
    weights: WeightSender,
    /// Where `lbctl weight` records what it set, for a reload that restarts the virtual
    /// server (shared with a replacement).
    operator_weights: vs::OperatorWeights,
    /// While a reload runs: the replacement's weight channel (its pool's weights go
    /// through it too).
    replacement_weights: Option<WeightSender>,
}

/// Reads a running proxy's counters (for `lbctl status`).
struct StatsFn<T>(Arc<dyn Fn() -> T + Send + Sync>);

impl<T> Clone for StatsFn<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> std::fmt::Debug for StatsFn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsFn")
    }
}

/// Reads an L4 virtual server's counters.
type L4StatsFn = StatsFn<lb_proxy::stats::StatsSnapshot>;

/// Reads an HTTP virtual server's counters (`None` once it stopped).
type HttpStatsFn = StatsFn<Option<lb_proxy::http::HttpStatsSnapshot>>;

/// The node's name: `router_id`, else the host name, as keepalived defaults it
/// (`get_local_name`); `None` only when neither can be read.
fn router_id(global: &config::model::Global) -> Option<String> {
    global.router_id.clone().or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    })
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl AdminHandler for Shared {
    fn status(&self) -> Status {
        let vrrp_table = read(&self.vrrp);
        let vrrp = read(&self.vrrp_order)
            .iter()
            .filter_map(|n| vrrp_table.get(n).cloned())
            .collect();
        let virtual_servers: Vec<VirtualServerStatus> = read(&self.vservers)
            .iter()
            .map(|v| {
                let snap = v.pool.snapshot();
                let http = v.http.as_ref().and_then(|f| (f.0)());
                let routed: Vec<_> = v.routed.iter().filter_map(|f| (f.0)()).collect();
                let mut frame = v.frame.clone();
                frame.quorum = snap.has_quorum();
                frame.l4 = v.l4.as_ref().map(|f| (f.0)().into());
                frame.http = http.as_ref().map(|h| {
                    let s = &h.virtual_server;
                    HttpVsCounters {
                        connections: s.connections,
                        active_connections: s.active_connections,
                        requests: s.requests,
                        no_backend: s.no_backend,
                        bad_gateway: s.bad_gateway,
                        gateway_timeout: s.gateway_timeout,
                        bad_requests: s.bad_requests,
                        header_timeouts: s.header_timeouts,
                        idle_timeouts: s.idle_timeouts,
                        client_timeouts: s.client_timeouts,
                        proxy_header_errors: s.proxy_header_errors,
                        tls_handshake_errors: s.tls_handshake_errors,
                        retries: s.retries,
                        upgrades: s.upgrades,
                        http2_connections: s.http2_connections,
                    }
                });
                let notes = v
                    .notes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                frame.backends = snap
                    .backends()
                    .iter()
                    .map(|b| {
                        let s = b.stats();
                        // What its check fails with now, while the check has it down.
                        let live = v
                            .checks
                            .as_ref()
                            .and_then(|c| c.get(b.id()))
                            .filter(|c| c.health == lb_core::Health::Down)
                            .and_then(|c| c.last_failure);
                        let (reason, since) = vs::FailureNotes::shown(notes.get(&b.id()), live);
                        // Requests to this pool's backends, whichever proxy forwarded them.
                        let http = http.as_ref().map(|h| {
                            let mut c = HttpCounters::default();
                            for x in h
                                .backends
                                .iter()
                                .chain(routed.iter().flat_map(|r| &r.backends))
                                .filter(|x| x.pool == v.frame.name && x.addr == b.addr())
                            {
                                c.requests += x.requests;
                                c.responses_1xx += x.responses.c1xx;
                                c.responses_2xx += x.responses.c2xx;
                                c.responses_3xx += x.responses.c3xx;
                                c.responses_4xx += x.responses.c4xx;
                                c.responses_5xx += x.responses.c5xx;
                                c.connect_failures += x.connect_failures;
                                c.timeouts += x.timeouts;
                            }
                            c
                        });
                        BackendStatus {
                            address: b.addr(),
                            health: b.health().into(),
                            admin: b.admin().into(),
                            backup: b.is_backup(),
                            weight: b.weight().get(),
                            effective_weight: b.effective_weight().get(),
                            // HTTP mode forwards requests, not connections: those count.
                            active_connections: s.active()
                                + if http.is_some() { s.in_flight() } else { 0 },
                            total_connections: s.total() + http.as_ref().map_or(0, |h| h.requests),
                            bytes_to_backend: s.bytes_to_backend(),
                            bytes_to_client: s.bytes_to_client(),
                            http,
                            health_reason: reason,
                            health_changed: since.and_then(|at| {
                                at.duration_since(std::time::UNIX_EPOCH)
                                    .ok()
                                    .map(|d| d.as_secs())
                            }),
                        }
                    })
                    .collect();
                frame
            })
            .chain(read(&self.failed_vservers).iter().cloned())
            .collect();
        Status {
            node: NodeStatus {
                router_id: read(&self.router_id).clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_secs: self.started.elapsed().as_secs(),
                config: Some(self.config_path.clone()),
                busy_polling: self.busy_polling.is_some(),
                busy_polls: self.busy_polling.as_ref().map_or(0, |b| b.spins()),
                last_reload: read(&self.last_reload).clone(),
            },
            vrrp,
            virtual_servers,
            access_logs: self.access_logs.stats(),
            bfd: read(&self.bfd)
                .iter()
                .map(|(b, rx)| {
                    let st = rx.borrow();
                    admin::BfdStatus {
                        name: b.name.clone(),
                        neighbor_ip: b.neighbor_ip,
                        state: st.state.to_string(),
                        remote_state: st.remote_state.to_string(),
                        diagnostic: st.local_diag.to_string(),
                        since_secs: st.since.elapsed().as_secs(),
                        packets_in: st.counters.rx,
                        packets_out: st.counters.tx,
                        dropped: st.counters.dropped(),
                    }
                })
                .collect(),
        }
    }

    fn set_backend_admin(
        &self,
        virtual_server: &str,
        backend: &str,
        state: AdminState,
    ) -> Result<(), String> {
        let vss = read(&self.vservers);
        let (v, addr, id) = find_backend(&vss, virtual_server, backend)?;
        let now = Instant::now_tokio();
        v.pool
            .set_admin(id, state.into(), now)
            .map_err(|e| e.to_string())?;
        v.admin_changed.notify_one();
        // A reload is replacing this virtual server: its replacement (already serving)
        // takes the command too, and so keeps it once published. A backend the new version
        // no longer has is left out.
        if let Some(r) = &v.replacement {
            if let Some(b) = r.backends().iter().find(|b| b.addr() == addr) {
                r.set_admin(b.id(), state.into(), now)
                    .map_err(|e| e.to_string())?;
                if let Some(n) = &v.replacement_admin_changed {
                    n.notify_one();
                }
            }
        }
        tracing::info!(virtual_server, backend, state = %state, "backend admin state changed by lbctl");
        // A quorum the change loses or regains is announced now, as keepalived's
        // notifies on every change (a drain then a ready within the liveness task's
        // period ran neither command while the sorry server took the clients).
        v.quorum.check(&v.pool);
        Ok(())
    }

    fn weights_applied(&self) -> admin::Applied {
        self.weights_pending.applied()
    }

    fn set_backend_weight(
        &self,
        virtual_server: &str,
        backend: &str,
        weight: u32,
    ) -> Result<(), String> {
        let w = lb_core::Weight::new(u64::from(weight))
            .map_err(|_| format!("weight {weight} is out of range 0..=65535"))?;
        let vss = read(&self.vservers);
        let (v, addr, id) = find_backend(&vss, virtual_server, backend)?;
        // Through the health applier, which remembers it as the configured weight: the
        // next health event does not put the file's back.
        let (applied, ack) = tokio::sync::oneshot::channel();
        v.weights
            .send((id, w, Some(applied)))
            .map_err(|_| format!("virtual server {virtual_server} is stopping"))?;
        self.weights_pending.push(ack);
        // And for a reload that restarts the virtual server (with a replacement started
        // already, the same record: it is shared).
        v.operator_weights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr, w);
        // A reload is replacing this virtual server: its replacement takes it too.
        if let (Some(r), Some(tx)) = (&v.replacement, &v.replacement_weights) {
            if let Some(b) = r.backends().iter().find(|b| b.addr() == addr) {
                let _ = tx.send((b.id(), w, None));
            }
        }
        tracing::info!(
            virtual_server,
            backend,
            weight,
            "backend weight changed by lbctl"
        );
        Ok(())
    }
}

/// The view of virtual server `virtual_server` (its name), and the address and id of its
/// backend `backend` (`ip:port`), or a message for the operator.
fn find_backend<'a>(
    vss: &'a [VsView],
    virtual_server: &str,
    backend: &str,
) -> Result<(&'a VsView, std::net::SocketAddr, BackendId), String> {
    // By name, else by its listen address as ipvsadm names a service (`VIP:PORT`, or
    // `VIP:PORT/udp` beside a TCP one on the same address).
    let by_listen = |udp: Option<bool>, text: &str| -> Vec<&'a VsView> {
        let Ok(listen) = text.parse::<std::net::SocketAddr>() else {
            return Vec::new();
        };
        vss.iter()
            .filter(|v| v.frame.listen == listen)
            .filter(|v| udp.is_none_or(|u| u == (v.frame.protocol == Protocol::Udp)))
            .collect()
    };
    let v = match vss.iter().find(|v| v.frame.name == virtual_server) {
        Some(v) => v,
        None => {
            let found = match virtual_server.strip_suffix("/udp") {
                Some(addr) => by_listen(Some(true), addr),
                None => match virtual_server.strip_suffix("/tcp") {
                    Some(addr) => by_listen(Some(false), addr),
                    None => by_listen(None, virtual_server),
                },
            };
            match found.as_slice() {
                [v] => *v,
                [] => {
                    let names: Vec<&str> = vss.iter().map(|v| v.frame.name.as_str()).collect();
                    return Err(format!(
                        "no virtual server named or listening on {virtual_server:?} (virtual servers: {})",
                        names.join(", ")
                    ));
                }
                several => {
                    let names: Vec<&str> = several.iter().map(|v| v.frame.name.as_str()).collect();
                    return Err(format!(
                        "{virtual_server:?} is the listen address of several virtual servers ({}): name one",
                        names.join(", ")
                    ));
                }
            }
        }
    };
    let addr: std::net::SocketAddr = backend
        .parse()
        .map_err(|_| format!("{backend:?} is not an ip:port backend address"))?;
    let id = v
        .pool
        .backends()
        .iter()
        .find(|b| b.addr() == addr)
        .map(lb_core::Backend::id)
        .ok_or_else(|| format!("virtual server {virtual_server} has no backend {addr}"))?;
    Ok((v, addr, id))
}

/// A virtual server's channel for new configured weights, read by its health applier.
type WeightSender = tokio::sync::mpsc::UnboundedSender<vs::WeightChange>;

/// Runs `script` (by `/bin/sh -c`) with keepalived's notify arguments, without waiting for
/// it: VRRP `notify*`, virtual servers' `quorum_up`/`quorum_down`, real servers'
/// `notify_up`/`notify_down`; as its user and group when it has them (as a `vrrp_script`
/// with `user`: no supplementary groups), not at all when they cannot be looked up.
pub(crate) fn notify(script: &NotifyScript, args: &[&str]) {
    // Started here, in call order (keepalived starts them in event order); the user is
    // looked up once per load (see `notify_run_as`), not at every run on the event loop.
    let run_as = match notify_run_as(script) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(script = %script.command, error = %e, "notify script not run");
            return;
        }
    };
    let mut cmd = script_command(script, run_as, Some(("notify", args)), false);
    match cmd.spawn() {
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => {
            tracing::warn!(script = %script.command, error = %e, "notify script failed to start");
        }
    }
}

/// `/bin/sh -c COMMAND` for `script`, as `run_as` when given, not killed when dropped;
/// with `args` (`$0`, then `$@`) appended to the command as `"$@"`; in a process group of
/// its own when `group` (so that it can be stopped with whatever it started).
pub(crate) fn script_command<S: AsRef<std::ffi::OsStr>>(
    script: &NotifyScript,
    run_as: Option<lb_vrrp::driver::RunAs>,
    args: Option<(&str, &[S])>,
    group: bool,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").kill_on_drop(false);
    match args {
        Some((name, args)) => {
            cmd.arg(format!("{} \"$@\"", script.command))
                .arg(name)
                .args(args);
        }
        None => {
            cmd.arg(&script.command);
        }
    }
    if group {
        cmd.process_group(0);
    }
    if let Some(r) = run_as {
        cmd.gid(r.gid).uid(r.uid);
    }
    cmd
}

/// Runs keepalived's `startup_script` or `shutdown_script` (`kind`) by `/bin/sh -c`, in a
/// process group of its own, as its user, and waits for it: at most `timeout`, then
/// SIGTERM to the group and, 2 s later, SIGKILL (keepalived's handling of a script that
/// times out). A failure is logged and changes nothing else.
pub(crate) async fn run_lifecycle_script(script: &NotifyScript, timeout: Duration, kind: &str) {
    let run_as = match notify_run_as(script) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(script = %script.command, error = %e, "{kind} script not run");
            return;
        }
    };
    let mut child = match script_command::<&str>(script, run_as, None, true).spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(script = %script.command, error = %e, "{kind} script failed to start");
            return;
        }
    };
    tracing::info!(script = %script.command, "running the {kind} script");
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
    // The group is killed when this is dropped while the script runs (lb-node stopped
    // meanwhile), and after a timeout once the script is reaped (keepalived kills the
    // group once the script died of its SIGTERM); not when the script ended by itself
    // (what it left running in the background is its business, as in keepalived). Until
    // the leader is reaped its group ID cannot be reused; after that the group only holds
    // the script's children, or nothing.
    struct KillGroup(Option<nix::unistd::Pid>);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            if let Some(g) = self.0 {
                let _ = nix::sys::signal::killpg(g, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let mut rest = KillGroup(group);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => {
            rest.0 = None;
            s
        }
        Err(_) => {
            tracing::warn!(script = %script.command, ?timeout, "{kind} script timed out: SIGTERM, then SIGKILL 2 s later");
            let mut status = None;
            for sig in [
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::Signal::SIGKILL,
            ] {
                if let Some(g) = group {
                    let _ = nix::sys::signal::killpg(g, sig);
                }
                if let Ok(s) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                    status = Some(s);
                    break;
                }
            }
            match status {
                Some(s) => s,
                None => {
                    tracing::error!(script = %script.command, "{kind} script did not end after SIGKILL");
                    return;
                }
            }
        }
    };
    match status {
        Ok(s) if s.success() => tracing::info!(script = %script.command, "{kind} script done"),
        Ok(s) => tracing::warn!(script = %script.command, status = %s, "{kind} script failed"),
        Err(e) => {
            tracing::warn!(script = %script.command, error = %e, "{kind} script: wait failed")
        }
    }
}

/// Users and groups of notify scripts, looked up once and remembered until the next
/// configuration load ([`forget_notify_users`]), as keepalived resolves them at load: a
/// lookup goes through NSS (files, LDAP, sssd) and may stall the event loop.
type RunAsCache = HashMap<(String, Option<String>), Result<lb_vrrp::driver::RunAs, String>>;
static NOTIFY_USERS: std::sync::LazyLock<Mutex<RunAsCache>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

fn notify_run_as(script: &NotifyScript) -> Result<Option<lb_vrrp::driver::RunAs>, String> {
    match &script.user {
        None => script.run_as(),
        Some(user) => run_as_cached(user, script.group.as_deref()).map(Some),
    }
}

/// `user` and `group` looked up once per configuration load (every script kind: notify
/// scripts, vrrp_scripts, MISC_CHECK programs), as keepalived resolves them at load: a
/// lookup goes through NSS and may stall the event loop.
pub(crate) fn run_as_cached(
    user: &str,
    group: Option<&str>,
) -> Result<lb_vrrp::driver::RunAs, String> {
    let key = (user.to_owned(), group.map(str::to_owned));
    let known = NOTIFY_USERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some(r) = known {
        return r;
    }
    let r = lb_vrrp::driver::RunAs::resolve(user, group);
    NOTIFY_USERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, r.clone());
    r
}

/// Forgets the scripts' looked-up users: a configuration (re)load looks them up
/// again.
pub(crate) fn forget_notify_users() {
    NOTIFY_USERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// The running node.
#[derive(Debug)]
struct Node {
    path: PathBuf,
    format: Option<Format>,
    config: Config,
    shared: Arc<Shared>,
    vservers: Vec<VsRuntime>,
    speakers: Vec<SpeakerRuntime>,
    /// "Has a live backend" per virtual server name. Outlives the virtual servers' runtimes
    /// so that `track_service` keeps following a virtual server that a reload restarted
    /// while its VRRP group kept running.
    live: HashMap<String, Arc<watch::Sender<bool>>>,
    /// Listening sockets kept for hand-over to restarted virtual servers.
    listeners: Listeners,
    /// UDP proxies that a reload replaced and whose sessions still drain: closed at once
    /// when a later reload leaves no UDP virtual server on their address (so the port is
    /// refused, or free to bind, at once, as keepalived's removed IPVS service), and at
    /// SIGTERM.
    draining_udp: Vec<DrainingUdp>,
    /// The drains ([`VsRuntime::stop`]) of TCP and HTTP virtual servers that reloads
    /// replaced or removed: SIGTERM waits for them too. Finished ones are dropped at the
    /// next reload.
    draining: Vec<tokio::task::JoinHandle<()>>,
    /// The BFD sessions (`bfd_instance`), which VRRP instances and real servers follow.
    bfd: bfd::BfdRuntime,
    /// Adds back static addresses, routes and rules someone deleted ([`statics::watch`]).
    statics_watch: Option<tokio::task::JoinHandle<()>>,
}

/// A replaced UDP virtual server's proxy while its sessions drain.
#[derive(Debug)]
struct DrainingUdp {
    /// The address it shares with its replacement.
    listen: std::net::SocketAddr,
    closer: lb_proxy::udp::UdpCloser,
    /// The drain ([`VsRuntime::stop`]); finished entries are dropped at the next reload.
    task: tokio::task::JoinHandle<()>,
}

/// Reads the counters of `v`'s proxy, in HTTP mode.
fn l4_stats(v: &VsRuntime) -> Option<L4StatsFn> {
    match &v.proxy {
        Proxy::Tcp(p) => Some(StatsFn(p.stats_reader())),
        Proxy::Udp(u) => Some(StatsFn(u.stats_reader())),
        Proxy::Http(_) => None,
    }
}

fn http_stats(v: &VsRuntime) -> Option<HttpStatsFn> {
    match &v.proxy {
        Proxy::Http(h) => {
            let h = Arc::clone(h);
            Some(StatsFn(Arc::new(move || {
                h.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(lb_proxy::http::HttpProxy::stats)
            })))
        }
        _ => None,
    }
}

/// The admin view of `v`; `all` are the running virtual servers (those routing to `v`
/// count some of its requests).
fn vs_view(v: &VsRuntime, all: &[VsRuntime]) -> VsView {
    let frame = VirtualServerStatus::frame(&v.cfg);
    let routed = all
        .iter()
        .filter(|o| {
            o.cfg.name != v.cfg.name && o.cfg.route_targets().contains(&v.cfg.name.as_str())
        })
        .filter_map(http_stats)
        .collect();
    VsView {
        frame,
        pool: Arc::clone(&v.pool),
        notes: Arc::clone(&v.health_notes),
        checks: v.check_states(),
        quorum: v.quorum_notifier(),
        http: http_stats(v),
        l4: l4_stats(v),
        routed,
        replacement: None,
        admin_changed: v.admin_notify(),
        replacement_admin_changed: None,
        weights: v.weight_sender(),
        operator_weights: v.operator_weights(),
        replacement_weights: None,
    }
}

/// The pools of the virtual servers `vs` routes to, taken from the `running` ones.
///
/// # Errors
/// [`NodeError::Start`] naming a route target that is not running.
fn route_pools(
    vs: &config::model::VirtualServer,
    running: &[VsRuntime],
) -> Result<Vec<lb_proxy::http::HttpPool>, NodeError> {
    vs.route_targets()
        .into_iter()
        .map(|t| {
            running
                .iter()
                .find(|r| r.cfg.name == t)
                .map(VsRuntime::http_pool)
                .ok_or_else(|| {
                    NodeError::Start(format!(
                        "virtual_server {}: route target {t} is not running",
                        vs.name
                    ))
                })
        })
        .collect()
}

/// Starts `vs`, handing it the pools of its route targets among `running` and its
/// listening socket from `listeners` (see [`VsRuntime::start`]).
///
/// # Errors
/// A route target that is not running, or what [`VsRuntime::start`] returns.
#[allow(clippy::too_many_arguments)] // VsRuntime::start's, and the running virtual servers
async fn start_vs(
    vs: &config::model::VirtualServer,
    global: &config::model::Global,
    bind_wait: Duration,
    live: Arc<watch::Sender<bool>>,
    running: &[VsRuntime],
    listeners: &mut Listeners,
    carried: vs::Carried,
    bfd: &bfd::BfdStates,
) -> Result<VsRuntime, NodeError> {
    let pools = route_pools(vs, running)?;
    VsRuntime::start(
        vs.clone(),
        global,
        bind_wait,
        live,
        pools,
        listeners,
        carried,
        bfd,
    )
    .await
}

/// The settings of sync group `group` in `config`.
fn sync_group_of<'a>(
    config: &'a Config,
    group: &Option<String>,
) -> Option<&'a config::model::SyncGroup> {
    let name = group.as_ref()?;
    config.sync_groups.iter().find(|g| &g.name == name)
}

/// Sorts running virtual servers into `config`'s order.
fn sort_by_config(v: &mut [VsRuntime], config: &Config) {
    v.sort_by_key(|r| {
        config
            .virtual_servers
            .iter()
            .position(|n| n.name == r.cfg.name)
            .unwrap_or(usize::MAX)
    });
}

fn load(path: &std::path::Path, format: Option<Format>) -> Result<Config, NodeError> {
    let format = format.unwrap_or_else(|| Format::from_path(path));
    match config::load_with_format(path, format) {
        Ok((mut cfg, mut warnings)) => {
            // What this host lacks (a missing interface, script program), as `--check` says;
            // a missing vrrp_script is disabled, as keepalived disables it.
            warnings.extend(crate::check::host_warnings(&cfg));
            crate::logging::log_warnings(&warnings);
            crate::check::disable_missing_scripts(&mut cfg);
            Ok(cfg)
        }
        Err(errors) => Err(NodeError::Config(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}

impl Node {
    async fn start(
        path: PathBuf,
        format: Option<Format>,
        config: Config,
    ) -> Result<Self, NodeError> {
        vrrp::mark_start();
        // Before anything can report an event.
        fifo::open(&config.global);
        let shared = Arc::new(Shared {
            started: Instant::now_tokio(),
            config_path: path.display().to_string(),
            router_id: RwLock::new(router_id(&config.global)),
            vservers: RwLock::new(Vec::new()),
            vrrp: VrrpTable::default(),
            vrrp_order: RwLock::new(
                config
                    .vrrp_instances
                    .iter()
                    .map(|v| v.name.clone())
                    .collect(),
            ),
            busy_polling: config
                .global
                .busy_polling
                .then(lb_proxy::busy_poll::BusyPolling::new),
            failed_vservers: RwLock::new(Vec::new()),
            last_reload: RwLock::new(None),
            bfd: RwLock::new(Vec::new()),
            weights_pending: PendingWeights::default(),
            access_logs: Arc::default(),
        });
        let mut listeners = Listeners::default();
        listeners.access_logs = Arc::clone(&shared.access_logs);
        let mut node = Self {
            path,
            format,
            config: config.clone(),
            shared,
            vservers: Vec::new(),
            speakers: Vec::new(),
            live: HashMap::new(),
            listeners,
            draining_udp: Vec::new(),
            draining: Vec::new(),
            bfd: bfd::BfdRuntime::default(),
            statics_watch: None,
        };
        vrrp::set_garp_groups(&config);
        // static_ipaddress / static_routes before anything listens or advertises.
        statics::apply(None, &config).await;
        node.statics_watch = statics::watch(&config);
        // BFD sessions first: virtual servers and VRRP instances follow them.
        match bfd::BfdRuntime::start(&config.bfd_instances) {
            Ok(b) => node.bfd = b,
            Err(e) => {
                stop_watch(&mut node.statics_watch).await;
                statics::clear(&config).await;
                fifo::close().await;
                return Err(e);
            }
        }
        let bfd_states = node.bfd.states();
        node.publish_bfd(&config);
        node.listeners.busy_polling = node.shared.busy_polling.clone();
        // Route targets first: a virtual server's proxy is handed its targets' pools.
        for i in config.start_order() {
            let vs = &config.virtual_servers[i];
            let live = node.live_sender(&vs.name);
            let started = start_vs(
                vs,
                &config.global,
                Duration::ZERO,
                live,
                &node.vservers,
                &mut node.listeners,
                vs::Carried::default(),
                &bfd_states,
            )
            .await;
            match started {
                Ok(v) => node.vservers.push(v),
                Err(e) => {
                    node.shutdown().await;
                    return Err(e);
                }
            }
        }
        sort_by_config(&mut node.vservers, &config);
        node.publish_vservers();
        let live = node.live_map();
        // no_accept needs its nftables table: refuse to start without one rather than run
        // with the VIPs open (each speaker installs it too, idempotently).
        if config.vrrp_instances.iter().any(|vi| !vi.accept) {
            if let Err(e) = lb_vrrp::accept::DropRules::install().await {
                node.shutdown().await;
                return Err(NodeError::Start(format!("no_accept: {e}")));
            }
        }
        // keepalived's init_file; a file that cannot be written is logged, as keepalived
        // logs it, and reads as 0.
        vrrp::init_track_files(&config, true);
        for (group, instances) in vrrp::groups(&config) {
            match SpeakerRuntime::start(
                &config,
                group,
                instances,
                &node.shared.vrrp,
                &live,
                &bfd_states,
                &HashMap::new(),
                &HashMap::new(),
                &HashMap::new(),
            ) {
                Ok(s) => node.speakers.push(s),
                Err(e) => {
                    node.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(node)
    }

    /// The liveness channel of virtual server `name` (created the first time).
    fn live_sender(&mut self, name: &str) -> Arc<watch::Sender<bool>> {
        Arc::clone(
            self.live
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(watch::channel(false).0)),
        )
    }

    fn live_map(&self) -> HashMap<String, watch::Receiver<bool>> {
        self.live
            .iter()
            .map(|(name, tx)| (name.clone(), tx.subscribe()))
            .collect()
    }

    /// Makes the admin socket's commands for the virtual server whose pool is `old` (a
    /// version that a reload retires) reach `new`, its replacement, which has just
    /// started.
    ///
    /// Admin commands reach pools only through [`Shared::vservers`], which a reload
    /// republishes once every replacement has started: until then they land on the
    /// retired versions. Their replacements start from a snapshot of the retired pools'
    /// admin states ([`VsRuntime::carried`]) taken before they start, which can take a
    /// while (up to [`RELOAD_BIND_WAIT`] to bind, while the admin socket keeps serving): a
    /// command arriving meanwhile would be lost with the retired pool. So, under the
    /// write lock of [`Shared::vservers`] (which [`Shared::set_backend_admin`] holds, read,
    /// around its change), `new` takes `old`'s current admin states (every command so
    /// far), and its pool is registered as the view's replacement, to which every later
    /// command applies too, until [`Node::publish_vservers`] puts `new` in the view. No
    /// command is missed or applied out of order, and the admin socket is never blocked
    /// behind a reload. `lbctl status` shows the retired version until the reload ends (it
    /// still accepts until then, and has every command), the replacement afterwards.
    fn adopt_replacement(&self, old: &Arc<Pool>, new: &VsRuntime) {
        let mut views = write(&self.shared.vservers);
        new.take_admin_from(old);
        new.apply_operator_weights();
        if let Some(v) = views.iter_mut().find(|v| Arc::ptr_eq(&v.pool, old)) {
            v.replacement = Some(Arc::clone(&new.pool));
            v.replacement_admin_changed = Some(new.admin_notify());
            v.replacement_weights = Some(new.weight_sender());
        }
    }

    /// Shows the running virtual servers on the admin socket (replacing the views of
    /// those a reload retired).
    fn publish_vservers(&self) {
        *write(&self.shared.vservers) = self
            .vservers
            .iter()
            .map(|v| vs_view(v, &self.vservers))
            .collect();
    }

    /// Shows `config`'s BFD sessions on the admin socket.
    fn publish_bfd(&self, config: &Config) {
        let states = self.bfd.status_sources();
        *write(&self.shared.bfd) = config
            .bfd_instances
            .iter()
            .filter_map(|b| Some((b.clone(), states.get(&b.name)?.clone())))
            .collect();
    }

    /// SIGHUP: loads the file again and applies what changed.
    async fn reload(&mut self) {
        // Access logs are reopened whatever the new configuration (logrotate's HUP).
        self.listeners.access_logs.reopen_all();
        let mut new = match load(&self.path, self.format) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload rejected, the running configuration stays:\n{e}");
                self.note_reload("rejected", vec![e.to_string()]);
                return;
            }
        };
        // Notify scripts' users are looked up again for the new configuration.
        forget_notify_users();
        fifo::open(&new.global);
        vrrp::set_garp_groups(&new);
        let d = diff::diff(&self.config, &new);
        // A virtual server that runs a previous version (its replacement failed to start
        // at an earlier reload) is tried again even when the file did not change.
        let all_current = new.virtual_servers.len() == self.vservers.len()
            && self
                .vservers
                .iter()
                .all(|v| new.virtual_servers.contains(&v.cfg))
            // Likewise a VRRP group that failed to start.
            && vrrp::groups(&new).iter().all(|(g, m)| {
                self.speakers
                    .iter()
                    .any(|s| {
                        s.group == *g
                            && s.instances == *m
                            && s.globals == vrrp::instance_globals(&new)
                    })
            })
            // And BFD sessions that could not start (their address taken) or whose speaker
            // stopped.
            && self.bfd.is_current(&new.bfd_instances);
        let statics_same = new.static_ipaddress == self.config.static_ipaddress
            && new.static_routes == self.config.static_routes
            && new.static_rules == self.config.static_rules
            && new.global.default_interface == self.config.global.default_interface;
        // garp_groups were applied above; the configuration kept must show them.
        if d.is_empty() && all_current && statics_same && new.garp_groups == self.config.garp_groups
        {
            tracing::info!("reload: nothing changed");
            // A static address, route or rule someone deleted is added again.
            statics::apply(Some(&self.config), &new).await;
            stop_watch(&mut self.statics_watch).await;
            self.statics_watch = statics::watch(&new);
            // keepalived writes them at every reload, this one too (a FIFO reader restarted
            // before a SIGHUP learns the states so).
            if new.global.fifo_write_vrrp_states_on_reload {
                for s in &self.speakers {
                    s.write_states().await;
                }
            }
            self.note_reload("done", Vec::new());
            return;
        }
        tracing::info!(changes = %d, "reloading");
        // Settings read once at start-up: say so instead of ignoring the change silently.
        if new.global.admin_socket != self.config.global.admin_socket {
            tracing::warn!(
                running = %self.config.global.admin_socket.display(),
                configured = %new.global.admin_socket.display(),
                "admin_socket changed: the socket moves at the next start, not on reload"
            );
            // The running value stays the one compared with: a later reload back to it
            // changes nothing, and one to a third value warns again.
            new.global.admin_socket = self.config.global.admin_socket.clone();
        }
        if new.global.nbthread != self.config.global.nbthread {
            tracing::warn!("nbthread changed: it applies at the next start, not on reload");
            new.global.nbthread = self.config.global.nbthread;
        }
        if new.global.busy_polling != self.config.global.busy_polling {
            tracing::warn!("busy_polling changed: it applies at the next start, not on reload");
            new.global.busy_polling = self.config.global.busy_polling;
        }
        if new.global.log_level != self.config.global.log_level {
            tracing::warn!("log_level changed: it applies at the next start, not on reload");
            new.global.log_level = self.config.global.log_level;
        }
        // BFD sessions first: virtual servers and VRRP instances follow them. Restarted
        // only when a bfd_instance changed; kept followers follow the new sessions.
        let bfd_failed = match self.bfd.reload(&new.bfd_instances).await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "reload: BFD sessions not started; what follows them sees them down (tried again at the next SIGHUP)");
                Some(format!("bfd_instance sessions: {e}"))
            }
        };
        let bfd_states = self.bfd.states();
        self.publish_bfd(&new);
        // Virtual servers.
        let mut kept = Vec::new();
        let mut retired = Vec::new();
        for v in std::mem::take(&mut self.vservers) {
            match new.virtual_servers.iter().find(|n| n.name == v.cfg.name) {
                None => retired.push(v),
                Some(n) if *n == v.cfg => kept.push(v),
                Some(n) => {
                    let mut v = v;
                    match v.try_update(n) {
                        Ok(true) => kept.push(v),
                        Ok(false) | Err(_) => retired.push(v),
                    }
                }
            }
        }
        // A virtual server routing to one that restarts or goes away would keep serving the
        // old pool: restart it too (and, in turn, those routing to it).
        loop {
            let restarting: Vec<&str> = new
                .virtual_servers
                .iter()
                .filter(|n| !kept.iter().any(|k: &VsRuntime| k.cfg.name == n.name))
                .map(|n| n.name.as_str())
                .collect();
            let Some(pos) = kept
                .iter()
                .position(|k| k.cfg.route_targets().iter().any(|t| restarting.contains(t)))
            else {
                break;
            };
            let v = kept.remove(pos);
            tracing::info!(virtual_server = %v.cfg.name, "reload: restarting, a virtual server it routes to restarts");
            retired.push(v);
        }
        // Replacements start first, on duplicates of the retired proxies' listening sockets
        // (`Listeners`), so the address never stops accepting or receiving; then the
        // retired proxies stop accepting (UDP: receiving) and their established connections
        // (UDP: sessions) drain in the background.
        let deadline = new.global.drain_deadline;
        let reload_deadline = new.global.reload_drain_deadline;
        // Does the new configuration listen on `a` with UDP (`udp`) or TCP (TCP, HTTP)?
        let listens_on = |a: &std::net::SocketAddr, udp: bool| {
            new.virtual_servers
                .iter()
                .any(|n| n.listen == *a && (n.protocol == Protocol::Udp) == udp)
        };
        let udp_on = |a: &std::net::SocketAddr| listens_on(a, true);
        // Could a socket on `a` keep a new virtual server from binding its address (same
        // port and kind, and one of the two the wildcard address, or both the same address
        // spelt differently: an IPv4-mapped `[::ffff:a.b.c.d]` binds `a.b.c.d`)?
        let overlaps_new = |a: &std::net::SocketAddr, udp: bool| {
            let bound = config::model::bound_address(*a);
            new.virtual_servers.iter().any(|n| {
                let n_bound = config::model::bound_address(n.listen);
                (n.protocol == Protocol::Udp) == udp
                    && n_bound.port() == bound.port()
                    && (n_bound.ip().is_unspecified()
                        || bound.ip().is_unspecified()
                        || (n_bound == bound && n.listen != *a))
            })
        };
        // Retired virtual servers that keep accepting while the replacements start, by
        // name: those restarted on their own address, and those moving to an address their
        // own does not overlap. If the replacement fails to start, the old one goes on
        // serving (HAProxy's old process outlives a reload that fails).
        let mut fallback: Vec<String> = Vec::new();
        // Their liveness goes to the replacements from now on.
        for v in &retired {
            v.detach_liveness();
            let udp = v.cfg.protocol == Protocol::Udp;
            let moved = |n: &&config::model::VirtualServer| {
                n.name == v.cfg.name
                    && !(n.listen != v.cfg.listen && overlaps_new(&v.cfg.listen, udp))
            };
            let claimed_by_other = new.virtual_servers.iter().any(|n| {
                n.name != v.cfg.name
                    && n.listen == v.cfg.listen
                    && (n.protocol == Protocol::Udp) == udp
            });
            if new.virtual_servers.iter().any(|n| moved(&n)) && !claimed_by_other {
                fallback.push(v.cfg.name.clone());
            } else if !listens_on(&v.cfg.listen, udp) {
                // Nothing replaces it on its address: it stops accepting (UDP: ends its
                // sessions) now, before anything binds, so a virtual server moving between
                // overlapping addresses (`0.0.0.0:53` to `127.0.0.1:53`) finds the port free.
                v.stop_accepting();
                v.end_udp_sessions();
            }
        }
        self.draining_udp.retain(|d| {
            if !udp_on(&d.listen) {
                d.closer.close();
            }
            !d.task.is_finished()
        });
        self.draining.retain(|t| !t.is_finished());
        // Kept sockets of addresses the new configuration does not use close before
        // anything binds, too (unless a fallback still accepts on them).
        self.listeners.retain(|a, udp| {
            listens_on(a, udp)
                || retired.iter().any(|v| {
                    v.cfg.listen == *a
                        && (v.cfg.protocol == Protocol::Udp) == udp
                        && fallback.contains(&v.cfg.name)
                })
        });
        // Those that do not run after this reload, for `lbctl status`; and those that run
        // their previous version, the new one having failed to start.
        let mut failed = Vec::new();
        let mut not_restarted: Vec<String> = bfd_failed.into_iter().collect();
        let bind_deadline = tokio::time::Instant::now() + RELOAD_BIND_WAIT;
        for i in new.start_order() {
            let n = &new.virtual_servers[i];
            if kept.iter().any(|k| k.cfg.name == n.name) {
                continue;
            }
            let live = self.live_sender(&n.name);
            let old = retired.iter().find(|v| v.cfg.name == n.name);
            let carried = old.map(VsRuntime::carried).unwrap_or_default();
            let old_pool = old.map(|v| Arc::clone(&v.pool));
            let started = start_vs(
                n,
                &new.global,
                bind_deadline.saturating_duration_since(tokio::time::Instant::now()),
                Arc::clone(&live),
                &kept,
                &mut self.listeners,
                carried,
                &bfd_states,
            )
            .await;
            match started {
                Ok(v) => {
                    // lbctl commands received while it started, and from now on.
                    if let Some(old) = &old_pool {
                        self.adopt_replacement(old, &v);
                    }
                    kept.push(v);
                }
                Err(e) => {
                    let old = fallback
                        .contains(&n.name)
                        .then(|| retired.iter().position(|v| v.cfg.name == n.name))
                        .flatten();
                    // A router whose route targets restart: its previous version holds
                    // their retired pools (stopped checks, deaf to lbctl). Its previous
                    // configuration starts anew instead, on its running socket, with the
                    // targets' new versions; only if that fails too does the previous
                    // version go on as it is.
                    let reborn = match old {
                        Some(i)
                            if retired[i].cfg.route_targets().iter().any(|t| {
                                *t != n.name && retired.iter().any(|r| r.cfg.name == *t)
                            }) =>
                        {
                            let prev = retired[i].cfg.clone();
                            let again = start_vs(
                                &prev,
                                &new.global,
                                bind_deadline
                                    .saturating_duration_since(tokio::time::Instant::now()),
                                Arc::clone(&live),
                                &kept,
                                &mut self.listeners,
                                retired[i].carried(),
                                &bfd_states,
                            )
                            .await;
                            match again {
                                Ok(v) => Some(v),
                                Err(e2) => {
                                    tracing::error!(error = %e2, virtual_server = %n.name, "reload: the previous configuration did not start anew either: it goes on with its route targets' previous pools until a reload restarts it");
                                    None
                                }
                            }
                        }
                        _ => None,
                    };
                    if let Some(v) = reborn {
                        if let Some(old) = &old_pool {
                            self.adopt_replacement(old, &v);
                        }
                        tracing::error!(error = %e, listen = %v.cfg.listen, "reload: virtual server not restarted, it keeps running with its previous configuration (the next reload tries again)");
                        not_restarted.push(format!(
                            "virtual server {} keeps its previous configuration: {e}",
                            n.name
                        ));
                        kept.push(v);
                    } else if let Some(i) = old {
                        // The previous version never stopped accepting: it goes on serving.
                        let mut v = retired.remove(i);
                        v.resume_liveness(live);
                        tracing::error!(error = %e, listen = %v.cfg.listen, "reload: virtual server not restarted, it keeps running with its previous configuration (the next reload tries again)");
                        not_restarted.push(format!(
                            "virtual server {} keeps its previous configuration: {e}",
                            n.name
                        ));
                        kept.push(v);
                    } else {
                        // Not serving: the instances tracking it give their VIPs away.
                        live.send_replace(false);
                        tracing::error!(error = %e, "reload: virtual server not started");
                        failed.push(VirtualServerStatus {
                            quorum: false,
                            error: Some(e.to_string()),
                            ..VirtualServerStatus::frame(n)
                        });
                    }
                }
            }
        }
        for v in retired {
            v.stop_accepting();
            // Its replacement's counters go on from its totals as they are now that it no
            // longer accepts: `lbctl` showed them until now, and they must not go back when
            // it shows the replacement (which started while this version still counted).
            // Ejections it made while the replacement started go over too.
            if let Some(k) = kept.iter().find(|k| k.cfg.name == v.cfg.name) {
                k.carry_from(&v);
            }
            if !listens_on(&v.cfg.listen, v.cfg.protocol == Protocol::Udp) {
                // One that moved away (after its replacement started): as one removed.
                v.end_udp_sessions();
            }
            let closer = v.udp_closer();
            let listen = v.cfg.listen;
            let task = tokio::spawn(v.stop(reload_deadline, deadline));
            match closer.filter(|_| udp_on(&listen)) {
                Some(closer) => self.draining_udp.push(DrainingUdp {
                    listen,
                    closer,
                    task,
                }),
                None => self.draining.push(task),
            }
        }
        // Sockets of addresses nothing listens on any more (a virtual server that failed to
        // start) close now.
        self.listeners.retain(|a, udp| {
            kept.iter()
                .any(|k| k.cfg.listen == *a && (k.cfg.protocol == Protocol::Udp) == udp)
        });
        sort_by_config(&mut kept, &new);
        self.vservers = kept;
        self.live
            .retain(|name, _| new.virtual_servers.iter().any(|n| &n.name == name));
        *write(&self.shared.failed_vservers) = failed;
        self.publish_vservers();

        // init_file creates missing tracked files, but overwrites none at a reload
        // (keepalived: "don't overwrite a file on reload"): what an operator wrote since
        // stays.
        vrrp::init_track_files(&new, false);
        // VRRP: a group (a sync group, or a lone instance) whose instances, sync group
        // settings and tracked scripts, processes and files are all unchanged keeps running.
        let new_groups = vrrp::groups(&new);
        let changed = |c: &diff::Changes| -> Vec<String> {
            [&c.added, &c.removed, &c.changed]
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        };
        let changed_tracks = vrrp::ChangedTracks {
            scripts: changed(&d.vrrp_scripts),
            processes: changed(&d.vrrp_track_processes),
            files: changed(&d.track_files),
            // A session's timers change in place (the speaker's reconfigure): only the
            // weight and `reverse` its trackers take from it matter to them.
            bfds: new
                .bfd_instances
                .iter()
                .filter(|n| {
                    self.config
                        .bfd_instances
                        .iter()
                        .find(|o| o.name == n.name)
                        .is_none_or(|o| (o.weight, o.reverse) != (n.weight, n.reverse))
                })
                .map(|n| n.name.clone())
                .collect(),
        };
        let mut keep = Vec::new();
        // The new groups that the speakers in `keep` continue or stand in for (one kept
        // with its previous configuration holds the group that failed to take it over).
        let mut claimed: HashSet<usize> = HashSet::new();
        // Speakers no new group continues: regrouped (below) or removed.
        let mut orphans = Vec::new();
        let live = self.live_map();
        for mut s in std::mem::take(&mut self.speakers) {
            let successor = vrrp::successor(&s.group, &s.instances, &new_groups);
            let (index, members) = (successor.map(|(i, _)| i), successor.map(|(_, m)| m));
            let unchanged = !s.tracks_any(&changed_tracks)
                && s.sync_group.as_ref() == sync_group_of(&new, &s.group)
                && s.globals == vrrp::instance_globals(&new);
            match members {
                Some(m) if unchanged && *m == s.instances => {
                    if new.global.fifo_write_vrrp_states_on_reload {
                        s.write_states().await;
                    }
                    keep.push(s);
                    claimed.extend(index);
                }
                // Only base priorities changed: applied in place, no restart.
                Some(m) if unchanged && s.only_priorities_differ(m) => {
                    s.set_priorities(m, &self.shared.vrrp);
                    if new.global.fifo_write_vrrp_states_on_reload {
                        s.write_states().await;
                    }
                    keep.push(s);
                    claimed.extend(index);
                }
                // Other settings changed: a new speaker takes over as keepalived's reload
                // does, Masters staying Master, instead of a priority-0 advert that moves
                // the VIPs to a peer and back.
                // Checked first: a successor that could not start would leave the VIPs
                // with nobody advertising them; the group keeps running as it was instead.
                Some(m) if s.can_hand_over(m) => {
                    let group = s.group.clone();
                    if let Err(e) =
                        vrrp::precheck(&new, group.is_some(), m, &live, &bfd_states).await
                    {
                        tracing::error!(?group, error = %e, "reload: VRRP group keeps its previous configuration");
                        not_restarted.push(format!(
                            "vrrp_instance {}: keeps its previous configuration ({e})",
                            member_names(m)
                        ));
                        if new.global.fifo_write_vrrp_states_on_reload {
                            s.write_states().await;
                        }
                        keep.push(s);
                        claimed.extend(index);
                        continue;
                    }
                    // Renamed instances (same interface and VRID): what the hand-over
                    // returns under the old names, and the old instances themselves, go
                    // by the new names from here on.
                    let mut old = s.instances.clone();
                    let mut renames = Vec::new();
                    for (vi, n) in old.iter_mut().zip(m.iter()) {
                        if vi.name != n.name {
                            tracing::info!(from = %vi.name, to = %n.name, "reload: VRRP instance renamed, it keeps its state");
                            renames
                                .push((std::mem::replace(&mut vi.name, n.name.clone()), &n.name));
                        }
                    }
                    let old_group = s.sync_group.clone();
                    let (mut previous, mut carried, mut installed) = s.handover().await;
                    for (from, to) in &renames {
                        rekey(&mut previous, from, to);
                        rekey(&mut carried, from, to);
                        rekey(&mut installed, from, to);
                    }
                    let masters: HashSet<String> = previous
                        .iter()
                        .filter(|(_, st)| **st == lb_vrrp::machine::State::Master)
                        .map(|(n, _)| n.clone())
                        .collect();
                    // Routes and rules the successor would add again as they were
                    // written before (a changed gateway or source), or not at all.
                    vrrp::remove_dropped_routes(&old, m, &installed).await;
                    // At once, before anything else of the reload: adverts pause only
                    // for the hand-over itself.
                    let started = SpeakerRuntime::start(
                        &new,
                        group,
                        m.clone(),
                        &self.shared.vrrp,
                        &live,
                        &bfd_states,
                        &previous,
                        &carried,
                        &installed,
                    );
                    match started {
                        Ok(n) => {
                            keep.push(n);
                            claimed.extend(index);
                            vrrp::remove_dropped_vips(&old, m, &masters).await;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reload: VRRP group not started after its hand-over; its VIPs are removed");
                            not_restarted.push(format!(
                                "vrrp_instance {}: not started ({e}); stopped, its VIPs removed",
                                member_names(m)
                            ));
                            // Its predecessor stopped without a word, to be resumed.
                            vrrp::stop_failed_handover(
                                &old,
                                old_group.as_ref(),
                                &installed,
                                &masters,
                                &self.shared.vrrp,
                            )
                            .await;
                        }
                    }
                }
                _ => orphans.push(s),
            }
        }
        // The groups no running speaker continues, started below. By index, as claimed:
        // a speaker kept with its previous configuration (its successor's precheck failed)
        // still has its old names, one of which a new group on another virtual router may
        // reuse; that group starts.
        let unstarted: Vec<(Option<String>, Vec<config::model::VrrpInstance>)> = new_groups
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !claimed.contains(i))
            .map(|(_, g)| g)
            .collect();
        // Regrouped instances: keepalived keeps an instance's state whatever sync group it
        // is in (`vrrp_exist` matches by interface, VRID and family). A speaker no new
        // group continues, all of whose instances go on under their names in groups
        // started here (put into a sync group, taken out of one, moved between groups),
        // hands them over as a changed group does: Masters stay Master, no priority-0
        // advert, no notify. Otherwise (an instance renamed or removed) it stops.
        let (mut previous, mut carried, mut installed) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        let mut handed: Vec<config::model::VrrpInstance> = Vec::new();
        let mut prechecked: HashMap<usize, bool> = HashMap::new();
        for s in orphans {
            let targets: Option<Vec<usize>> = s
                .instances
                .iter()
                .map(|a| {
                    unstarted.iter().position(|(_, m)| {
                        m.iter()
                            .any(|b| b.name == a.name && vrrp::can_continue(a, b))
                    })
                })
                .collect();
            let mut ok = targets.is_some();
            for &t in targets.iter().flatten() {
                if !ok {
                    break;
                }
                if let Some(&r) = prechecked.get(&t) {
                    ok = r;
                    continue;
                }
                let (g, m) = &unstarted[t];
                let r = match vrrp::precheck(&new, g.is_some(), m, &live, &bfd_states).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(group = ?g, error = %e, "reload: VRRP group cannot start; the instances moved into it stop");
                        not_restarted.push(format!(
                            "vrrp_instance {}: cannot start ({e}); the instances moved into its group stop",
                            member_names(m)
                        ));
                        false
                    }
                };
                prechecked.insert(t, r);
                ok = r;
            }
            if !ok {
                s.stop_removed(&self.shared.vrrp, Some(&new)).await;
                continue;
            }
            tracing::info!(group = ?s.group, "reload: VRRP instances regrouped, handed over");
            let old = s.instances.clone();
            let (p, c, i) = s.handover().await;
            previous.extend(p);
            carried.extend(c);
            installed.extend(i);
            handed.extend(old);
        }
        let masters: HashSet<String> = previous
            .iter()
            .filter(|(_, st)| **st == lb_vrrp::machine::State::Master)
            .map(|(n, _)| n.clone())
            .collect();
        let all_new: Vec<config::model::VrrpInstance> =
            unstarted.iter().flat_map(|(_, m)| m.clone()).collect();
        if !handed.is_empty() {
            vrrp::remove_dropped_routes(&handed, &all_new, &installed).await;
        }
        for (t, (g, members)) in unstarted.into_iter().enumerate() {
            match SpeakerRuntime::start(
                &new,
                g.clone(),
                members.clone(),
                &self.shared.vrrp,
                &live,
                &bfd_states,
                &previous,
                &carried,
                &installed,
            ) {
                Ok(s) => keep.push(s),
                Err(e) => {
                    tracing::error!(group = ?g, error = %e, "reload: VRRP group not started");
                    // Its precheck's failure already said so (for the instances moved in).
                    if prechecked.get(&t) != Some(&false) {
                        not_restarted.push(format!(
                            "vrrp_instance {}: not started ({e})",
                            member_names(&members)
                        ));
                    }
                    // Instances handed over to it: their VIPs, routes and VMACs go, and
                    // they stop as the failed successor of a hand-over does.
                    let old: Vec<config::model::VrrpInstance> = handed
                        .iter()
                        .filter(|a| members.iter().any(|b| b.name == a.name))
                        .cloned()
                        .collect();
                    if !old.is_empty() {
                        vrrp::stop_failed_handover(
                            &old,
                            None,
                            &installed,
                            &masters,
                            &self.shared.vrrp,
                        )
                        .await;
                    }
                }
            }
        }
        if !handed.is_empty() {
            vrrp::remove_dropped_vips(&handed, &all_new, &masters).await;
        }
        self.speakers = keep;
        // After the VRRP instances' hand-overs, as keepalived's reload (clear_diff_vrrp
        // before the static entries are set): a rule or route that moved from an
        // instance's to the static ones is deleted with the instance's first, then added.
        stop_watch(&mut self.statics_watch).await;
        // An address, route or rule that moved from the static ones to an instance that is
        // Master now stays: deleting it would take it away until the speaker's next
        // refresh put it back.
        let held = {
            let t = read(&self.shared.vrrp);
            let masters: Vec<&config::model::VrrpInstance> = new
                .vrrp_instances
                .iter()
                .filter(|v| {
                    t.get(&v.name)
                        .is_some_and(|s| s.state == admin::VrrpState::Master)
                })
                .collect();
            statics::Held {
                addresses: masters
                    .iter()
                    .flat_map(|v| v.virtual_ipaddress.iter().map(|a| a.address))
                    .collect(),
                routes: masters
                    .iter()
                    .flat_map(|v| v.virtual_routes.clone())
                    .collect(),
                rules: masters
                    .iter()
                    .flat_map(|v| v.virtual_rules.clone())
                    .collect(),
            }
        };
        statics::apply_keeping(Some(&self.config), &new, &held).await;
        self.statics_watch = statics::watch(&new);
        {
            let mut t = write(&self.shared.vrrp);
            t.retain(|n, _| new.vrrp_instances.iter().any(|v| &v.name == n));
        }
        *write(&self.shared.vrrp_order) =
            new.vrrp_instances.iter().map(|v| v.name.clone()).collect();
        *write(&self.shared.router_id) = router_id(&new.global);
        self.config = new;
        let not_running: Vec<String> = read(&self.shared.failed_vservers)
            .iter()
            .map(|v| {
                let why = v.error.as_deref().unwrap_or("");
                // The start error names the virtual server already.
                let why = why
                    .strip_prefix(&format!("virtual_server {}: ", v.name))
                    .unwrap_or(why);
                format!("virtual server {}: {why}", v.name)
            })
            .chain(not_restarted)
            .collect();
        if not_running.is_empty() {
            tracing::info!("reload done");
            self.note_reload("done", Vec::new());
        } else {
            tracing::warn!(
                not_running = not_running.len(),
                "reload done, but not all of it applied: virtual servers, VRRP instances or BFD sessions do not run or keep their previous configuration (lbctl status says why)"
            );
            self.note_reload("partial", not_running);
        }
    }

    /// Records how a reload ended, for `lbctl status`.
    fn note_reload(&self, result: &str, errors: Vec<String>) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *write(&self.shared.last_reload) = Some(admin::ReloadStatus {
            at,
            result: result.to_owned(),
            errors,
        });
    }

    /// SIGTERM: priority 0 and VIPs away first, then listeners, then the drain.
    async fn shutdown(&mut self) {
        self.shutdown_until(std::future::pending()).await;
    }

    /// As [`shutdown`](Self::shutdown), but connections still draining are closed as soon
    /// as `hurry` completes (a second SIGTERM or SIGINT).
    async fn shutdown_until(&mut self, hurry: impl std::future::Future<Output = ()>) {
        for s in std::mem::take(&mut self.speakers) {
            s.stop(&self.shared.vrrp).await;
        }
        // As keepalived's stop: the interfaces' promote_secondaries as they were.
        promote::restore();
        // The neighbours hear AdminDown (RFC 5880 §6.8.16), not a silence they would take
        // for a failure.
        self.bfd.stop().await;
        // Only a node that used it removes the table, and only once it is empty (another
        // process may still drop through it; one whose table is gone re-creates it at its
        // next drop).
        if self.config.vrrp_instances.iter().any(|vi| !vi.accept) {
            if let Err(e) = lb_vrrp::accept::DropRules::uninstall().await {
                tracing::warn!(error = %e, "removing the no_accept nftables table");
            }
        }
        let deadline = self.config.global.drain_deadline;
        let vss = std::mem::take(&mut self.vservers);
        let access_logs = std::mem::take(&mut self.listeners.access_logs);
        // The kept duplicates go first, so that stopping the proxies closes the sockets.
        self.listeners = Listeners::default();
        for v in &vss {
            v.stop_accepting();
            v.end_udp_sessions();
        }
        let mut earlier = std::mem::take(&mut self.draining);
        for d in self.draining_udp.drain(..) {
            d.closer.close();
            earlier.push(d.task);
        }
        // Virtual servers that reloads replaced drain alongside, within their own deadline
        // (`reload_drain_deadline`, none by default) but no longer than `drain_deadline`.
        let current =
            futures::future::join_all(vss.into_iter().map(|v| v.stop(Some(deadline), deadline)));
        let waited = tokio::time::timeout(deadline, futures::future::join_all(earlier.iter_mut()));
        let drained = async { futures::join!(current, waited).1.is_ok() };
        // Dropping the running versions' drains closes their connections at once.
        let drained = tokio::select! {
            d = drained => d,
            () = hurry => {
                tracing::warn!("second stop signal: open connections closed now");
                false
            }
        };
        if !drained && !earlier.is_empty() {
            // Without `reload_drain_deadline` their connections had no limit; a stop
            // gives them `drain_deadline` as the running ones, and closes them now.
            for t in &earlier {
                t.abort();
            }
            tracing::warn!(
                "connections of virtual servers replaced by reloads closed before they ended"
            );
        }
        // Last, as keepalived's stop_vrrp: the drained listeners may have used them.
        stop_watch(&mut self.statics_watch).await;
        statics::clear(&self.config).await;
        // After the last event (the instances' STOP lines).
        fifo::close().await;
        // The lines of the connections that ended are written before the process exits
        // (bounded: a stuck disk does not hold the stop).
        let _ =
            tokio::task::spawn_blocking(move || access_logs.finish(Duration::from_secs(5))).await;
    }
}

/// Moves `map`'s entry under `from` (if any) to `to`: a renamed VRRP instance's state.
fn rekey<V>(map: &mut HashMap<String, V>, from: &str, to: &str) {
    if let Some(v) = map.remove(from) {
        map.insert(to.to_owned(), v);
    }
}

/// Stops [`statics::watch`]'s task and waits for it, so that no re-add of it lands after
/// what the caller deletes next.
async fn stop_watch(w: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(w) = w.take() {
        w.abort();
        let _ = w.await;
    }
}

/// Helper so `Shared::started` uses the same clock as the rest (tokio's, std underneath).
trait NowTokio {
    fn now_tokio() -> Self;
}

impl NowTokio for Instant {
    fn now_tokio() -> Self {
        tokio::time::Instant::now().into_std()
    }
}

/// Runs the node from `path` until SIGTERM/SIGINT. Must be called inside a tokio runtime.
///
/// `pid_file`: the file locked and holding this process's pid while it runs, removed when
/// it returns (see [`DEFAULT_PID_FILE`]); `None` takes none.
///
/// # Errors
/// [`NodeError::Config`] when the file does not load, [`NodeError::Start`] when the pid
/// file is held by another process or cannot be written, or when a component cannot
/// start (everything already started is stopped again).
pub async fn run(
    path: PathBuf,
    format: Option<Format>,
    pid_file: Option<PathBuf>,
    dumps: DumpFiles,
) -> Result<(), NodeError> {
    let config = load(&path, format)?;
    // Before anything is started or changed (the startup script included): a second daemon
    // on the same pid file stops here, leaving the first one's addresses alone. Dropped at
    // every return, which removes the file.
    let _pid_file = pid_file
        .map(|p| pidfile::PidFile::acquire(&p))
        .transpose()
        .map_err(|e| NodeError::Start(e.to_string()))?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| NodeError::Start(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| NodeError::Start(format!("SIGINT handler: {e}")))?;
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| NodeError::Start(format!("SIGHUP handler: {e}")))?;
    // keepalived's dumps; without a handler these signals would end the daemon like a
    // crash (its VIPs left behind, no priority 0 sent).
    let mut usr1 = signal(SignalKind::user_defined1())
        .map_err(|e| NodeError::Start(format!("SIGUSR1 handler: {e}")))?;
    let mut usr2 = signal(SignalKind::user_defined2())
        .map_err(|e| NodeError::Start(format!("SIGUSR2 handler: {e}")))?;
    let socket_path = config.global.admin_socket.clone();
    // keepalived runs it before it starts anything; stopped meanwhile, lb-node kills it
    // and starts nothing (nor runs the shutdown script: nothing ran).
    if let Some(s) = &config.global.startup_script {
        let stopped = tokio::select! {
            () = run_lifecycle_script(s, config.global.startup_script_timeout, "startup") => false,
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if stopped {
            tracing::info!("stopped while the startup script ran: it is killed, nothing started");
            return Ok(());
        }
    }
    let listener = admin::server::bind(&socket_path)
        .map_err(|e| NodeError::Start(format!("admin socket {}: {e}", socket_path.display())))?;
    // The file this process made: removed at the end only if it is still the one there
    // (another daemon may have replaced it meanwhile: its socket is not ours to delete).
    let socket_id = socket_identity(&socket_path);
    let mut node = match Node::start(path, format, config).await {
        Ok(n) => n,
        Err(e) => {
            remove_own_socket(&socket_path, socket_id);
            return Err(e);
        }
    };
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin::server::serve(
        listener,
        Arc::clone(&node.shared),
        async move {
            let _ = admin_stopped.await;
        },
    ));
    tracing::info!(admin_socket = %socket_path.display(), "lb-node running");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => node.reload().await,
            _ = usr1.recv() => dumps.write(dump::Dump::Data, &node.shared.status()),
            _ = usr2.recv() => dumps.write(dump::Dump::Stats, &node.shared.status()),
        }
    }
    tracing::info!("stopping: priority 0, VIPs removed, listeners closed, draining");
    // The running configuration's (a reload may have changed it), as keepalived's parent
    // runs the one of its last reload.
    let shutdown_script = node
        .config
        .global
        .shutdown_script
        .clone()
        .map(|s| (s, node.config.global.shutdown_script_timeout));
    // A second SIGTERM or SIGINT closes what is still draining at once.
    node.shutdown_until(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
    .await;
    // Unlinked while the listener still holds it: a daemon starting meanwhile finds either
    // a socket that answers or no file, never one it would take that this one then deletes.
    remove_own_socket(&socket_path, socket_id);
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    // keepalived runs it once everything has stopped.
    if let Some((s, timeout)) = &shutdown_script {
        run_lifecycle_script(s, *timeout, "shutdown").await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The names of a VRRP group's members, `A, B`, for reload messages.
fn member_names(members: &[config::model::VrrpInstance]) -> String {
    members
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The device and inode of the file at `path`, if any.
fn socket_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Removes the admin socket file at `path` if it is still the one this process made
/// (`id`, from [`socket_identity`] after the bind).
fn remove_own_socket(path: &std::path::Path, id: Option<(u64, u64)>) {
    if id.is_some() && socket_identity(path) == id {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};

    use super::*;
    use crate::admin::server::handle_line;
    use crate::admin::Response;

    /// Two admin connections change a weight each, then each waits for "applied": the
    /// second waits for its own change too (the first used to take every pending
    /// acknowledgement, and the second was answered before its change was applied).
    #[tokio::test]
    async fn each_weight_change_is_waited_for_by_the_connection_that_made_it() {
        use futures::FutureExt;
        let pending = PendingWeights::default();
        let (first_done, first) = tokio::sync::oneshot::channel();
        let (second_done, second) = tokio::sync::oneshot::channel();
        pending.push(first);
        pending.push(second);
        let mut first_waits = pending.applied();
        let mut second_waits = pending.applied();
        assert!((&mut first_waits).now_or_never().is_none());
        assert!(
            (&mut second_waits).now_or_never().is_none(),
            "answered before its change was applied"
        );
        first_done.send(()).unwrap();
        assert!((&mut second_waits).now_or_never().is_none());
        second_done.send(()).unwrap();
        assert!(second_waits.now_or_never().is_some());
        assert!(first_waits.now_or_never().is_some());
        // Applied changes are forgotten; a stopped virtual server's (closed) ends the wait.
        assert!(pending.applied().now_or_never().is_some());
        let (gone, ack) = tokio::sync::oneshot::channel::<()>();
        pending.push(ack);
        drop(gone);
        assert!(pending.applied().now_or_never().is_some());
    }

    /// The admin states of `virtual_server`'s backends, its listen address and scheduler, as
    /// `lbctl status` reports them through the admin socket's request handler.
    fn shown(shared: &Shared, virtual_server: &str) -> (SocketAddr, String, Vec<AdminState>) {
        let Response::Status { status } = handle_line(shared, r#"{"command":"status"}"#) else {
            panic!("status refused");
        };
        let v = status
            .virtual_servers
            .iter()
            .find(|v| v.name == virtual_server)
            .unwrap_or_else(|| panic!("no {virtual_server} in {status:?}"));
        let admin = v.backends.iter().map(|b| b.admin).collect();
        (v.listen, v.scheduler.clone(), admin)
    }

    /// `lbctl backend STATE virtual_server backend` through the admin socket's handler.
    fn set(shared: &Shared, virtual_server: &str, backend: SocketAddr, state: &str) {
        let line = format!(
            r#"{{"command":"set_backend_admin","virtual_server":"{virtual_server}","backend":"{backend}","state":"{state}"}}"#
        );
        assert_eq!(handle_line(shared, &line), Response::Ok, "{line}");
    }

    /// `lbctl backend drain|maint|ready` commands that arrive while a SIGHUP reload starts
    /// replacement virtual servers take effect on the versions that end up serving (they
    /// used to land on the retired pools only, and were lost with them), and `lbctl status`
    /// shows them during and after the reload.
    ///
    /// The seam is deterministic: "b" moves to a port another program holds, so the reload
    /// waits (retrying the bind, on tokio's paused clock) after "a"'s replacement started
    /// and before "b"'s does; the commands arrive then, and the port is freed. Both cases
    /// are covered: a replacement already serving ("a") and one not started yet ("b").
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn admin_commands_during_a_reload_reach_the_replacements() {
        // Real servers on loopback (nothing connects to them: the test only steers).
        let reals: Vec<TcpListener> = (0..4)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let [a1, a2, b1, b2] = [0, 1, 2, 3].map(|i| reals[i].local_addr().unwrap());
        let port = lb_testkit::ports::dead_addr;
        let (a_listen, b_old) = (port(), port());
        // Another program's listener on the port "b" moves to.
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let b_new = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let config = |algo: &str, b_listen: SocketAddr| {
            format!(
                "[global]\nadmin_socket = \"{sock}\"\n\n\
                 [[virtual_server]]\nname = \"a\"\nlisten = \"{a_listen}\"\nlb_algo = \"{algo}\"\n\
                 [[virtual_server.backend]]\naddress = \"{a1}\"\n\
                 [[virtual_server.backend]]\naddress = \"{a2}\"\n\n\
                 [[virtual_server]]\nname = \"b\"\nlisten = \"{b_listen}\"\n\
                 [[virtual_server.backend]]\naddress = \"{b1}\"\n\
                 [[virtual_server.backend]]\naddress = \"{b2}\"\n",
                sock = dir.path().join("admin.sock").display(),
            )
        };
        std::fs::write(&path, config("rr", b_old)).unwrap();
        let mut node = Node::start(path.clone(), None, load(&path, None).unwrap())
            .await
            .unwrap();
        let shared = Arc::clone(&node.shared);
        set(&shared, "a", a2, "maint");
        set(&shared, "b", b1, "maint");
        use AdminState::{Drain, Maint, Ready};
        assert_eq!(shown(&shared, "a").2, [Ready, Maint]);
        assert_eq!(shown(&shared, "b").2, [Maint, Ready]);

        // "a" restarts on its address (new lb_algo), "b" restarts on the taken port.
        std::fs::write(&path, config("wrr", b_new)).unwrap();
        let during = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            // In the window: the old versions are still the ones shown, "a"'s replacement
            // serves already, "b"'s waits for its port.
            assert_eq!(shown(&shared, "a").1, "rr");
            assert_eq!(shown(&shared, "b").0, b_old);
            set(&shared, "a", a1, "drain");
            set(&shared, "a", a2, "ready");
            set(&shared, "b", b1, "ready");
            set(&shared, "b", b2, "drain");
            // What status shows while the reload runs.
            assert_eq!(shown(&shared, "a").2, [Drain, Ready]);
            assert_eq!(shown(&shared, "b").2, [Ready, Drain]);
            drop(taken);
        };
        tokio::join!(node.reload(), during);

        // After: the replacements are shown, with every command.
        let (listen, scheduler, admin) = shown(&shared, "a");
        assert_eq!((listen, scheduler.as_str()), (a_listen, "wrr"));
        assert_eq!(admin, [Drain, Ready], "a's commands during the reload");
        let (listen, _, admin) = shown(&shared, "b");
        assert_eq!(listen, b_new);
        assert_eq!(admin, [Ready, Drain], "b's commands during the reload");
        // What is shown is what serves: the published pools are the running ones.
        for (view, running) in read(&shared.vservers).iter().zip(&node.vservers) {
            assert!(Arc::ptr_eq(&view.pool, &running.pool));
            assert!(view.replacement.is_none());
        }
        // And later commands reach them.
        set(&shared, "b", b2, "maint");
        assert_eq!(shown(&shared, "b").2, [Ready, Maint]);
        node.shutdown().await;
    }

    /// BFD sessions that could not start at a reload (their port held by another program,
    /// an FRR bfdd say) make the reload `partial`, naming them, and a SIGHUP with the file
    /// unchanged tries them again (it used to say "done" and, the file unchanged, "nothing
    /// changed" for good).
    #[tokio::test]
    async fn bfd_sessions_that_failed_at_a_reload_are_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let global = format!(
            "[global]\nadmin_socket = \"{}\"\n",
            dir.path().join("admin.sock").display()
        );
        std::fs::write(&path, &global).unwrap();
        let mut node = Node::start(path.clone(), None, load(&path, None).unwrap())
            .await
            .unwrap();
        // Another program on the sessions' port.
        let taken = std::net::UdpSocket::bind("127.0.0.1:3784").expect("UDP 127.0.0.1:3784 free");
        std::fs::write(
            &path,
            format!(
                "{global}\n[[bfd_instance]]\nname = \"gw\"\nneighbor_ip = \"127.0.0.2\"\nsource_ip = \"127.0.0.1\"\n"
            ),
        )
        .unwrap();
        let last = |node: &Node| read(&node.shared.last_reload).clone().expect("a reload");
        node.reload().await;
        let r = last(&node);
        assert_eq!(r.result, "partial", "{r:?}");
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("bfd_instance") && e.contains("127.0.0.1:3784")),
            "{r:?}"
        );
        assert!(!node.bfd.is_current(&node.config.bfd_instances));
        // The port freed, the same file again.
        drop(taken);
        node.reload().await;
        let r = last(&node);
        assert_eq!((r.result.as_str(), r.errors.len()), ("done", 0), "{r:?}");
        assert!(node.bfd.is_current(&node.config.bfd_instances));
        let gw = std::fs::read_to_string(&path).unwrap();
        // The running speaker refuses a new session (its address held): it keeps "gw", and
        // a reload back to "gw" finds it followed again (its status copied from the
        // speaker, with the session's discriminator, not a fresh channel's 0).
        let taken = std::net::UdpSocket::bind("127.0.0.5:3784").expect("UDP 127.0.0.5:3784 free");
        std::fs::write(
            &path,
            format!(
                "{global}\n[[bfd_instance]]\nname = \"gw2\"\nneighbor_ip = \"127.0.0.6\"\nsource_ip = \"127.0.0.5\"\n"
            ),
        )
        .unwrap();
        node.reload().await;
        assert_eq!(last(&node).result, "partial", "{:?}", last(&node));
        drop(taken);
        std::fs::write(&path, gw).unwrap();
        node.reload().await;
        assert_eq!(last(&node).result, "done", "{:?}", last(&node));
        let states = node.bfd.states();
        assert_ne!(
            states["gw"].borrow().local_discriminator,
            0,
            "gw is followed"
        );
        node.shutdown().await;
    }

    /// A notify script with a user runs as that user and group (keepalived
    /// notify_script_init: `notify_master SCRIPT USER [GROUP]`), with only the event's
    /// arguments. It used to run as the daemon's user, the user and group appended to the
    /// command as extra arguments. Needs root (to change user); skipped otherwise.
    #[tokio::test]
    async fn notify_scripts_run_as_their_user_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            // Loud, and a failure under CI=true (which runs as root).
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: this test needs root"
            );
            eprintln!(
                "\n!!!!! SKIPPING notify_scripts_run_as_their_user_and_group: needs root !!!!!\n"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("s.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$(id -u):$(id -g):$(id -G) $*\" > {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = lb_vrrp::driver::RunAs::resolve("nobody", None).unwrap();
        let mut n = NotifyScript::new(format!("{} first", script.display()));
        n.user = Some("nobody".into());
        notify(&n, &["INSTANCE", "VI_1", "MASTER", "100"]);
        let mut text = String::new();
        for _ in 0..500 {
            match std::fs::read_to_string(&out) {
                Ok(t) if t.ends_with('\n') => {
                    text = t;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert_eq!(
            text.trim_end(),
            format!(
                "{}:{}:{} first INSTANCE VI_1 MASTER 100",
                nobody.uid, nobody.gid, nobody.gid
            )
        );
        // An unknown user: not run at all (never as the daemon's user).
        std::fs::remove_file(&out).unwrap();
        n.user = Some("no-such-user-lb".into());
        notify(&n, &[]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!out.exists());
    }
}
