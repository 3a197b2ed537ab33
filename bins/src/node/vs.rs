//! One running virtual server: its [`Pool`], its health checks and its proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{AdminState, BackendId, BackendSet, Health, Pool, Weight};
use lb_health::probe::grpc::GrpcProbe;
use lb_health::probe::http::{HttpProbe, TlsOptions};
use lb_health::probe::{
    AllOf, DnsProbe, ExecProbe, PingProbe, ProxyHeader, SmtpProbe, TcpProbe, UdpExpect, UdpProbe,
    UdpReply, KEEPALIVED_DEFAULT_PAYLOAD,
};
use lb_health::{
    CheckStates, ConnectionOutcome, HealthCheckConfig, HealthDriver, OnFailure, OutlierDetector,
    OutlierEvent, OutlierHostState, PoolApplier, Probe, StartState,
};
use lb_proxy::busy_poll::BusyPolling;
use lb_proxy::http::{AccessLogSink, BackendTls, HttpPool, HttpProxy};
use lb_proxy::listener::{bind_tcp, bind_udp, ListenOptions};
use lb_proxy::outcome::{Outcome, OutcomeObserver};
use lb_proxy::tcp::{ProxyHandle, TcpProxy, TcpProxyConfig};
use lb_proxy::udp::{UdpCloser, UdpHandle, UdpProxy, UdpProxyConfig};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::NodeError;
use crate::config::model::{
    backend_id, AccessLogFormat, BackendConfig, CheckKind, Global, HealthCheck, HttpCheck,
    NotifyScript, Protocol, UrlCheck, VirtualServer,
};

/// What a virtual server restarted by a reload takes over from the version it replaces,
/// by real server address: the admin state set with `lbctl` (drain, maint) and its active
/// checks' verdict while its checks probe alike, as keepalived keeps its checkers' state
/// across a reload when they compare equal; its outlier
/// ejections (Envoy keeps a host's across cluster updates; a run of failures in progress
/// starts afresh); and its quorum state. A snapshot taken
/// before the replacement starts: admin states set after it follow through
/// [`VsRuntime::take_admin_from`], ejections made after it through
/// [`VsRuntime::carry_from`]. The totals of its counters (connections, failures, bytes;
/// HTTP requests and responses) go on in the replacement from where they are when the old
/// version stops accepting ([`VsRuntime::carry_from`]). What the TCP and UDP connections it
/// still drains count after that shows in the replacement's too (per real server always,
/// through the shared backend counters); an HTTP virtual server's own counters (requests,
/// responses) for them stay on the old version's.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    admin: HashMap<SocketAddr, AdminState>,
    /// Each checked real server's verdict, and what the checks that reached it probed:
    /// taken over only by a real server whose checks probe alike ([`probes_alike`]).
    health: HashMap<SocketAddr, (Health, Probes)>,
    /// Whether the replaced version's pool had quorum (its hysteresis goes on from there).
    quorum: Option<bool>,
    /// The quorum state whose `quorum_up`/`quorum_down` the replaced version announced
    /// last; it announces nothing more once this is taken ([`QuorumNotifier::hand_over`]).
    announced: Option<bool>,
    /// Passive health: each real server's ejection state in the replaced version.
    outlier: HashMap<SocketAddr, OutlierHostState>,
    /// Each real server's counters in the replaced version, which the replacement's
    /// backend of the same address shares: the connections the old version still drains
    /// count as open (in `lbctl status`, for `lc`/`wlc` and for `maxconn`), as IPVS's
    /// connection entries outlive a keepalived reload, and the totals go on.
    stats: HashMap<SocketAddr, Arc<lb_core::BackendStats>>,
    /// The weights `lbctl weight` set, shared with the replaced version (one set during
    /// the reload lands in both), with the file's weights of the replaced version: an
    /// operator's weight holds while the file does not change that real server's weight
    /// (HAProxy's `set weight` until the next change in the file; [`OperatorWeights`]).
    operator_weights: Option<(OperatorWeights, HashMap<SocketAddr, Weight>)>,
    /// The persistence entries of the replaced version, by real server address, and the
    /// granularity they are keyed with: each client stays on its real server, as IPVS's
    /// persistence templates outlive a keepalived reload (taken only when the
    /// granularity is the same). Taken once, at the replacement's start: clients new to
    /// the old version while the replacement starts are scheduled afresh (taking those
    /// later could bring back entries the replacement dropped since, to a backend its own
    /// checks failed).
    persistence: Option<(lb_core::Granularity, Vec<lb_core::PersistedClient>)>,
    /// A UDP virtual server's client flows and their real servers in the replaced version:
    /// each flow's next datagram goes to the same real server while it is eligible
    /// (stateful UDP is not moved by a reload, as IPVS's connection table outlives a
    /// keepalived one). Taken at the replacement's start, as persistence: flows new to the
    /// old version while the replacement starts are scheduled afresh.
    udp_flows: Vec<lb_proxy::udp::CarriedFlow>,
    /// The replaced UDP virtual server's sessions, which the replacement takes over at
    /// each flow's next datagram: the real server keeps seeing the same source address and
    /// port (IPVS keeps the whole connection entry).
    udp_sessions: Option<lb_proxy::udp::SessionDonor>,
}

/// A new configured weight for the health applier task: the backend, the weight, and who
/// waits to hear it applied (`lbctl weight`, answered once it is).
pub(crate) type WeightChange = (BackendId, Weight, Option<tokio::sync::oneshot::Sender<()>>);

/// The weights `lbctl weight` set, by real server address; an entry goes when the file
/// changes that real server's weight (a reload then applies the file's).
pub(crate) type OperatorWeights = Arc<std::sync::Mutex<HashMap<SocketAddr, Weight>>>;

/// The outlier detector's state per backend, as its task last saw it after an ejection or
/// un-ejection: what a reload's replacement takes over.
type OutlierStates = Arc<std::sync::Mutex<HashMap<BackendId, OutlierHostState>>>;

/// Why each backend is failed now, by source, and since when (HAProxy's `check_desc` and
/// `lastchg`), for `lbctl status`; written by the health task.
pub(crate) type HealthNotes = Arc<std::sync::Mutex<HashMap<BackendId, FailureNotes>>>;

/// One reason a backend is failed, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthNote {
    /// What failed it: the active check's reason (`"connect to …: Connection refused"`),
    /// the passive health's ejection, or the tracked files'.
    pub(crate) reason: String,
    /// Since when, in the system clock.
    pub(crate) at: std::time::SystemTime,
}

/// What fails a backend now, one slot per source: each source sets its slot when it
/// fails the backend and clears it when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FailureNotes {
    /// Its active checks failed it.
    pub(crate) check: Option<HealthNote>,
    /// Passive health ejected it.
    pub(crate) ejection: Option<HealthNote>,
    /// A tracked file (FILE_CHECK) or a BFD session (BFD_CHECK) faults it.
    pub(crate) tracked: Option<HealthNote>,
}

impl FailureNotes {
    /// The reason and since when to show for a backend with `notes`, when `live` is what
    /// its active check fails with now (`Some` while the check has it down): a tracked
    /// file's or BFD session's fault, else an ejection, else the checks' failure, told by
    /// its latest reason
    /// (HAProxy's `check_desc` follows every check), since the transition; a backend that
    /// started down and never came up, with no transition noted, shows its check's reason
    /// without a time.
    pub(crate) fn shown(
        notes: Option<&Self>,
        live: Option<Arc<str>>,
    ) -> (Option<String>, Option<std::time::SystemTime>) {
        let other = notes.and_then(|n| n.tracked.as_ref().or(n.ejection.as_ref()));
        if let Some(n) = other {
            return (Some(n.reason.clone()), Some(n.at));
        }
        let check = notes.and_then(|n| n.check.as_ref());
        match (check, live) {
            (c, Some(live)) => (Some(live.to_string()), c.map(|c| c.at)),
            (Some(c), None) => (Some(c.reason.clone()), Some(c.at)),
            (None, None) => (None, None),
        }
    }
}

/// Sets (`Some` reason) or clears one source's slot of `id`'s notes.
fn note_health(
    notes: &HealthNotes,
    id: BackendId,
    slot: fn(&mut FailureNotes) -> &mut Option<HealthNote>,
    reason: Option<String>,
) {
    let mut notes = notes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = notes.entry(id).or_default();
    let s = slot(entry);
    match reason {
        Some(reason) => {
            // A fault that goes on keeps its time; only the reason may change.
            let at = s.as_ref().map_or_else(std::time::SystemTime::now, |n| n.at);
            *s = Some(HealthNote { reason, at });
        }
        None => *s = None,
    }
}

/// Gives `pool` (of the virtual server `cfg`) the persistence `entries` of the version it
/// replaces, when they are keyed with its own `granularity`.
fn carry_persistence(
    cfg: &VirtualServer,
    pool: &Pool,
    granularity: lb_core::Granularity,
    entries: &[lb_core::PersistedClient],
) {
    if entries.is_empty() || cfg.persistence_timeout.is_none() {
        return;
    }
    if granularity != cfg.persistence_granularity {
        tracing::info!(virtual_server = %cfg.name, "persistence_granularity changed: persistent clients are scheduled afresh");
        return;
    }
    let n = pool.restore_persistence(entries, now());
    if n > 0 {
        tracing::info!(virtual_server = %cfg.name, clients = n, "persistence entries carried over");
    }
}

/// Notes `id`'s state in `detector` in `states`.
fn note_outlier(states: &OutlierStates, detector: &OutlierDetector, id: BackendId) {
    if let Some(st) = detector.host_state(id) {
        states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, st);
    }
}

/// Gives `id` in `detector` the ejection state a replaced version had, under `detector`'s
/// settings ([`OutlierDetector::restore`]), and notes the outcome in `states`.
fn restore_outlier(
    states: &OutlierStates,
    detector: &mut OutlierDetector,
    id: BackendId,
    state: OutlierHostState,
) -> lb_health::Result<bool> {
    let ejected = detector.restore(now(), id, state)?;
    note_outlier(states, detector, id);
    Ok(ejected)
}

/// The pool appliers of one virtual server: `inhibit_on_failure` backends keep their place
/// at weight 0, others leave the set.
struct Appliers {
    inhibited: Vec<BackendId>,
    inhibit: PoolApplier,
    remove: PoolApplier,
    notes: HealthNotes,
    /// The real servers' notify_up / notify_down: run when a real server's checks and
    /// tracked files, together, fail it or let it go (`Appliers::notify_if_changed`).
    notify: HashMap<BackendId, (Option<NotifyScript>, Option<NotifyScript>)>,
    /// What each real server's FILE_CHECKs say together, as last read.
    files: HashMap<BackendId, super::file_check::FileVerdict>,
    /// Each real server's BFD_CHECKs: the session's name, and why it fails the real
    /// server (`None` while it lets it be up).
    bfd: HashMap<BackendId, std::collections::BTreeMap<String, Option<String>>>,
    /// For the notify FIFOs' `RS` lines: each real server's `[ADDRESS]:PROTOCOL:PORT`,
    /// then the virtual server's.
    fifo: HashMap<BackendId, String>,
    fifo_vs: String,
    /// Each backend's address, for the logs (ids shift when a reload adds one; keepalived
    /// and HAProxy name the real server).
    addrs: HashMap<BackendId, SocketAddr>,
}

/// What a source other than the probes says of one real server.
#[derive(Debug, Clone)]
pub(crate) enum Tracked {
    /// Its FILE_CHECKs, together.
    Files(super::file_check::FileVerdict),
    /// One of its BFD_CHECKs.
    Bfd {
        /// The `bfd_instance`.
        session: String,
        /// Why it fails the real server; `None`: it lets it be up.
        down: Option<String>,
        /// Its start state, set before the proxy starts (no notify script runs).
        initial: bool,
    },
}

impl Appliers {
    fn new(pool: &Pool, inhibited: Vec<BackendId>) -> Self {
        Self {
            inhibited,
            inhibit: PoolApplier::new(pool, OnFailure::Inhibit),
            remove: PoolApplier::new(pool, OnFailure::Remove),
            notes: HealthNotes::default(),
            notify: HashMap::new(),
            files: HashMap::new(),
            bfd: HashMap::new(),
            fifo: HashMap::new(),
            fifo_vs: String::new(),
            addrs: pool.backends().iter().map(|b| (b.id(), b.addr())).collect(),
        }
    }

    /// `id`'s address for a log line (`#id` for one the pool does not know).
    fn addr(&self, id: BackendId) -> String {
        self.addrs
            .get(&id)
            .map_or_else(|| id.to_string(), ToString::to_string)
    }

    fn of(&mut self, id: BackendId) -> &mut PoolApplier {
        if self.inhibited.contains(&id) {
            &mut self.inhibit
        } else {
            &mut self.remove
        }
    }

    /// Applies what a real server's FILE_CHECKs (together) or one of its BFD_CHECKs say
    /// now: a fault fails it whatever its probes say, and the files' weight offset changes
    /// its weight. Runs its notify_down / notify_up when that fails it or lets it go (not
    /// for a start state: as keepalived without rs_init_notifies).
    fn apply_tracked(&mut self, name: &str, pool: &Pool, id: BackendId, t: Tracked) {
        let initial = match t {
            Tracked::Files(v) => {
                tracing::info!(virtual_server = %name, backend = %self.addr(id), fault = v.down, weight_offset = v.offset, reason = %v.reason, "tracked files");
                let initial = v.initial;
                self.files.insert(id, v);
                initial
            }
            Tracked::Bfd {
                session,
                down,
                initial,
            } => {
                tracing::info!(virtual_server = %name, backend = %self.addr(id), bfd_instance = %session, up = down.is_none(), "BFD check");
                self.bfd.entry(id).or_default().insert(session, down);
                initial
            }
        };
        let file = self.files.get(&id);
        let reasons: Vec<String> = file
            .filter(|f| f.down)
            .map(|f| f.reason.clone())
            .into_iter()
            .chain(
                self.bfd
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, why)| why.clone()),
            )
            .collect();
        let down = !reasons.is_empty();
        let offset = file.map_or(0, |f| f.offset);
        let before = self.of(id).is_failed_by_checks(id);
        if let Err(e) = self.of(id).set_adjustment(pool, id, down, offset, now()) {
            tracing::warn!(virtual_server = %name, error = %e, "tracked files and BFD checks not applied");
        }
        note_health(
            &self.notes,
            id,
            |n| &mut n.tracked,
            down.then(|| reasons.join("; ")),
        );
        if !initial {
            self.notify_if_changed(name, id, before);
        }
    }

    /// Runs `id`'s notify_down or notify_up when its checks and files, together, changed
    /// from `before` (keepalived runs them when the real server's state changes,
    /// update_svr_checker_state; ejections have no counterpart there).
    fn notify_if_changed(&mut self, name: &str, id: BackendId, before: bool) {
        let after = self.of(id).is_failed_by_checks(id);
        if before == after {
            return;
        }
        self.notify_state(name, id, after);
    }

    /// Writes `id`'s `RS … UP|DOWN` FIFO line and runs its notify_up or notify_down
    /// (`after`: failed).
    fn notify_state(&self, name: &str, id: BackendId, after: bool) {
        if let Some(rs) = self.fifo.get(&id) {
            let state = if after { "DOWN" } else { "UP" };
            super::fifo::lvs(&format!("RS {rs} {} {state}\n", self.fifo_vs));
        }
        if let Some((up, down)) = self.notify.get(&id) {
            if let Some(s) = if after { down } else { up } {
                tracing::info!(virtual_server = %name, backend = %self.addr(id), script = %s.command, "running the real server's notify command");
                super::notify(s, &[]);
            }
        }
    }

    /// Applies every event `detector` has queued to `pool`, noting each backend's new state
    /// in `states`.
    fn apply_outliers(
        &mut self,
        name: &str,
        pool: &Pool,
        detector: &mut OutlierDetector,
        states: &OutlierStates,
    ) {
        while let Some(ev) = detector.poll_event() {
            let id = match ev {
                OutlierEvent::Ejected { backend, .. } | OutlierEvent::Unejected { backend } => {
                    backend
                }
            };
            tracing::info!(virtual_server = %name, backend = %self.addr(id), event = ?ev, "passive health");
            let why = match ev {
                OutlierEvent::Ejected { reason, .. } => {
                    Some(format!("ejected by passive health: {reason}"))
                }
                OutlierEvent::Unejected { .. } => None,
            };
            note_health(&self.notes, id, |n| &mut n.ejection, why);
            if let Err(e) = self.of(id).apply_outlier(pool, &ev, now()) {
                tracing::warn!(virtual_server = %name, error = %e, "outlier event not applied");
            }
            note_outlier(states, detector, id);
        }
    }
}

/// Tells `detector` which backends serve ([`OutlierDetector::set_serving`]: eligible for
/// a new connection, ejection aside, and primaries) when the pool changed since `seen`,
/// then lets it end an ejection if nothing else serves
/// ([`OutlierDetector::keep_one_serving`]; the caller applies the event).
fn tell_serving(
    name: &str,
    appliers: &mut Appliers,
    pool: &Pool,
    detector: &mut OutlierDetector,
    seen: &mut Option<u64>,
) {
    let snap = pool.snapshot();
    if *seen == Some(snap.generation()) {
        return;
    }
    *seen = Some(snap.generation());
    for b in snap.backends().iter() {
        let serving = appliers.of(b.id()).is_serving_apart_from_ejection(b);
        detector.set_serving(b.id(), serving && !b.is_backup());
    }
    if let Some(id) = detector.keep_one_serving(now()) {
        tracing::warn!(virtual_server = %name, backend = %appliers.addr(id), "ejection ended: no other backend serves");
    }
}

/// The data path of one virtual server.
#[derive(Debug)]
pub(crate) enum Proxy {
    Tcp(ProxyHandle),
    Udp(UdpHandle),
    /// Shared with the admin socket, which reads its counters.
    Http(Arc<std::sync::Mutex<Option<HttpProxy>>>),
}

/// A virtual server while it runs.
#[derive(Debug)]
pub(crate) struct VsRuntime {
    pub(crate) cfg: VirtualServer,
    pub(crate) pool: Arc<Pool>,
    /// Hears the outcome of every request or connection sent to one of `pool`'s backends,
    /// by this virtual server's proxy or by an HTTP virtual server routing to it.
    observer: Arc<dyn OutcomeObserver>,
    health: Option<HealthDriver>,
    pub(crate) proxy: Proxy,
    /// Writes "at least one backend can take a connection" into the node's liveness
    /// channel for this virtual server's name; aborted when the virtual server is retired.
    live_task: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    /// What follows the real servers' tracked files and BFD sessions: stopped first when
    /// the virtual server is retired, so that its replacement alone runs the notify
    /// scripts from then on.
    followers: Vec<JoinHandle<()>>,
    /// New configured weights (a reload's), applied by the health applier task.
    weights: mpsc::UnboundedSender<WeightChange>,
    /// What `lbctl weight` set ([`OperatorWeights`]).
    operator_weights: OperatorWeights,
    /// The real servers whose `lbctl` weight this version's file supersedes (it changes
    /// their weight): dropped from the record when this version is adopted.
    superseded_weights: Vec<SocketAddr>,
    /// Ejections its predecessor made after [`VsRuntime::carried`], for the applier task
    /// ([`VsRuntime::carry_from`]).
    late_ejections: mpsc::UnboundedSender<Vec<(BackendId, OutlierHostState)>>,
    /// The predecessor's ejection states this version started from, by real server
    /// address: [`VsRuntime::carry_from`] sends only what changed since.
    carried_outlier: HashMap<SocketAddr, OutlierHostState>,
    /// Runs `quorum_up` / `quorum_down`.
    quorum: Arc<QuorumNotifier>,
    /// Passive health's ejection state per backend, for a reload's replacement.
    outlier_states: OutlierStates,
    /// Why each backend's health last changed, for `lbctl status`.
    pub(crate) health_notes: HealthNotes,
    /// Wakes the health applier task after an admin state set on `pool` from outside it
    /// (`lbctl drain`), which may leave only ejected backends to serve.
    admin_changed: Arc<tokio::sync::Notify>,
    /// TLS to the real servers (`[virtual_server.http] backend_tls`), for this virtual
    /// server's proxy and those routing to it: one configuration, so one session cache.
    backend_tls: Option<BackendTls>,
}

/// keepalived's `quorum_up` and `quorum_down`: the command runs when the pool gains or
/// loses quorum ([`Pool::has_quorum`]), with the change logged, and for the state a virtual
/// server starts in, as keepalived's "Starting with quorum up/down" (not again when a
/// reload restarts it in the state its previous version had).
#[derive(Debug)]
pub(crate) struct QuorumNotifier {
    name: String,
    /// `[ADDRESS]:PROTOCOL:PORT`, for the notify FIFOs' `VS` lines.
    fifo_vs: String,
    quorum_up: Option<NotifyScript>,
    quorum_down: Option<NotifyScript>,
    /// The state announced last ([`ANNOUNCED_UP`]), and whether it was handed over to a
    /// replacement ([`HANDED_OVER`]): in one word, so that a check racing the hand-over
    /// either announces before it (and the replacement knows) or not at all.
    state: std::sync::atomic::AtomicU8,
    /// Held by a check from its reading of the pool's quorum to its announcement: checks
    /// come from several tasks (the health applier, the liveness task, `lbctl`), and one
    /// that read the quorum before another's change must not announce after it.
    checking: std::sync::Mutex<()>,
}

/// [`QuorumNotifier`]'s `state`: the state announced last was quorum up.
const ANNOUNCED_UP: u8 = 1;
/// [`QuorumNotifier`]'s `state`: a replacement announces from now on.
const HANDED_OVER: u8 = 2;

impl QuorumNotifier {
    /// `previous`: the state of the version a reload replaced, if any.
    fn new(vs: &VirtualServer, pool: &Pool, previous: Option<bool>) -> Self {
        let now = pool.has_quorum();
        let n = Self {
            name: vs.name.clone(),
            fifo_vs: super::fifo::trio(vs.listen, vs.protocol == Protocol::Udp),
            quorum_up: vs.quorum_up.clone(),
            quorum_down: vs.quorum_down.clone(),
            state: std::sync::atomic::AtomicU8::new(if now { ANNOUNCED_UP } else { 0 }),
            checking: std::sync::Mutex::new(()),
        };
        if previous != Some(now) {
            n.announce(now, "start");
        }
        n
    }

    /// Logs the state (`when`: "start" or "change") and runs its command.
    fn announce(&self, quorum: bool, when: &str) {
        let script = if quorum {
            tracing::info!(virtual_server = %self.name, when, "quorum up");
            &self.quorum_up
        } else {
            tracing::warn!(virtual_server = %self.name, when, "quorum down");
            &self.quorum_down
        };
        if let Some(s) = script {
            super::notify(s, &[]);
        }
        let state = if quorum { "UP" } else { "DOWN" };
        super::fifo::lvs(&format!("VS {} {state}\n", self.fifo_vs));
    }

    /// Compares the pool's quorum with the last state announced; on a change, logs it and
    /// runs the command of the new state. Does nothing once handed over.
    pub(crate) fn check(&self, pool: &Pool) {
        let _checking = self
            .checking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = pool.has_quorum();
        let changed = self
            .state
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |s| {
                    (s & HANDED_OVER == 0 && (s & ANNOUNCED_UP != 0) != now).then_some(if now {
                        ANNOUNCED_UP
                    } else {
                        0
                    })
                },
            )
            .is_ok();
        if changed {
            self.announce(now, "change");
        }
    }

    /// Stops announcing (a reload's replacement does from now on) and returns the state
    /// announced last, which the replacement starts from: a change neither announced
    /// before the hand-over is announced by the replacement, and none twice.
    pub(crate) fn hand_over(&self) -> bool {
        self.state
            .fetch_or(HANDED_OVER, std::sync::atomic::Ordering::AcqRel)
            & ANNOUNCED_UP
            != 0
    }

    /// Announces again after [`QuorumNotifier::hand_over`]: the replacement failed to
    /// start and this version goes on.
    fn resume(&self) {
        self.state
            .fetch_and(!HANDED_OVER, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The random stream of a virtual server's pool (`random`, `p2c`, `peak_ewma`): its name
/// hashed with a key drawn at random once per process, so that two pools, or two nodes
/// running the same configuration (active-active), do not make the same choices in the
/// same order.
fn pool_seed(name: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    KEY.hash_one(name)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Slow start's clock (HAProxy's warmup task): recomputes the ramping weights when they
/// next change ([`Pool::poll_timeout`]). A ramp can start at any moment (a health event, an
/// `lbctl` command), so the pool is looked at again at least every second, the shortest
/// step of a ramp; nothing is rebuilt while no backend ramps.
async fn drive_slow_start(name: String, pool: Arc<Pool>) {
    loop {
        let at = tokio::time::Instant::now();
        let next = pool.poll_timeout().map(tokio::time::Instant::from_std);
        let wake = next.map_or(at + Duration::from_secs(1), |t| {
            t.min(at + Duration::from_secs(1))
        });
        tokio::time::sleep_until(wake).await;
        if pool.poll_timeout().is_some_and(|t| t <= now()) {
            if let Err(e) = pool.handle_timeout(now()) {
                tracing::warn!(virtual_server = %name, error = %e, "slow start step not applied");
            }
        }
    }
}

/// Calls `bind` until it does not fail with "address in use", for at most `wait`.
///
/// On reload a replaced virtual server's listener is closed by aborting its accept task,
/// which happens asynchronously on a worker thread: binding the replacement at once raced
/// with it and lost the virtual server on about a third of reloads (found by the lab test).
async fn bind_retrying<T>(
    wait: Duration,
    mut bind: impl FnMut() -> lb_proxy::Result<T>,
) -> lb_proxy::Result<T> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match bind() {
            Err(lb_proxy::Error::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            r => return r,
        }
    }
}

/// The node's listening sockets, by address, kept across reloads: TCP (TCP and HTTP
/// virtual servers) and UDP. A virtual server that a reload restarts, or a new one on the
/// address of one that goes away, receives on a duplicate of the same socket (`dup(2)`),
/// started before the old proxy stops accepting or receiving: no connection is refused in
/// between, none waiting in the accept queue is lost, and no datagram meets a closed port
/// (HAProxy's seamless reload hands its sockets over for the same reason).
///
/// With them goes the node's busy-polling switch (`[global] busy_polling`), which every
/// proxy shares and which, like the sockets, outlives reloads.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    tcp: HashMap<SocketAddr, std::net::TcpListener>,
    udp: HashMap<SocketAddr, std::net::UdpSocket>,
    /// `Some` when busy polling is on: given to every TCP, UDP and HTTP proxy started.
    pub(crate) busy_polling: Option<BusyPolling>,
    /// The open access log files of HTTP and TCP virtual servers (shared with the admin
    /// socket, which shows their counters).
    pub(crate) access_logs: Arc<super::access_log::AccessLogFiles>,
}

impl Listeners {
    /// A TCP listener on `addr`: a duplicate of the kept socket, or a new one bound with
    /// `opts` (retrying `EADDRINUSE` for up to `wait`) and kept.
    ///
    /// # Errors
    /// [`lb_proxy::Error::Bind`] when the socket can be neither duplicated nor bound.
    async fn get(
        &mut self,
        addr: SocketAddr,
        opts: &ListenOptions,
        wait: Duration,
    ) -> lb_proxy::Result<tokio::net::TcpListener> {
        let bind_err = |source| lb_proxy::Error::Bind { addr, source };
        if let Some(kept) = self.tcp.get(&addr) {
            let dup = kept.try_clone().map_err(bind_err)?;
            return tokio::net::TcpListener::from_std(dup).map_err(bind_err);
        }
        let listener = bind_retrying(wait, || bind_tcp(addr, opts)).await?;
        // tokio's `into_std` leaves the socket non-blocking; its duplicates share the flag.
        let std = listener.into_std().map_err(bind_err)?;
        self.tcp.insert(addr, std.try_clone().map_err(bind_err)?);
        tokio::net::TcpListener::from_std(std).map_err(bind_err)
    }

    /// A UDP socket on `addr`: a duplicate of the kept one, or a new one bound with `opts`
    /// (retrying `EADDRINUSE` for up to `wait`) and kept.
    ///
    /// # Errors
    /// As [`Listeners::get`].
    async fn get_udp(
        &mut self,
        addr: SocketAddr,
        opts: &ListenOptions,
        wait: Duration,
    ) -> lb_proxy::Result<tokio::net::UdpSocket> {
        let bind_err = |source| lb_proxy::Error::Bind { addr, source };
        if let Some(kept) = self.udp.get(&addr) {
            let dup = kept.try_clone().map_err(bind_err)?;
            return tokio::net::UdpSocket::from_std(dup).map_err(bind_err);
        }
        let socket = bind_retrying(wait, || bind_udp(addr, opts)).await?;
        let std = socket.into_std().map_err(bind_err)?;
        self.udp.insert(addr, std.try_clone().map_err(bind_err)?);
        tokio::net::UdpSocket::from_std(std).map_err(bind_err)
    }

    /// Closes the kept sockets of addresses `in_use(address, udp)` says no running virtual
    /// server has (a socket stays open while a proxy still uses its own duplicate).
    pub(crate) fn retain(&mut self, in_use: impl Fn(&SocketAddr, bool) -> bool) {
        self.tcp.retain(|a, _| in_use(a, false));
        self.udp.retain(|a, _| in_use(a, true));
    }
}

/// Writes "at least one backend can take a connection" of `pool` into `live` now, after
/// every health event (`events`) and every 200 ms (admin changes from lbctl do not come as
/// events), until aborted; `quorum` is checked at the same moments.
fn spawn_liveness(
    pool: Arc<Pool>,
    mut events: Option<broadcast::Receiver<lb_health::HealthEvent>>,
    live: Arc<watch::Sender<bool>>,
    quorum: Arc<QuorumNotifier>,
) -> JoinHandle<()> {
    let set_live = move |now_live: bool| {
        live.send_if_modified(|v| std::mem::replace(v, now_live) != now_live);
    };
    set_live(pool.snapshot().has_candidates());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            match &mut events {
                Some(rx) => {
                    tokio::select! {
                        r = rx.recv() => if matches!(r, Err(broadcast::error::RecvError::Closed)) { events = None },
                        _ = tick.tick() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            // Let the applier task handle the event first.
            tokio::task::yield_now().await;
            set_live(pool.snapshot().has_candidates());
            quorum.check(&pool);
        }
    })
}

/// How many outcomes may wait for the applier task; more are dropped (a success or two
/// lost changes nothing; a failure lost delays an ejection). Bounds the memory a flood of
/// connections can queue while the task is behind: about 1.5 MiB.
const OUTCOME_QUEUE: usize = 65_536;

/// Forwards the proxy's outcomes to the applier task (never blocks the data path).
#[derive(Debug)]
struct PassiveObserver {
    tx: mpsc::Sender<(BackendId, ConnectionOutcome)>,
    /// `outlier_detection.enabled`: off, outcomes are dropped here.
    enabled: bool,
}

impl OutcomeObserver for PassiveObserver {
    fn observe(&self, backend: &lb_core::Backend, outcome: &Outcome) {
        if !self.enabled {
            return;
        }
        // A connect (or response head) is not the final result: it must not end a run of
        // failures, or a backend that accepts connections and then resets them would never
        // be ejected. A clean close or a complete response is the success. (The detector
        // ignores `ConnectionOutcome::Connected`, so it is not sent at all.)
        let o = match outcome {
            Outcome::Connected { .. } => return,
            Outcome::Success { .. }
            | Outcome::Closed {
                backend_error: false,
                ..
            } => ConnectionOutcome::Success,
            Outcome::ConnectRefused | Outcome::ConnectError(_) => ConnectionOutcome::ConnectFailure,
            Outcome::ConnectTimeout => ConnectionOutcome::Timeout,
            Outcome::Closed {
                backend_error: true,
                ..
            } => ConnectionOutcome::Reset,
            Outcome::HttpServerError { status } => ConnectionOutcome::HttpStatus(*status),
            _ => return,
        };
        if self.tx.try_send((backend.id(), o)).is_err() {
            tracing::debug!(backend = %backend.addr(), "passive health: outcome queue full, outcome dropped");
        }
    }
}

/// Applies active-check events and outlier ejections to the pool: one task per virtual
/// server, so each backend's combined verdict (failing its check, or ejected) is decided in
/// one place. `inhibit_on_failure` backends keep their place at weight 0; others leave the
/// set. Each backend's ejection state goes to `outlier_states` as it changes.
#[allow(clippy::too_many_arguments)]
async fn apply_health(
    name: String,
    pool: Arc<Pool>,
    mut appliers: Appliers,
    active: Option<(broadcast::Receiver<lb_health::HealthEvent>, CheckStates)>,
    mut outcomes: mpsc::Receiver<(BackendId, ConnectionOutcome)>,
    mut weights: mpsc::UnboundedReceiver<WeightChange>,
    mut late_ejections: mpsc::UnboundedReceiver<Vec<(BackendId, OutlierHostState)>>,
    mut tracked: mpsc::UnboundedReceiver<(BackendId, Tracked)>,
    mut detector: OutlierDetector,
    outlier_states: OutlierStates,
    uneject_on_pass: bool,
    quorum: Arc<QuorumNotifier>,
    admin_changed: Arc<tokio::sync::Notify>,
) {
    // The active checks' events, and their current states for a resync after lagging.
    let (mut checks, states) = active.map_or((None, None), |(e, s)| (Some(e), Some(s)));
    // While a backend is ejected and active checks run: each second, a pass since its
    // ejection ends it (Envoy's successful_active_health_check_uneject_host).
    let mut passes = tokio::time::interval(Duration::from_secs(1));
    passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The pool's generation the detector last learnt which backends serve from.
    let mut serving_seen = None;
    loop {
        // Before anything here can eject: which backends serve, so that the last one is
        // not ejected (an lbctl drain or a weight elsewhere rebuilds the pool too).
        tell_serving(
            &name,
            &mut appliers,
            &pool,
            &mut detector,
            &mut serving_seen,
        );
        let deadline = detector.poll_timeout().map(tokio::time::Instant::from_std);
        let watch_passes = uneject_on_pass && states.is_some() && detector.ejected_count() > 0;
        tokio::select! {
            _ = passes.tick(), if watch_passes => {
                if let Some(states) = &states {
                    let ejected: Vec<BackendId> = detector.ejected().collect();
                    for id in ejected {
                        let passed = states.get(id).and_then(|s| s.last_pass);
                        if passed.is_some_and(|p| detector.uneject_if_passed(now(), id, p)) {
                            tracing::info!(virtual_server = %name, backend = %appliers.addr(id), "ejection ended: an active check passed");
                        }
                    }
                }
            }
            ev = async {
                match &mut checks {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match ev {
                Ok(ev) => {
                    tracing::info!(virtual_server = %name, backend = %appliers.addr(ev.backend), from = %ev.old, to = %ev.new, reason = %ev.reason, "backend health changed");
                    let why = (ev.new == Health::Down).then(|| ev.reason.to_string());
                    note_health(&appliers.notes, ev.backend, |n| &mut n.check, why);
                    let before = appliers.of(ev.backend).is_failed_by_checks(ev.backend);
                    if let Err(e) = appliers.of(ev.backend).apply_event(&pool, &ev, now()) {
                        tracing::warn!(virtual_server = %name, error = %e, "health event not applied");
                    }
                    // The checks' transitions run the notify scripts here too, so that a
                    // change that a file's fault hides runs none (keepalived: only the real
                    // server's state changes notify).
                    if ev.old != ev.new {
                        appliers.notify_if_changed(&name, ev.backend, before);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Trackers publish only changes: take every check's current state
                    // instead of the events missed.
                    tracing::warn!(virtual_server = %name, missed = n, "health events lagged; resynchronising");
                    if let Some(states) = &states {
                        let snapshot = states.snapshot();
                        let before: Vec<(BackendId, bool)> = snapshot
                            .keys()
                            .map(|id| (*id, appliers.of(*id).is_failed_by_checks(*id)))
                            .collect();
                        // What the missed events would have noted: an up backend has no
                        // check failure; a down one keeps its last reason.
                        for (id, st) in &snapshot {
                            if st.health == Health::Up {
                                note_health(&appliers.notes, *id, |n| &mut n.check, None);
                            }
                        }
                        let (inh, rem): (Vec<_>, Vec<_>) = snapshot
                            .into_iter()
                            .partition(|(id, _)| appliers.inhibited.contains(id));
                        for (applier, part) in [(&mut appliers.inhibit, inh), (&mut appliers.remove, rem)] {
                            if let Err(e) = applier.resync(&pool, part, now()) {
                                tracing::warn!(virtual_server = %name, error = %e, "health resync");
                            }
                        }
                        for (id, was) in before {
                            appliers.notify_if_changed(&name, id, was);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => checks = None,
            },
            o = outcomes.recv() => match o {
                Some((id, outcome)) => {
                    tell_serving(&name, &mut appliers, &pool, &mut detector, &mut serving_seen);
                    detector.handle_outcome(now(), id, outcome);
                }
                None => return,
            },
            // FILE_CHECK and BFD_CHECK: a real server's files or BFD session changed what
            // they say.
            Some((id, t)) = tracked.recv() => appliers.apply_tracked(&name, &pool, id, t),
            // An lbctl drain: the end of the loop looks at which backends serve.
            () = admin_changed.notified() => {}
            // Ejections the replaced version made while this one started (not in the
            // snapshot it started from): taken over unless this one already ejected the
            // backend.
            Some(late) = late_ejections.recv() => {
                for (id, state) in late {
                    if detector.is_ejected(id) {
                        continue;
                    }
                    match restore_outlier(&outlier_states, &mut detector, id, state) {
                        Ok(ejected) => tracing::debug!(virtual_server = %name, backend = %appliers.addr(id), ejected, "late ejection carried"),
                        Err(e) => tracing::warn!(virtual_server = %name, error = %e, "ejection not carried"),
                    }
                }
            }
            // A reload's new weights: through the appliers, which remember them (set on the
            // pool directly, the next health event would restore the old weight).
            Some((id, weight, applied)) = weights.recv() => {
                if let Err(e) = appliers.of(id).set_configured_weight(&pool, id, weight, now()) {
                    tracing::warn!(virtual_server = %name, error = %e, "weight not applied");
                }
                if let Some(tx) = applied {
                    let _ = tx.send(());
                }
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                tell_serving(&name, &mut appliers, &pool, &mut detector, &mut serving_seen);
                detector.handle_timeout(now());
            }
        }
        // A health event, a drain or a weight may have left only ejected backends.
        tell_serving(
            &name,
            &mut appliers,
            &pool,
            &mut detector,
            &mut serving_seen,
        );
        appliers.apply_outliers(&name, &pool, &mut detector, &outlier_states);
        // Whatever changed the pool here (a weight, an ejection, a health event) changes
        // its quorum at once, as keepalived notifies every change; the liveness task's
        // 200 ms look missed a change undone within it.
        quorum.check(&pool);
    }
}

/// What a check takes from its virtual server beyond its own settings
/// ([`CheckExtras::of`]); the default: nothing (no PROXY header).
#[derive(Debug, Clone, Copy, Default)]
struct CheckExtras {
    /// The PROXY protocol header to send first ([`HealthCheck::proxy_header`]).
    proxy_header: Option<ProxyHeader>,
}

impl CheckExtras {
    /// Those of `check` of a real server of `vs`.
    fn of(check: &HealthCheck, vs: &VirtualServer) -> Self {
        Self {
            proxy_header: check.proxy_header(vs).map(|v| match v {
                crate::config::model::ProxyVersion::V1 => ProxyHeader::V1,
                crate::config::model::ProxyVersion::V2 => ProxyHeader::V2,
            }),
        }
    }
}

/// The probe of a configured check of a real server on `backend_port`.
fn probe(
    check: &HealthCheck,
    backend_port: u16,
    extras: CheckExtras,
) -> Result<Box<dyn Probe + Send + Sync>, String> {
    let port = check.connect_port.unwrap_or(backend_port);
    let source = check.bindto;
    Ok(match &check.kind {
        CheckKind::Tcp => {
            let mut p = TcpProbe::new().connect_port(port);
            if let Some(h) = extras.proxy_header {
                p = p.send_proxy(h);
            }
            if let Some(ip) = source {
                p = p.bindto(ip);
            }
            if let Some(ip) = check.connect_ip {
                p = p.connect_ip(ip);
            }
            Box::new(p)
        }
        CheckKind::Http(h) | CheckKind::Ssl(h) => {
            // keepalived fetches every url, one after another, and keeps the real server
            // only while all pass; a retry starts with the url that failed.
            let tls = matches!(check.kind, CheckKind::Ssl(_));
            if h.url.len() <= 1 {
                Box::new(http_probe(check, h, h.url.first(), port, tls, extras)?)
            } else {
                let mut all: Vec<(Box<dyn Probe + Send + Sync>, Duration)> = Vec::new();
                for url in &h.url {
                    all.push((
                        Box::new(http_probe(check, h, Some(url), port, tls, extras)?),
                        check.connect_timeout,
                    ));
                }
                Box::new(AllOf::in_order(all).map_err(|e| e.to_string())?)
            }
        }
        CheckKind::Misc(m) => {
            // keepalived's quotes and escapes (`/bin/sh -c 'exit 0'` is three words), as
            // the configuration's validation checked them.
            let mut p = ExecProbe::command_line(&m.misc_path)
                .map_err(|e| e.to_string())?
                .misc_dynamic(m.misc_dynamic);
            // Looked up when the check starts (validation looked it up at load too).
            if let Some(user) = &m.user {
                let r = super::run_as_cached(user, m.group.as_deref())
                    .map_err(|e| format!("MISC_CHECK user: {e}"))?;
                p = p.run_as(r.uid, r.gid);
            }
            if let Some(t) = m.misc_timeout {
                p = p.misc_timeout(t);
            }
            Box::new(p)
        }
        CheckKind::Udp(u) => {
            // keepalived check_udp.c: `require_reply HEX` compares the reply (and its
            // length), bare `require_reply` wants any reply, neither passes on silence.
            let expect = match (&u.reply, u.require_reply) {
                (Some(pattern), _) => UdpExpect::Reply(
                    UdpReply::new(pattern.clone(), u.min_reply_length, u.max_reply_length)
                        .map_err(|e| e.to_string())?,
                ),
                (None, true) => UdpExpect::AnyReply,
                (None, false) => UdpExpect::NoIcmpError,
            };
            let payload = u
                .payload
                .clone()
                .unwrap_or_else(|| KEEPALIVED_DEFAULT_PAYLOAD.to_vec());
            let mut p = UdpProbe::new(payload).expect(expect).connect_port(port);
            if let Some(ip) = source {
                p = p.bindto(ip);
            }
            if let Some(ip) = check.connect_ip {
                p = p.connect_ip(ip);
            }
            Box::new(p)
        }
        CheckKind::Dns(d) => {
            let mut p = DnsProbe::new(d.name.clone(), d.qtype).connect_port(port);
            if let Some(ip) = source {
                p = p.bindto(ip);
            }
            if let Some(ip) = check.connect_ip {
                p = p.connect_ip(ip);
            }
            Box::new(p)
        }
        CheckKind::Smtp(s) => {
            let mut p = SmtpProbe::new().helo_name(&s.helo_name).connect_port(port);
            if let Some(h) = extras.proxy_header {
                p = p.send_proxy(h);
            }
            if let Some(ip) = source {
                p = p.bindto(ip);
            }
            if let Some(ip) = check.connect_ip {
                p = p.connect_ip(ip);
            }
            Box::new(p)
        }
        CheckKind::Grpc(g) => {
            let mut p = GrpcProbe::new(g.service.clone()).connect_port(port);
            if let Some(a) = &g.authority {
                p = p.authority(a.clone());
            }
            if let Some(ip) = source {
                p = p.bindto(ip);
            }
            if let Some(ip) = check.connect_ip {
                p = p.connect_ip(ip);
            }
            if g.tls {
                // keepalived's SSL_GET verifies no certificate; SNI is the authority's name.
                let mut tls = TlsOptions::new().verify(false);
                if g.authority.is_none() {
                    tls = tls.send_sni(false);
                }
                p = p.tls(tls).map_err(|e| e.to_string())?;
            }
            Box::new(p)
        }
        // Followed by the virtual server's file watch, not probed.
        CheckKind::File(_) => return Err("a FILE_CHECK is not a probe".into()),
        CheckKind::Bfd(_) => return Err("a BFD_CHECK is not a probe".into()),
        CheckKind::Ping => {
            let mut p = PingProbe::new();
            if let Some(ip) = source {
                p = p.bindto(ip);
            }
            if let Some(ip) = check.connect_ip {
                p = p.connect_ip(ip);
            }
            Box::new(p)
        }
    })
}

/// The probe of one `url` of an `HTTP_GET`/`SSL_GET` (`/` when it has none).
fn http_probe(
    check: &HealthCheck,
    h: &HttpCheck,
    url: Option<&UrlCheck>,
    port: u16,
    tls: bool,
    extras: CheckExtras,
) -> Result<HttpProbe, String> {
    // keepalived's timing: connect_timeout bounds each step, not the whole exchange.
    let mut b = HttpProbe::builder(url.map_or("/", |u| u.path.as_str()))
        .connect_port(port)
        .timeout_per_step();
    // keepalived: a url's own virtualhost, else the check's (else its real or virtual
    // server's, already folded into the check's).
    if let Some(host) = url
        .and_then(|u| u.virtualhost.as_ref())
        .or(h.virtualhost.as_ref())
    {
        b = b.host(host.clone());
    }
    if let Some(code) = url.and_then(|u| u.status_code.as_ref()) {
        b = b
            .status_code(&code.to_string())
            .map_err(|e| e.to_string())?;
    }
    if let Some(d) = url.and_then(|u| u.digest.as_deref()) {
        b = b.digest(d).map_err(|e| e.to_string())?;
    }
    if let Some(u) = url {
        if let (Some(r), _) = u.regex_check().map_err(|(_, m)| m)? {
            b = b.regex(r);
        }
    }
    if let Some(ip) = check.bindto {
        b = b.bindto(ip);
    }
    if let Some(ip) = check.connect_ip {
        b = b.connect_ip(ip);
    }
    if let Some(h) = extras.proxy_header {
        b = b.send_proxy(h);
    }
    if tls {
        // keepalived's SSL_GET does not verify certificates; neither do we here.
        b = b.tls(TlsOptions::new().verify(false).send_sni(h.enable_sni));
    }
    if h.http2 {
        b = b.http2();
    }
    b.build().map_err(|e| e.to_string())
}

/// A real server's checks with the PROXY header each sends ([`HealthCheck::proxy_header`]:
/// the virtual server's `send_proxy` decides it where `check_send_proxy` is unset), what
/// [`probes_alike`] compares.
type Probes = Vec<(HealthCheck, Option<crate::config::model::ProxyVersion>)>;

fn probes(b: &BackendConfig, vs: &VirtualServer) -> Probes {
    b.checks
        .iter()
        .map(|c| (c.clone(), c.proxy_header(vs)))
        .collect()
}

/// Whether checks `a` and `b` probe the same thing the same way — kind and its options,
/// address, port, source, the PROXY header sent — so that a verdict reached by `a` holds
/// for `b` (keepalived's `migrate_checkers` compares its checkers so). Their timing
/// (intervals, retries, rise and fall) may differ: that changes when a verdict moves, not
/// what it is.
fn probes_alike(a: &Probes, b: &Probes) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((x, xh), (y, yh))| {
            (&x.kind, x.connect_port, x.connect_ip, x.bindto, xh)
                == (&y.kind, y.connect_port, y.connect_ip, y.bindto, yh)
        })
}

/// The start state of a real server's (combined) check tracker. A verdict `carried` over
/// from the version a reload replaced is established: up, it needs `fall` failures. A fresh
/// start is down when any of the real server's checks uses `alpha` (as the pool starts it,
/// [`VirtualServer::backend_set`]), else up, falling at its first failure (HAProxy).
fn tracker_start(b: &BackendConfig, vs: &VirtualServer, carried: Option<Health>) -> StartState {
    match carried {
        Some(Health::Up) => StartState::Established,
        Some(Health::Down) => StartState::Down,
        None if b.starts_down(vs) => StartState::Down,
        None => StartState::Up,
    }
}

/// The schedule of a configured check (keepalived defaults, HAProxy overrides). `start`:
/// the start state of the tracker instead of the check's own (`alpha`): established from
/// the verdict carried over from the version of the virtual server a reload replaced, or
/// the real server's fresh start state over all its checks.
fn health_config(
    check: &HealthCheck,
    vs: &VirtualServer,
    start: Option<StartState>,
) -> Result<HealthCheckConfig, String> {
    let mut b = HealthCheckConfig::keepalived()
        .interval(check.interval(vs))
        .rise(check.rise())
        .fall(check.fall())
        .retry(check.retry)
        .delay_before_retry(check.retry_delay(vs))
        .alpha(check.starts_down(vs));
    b = match &check.kind {
        CheckKind::Misc(_) => b.timeout(check.timeout(vs)),
        _ => b.connect_timeout(check.connect_timeout),
    };
    if let Some(f) = check.fastinter {
        b = b.fastinter(f);
    }
    if let Some(d) = check.downinter {
        b = b.downinter(d);
    }
    if let Some(start) = start {
        b = b.start(start);
    }
    if let Some(w) = check.warmup.filter(|w| !w.is_zero()) {
        b = b.warmup(w);
    }
    b.build().map_err(|e| e.to_string())
}

impl VsRuntime {
    /// Builds the pool, starts the checks and binds the listener. While the address is in
    /// use, the bind is retried for up to `bind_wait` (on reload, the listener of the
    /// virtual server being replaced closes asynchronously); `Duration::ZERO` fails at once.
    ///
    /// `live` is the node's liveness channel for this virtual server's name: it outlives
    /// the runtime, so the VRRP instances that `track_service` it follow a replacement
    /// started by a reload.
    ///
    /// `route_pools` are the pools of the virtual servers an HTTP virtual server routes to
    /// ([`VsRuntime::http_pool`] of each running target); every route target must be there.
    ///
    /// TCP and HTTP virtual servers take their listening socket from `listeners`: the kept
    /// socket of their address when there is one (a reload's hand-over), else a new one,
    /// bound retrying `EADDRINUSE` for up to `bind_wait`.
    #[allow(clippy::too_many_arguments)] // each a separate input of one start
    pub(crate) async fn start(
        cfg: VirtualServer,
        global: &Global,
        bind_wait: Duration,
        live: Arc<watch::Sender<bool>>,
        route_pools: Vec<HttpPool>,
        listeners: &mut Listeners,
        carried: Carried,
        bfd: &super::bfd::BfdStates,
    ) -> Result<Self, NodeError> {
        let err = |what: String| NodeError::Start(format!("virtual_server {}: {what}", cfg.name));
        // keepalived's migrate_checkers: a verdict goes on only under checks that probe the
        // same thing; a real server whose checks changed starts as a new one would.
        let carried_health: HashMap<SocketAddr, Health> = carried
            .health
            .iter()
            .filter(|(addr, (_, old))| {
                cfg.backends
                    .iter()
                    .any(|b| b.address == **addr && probes_alike(&probes(b, &cfg), old))
            })
            .map(|(&addr, &(h, _))| (addr, h))
            .collect();
        let set = cfg.backend_set().map_err(|e| err(e.to_string()))?;
        let backend_tls = match &cfg.http {
            Some(h) if cfg.protocol == Protocol::Http => {
                h.backend_tls().map_err(|e| err(e.message))?
            }
            _ => None,
        };
        // FILE_CHECKs are not probes: a watch of their files (below) adjusts the pool
        // besides the checks. `probed` is the configuration without them.
        let mut file_specs = Vec::new();
        let mut file_interval: Option<Duration> = None;
        for (i, b) in cfg.backends.iter().enumerate() {
            for c in &b.checks {
                if let CheckKind::File(f) = &c.kind {
                    let file = f.file.clone().ok_or_else(|| {
                        err(format!("track_file {} is not defined", f.track_file))
                    })?;
                    file_specs.push(super::file_check::FileSpec {
                        backend: backend_id(i),
                        file,
                        weight: f.weight.unwrap_or(1),
                        reverse: f.reverse.unwrap_or(false),
                    });
                    let every = c.interval(&cfg);
                    file_interval = Some(file_interval.map_or(every, |e| e.min(every)));
                }
            }
        }
        let probed = {
            let mut p = cfg.clone();
            for b in &mut p.backends {
                b.checks
                    .retain(|c| !matches!(c.kind, CheckKind::File(_) | CheckKind::Bfd(_)));
            }
            p
        };
        // A real server with checks starts from the verdict its predecessor's checks
        // reached, up as well as down: one up whose checks start down (`alpha`) would
        // otherwise stay down, its tracker starting up and passing without a transition.
        let set = BackendSet::new(
            set.iter()
                .map(|b| {
                    let checked = probed
                        .backends
                        .iter()
                        .any(|c| c.address == b.addr() && !c.checks.is_empty());
                    // The replaced version's counters, shared (see `Carried::stats`).
                    let b = match carried.stats.get(&b.addr()) {
                        Some(stats) => {
                            lb_core::Backend::with_stats(b.id(), b.addr(), Arc::clone(stats))
                                .with_weight(b.weight())
                                .with_backup(b.is_backup())
                                .with_health(b.health())
                        }
                        None => b.clone(),
                    };
                    match carried_health.get(&b.addr()) {
                        Some(&h) if checked => b.with_health(h),
                        _ => b,
                    }
                })
                .collect(),
        )
        .map_err(|e| err(e.to_string()))?;
        let pool = Arc::new(
            Pool::new(
                cfg.lb_algo.clone().with_seed(pool_seed(&cfg.name)),
                set,
                cfg.pool_config(),
            )
            .map_err(|e| err(e.to_string()))?,
        );
        // What the version this one replaces knew of its real servers.
        for (i, b) in cfg.backends.iter().enumerate() {
            let id = backend_id(i);
            if let Some(&admin) = carried.admin.get(&b.address) {
                pool.set_admin(id, admin, now())
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        // `lbctl weight`'s weights, where this file keeps the replaced version's weight:
        // before the appliers are made, which take the pool's weights as configured.
        // Those whose weight this file changes are superseded: skipped here, and dropped from
        // the record only once this version is adopted (`apply_operator_weights`), so that
        // a start that fails leaves the running version's record whole.
        let mut superseded_weights = Vec::new();
        let operator_weights = match carried.operator_weights {
            Some((weights, old_file)) => {
                let w = weights
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for addr in w.keys() {
                    let now_file = cfg.backends.iter().find(|b| b.address == *addr);
                    if now_file.is_none_or(|b| old_file.get(addr) != Some(&b.weight)) {
                        superseded_weights.push(*addr);
                    }
                }
                for (i, b) in cfg.backends.iter().enumerate() {
                    if superseded_weights.contains(&b.address) {
                        continue;
                    }
                    if let Some(&weight) = w.get(&b.address) {
                        pool.set_weight(backend_id(i), weight, now())
                            .map_err(|e| err(e.to_string()))?;
                        tracing::info!(virtual_server = %cfg.name, backend = %b.address, %weight, "lbctl weight carried over");
                    }
                }
                drop(w);
                weights
            }
            None => OperatorWeights::default(),
        };
        // keepalived keeps a virtual server's quorum across a reload (a weight inside the
        // hysteresis band would otherwise restart without it).
        if let Some(q) = carried.quorum {
            pool.continue_quorum(q).map_err(|e| err(e.to_string()))?;
        }
        // Each persistent client stays on its real server (IPVS keeps the templates).
        if let Some((granularity, entries)) = &carried.persistence {
            carry_persistence(&cfg, &pool, *granularity, entries);
        }

        // Health checks: one tracker per check, each on its own schedule; a backend is up
        // only while all its checks pass (keepalived).
        let mut health = None;
        let mut events: Option<broadcast::Receiver<lb_health::HealthEvent>> = None;
        let mut check_events: Option<broadcast::Receiver<lb_health::HealthEvent>> = None;
        let mut check_states: Option<CheckStates> = None;
        let mut inhibited = Vec::new();
        for (i, b) in cfg.backends.iter().enumerate() {
            if b.inhibit_on_failure {
                inhibited.push(backend_id(i));
            }
        }
        if probed.backends.iter().any(|b| !b.checks.is_empty()) {
            let mut driver = HealthDriver::new(1024);
            // Subscribed before any check is added: a first probe can finish (and its
            // event be published) before `add` returns, and a broadcast replays nothing
            // to later subscribers; an `alpha` real server then stayed down for good.
            events = Some(driver.subscribe());
            check_events = Some(driver.subscribe());
            check_states = Some(driver.states());
            for (i, b) in probed.backends.iter().enumerate() {
                let id = backend_id(i);
                if !b.checks.is_empty() {
                    // One start state for the real server, the pool's (`backend_set`): down
                    // when any of its checks uses `alpha`, not only the first (a check
                    // starting up without `alpha` passed without a transition, and the real
                    // server the pool started down stayed down).
                    let start = tracker_start(b, &cfg, carried_health.get(&b.address).copied());
                    // keepalived runs each checker on its own (its retry, delay_before_retry,
                    // delay_loop and timeout) and keeps the real server only while all
                    // succeed.
                    let mut checks = Vec::new();
                    for check in &b.checks {
                        checks.push((
                            probe(check, b.address.port(), CheckExtras::of(check, &cfg))
                                .map_err(&err)?,
                            health_config(check, &cfg, Some(start)).map_err(&err)?,
                        ));
                    }
                    driver
                        .add_checks(id, b.address, checks)
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            health = Some(driver);
        }

        // Passive health: the proxy reports every connection's outcome; consecutive failures
        // eject a backend for a while (Envoy outlier detection), on top of the active checks.
        let (outcomes_tx, outcomes) = mpsc::channel(OUTCOME_QUEUE);
        let observer: Arc<dyn OutcomeObserver> = Arc::new(PassiveObserver {
            tx: outcomes_tx,
            enabled: cfg.outlier_detection.enabled,
        });
        let mut detector = OutlierDetector::new(
            cfg.outlier_detection.outlier_config().map_err(&err)?,
            (0..cfg.backends.len()).map(backend_id),
        )
        .with_seed(pool_seed(&cfg.name));
        // A reload's replacement goes on with its predecessor's ejections, applied to the
        // pool before the proxy takes its first connection.
        let outlier_states = OutlierStates::default();
        let mut appliers = Appliers::new(&pool, inhibited);
        let health_notes = Arc::clone(&appliers.notes);
        // FILE_CHECK: the files as they read now, applied before the first connection.
        let (tracked_tx, tracked_rx) = mpsc::unbounded_channel();
        let file_watch = if file_specs.is_empty() {
            None
        } else {
            // Off the event loop, and bounded: a file on a hung mount must not hold the
            // start (or a reload) for good.
            let watch = super::file_check::FileWatch::new(file_specs.clone());
            let first = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(move || {
                    let mut w = watch;
                    let changed = w.poll();
                    (w, changed)
                }),
            )
            .await;
            match first {
                Ok(Ok((watch, changed))) => {
                    for (id, v) in changed {
                        appliers.apply_tracked(&cfg.name, &pool, id, Tracked::Files(v));
                    }
                    Some(watch)
                }
                _ => {
                    tracing::warn!(virtual_server = %cfg.name, "tracked files not read within 2 s: FILE_CHECKs apply from their next reading");
                    Some(super::file_check::FileWatch::new(file_specs))
                }
            }
        };
        // BFD_CHECK: each session as it is now, applied before the first connection (Up
        // passes; otherwise the check's start state, down with `alpha`); then followed.
        let mut bfd_watches = Vec::new();
        for (i, b) in cfg.backends.iter().enumerate() {
            for c in &b.checks {
                let CheckKind::Bfd(f) = &c.kind else { continue };
                let rx = bfd
                    .get(&f.name)
                    .cloned()
                    .ok_or_else(|| err(format!("bfd_instance {} is not running", f.name)))?;
                // The status the verdict is taken from goes to the follower, which starts
                // from it: a change between now and its start is not missed.
                let start = *rx.borrow();
                let down = super::bfd::start_verdict(&f.name, &start, c.bfd_starts_down(&cfg));
                let applied = down.is_none();
                appliers.apply_tracked(
                    &cfg.name,
                    &pool,
                    backend_id(i),
                    Tracked::Bfd {
                        session: f.name.clone(),
                        down,
                        initial: true,
                    },
                );
                bfd_watches.push((backend_id(i), f.name.clone(), rx, start, applied));
            }
        }
        // From now on (not for the state read at start, as keepalived without
        // rs_init_notifies): a file failing a real server runs its notify_down.
        appliers.notify = cfg
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.notify_up.is_some() || b.notify_down.is_some())
            .map(|(i, b)| (backend_id(i), (b.notify_up.clone(), b.notify_down.clone())))
            .collect();
        let udp = cfg.protocol == Protocol::Udp;
        appliers.fifo = cfg
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (backend_id(i), super::fifo::trio(b.address, udp)))
            .collect();
        appliers.fifo_vs = super::fifo::trio(cfg.listen, udp);
        if cfg.outlier_detection.enabled {
            // Which backends serve, before a carried ejection may take the last one.
            tell_serving(&cfg.name, &mut appliers, &pool, &mut detector, &mut None);
            for (i, b) in cfg.backends.iter().enumerate() {
                if let Some(&state) = carried.outlier.get(&b.address) {
                    // Under this version's settings: one over by now is not applied, the
                    // ceiling and `max_ejection_time` hold.
                    restore_outlier(&outlier_states, &mut detector, backend_id(i), state)
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            appliers.apply_outliers(&cfg.name, &pool, &mut detector, &outlier_states);
        }
        // The listening socket and the proxy first: everything that can fail is done before
        // a task is spawned, so a failed start leaves nothing running.
        let proxy = match cfg.protocol {
            Protocol::Tcp => {
                let mut pc = TcpProxyConfig::new(vec![cfg.listen]);
                pc.connect_timeout = cfg.connect_timeout;
                pc.retries = cfg.retries;
                pc.drain_deadline = global.drain_deadline;
                pc.busy_polling = listeners.busy_polling.clone();
                cfg.tcp.clone().unwrap_or_default().apply(&mut pc);
                pc.name.clone_from(&cfg.name);
                if let Some(path) = cfg.tcp.as_ref().and_then(|t| t.access_log.as_deref()) {
                    let file = listeners
                        .access_logs
                        .get(path)
                        .map_err(|e| err(format!("access_log {}: {e}", path.display())))?;
                    pc.log = Some(Arc::new(super::access_log::VsAccessLog {
                        file,
                        format: AccessLogFormat::Httplog,
                    }));
                }
                // Each backend its own (HAProxy `server … maxconn`, keepalived
                // `uthreshold`); one without none. The largest of them used to cap every
                // backend, the unlimited ones included.
                pc.backend_maxconn = None;
                pc.backend_maxconn_by_id = cfg
                    .backends
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| Some((backend_id(i), u64::from(b.maxconn?))))
                    .collect();
                let listener = listeners
                    .get(cfg.listen, &pc.listen_options, bind_wait)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                Proxy::Tcp(
                    TcpProxy::start_on(
                        pc,
                        Arc::clone(&pool),
                        Arc::clone(&observer),
                        vec![listener],
                    )
                    .map_err(|e| err(e.to_string()))?,
                )
            }
            Protocol::Udp => {
                let mut uc = UdpProxyConfig::new(vec![cfg.listen]);
                cfg.udp.clone().unwrap_or_default().apply(&mut uc);
                uc.busy_polling = listeners.busy_polling.clone();
                uc.per_packet = cfg.ops;
                uc.carried_flows.clone_from(&carried.udp_flows);
                uc.session_donor.clone_from(&carried.udp_sessions);
                let socket = listeners
                    .get_udp(cfg.listen, &uc.listen_options, bind_wait)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                Proxy::Udp(
                    UdpProxy::start_on(uc, Arc::clone(&pool), Arc::clone(&observer), vec![socket])
                        .map_err(|e| err(e.to_string()))?,
                )
            }
            Protocol::Http => {
                let listener = listeners
                    .get(cfg.listen, &ListenOptions::default(), bind_wait)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                let mut hc = cfg.http_proxy_config().map_err(&err)?;
                hc.busy_polling = listeners.busy_polling.clone();
                let log = cfg
                    .http
                    .as_ref()
                    .and_then(|h| Some((h.access_log.as_deref()?, h.access_log_format)));
                if let Some((path, format)) = log {
                    let file = listeners
                        .access_logs
                        .get(path)
                        .map_err(|e| err(format!("access_log {}: {e}", path.display())))?;
                    hc.access_log = Some(AccessLogSink(Arc::new(super::access_log::VsAccessLog {
                        file,
                        format,
                    })));
                }
                let mut own = HttpPool::new(cfg.name.clone(), Arc::clone(&pool))
                    .with_observer(Arc::clone(&observer));
                own.tls.clone_from(&backend_tls);
                own.http2 = cfg.http.as_ref().is_some_and(|h| h.backend_http2);
                let mut pools = vec![own];
                pools.extend(route_pools);
                Proxy::Http(Arc::new(std::sync::Mutex::new(Some(
                    HttpProxy::start(listener, hc, pools).map_err(|e| err(e.to_string()))?,
                ))))
            }
        };
        // keepalived's rs_init_notifies (init_service_rs): the real servers this version
        // starts up, not those it takes over from the one a reload replaces. Once the
        // proxy runs: a failed start announces nothing.
        if global.rs_init_notifies {
            let backends = pool.backends();
            for (i, b) in cfg.backends.iter().enumerate() {
                let id = backend_id(i);
                let up = backends.get(id).is_some_and(|x| x.health() == Health::Up)
                    && !appliers.of(id).is_failed_by_checks(id);
                if up && !carried.admin.contains_key(&b.address) {
                    appliers.notify_state(&cfg.name, id, false);
                }
            }
        }
        let (weights, weight_changes) = mpsc::unbounded_channel();
        let (late_ejections, late_ejections_rx) = mpsc::unbounded_channel();
        // The proxy runs (nothing below fails): quorum is announced from here on.
        let quorum = Arc::new(QuorumNotifier::new(&cfg, &pool, carried.announced));
        let admin_changed = Arc::new(tokio::sync::Notify::new());
        let mut tasks = vec![tokio::spawn(apply_health(
            cfg.name.clone(),
            Arc::clone(&pool),
            appliers,
            check_events.zip(check_states),
            outcomes,
            weight_changes,
            late_ejections_rx,
            tracked_rx,
            detector,
            Arc::clone(&outlier_states),
            cfg.outlier_detection
                .successful_active_health_check_uneject_host,
            Arc::clone(&quorum),
            Arc::clone(&admin_changed),
        ))];
        if cfg.slow_start.is_some() && lb_core::BuildScheduler::slow_start(&cfg.lb_algo) {
            tasks.push(tokio::spawn(drive_slow_start(
                cfg.name.clone(),
                Arc::clone(&pool),
            )));
        }
        let mut followers = Vec::new();
        for (backend, session, rx, start, applied) in bfd_watches {
            followers.push(super::bfd::spawn_check(
                cfg.name.clone(),
                backend,
                session,
                rx,
                start,
                applied,
                tracked_tx.clone(),
            ));
        }
        if let Some(w) = file_watch {
            followers.push(w.spawn(
                cfg.name.clone(),
                file_interval.unwrap_or(Duration::from_secs(1)),
                tracked_tx,
            ));
        }

        // Liveness is written only once the proxy runs: a virtual server that fails to
        // start (its address taken, say) must not tell `track_service` it is live.
        let live_task = spawn_liveness(Arc::clone(&pool), events, live, Arc::clone(&quorum));

        tracing::info!(virtual_server = %cfg.name, listen = %cfg.listen, protocol = %cfg.protocol, lb_algo = %cfg.lb_algo, backends = cfg.backends.len(), "virtual server started");
        Ok(Self {
            cfg,
            pool,
            observer,
            health,
            proxy,
            live_task,
            tasks,
            followers,
            weights,
            operator_weights,
            superseded_weights,
            late_ejections,
            carried_outlier: carried.outlier,
            quorum,
            outlier_states,
            health_notes,
            admin_changed,
            backend_tls,
        })
    }

    /// Tells the health applier task that an admin state changed on the pool.
    pub(crate) fn admin_changed(&self) {
        self.admin_changed.notify_one();
    }

    /// What wakes the health applier task after an admin change made from outside it.
    pub(crate) fn admin_notify(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.admin_changed)
    }

    /// Its quorum's notifier (`quorum_up`/`quorum_down`).
    pub(crate) fn quorum_notifier(&self) -> Arc<QuorumNotifier> {
        Arc::clone(&self.quorum)
    }

    /// Its active checks' states, when it has active checks.
    pub(crate) fn check_states(&self) -> Option<CheckStates> {
        self.health.as_ref().map(HealthDriver::states)
    }

    /// The health applier's channel for new configured weights (a reload's, `lbctl
    /// weight`'s).
    pub(crate) fn weight_sender(&self) -> mpsc::UnboundedSender<WeightChange> {
        self.weights.clone()
    }

    /// Where `lbctl weight` records the weights it sets ([`OperatorWeights`]).
    pub(crate) fn operator_weights(&self) -> OperatorWeights {
        Arc::clone(&self.operator_weights)
    }

    /// This virtual server's pool as an HTTP virtual server routing to it uses it: same
    /// backends (so this virtual server's health checks, passive health and admin changes
    /// steer the routed requests too), same observer, named after this virtual server.
    pub(crate) fn http_pool(&self) -> HttpPool {
        let mut p = HttpPool::new(self.cfg.name.clone(), Arc::clone(&self.pool))
            .with_observer(Arc::clone(&self.observer));
        p.tls.clone_from(&self.backend_tls);
        p.http2 = self.cfg.http.as_ref().is_some_and(|h| h.backend_http2);
        p
    }

    /// Applies a changed configuration that keeps the listener, protocol and scheduler:
    /// membership and weights change in place (established connections and counters stay),
    /// and the checks are restarted. Returns `false` when the change needs a restart.
    pub(crate) fn try_update(&mut self, new: &VirtualServer) -> Result<bool, NodeError> {
        // Everything but the weights must be equal: compare with the old weights put back.
        let mut same_weights = new.clone();
        for (b, old) in same_weights.backends.iter_mut().zip(&self.cfg.backends) {
            b.weight = old.weight;
        }
        let same_frame = same_weights == self.cfg;
        if !same_frame {
            return Ok(false);
        }
        // Only weights differ: the applier task sets them in place and remembers them.
        for (i, (a, b)) in self.cfg.backends.iter().zip(&new.backends).enumerate() {
            if a.weight != b.weight {
                // The file's new weight replaces an operator's.
                self.operator_weights
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&b.address);
                let id = backend_id(i);
                self.weights
                    .send((id, b.weight, None))
                    .map_err(|_| NodeError::Start("health applier task ended".into()))?;
                tracing::info!(virtual_server = %new.name, backend = %b.address, from = %a.weight, to = %b.weight, "weight changed by reload");
            }
        }
        self.cfg = new.clone();
        Ok(true)
    }

    /// What a replacement of this virtual server takes over ([`Carried`]). From now on
    /// this version runs no quorum scripts, unless [`VsRuntime::resume_liveness`] says it
    /// goes on.
    pub(crate) fn carried(&self) -> Carried {
        let backends = self.pool.backends();
        let admin = backends.iter().map(|b| (b.addr(), b.admin())).collect();
        // A fresh start up that has not checked yet is not carried: its replacement starts
        // it fresh too (falling at its first failure, without retries) instead of as an
        // established verdict.
        let health = self
            .health
            .as_ref()
            .map(|d| d.states().snapshot())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, st)| st.established || st.health == Health::Down)
            .filter_map(|(id, st)| {
                let addr = backends.get(id)?.addr();
                let b = self.cfg.backends.iter().find(|b| b.address == addr)?;
                Some((addr, (st.health, probes(b, &self.cfg))))
            })
            .collect();
        Carried {
            admin,
            health,
            quorum: Some(self.pool.has_quorum()),
            announced: Some(self.quorum.hand_over()),
            stats: backends
                .iter()
                .map(|b| (b.addr(), Arc::clone(b.stats())))
                .collect(),
            outlier: self
                .outlier_states
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter_map(|(&id, &st)| Some((backends.get(id)?.addr(), st)))
                .collect(),
            operator_weights: Some((
                Arc::clone(&self.operator_weights),
                self.cfg
                    .backends
                    .iter()
                    .map(|b| (b.address, b.weight))
                    .collect(),
            )),
            persistence: Some((
                self.cfg.persistence_granularity,
                self.pool.persistence_entries(now()),
            )),
            udp_flows: match &self.proxy {
                Proxy::Udp(h) => h.flows(),
                Proxy::Tcp(_) | Proxy::Http(_) => Vec::new(),
            },
            udp_sessions: match &self.proxy {
                Proxy::Udp(h) => Some(h.session_donor()),
                Proxy::Tcp(_) | Proxy::Http(_) => None,
            },
        }
    }

    /// Makes this virtual server's real servers go on from their counters in `old`, the
    /// version it replaces, as IPVS keeps a kept service's: a real server that shares
    /// `old`'s counters since the start (`Carried::stats`, the usual case) has nothing to
    /// add; one that does not gets the totals added
    /// ([`lb_core::BackendStats::carry_totals`]). In HTTP mode, its proxy's counters too
    /// ([`HttpProxy::carry_counters_from`]). Called once `old` has stopped accepting,
    /// just before `lbctl` shows this version instead: `old` counted until then. Also
    /// takes over the ejections `old` made since [`VsRuntime::carried`].
    pub(crate) fn carry_from(&self, old: &Self) {
        let backends = old.pool.backends();
        for b in self.pool.backends().iter() {
            if let Some(o) = backends.iter().find(|o| o.addr() == b.addr()) {
                // Shared since the start (`Carried::stats`): nothing to add.
                if !Arc::ptr_eq(b.stats(), o.stats()) {
                    b.stats().carry_totals(o.stats());
                }
            }
        }
        // Passive health: ejections `old` made after `carried` (while this version started,
        // it still took connections).
        if self.cfg.outlier_detection.enabled {
            let states = old
                .outlier_states
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let mine = self.pool.backends();
            let late: Vec<_> = states
                .into_iter()
                .filter(|(_, st)| st.ejected_until().is_some())
                .filter_map(|(id, st)| {
                    let addr = backends.get(id)?.addr();
                    // Already in the snapshot this version started from (and judged then).
                    if self.carried_outlier.get(&addr) == Some(&st) {
                        return None;
                    }
                    Some((mine.iter().find(|b| b.addr() == addr)?.id(), st))
                })
                .collect();
            if !late.is_empty() {
                let _ = self.late_ejections.send(late);
            }
        }
        // Why each real server's health last changed: kept unless this version has seen a
        // change of its own (a carried down verdict makes no new transition to note).
        {
            let theirs = old
                .health_notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let mine = self.pool.backends();
            let mut notes = self
                .health_notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, theirs) in theirs {
                let Some(addr) = backends.get(id).map(lb_core::Backend::addr) else {
                    continue;
                };
                if let Some(b) = mine.iter().find(|b| b.addr() == addr) {
                    // Only what still fails it in this version: a carried down verdict (no
                    // new transition to note) or a carried ejection. The files were read
                    // afresh: not carried.
                    let down = b.health() == Health::Down;
                    let ejected = self
                        .outlier_states
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&b.id())
                        .is_some_and(|st| st.ejected_until().is_some());
                    let n = notes.entry(b.id()).or_default();
                    if n.check.is_none() && down {
                        n.check = theirs.check;
                    }
                    // An ejection carried over is the one the old version noted: its
                    // time, not the reload's (the same reason); one this version made
                    // itself since keeps its own note.
                    if let Some(t) = theirs.ejection.filter(|_| ejected) {
                        if n.ejection.as_ref().is_none_or(|e| e.reason == t.reason) {
                            n.ejection = Some(t);
                        }
                    }
                }
            }
        }
        // L4: the proxy's own counters (connections, failures, the queue) too.
        match (&self.proxy, &old.proxy) {
            (Proxy::Tcp(mine), Proxy::Tcp(theirs)) => mine.carry_counters_from(theirs),
            (Proxy::Udp(mine), Proxy::Udp(theirs)) => mine.carry_counters_from(theirs),
            _ => {}
        }
        // HTTP mode: the proxy's own counters (requests, response classes, errors) too.
        if let (Proxy::Http(mine), Proxy::Http(theirs)) = (&self.proxy, &old.proxy) {
            if !Arc::ptr_eq(mine, theirs) {
                let mine = mine
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let theirs = theirs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let (Some(m), Some(t)) = (mine.as_ref(), theirs.as_ref()) {
                    m.carry_counters_from(t);
                }
            }
        }
    }

    /// Gives each of this virtual server's real servers the admin state that `old` (the
    /// pool of the version it replaces) has for the same address now. The replacement
    /// started from [`VsRuntime::carried`], a snapshot taken before it started: `lbctl`
    /// commands that the retired version received since are applied here.
    pub(crate) fn take_admin_from(&self, old: &Pool) {
        let old = old.backends();
        for b in self.pool.backends().iter() {
            let Some(o) = old.iter().find(|o| o.addr() == b.addr()) else {
                continue;
            };
            if o.admin() == b.admin() {
                continue;
            }
            match self.pool.set_admin(b.id(), o.admin(), now()) {
                Ok(()) => {
                    self.admin_changed();
                    tracing::info!(virtual_server = %self.cfg.name, backend = %b.addr(), state = %o.admin(), "admin state set during the reload carried over");
                }
                Err(e) => {
                    tracing::warn!(virtual_server = %self.cfg.name, error = %e, "admin state not carried over");
                }
            }
        }
    }

    /// Applies the weights `lbctl weight` set ([`OperatorWeights`]) again: a replacement
    /// applied them at its start, and this takes those set since, before it is registered
    /// to receive the next ones ([`Carried::operator_weights`]).
    pub(crate) fn apply_operator_weights(&self) {
        let weights: Vec<(SocketAddr, Weight)> = {
            let mut w = self
                .operator_weights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Adopted: the file's new weights replace the operator's from now on.
            w.retain(|a, _| !self.superseded_weights.contains(a));
            w.iter().map(|(a, w)| (*a, *w)).collect()
        };
        for (addr, weight) in weights {
            if let Some(i) = self.cfg.backends.iter().position(|b| b.address == addr) {
                let _ = self.weights.send((backend_id(i), weight, None));
            }
        }
    }

    /// Stops writing this virtual server's liveness (a replacement writes it now).
    pub(crate) fn detach_liveness(&self) {
        self.live_task.abort();
    }

    /// Writes this virtual server's liveness into `live` again, after
    /// [`VsRuntime::detach_liveness`]: it keeps running because its replacement failed.
    pub(crate) fn resume_liveness(&mut self, live: Arc<watch::Sender<bool>>) {
        self.live_task.abort();
        self.quorum.resume();
        let events = self.health.as_ref().map(HealthDriver::subscribe);
        self.live_task = spawn_liveness(
            Arc::clone(&self.pool),
            events,
            live,
            Arc::clone(&self.quorum),
        );
    }

    /// Stops accepting new connections (UDP: receiving datagrams) and stops reporting
    /// liveness (a replacement, if any, reports from now on).
    pub(crate) fn stop_accepting(&self) {
        self.live_task.abort();
        match &self.proxy {
            Proxy::Tcp(h) => h.stop_accepting(),
            Proxy::Udp(h) => h.stop_receiving(),
            Proxy::Http(h) => {
                if let Some(p) = h
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                {
                    p.stop_accepting();
                }
            }
        }
    }

    /// A UDP virtual server's sessions end now instead of draining (a UDP session has no
    /// end of its own but its idle timeout): for a virtual server that goes away or a node
    /// that stops. One that a reload restarts lets them drain, carrying the replies to what
    /// it forwarded before its replacement took the socket over. No-op for TCP and HTTP.
    pub(crate) fn end_udp_sessions(&self) {
        if let Proxy::Udp(h) = &self.proxy {
            h.stop();
        }
    }

    /// For a UDP virtual server, a handle that ends its sessions while [`VsRuntime::stop`]
    /// drains them in another task.
    pub(crate) fn udp_closer(&self) -> Option<UdpCloser> {
        match &self.proxy {
            Proxy::Udp(h) => Some(h.closer()),
            _ => None,
        }
    }

    /// Stops the checks, drains established TCP and HTTP connections up to `deadline`
    /// (`None`: until they end) and UDP sessions up to `udp_deadline`, and ends.
    pub(crate) async fn stop(self, deadline: Option<Duration>, udp_deadline: Duration) {
        // tokio's timers take `Duration::MAX` as "never".
        let tcp_deadline = deadline.unwrap_or(Duration::MAX);
        // Checks first: a virtual server on its way out probes nothing more (a MISC_CHECK
        // script of a removed one would otherwise run until its drain ends), nor follows
        // its files and BFD sessions (their changes would run notify scripts twice).
        for f in &self.followers {
            f.abort();
        }
        if let Some(d) = self.health {
            d.shutdown().await;
        }
        match self.proxy {
            Proxy::Tcp(h) => {
                let closed = h.drain(Some(tcp_deadline)).await;
                if closed > 0 {
                    tracing::warn!(virtual_server = %self.cfg.name, closed, "connections closed at the drain deadline");
                }
                h.stop().await;
            }
            Proxy::Udp(h) => {
                // Sessions carry the backends' replies until they go idle or the deadline.
                let closed = h.drain(udp_deadline).await;
                if closed > 0 {
                    tracing::debug!(virtual_server = %self.cfg.name, closed, "UDP sessions ended at the drain deadline");
                }
            }
            Proxy::Http(h) => {
                let proxy = h
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(p) = proxy {
                    p.shutdown(tcp_deadline).await;
                }
            }
        }
        self.live_task.abort();
        for t in self.tasks {
            t.abort();
        }
        tracing::info!(virtual_server = %self.cfg.name, "virtual server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server's checks probe alike across a reload only while the PROXY header they
    /// send is the same, including one the virtual server's `send_proxy` decides for checks
    /// that leave `check_send_proxy` unset; their timing may change.
    #[test]
    fn checks_probe_alike_only_with_the_same_proxy_header() {
        let vs = |tcp: &str, check: &str| {
            let text = format!(
                "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n{tcp}\n\
                 [[virtual_server.backend]]\naddress = \"127.0.0.1:8081\"\n\
                 [[virtual_server.backend.check]]\ntype = \"tcp\"\n{check}\n"
            );
            let (config, _) =
                crate::config::toml::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
            let vs = config.virtual_servers[0].clone();
            probes(&vs.backends[0], &vs)
        };
        let v2 = "[virtual_server.tcp]\nsend_proxy = \"v2\"";
        assert!(probes_alike(&vs("", ""), &vs("", "retry = 5")));
        assert!(probes_alike(&vs(v2, ""), &vs(v2, "delay_loop = \"3s\"")));
        // The virtual server starts sending a header, and so do its checks.
        assert!(!probes_alike(&vs("", ""), &vs(v2, "")));
        // Unless the check says not to: nothing changes for it.
        let none = "check_send_proxy = false";
        assert!(probes_alike(&vs("", none), &vs(v2, none)));
        // v1 written in the check, v2 from the virtual server: another header.
        let v1 = "[virtual_server.tcp]\nsend_proxy = \"v1\"";
        assert!(!probes_alike(
            &vs(v1, "check_send_proxy = true"),
            &vs(v2, "check_send_proxy = true")
        ));
    }

    /// A virtual server whose address is taken fails to start and leaves nothing behind:
    /// its liveness is not written (a `track_service` on it keeps seeing "not live"), then
    /// or later.
    #[tokio::test]
    async fn a_failed_start_writes_no_liveness() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "[[virtual_server]]\nname = \"web\"\nlisten = \"{}\"\n\
             [[virtual_server.backend]]\naddress = \"{}\"\n",
            taken.local_addr().unwrap(),
            backend.local_addr().unwrap()
        );
        let (config, _) =
            crate::config::toml::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
        let (live, mut rx) = watch::channel(false);
        let live = Arc::new(live);
        let started = VsRuntime::start(
            config.virtual_servers[0].clone(),
            &config.global,
            Duration::from_millis(20),
            Arc::clone(&live),
            Vec::new(),
            &mut Listeners::default(),
            Carried::default(),
            &super::super::bfd::BfdStates::new(),
        )
        .await;
        let e = started.expect_err("the address is taken");
        assert!(e.to_string().contains("virtual_server web"), "{e}");
        // The liveness task ticks every 200 ms: a leaked one would have written by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!*rx.borrow_and_update());
        assert!(!rx.has_changed().unwrap());
    }

    /// A `MISC_CHECK` without `misc_timeout` may run for the virtual server's `delay_loop`
    /// (keepalived check_misc.c), not `connect_timeout`: a 10 s script with `delay_loop 60`
    /// used to time out at 5 s, every time.
    #[test]
    fn a_misc_check_runs_for_the_delay_loop_by_default() {
        let text =
            "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\ndelay_loop = 60\n\
                    [[virtual_server.backend]]\naddress = \"127.0.0.1:2\"\n\
                    [[virtual_server.backend.check]]\ntype = \"misc\"\nmisc_path = \"/bin/true\"\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let vs = &config.virtual_servers[0];
        let hc = health_config(&vs.backends[0].checks[0], vs, None).unwrap();
        assert_eq!(hc.timeout(), Duration::from_secs(60));
        assert_eq!(hc.retries(), 0, "keepalived's MISC_CHECK default");
    }

    /// keepalived's `warmup` reaches the checker; 0 and none run the first check at once.
    #[test]
    fn warmup_reaches_the_checker() {
        let text = "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
                    [[virtual_server.backend]]\naddress = \"127.0.0.1:2\"\n\
                    [[virtual_server.backend.check]]\ntype = \"tcp\"\nwarmup = 3\n\
                    [[virtual_server.backend.check]]\ntype = \"tcp\"\nwarmup = 0\n\
                    [[virtual_server.backend.check]]\ntype = \"tcp\"\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let vs = &config.virtual_servers[0];
        let w: Vec<_> = vs.backends[0]
            .checks
            .iter()
            .map(|c| health_config(c, vs, None).unwrap().warmup())
            .collect();
        assert_eq!(w, [Some(Duration::from_secs(3)), None, None]);
    }

    /// A `misc_path` with a quoted argument runs as keepalived runs it: `/bin/sh -c 'exit 0'`
    /// is `/bin/sh`, `-c`, `exit 0` (split on blanks it was `'exit` and `0'`, a shell
    /// syntax error: the check was always down), from either front end. An unterminated
    /// quote is a configuration error that names it.
    #[tokio::test]
    async fn a_misc_path_with_a_quoted_argument_runs_as_keepalived_splits_it() {
        let toml = "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
                    [[virtual_server.backend]]\naddress = \"127.0.0.1:2\"\n\
                    [[virtual_server.backend.check]]\ntype = \"misc\"\n\
                    misc_path = \"/bin/sh -c 'exit 0'\"\n";
        let keepalived = "virtual_server 127.0.0.1 1 {\n    protocol TCP\n    \
                          real_server 127.0.0.1 2 {\n        MISC_CHECK {\n            \
                          misc_path \"/bin/sh -c 'exit 0'\"\n        }\n    }\n}\n";
        let configs = [
            crate::config::toml::parse_str(toml, std::path::Path::new("t.toml")),
            crate::config::keepalived::parse_str(keepalived, std::path::Path::new("k.conf")),
        ];
        for config in configs {
            let (config, _) = config.unwrap();
            let check = &config.virtual_servers[0].backends[0].checks[0];
            let probe = probe(check, 2, CheckExtras::default()).unwrap();
            let outcome = probe
                .probe("127.0.0.1:2".parse().unwrap(), Duration::from_secs(5))
                .await;
            assert_eq!(outcome.health, Health::Up, "{outcome:?}");
        }

        let bad = toml.replace("'exit 0'", "'exit 0");
        let errors = crate::config::toml::parse_str(&bad, std::path::Path::new("t.toml"))
            .expect_err("an unterminated quote");
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("misc_path"), "{text}");
        assert!(text.contains("missing its closing '"), "{text}");
    }

    /// An `SSL_GET` whose `virtualhost` is no DNS name builds (the TLS server name falls back
    /// to the real server's IP): the virtual server used to fail to start.
    #[test]
    fn an_ssl_check_with_a_wildcard_virtualhost_builds() {
        for host in ["*.example.com", "[fe80::1%eth0]"] {
            let text = format!(
                "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
                 [[virtual_server.backend]]\naddress = \"127.0.0.1:2\"\n\
                 [[virtual_server.backend.check]]\ntype = \"ssl\"\nurl = [{{ path = \"/\" }}]\n\
                 virtualhost = \"{host}\"\n"
            );
            let (config, _) =
                crate::config::toml::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
            let check = &config.virtual_servers[0].backends[0].checks[0];
            if let Err(e) = probe(check, 2, CheckExtras::default()) {
                panic!("{host}: {e}");
            }
        }
    }

    /// The tracker of a real server a reload carries over up is established (`fall`
    /// failures to go down); a fresh one starts up and falls at its first failure, or down
    /// with `alpha` on any check.
    #[test]
    fn carried_verdicts_are_established_fresh_starts_are_not() {
        let text = "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
                    [[virtual_server.backend]]\naddress = \"127.0.0.1:2\"\n\
                    [[virtual_server.backend.check]]\ntype = \"tcp\"\nfall = 3\n\
                    [[virtual_server.backend]]\naddress = \"127.0.0.1:3\"\n\
                    [[virtual_server.backend.check]]\ntype = \"tcp\"\n\
                    [[virtual_server.backend.check]]\ntype = \"tcp\"\nalpha = true\n";
        let (config, _) =
            crate::config::toml::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let vs = &config.virtual_servers[0];
        let (plain, alpha) = (&vs.backends[0], &vs.backends[1]);
        assert_eq!(tracker_start(plain, vs, None), StartState::Up);
        assert_eq!(tracker_start(alpha, vs, None), StartState::Down);
        for b in [plain, alpha] {
            assert_eq!(
                tracker_start(b, vs, Some(Health::Up)),
                StartState::Established
            );
            assert_eq!(tracker_start(b, vs, Some(Health::Down)), StartState::Down);
        }
        let hc = health_config(&plain.checks[0], vs, Some(StartState::Established)).unwrap();
        assert_eq!(
            (hc.start(), hc.thresholds().fall),
            (StartState::Established, 3)
        );
    }

    /// Every url of an `HTTP_GET` is fetched: the second one failing takes the real
    /// server down (keepalived), not only the first.
    #[tokio::test]
    async fn every_url_of_an_http_check_must_pass() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = server.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let status = if got.starts_with(b"GET /ok ") {
                        "200 OK"
                    } else {
                        "404 Not Found"
                    };
                    let _ = c
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        let check = |urls: &str| {
            let text = format!(
                "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
                 [[virtual_server.backend]]\naddress = \"{addr}\"\n\
                 [[virtual_server.backend.check]]\ntype = \"http\"\nurl = [{urls}]\n"
            );
            let (config, _) =
                crate::config::toml::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
            config.virtual_servers[0].backends[0].checks[0].clone()
        };
        let run = |c: HealthCheck| async move {
            probe(&c, addr.port(), CheckExtras::default())
                .unwrap()
                .probe(addr, Duration::from_secs(5))
                .await
        };
        let one = run(check("{ path = \"/ok\" }")).await;
        assert!(one.is_up(), "{one:?}");
        let both = run(check(
            "{ path = \"/ok\" }, { path = \"/ok\", status_code = 200 }",
        ))
        .await;
        assert!(both.is_up(), "{both:?}");
        let second_fails = run(check("{ path = \"/ok\" }, { path = \"/missing\" }")).await;
        assert!(!second_fails.is_up(), "{second_fails:?}");
        assert!(second_fails.reason.contains("404"), "{second_fails:?}");
    }
}

#[cfg(test)]
mod quorum_tests {
    use super::*;

    /// A reload hands quorum announcements over: the old version's check after the
    /// hand-over runs nothing, the replacement announces the change, and each script runs
    /// once (the old version used to run `quorum_down` from a check racing the reload, and
    /// the replacement, starting from the pool's state of before, ran it again).
    #[tokio::test]
    async fn quorum_scripts_run_once_across_a_hand_over() {
        let dir = std::env::temp_dir().join(format!("lb-quorum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let text = format!(
            "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\nquorum = 2\n\
             quorum_up = \"echo up >> {log}\"\nquorum_down = \"echo down >> {log}\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:2\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:3\"\n",
            log = log.display()
        );
        let (config, _) =
            crate::config::toml::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
        let vs = &config.virtual_servers[0];
        let pool = Pool::new(
            vs.lb_algo.clone(),
            vs.backend_set().unwrap(),
            vs.pool_config(),
        )
        .unwrap();
        assert!(pool.has_quorum());
        let old = QuorumNotifier::new(vs, &pool, None); // announces "up"
        pool.set_health(backend_id(1), Health::Down, now()).unwrap();
        assert!(!pool.has_quorum());
        let announced = old.hand_over();
        assert!(announced, "up was announced last");
        old.check(&pool); // too late: the replacement announces
        let new = QuorumNotifier::new(vs, &pool, Some(announced)); // announces "down"
        new.check(&pool); // nothing changed since
                          // A later reload whose replacement fails to start: the running version takes the
                          // announcements back and reports what changed meanwhile.
        assert!(!new.hand_over());
        pool.set_health(backend_id(1), Health::Up, now()).unwrap();
        new.check(&pool); // handed over: nothing
        new.resume();
        new.check(&pool); // "up"
        let want = "up\ndown\nup\n";
        for _ in 0..1000 {
            if std::fs::read_to_string(&log).unwrap_or_default().len() >= want.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Scripts run concurrently: their order in the file is not theirs; their count is.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        got.sort();
        assert_eq!(got, ["down", "up", "up"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod carry_tests {
    use super::*;

    fn free_port() -> u16 {
        lb_testkit::ports::unused_port()
    }

    async fn start(port: u16, carried: Carried) -> VsRuntime {
        start_with(
            port,
            carried,
            "[[virtual_server.backend]]\naddress = \"127.0.0.1:9\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:11\"\n",
        )
        .await
    }

    /// A virtual server on `port` with the `[[virtual_server.backend]]` tables `backends`.
    async fn start_with(port: u16, carried: Carried, backends: &str) -> VsRuntime {
        let text = format!(
            "[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n{backends}"
        );
        let (config, _) =
            crate::config::toml::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
        let (live, _rx) = watch::channel(false);
        VsRuntime::start(
            config.virtual_servers[0].clone(),
            &config.global,
            Duration::from_millis(20),
            Arc::new(live),
            Vec::new(),
            &mut Listeners::default(),
            carried,
            &super::super::bfd::BfdStates::new(),
        )
        .await
        .unwrap()
    }

    fn health(v: &VsRuntime, i: usize) -> Health {
        v.pool.backends().get(backend_id(i)).unwrap().health()
    }

    /// Waits (5 s at most) until backend `i` of `v` has health `want`.
    async fn wait_health(v: &VsRuntime, i: usize, want: Health) -> bool {
        for _ in 0..500 {
            if health(v, i) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn wait_down(v: &VsRuntime, i: usize) -> bool {
        wait_health(v, i, Health::Down).await
    }

    /// A real server with two checks, `alpha` on the second only, starts down (as keepalived
    /// marks the `alpha` checker failed) and comes up once both pass. The combined tracker
    /// used to take its start state from the first check only: it started up, the passing
    /// checks made no transition, and the real server the pool started down stayed down.
    #[tokio::test]
    async fn alpha_on_a_later_check_starts_down_and_comes_up() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let v = start_with(
            free_port(),
            Carried::default(),
            &format!(
                "[[virtual_server.backend]]\naddress = \"{addr}\"\n\
                 [[virtual_server.backend.check]]\ntype = \"tcp\"\ndelay_loop = \"100ms\"\n\
                 [[virtual_server.backend.check]]\ntype = \"tcp\"\ndelay_loop = \"100ms\"\n\
                 alpha = true\n"
            ),
        )
        .await;
        assert!(
            wait_health(&v, 0, Health::Up).await,
            "both checks pass: the real server comes up"
        );
        drop(server);
    }

    /// An ejection the old version makes after its replacement took the snapshot (while the
    /// replacement started, the old one still took connections) reaches the replacement
    /// when the old one stops accepting ([`VsRuntime::carry_from`]).
    #[tokio::test]
    async fn an_ejection_made_during_the_reload_is_carried_too() {
        let old = start(free_port(), Carried::default()).await;
        let new = start(free_port(), old.carried()).await;
        assert_eq!(health(&new, 1), Health::Up);
        let b = old.pool.backends().get(backend_id(1)).unwrap().clone();
        for _ in 0..5 {
            old.observer.observe(&b, &Outcome::ConnectRefused);
        }
        assert!(wait_down(&old, 1).await, "the old version ejects it");
        assert_eq!(
            health(&new, 1),
            Health::Up,
            "unknown to the replacement yet"
        );
        new.carry_from(&old);
        assert!(wait_down(&new, 1).await, "the replacement takes it over");
        assert_eq!(health(&new, 0), Health::Up);
    }

    /// Ejections go by real server address: a new version that reorders its real servers,
    /// adds one and makes the ejected one `inhibit_on_failure` ejects the right one, the
    /// inhibit way (kept at weight 0).
    #[tokio::test]
    async fn ejections_follow_the_address_and_the_new_settings() {
        let old = start(free_port(), Carried::default()).await;
        let b = old.pool.backends().get(backend_id(1)).unwrap().clone();
        for _ in 0..5 {
            old.observer.observe(&b, &Outcome::ConnectRefused);
        }
        assert!(wait_down(&old, 1).await);
        let new = start_with(
            free_port(),
            old.carried(),
            "[[virtual_server.backend]]\naddress = \"127.0.0.1:13\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:9\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:11\"\ninhibit_on_failure = true\n",
        )
        .await;
        let backends = new.pool.backends();
        let at = |i: usize| backends.get(backend_id(i)).unwrap().clone();
        assert_eq!(at(2).addr(), b.addr(), "now third, under another id");
        assert_eq!(
            (at(2).health(), at(2).effective_weight().get()),
            (Health::Up, 0),
            "the ejected real server, inhibited: in the set at weight 0"
        );
        for i in [0, 1] {
            assert_eq!(at(i).health(), Health::Up, "{}", at(i).addr());
            assert!(at(i).effective_weight().get() > 0, "{}", at(i).addr());
        }
    }

    /// What the replacement started from is not sent again when the old version stops
    /// accepting: an ejection the new settings ended early (a shorter `max_ejection_time`)
    /// stays ended, instead of coming back from the old version's copy.
    #[tokio::test]
    async fn the_snapshot_is_not_carried_twice() {
        let old = start(free_port(), Carried::default()).await;
        let b = old.pool.backends().get(backend_id(1)).unwrap().clone();
        for _ in 0..5 {
            old.observer.observe(&b, &Outcome::ConnectRefused);
        }
        assert!(
            wait_down(&old, 1).await,
            "ejected for 30 s in the old version"
        );
        let new = start_with(
            free_port(),
            old.carried(),
            "[virtual_server.outlier_detection]\n\
             base_ejection_time = \"300ms\"\nmax_ejection_time = \"300ms\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:9\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:11\"\n",
        )
        .await;
        assert_eq!(health(&new, 1), Health::Down, "carried, capped at 300 ms");
        assert!(
            wait_health(&new, 1, Health::Up).await,
            "the capped ejection ended"
        );
        new.carry_from(&old);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            health(&new, 1),
            Health::Up,
            "not ejected again by the old copy"
        );
    }
}
