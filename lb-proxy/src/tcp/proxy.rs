//! The TCP proxy of one virtual server: accept loops, backend choice with retries, the
//! `maxconn` wait queue (strictly FIFO, like HAProxy's pendconn queue), PROXY protocol, and
//! graceful drain.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lb_core::{Backend, BackendId, ConnectionGuard, Pool, SelectContext};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{forward_metered, ForwardMode, ForwardOptions, Meter};
use crate::busy_poll::{BusyGuard, BusyPolling};
use crate::error::{Error, ErrorSource, Result};
use crate::listener::{bind_tcp_acceptors, ListenOptions};
use crate::log::{TcpLog, TcpLogEntry, TcpTimings, Termination};
use crate::outcome::{NoopObserver, Outcome, OutcomeObserver};
use crate::proxy_protocol::{self, AcceptProxy, ProxyHeader, Version};
use crate::sockopt::{StreamOptions, UseSrc};
use crate::stats::{ProxyStats, StatsSnapshot};

/// Settings of one TCP virtual server. Names follow HAProxy (`timeout connect`, `retries`,
/// `option redispatch`, `maxconn`, `maxqueue`, `timeout queue`, `send-proxy`, `accept-proxy`,
/// `source`) and keepalived (`virtual_server`, `connect_timeout`).
///
/// Build with [`TcpProxyConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpProxyConfig {
    /// The virtual server's name, for its log entries ([`TcpProxyConfig::log`]). Default
    /// empty (written `-`).
    pub name: String,
    /// Addresses to listen on (the VIP and port, IPv4 and/or IPv6). Port 0 picks one.
    pub listen: Vec<SocketAddr>,
    /// Acceptor sockets per address (`SO_REUSEPORT` when above 1). Default 1.
    pub acceptors: usize,
    /// Listening-socket options (default: freebind on, backlog 1024).
    pub listen_options: ListenOptions,
    /// HAProxy `timeout connect` / keepalived `connect_timeout`: the most one connect attempt
    /// to a backend may take. Default 5 s.
    pub connect_timeout: Duration,
    /// HAProxy `retries`: connect attempts after the first failed one. Default 3. A retry
    /// on the backend that just refused (or failed otherwise, but not timed out) comes
    /// min(`connect_timeout`, 1 s) after the failure, HAProxy's turn-around timer: always
    /// without `redispatch`, and with it when no other backend is left.
    pub retries: u32,
    /// HAProxy `option redispatch`: retry on another backend rather than the same one.
    /// Default `true`.
    pub redispatch: bool,
    /// HAProxy `server … maxconn`: the most concurrent connections per backend (counted by
    /// `lb_core::BackendStats::active`, shared with every proxy using the backend). `None`
    /// (default) is unlimited.
    pub backend_maxconn: Option<u64>,
    /// Per-backend `maxconn` overriding `backend_maxconn` (HAProxy `server … maxconn N`,
    /// keepalived `uthreshold`). Default empty.
    pub backend_maxconn_by_id: Vec<(BackendId, u64)>,
    /// HAProxy `maxqueue`: how many connections may wait for a backend slot when every
    /// eligible backend is at `backend_maxconn`; beyond it they are refused. Waiters are
    /// served first come, first served, and a new connection queues behind them. Default
    /// 1024. 0 is no queue: refused at once (HAProxy's `maxqueue 0` means unlimited).
    pub maxqueue: usize,
    /// HAProxy `timeout queue`: the longest a connection waits for a slot. Default 5 s.
    pub queue_timeout: Duration,
    /// HAProxy frontend `maxconn`: the most client connections open at once for this virtual
    /// server (all listeners). At the limit each listener accepts one more client, which
    /// waits for the first slot to free (on whichever listener), and the kernel backlog
    /// holds the others. Default 4096 (each connection costs two descriptors, and a listener
    /// waiting at the limit one more; the hard limit here is 20 000 per process).
    pub maxconn: usize,
    /// Close a connection when neither side sent anything, nor took any of what was sent to
    /// it, for this long (HAProxy `timeout client`/`timeout server`; IPVS `tcp` timeout).
    /// `None` disables. Default 900 s.
    pub idle_timeout: Option<Duration>,
    /// HAProxy `send-proxy` (`Some(Version::V1)`) / `send-proxy-v2` (`Some(Version::V2)`):
    /// tell the backend the client's address. Default `None`.
    pub send_proxy: Option<Version>,
    /// HAProxy `accept-proxy`: require a PROXY header (v1 or v2) from clients. Default `None`.
    pub accept_proxy: Option<AcceptProxy>,
    /// HAProxy `source`: local address for backend connections. Default `None` (the kernel
    /// chooses). Its port is chosen at `connect`, per backend (IP_BIND_ADDRESS_NO_PORT on
    /// Linux), so the ephemeral range limits connections to each backend, not all of them.
    pub source: Option<IpAddr>,
    /// HAProxy `usesrc clientip` / `usesrc client`: connect to backends from the client's
    /// address, so that they see it as LVS NAT showed it, without a PROXY header. Linux
    /// transparent proxying (`IP_TRANSPARENT`, which needs `CAP_NET_ADMIN` or
    /// `CAP_NET_RAW`; without either the proxy does not start); the replies must come back
    /// through this host and be delivered to the proxy's sockets, which the operator sets
    /// up as for HAProxy: the backends route the clients' addresses via this
    /// host (LVS NAT asks the same of real servers), and here packets of transparent
    /// sockets are marked and routed locally (an nftables `prerouting` chain at priority
    /// `mangle` with `socket transparent 1 meta mark set 1`; `ip rule add fwmark 1 lookup
    /// 100`; `ip route add local 0.0.0.0/0 dev lo table 100`; for IPv6 the same with
    /// `ip -6` and `::/0`).
    /// A client of another address family than the backend (an IPv6 client of an IPv4
    /// backend) cannot be used: that connection fails as a local error. Not with `source`.
    /// Default `None`.
    pub usesrc: Option<UseSrc>,
    /// How long [`ProxyHandle::drain`] lets established connections finish before closing
    /// them. Default 30 s.
    pub drain_deadline: Duration,
    /// Options of accepted client sockets (default: TCP_NODELAY, no keepalive).
    pub client_options: StreamOptions,
    /// Options of backend sockets (default: TCP_NODELAY, no keepalive).
    pub backend_options: StreamOptions,
    /// Splice (default, automatic fallback) or always copy.
    pub forward_mode: ForwardMode,
    /// HAProxy `maxpipes`: the most pipes (2 descriptors each) used for splicing at once,
    /// by this proxy (HAProxy's bound is per process: N proxies here may hold N times as
    /// many; a connection without a pipe copies instead). Default 1024.
    pub maxpipes: usize,
    /// HAProxy `tune.pipesize`, in bytes; 0 (default) keeps the kernel's 64 KiB.
    pub pipe_size: usize,
    /// HAProxy `busy-polling`: while a client connection is open, the runtime polls with a
    /// zero timeout instead of sleeping ([`crate::busy_poll`]). `None` (default): off.
    pub busy_polling: Option<BusyPolling>,
    /// Where each connection's log entry goes when it ends (HAProxy `option tcplog`;
    /// [`crate::log::TcpLogEntry`]). `None` (default): none.
    pub log: Option<Arc<dyn TcpLog>>,
}

impl TcpProxyConfig {
    /// A configuration listening on `listen`, with the defaults listed on each field.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        Self {
            name: String::new(),
            listen,
            acceptors: 1,
            listen_options: ListenOptions::default(),
            connect_timeout: Duration::from_secs(5),
            retries: 3,
            redispatch: true,
            backend_maxconn: None,
            backend_maxconn_by_id: Vec::new(),
            maxqueue: 1024,
            queue_timeout: Duration::from_secs(5),
            maxconn: 4096,
            idle_timeout: Some(Duration::from_secs(900)),
            send_proxy: None,
            accept_proxy: None,
            source: None,
            usesrc: None,
            drain_deadline: Duration::from_secs(30),
            client_options: StreamOptions::default(),
            backend_options: StreamOptions::default(),
            forward_mode: ForwardMode::Auto,
            maxpipes: 1024,
            pipe_size: 0,
            busy_polling: None,
            log: None,
        }
    }

    /// The `maxconn` that applies to backend `id`.
    pub fn maxconn_of(&self, id: BackendId) -> Option<u64> {
        self.backend_maxconn_by_id
            .iter()
            .find(|e| e.0 == id)
            .map(|e| e.1)
            .or(self.backend_maxconn)
    }

    fn validate(&self) -> Result<()> {
        let bad = |setting, reason: &str| {
            Err(Error::Config {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.listen.is_empty() {
            return bad("listen", "no address");
        }
        if self.maxconn == 0 || self.maxconn > Semaphore::MAX_PERMITS {
            return bad("maxconn", "must be between 1 and 2^61");
        }
        if u32::try_from(self.maxconn).is_err() {
            return bad("maxconn", "must fit in 32 bits");
        }
        if self.connect_timeout.is_zero() {
            return bad("timeout connect", "must be above 0 s");
        }
        if self.backend_maxconn == Some(0) || self.backend_maxconn_by_id.iter().any(|e| e.1 == 0) {
            return bad("maxconn", "a backend maxconn of 0 admits nothing");
        }
        if self.usesrc.is_some() && self.source.is_some() {
            return bad(
                "usesrc",
                "connections leave from the client's address: no source address with it",
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    config: TcpProxyConfig,
    pool: Arc<Pool>,
    observer: Arc<dyn OutcomeObserver>,
    stats: Arc<ProxyStats>,
    forward: ForwardOptions,
    /// Admission: one permit per open client connection (frontend `maxconn`).
    slots: Arc<Semaphore>,
    /// Connections waiting for a `maxconn` slot, woken front first whenever a backend
    /// connection of this proxy ends (a slot frees).
    queue: WaitQueue,
    /// `true` once accepting must stop.
    stop_accept: watch::Sender<bool>,
    /// `true` once established connections must close.
    close: watch::Sender<bool>,
}

/// Entry point: [`TcpProxy::start`] binds and spawns a virtual server.
#[derive(Debug)]
pub struct TcpProxy;

impl TcpProxy {
    /// Binds every listener of `config` and starts accepting, choosing backends from `pool`.
    /// Connect outcomes go nowhere; see [`TcpProxy::start_with_observer`].
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Bind`] when a listener cannot
    /// be bound (nothing is left listening then).
    pub fn start(config: TcpProxyConfig, pool: Arc<Pool>) -> Result<ProxyHandle> {
        Self::start_with_observer(config, pool, Arc::new(NoopObserver))
    }

    /// Like [`TcpProxy::start`], reporting every connect success and failure and every closed
    /// connection to `observer` (passive health).
    ///
    /// # Errors
    /// As [`TcpProxy::start`].
    pub fn start_with_observer(
        config: TcpProxyConfig,
        pool: Arc<Pool>,
        observer: Arc<dyn OutcomeObserver>,
    ) -> Result<ProxyHandle> {
        config.validate()?;
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.extend(bind_tcp_acceptors(
                *addr,
                config.acceptors,
                &config.listen_options,
            )?);
        }
        Self::start_on(config, pool, observer, listeners)
    }

    /// Like [`TcpProxy::start_with_observer`] on listeners bound by the caller instead of
    /// binding `config.listen` (which should still name their addresses: it is validated)
    /// with `config.acceptors`. lb-node hands a restarted virtual server a duplicate of the
    /// running one's listening socket this way, so a reload refuses no connection and loses
    /// none from the accept queue.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or an empty `listeners`; [`Error::Io`]
    /// when a listener's address cannot be read.
    pub fn start_on(
        config: TcpProxyConfig,
        pool: Arc<Pool>,
        observer: Arc<dyn OutcomeObserver>,
        listeners: Vec<TcpListener>,
    ) -> Result<ProxyHandle> {
        config.validate()?;
        if config.usesrc.is_some() {
            crate::sockopt::check_transparent()?;
        }
        if listeners.is_empty() {
            return Err(Error::Config {
                setting: "listeners",
                reason: "at least one listener is needed".into(),
            });
        }
        let mut local_addrs: Vec<SocketAddr> = Vec::new();
        for l in &listeners {
            config.client_options.apply_listener(l)?;
            let a = l.local_addr()?;
            // SO_REUSEPORT acceptors share an address: list it once.
            if !local_addrs.contains(&a) {
                local_addrs.push(a);
            }
        }
        let forward = ForwardOptions {
            idle_timeout: config.idle_timeout,
            mode: config.forward_mode,
            #[cfg(all(target_os = "linux", feature = "splice"))]
            pipes: Arc::new(super::PipePool::new(config.maxpipes, config.pipe_size)),
        };
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(config.maxconn)),
            config,
            pool,
            observer,
            stats: Arc::default(),
            forward,
            queue: WaitQueue::default(),
            stop_accept: watch::Sender::new(false),
            close: watch::Sender::new(false),
        });
        let accept_tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(Arc::clone(&shared), l)))
            .collect();
        Ok(ProxyHandle {
            shared,
            local_addrs,
            accept_tasks,
        })
    }
}

/// A running TCP virtual server. Dropping the handle closes everything at once (as
/// [`ProxyHandle::stop`] without waiting).
#[derive(Debug)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    local_addrs: Vec<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl ProxyHandle {
    /// The bound addresses, one per configured `listen` address (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Makes this proxy's counters go on from `old`'s ([`ProxyStats::carry_from`]), also
    /// what `old` still counts while it drains: a reload's replacement of a virtual server.
    pub fn carry_counters_from(&self, old: &Self) {
        self.shared.stats.carry_from(&old.shared.stats);
    }

    /// A reader of [`stats`](Self::stats) that can be kept apart from the handle (a status
    /// page's): it holds the proxy's counters, nothing of its tasks.
    pub fn stats_reader(&self) -> Arc<dyn Fn() -> StatsSnapshot + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || shared.stats.snapshot())
    }

    /// The pool this proxy picks from (for `set_admin`, `set_health`, ...).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.shared.pool
    }

    /// Client connections open now: accepted and not yet closed (an idle proxy has 0; the
    /// accept loops' reserved `maxconn` slots do not count).
    pub fn active(&self) -> usize {
        usize::try_from(self.shared.stats.active.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Stops accepting: listeners close, established connections continue.
    pub fn stop_accepting(&self) {
        self.shared.stop_accept.send_replace(true);
        for t in &self.accept_tasks {
            t.abort();
        }
    }

    /// Graceful drain: stops accepting, waits for established connections to finish for up
    /// to `deadline` (`None`: the configured `drain_deadline`), then closes the rest and
    /// waits for them to be gone. Returns how many were closed at the deadline.
    ///
    /// # Cancel safety
    /// Cancel safe: cancelling leaves the proxy not accepting, with connections running.
    pub async fn drain(&self, deadline: Option<Duration>) -> usize {
        self.stop_accepting();
        // The accept tasks end first (at their next await, a few µs): one that accepted a
        // client just now hands it a slot and spawns it before it stops, and the wait for
        // every slot below must not queue ahead of that slot (the client would be dropped,
        // reset). Bounded.
        for _ in 0..1000 {
            if self.accept_tasks.iter().all(JoinHandle::is_finished) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let deadline = deadline.unwrap_or(self.shared.config.drain_deadline);
        let all = u32::try_from(self.shared.config.maxconn).unwrap_or(u32::MAX);
        let slots = &self.shared.slots;
        if tokio::time::timeout(deadline, slots.acquire_many(all))
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.active();
        self.shared.close.send_replace(true);
        // Closing is immediate (each connection task selects on the signal); bounded anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
        left
    }

    /// Stops at once: no more accepts, every connection closed. Returns when they are gone.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn stop(&self) {
        self.drain(Some(Duration::ZERO)).await;
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop_accepting();
        self.shared.close.send_replace(true);
    }
}

/// `accept(2)` errors that mean "out of a resource": back off instead of spinning.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.stop_accept.subscribe();
    // A listener on a specific address knows every connection's destination without a
    // getsockname(2) per connection; a wildcard listener must ask.
    let fixed_local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        // At `maxconn`, nothing is accepted until a slot frees (HAProxy pauses its
        // listeners): a client waiting meanwhile stays in the kernel's accept queue, where a
        // reload's successor, accepting on a duplicate of this socket, takes it over. One
        // accepted here to wait for a slot would be reset when this listener stops. The
        // permit is only looked at, not kept: a listener with no client holds none, so a
        // freed slot serves a client of whichever listener has one. Looked at once per
        // accept: listeners waiting together pass one freed permit along (a `while` here
        // would pass it back and forth forever, each seeing none left).
        if shared.slots.available_permits() == 0 {
            tokio::select! {
                p = shared.slots.acquire() => match p {
                    Ok(p) => drop(p),
                    Err(_) => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                // The frontend slot is taken once a client is there. Another listener may
                // have taken the last one since the look above: this one then waits for
                // it; the backlog holds the listener's others.
                // A free slot is taken before a stop is looked at: a client accepted
                // already would otherwise be dropped here — reset, its request unread —
                // when a reload stops this listener just then (its replacement accepts on
                // a duplicate of the socket, but only connections not yet accepted). No
                // await happens before the spawn while a slot is free, so the accept
                // task's abort cannot drop it either.
                let permit = tokio::select! {
                    biased;
                    p = Arc::clone(&shared.slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                };
                ProxyStats::inc(&shared.stats.accepted);
                let admitted = Admitted::new(Arc::clone(&shared), permit);
                tokio::spawn(handle_connection(admitted, stream, peer, fixed_local));
            }
            Err(e) if is_resource_exhaustion(&e) => {
                ProxyStats::inc(&shared.stats.accept_errors);
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
            Err(e) => {
                // ECONNABORTED and friends: that client is gone, the listener is fine.
                ProxyStats::inc(&shared.stats.accept_errors);
                tracing::debug!(error = %e, "accept failed");
            }
        }
    }
}

/// The proxy's and the backend's byte counters, moved as bytes go (not when the
/// connection ends: a long tunnel shows its traffic while it lasts, as HAProxy's).
struct LiveBytes<'a> {
    proxy: &'a ProxyStats,
    backend: &'a lb_core::BackendStats,
}

impl Meter for LiveBytes<'_> {
    fn moved(&self, to_backend: bool, n: u64, spliced: bool) {
        if n == 0 {
            return;
        }
        if to_backend {
            ProxyStats::add(&self.proxy.bytes_to_backend, n);
            self.backend.add_bytes(n, 0);
        } else {
            ProxyStats::add(&self.proxy.bytes_to_client, n);
            self.backend.add_bytes(0, n);
        }
        if spliced {
            ProxyStats::add(&self.proxy.bytes_spliced, n);
        }
    }
}

/// What [`connect_backend`] did, for the connection's log entry: filled in as it goes, so
/// that a failed or cancelled attempt still tells.
#[derive(Debug, Default, Clone, Copy)]
struct ConnectReport {
    /// From the start until the first connect attempt (HAProxy's Tw: the `maxconn` queue).
    queued: Option<Duration>,
    /// From the first connect attempt until one succeeded, retries included (HAProxy's
    /// Tc).
    connect: Option<Duration>,
    /// Waiting in the `maxconn` queue now.
    in_queue: bool,
    /// Failed connects before the last attempt.
    retries: u32,
    /// The backend of the last attempt.
    backend: Option<SocketAddr>,
}

/// A connection's log entry, written when dropped (whatever way
/// [`handle_connection`] ends).
struct ConnLog<'a> {
    sink: &'a Arc<dyn TcpLog>,
    name: &'a str,
    client: SocketAddr,
    started: std::time::SystemTime,
    start: Instant,
    report: ConnectReport,
    /// (to the client, to the backend)
    bytes: (u64, u64),
    termination: Termination,
}

impl<'a> ConnLog<'a> {
    fn new(sink: &'a Arc<dyn TcpLog>, shared: &'a Shared, client: SocketAddr) -> Self {
        Self {
            sink,
            name: if shared.config.name.is_empty() {
                "-"
            } else {
                &shared.config.name
            },
            client,
            started: std::time::SystemTime::now(),
            start: Instant::now(),
            report: ConnectReport::default(),
            bytes: (0, 0),
            // Until the PROXY header is read: the proxy stopping is what could end it.
            termination: Termination::new('K', 'R'),
        }
    }
}

impl Drop for ConnLog<'_> {
    fn drop(&mut self) {
        self.sink.log(&TcpLogEntry {
            virtual_server: self.name,
            client: self.client,
            started: self.started,
            backend: self.report.backend,
            timings: TcpTimings {
                queue: self.report.queued,
                connect: self.report.connect,
                total: self.start.elapsed(),
            },
            bytes_to_client: self.bytes.0,
            bytes_to_backend: self.bytes.1,
            retries: self.report.retries,
            termination: self.termination,
        });
    }
}

/// Applies `f` to the connection's log entry, if it has one.
fn note(log: &mut Option<Box<ConnLog<'_>>>, f: impl FnOnce(&mut ConnLog<'_>)) {
    if let Some(l) = log {
        f(l);
    }
}

struct Connected {
    backend: Backend,
    stream: TcpStream,
    guard: ConnectionGuard,
}

/// An accepted client connection's hold on the proxy, from `accept(2)` until its task ends
/// (or is dropped unpolled): its frontend `maxconn` slot and its count in `stats.active`
/// (what [`ProxyHandle::active`] and [`ProxyHandle::drain`] report).
struct Admitted {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    _busy: Option<BusyGuard>,
}

impl Admitted {
    fn new(shared: Arc<Shared>, permit: OwnedSemaphorePermit) -> Self {
        ProxyStats::inc(&shared.stats.active);
        Self {
            _busy: shared.config.busy_polling.as_ref().map(BusyPolling::hold),
            shared,
            _permit: permit,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        ProxyStats::dec(&self.shared.stats.active);
    }
}

async fn handle_connection(
    admitted: Admitted,
    mut client: TcpStream,
    peer: SocketAddr,
    fixed_local: Option<SocketAddr>,
) {
    let shared = &*admitted.shared;
    let stats = &shared.stats;
    let mut close = shared.close.subscribe();
    let closing = async move {
        let _ = close.wait_for(|c| *c).await;
    };
    let mut closing = pin!(closing);

    if let Err(e) = shared.config.client_options.apply_accepted(&client) {
        tracing::debug!(error = %e, "client socket options");
    }
    // Boxed: the connection's long-lived state holds only a pointer.
    let mut log = shared
        .config
        .log
        .as_ref()
        .map(|sink| Box::new(ConnLog::new(sink, shared, peer)));
    let Some(local) = fixed_local.or_else(|| client.local_addr().ok()) else {
        note(&mut log, |l| l.termination = Termination::new('R', 'R'));
        return;
    };
    let (mut source, mut destination) = (peer, local);
    let mut early = Vec::new();
    if let Some(ap) = shared.config.accept_proxy {
        // Boxed, like the connect below: one-off futures kept out of the connection's
        // long-lived state, whose size is the per-connection memory cost.
        let header = tokio::select! {
            h = Box::pin(proxy_protocol::read_header(&mut client, ap.header_timeout)) => h,
            () = &mut closing => return,
        };
        match header {
            Ok((
                ProxyHeader::Proxy {
                    source: s,
                    destination: d,
                    ..
                },
                rest,
            )) => {
                (source, destination, early) = (s, d, rest);
            }
            Ok((ProxyHeader::Local, rest)) => early = rest,
            Err(e) => {
                note(&mut log, |l| {
                    l.termination = match e {
                        Error::ProxyHeaderTimeout(_) => Termination::new('c', 'R'),
                        // Gone (or reset) before a whole header: a health checker, a scan.
                        Error::ClientIo(_) => Termination::new('C', 'R'),
                        _ => Termination::new('P', 'R'),
                    };
                });
                ProxyStats::inc(&stats.proxy_header_errors);
                tracing::debug!(%peer, error = %e, "closing: PROXY header");
                return;
            }
        }
    }

    note(&mut log, |l| {
        l.client = source;
        l.termination = Termination::new('K', 'C');
    });
    let mut report = ConnectReport::default();
    let connected = tokio::select! {
        c = Box::pin(connect_backend(shared, source, destination, &mut report)) => c,
        () = &mut closing => {
            note(&mut log, |l| {
                l.report = report;
                // Stopped while queued (HAProxy `KQ`) or connecting (`KC`).
                if report.in_queue {
                    l.termination = Termination::new('K', 'Q');
                }
            });
            return;
        }
    };
    note(&mut log, |l| l.report = report);
    let Connected {
        backend,
        stream: mut backend_stream,
        guard,
    } = match connected {
        Ok(c) => c,
        Err(e) => {
            note(&mut log, |l| {
                if matches!(e, Error::QueueTimeout(_) | Error::QueueFull(_)) {
                    // Its time in the queue (HAProxy's Tw on a queue timeout).
                    l.report.queued = Some(l.start.elapsed());
                }
                l.termination = match e {
                    Error::ConnectTimeout { .. } => Termination::new('s', 'C'),
                    Error::QueueTimeout(_) => Termination::new('s', 'Q'),
                    Error::QueueFull(_) => Termination::new('P', 'Q'),
                    Error::LocalConnect { .. } => Termination::new('R', 'C'),
                    _ => Termination::new('S', 'C'),
                };
            });
            ProxyStats::inc(&stats.failed);
            if e.source() == ErrorSource::Internal {
                tracing::warn!(%peer, error = %e, "cannot connect from this host; closing client");
            } else {
                tracing::info!(%peer, error = %e, "no backend reachable; closing client");
            }
            return;
        }
    };
    // On every exit: first uncount the connection, then wake the first queued connection,
    // so that it sees the freed slot.
    let _slot = scopeguard(|| {
        crate::end_connection(guard);
        shared.queue.wake_front();
    });
    ProxyStats::inc(&stats.connected);
    // A failure writing the first bytes below is the backend's.
    note(&mut log, |l| l.termination = Termination::new('S', 'D'));
    if let Err(e) = shared.config.backend_options.apply(&backend_stream) {
        tracing::debug!(error = %e, "backend socket options");
    }
    if let Some(version) = shared.config.send_proxy {
        let header = ProxyHeader::tcp(source, destination);
        if let Err(e) = proxy_protocol::write_header(&mut backend_stream, &header, version).await {
            broken_at_start(shared, &backend);
            tracing::debug!(error = %e, "writing PROXY header");
            return;
        }
    }
    if !early.is_empty() {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = backend_stream.write_all(&early).await {
            broken_at_start(shared, &backend);
            tracing::debug!(error = %e, "writing the client's first bytes to the backend");
            return;
        }
    }
    let meter = LiveBytes {
        proxy: stats,
        backend: backend.stats(),
    };
    meter.moved(true, early.len() as u64, false);
    let (mut fs, result) =
        forward_metered(&client, &backend_stream, &shared.forward, &meter, closing).await;
    fs.client_to_backend += early.len() as u64;
    note(&mut log, |l| {
        l.bytes = (fs.backend_to_client, fs.client_to_backend);
        l.termination = match &result {
            Ok(()) => Termination::NORMAL,
            Err(Error::IdleTimeout(_)) => Termination::new('c', 'D'),
            Err(Error::Shutdown) => Termination::new('K', 'D'),
            Err(Error::ClientIo(_)) => Termination::new('C', 'D'),
            Err(_) => Termination::new('S', 'D'),
        };
    });
    let backend_error = matches!(result, Err(Error::BackendIo(_)));
    match &result {
        Err(Error::IdleTimeout(_)) => ProxyStats::inc(&stats.idle_timeouts),
        Err(Error::Shutdown) => ProxyStats::inc(&stats.shutdown_closed),
        Err(e) => tracing::debug!(%peer, backend = %backend.addr(), error = %e, "connection ended"),
        Ok(()) => {}
    }
    if backend_error {
        backend.stats().record_failure();
    }
    shared.observer.observe(
        &backend,
        &Outcome::Closed {
            stats: fs,
            backend_error,
        },
    );
}

/// The backend broke the connection it had just accepted, before any forwarding (writing
/// the PROXY header or the client's first bytes failed): a failure of the backend, for
/// passive health.
fn broken_at_start(shared: &Shared, backend: &Backend) {
    backend.stats().record_failure();
    shared.observer.observe(
        backend,
        &Outcome::Closed {
            stats: super::ForwardStats::default(),
            backend_error: true,
        },
    );
}

/// Picks a backend and connects, with retries, redispatch, and the `maxconn` queue.
///
/// The queue is FIFO, like HAProxy's pendconn queue: when every eligible backend is at
/// `maxconn` the connection joins the back of the queue, only the waiter at the front picks,
/// and a new connection joins the back while others wait rather than take a freed slot
/// ahead of them. (A retry after a failed connect was already admitted and does not
/// re-queue unless every backend is full; when the only backends with a free slot are ones
/// that already failed for it, it tries them again rather than queue.) It is one queue per
/// proxy, like HAProxy's backend queue: a waiter at the front that may only use one backend
/// (a retry without redispatch, or a client whose persistence entry names a full backend,
/// [`Pool::persistent_backend`](lb_core::Pool::persistent_backend)) holds the others back
/// until that backend frees a slot or the queue timeout.
///
/// A connect failure is counted against the backend (`record_failure`, `connect_failures`,
/// the observer) and retried; an [`Error::LocalConnect`] (this host's descriptors, `source`
/// address or ephemeral ports) is neither, and ends the attempt.
///
/// # Cancel safety
/// Cancel safe: a cancelled attempt closes its half-open socket and leaves the queue,
/// passing its turn on.
async fn connect_backend(
    shared: &Shared,
    client: SocketAddr,
    destination: SocketAddr,
    report: &mut ConnectReport,
) -> Result<Connected> {
    let arrived = Instant::now();
    let mut first_attempt: Option<Instant> = None;
    let cfg = &shared.config;
    let ctx = SelectContext {
        client: Some(client),
        destination: Some(destination),
        hash_key: None,
    };
    let mut tried: Vec<BackendId> = Vec::new();
    // The backend whose connection error (not a timeout) the next attempt follows.
    let mut refused_by: Option<BackendId> = None;
    let mut sticky: Option<BackendId> = None;
    // With backend maxconn: the backend the client's persistence entry names, which this
    // connection waits for when it is full (HAProxy queues for the server, and redispatches
    // only past its queue; a fresh pick would also move the client's entry for good). Once
    // a connect fails, the retries may go elsewhere (`redispatch`).
    let limited = cfg.backend_maxconn.is_some() || !cfg.backend_maxconn_by_id.is_empty();
    let persistent = if limited {
        shared
            .pool
            .persistent_backend(Instant::now().into_std(), &ctx)
    } else {
        None
    };
    let mut failures = 0u32;
    let mut last_err: Option<Error> = None;
    let mut queue: Option<QueueSlot<'_>> = None;
    loop {
        match &queue {
            // Not our turn yet: the waiter ahead wakes us when it leaves.
            Some(slot) if !slot.waiter.is_front() => {
                slot.wait(None).await?;
                continue;
            }
            // No queue jumping: a new connection joins the back of a non-empty queue.
            None if failures == 0 && !shared.queue.is_empty() => {
                queue = Some(QueueSlot::enter(shared)?);
                report.in_queue = true;
                continue;
            }
            _ => {}
        }
        // `full`: a candidate is at maxconn; `spare_tried`: one that already failed for this
        // connection has a free slot.
        let (mut full, mut spare_tried) = (false, false);
        let now = Instant::now().into_std();
        let only = sticky.or(persistent.filter(|_| failures == 0));
        let picked = shared.pool.select(now, &ctx, &mut |b| {
            if only.is_some_and(|id| b.id() != id) {
                return false;
            }
            if cfg
                .maxconn_of(b.id())
                .is_some_and(|m| b.stats().active() >= m)
            {
                full = true;
                return false;
            }
            if sticky.is_none() && tried.contains(&b.id()) {
                spare_tried = true;
                return false;
            }
            true
        });
        let Some(backend) = picked else {
            if spare_tried {
                // Every candidate failed once or is full: try the failed ones again (one may
                // have come back; `retries` bounds it) rather than wait in the queue for a
                // slot this connection would not take, holding back everyone behind it.
                tried.clear();
                continue;
            }
            if full {
                // Every remaining candidate is at maxconn: wait for a slot (bounded).
                match &queue {
                    // Slots freed by other proxies sharing the backend are not notified
                    // here: re-check at least every 50 ms.
                    Some(slot) => {
                        let recheck = Instant::now() + Duration::from_millis(50);
                        slot.wait(Some(recheck)).await?;
                    }
                    // Queued: pick once more before sleeping, as a slot freed before we
                    // were in the queue woke nobody.
                    None => {
                        queue = Some(QueueSlot::enter(shared)?);
                        report.in_queue = true;
                    }
                }
                continue;
            }
            return Err(last_err.unwrap_or(Error::NoBackend));
        };
        // HAProxy's turn-around timer (`back_handle_st_cer`): a retry on the server that
        // just refused waits min(`timeout connect`, 1 s), so that a restarting server is
        // not hit by every retry within a millisecond — without redispatch, or with it
        // when no other backend is left. Before the backend's slot is taken: a sleeping
        // retry holds none of a refusing backend's `maxconn`.
        if refused_by.take() == Some(backend.id()) {
            tokio::time::sleep(cfg.connect_timeout.min(Duration::from_secs(1))).await;
        }
        let guard = backend.connection();
        if cfg
            .maxconn_of(backend.id())
            .is_some_and(|m| backend.stats().active() > m)
        {
            // Lost a race for the last slot (or it went while the retry waited): pick
            // again.
            drop(guard);
            continue;
        }
        queue = None;
        report.in_queue = false;
        let started = Instant::now();
        let first = *first_attempt.get_or_insert(started);
        report.queued = Some(first - arrived);
        report.retries = failures;
        report.backend = Some(backend.addr());
        match connect_once(&backend, cfg, client).await {
            Ok(stream) => {
                report.connect = Some(first.elapsed());
                // Not the final result: the connection's end reports that (`Closed`).
                shared.observer.observe(
                    &backend,
                    &Outcome::Connected {
                        latency: started.elapsed(),
                    },
                );
                return Ok(Connected {
                    backend,
                    stream,
                    guard,
                });
            }
            Err(e @ Error::LocalConnect { .. }) => {
                drop(guard);
                shared.queue.wake_front();
                ProxyStats::inc(&shared.stats.local_errors);
                tracing::warn!(backend = %backend.addr(), error = %e, "backend connection not set up on this host");
                return Err(e);
            }
            Err(e) => {
                drop(guard);
                shared.queue.wake_front();
                backend.stats().record_failure();
                ProxyStats::inc(&shared.stats.connect_failures);
                let outcome = match &e {
                    Error::ConnectTimeout { .. } => Outcome::ConnectTimeout,
                    Error::Connect { source, .. }
                        if source.kind() == io::ErrorKind::ConnectionRefused =>
                    {
                        Outcome::ConnectRefused
                    }
                    Error::Connect { source, .. } => Outcome::ConnectError(source.kind()),
                    _ => Outcome::ConnectError(io::ErrorKind::Other),
                };
                shared.observer.observe(&backend, &outcome);
                tracing::debug!(backend = %backend.addr(), error = %e, "connect failed");
                failures += 1;
                if !e.is_retryable() || failures > cfg.retries {
                    return Err(e);
                }
                ProxyStats::inc(&shared.stats.retries);
                if cfg.redispatch {
                    tried.push(backend.id());
                } else {
                    sticky = Some(backend.id());
                }
                // A refusal or another connection error (not a timeout, which waited
                // already): the next attempt waits if it goes to this backend again.
                refused_by = matches!(e, Error::Connect { .. }).then(|| backend.id());
                last_err = Some(e);
            }
        }
    }
}

/// One connect attempt with the connect timeout and optional source address.
///
/// # Errors
/// [`Error::LocalConnect`] when the connection cannot be set up on this host (see
/// [`backend_socket`], [`is_local_connect_error`]); [`Error::Connect`] /
/// [`Error::ConnectTimeout`] when the backend refuses, is unreachable or does not answer.
async fn connect_once(
    backend: &Backend,
    cfg: &TcpProxyConfig,
    client: SocketAddr,
) -> Result<TcpStream> {
    let addr = backend.addr();
    let local = |source| Error::LocalConnect {
        backend: addr,
        source,
    };
    let socket = backend_socket(addr, cfg, client).map_err(local)?;
    match tokio::time::timeout(cfg.connect_timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) if is_local_connect_error(&e) => Err(local(e)),
        Ok(Err(e)) => Err(Error::Connect {
            backend: addr,
            source: e,
        }),
        Err(_) => Err(Error::ConnectTimeout {
            backend: addr,
            timeout: cfg.connect_timeout,
        }),
    }
}

/// A socket to connect to `addr` from: bound to HAProxy `source` if set, or to `client`'s
/// address with `usesrc`, with the backend buffer sizes.
///
/// # Errors
/// Local errors only: `socket(2)` (`EMFILE`, `ENFILE`), `setsockopt(2)`, `bind(2)` of the
/// source (`EADDRINUSE`, `EADDRNOTAVAIL`, an address of the other family; with `usesrc`, a
/// client of the other family is [`io::ErrorKind::InvalidInput`]).
fn backend_socket(
    addr: SocketAddr,
    cfg: &TcpProxyConfig,
    client: SocketAddr,
) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(usesrc) = cfg.usesrc {
        let from = usesrc.bind_addr(client, addr)?;
        crate::sockopt::set_transparent(&socket2::SockRef::from(&socket), usesrc)?;
        if from.port() == 0 {
            port_at_connect(&socket)?;
        }
        socket.bind(from)?;
    } else if let Some(ip) = cfg.source {
        port_at_connect(&socket)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    // Before connecting, so that the window scale sent in the SYN fits the buffer.
    let opts = &cfg.backend_options;
    if let Some(n) = opts.rcvbuf.0 {
        socket.set_recv_buffer_size(u32::try_from(n).unwrap_or(u32::MAX))?;
    }
    if let Some(n) = opts.sndbuf.0 {
        socket.set_send_buffer_size(u32::try_from(n).unwrap_or(u32::MAX))?;
    }
    Ok(socket)
}

/// Leaves the ephemeral port of a socket bound to port 0 to `connect`, which picks it per
/// destination (Linux IP_BIND_ADDRESS_NO_PORT, as nginx's `proxy_bind`): a port bound with
/// no destination yet is reserved for every destination, capping all backend connections
/// together at the ephemeral range (about 28 000) instead of per backend.
///
/// # Errors
/// The `setsockopt` error.
fn port_at_connect(socket: &TcpSocket) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )
    .map_err(io::Error::from)?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
    Ok(())
}

/// `connect(2)` errors that are this host's, not the backend's: no ephemeral port left
/// (`EADDRNOTAVAIL`) or no kernel memory (`ENOBUFS`, `ENOMEM`).
fn is_local_connect_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The `maxconn` wait queue: strictly FIFO, like HAProxy's pendconn queue. Each waiter has
/// its own [`Notify`]; a freed slot wakes only the front waiter (no thundering herd), and a
/// front waiter that leaves — served, timed out or cancelled — wakes the next one, so a
/// wake-up it did not use is passed on rather than lost.
#[derive(Debug, Default)]
struct WaitQueue {
    waiters: Mutex<VecDeque<Arc<Notify>>>,
    /// `waiters.len()`, readable without the lock.
    len: AtomicUsize,
}

impl WaitQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Joins the back of the queue, unless `max` connections already wait.
    fn join(&self, max: usize) -> Option<Waiter<'_>> {
        let turn = Arc::new(Notify::new());
        {
            let mut waiters = self.lock();
            if waiters.len() >= max {
                return None;
            }
            waiters.push_back(Arc::clone(&turn));
            self.len.store(waiters.len(), Ordering::Relaxed);
        }
        // Pairs with the fence in `wake_front`: either the caller's next look at the backends
        // sees a slot freed meanwhile, or that slot's `wake_front` sees this waiter.
        fence(Ordering::SeqCst);
        Some(Waiter { queue: self, turn })
    }

    /// A slot freed: wakes the front waiter (or lets it skip its next sleep if awake).
    /// Call after the slot is uncounted.
    fn wake_front(&self) {
        fence(Ordering::SeqCst);
        if self.is_empty() {
            return;
        }
        if let Some(front) = self.lock().front() {
            front.notify_one();
        }
    }
}

/// A place in a [`WaitQueue`], left on drop.
#[derive(Debug)]
struct Waiter<'a> {
    queue: &'a WaitQueue,
    turn: Arc<Notify>,
}

impl Waiter<'_> {
    /// Whether this waiter may pick a backend now.
    fn is_front(&self) -> bool {
        self.queue
            .lock()
            .front()
            .is_some_and(|f| Arc::ptr_eq(f, &self.turn))
    }

    /// Waits to be woken; a wake-up sent while not waiting is kept for the next call.
    async fn woken(&self) {
        self.turn.notified().await;
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.queue.lock();
        let Some(i) = waiters.iter().position(|w| Arc::ptr_eq(w, &self.turn)) else {
            return;
        };
        waiters.remove(i);
        self.queue.len.store(waiters.len(), Ordering::Relaxed);
        if i == 0 {
            // The next waiter's turn, whether or not we used ours.
            if let Some(next) = waiters.front() {
                next.notify_one();
            }
        }
    }
}

/// A connection's place in the proxy's wait queue, with its `timeout queue` deadline.
struct QueueSlot<'a> {
    shared: &'a Shared,
    waiter: Waiter<'a>,
    deadline: Instant,
}

impl<'a> QueueSlot<'a> {
    /// Joins the back of the queue (counted in `queued`), or [`Error::QueueFull`] at
    /// `maxqueue` (counted in `queue_refused`).
    fn enter(shared: &'a Shared) -> Result<Self> {
        let max = shared.config.maxqueue;
        let Some(waiter) = shared.queue.join(max) else {
            ProxyStats::inc(&shared.stats.queue_refused);
            return Err(Error::QueueFull(max));
        };
        ProxyStats::inc(&shared.stats.queued);
        Ok(Self {
            shared,
            waiter,
            deadline: super::after(Instant::now(), shared.config.queue_timeout),
        })
    }

    /// Sleeps until woken or `until` (at the latest the deadline); [`Error::QueueTimeout`]
    /// (counted in `queue_refused`) once the deadline has passed.
    async fn wait(&self, until: Option<Instant>) -> Result<()> {
        let until = until.map_or(self.deadline, |u| u.min(self.deadline));
        let _ = tokio::time::timeout_at(until, self.waiter.woken()).await;
        if Instant::now() >= self.deadline {
            ProxyStats::inc(&self.shared.stats.queue_refused);
            return Err(Error::QueueTimeout(self.shared.config.queue_timeout));
        }
        Ok(())
    }
}

/// Runs `f` on drop.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod wait_queue_tests {
    use super::WaitQueue;
    use futures::FutureExt;

    /// Whether `w` holds a wake-up (consuming it).
    fn woken(w: &super::Waiter<'_>) -> bool {
        w.woken().now_or_never().is_some()
    }

    #[test]
    fn fifo_front_only_and_turns_passed_on() {
        let q = WaitQueue::default();
        q.wake_front(); // nobody waits: nothing to do
        let a = q.join(3).unwrap();
        let b = q.join(3).unwrap();
        let c = q.join(3).unwrap();
        assert!(q.join(3).is_none(), "maxqueue");
        assert!(a.is_front() && !b.is_front() && !c.is_front());

        // A freed slot wakes the front only.
        q.wake_front();
        assert!(woken(&a) && !woken(&b) && !woken(&c));
        // `a` is served and leaves: `b`'s turn.
        drop(a);
        assert!(b.is_front() && woken(&b) && !woken(&c));

        // `b` is woken for a freed slot but gives up without using it: `c` gets the turn.
        q.wake_front();
        drop(b);
        assert!(c.is_front() && woken(&c));
        assert!(!woken(&c), "one wake-up");

        // A waiter behind the front leaving wakes nobody; joiners go to the back.
        let d = q.join(3).unwrap();
        let e = q.join(3).unwrap();
        drop(d);
        assert!(!woken(&c) && !woken(&e));
        assert!(c.is_front() && !e.is_front());
        drop(c);
        assert!(e.is_front() && woken(&e));
        drop(e);
        assert!(q.is_empty());
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    /// With a `source` address the bind leaves the port to `connect` (IP_BIND_ADDRESS_NO_PORT):
    /// no port is taken before the destination is known, for both families.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn source_bind_leaves_the_port_to_connect() {
        for (source, backend) in [("127.0.0.1", "127.0.0.1:9"), ("::1", "[::1]:9")] {
            let mut cfg = TcpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
            cfg.source = Some(source.parse().unwrap());
            let client = "127.0.0.1:40000".parse().unwrap();
            let socket = backend_socket(backend.parse().unwrap(), &cfg, client).unwrap();
            let local = socket.local_addr().unwrap();
            assert_eq!(local.ip(), source.parse::<IpAddr>().unwrap());
            assert_eq!(local.port(), 0, "{source}: a port taken at bind");
        }
    }

    /// `usesrc`: the socket is bound to the client's address (not one of this host's:
    /// IP_TRANSPARENT, which needs CAP_NET_ADMIN; the tests run as root) with no port
    /// (`clientip`) or the client's (`client`); an IPv4 client of a dual-stack listener
    /// (`::ffff:a.b.c.d`) goes to an IPv4 backend as itself; a client of the other family
    /// is refused. Nothing is sent: the sockets are only bound.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn usesrc_binds_the_client_address() {
        let mut cfg = TcpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        let backend: SocketAddr = "198.18.0.21:80".parse().unwrap();
        for (usesrc, client, want) in [
            (UseSrc::ClientIp, "198.18.0.2:40001", "198.18.0.2:0"),
            (UseSrc::Client, "198.18.0.2:40002", "198.18.0.2:40002"),
            (
                UseSrc::ClientIp,
                "[::ffff:198.18.0.2]:40003",
                "198.18.0.2:0",
            ),
        ] {
            cfg.usesrc = Some(usesrc);
            let socket = backend_socket(backend, &cfg, client.parse().unwrap()).unwrap();
            assert_eq!(socket.local_addr().unwrap().to_string(), want, "{usesrc:?}");
        }
        let e = backend_socket(backend, &cfg, "[fd00:18::2]:40004".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let v6 = backend_socket(
            "[fd00:18::21]:80".parse().unwrap(),
            &cfg,
            "[fd00:18::2]:40005".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(v6.local_addr().unwrap().to_string(), "[fd00:18::2]:0");
        cfg.source = Some("198.18.0.11".parse().unwrap());
        assert!(matches!(
            cfg.validate(),
            Err(Error::Config {
                setting: "usesrc",
                ..
            })
        ));
    }
}

#[cfg(test)]
mod size_probe {
    #[tokio::test]
    async fn print_future_sizes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        let opts = super::ForwardOptions::default();
        let f = crate::tcp::forward_metered(&c, &s, &opts, &(), std::future::pending());
        eprintln!("forward future: {} bytes", size_of_val(&f));
        let r = s.readable();
        eprintln!("readable: {} bytes", size_of_val(&r));
        let sl = tokio::time::sleep(std::time::Duration::from_secs(1));
        eprintln!("sleep: {} bytes", size_of_val(&sl));
    }
}
