//! UDP forwarding (LVS NAT for UDP, keepalived `virtual_server … { protocol UDP }`):
//! per-client sessions.
//!
//! The first datagram from a client address to one listening address picks a backend and
//! opens a session: a UDP socket connected to that backend. Later datagrams from the client
//! to that address go through it; the backend's replies come back on it and are sent to that
//! client from the listening socket (so the client sees the VIP as the source). Sessions are
//! keyed by (listening address, client): a client talking to two VIPs of one proxy has two.
//!
//! With `per_packet` (IPVS one-packet scheduling, keepalived `ops`, Envoy
//! `use_per_packet_load_balancing`) every datagram is scheduled on its own, as DNS wants: a
//! client's queries spread over the backends. Sessions are then keyed by (listening address,
//! client, backend) and only carry the replies back; a client holds up to one per backend.
//!
//! A listener bound to a wildcard address (`0.0.0.0`, `[::]`) serves every local address:
//! each datagram's destination is read from `IP_PKTINFO` / `IPV6_PKTINFO`, keys its session,
//! and is the source of the replies, so a client sees them come from the address it wrote to
//! (a VIP added later by VRRP included).
//!
//! A session ends after `idle_timeout` without traffic, or when the backend refuses: ICMP
//! port unreachable, or another error Linux reports on a connected UDP socket as hard
//! (`is_refusal`: administratively prohibited, as firewalld's and RHEL's default `REJECT`
//! send; protocol unreachable; no route). A session's opening is reported to the observer as
//! [`Outcome::Connected`], its end as [`Outcome::Closed`] (a success), or, if the backend
//! refused, [`Outcome::ConnectRefused`]. That refusal is reported (and to
//! `lb_core::BackendStats::record_failure`) whichever side notices it first: the session's
//! reply task (the socket's error readiness) or the next send to the backend
//! (`ECONNREFUSED`, `EHOSTUNREACH`, …). The client's next datagram then goes over a new session to another
//! backend if one is eligible (HAProxy `option redispatch`), and so does a datagram whose
//! send was refused: once a backend is known dead, the client loses nothing.
//!
//! The table holds at most `max_sessions` (each costs a descriptor); beyond it new clients'
//! datagrams are dropped and counted.
//!
//! A replacement (a reload's, started with [`UdpProxy::start_on`] on a duplicate of the
//! listening socket) takes each flow's session over from the proxy it replaces at the
//! flow's next datagram ([`UdpProxyConfig::session_donor`]): the same backend, reached from
//! the same source address and port, as IPVS's connection entries outlive a keepalived
//! reload.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
//! use lb_proxy::udp::{UdpProxy, UdpProxyConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let set = BackendSet::new(vec![Backend::new(BackendId(1), echo.local_addr()?)])?;
//! tokio::spawn(async move {
//!     let mut buf = [0; 1500];
//!     let (n, from) = echo.recv_from(&mut buf).await.unwrap();
//!     echo.send_to(&buf[..n], from).await.unwrap();
//! });
//! let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default())?);
//! let proxy = UdpProxy::start(UdpProxyConfig::new(vec!["127.0.0.1:0".parse()?]), pool)?;
//!
//! let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"ping", proxy.local_addrs()[0]).await?;
//! let mut buf = [0; 16];
//! let (n, from) = client.recv_from(&mut buf).await?;
//! assert_eq!((&buf[..n], from), (&b"ping"[..], proxy.local_addrs()[0]));
//! proxy.stop();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lb_core::{Backend, BackendId, ConnectionGuard, Health, Pool, SelectContext};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::busy_poll::{BusyGuard, BusyPolling};
use crate::error::{Error, Result};
use crate::listener::{bind_udp, ListenOptions};
use crate::outcome::{NoopObserver, Outcome, OutcomeObserver};
use crate::sockopt::UseSrc;
use crate::stats::{ProxyStats, StatsSnapshot};
use crate::tcp::Activity;

mod listen;

use listen::ListenSocket;

/// Settings of one UDP virtual server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UdpProxyConfig {
    /// Addresses to listen on (IPv4 and/or IPv6). Port 0 picks one.
    pub listen: Vec<SocketAddr>,
    /// Listening-socket options (default: freebind on).
    pub listen_options: ListenOptions,
    /// A session ends after this long without a datagram in either direction (IPVS `udp`
    /// timeout). Default 60 s.
    pub idle_timeout: Duration,
    /// The most sessions at once, per virtual server; each holds one descriptor. Default
    /// 4096.
    pub max_sessions: usize,
    /// The largest datagram forwarded, in bytes, 1..=65 535 (a UDP datagram's largest);
    /// longer ones, from a client or a backend, are dropped and counted
    /// (`datagrams_too_long`), never forwarded cut short (Envoy `max_rx_datagram_size`).
    /// Default 65 535.
    pub max_datagram: usize,
    /// HAProxy `busy-polling`: while a session is open, the runtime polls with a zero
    /// timeout instead of sleeping ([`crate::busy_poll`]). `None` (default): off.
    pub busy_polling: Option<BusyPolling>,
    /// Schedule every datagram on its own instead of once per session (IPVS `--ops`,
    /// keepalived `ops`, Envoy `use_per_packet_load_balancing`): a client's datagrams spread
    /// over the backends, and the replies come back over one session per (client, backend),
    /// each counting towards `max_sessions`. Default `false`.
    pub per_packet: bool,
    /// The flows a proxy this one replaces was serving ([`UdpHandle::flows`]): each one's
    /// first datagram here opens its session to the same backend, when it is still
    /// eligible, instead of a fresh pick, so that a reload does not move stateful UDP
    /// (QUIC, DTLS, SIP, VPNs) between backends, as IPVS's connection table outlives a
    /// keepalived reload. Kept for one `idle_timeout` from the start. Not with
    /// `per_packet`. Default none.
    pub carried_flows: Vec<CarriedFlow>,
    /// The running proxy this one replaces, whose sessions it takes over
    /// ([`UdpHandle::session_donor`]): a flow's first datagram here takes that flow's
    /// session from it — its socket, so that the backend goes on seeing the same source
    /// address and port — instead of opening a new one, when the session's backend is
    /// eligible here and both proxies have the same `usesrc`. Without it a flow keeps its
    /// backend ([`carried_flows`](Self::carried_flows)) but reaches it from a new port,
    /// and a backend that knows its peers by address (an OpenVPN server without `float`, a
    /// SIP registrar, a DTLS server) sees a stranger; IPVS's connection entries, which
    /// outlive a keepalived reload, keep the whole 5-tuple. Offered for one `idle_timeout`
    /// from the start. Not with `per_packet`. Default none.
    ///
    /// With a donor, this proxy reads its listening sockets (duplicates of the donor's:
    /// [`UdpProxy::start_on`]) only once the donor has stopped reading them
    /// ([`UdpHandle::stop_receiving`]), or after 1 s: no datagram of a flow is read by both,
    /// which would open a second session for it. Datagrams wait in the socket meanwhile.
    pub session_donor: Option<SessionDonor>,
    /// HAProxy `usesrc clientip` / `usesrc client` for UDP: each session's socket sends
    /// from the client's address (and port, with [`UseSrc::Client`]), so that the backends
    /// see it as LVS NAT showed it — a DNS server's logs and ACLs keep working. The same
    /// Linux transparent proxying as [`crate::tcp::TcpProxyConfig::usesrc`], with the same
    /// setup by the operator (the nftables `socket transparent` match covers UDP); a client
    /// of another family than its backend gets no session (counted as a local error).
    /// Default `None`.
    pub usesrc: Option<UseSrc>,
}

/// A client flow a UDP proxy serves, and its backend ([`UdpHandle::flows`],
/// [`UdpProxyConfig::carried_flows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarriedFlow {
    /// The local address the client writes to.
    pub local: SocketAddr,
    /// The client.
    pub client: SocketAddr,
    /// The backend's address.
    pub backend: SocketAddr,
}

/// A running UDP proxy's sessions, offered to the proxy that replaces it
/// ([`UdpHandle::session_donor`], [`UdpProxyConfig::session_donor`]). Holds the proxy's
/// shared state (its table and counters), none of its tasks.
#[derive(Clone)]
pub struct SessionDonor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionDonor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionDonor")
            .field("sessions", &lock(&self.shared.sessions).len())
            .finish()
    }
}

impl SessionDonor {
    /// Resolves once the donor reads its listening sockets no more: after
    /// [`UdpHandle::stop_receiving`] (or a stop), when each of its listen loops has finished
    /// the datagram in hand.
    async fn stopped_receiving(&self) {
        let mut receiving = self.shared.receiving.subscribe();
        let _ = receiving.wait_for(|n| *n == 0).await;
    }

    /// Takes the session of the flow from `client` to `local`, if it is open, its backend
    /// has not refused, and it sends as `usesrc` says: a duplicate of its socket (connected
    /// to the backend, non-blocking) and the backend's address. The donor's session ends
    /// at once (out of its table, its reply task told to stop); a reply arriving meanwhile
    /// waits in the socket for the taker, or is forwarded by the donor's task before it
    /// stops: none is lost.
    fn take(
        &self,
        local: SocketAddr,
        client: SocketAddr,
        usesrc: Option<UseSrc>,
    ) -> Option<(std::net::UdpSocket, SocketAddr)> {
        if self.shared.config.usesrc != usesrc {
            return None;
        }
        let key = SessionKey {
            local,
            client,
            backend: None,
        };
        let session = lock(&self.shared.sessions)
            .get(&key)
            .filter(|s| !s.is_refused())
            .cloned()?;
        let socket = std::os::fd::AsFd::as_fd(&session.socket)
            .try_clone_to_owned()
            .map_err(|e| tracing::debug!(error = %e, "cannot take over a UDP session's socket"))
            .ok()?;
        end_session(&self.shared, key, &session);
        Some((socket.into(), session.backend.addr()))
    }
}

impl UdpProxyConfig {
    /// A configuration listening on `listen`, with the defaults listed on each field.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        Self {
            listen,
            listen_options: ListenOptions::default(),
            idle_timeout: Duration::from_secs(60),
            max_sessions: 4096,
            max_datagram: 65_535,
            busy_polling: None,
            per_packet: false,
            carried_flows: Vec::new(),
            session_donor: None,
            usesrc: None,
        }
    }
}

/// A session's key: the local address the client wrote to (on a wildcard listener, the
/// datagram's destination), the client, and with `per_packet` the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    local: SocketAddr,
    client: SocketAddr,
    backend: Option<BackendId>,
}

type Sessions = Mutex<HashMap<SessionKey, Arc<Session>>>;

#[derive(Debug)]
struct Session {
    socket: UdpSocket,
    backend: Backend,
    activity: Activity,
    /// Set once the backend answered with ICMP port unreachable: the session carries nothing
    /// more, and the client's next datagram goes to another backend.
    refused: AtomicBool,
    /// Tells the reply task that the session was ended from the listening side.
    ended: Notify,
    /// Taken by the drop, which ends it at the session's end.
    guard: Option<ConnectionGuard>,
    _busy: Option<BusyGuard>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            crate::end_connection(g);
        }
    }
}

impl Session {
    /// A session to `backend` over `socket` (connected to it), counted as one of the
    /// backend's connections while it lives; `taken_over` (from a replaced proxy): already
    /// counted in the backend's total.
    fn new(
        socket: UdpSocket,
        backend: Backend,
        busy: Option<&BusyPolling>,
        taken_over: bool,
    ) -> Self {
        Self {
            _busy: busy.map(BusyPolling::hold),
            socket,
            guard: Some(if taken_over {
                backend.stats().continued_connection()
            } else {
                backend.connection()
            }),
            backend,
            activity: Activity::new(),
            refused: AtomicBool::new(false),
            ended: Notify::new(),
        }
    }

    fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Records that the backend refused (`is_refusal`): counted in
    /// `connect_failures`, against the backend, and reported to the observer as
    /// [`Outcome::ConnectRefused`], once per session whichever side noticed first.
    fn mark_refused(&self, shared: &Shared) {
        if self.refused.swap(true, Ordering::Relaxed) {
            return;
        }
        ProxyStats::inc(&shared.stats.connect_failures);
        self.backend.stats().record_failure();
        shared
            .observer
            .observe(&self.backend, &Outcome::ConnectRefused);
        tracing::debug!(backend = %self.backend.addr(), "backend refused (ICMP port unreachable or another hard ICMP error)");
    }
}

/// Whether an error of a session's socket means its backend refused the datagrams: ICMP
/// port unreachable (`ECONNREFUSED`), and the other ICMP errors Linux reports as hard on a
/// connected UDP socket — IPv4 (`icmp_err_convert`): administratively prohibited or
/// filtered, `EHOSTUNREACH`; protocol unreachable, `ENOPROTOOPT`; host unknown or
/// isolated, `EHOSTDOWN`, `ENONET`; IPv6 (`icmpv6_err_convert`): administratively
/// prohibited, policy failure or reject route, `EACCES` — or no route to it
/// (`ENETUNREACH`, `EHOSTUNREACH` from the send). Before, only the first counted: a backend
/// behind a `REJECT --reject-with icmp-host-prohibited` firewall lost every datagram and
/// counted as healthy.
fn is_refusal(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EACCES
            )
        )
}

#[derive(Debug)]
struct Shared {
    config: UdpProxyConfig,
    pool: Arc<Pool>,
    observer: Arc<dyn OutcomeObserver>,
    stats: Arc<ProxyStats>,
    sessions: Sessions,
    /// Set by [`UdpHandle::drain`]: no new sessions.
    draining: AtomicBool,
    /// Set by [`UdpHandle::stop_receiving`]: the listening sockets are no longer read.
    stop_receiving: watch::Sender<bool>,
    /// How many of its listen loops still read their socket ([`Receiving`]): 0 once none
    /// does, which a replacement sharing the sockets waits for
    /// ([`SessionDonor::stopped_receiving`]).
    receiving: watch::Sender<usize>,
    close: watch::Sender<bool>,
    /// [`UdpProxyConfig::carried_flows`] by (local, client), taken at each flow's first
    /// datagram, until `carried_until`.
    carried: Mutex<HashMap<(SocketAddr, SocketAddr), SocketAddr>>,
    /// [`UdpProxyConfig::session_donor`] (taken out of the configuration, so that it is
    /// let go of), until `carried_until`.
    donor: Mutex<Option<SessionDonor>>,
    carried_until: Instant,
}

/// Entry point: [`UdpProxy::start`] binds and spawns a UDP virtual server.
#[derive(Debug)]
pub struct UdpProxy;

impl UdpProxy {
    /// Binds every listener of `config` and starts forwarding to backends of `pool`.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`], [`Error::Bind`].
    pub fn start(config: UdpProxyConfig, pool: Arc<Pool>) -> Result<UdpHandle> {
        Self::start_with_observer(config, pool, Arc::new(NoopObserver))
    }

    /// Like [`UdpProxy::start`], reporting sessions opened (`Success`) and backends that
    /// answer with ICMP unreachable (`ConnectRefused`) to `observer`.
    ///
    /// # Errors
    /// As [`UdpProxy::start`].
    pub fn start_with_observer(
        config: UdpProxyConfig,
        pool: Arc<Pool>,
        observer: Arc<dyn OutcomeObserver>,
    ) -> Result<UdpHandle> {
        if config.listen.is_empty() {
            return Err(Error::Config {
                setting: "udp virtual_server",
                reason: "needs a listen address".into(),
            });
        }
        let sockets = config
            .listen
            .iter()
            .map(|a| bind_udp(*a, &config.listen_options))
            .collect::<Result<Vec<_>>>()?;
        Self::start_on(config, pool, observer, sockets)
    }

    /// Like [`UdpProxy::start_with_observer`], on sockets the caller bound (`config.listen`
    /// is not used: it may be empty). A node's reload uses it to start a replacement on a
    /// duplicate (`dup(2)`) of the running virtual server's socket, then calls
    /// [`UdpHandle::stop_receiving`] on the old one: no datagram meets a closed port and
    /// none queued in the socket is lost.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty `sockets`, `max_sessions` or `max_datagram` 0;
    /// [`Error::Io`] when a socket has no local address, or on a wildcard address packet
    /// info (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) cannot be turned on.
    pub fn start_on(
        config: UdpProxyConfig,
        pool: Arc<Pool>,
        observer: Arc<dyn OutcomeObserver>,
        sockets: Vec<UdpSocket>,
    ) -> Result<UdpHandle> {
        validate(&config)?;
        if sockets.is_empty() {
            return Err(Error::Config {
                setting: "udp virtual_server",
                reason: "at least one listening socket is needed".into(),
            });
        }
        let sockets = sockets
            .into_iter()
            .map(|s| ListenSocket::new(s).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let local_addrs = sockets.iter().map(|s| s.bound()).collect();
        let shared = Arc::new(Shared::new(config, pool, observer));
        let tasks = sockets
            .into_iter()
            .map(|s| tokio::spawn(listen_loop(Receiving::new(&shared), s)))
            .collect();
        Ok(UdpHandle {
            shared,
            local_addrs,
            tasks,
        })
    }
}

fn validate(config: &UdpProxyConfig) -> Result<()> {
    if config.usesrc.is_some() {
        crate::sockopt::check_transparent()?;
    }
    if config.max_sessions == 0 || !(1..=65_535).contains(&config.max_datagram) {
        return Err(Error::Config {
            setting: "udp virtual_server",
            reason: format!(
                "needs max_sessions > 0 and max_datagram in 1..=65535 (got {} and {})",
                config.max_sessions, config.max_datagram
            ),
        });
    }
    if config.idle_timeout.is_zero() {
        // Each session would end before its reply could come back.
        return Err(Error::Config {
            setting: "udp idle_timeout",
            reason: "must be above 0 s".into(),
        });
    }
    Ok(())
}

/// A running UDP virtual server. Dropping it stops it.
#[derive(Debug)]
pub struct UdpHandle {
    shared: Arc<Shared>,
    local_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl UdpHandle {
    /// The bound addresses, one per configured `listen` address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The counters: `accepted` counts sessions opened, `active` open sessions,
    /// `connect_failures` sessions whose backend refused (ICMP port unreachable), `retries`
    /// datagrams sent over a new session after their backend refused them, `failed`
    /// datagrams dropped for want of a backend or a session socket.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Makes this proxy's counters go on from `old`'s ([`crate::stats::ProxyStats::carry_from`]), also
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

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// The flows served now, each with its backend: what a replacement takes over
    /// ([`UdpProxyConfig::carried_flows`]). None with `per_packet` (no flow has a backend
    /// of its own).
    pub fn flows(&self) -> Vec<CarriedFlow> {
        lock(&self.shared.sessions)
            .iter()
            .filter(|(k, s)| k.backend.is_none() && !s.is_refused())
            .map(|(k, s)| CarriedFlow {
                local: k.local,
                client: k.client,
                backend: s.backend.addr(),
            })
            .collect()
    }

    /// This proxy's sessions, for a replacement to take over
    /// ([`UdpProxyConfig::session_donor`]): each flow's session moves, socket and all, at
    /// the flow's first datagram to the replacement.
    pub fn session_donor(&self) -> SessionDonor {
        SessionDonor {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Graceful drain: datagrams from new clients are dropped (counted in
    /// `sessions_refused`) while existing sessions continue until they go idle; after
    /// `deadline` everything stops (one too far to be a time, `Duration::MAX`: none, the
    /// sessions end on their own). Returns how many sessions were still open then.
    ///
    /// # Cancel safety
    /// Cancel safe: cancelling leaves the proxy draining.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.shared.draining.store(true, Ordering::Relaxed);
        let end = Instant::now().checked_add(deadline);
        while self.sessions() > 0 && end.is_none_or(|end| Instant::now() < end) {
            let tick = Instant::now() + Duration::from_millis(50);
            tokio::time::sleep_until(end.map_or(tick, |end| end.min(tick))).await;
        }
        let left = self.sessions();
        self.stop();
        left
    }

    /// Stops reading the listening sockets, between two datagrams (one already read is
    /// still forwarded), while existing sessions go on carrying the backends' replies back
    /// through the same sockets. Datagrams that arrive from now on stay queued for whoever
    /// else reads the socket: a replacement started with [`UdpProxy::start_on`] on a
    /// duplicate of it. Follow with [`UdpHandle::drain`] to end the sessions.
    pub fn stop_receiving(&self) {
        self.shared.stop_receiving.send_replace(true);
    }

    /// A handle that can end this proxy's sessions from elsewhere ([`UdpCloser::close`]),
    /// for a [`UdpHandle::drain`] running in another task that must be cut short (lb-node:
    /// a later reload removes the address, or SIGTERM).
    pub fn closer(&self) -> UdpCloser {
        UdpCloser {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops listening and ends every session.
    pub fn stop(&self) {
        self.shared.close_all();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Ends the sessions of a [`UdpHandle`] from elsewhere; see [`UdpHandle::closer`].
#[derive(Debug, Clone)]
pub struct UdpCloser {
    shared: Arc<Shared>,
}

impl UdpCloser {
    /// Ends every session and stops receiving: the proxy lets go of its sockets once its
    /// tasks notice (at their next poll), and a [`UdpHandle::drain`] in progress returns.
    pub fn close(&self) {
        self.shared.close_all();
    }
}

impl Shared {
    fn new(
        mut config: UdpProxyConfig,
        pool: Arc<Pool>,
        observer: Arc<dyn OutcomeObserver>,
    ) -> Self {
        let donor = config.session_donor.take().filter(|_| !config.per_packet);
        let carried = if config.per_packet {
            HashMap::new()
        } else {
            config
                .carried_flows
                .iter()
                .map(|f| ((f.local, f.client), f.backend))
                .collect()
        };
        let carried_until = Instant::now()
            .checked_add(config.idle_timeout)
            .unwrap_or_else(Instant::now);
        Self {
            carried: Mutex::new(carried),
            donor: Mutex::new(donor),
            carried_until,
            config,
            pool,
            observer,
            stats: Arc::default(),
            sessions: Mutex::new(HashMap::new()),
            draining: false.into(),
            stop_receiving: watch::Sender::new(false),
            receiving: watch::Sender::new(0),
            close: watch::Sender::new(false),
        }
    }

    /// Stops receiving and ends every session (their tasks notice at their next poll).
    fn close_all(&self) {
        self.stop_receiving.send_replace(true);
        self.close.send_replace(true);
    }
}

impl Drop for UdpHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Arc<Session>>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes `session` from the table if it is still the one under `key` (a newer session may
/// have replaced it).
fn remove_session(shared: &Shared, key: SessionKey, session: &Arc<Session>) {
    let mut sessions = lock(&shared.sessions);
    if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, session)) {
        sessions.remove(&key);
    }
}

/// Ends `session` from the listening side: out of the table at once, its reply task told to
/// stop (it uncounts the session).
fn end_session(shared: &Shared, key: SessionKey, session: &Arc<Session>) {
    remove_session(shared, key, session);
    session.ended.notify_one();
}

/// A listen loop counted in [`Shared::receiving`] from its spawning until it ends, or is
/// dropped unpolled (an aborted task): it is moved into the loop's future.
struct Receiving(Arc<Shared>);

impl Receiving {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.receiving.send_modify(|n| *n += 1);
        Self(Arc::clone(shared))
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.receiving.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How long a replacement waits for its [`SessionDonor`] to stop reading the sockets they
/// share before it reads them anyway (a caller that never calls
/// [`UdpHandle::stop_receiving`] on the replaced proxy).
const DONOR_STOP_WAIT: Duration = Duration::from_secs(1);

async fn listen_loop(receiving: Receiving, listener: Arc<ListenSocket>) {
    let shared = &receiving.0;
    // One byte more than the largest accepted: a datagram that fills it was longer (the
    // kernel cuts what does not fit).
    let mut buf = vec![0u8; shared.config.max_datagram + 1];
    let mut cmsgs = ListenSocket::cmsg_buffer();
    let mut stop = shared.stop_receiving.subscribe();
    // A replacement reads the socket it shares with the proxy it replaces only once that
    // one has stopped: a datagram read by the old proxy after the new one took its flow's
    // session over would open a second session, from another source port. Meanwhile
    // datagrams wait in the socket.
    let donor = shared
        .donor
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(donor) = donor {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            r = tokio::time::timeout(DONOR_STOP_WAIT, donor.stopped_receiving()) => {
                if r.is_err() {
                    tracing::debug!("the replaced UDP proxy still reads the shared socket");
                }
            }
        }
    }
    loop {
        // `recv` is cancel safe: a datagram is either read here or left in the socket.
        let received = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            r = listener.recv(&mut buf, &mut cmsgs) => r,
        };
        let (n, client, local) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors for replies we sent to vanished clients surface here; the
                // socket itself is fine. Back off briefly on anything else.
                if e.kind() != io::ErrorKind::ConnectionRefused {
                    ProxyStats::inc(&shared.stats.accept_errors);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        if n > shared.config.max_datagram {
            ProxyStats::inc(&shared.stats.datagrams_too_long);
            continue;
        }
        let key = SessionKey {
            local,
            client,
            backend: None,
        };
        forward_datagram(shared, &listener, key, &buf[..n]).await;
    }
}

/// Sends one client datagram to the backend of its session, opening one if needed.
///
/// A session whose backend refused (ICMP port unreachable, noticed by the reply task or by
/// this send as `ECONNREFUSED`) is ended, and the datagram goes over a new session to another
/// backend when one is eligible (HAProxy `option redispatch`; counted in `retries`). A
/// datagram the kernel refused was not sent, so nothing is lost once the refusal is known.
async fn forward_datagram(
    shared: &Arc<Shared>,
    listener: &Arc<ListenSocket>,
    flow: SessionKey,
    datagram: &[u8],
) {
    let Some((key, session)) = session_for(shared, listener, flow, None).await else {
        return;
    };
    match send_to_backend(shared, &session, datagram).await {
        Err(e) if is_refusal(&e) => {
            session.mark_refused(shared);
            end_session(shared, key, &session);
            let Some((_, next)) =
                session_for(shared, listener, flow, Some(session.backend.id())).await
            else {
                return;
            };
            ProxyStats::inc(&shared.stats.retries);
            if let Err(e) = send_to_backend(shared, &next, datagram).await {
                tracing::debug!(client = %key.client, error = %e, "send to backend");
            }
        }
        Err(e) => tracing::debug!(client = %key.client, error = %e, "send to backend"),
        Ok(()) => {}
    }
}

/// The session a datagram of `flow` (a key without backend) goes over, and its key: the
/// flow's session, or with `per_packet` the flow's session to a backend picked for this
/// datagram; opened if there is none. A session found refused is ended and the pick made
/// again without its backend (a bounded number of times). No new session opens while
/// draining or with the table full ([`may_open`], checked before any pick). `None`: the
/// datagram is dropped (counted here, by [`open_session`] or by [`pick_backend`]).
async fn session_for(
    shared: &Arc<Shared>,
    listener: &Arc<ListenSocket>,
    flow: SessionKey,
    mut avoid: Option<BackendId>,
) -> Option<(SessionKey, Arc<Session>)> {
    // Each refused session found is ended; three picks cover a backend refused in the
    // meantime and the fallback to the only eligible one.
    for _ in 0..3 {
        let picked = if shared.config.per_packet {
            if !may_open(shared) {
                // No new session (draining, or the table is full): nothing is picked (a pick
                // moves the scheduler and writes persistence), and the datagram goes over a
                // session the client already has, if any.
                return flow_session(shared, flow).or_else(|| {
                    ProxyStats::inc(&shared.stats.sessions_refused);
                    None
                });
            }
            Some(pick_backend(shared, flow, avoid)?)
        } else {
            None
        };
        let key = SessionKey {
            backend: picked.as_ref().map(Backend::id),
            ..flow
        };
        // Taken and touched under the table lock, where an idle session is expired: a
        // session handed out here is not expired under the datagram (its reply would find no
        // reader).
        let existing = lock(&shared.sessions)
            .get(&key)
            .cloned()
            .inspect(|s| s.activity.touch());
        match existing {
            Some(s) if !s.is_refused() => {
                // Its backend found down since (a silent one, by the health checks or
                // passive health): the flow moves, but only to a healthy other backend
                // (Envoy's UDP proxy): under panic routing, or with none healthy, it
                // stays where it is rather than hop at every datagram or be dropped.
                if backend_down(shared, &s) && !shared.draining.load(Ordering::Relaxed) {
                    if let Some(to) = healthy_other(shared, flow, &s) {
                        end_session(shared, key, &s);
                        return open_session(shared, listener, key, to)
                            .await
                            .map(|n| (key, n));
                    }
                }
                return Some((key, s));
            }
            Some(refused) => {
                end_session(shared, key, &refused);
                avoid = Some(refused.backend.id());
            }
            None => {
                if picked.is_none() && !may_open(shared) {
                    // Checked before the pick, which moves the scheduler and writes
                    // persistence for a client that would get nothing.
                    ProxyStats::inc(&shared.stats.sessions_refused);
                    return None;
                }
                if picked.is_none() {
                    if let Some((socket, backend)) = donated_session(shared, flow) {
                        return add_session(shared, listener, key, backend, socket, true)
                            .map(|s| (key, s));
                    }
                }
                let backend = match picked {
                    Some(b) => b,
                    None => match carried_backend(shared, flow) {
                        Some(b) => b,
                        None => pick_backend(shared, flow, avoid)?,
                    },
                };
                return open_session(shared, listener, key, backend)
                    .await
                    .map(|s| (key, s));
            }
        }
    }
    ProxyStats::inc(&shared.stats.failed);
    None
}

/// Whether `session`'s backend is down now, or no longer in the pool: its flow then moves
/// to another backend at its next datagram, as Envoy's UDP proxy moves a session off a
/// host that became unhealthy (a client that keeps sending never goes idle, and would
/// stay on a backend that died without an ICMP error for good). A drained or inhibited
/// (weight 0) backend keeps its sessions, as IPVS keeps a quiescent real server's flows.
fn backend_down(shared: &Shared, session: &Session) -> bool {
    let snapshot = shared.pool.snapshot();
    snapshot
        .backends()
        .get(session.backend.id())
        .filter(|b| b.addr() == session.backend.addr())
        .is_none_or(|b| b.health() == Health::Down)
}

/// The session of `flow` that the replaced proxy hands over
/// ([`UdpProxyConfig::session_donor`]): its socket and this pool's backend of its address,
/// if that one is eligible (else the flow is scheduled afresh, and the socket closed: the
/// flow has left that backend). The donor is let go of once the carried flows expire.
fn donated_session(shared: &Shared, flow: SessionKey) -> Option<(UdpSocket, Backend)> {
    let donor = {
        let mut donor = shared.donor.lock().unwrap_or_else(PoisonError::into_inner);
        if donor.is_some() && Instant::now() >= shared.carried_until {
            *donor = None;
        }
        donor.clone()?
    };
    let (socket, addr) = donor.take(flow.local, flow.client, shared.config.usesrc)?;
    let backend = eligible_backend(shared, addr)?;
    let socket = UdpSocket::from_std(socket)
        .map_err(|e| tracing::debug!(error = %e, "cannot take over a UDP session's socket"))
        .ok()?;
    // The flow's backend is settled: its carried entry is not needed.
    shared
        .carried
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(flow.local, flow.client));
    Some((socket, backend))
}

/// The backend a replaced proxy served `flow` with ([`UdpProxyConfig::carried_flows`]),
/// taken once, if it is still eligible and the carried flows have not expired.
fn carried_backend(shared: &Shared, flow: SessionKey) -> Option<Backend> {
    let mut carried = shared
        .carried
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if carried.is_empty() {
        return None;
    }
    if Instant::now() >= shared.carried_until {
        *carried = HashMap::new();
        return None;
    }
    let addr = carried.remove(&(flow.local, flow.client))?;
    drop(carried);
    eligible_backend(shared, addr)
}

/// This pool's backend at `addr`, if it is eligible for new flows.
fn eligible_backend(shared: &Shared, addr: SocketAddr) -> Option<Backend> {
    shared
        .pool
        .snapshot()
        .backends()
        .iter()
        .find(|b| b.addr() == addr && b.is_eligible())
        .cloned()
}

/// A backend for `flow` to move to from `session`'s, which is down: the pool's pick among
/// the healthy backends other than it, if any (not counted as a failure when none).
fn healthy_other(shared: &Shared, flow: SessionKey, session: &Session) -> Option<Backend> {
    let ctx = SelectContext {
        client: Some(flow.client),
        destination: Some(flow.local),
        hash_key: None,
    };
    let current = session.backend.id();
    shared
        .pool
        .select(Instant::now().into_std(), &ctx, &mut |b| {
            b.id() != current && b.health() == Health::Up
        })
}

/// Whether a new session may open: not draining, and room in the table.
fn may_open(shared: &Shared) -> bool {
    !shared.draining.load(Ordering::Relaxed)
        && lock(&shared.sessions).len() < shared.config.max_sessions
}

/// With `per_packet`: one of `flow`'s sessions that is not refused (touched), with its key,
/// for when no new session may open. One lookup per backend of the pool (a flow has at
/// most one session per backend), not a scan of the table: with the table full, every
/// datagram of a flood of new flows comes here.
fn flow_session(shared: &Shared, flow: SessionKey) -> Option<(SessionKey, Arc<Session>)> {
    // The current snapshot: no pool lock and no copy of the backend set per datagram.
    let snapshot = shared.pool.snapshot();
    let sessions = lock(&shared.sessions);
    let of = |b: &Backend| {
        let key = SessionKey {
            backend: Some(b.id()),
            ..flow
        };
        sessions
            .get(&key)
            .filter(|s| !s.is_refused())
            .map(|s| (key, Arc::clone(s)))
    };
    // One to a backend that is up, else one to a down one rather than none.
    let found = snapshot
        .backends()
        .iter()
        .filter(|b| b.health() != Health::Down)
        .find_map(of)
        .or_else(|| snapshot.backends().iter().find_map(of))?;
    found.1.activity.touch();
    Some(found)
}

/// Sends `datagram` on the session's socket, counting the bytes; never waits. A datagram
/// the socket's send buffer has no room for (its backend's path is congested) is dropped
/// and counted in `send_drops`, as Envoy's UDP proxy drops it (`sess_tx_errors`) and a
/// full qdisc would: waiting would hold the listener, and with it every other client of
/// the virtual server, behind one slow backend.
///
/// # Errors
/// The send's: `ECONNREFUSED` when an ICMP port unreachable from the backend arrived since
/// the last send (the datagram was not sent).
async fn send_to_backend(shared: &Shared, session: &Session, datagram: &[u8]) -> io::Result<()> {
    session.activity.touch();
    // The syscall itself, not tokio's `try_send`: tokio learns a new socket's writability
    // only on the next reactor turn, and its `try_send` would drop the session's first
    // datagram. The socket is non-blocking.
    let sent = match socket2::SockRef::from(&session.socket).send(datagram) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            ProxyStats::inc(&shared.stats.send_drops);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    ProxyStats::add(&shared.stats.bytes_to_backend, sent as u64);
    session.backend.stats().add_bytes(sent as u64, 0);
    Ok(())
}

/// Picks a backend for a datagram of `flow` (a new session, or with `per_packet` every
/// datagram), preferring one other than `avoid` (a backend that just refused): the only
/// eligible backend is tried again rather than dropping the datagram, as it may be back.
/// `None` (counted in `failed`) without an eligible backend.
fn pick_backend(shared: &Shared, flow: SessionKey, avoid: Option<BackendId>) -> Option<Backend> {
    let ctx = SelectContext {
        client: Some(flow.client),
        destination: Some(flow.local),
        hash_key: None,
    };
    let now = Instant::now().into_std();
    if let Some(avoid) = avoid {
        if let Some(b) = shared.pool.select(now, &ctx, &mut |b| b.id() != avoid) {
            return Some(b);
        }
    }
    let picked = shared.pool.select(now, &ctx, &mut |_| true);
    if picked.is_none() {
        ProxyStats::inc(&shared.stats.failed);
    }
    picked
}

/// Opens a session for `key` on `backend` and spawns its reply task; the caller checked
/// [`may_open`] before picking `backend`. `None` (the datagram is dropped, counted) when no
/// session socket can be opened.
async fn open_session(
    shared: &Arc<Shared>,
    listener: &Arc<ListenSocket>,
    key: SessionKey,
    backend: Backend,
) -> Option<Arc<Session>> {
    let socket = match session_socket(backend.addr(), key.client, shared.config.usesrc).await {
        Ok(s) => s,
        Err(e) => {
            let n = shared.stats.local_errors.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at the 1st, 2nd, 4th, 8th… failure: out of descriptors, every new
            // client's datagram fails here (all are counted).
            if n.is_power_of_two() {
                tracing::warn!(error = %e, failures = n, "cannot open a UDP session socket");
            }
            ProxyStats::inc(&shared.stats.failed);
            return None;
        }
    };
    if let Err(e) = socket.connect(backend.addr()).await {
        ProxyStats::inc(&shared.stats.failed);
        shared
            .observer
            .observe(&backend, &Outcome::ConnectError(e.kind()));
        return None;
    }
    add_session(shared, listener, key, backend, socket, false)
}

/// Puts a session for `key` on `backend` over `socket` (connected to it) in the table and
/// spawns its reply task. `taken_over`: the session is one a replaced proxy handed over
/// ([`UdpProxyConfig::session_donor`]), which goes on and is not counted in `accepted`
/// again. `None` (the datagram is dropped, counted) when the table is full.
fn add_session(
    shared: &Arc<Shared>,
    listener: &Arc<ListenSocket>,
    key: SessionKey,
    backend: Backend,
    socket: UdpSocket,
    taken_over: bool,
) -> Option<Arc<Session>> {
    let session = Arc::new(Session::new(
        socket,
        backend,
        shared.config.busy_polling.as_ref(),
        taken_over,
    ));
    {
        // Checked again where it counts: listeners served in parallel may each have
        // passed `may_open` for the last place.
        let mut sessions = lock(&shared.sessions);
        if sessions.len() >= shared.config.max_sessions {
            drop(sessions);
            ProxyStats::inc(&shared.stats.sessions_refused);
            return None;
        }
        sessions.insert(key, Arc::clone(&session));
    }
    // Only for a session that exists (one refused for the table's size is no news of the
    // backend). Not the final result: the session's end reports that (`Closed`, unless the
    // backend refused: `ConnectRefused`).
    shared.observer.observe(
        &session.backend,
        &Outcome::Connected {
            latency: Duration::ZERO,
        },
    );
    if !taken_over {
        ProxyStats::inc(&shared.stats.accepted);
    }
    ProxyStats::inc(&shared.stats.active);
    tokio::spawn(reply_loop(
        Arc::clone(shared),
        Arc::clone(listener),
        key,
        Arc::clone(&session),
    ));
    Some(session)
}

/// A socket for a session of `client` with `backend`: bound to the wildcard address, or with
/// `usesrc` to the client's (transparently).
///
/// # Errors
/// Local errors: `socket(2)`, `setsockopt(2)`, `bind(2)`; with `usesrc`, a client of the
/// other family ([`io::ErrorKind::InvalidInput`]).
async fn session_socket(
    backend: SocketAddr,
    client: SocketAddr,
    usesrc: Option<UseSrc>,
) -> io::Result<UdpSocket> {
    let Some(usesrc) = usesrc else {
        let bind: SocketAddr = if backend.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        return UdpSocket::bind(bind).await;
    };
    let from = usesrc.bind_addr(client, backend)?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(backend),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    crate::sockopt::set_transparent(&socket2::SockRef::from(&socket), usesrc)?;
    socket.set_nonblocking(true)?;
    socket.bind(&from.into())?;
    UdpSocket::from_std(socket.into())
}

/// Forwards the backend's replies to the client until idle, ended, or closed.
///
/// An ICMP port unreachable from the backend (tokio's `recv` also wakes on the socket's
/// error readiness) marks the session refused; it stays in the table, carrying nothing, so
/// that the client's next datagram knows to go to another backend, and goes at that datagram
/// or at the idle timeout.
async fn reply_loop(
    shared: Arc<Shared>,
    listener: Arc<ListenSocket>,
    key: SessionKey,
    session: Arc<Session>,
) {
    let mut close = shared.close.subscribe();
    // One byte more than the largest forwarded (see `listen_loop`).
    let mut buf = vec![0u8; shared.config.max_datagram + 1];
    let idle = Some(shared.config.idle_timeout);
    loop {
        tokio::select! {
            r = session.socket.recv(&mut buf), if !session.is_refused() => match r {
                Ok(n) if n > shared.config.max_datagram => {
                    session.activity.touch();
                    ProxyStats::inc(&shared.stats.datagrams_too_long);
                }
                Ok(n) => {
                    session.activity.touch();
                    match listener.send(&buf[..n], key.client, key.local).await {
                        Ok(sent) => {
                            ProxyStats::add(&shared.stats.bytes_to_client, sent as u64);
                            session.backend.stats().add_bytes(0, sent as u64);
                        }
                        Err(e) => tracing::debug!(client = %key.client, error = %e, "send to client"),
                    }
                }
                Err(e) if is_refusal(&e) => {
                    session.mark_refused(&shared);
                }
                Err(e) => {
                    tracing::debug!(client = %key.client, error = %e, "backend session ended");
                    break;
                }
            },
            () = session.activity.idle(idle, || false) => {
                // Expired under the table lock, so that a datagram that took the session
                // meanwhile (and touched it) keeps it alive.
                let mut sessions = lock(&shared.sessions);
                if session.activity.last() + shared.config.idle_timeout > Instant::now() {
                    continue;
                }
                if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                    sessions.remove(&key);
                }
                drop(sessions);
                ProxyStats::inc(&shared.stats.idle_timeouts);
                break;
            }
            () = session.ended.notified() => break,
            () = closed(&mut close) => break,
        }
    }
    remove_session(&shared, key, &session);
    ProxyStats::dec(&shared.stats.active);
    if !session.is_refused() {
        // The session ended without the backend refusing: its final result, a success.
        shared.observer.observe(
            &session.backend,
            &Outcome::Closed {
                stats: crate::tcp::ForwardStats::default(),
                backend_error: false,
            },
        );
    }
}

async fn closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use lb_core::{Algorithm, BackendSet, PoolConfig};
    use tokio::io::Interest;

    use super::*;

    #[derive(Debug, Default)]
    struct CountRefusals(AtomicUsize);

    impl OutcomeObserver for CountRefusals {
        fn observe(&self, _backend: &Backend, outcome: &Outcome) {
            if *outcome == Outcome::ConnectRefused {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Echoes every datagram back to its sender until dropped.
    async fn echo() -> (SocketAddr, JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        (addr, task)
    }

    /// `usesrc`: sessions of one client IP (`clientip`) each get a port of their own — with
    /// SO_REUSEADDR the kernel handed out ports other sessions held, and two sessions to one
    /// backend then shared an address pair — and `client` binds the client's port. The
    /// sockets are only bound (IP_TRANSPARENT: the tests run as root), nothing is sent.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn usesrc_sessions_of_one_client_ip_get_distinct_ports() {
        let backend: SocketAddr = "198.18.0.21:53".parse().unwrap();
        let mut ports = std::collections::HashSet::new();
        let mut held = Vec::new();
        for i in 0..1000u16 {
            let client = SocketAddr::from(([198, 18, 0, 2], 40_000 + i));
            let s = session_socket(backend, client, Some(UseSrc::ClientIp))
                .await
                .unwrap();
            let local = s.local_addr().unwrap();
            assert_eq!(local.ip(), client.ip());
            assert!(
                ports.insert(local.port()),
                "port {} given twice",
                local.port()
            );
            held.push(s);
        }
        // (Closed first: one of them may hold the port `client` binds below.)
        drop(held);
        let client = SocketAddr::from(([198, 18, 0, 2], 41_234));
        let s = session_socket(backend, client, Some(UseSrc::Client))
            .await
            .unwrap();
        assert_eq!(s.local_addr().unwrap(), client);
        // A second session of that client (to another backend, with `ops`) binds it too.
        let other: SocketAddr = "198.18.0.22:53".parse().unwrap();
        let again = session_socket(other, client, Some(UseSrc::Client))
            .await
            .unwrap();
        assert_eq!(again.local_addr().unwrap(), client);
    }

    /// The ICMP port unreachable from a dead backend is noticed by the next send
    /// (`ECONNREFUSED`: no reply task consumed it first). The refusal is reported, the session
    /// ends, and the refused datagram reaches the live backend over a new session.
    #[tokio::test]
    async fn refused_send_ends_the_session_and_redispatches_the_datagram() {
        let dead = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (live, echo_task) = echo().await;
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), dead),
            Backend::new(BackendId(2), live),
        ])
        .unwrap();
        let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
        let observer = Arc::new(CountRefusals::default());
        let config = UdpProxyConfig::new(Vec::new());
        let shared = Arc::new(Shared::new(config, Arc::clone(&pool), observer.clone()));
        let listener =
            Arc::new(ListenSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let key = SessionKey {
            local: listener.bound(),
            client: client.local_addr().unwrap(),
            backend: None,
        };

        // A session on the dead backend, without a reply task to notice the ICMP error.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(dead).await.unwrap();
        let backend = pool.backends().get(BackendId(1)).unwrap().clone();
        let stale = Arc::new(Session::new(socket, backend, None, false));
        lock(&shared.sessions).insert(key, Arc::clone(&stale));
        stale.socket.send(b"lost").await.unwrap();
        // The ICMP error has arrived (error readiness; the pending error stays for the send).
        tokio::time::timeout(Duration::from_secs(5), stale.socket.ready(Interest::ERROR))
            .await
            .expect("no ICMP port unreachable from the dead backend")
            .unwrap();

        forward_datagram(&shared, &listener, key, b"again").await;
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("the refused datagram was lost")
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"again"[..], key.local));
        assert_eq!(observer.0.load(Ordering::Relaxed), 1);
        assert!(stale.is_refused());
        assert_eq!(stale.backend.stats().failures(), 1);
        let st = shared.stats.snapshot();
        assert_eq!((st.connect_failures, st.retries, st.accepted), (1, 1, 1));
        let now = lock(&shared.sessions).get(&key).cloned().unwrap();
        assert_eq!(now.backend.id(), BackendId(2), "the client's session moved");
        shared.close_all();
        echo_task.abort();
    }
}
