//! UDP forwarding (LVS NAT for UDP, keepalived `virtual_server … { protocol UDP }`):
//! per-client sessions.
//!
//! The first datagram from a client address picks a backend and opens a session: a UDP
//! socket connected to that backend. Later datagrams from the client go through it; the
//! backend's replies come back on it and are sent to that client from the listening socket
//! (so the client sees the VIP as the source). A session ends after `idle_timeout` without
//! traffic, or when the backend answers with ICMP port unreachable (reported as
//! [`Outcome::ConnectRefused`]); the table holds at
//! most `max_sessions` (each costs a descriptor); beyond it new clients' datagrams are
//! dropped and counted.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lb_core::{Backend, ConnectionGuard, Pool, SelectContext};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::listener::{bind_udp, ListenOptions};
use crate::outcome::{NoopObserver, Outcome, OutcomeObserver};
use crate::stats::{ProxyStats, StatsSnapshot};
use crate::tcp::Activity;

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
    /// The largest datagram forwarded, in bytes; longer ones are truncated by the kernel.
    /// Default 65 535.
    pub max_datagram: usize,
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
        }
    }
}

type Sessions = Mutex<HashMap<SocketAddr, Arc<Session>>>;

#[derive(Debug)]
struct Session {
    socket: UdpSocket,
    backend: Backend,
    activity: Activity,
    _guard: ConnectionGuard,
}

#[derive(Debug)]
struct Shared {
    config: UdpProxyConfig,
    pool: Arc<Pool>,
    observer: Arc<dyn OutcomeObserver>,
    stats: ProxyStats,
    sessions: Sessions,
    /// Set by [`UdpHandle::drain`]: no new sessions.
    draining: std::sync::atomic::AtomicBool,
    /// Set by [`UdpHandle::stop_receiving`]: the listening sockets are no longer read.
    stop_receiving: watch::Sender<bool>,
    close: watch::Sender<bool>,
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
    /// [`Error::Io`] when a socket has no local address.
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
        let sockets: Vec<Arc<UdpSocket>> = sockets.into_iter().map(Arc::new).collect();
        let local_addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            config,
            pool,
            observer,
            stats: ProxyStats::default(),
            sessions: Mutex::new(HashMap::new()),
            draining: false.into(),
            stop_receiving: watch::Sender::new(false),
            close: watch::Sender::new(false),
        });
        let tasks = sockets
            .into_iter()
            .map(|s| tokio::spawn(listen_loop(Arc::clone(&shared), s)))
            .collect();
        Ok(UdpHandle {
            shared,
            local_addrs,
            tasks,
        })
    }
}

fn validate(config: &UdpProxyConfig) -> Result<()> {
    if config.max_sessions == 0 || config.max_datagram == 0 {
        return Err(Error::Config {
            setting: "udp virtual_server",
            reason: "needs max_sessions > 0 and max_datagram > 0".into(),
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

    /// The counters (`accepted` counts sessions opened, `active` open sessions).
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// Graceful drain: datagrams from new clients are dropped (counted in
    /// `sessions_refused`) while existing sessions continue until they go idle; after
    /// `deadline` everything stops. Returns how many sessions were still open then.
    ///
    /// # Cancel safety
    /// Cancel safe: cancelling leaves the proxy draining.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let end = Instant::now() + deadline;
        while self.sessions() > 0 && Instant::now() < end {
            tokio::time::sleep_until(end.min(Instant::now() + Duration::from_millis(50))).await;
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

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Session>>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn listen_loop(shared: Arc<Shared>, listener: Arc<UdpSocket>) {
    let mut buf = vec![0u8; shared.config.max_datagram];
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let mut stop = shared.stop_receiving.subscribe();
    loop {
        // `recv_from` is cancel safe: a datagram is either read here or left in the socket.
        let received = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            r = listener.recv_from(&mut buf) => r,
        };
        let (n, client) = match received {
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
        let existing = lock(&shared.sessions).get(&client).cloned();
        let session = match existing {
            Some(s) => s,
            None => match open_session(&shared, &listener, client, local).await {
                Some(s) => s,
                None => continue,
            },
        };
        session.activity.touch();
        // A UDP send waits only while the socket buffer is full (tokio learns a new
        // socket's writability on the next reactor turn, so `try_send` would drop).
        match session.socket.send(&buf[..n]).await {
            Ok(sent) => {
                ProxyStats::add(&shared.stats.bytes_to_backend, sent as u64);
                session.backend.stats().add_bytes(sent as u64, 0);
            }
            Err(e) => {
                tracing::debug!(%client, error = %e, "send to backend");
            }
        }
    }
}

async fn open_session(
    shared: &Arc<Shared>,
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    local: SocketAddr,
) -> Option<Arc<Session>> {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed)
        || lock(&shared.sessions).len() >= shared.config.max_sessions
    {
        ProxyStats::inc(&shared.stats.sessions_refused);
        return None;
    }
    let ctx = SelectContext {
        client: Some(client),
        destination: Some(local),
        hash_key: None,
    };
    let now = Instant::now().into_std();
    let Some(backend) = shared.pool.select(now, &ctx, &mut |_| true) else {
        ProxyStats::inc(&shared.stats.failed);
        return None;
    };
    let bind: SocketAddr = if backend.addr().is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a UDP session socket");
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
    shared.observer.observe(
        &backend,
        &Outcome::Success {
            latency: Duration::ZERO,
        },
    );
    let session = Arc::new(Session {
        socket,
        _guard: backend.stats().connection(),
        backend,
        activity: Activity::new(),
    });
    lock(&shared.sessions).insert(client, Arc::clone(&session));
    ProxyStats::inc(&shared.stats.accepted);
    ProxyStats::inc(&shared.stats.active);
    tokio::spawn(reply_loop(
        Arc::clone(shared),
        Arc::clone(listener),
        client,
        Arc::clone(&session),
    ));
    Some(session)
}

/// Forwards the backend's replies to `client` until idle, refused, or closed.
async fn reply_loop(
    shared: Arc<Shared>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    session: Arc<Session>,
) {
    let mut close = shared.close.subscribe();
    let mut buf = vec![0u8; shared.config.max_datagram];
    let idle = Some(shared.config.idle_timeout);
    loop {
        tokio::select! {
            r = session.socket.recv(&mut buf) => match r {
                Ok(n) => {
                    session.activity.touch();
                    match listener.send_to(&buf[..n], client).await {
                        Ok(sent) => {
                            ProxyStats::add(&shared.stats.bytes_to_client, sent as u64);
                            session.backend.stats().add_bytes(0, sent as u64);
                        }
                        Err(e) => tracing::debug!(%client, error = %e, "send to client"),
                    }
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        session.backend.stats().record_failure();
                        shared.observer.observe(&session.backend, &Outcome::ConnectRefused);
                    }
                    tracing::debug!(%client, error = %e, "backend session ended");
                    break;
                }
            },
            () = session.activity.idle(idle) => {
                ProxyStats::inc(&shared.stats.idle_timeouts);
                break;
            }
            () = closed(&mut close) => break,
        }
    }
    let mut sessions = lock(&shared.sessions);
    if sessions
        .get(&client)
        .is_some_and(|s| Arc::ptr_eq(s, &session))
    {
        sessions.remove(&client);
    }
    drop(sessions);
    ProxyStats::dec(&shared.stats.active);
}

async fn closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}
