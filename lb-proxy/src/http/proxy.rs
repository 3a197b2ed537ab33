//! The driver: accept loop, one hyper server connection per client, and per-request
//! forwarding with retries, error responses, counters and upgrades.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lb_core::{Backend, Pool, SelectContext};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::access_log::{AccessEntry, RequestLine, Termination, Timings};
use super::backend_tls::BackendTls;
use super::batch::{Batched, WriteBatch};
use super::body::{
    ActiveRequest, Activity, ClientBody, ClientTimer, Prefetched, Release, ResponseBody, SendWatch,
    StallGuard, StallReport, Timer, UploadError,
};
use super::client::{backend_tunnel_io, BackendBody, CheckoutError, ConnPool};
use super::config::{HashKeySource, HttpProxyConfig};
use super::error::{Error, ForwardError, Result};
use super::forwarded::{is_upgrade_request, strip_hop_by_hop, ClientIdentity};
use super::io::{tunnel_io, Prefixed, Rewind, TunnelIo};
use super::route::{hash_key, request_host, Router};
use super::stats::{inc, BackendCounterMap, HttpStatsSnapshot, VsCounters};
use crate::busy_poll::{BusyGuard, BusyPolling};
use crate::outcome::{NoopObserver, Outcome, OutcomeObserver};
use crate::proxy_protocol::{read_header, ProxyHeader};
use crate::tcp::ForwardStats;

/// A named backend pool an HTTP virtual server routes to, with the observer its passive
/// health listens on.
#[derive(Debug, Clone)]
pub struct HttpPool {
    /// The name routes refer to ([`Route::pool`](super::Route::pool),
    /// [`HttpProxyConfig::default_pool`]).
    pub name: String,
    /// The backends, shared with health checking: a backend marked down there is not picked
    /// here from the next request on.
    pub pool: Arc<Pool>,
    /// Told the outcome of every request sent to a backend of this pool.
    pub observer: Arc<dyn OutcomeObserver>,
    /// Speak TLS to its backends (HAProxy `server … ssl`). `None` (default): plain HTTP.
    pub tls: Option<BackendTls>,
    /// Speak HTTP/2 to its backends (HAProxy `server … proto h2`, Envoy's cluster
    /// `http2_protocol_options`, nginx `grpc_pass`): with prior knowledge over plain TCP
    /// (h2c), with ALPN `h2` alone over [`HttpPool::tls`]. A backend's requests share its
    /// connections as streams whatever the clients' protocol (one connection, more when the
    /// backend's stream limit is reached);
    /// request trailers and response trailers pass (gRPC, with `te: trailers` kept when the
    /// client sent it). A protocol upgrade (WebSocket) to such a pool gets 501
    /// ([`ForwardError::UpgradeNotSupported`](super::ForwardError::UpgradeNotSupported)).
    /// Default false: HTTP/1.1, a pool of kept-alive connections per backend.
    pub http2: bool,
}

impl HttpPool {
    /// A pool with a [`NoopObserver`].
    pub fn new(name: impl Into<String>, pool: Arc<Pool>) -> Self {
        Self {
            name: name.into(),
            pool,
            observer: Arc::new(NoopObserver),
            tls: None,
            http2: false,
        }
    }

    /// Speaks HTTP/2 to the backends ([`HttpPool::http2`]).
    #[must_use]
    pub fn with_http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Speaks TLS to the backends ([`HttpPool::tls`]).
    #[must_use]
    pub fn with_tls(mut self, tls: BackendTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the observer.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn OutcomeObserver>) -> Self {
        self.observer = observer;
        self
    }
}

/// State shared by every connection of one virtual server.
#[derive(Debug)]
struct Shared {
    config: HttpProxyConfig,
    pools: Vec<HttpPool>,
    router: Router,
    conns: Arc<ConnPool>,
    server: http1::Builder,
    /// The TLS side of an HTTPS listener: [`HttpProxyConfig::tls`]'s configuration, with
    /// ALPN `h2` offered first when HTTP/2 is on.
    tls_server: Option<Arc<rustls::ServerConfig>>,
    vs: VsCounters,
    backends: BackendCounterMap,
    /// Fires when the proxy stops for good: upgraded tunnels close.
    kill: watch::Receiver<bool>,
    /// Counts the requests that lack the configured hash key: each is placed by this count
    /// instead, so that they spread over the backends as HAProxy's fallback to round robin
    /// spreads them.
    keyless: std::sync::atomic::AtomicU64,
    /// When a failed TLS handshake with a backend of each pool (by index) was last logged
    /// at WARN ([`warn_tls`]).
    tls_warned: Vec<Mutex<Option<tokio::time::Instant>>>,
    /// Frontend `maxconn`: one permit per open client connection (or its tunnel).
    slots: Arc<tokio::sync::Semaphore>,
    /// Where plain client connections' small writes are queued, to go out together at the
    /// end of the event loop's turn ([`super::batch`]; on a current-thread runtime only).
    batch: Option<Arc<WriteBatch>>,
}

/// One client connection's addresses.
#[derive(Debug)]
struct ClientConn {
    /// The client (from the socket, or from its PROXY header).
    client: SocketAddr,
    /// The address the client connected to.
    local: SocketAddr,
    /// The forwarded headers for its requests, computed once (per connection: shared by an
    /// HTTP/2 connection's streams).
    identity: Arc<ClientIdentity>,
    activity: Arc<Activity>,
    /// The backend-response timer of its requests (one at a time on an HTTP/1.1
    /// connection): one timer re-armed per request, which costs tokio's timer wheel
    /// nothing while the deadline only moves later.
    response_timer: Mutex<Timer>,
    /// Its frontend `maxconn` slot, released when the connection ends, or taken by the
    /// WebSocket tunnel it becomes.
    slot: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl ClientConn {
    /// Its `maxconn` slot, for the tunnel that outlives the connection's task.
    fn take_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn arm_response_timer(&self, deadline: tokio::time::Instant) {
        self.response_timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .arm(deadline);
    }

    /// Ready once the deadline of [`ClientConn::arm_response_timer`] has passed.
    fn poll_response_timer(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.response_timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_expired(cx)
    }
}

/// A running HTTP virtual server. Dropping it stops everything at once (as
/// [`HttpProxy::abort`]); [`HttpProxy::shutdown`] stops gracefully.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
/// use lb_proxy::http::{HttpPool, HttpProxy, HttpProxyConfig};
///
/// let set = BackendSet::new(vec![Backend::new(BackendId(1), "127.0.0.1:8081".parse()?)])?;
/// let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default())?);
/// let mut config = HttpProxyConfig::new("web");
/// config.default_pool = Some("www".into());
/// let proxy = HttpProxy::bind("127.0.0.1:8080".parse()?, config, vec![HttpPool::new("www", pool)]).await?;
/// println!("{:?}", proxy.stats().virtual_server);
/// proxy.shutdown(Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HttpProxy {
    local_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    accept: Vec<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
}

impl HttpProxy {
    /// Binds `addr` (with `SO_REUSEADDR`, as tokio does) and starts serving. See
    /// [`HttpProxy::start`] for the arguments.
    ///
    /// # Errors
    /// [`Error::Bind`], and the errors of [`HttpProxy::start`].
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is started before the listener is bound.
    pub async fn bind(
        addr: SocketAddr,
        config: HttpProxyConfig,
        pools: Vec<HttpPool>,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Self::start(listener, config, pools)
    }

    /// Starts serving on an already bound listener (the daemon binds it with
    /// [`crate::listener::bind_tcp`] for `SO_REUSEPORT` and `IP_FREEBIND` on a VIP not yet
    /// present).
    ///
    /// `pools` are the backend pools routes refer to, by name. They are shared: health
    /// checking changes them through [`Pool::set_health`] and this proxy sees the change on
    /// its next pick; each pool's observer hears the outcome of every request sent to one
    /// of its backends.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (see [`HttpProxyConfig::validate`]),
    /// [`Error::UnknownPool`], [`Error::DuplicatePool`], [`Error::LocalAddr`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        listener: TcpListener,
        config: HttpProxyConfig,
        pools: Vec<HttpPool>,
    ) -> Result<Self> {
        Self::start_many(vec![listener], config, pools)
    }

    /// Like [`HttpProxy::start`] on several listeners at once: the addresses of one virtual
    /// server (an IPv4 and an IPv6 VIP), or `SO_REUSEPORT` acceptors from
    /// [`crate::listener::bind_tcp_acceptors`]. They share pools, connections to backends
    /// and counters.
    ///
    /// # Errors
    /// As [`HttpProxy::start`]; [`Error::InvalidConfig`] also for an empty list.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start_many(
        listeners: Vec<TcpListener>,
        config: HttpProxyConfig,
        pools: Vec<HttpPool>,
    ) -> Result<Self> {
        config.validate()?;
        if listeners.is_empty() {
            return Err(Error::InvalidConfig {
                setting: "listeners",
                reason: "at least one listener is needed".into(),
            });
        }
        for (i, p) in pools.iter().enumerate() {
            if pools[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::DuplicatePool(p.name.clone()));
            }
        }
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        let router = Router::new(&config.routes, config.default_pool.as_deref(), &names)?;
        let local_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Error::LocalAddr)?;

        let mut server = http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .keep_alive(true)
            // A client that closes (or half-closes) while its request is with the backend
            // abandons it: the backend request is dropped at once, freeing its connection
            // and its in-flight count (nginx's default, HAProxy's `option abortonclose`).
            // hyper's `half_close` would answer a half-closed client (`nc -N`), but then
            // stops reading mid-request and sees no close or reset at all.
            .half_close(false)
            // The request-head timer is ours (`serve_client_inner`): hyper's would cost a
            // timer per request and also run while a keep-alive connection is idle.
            .header_read_timeout(None)
            .max_header_size(config.limits.max_header_bytes);
        // hyper keeps 100 headers on the stack and moves them to the heap (about 5 % slower)
        // once a limit is set: set it only when it is not the default.
        if config.limits.max_headers != super::client::HYPER_MAX_HEADERS {
            server.max_headers(config.limits.max_headers);
        }
        let tls_server = config.tls.as_ref().map(|t| {
            let mut server_config = Arc::clone(t.server_config());
            if config.http2 {
                let mut c = (*server_config).clone();
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                server_config = Arc::new(c);
            }
            server_config
        });
        let batch = WriteBatch::for_current_runtime();
        let conns = Arc::new(ConnPool::new(
            config.limits.max_idle_per_backend,
            config.timeouts.backend_idle,
            config.timeouts.backend_connect,
            config.limits.max_headers,
            batch.clone(),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let (kill, kill_rx) = watch::channel(false);
        let tls_warned = pools.iter().map(|_| Mutex::new(None)).collect();
        let shared = Arc::new(Shared {
            pools,
            router,
            conns: Arc::clone(&conns),
            server,
            tls_server,
            vs: VsCounters::default(),
            backends: BackendCounterMap::default(),
            kill: kill_rx.clone(),
            keyless: std::sync::atomic::AtomicU64::new(0),
            tls_warned,
            slots: Arc::new(tokio::sync::Semaphore::new(config.maxconn)),
            batch,
            config,
        });
        let accept = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(Arc::clone(&shared), l, stop_rx.clone())))
            .collect();
        let period = shared.config.timeouts.backend_idle / 2;
        let mut reaper_kill = kill_rx;
        let reaper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    _ = tick.tick() => conns.purge(),
                    _ = reaper_kill.changed() => return,
                }
            }
        });
        tracing::info!(name = %shared.config.name, addrs = ?local_addrs, "HTTP virtual server listening");
        Ok(Self {
            local_addrs,
            shared,
            stop,
            kill,
            accept,
            reaper: Some(reaper),
        })
    }

    /// The address it listens on (the first, with several listeners).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every address it listens on, in the order the listeners were given.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The pools it routes to, as handed to [`HttpProxy::start`].
    pub fn pools(&self) -> &[HttpPool] {
        &self.shared.pools
    }

    /// The counters of the virtual server and of every backend of every pool.
    pub fn stats(&self) -> HttpStatsSnapshot {
        let mut backends = Vec::new();
        for (i, p) in self.shared.pools.iter().enumerate() {
            for b in p.pool.backends().iter() {
                backends.push(self.shared.backends.snapshot(i, &p.name, b));
            }
        }
        HttpStatsSnapshot {
            name: self.shared.config.name.clone(),
            virtual_server: self.shared.vs.snapshot(),
            backends,
        }
    }

    /// Adds the counters of `old`, the proxy this one replaces (a reload restarting its
    /// virtual server), so that they go on instead of restarting from zero: the virtual
    /// server's totals (not its open connections) and, by pool name and backend address,
    /// each backend's requests, response classes, connect failures and timeouts. Call it
    /// once `old` has stopped accepting; what it counts after that stays its own.
    pub fn carry_counters_from(&self, old: &Self) {
        self.shared.vs.add_from(&old.shared.vs);
        for (i, p) in self.shared.pools.iter().enumerate() {
            let Some((j, q)) = old
                .shared
                .pools
                .iter()
                .enumerate()
                .find(|(_, q)| q.name == p.name)
            else {
                continue;
            };
            let theirs = q.pool.backends();
            for b in p.pool.backends().iter() {
                if let Some(o) = theirs.iter().find(|o| o.addr() == b.addr()) {
                    self.shared
                        .backends
                        .get(i, b.id())
                        .add_from(&old.shared.backends.get(j, o.id()));
                }
            }
        }
    }

    /// Stops accepting now: the listeners close (once no duplicate of their sockets is
    /// open elsewhere), and open client connections finish the request they are serving
    /// (keep-alive connections close after it). [`HttpProxy::shutdown`] then waits for them.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops accepting, lets open client connections finish the request they are serving
    /// (keep-alive connections close after it), and waits up to `grace` for them; then
    /// closes whatever is left, upgraded tunnels included.
    ///
    /// # Cancel safety
    /// Not cancel safe in the sense that dropping the future part-way leaves the rest of the
    /// work to `Drop`, which closes everything at once.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut accept = std::mem::take(&mut self.accept);
        // Each accept loop ends once its connections have; past `grace`, the rest are
        // aborted (which aborts their connections).
        let _ = tokio::time::timeout(grace, futures::future::join_all(accept.iter_mut())).await;
        for a in &accept {
            a.abort();
        }
        self.abort();
    }

    /// Stops everything at once: the listener, every client connection and tunnel.
    pub fn abort(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.kill.send(true);
        for a in self.accept.drain(..) {
            a.abort();
        }
        if let Some(r) = self.reaper.take() {
            r.abort();
        }
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.abort();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux): no `setsockopt` per
    // connection.
    let nodelay_inherited =
        cfg!(target_os = "linux") && socket2::SockRef::from(&listener).set_nodelay(true).is_ok();
    // A listener on one address gives every connection that address: no `getsockname` per
    // connection (a wildcard listener asks each connection which one it reached).
    let fixed_local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    let mut tasks = JoinSet::new();
    loop {
        // At `maxconn`, nothing is accepted until a slot frees (HAProxy pauses its
        // listeners): clients wait in the kernel's accept queue, where a reload's successor
        // takes them over. Looked at once per accept, not kept (see the TCP proxy's).
        if shared.slots.available_permits() == 0 {
            tokio::select! {
                p = shared.slots.acquire() => drop(p),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                _ = stop.changed() => break,
            }
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    if !nodelay_inherited {
                        let _ = stream.set_nodelay(true);
                    }
                    // Another listener may have taken the slot since: this client waits.
                    let slot = tokio::select! {
                        biased;
                        p = Arc::clone(&shared.slots).acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        _ = stop.changed() => break,
                    };
                    let local = fixed_local.or_else(|| stream.local_addr().ok());
                    if let Some(local) = local {
                        tasks.spawn(serve_client(Arc::clone(&shared), stream, peer, local, slot, stop.clone()));
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// One connection (or tunnel) in `active_connections`, from [`Uncount::count`] until dropped,
/// also when its task is cancelled (shutdown, abort). It holds busy polling, when that is on,
/// as long.
struct Uncount<'a> {
    shared: &'a Shared,
    _busy: Option<BusyGuard>,
}

impl<'a> Uncount<'a> {
    fn count(shared: &'a Shared) -> Self {
        Self::counted(shared, Self::enter(shared))
    }

    /// Counts one in and holds busy polling: the half of [`Uncount::count`] that a tunnel
    /// does before its task is spawned.
    fn enter(shared: &Shared) -> Option<BusyGuard> {
        shared.vs.active_connections.fetch_add(1, Ordering::Relaxed);
        shared.config.busy_polling.as_ref().map(BusyPolling::hold)
    }

    /// The other half: what [`Uncount::enter`] counted, uncounted when dropped.
    fn counted(shared: &'a Shared, busy: Option<BusyGuard>) -> Self {
        Self {
            shared,
            _busy: busy,
        }
    }
}

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.shared
            .vs
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_client(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    inc(&shared.vs.connections);
    let _active = Uncount::count(&shared);
    serve_client_inner(&shared, stream, (peer, local), slot, &mut stop).await;
}

async fn serve_client_inner(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    (mut peer, mut local): (SocketAddr, SocketAddr),
    slot: tokio::sync::OwnedSemaphorePermit,
    stop: &mut watch::Receiver<bool>,
) {
    let mut early = Vec::new();
    // The PROXY header and the TLS handshake are not cut short by a stop (a reload's
    // `stop_accepting`, a graceful shutdown): a connection accepted before it gets its
    // first request served, as a plain one does (`serve_http` sees the stop, still
    // pending, and closes after that request). Their own timeouts bound them; `abort`
    // ends them.
    if let Some(ap) = shared.config.accept_proxy {
        let header = read_header(&mut stream, ap.header_timeout).await;
        match header {
            Ok((
                ProxyHeader::Proxy {
                    source,
                    destination,
                    ..
                },
                rest,
            )) => {
                (peer, local, early) = (source, destination, rest);
            }
            // LOCAL (health checks from the sender itself): keep the socket's addresses.
            Ok((_, rest)) => early = rest,
            Err(e) => {
                inc(&shared.vs.proxy_header_errors);
                tracing::debug!(client = %peer, error = %e, "closing: PROXY header");
                return;
            }
        }
    }
    // The first request head's `header_read` runs from here (after the PROXY header, which
    // has its own timeout): over HTTPS, the handshake and that head share it, as HAProxy's
    // `timeout http-request` covers the handshake.
    let opened = tokio::time::Instant::now();
    let Some(tls_server) = &shared.tls_server else {
        let batched = |stream| Batched::new(stream, shared.batch.as_ref());
        if shared.config.http2 {
            // h2c with prior knowledge: the connection opens with the HTTP/2 preface.
            match read_preface(
                &mut stream,
                &mut early,
                opened + shared.config.timeouts.header_read,
            )
            .await
            {
                Preface::Http2 => {
                    return serve_h2(
                        shared,
                        batched(stream),
                        early,
                        false,
                        (peer, local),
                        (opened, slot),
                        stop,
                    )
                    .await;
                }
                Preface::Other => {}
                Preface::Gone => return,
                Preface::TimedOut => {
                    // As the HTTP/1.1 server's request-head timer (answered 408 there
                    // when part of a head came; nothing here: which protocol is unknown).
                    inc(&shared.vs.header_timeouts);
                    tracing::debug!(client = %peer, "closing: no request in time");
                    return;
                }
            }
        }
        return serve_http(
            shared,
            batched(stream),
            early,
            false,
            (peer, local),
            (opened, slot),
            stop,
        )
        .await;
    };
    // HTTPS: the handshake (its ClientHello may have come with the PROXY header) within
    // the header-read timeout.
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls_server));
    let done = tokio::time::timeout(
        shared.config.timeouts.header_read,
        acceptor.accept(Rewind::new(early, stream)),
    )
    .await;
    match done {
        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
            serve_h2(
                shared,
                stream,
                Vec::new(),
                true,
                (peer, local),
                (opened, slot),
                stop,
            )
            .await;
        }
        Ok(Ok(stream)) => {
            serve_http(
                shared,
                stream,
                Vec::new(),
                true,
                (peer, local),
                (opened, slot),
                stop,
            )
            .await;
        }
        Ok(Err(e)) => {
            inc(&shared.vs.tls_handshake_errors);
            tracing::debug!(client = %peer, error = %e, "closing: TLS handshake failed");
        }
        Err(_) => {
            inc(&shared.vs.tls_handshake_errors);
            tracing::debug!(client = %peer, "closing: TLS handshake not done in time");
        }
    }
}

/// Serves HTTP/1.1 on a client connection `stream` (plain, or TLS when `tls`) from `peer`
/// to `local`, whose first bytes, already read, are `early`; its first request head is due
/// `header_read` after `opened`; it holds its `maxconn` `slot` until it ends.
async fn serve_http<S>(
    shared: &Arc<Shared>,
    stream: S,
    early: Vec<u8>,
    tls: bool,
    (peer, local): (SocketAddr, SocketAddr),
    (opened, slot): (tokio::time::Instant, tokio::sync::OwnedSemaphorePermit),
    stop: &mut watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::opened_at(opened));
    let cc = Arc::new(ClientConn {
        client: peer,
        local,
        identity: Arc::new(client_identity(shared, peer, local, tls)),
        activity: Arc::clone(&activity),
        response_timer: Mutex::new(Timer::default()),
        slot: Mutex::new(Some(slot)),
    });
    let svc_shared = Arc::clone(shared);
    let svc = service_fn(move |req| handle(Arc::clone(&svc_shared), Arc::clone(&cc), req));
    let io = Prefixed::new(
        early,
        stream,
        Arc::clone(&activity),
        shared.config.timeouts.client,
    );
    let conn = shared
        .server
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let idle = shared.config.timeouts.client_idle;
    let header_read = shared.config.timeouts.header_read;
    let client_timeout = shared.config.timeouts.client;
    // One timer for the request-head and keep-alive deadlines, re-armed only when it fires,
    // at least every `period` (requests move the deadlines without touching it).
    let period = header_read.min(idle);
    let mut next_check = (tokio::time::Instant::now() + period).min(opened + header_read);
    let mut closing = false;
    // Stop requested while the first request had not started; the request-head timer
    // above still bounds the wait for it.
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = tokio::time::sleep_until(next_check), if !closing => {
                let now = tokio::time::Instant::now();
                match activity.timer(header_read, idle) {
                    ClientTimer::Head(_) if activity.head_timed_out() => {
                        // The 408 was asked for a second ago and hyper did not read again.
                        return;
                    }
                    ClientTimer::Head(deadline) if deadline <= now => {
                        inc(&shared.vs.header_timeouts);
                        if activity.head_received() {
                            // Slowloris: part of a head came, and no more in time. As
                            // HAProxy's `timeout http-request`, answered 408: hyper's next
                            // read sends it (it holds the socket) and ends the connection.
                            tracing::debug!(client = %peer, "408: request head not complete in time");
                            activity.time_out_head();
                            shared.vs.responses.count(StatusCode::REQUEST_TIMEOUT);
                            log_bad_request(
                                shared,
                                peer,
                                &activity,
                                Some(StatusCode::REQUEST_TIMEOUT),
                                Termination::new('c', 'R'),
                            );
                            next_check = now + Duration::from_secs(1);
                            continue;
                        }
                        // Nothing of a request came: closed without an answer (HAProxy's
                        // `option http-ignore-probes`; a browser's pre-connection would
                        // show an unasked-for 408).
                        tracing::debug!(client = %peer, "closing: no request in time");
                        return;
                    }
                    ClientTimer::Idle(deadline) if deadline <= now => {
                        inc(&shared.vs.idle_timeouts);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    ClientTimer::Upload(since) if since + client_timeout <= now => {
                        // An early response's request body that stopped coming, or that
                        // the backend stopped taking: nothing else would end it.
                        inc(&shared.vs.client_timeouts);
                        tracing::debug!(client = %peer, "closing: request body stalled after its response");
                        return;
                    }
                    ClientTimer::Upload(since) => {
                        next_check = (since + client_timeout).min(now + period);
                    }
                    // A request head may start, or a request end, at any moment: the next
                    // deadline is then at most `period` away, so the timer never sleeps
                    // longer than that.
                    ClientTimer::Head(deadline) | ClientTimer::Idle(deadline) => {
                        next_check = deadline.min(now + period);
                    }
                    ClientTimer::Busy => next_check = now + period,
                }
            }
            _ = stop.changed(), if !closing && !stopping => {
                stopping = true;
                // A connection accepted just before the stop has not sent its request yet:
                // serve that first request (within the request-head timeout) rather than
                // close it unanswered. hyper's graceful shutdown would close it at once.
                if activity.served() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = activity.first_request(), if stopping && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    };
    if let Err(e) = result {
        if activity.write_stalled() {
            // The client read nothing of its response within the client timeout.
            inc(&shared.vs.client_timeouts);
        }
        if e.is_parse() {
            inc(&shared.vs.bad_requests);
            // The response hyper sent before closing, if any: counted too.
            let status = automatic_response(&e);
            if let Some(status) = status {
                shared.vs.responses.count(status);
            }
            log_bad_request(shared, peer, &activity, status, Termination::new('P', 'R'));
        }
        tracing::debug!(client = %peer, error = %e, "client connection ended");
    }
}

/// The forwarded headers of a client connection from `peer` to `local` (over TLS when
/// `tls`).
fn client_identity(
    shared: &Shared,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
) -> ClientIdentity {
    let identity = ClientIdentity::new(shared.config.forwarded, peer, local.port());
    if tls {
        identity.over_tls()
    } else {
        identity
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4), which a client with prior
/// knowledge sends first on a plain connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a plain connection opens ([`read_preface`]).
#[derive(Debug, PartialEq, Eq)]
enum Preface {
    /// With the HTTP/2 preface.
    Http2,
    /// With anything else (an HTTP/1 request).
    Other,
    /// The client closed, or the connection failed.
    Gone,
    /// Too little came by the deadline.
    TimedOut,
}

/// Reads from `stream` into `early` (bytes already read, kept for the server that goes on)
/// until they show whether the connection opens with the HTTP/2 preface: at its length,
/// or at the first byte that differs (an HTTP/1 request's first byte does). At most
/// [`H2_PREFACE`]'s 24 bytes are awaited, until `deadline` (the first request head's).
async fn read_preface(
    stream: &mut TcpStream,
    early: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> Preface {
    use tokio::io::AsyncReadExt;
    loop {
        let n = early.len().min(H2_PREFACE.len());
        if early[..n] != H2_PREFACE[..n] {
            return Preface::Other;
        }
        if n == H2_PREFACE.len() {
            return Preface::Http2;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(early)).await {
            Ok(Ok(read)) if read > 0 => {}
            Ok(_) => return Preface::Gone,
            Err(_) => return Preface::TimedOut,
        }
    }
}

/// Serves HTTP/2 (RFC 9113) on a client connection `stream` (plain with prior knowledge, or
/// TLS with ALPN `h2` when `tls`) from `peer` to `local`, whose first bytes, already read,
/// are `early`; its first request is due `header_read` after `opened`; it holds its
/// `maxconn` `slot` until it ends.
///
/// hyper's h2 server runs the connection here, and its streams run here too, beside it
/// ([`StreamExecutor`]): each stream's request is handled as an HTTP/1.1 one ([`handle`],
/// with a [`ClientConn`] of its own for its upload and response timers). The connection's [`Activity`] counts the streams in
/// flight, for its timers: the first request within `header_read` or the connection is
/// closed; `client_idle` without a stream in flight, or a stop, closes it gracefully
/// (GOAWAY: streams in flight finish), and a client that leaves it open after that, with
/// nothing in flight, is cut off after the client timeout. A response that waits for the
/// client's flow-control window for the client timeout ([`SendWatch`]), while no DATA is
/// written to the connection ([`Prefixed::noting_writes`]), has its stream reset, as a stalled write ends an HTTP/1.1
/// connection.
#[cold]
#[inline(never)]
async fn serve_h2<S>(
    shared: &Arc<Shared>,
    stream: S,
    early: Vec<u8>,
    tls: bool,
    (peer, local): (SocketAddr, SocketAddr),
    (opened, slot): (tokio::time::Instant, tokio::sync::OwnedSemaphorePermit),
    stop: &mut watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let executor = StreamExecutor::default();
    let mut server = http2::Builder::new(executor.clone());
    server
        .timer(TokioTimer::new())
        .max_concurrent_streams(shared.config.limits.max_concurrent_streams)
        // RFC 9113 §6.5.2: the header list's size is its fields' names and values plus 32
        // bytes each (at least `max_header_bytes`, validated ≥ 8 192).
        .max_header_list_size(
            u32::try_from(shared.config.limits.max_header_bytes).unwrap_or(u32::MAX),
        );
    let mut streams = futures::stream::FuturesUnordered::new();
    // Streams hyper handed over but that were never taken into `streams` hold the executor
    // (hyper's stream keeps a clone): dropped when this ends, however it ends.
    let _clear = ClearOnDrop(executor.clone());
    let _slot = slot;
    inc(&shared.vs.http2_connections);
    let identity = Arc::new(client_identity(shared, peer, local, tls));
    let activity = Arc::new(Activity::opened_at(opened));
    let svc_shared = Arc::clone(shared);
    let svc_activity = Arc::clone(&activity);
    let svc_executor = executor.clone();
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&svc_shared);
        // Counted on the connection from the stream's start: its timers stop.
        let on_conn = ActiveRequest::new(&svc_activity);
        // Its send progress, for the client timeout: the executor takes it with the stream,
        // which hyper hands over right after this call.
        let send = Arc::new(SendWatch::new());
        svc_executor.next_watch(Arc::clone(&send));
        let cc = Arc::new(ClientConn {
            client: peer,
            local,
            identity: Arc::clone(&identity),
            activity: Arc::new(Activity::opened_at(tokio::time::Instant::now())),
            response_timer: Mutex::new(Timer::default()),
            slot: Mutex::new(None),
        });
        async move {
            let mut resp = handle(shared, cc, req).await?;
            resp.body_mut().attach_conn(on_conn, send);
            Ok::<_, Infallible>(resp)
        }
    });
    let io = Prefixed::new(
        early,
        stream,
        Arc::clone(&activity),
        shared.config.timeouts.client,
    )
    .noting_writes();
    let conn = server.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let timeouts = shared.config.timeouts;
    // The client timeout too: a stream's response may start waiting for the client's
    // window at any moment, and is due that long after.
    let period = timeouts
        .header_read
        .min(timeouts.client_idle)
        .min(timeouts.client);
    let mut next_check = opened + period;
    // Since when the connection has been closing (GOAWAY sent).
    let mut closing: Option<tokio::time::Instant> = None;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            never = executor.drive(&mut streams) => match never {},
            _ = tokio::time::sleep_until(next_check) => {
                let now = tokio::time::Instant::now();
                let mut next = now + period;
                // A response the client has read nothing of (its flow-control window stays
                // shut), while no DATA was written to it, for the client timeout
                // ends its stream (reset), as a stalled write ends an HTTP/1.1 connection:
                // its backend connection is freed.
                // A write waiting on the socket has the connection's own timer instead
                // (counted there once, not per stream).
                let stalled = if activity.write_waiting() {
                    Vec::new()
                } else {
                    executor.cancel_stalled(now, activity.last_write(), timeouts.client)
                };
                for since in stalled {
                    match since {
                        Ok(()) => {
                            inc(&shared.vs.client_timeouts);
                            tracing::debug!(client = %peer, "resetting an HTTP/2 stream: the client read nothing of its response within the client timeout");
                        }
                        Err(due) => next = next.min(due),
                    }
                }
                if !activity.served() {
                    // Also after a stop: the first request is due as before.
                    if opened + timeouts.header_read <= now {
                        inc(&shared.vs.header_timeouts);
                        tracing::debug!(client = %peer, "closing: no HTTP/2 request in time");
                        return;
                    }
                    next = next.min(opened + timeouts.header_read);
                }
                match (activity.idle_since(), closing) {
                    (Some(idle_since), Some(since)) => {
                        // From the latest of the GOAWAY, the last stream's end and the
                        // last DATA written: h2 may still be sending what that stream left in its
                        // buffer, as slowly as the client reads.
                        let since = since.max(idle_since).max(activity.last_write());
                        if since + timeouts.client <= now {
                            tracing::debug!(client = %peer, "closing: HTTP/2 client kept its connection open after GOAWAY");
                            return;
                        }
                        next = next.min(since + timeouts.client);
                    }
                    (Some(idle_since), None) if activity.served() => {
                        if idle_since + timeouts.client_idle <= now {
                            inc(&shared.vs.idle_timeouts);
                            conn.as_mut().graceful_shutdown();
                            closing = Some(now);
                            next = next.min(now + timeouts.client);
                        } else {
                            next = next.min(idle_since + timeouts.client_idle);
                        }
                    }
                    _ => {}
                }
                next_check = next;
            }
            _ = stop.changed(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                let now = tokio::time::Instant::now();
                closing = Some(now);
                next_check = next_check.min(now + timeouts.client.min(period));
            }
        }
    };
    if let Err(e) = result {
        if activity.write_stalled() {
            inc(&shared.vs.client_timeouts);
        }
        tracing::debug!(client = %peer, error = %e, "HTTP/2 client connection ended");
    }
}

/// A stream of an HTTP/2 connection, as hyper's h2 server hands it over: its request's
/// service future and its response's sending.
type H2StreamTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs an HTTP/2 connection's streams in the connection's own task ([`serve_h2`] polls
/// them beside the connection): hyper's h2 server hands each stream to an executor, and
/// tokio's would make each a task of its own, woken across tasks for every frame. Here a
/// stream costs no task, and ends with its connection (a client cut off, a proxy aborted).
#[derive(Clone, Default)]
struct StreamExecutor(Arc<StreamQueue>);

/// Streams handed over and not yet taken by [`StreamExecutor::drive`], the waker of the
/// connection's task, and each stream's [`SendWatch`].
#[derive(Default)]
struct StreamQueue {
    new: Mutex<Vec<H2StreamTask>>,
    waker: futures::task::AtomicWaker,
    /// The watch of the stream whose service was just called, for the `execute` that
    /// follows (hyper calls the service, then hands the stream over, in one go).
    next_watch: Mutex<Option<Arc<SendWatch>>>,
    /// The watches of the streams running (a stream's is dropped from here at the next
    /// check after it ends).
    watches: Mutex<Vec<Arc<SendWatch>>>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let watch = self
            .0
            .next_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let task: H2StreamTask = match watch {
            None => Box::pin(fut),
            Some(watch) => {
                let mut watches = self
                    .0
                    .watches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                watches.push(Arc::clone(&watch));
                // Ended streams are forgotten at the timer's checks; a busy connection
                // also forgets them here, at each power of two from 64 on.
                if watches.len() >= 64 && watches.len().is_power_of_two() {
                    watches.retain(|w| Arc::strong_count(w) > 1);
                }
                drop(watches);
                // Cancelled: the stream's future is dropped, and h2 resets the stream. A
                // stream that finishes first (biased: polled first) is not reset; one that
                // is, is marked so before its response body drops (its log says `cD`).
                Box::pin(async move {
                    let cancelled = std::future::poll_fn(|cx| {
                        let r = watch.poll_cancelled(cx);
                        if r.is_ready() {
                            watch.mark_reset();
                        }
                        r
                    });
                    tokio::select! {
                        biased;
                        () = fut => {}
                        () = cancelled => {}
                    }
                })
            }
        };
        self.0
            .new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
        self.0.waker.wake();
    }
}

/// Drops the streams still queued when [`serve_h2`] ends (they hold the queue: a cycle).
struct ClearOnDrop(StreamExecutor);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        let queued =
            std::mem::take(&mut *self.0 .0.new.lock().unwrap_or_else(PoisonError::into_inner));
        self.0
             .0
            .next_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(queued);
    }
}

impl StreamExecutor {
    /// Notes the watch of the stream hyper hands over next.
    fn next_watch(&self, watch: Arc<SendWatch>) {
        *self
            .0
            .next_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(watch);
    }

    /// Cancels every stream whose response has waited for the client's window for
    /// `client` by `now`, counted from the later of its wait's start and the connection's
    /// `last_write` (a slow client draining a large chunk is written to meanwhile): `Ok`
    /// for each cancelled now, `Err(when)` for each waiting, with when it will be due.
    /// Forgets the streams that have ended.
    fn cancel_stalled(
        &self,
        now: tokio::time::Instant,
        last_write: tokio::time::Instant,
        client: Duration,
    ) -> Vec<Result<(), tokio::time::Instant>> {
        let mut watches = self
            .0
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The stream's task and its response body hold the others.
        watches.retain(|w| Arc::strong_count(w) > 1);
        watches
            .iter()
            .filter(|w| !w.is_cancelled())
            .filter_map(|w| {
                let since = w.stalled_since()?.max(last_write);
                Some(if since + client <= now {
                    w.cancel();
                    Ok(())
                } else {
                    Err(since + client)
                })
            })
            .collect()
    }

    /// Polls the streams, taking in those handed over since, until none is ready; never
    /// ends (the connection's loop drops it with the streams when the connection ends).
    fn drive<'a>(
        &'a self,
        streams: &'a mut futures::stream::FuturesUnordered<H2StreamTask>,
    ) -> impl Future<Output = Infallible> + 'a {
        use futures::StreamExt as _;
        std::future::poll_fn(move |cx| {
            self.0.waker.register(cx.waker());
            loop {
                streams.extend(
                    self.0
                        .new
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .drain(..),
                );
                // Ready(None): no stream; Pending: none ready (each wakes this task when
                // it is, and FuturesUnordered wakes it itself after a long turn).
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
                if self
                    .0
                    .new
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty()
                {
                    return Poll::Pending;
                }
            }
        })
    }
}

/// Logs a request refused before it was parsed whole (HAProxy's `<BADREQ>` line): a
/// malformed or oversized head hyper answered with `status` (termination `PR`), or a head
/// not complete in time, answered 408 (`cR`). Its times: the head's, from its first byte.
#[cold]
#[inline(never)]
fn log_bad_request(
    shared: &Shared,
    client: SocketAddr,
    activity: &Activity,
    status: Option<StatusCode>,
    termination: Termination,
) {
    let Some(sink) = &shared.config.access_log else {
        return;
    };
    let head = activity.head_elapsed();
    let bytes = if status == Some(StatusCode::REQUEST_TIMEOUT) {
        // The body of the 408 written; hyper's own error responses have none.
        let whole = super::io::REQUEST_TIMEOUT;
        let head = whole
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| i + 4);
        (whole.len() - head) as u64
    } else {
        0
    };
    sink.0.log(&AccessEntry {
        virtual_server: &shared.config.name,
        client,
        started: std::time::SystemTime::now()
            .checked_sub(head)
            .unwrap_or(std::time::UNIX_EPOCH),
        pool: None,
        backend: None,
        request: None,
        referer: None,
        user_agent: None,
        status: status.map(|s| s.as_u16()),
        bytes_to_client: bytes,
        timings: Timings {
            request: head,
            connect: None,
            response: None,
            total: head,
        },
        retries: 0,
        termination,
    });
}

/// The status hyper's HTTP/1 server answers a request parse error with before closing
/// (`role::Server::on_error` in hyper 1.x): 414 for a URI past its limit, 431 for a head too
/// large or with too many headers, 400 for a bad method, URI, version or header; nothing for
/// an HTTP/2 preface or an internal error.
fn automatic_response(e: &hyper::Error) -> Option<StatusCode> {
    if e.is_parse_version_h2() {
        return None;
    }
    // hyper's public API folds "URI too long" into `is_parse_too_large`; its message tells
    // them apart.
    let text = e.to_string();
    if e.is_parse_too_large() {
        return Some(if text.starts_with("URI too long") {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        });
    }
    (!text.starts_with("internal error")).then_some(StatusCode::BAD_REQUEST)
}

async fn handle(
    shared: Arc<Shared>,
    cc: Arc<ClientConn>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    // Taken before the request counts as started (which forgets its head's first byte). A
    // guard from here on: a request whose client goes away before its response (hyper
    // drops this future) or that a stop cuts short is logged too.
    let mut log = shared.config.access_log.is_some().then(|| {
        Box::new(LogOnEnd {
            shared: Arc::clone(&shared),
            request: RequestLog::new(&req, cc.client, cc.activity.head_elapsed()),
            served: Served::default(),
            status: None,
            bytes: 0,
            termination: Termination::NORMAL,
        })
    });
    let active = ActiveRequest::new(&cc.activity);
    inc(&shared.vs.requests);
    let http2 = req.version() == Version::HTTP_2;
    let mut unlogged = Served::default();
    let served = log.as_mut().map_or(&mut unlogged, |l| &mut l.served);
    let mut termination = Termination::NORMAL;
    let mut resp = match forward(&shared, &cc, req, served).await {
        Ok(r) => r,
        Err(e) => {
            termination = termination_of(&e);
            let status = e.status();
            match status {
                StatusCode::SERVICE_UNAVAILABLE => inc(&shared.vs.no_backend),
                StatusCode::GATEWAY_TIMEOUT => inc(&shared.vs.gateway_timeout),
                StatusCode::BAD_REQUEST
                | StatusCode::NOT_IMPLEMENTED
                | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => inc(&shared.vs.bad_requests),
                StatusCode::REQUEST_TIMEOUT => inc(&shared.vs.client_timeouts),
                _ => inc(&shared.vs.bad_gateway),
            }
            tracing::debug!(error = %e, "request not forwarded");
            let mut r = error_response(status);
            if !http2
                && matches!(
                    status,
                    StatusCode::BAD_REQUEST
                        | StatusCode::REQUEST_TIMEOUT
                        | StatusCode::NOT_IMPLEMENTED
                )
            {
                // A malformed request closes the connection, as hyper's own 400s do; so
                // does a stalled upload (the rest of its body will not be read), and a
                // CONNECT (what follows it would be tunnel bytes). An HTTP/2 stream fails
                // alone: its framing keeps the others apart.
                r.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    };
    shared.vs.responses.count(resp.status());
    resp.body_mut().attach(active);
    if let Some(mut l) = log {
        l.status = Some(resp.status().as_u16());
        if l.served.local {
            termination = Termination::new('L', 'R');
        }
        l.termination = termination;
        match l.served.tunnel.take() {
            Some(tunnel) => *tunnel.lock().unwrap_or_else(PoisonError::into_inner) = Some(l),
            None => resp.body_mut().attach_log(l),
        }
    }
    Ok(resp)
}

/// The access log's termination state of a request that got `e` ([`Termination`]), as
/// HAProxy would write it.
fn termination_of(e: &ForwardError) -> Termination {
    let (by, phase) = match e {
        // HAProxy's 503 "no server available" and failed connects.
        ForwardError::NoRoute { .. } | ForwardError::NoBackend(_) => ('S', 'C'),
        ForwardError::Connect { .. }
        | ForwardError::Tls { .. }
        | ForwardError::Handshake { .. } => ('S', 'C'),
        ForwardError::ConnectTimeout { .. } => ('s', 'C'),
        ForwardError::ResponseTimeout { .. } => ('s', 'H'),
        ForwardError::Backend { .. } => ('S', 'H'),
        // A response the proxy would not pass on.
        ForwardError::InvalidResponse { .. } => ('P', 'H'),
        ForwardError::BadRequest(_)
        | ForwardError::TooManyHeaders { .. }
        | ForwardError::NotImplemented(_)
        | ForwardError::UpgradeNotSupported { .. } => ('P', 'R'),
        ForwardError::ClientAborted(_) => ('C', 'D'),
        ForwardError::ClientTimeout(_) => ('c', 'D'),
    };
    Termination::new(by, phase)
}

/// What an access entry needs of the request, taken before it is forwarded.
#[derive(Debug)]
pub(crate) struct RequestLog {
    method: Method,
    uri: Uri,
    version: Version,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    client: SocketAddr,
    started: std::time::SystemTime,
    start: tokio::time::Instant,
    head: Duration,
}

impl RequestLog {
    fn new(req: &Request<Incoming>, client: SocketAddr, head: Duration) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            referer: req.headers().get(http::header::REFERER).cloned(),
            user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
            client,
            // The head's first byte, as HAProxy's date.
            started: std::time::SystemTime::now()
                .checked_sub(head)
                .unwrap_or(std::time::UNIX_EPOCH),
            start: tokio::time::Instant::now(),
            head,
        }
    }
}

/// Where a request went, for its access entry: filled in by [`forward`] as it tries
/// backends.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// The pool the route chose.
    pool: Option<usize>,
    /// The backend last tried.
    backend: Option<SocketAddr>,
    /// The connect to it, when one was made.
    connect: Option<Duration>,
    /// Its response head's time.
    response: Option<Duration>,
    /// Backends tried after the first.
    retries: u32,
    /// Answered by the proxy itself (a redirect).
    local: bool,
    /// Upgraded (a WebSocket): where the entry goes, to be written when the tunnel ends.
    tunnel: Option<TunnelLog>,
}

/// The access entry of an upgraded request, handed to its tunnel ([`spawn_tunnel`]) after
/// the `101` is ready, and written when the tunnel ends (HAProxy logs a WebSocket then,
/// with its bytes and whole duration). The tunnel cannot end first: it starts once hyper
/// has sent the `101`, after [`handle`] filled this in.
type TunnelLog = Arc<Mutex<Option<Box<LogOnEnd>>>>;

/// A request's access entry, written when dropped: with its response body, when that ends
/// or is dropped ([`ResponseBody::attach_log`]), or before any response (the client went
/// away, the proxy stopped).
#[derive(Debug)]
pub(crate) struct LogOnEnd {
    shared: Arc<Shared>,
    request: RequestLog,
    served: Served,
    /// `None` until a response is there.
    status: Option<u16>,
    /// Body bytes sent so far.
    pub(crate) bytes: u64,
    /// How it ended (set by the body when the backend broke it).
    pub(crate) termination: Termination,
}

impl Drop for LogOnEnd {
    /// Hands the entry to the virtual server's sink.
    fn drop(&mut self) {
        let Some(sink) = &self.shared.config.access_log else {
            return;
        };
        if self.status.is_none() {
            // No response: the client went away while it was prepared (HAProxy `CC`
            // connecting, `CH` waiting for the head), or the proxy stopped (`K`).
            let phase = if self.served.connect.is_none() {
                'C'
            } else {
                'H'
            };
            self.termination = Termination::new('C', phase);
        }
        if self.termination.by == 'C' && *self.shared.kill.borrow() {
            self.termination.by = 'K';
        }
        let r = &self.request;
        fn bytes(v: &Option<HeaderValue>) -> Option<&[u8]> {
            v.as_ref().map(HeaderValue::as_bytes)
        }
        let entry = AccessEntry {
            virtual_server: &self.shared.config.name,
            client: r.client,
            started: r.started,
            pool: self.served.pool.map(|i| self.shared.pools[i].name.as_str()),
            backend: self.served.backend,
            request: Some(RequestLine {
                method: &r.method,
                uri: &r.uri,
                version: r.version,
            }),
            referer: bytes(&r.referer),
            user_agent: bytes(&r.user_agent),
            status: self.status,
            bytes_to_client: self.bytes,
            timings: Timings {
                request: r.head,
                connect: self.served.connect,
                response: self.served.response,
                // From the head's first byte, as HAProxy's Ta (≥ TR + Tw + Tc + Tr).
                total: r.head + r.start.elapsed(),
            },
            retries: self.served.retries,
            termination: self.termination,
        };
        sink.0.log(&entry);
    }
}

fn error_response(status: StatusCode) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut r = Response::new(ResponseBody::local(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The redirect of a request to the same host, path and query over https on `port`
/// ([`HttpProxyConfig::redirect_https`](super::HttpProxyConfig::redirect_https)): 301 for
/// GET and HEAD, 308 for the others (which must be repeated with their method and body,
/// RFC 9110 §15.4.9). A request without a host is sent to the address it reached.
fn https_redirect(
    parts: &http::request::Parts,
    host: &str,
    local: SocketAddr,
    port: u16,
) -> Response<ResponseBody> {
    let host = if host.is_empty() {
        match local.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        }
    } else {
        host.to_owned()
    };
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    // Asterisk-form (`OPTIONS *`) names no resource: the site's root.
    let path = match parts.uri.path_and_query().map(PathAndQuery::as_str) {
        None | Some("*") => "/",
        Some(p) => p,
    };
    let status = if matches!(parts.method, Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut r = error_response(status);
    // The host passed `valid_host` and the path is a parsed URI's: valid header text.
    if let Ok(location) = HeaderValue::try_from(format!("https://{host}{port}{path}")) {
        r.headers_mut().insert(http::header::LOCATION, location);
    }
    r
}

/// Methods whose repetition has the effect of one request (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The head of a bodiless idempotent request, kept to send it again after a backend broke
/// the connection.
///
/// The header lines are kept as a flat list in their order (repeated names included) and
/// made into a `HeaderMap` again only when a retry needs them: the copy is made for every
/// such request, the rebuild almost never, and a list costs one allocation against the
/// map's two plus its index.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The whole body (empty for most: bodiless requests).
    body: Bytes,
    /// Whether it may go out again after a failure that the backend may have processed it
    /// through (a bodiless idempotent request); otherwise only when nothing was sent, or
    /// the backend refused it unprocessed.
    after_failure: bool,
}

impl Replay {
    fn build(&self) -> Request<BackendBody> {
        let mut r = Request::new(Either::Right(Full::new(self.body.clone())));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        let headers = r.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        r
    }
}

/// Counts a failure in lb-core's shared counters and tells the pool's observer.
fn observe(pool: &HttpPool, backend: &Backend, outcome: Outcome) {
    if outcome.is_failure() {
        backend.stats().record_failure();
    }
    pool.observer.observe(backend, &outcome);
}

/// How often at most a failed TLS handshake with a backend is logged at WARN, per pool.
const TLS_WARN_EVERY: Duration = Duration::from_secs(60);

/// Logs a failed TLS handshake with a backend of pool `pool_idx` at WARN, once per
/// [`TLS_WARN_EVERY`] and pool: a CA file or server name that does not match the backends
/// fails every request, and the 502s and counters alone do not say why (the others stay
/// at DEBUG). The pool names the virtual server whose TLS settings are at fault.
fn warn_tls(shared: &Shared, pool_idx: usize, e: &ForwardError) {
    let Some(last) = shared.tls_warned.get(pool_idx) else {
        return;
    };
    let now = tokio::time::Instant::now();
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if last.is_none_or(|t| now.duration_since(t) >= TLS_WARN_EVERY) {
        *last = Some(now);
        tracing::warn!(virtual_server = %shared.config.name, pool = %shared.pools[pool_idx].name, error = %e, "backend TLS handshake failed (logged once a minute per pool)");
    }
}

/// The outcome of a backend failure, in the vocabulary L4 mode shares: connect failures as
/// such, a response timeout or a broken connection as a connection the backend broke.
fn failure_outcome(e: &ForwardError) -> Outcome {
    match e {
        ForwardError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Outcome::ConnectRefused
        }
        ForwardError::Connect { source, .. } => Outcome::ConnectError(source.kind()),
        ForwardError::ConnectTimeout { .. } => Outcome::ConnectTimeout,
        ForwardError::Handshake { .. } => Outcome::ConnectError(std::io::ErrorKind::Other),
        ForwardError::Tls { source, .. } => Outcome::ConnectError(source.kind()),
        _ => Outcome::Closed {
            stats: ForwardStats::default(),
            backend_error: true,
        },
    }
}

async fn forward(
    shared: &Arc<Shared>,
    cc: &ClientConn,
    mut req: Request<Incoming>,
    served: &mut Served,
) -> Result<Response<ResponseBody>, ForwardError> {
    if req.method() == Method::CONNECT {
        return Err(ForwardError::NotImplemented(Method::CONNECT));
    }
    // RFC 9110 §7.8: an HTTP/1.0 request's Upgrade is ignored (and dropped as hop-by-hop).
    let upgrade = req.version() == Version::HTTP_11 && is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, mut body) = req.into_parts();
    let client_http2 = parts.version == Version::HTTP_2;
    if client_http2 {
        // Cookies sent one per field count as the one line they become (and as they count
        // over HTTP/1.1).
        join_cookies(&mut parts.headers);
        // hyper's HTTP/1 server counted the head's fields; its HTTP/2 server bounds only
        // their size.
        let limit = shared.config.limits.max_headers;
        if parts.headers.len() > limit {
            return Err(ForwardError::TooManyHeaders {
                count: parts.headers.len(),
                limit,
            });
        }
    }

    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with several, gets 400 (a backend
    // reading another Host line than the one routed on would serve another site).
    let mut hosts = parts.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(ForwardError::BadRequest("more than one Host")),
        (None, None) if parts.version == Version::HTTP_11 && parts.uri.authority().is_none() => {
            return Err(ForwardError::BadRequest("no Host"));
        }
        _ => {}
    }

    if parts
        .headers
        .get(HOST)
        .is_some_and(|h| !super::route::valid_host(h.as_bytes()))
    {
        return Err(ForwardError::BadRequest("invalid Host"));
    }
    // An absolute-form authority is routed on and becomes the Host: the same checks.
    if parts.uri.authority().is_some_and(|a| {
        let host_port = a.as_str().rsplit('@').next().unwrap_or_default();
        !super::route::valid_host(host_port.as_bytes())
    }) {
        return Err(ForwardError::BadRequest("invalid authority"));
    }
    let host = request_host(&parts);
    if let Some(port) = shared.config.redirect_https {
        served.local = true;
        return Ok(https_redirect(
            &parts,
            host.as_deref().unwrap_or(""),
            cc.local,
            port,
        ));
    }
    let Some(pool_idx) = shared.router.route(host.as_deref(), parts.uri.path()) else {
        return Err(ForwardError::NoRoute {
            host: host.map(Cow::into_owned).unwrap_or_default(),
            path: parts.uri.path().to_owned(),
        });
    };
    let http_pool = &shared.pools[pool_idx];
    served.pool = Some(pool_idx);
    if upgrade && http_pool.http2 {
        return Err(ForwardError::UpgradeNotSupported {
            pool: http_pool.name.clone(),
        });
    }
    let (pool_name, pool) = (&http_pool.name, &http_pool.pool);
    let key: Option<Vec<u8>> = match shared.config.hash_key {
        HashKeySource::ClientAddr => None,
        // A request without the key (no such header or cookie) is spread by a request
        // count, as HAProxy's `balance hdr()` falls back to round robin; the client
        // address would pin every such client behind one NAT to one backend.
        ref src => Some(hash_key(src, &parts).map_or_else(
            || {
                let n = shared.keyless.fetch_add(1, Ordering::Relaxed);
                [b"\0keyless\0".as_slice(), &n.to_le_bytes()].concat()
            },
            <[u8]>::to_vec,
        )),
    };

    // Origin-form towards the backend; an absolute-form authority becomes the Host, which
    // replaces the received one (RFC 9112 §3.2.2: the backend must see the host that was
    // routed on).
    if let Some(a) = parts.uri.authority() {
        let host_port = a.as_str().rsplit('@').next().unwrap_or_default();
        match HeaderValue::from_str(host_port) {
            Ok(v) => {
                parts.headers.insert(HOST, v);
            }
            Err(_) => return Err(ForwardError::BadRequest("invalid authority")),
        }
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(pq);
    }
    // gRPC's `te: trailers` is hop-by-hop in HTTP/1.1 but required by gRPC backends: kept
    // for HTTP/2 ones, the only TE value HTTP/2 allows (RFC 9113 §8.2.2).
    let te_trailers = http_pool.http2 && asks_for_trailers(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // An HTTP/1.0 client's expectation is to be ignored (RFC 9110 §10.1.1): its request
    // goes on as 1.1, where a backend would honour it.
    if parts.version < Version::HTTP_11 {
        parts.headers.remove(http::header::EXPECT);
    }
    // hyper re-frames the body from its size, but sends a GET or HEAD (methods whose
    // requests rarely have one) of unknown size with none at all: a chunked body (an
    // Elasticsearch `GET /_search`) stays chunked.
    if !http_pool.http2
        && !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !parts.headers.contains_key(TRANSFER_ENCODING)
    {
        parts
            .headers
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    // An intermediary sends its own HTTP version (RFC 9110 §6.2): an HTTP/1.0 client's
    // request still goes out on a kept-alive HTTP/1.1 backend connection, with the Host
    // field HTTP/1.1 requires (empty when the client sent none, RFC 9112 §3.2).
    let client_http10 = parts.version < Version::HTTP_11;
    if parts.version != Version::HTTP_11 {
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(HOST) {
            parts.headers.insert(HOST, HeaderValue::from_static(""));
        }
    }
    cc.identity.apply(&mut parts.headers);
    if http_pool.http2 {
        to_http2(&mut parts, http_pool.tls.is_some(), te_trailers);
    }

    let timeouts = shared.config.timeouts;
    let idempotent = is_idempotent(&parts.method);
    // Towards HTTP/2 backends, a body the client has already sent whole is held: a stream
    // the backend refused unprocessed ([`Refusal`]) can then go out again, whatever its
    // method.
    let prefetch = http_pool.http2 && !upgrade && !body.is_end_stream();
    let known_small = || {
        body.size_hint()
            .exact()
            .is_some_and(|n| n <= super::body::PREFETCH_LIMIT as u64)
    };
    let (body, whole) = if prefetch && known_small() {
        // A body of known length up to 64 KiB is read whole first (HAProxy's `option
        // http-buffer-request`), the client timeout bounding each gap as it does an upload's:
        // the backend needs all of it anyway.
        let mut reading =
            ClientBody::with_prefix(body, VecDeque::new(), &cc.activity, timeouts.client);
        match http_body_util::BodyExt::collect(&mut reading).await {
            Err(UploadError::Stalled(t)) => return Err(ForwardError::ClientTimeout(t)),
            Err(UploadError::Client(e)) => return Err(ForwardError::ClientAborted(e)),
            Ok(c) if c.trailers().is_none() => (None, Some(c.to_bytes())),
            // Trailers after a body of known length (rare): sent as they came, not held.
            Ok(c) => {
                let trailers = c.trailers().cloned();
                let (body, _) = reading.into_parts();
                let mut prefix = VecDeque::new();
                prefix.push_back(Ok(hyper::body::Frame::data(c.to_bytes())));
                prefix.extend(trailers.map(|t| Ok(hyper::body::Frame::trailers(t))));
                (Some((body, prefix)), None)
            }
        }
    } else if prefetch {
        match super::body::prefetch(&mut body) {
            Prefetched::Complete(bytes) => (None, Some(bytes)),
            Prefetched::Partial(prefix) => (Some((body, prefix)), None),
        }
    } else {
        let end = body.is_end_stream();
        (Some((body, VecDeque::new())), end.then(Bytes::new))
    };
    // Towards HTTP/1.1 backends only a bodiless idempotent request is ever sent again after
    // its first send (the others' retries are for connects, which leave the request in
    // hand): no copy of the others' heads.
    let replay = whole
        .as_ref()
        .filter(|whole| {
            !upgrade
                && (http_pool.http2
                    || (idempotent && whole.is_empty() && shared.config.retries > 0))
        })
        .map(|whole| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            body: whole.clone(),
            // After a failure the backend may have processed it: only a bodiless
            // idempotent request goes out again then.
            after_failure: idempotent && whole.is_empty(),
        });
    let (body, failure) = match (body, whole) {
        (_, Some(whole)) if !whole.is_empty() => (Either::Right(Full::new(whole)), None),
        (Some((incoming, prefix)), _) => {
            let b = ClientBody::with_prefix(incoming, prefix, &cc.activity, timeouts.client);
            let failure = b.failure();
            (Either::Left(b), failure)
        }
        (None, _) => (Either::Right(Full::new(Bytes::new())), None),
    };
    let has_upload = failure.is_some();
    let mut pending = Some(Request::from_parts(parts, body));
    let mut tried = Vec::new();
    let mut retries_left = shared.config.retries;
    let mut reuse = true;
    // The backends that refused this request a stream once ([`Refusal`]).
    let mut refused_by = Vec::new();
    let mut refused_twice = Vec::new();
    // One more try, free of `retries`, for a request an HTTP/2 connection handed back
    // unsent (it had just received GOAWAY).
    let mut handed_back_retry = true;
    // Tries past `retries` for streams the backend refused unprocessed: nginx, for one,
    // sends GOAWAY after `keepalive_requests` and refuses every stream already in flight
    // past it; sending them again costs the backend nothing.
    let mut refusals_left = REFUSED_STREAM_RETRIES;
    let mut first = true;
    let mut last_err: Option<ForwardError> = None;

    loop {
        let now = tokio::time::Instant::now().into_std();
        let ctx = SelectContext {
            client: Some(cc.client),
            destination: Some(cc.local),
            hash_key: key.as_deref(),
        };
        // A backend that refused this request twice is asked again only when no other
        // can be.
        let selected = pool
            .select(now, &ctx, &mut |b| {
                !tried.contains(&b.id()) && !refused_twice.contains(&b.id())
            })
            .or_else(|| {
                (!refused_twice.is_empty())
                    .then(|| pool.select(now, &ctx, &mut |b| !tried.contains(&b.id())))
                    .flatten()
            });
        let Some(backend) = selected else {
            return Err(last_err.unwrap_or_else(|| ForwardError::NoBackend(pool_name.clone())));
        };
        served.backend = Some(backend.addr());
        served.connect = None;
        if !first {
            served.retries += 1;
            inc(&shared.vs.retries);
        }
        first = false;
        let counters = shared.backends.get(pool_idx, backend.id());
        inc(&counters.requests);
        let guard = backend.request();

        let connecting = tokio::time::Instant::now();
        let checkout = match shared
            .conns
            .checkout(
                backend.addr(),
                backend.stats(),
                http_pool.tls.as_ref(),
                (reuse, http_pool.http2),
            )
            .await
        {
            Ok(c) => c,
            Err(CheckoutError {
                error: e,
                attempted,
            }) => {
                // One failed HTTP/2 connect fails every request that waited for it: counted
                // once, by the request that made it.
                if attempted {
                    inc(&counters.connect_failures);
                    if matches!(e, ForwardError::Tls { .. }) {
                        warn_tls(shared, pool_idx, &e);
                    }
                    observe(http_pool, &backend, failure_outcome(&e));
                }
                tried.push(backend.id());
                // Nothing was sent: any request still in hand goes to another backend,
                // whatever its method (HAProxy's default `retry-on conn-failure`, nginx's
                // `proxy_next_upstream error`, Envoy's `connect-failure`).
                if (pending.is_some() || replay.is_some()) && retries_left > 0 {
                    retries_left -= 1;
                    reuse = true;
                    last_err = Some(e);
                    continue;
                }
                return Err(e);
            }
        };
        let Some(request) = pending
            .take()
            .or_else(|| replay.as_ref().map(Replay::build))
        else {
            // Unreachable: a request is only consumed when `replay` exists to rebuild it.
            return Err(last_err.unwrap_or_else(|| ForwardError::NoBackend(pool_name.clone())));
        };
        let mut tx = checkout.tx;
        let started = tokio::time::Instant::now();
        // A kept-alive connection took no time to connect (HAProxy's Tc 0 for a reused
        // connection; -1 is for one never established).
        served.connect = Some(if checkout.reused {
            Duration::ZERO
        } else {
            started - connecting
        });
        cc.arm_response_timer(started + timeouts.backend_response);
        let answers = tx.answers();
        let sent = {
            let mut response = std::pin::pin!(tx.try_send_request(request));
            std::future::poll_fn(|cx| loop {
                if let Poll::Ready(r) = response.as_mut().poll(cx) {
                    return Poll::Ready(Ok(r));
                }
                if cc.poll_response_timer(cx).is_pending() {
                    return Poll::Pending;
                }
                // The backend's time runs from the last progress of the upload it is
                // receiving (an inactivity timeout, as HAProxy's `timeout server`).
                let now = tokio::time::Instant::now();
                match cc.activity.upload_progress() {
                    Some(t) if t + timeouts.backend_response > now => {
                        cc.arm_response_timer(t + timeouts.backend_response);
                    }
                    // An upload waiting for the client: the backend has all there was to
                    // send, and the client timeout ends the wait (408, HAProxy `cD`). With
                    // both timeouts equal (their defaults), this one used to run out first
                    // and blame the backend (504) for the client's stall.
                    Some(_) if cc.activity.upload_waiting() => {
                        cc.arm_response_timer(now + timeouts.backend_response);
                    }
                    _ => return Poll::Ready(Err(())),
                }
            })
            .await
        };
        match sent {
            Err(()) => {
                inc(&counters.timeouts);
                let e = ForwardError::ResponseTimeout {
                    backend: backend.addr(),
                    timeout: timeouts.backend_response,
                };
                observe(http_pool, &backend, failure_outcome(&e));
                // An HTTP/2 connection that answered no other stream meanwhile may have
                // stopped answering: it takes no more requests (its streams finish on it if
                // it answers them). One that answered others keeps serving; this stream
                // alone is reset as the request is dropped.
                if tx.answers() == answers {
                    tx.retire();
                }
                return Err(e);
            }
            Ok(Err(mut e)) => {
                let returned = e.take_message();
                let not_sent = returned.is_some();
                let http2 = http_pool.http2;
                // Over HTTP/2 a body's failure comes back as its stream's reset: the body
                // says whether it failed (hyper's own user errors there are its dispatch's,
                // a request dropped unsent when its connection ended).
                let upload_failed = failure.as_ref().and_then(|f| f.get());
                let client_fault = upload_failed.is_some()
                    || (!http2 && (e.error().is_user() || e.error().is_body_write_aborted()));
                if !not_sent && client_fault {
                    // The client's body failed (it went away or stalled mid-upload): the
                    // backend did nothing wrong, and the request cannot be sent again.
                    if upload_failed == Some(true) || UploadError::is_stall(e.error()) {
                        return Err(ForwardError::ClientTimeout(timeouts.client));
                    }
                    return Err(ForwardError::ClientAborted(e.into_error()));
                }
                pending = returned;
                // Over HTTP/2 hyper's own user errors (the body's are noted above) are its
                // dispatch's: a request dropped while it waited for a stream, unsent.
                let refusal = if http2 && e.error().is_user() {
                    Some(Refusal::Unsent)
                } else {
                    Refusal::of(e.error())
                };
                // A failure of the HTTP/2 connection, not of this stream alone (a reset):
                // the connection takes no more requests.
                let connection_failed = h2_error(e.error()).is_none_or(|h| !h.is_reset());
                if connection_failed && refusal != Some(Refusal::Stream) {
                    tx.retire();
                }
                // A response hyper could not parse (too many headers, a bad status line;
                // over HTTP/2 a malformed one, which h2 resets): the backend answered,
                // wrongly. Sent again it would most likely get the same answer from every
                // backend and count them all failed; HAProxy answers 502 once (`PH`) and
                // holds it against this server only.
                let bad_response = e.error().is_parse() || is_malformed_h2(e.error());
                let err = ForwardError::Backend {
                    backend: backend.addr(),
                    source: e.into_error(),
                    not_sent,
                };
                // A request an HTTP/2 connection handed back unsent (it had just received
                // GOAWAY) goes out once more, free of `retries`, on another connection.
                if not_sent && http2 && handed_back_retry {
                    handed_back_retry = false;
                    last_err = Some(err);
                    continue;
                }
                let replayable = replay.as_ref().is_some_and(|r| match refusal {
                    None => r.after_failure,
                    Some(Refusal::Stream | Refusal::Unsent) => true,
                    // hyper can hand a stream it had just opened the connection's GOAWAY
                    // error when another GOAWAY (2^31-1, the first of a graceful pair)
                    // races its send: HEADERS carrying END_STREAM may then have been
                    // processed. With a body still to come the request was not whole (a
                    // backend acting on a request before its body, within that race of
                    // microseconds, would see it twice).
                    Some(Refusal::GoingAway) => r.after_failure || !r.body.is_empty(),
                });
                let free = refusal.is_some() && refusals_left > 0;
                let can_retry = (pending.is_some() || replayable)
                    && (retries_left > 0 || free)
                    && !bad_response;
                // A pooled connection that broke is most likely a keep-alive race with the
                // backend closing it while idle: not held against the backend when the
                // request can go out again on a new connection (which counts if it fails).
                // A stream reset is no such race.
                let race = checkout.reused && can_retry && connection_failed;
                // A stream the backend refused unprocessed (RFC 9113 §8.7) is no failure
                // of it while the request can go out again: it is going away or at its
                // limit. A request that ends refused is one, unless a graceful GOAWAY left
                // out one that is not re-sent for its own sake (a bodiless non-idempotent
                // request, a streamed upload): the backend closed its connection as it may.
                let not_replayed = refusal == Some(Refusal::GoingAway) && !replayable;
                let excused = race || (refusal.is_some() && can_retry) || not_replayed;
                if !not_sent && !excused {
                    observe(http_pool, &backend, failure_outcome(&err));
                }
                if can_retry {
                    if free {
                        refusals_left -= 1;
                    } else {
                        retries_left -= 1;
                    }
                    if refusal.is_some() {
                        // Refused once, it may take the request again on another stream
                        // or connection; refused twice, another backend is asked.
                        if refused_by.contains(&backend.id()) {
                            refused_twice.push(backend.id());
                        } else {
                            refused_by.push(backend.id());
                        }
                    } else if http2 {
                        if !checkout.reused {
                            tried.push(backend.id());
                            reuse = true;
                        } else if connection_failed {
                            // As over HTTP/1.1: a new connection next, which counts if it
                            // fails (another shared one may be as broken). A stream's reset
                            // says nothing of its connection.
                            reuse = false;
                        }
                    } else if checkout.reused {
                        // Most likely a keep-alive race with the backend closing an idle
                        // connection: try again (possibly the same backend) on a new one.
                        reuse = false;
                    } else {
                        tried.push(backend.id());
                        reuse = true;
                    }
                    last_err = Some(err);
                    continue;
                }
                return Err(err);
            }
            Ok(Ok(mut resp)) => {
                tx.note_answer();
                let now = tokio::time::Instant::now();
                let latency = now - started;
                served.response = Some(latency);
                backend.stats().record_latency(
                    latency,
                    now.into_std(),
                    shared.config.passive_health.latency_decay,
                );
                let status = resp.status();
                counters.responses.count(status);
                // A 5xx is the final result. Any other head is not: the response is a
                // success once its body has arrived whole (the body reports it, or a
                // broken or stalled body as a failure); an accepted upgrade is one now.
                let server_error =
                    status.is_server_error() && shared.config.passive_health.count_5xx;
                let outcome = if server_error {
                    Outcome::HttpServerError {
                        status: status.as_u16(),
                    }
                } else {
                    Outcome::Connected { latency }
                };
                observe(http_pool, &backend, outcome);

                if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_up) = client_upgrade {
                        observe(http_pool, &backend, Outcome::Success { latency });
                        let backend_up = hyper::upgrade::on(&mut resp);
                        inc(&shared.vs.upgrades);
                        let log = TunnelLog::default();
                        served.tunnel = Some(Arc::clone(&log));
                        spawn_tunnel(
                            (client_up, backend_up),
                            (backend.connection(), guard),
                            Arc::clone(shared),
                            (Arc::clone(&cc.activity), cc.take_slot()),
                            log,
                        );
                        let (mut parts, _) = resp.into_parts();
                        strip_hop_by_hop(&mut parts.headers, true);
                        return Ok(Response::from_parts(parts, ResponseBody::empty()));
                    }
                    // A switch the client did not ask for: never passed on (the client
                    // would get a bare 101 and a dead connection).
                    let e = ForwardError::InvalidResponse {
                        backend: backend.addr(),
                        reason: "101 Switching Protocols to a request that asked for no upgrade",
                    };
                    observe(http_pool, &backend, failure_outcome(&e));
                    return Err(e);
                }
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, false);
                // A transfer coding besides chunked stays for the next hop to decode, but an
                // HTTP/1.0 client cannot be sent one (RFC 9112 §6.1): hyper would drop the
                // header and send the coded bytes as the body.
                // HTTP/2 has no transfer codings (RFC 9113 §8.2.2): hyper would drop the header
                // there too.
                if (client_http10 || client_http2) && parts.headers.contains_key(TRANSFER_ENCODING)
                {
                    let e = ForwardError::InvalidResponse {
                        backend: backend.addr(),
                        reason: if client_http2 {
                            "a transfer coding an HTTP/2 client cannot receive"
                        } else {
                            "a transfer coding an HTTP/1.0 client cannot receive"
                        },
                    };
                    // Not the backend's fault: not held against it.
                    observe(http_pool, &backend, Outcome::Success { latency });
                    return Err(e);
                }
                single_content_length(&mut parts.headers);
                // Our own version, not the backend's (RFC 9110 §6.2): an HTTP/1.0 backend's
                // answer must not tell an HTTP/1.1 client to close (hyper still answers an
                // HTTP/1.0 client in HTTP/1.0).
                parts.version = Version::HTTP_11;
                // An HTTP/1.0 client's response with no length (read to the backend's
                // close) is framed by closing: said so, not hyper's `keep-alive` followed by
                // a close that drops the client's next request. hyper keeps an HTTP/1.0
                // client's connection only for a 1.1 head, adding `keep-alive` to it.
                if client_http10 && body.size_hint().exact().is_none() {
                    parts.version = Version::HTTP_10;
                    parts
                        .headers
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                let release = Release {
                    pool: Arc::clone(&shared.conns),
                    list: checkout.list,
                    tx,
                    request: guard,
                    upload: has_upload.then(|| Arc::clone(&cc.activity)),
                };
                // HAProxy `timeout server` also bounds the gaps in the body: a backend that
                // stops mid-body is cut off and counted, instead of holding both
                // connections for good.
                let stall = StallGuard::new(
                    timeouts.backend_response,
                    StallReport {
                        counters,
                        observer: Arc::clone(&http_pool.observer),
                        backend,
                        success: (!server_error).then_some(latency),
                    },
                );
                return Ok(Response::from_parts(
                    parts,
                    ResponseBody::backend(body, Some(release), Some(stall)),
                ));
            }
        }
    }
}

/// How many times a request may go out again past `retries` when an HTTP/2 backend
/// refused it unprocessed ([`Refusal`]).
const REFUSED_STREAM_RETRIES: u32 = 4;

/// How an HTTP/2 backend refused a stream it did not process, so that the request may go
/// out again (RFC 9113 §8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// RST_STREAM with REFUSED_STREAM: the connection goes on.
    Stream,
    /// A graceful GOAWAY (NO_ERROR) that left the stream out: h2 gives the streams above
    /// its last stream id this error, and those at or below it others (a broken pipe, a
    /// reset). A GOAWAY with an error code is not taken as a refusal (conservative: the
    /// streams above its last stream id were not processed either).
    GoingAway,
    /// Dropped by hyper while it waited for a stream (its connection ended): never sent.
    Unsent,
}

impl Refusal {
    fn of(e: &hyper::Error) -> Option<Self> {
        let h = h2_error(e)?;
        if !h.is_remote() {
            return None;
        }
        match h.reason()? {
            h2::Reason::REFUSED_STREAM if h.is_reset() => Some(Self::Stream),
            h2::Reason::NO_ERROR if h.is_go_away() => Some(Self::GoingAway),
            _ => None,
        }
    }
}

/// The HTTP/2 error under a hyper error, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return Some(h);
        }
        source = s.source();
    }
    None
}

/// Whether h2 reset the stream for a malformed response (PROTOCOL_ERROR of its own).
fn is_malformed_h2(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h| {
        h.is_reset() && h.is_library() && h.reason() == Some(h2::Reason::PROTOCOL_ERROR)
    })
}

/// Whether a request's `TE` names `trailers` (RFC 9110 §10.1.4).
fn asks_for_trailers(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::TE).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let coding = t.split(|&b| b == b';').next().unwrap_or_default();
            coding.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
    })
}

/// The head of a request as an HTTP/2 backend gets it (RFC 9113 §8.3.1): its Host becomes
/// the `:authority` of an absolute URI whose `:scheme` is the backend connection's (`https`
/// over TLS, as HAProxy sends it), and `te: trailers` is sent when `trailers`. A request
/// with no Host (or an empty one, from an HTTP/1.0 client) goes out with no `:authority`
/// and `:scheme` `http`, as h2 forwards an HTTP/1 request.
#[cold]
#[inline(never)]
fn to_http2(parts: &mut http::request::Parts, tls: bool, trailers: bool) {
    if trailers {
        parts
            .headers
            .insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    let authority = match parts.headers.get(HOST) {
        None => return,
        Some(h) if h.is_empty() => {
            parts.headers.remove(HOST);
            return;
        }
        Some(h) => match http::uri::Authority::try_from(h.as_bytes()) {
            Ok(a) => a,
            // A Host `valid_host` lets through that an authority may not hold (`a{b`):
            // sent as a `host` field, with no `:authority`.
            Err(_) => return,
        },
    };
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(if tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        })
        .authority(authority)
        .path_and_query(pq)
        .build();
    if let Ok(uri) = uri {
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        parts.headers.remove(HOST);
    }
}

/// Joins an upgraded client connection to the upgraded backend one (WebSocket) until
/// either side closes or the proxy is killed; `guards` count the connection and request.
/// The tunnel counts in `active_connections` while it lasts (hyper's connection task,
/// which counted the client connection, ends with the upgrade), and a client that reads
/// nothing of it for the client timeout is cut off (counted in `client_timeouts`). Its
/// access entry, if any, is written when it ends, with the bytes the tunnel carried to the
/// client and how it ended (`----`, `CD`/`SD` for the side whose connection failed, `cD`
/// for a client that read nothing for the client timeout, `KD` for a proxy stopped).
///
/// Out of line and cold: the per-request path in [`forward`] stays compact in the
/// instruction cache.
#[cold]
#[inline(never)]
fn spawn_tunnel(
    (client_up, backend_up): (hyper::upgrade::OnUpgrade, hyper::upgrade::OnUpgrade),
    guards: (lb_core::ConnectionGuard, lb_core::RequestGuard),
    shared: Arc<Shared>,
    (activity, slot): (Arc<Activity>, Option<tokio::sync::OwnedSemaphorePermit>),
    log: TunnelLog,
) {
    let mut kill = shared.kill.clone();
    // Counted now, before the spawn: the client connection's count may end first.
    let busy = Uncount::enter(&shared);
    tokio::spawn(async move {
        let _active = Uncount::counted(&shared, busy);
        let _slot = slot;
        let mut client = Watched::default();
        let tunnel = async {
            // The client's side first: hyper has it once the 101 is sent (a client gone
            // before is the client's failure), the backend's once its 101 was read.
            let c = client_up.await.inspect_err(|_| client.failed = true)?;
            let b = backend_up.await?;
            let mut c = client.watch(client_tunnel_io(c, shared.tls_server.is_none()));
            let mut b = backend_tunnel_io(b);
            // What was queued before the writes went direct goes out first: the client's
            // within the client timeout (`Prefixed`), as any write to it; the backend's as
            // far as its socket takes it now, the rest by the copy's next read or write of
            // it (a backend that writes before it reads is not waited on here).
            tokio::io::AsyncWriteExt::flush(&mut c).await?;
            std::future::poll_fn(|cx| {
                match tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut b), cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(())),
                }
            })
            .await?;
            tokio::io::copy_bidirectional(&mut c, &mut b).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        let ended = tokio::select! {
            r = tunnel => match r {
                Ok(()) => Termination::NORMAL,
                Err(e) => {
                    tracing::debug!(error = %e, "upgraded tunnel ended");
                    if activity.write_stalled() {
                        inc(&shared.vs.client_timeouts);
                        Termination::new('c', 'D')
                    } else if client.failed {
                        Termination::new('C', 'D')
                    } else {
                        Termination::new('S', 'D')
                    }
                }
            },
            _ = kill.changed() => Termination::new('K', 'D'),
        };
        let entry = log.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut entry) = entry {
            entry.bytes += client.written;
            entry.termination = ended;
        }
        crate::end_connection(guards.0);
        crate::end_request(guards.1);
    });
}

/// A client connection upgraded by its `101`, as the tunnel copies it ([`tunnel_io`]): a
/// plain one (`plain`) is a [`Batched`] stream, whose writes go direct.
fn client_tunnel_io(up: hyper::upgrade::Upgraded, plain: bool) -> Box<dyn TunnelIo> {
    tunnel_io(up, plain, |io: &mut Prefixed<Batched>| {
        io.get_mut().go_direct()
    })
}

/// An HTTP/2 request's `cookie` fields, which a client may send one per cookie (RFC 9113
/// §8.2.3), joined into one with `; ` before the request goes on in HTTP/1.1, where a
/// server may read only one `Cookie` line (RFC 6265 §5.4).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid field values joined by `; ` are one valid field value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// What a tunnel's client side did: the bytes written to it, and whether a read or write
/// on it failed (the client's connection, not the backend's, ended the tunnel).
#[derive(Debug, Default)]
struct Watched {
    written: u64,
    failed: bool,
}

impl Watched {
    /// `io`, reporting to this.
    fn watch<T>(&mut self, io: T) -> WatchedIo<'_, T> {
        WatchedIo { io, watch: self }
    }
}

/// A tunnel's client side, counted in its [`Watched`].
struct WatchedIo<'a, T> {
    io: T,
    watch: &'a mut Watched,
}

impl<T> WatchedIo<'_, T> {
    fn note<R>(&mut self, r: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if let Poll::Ready(Err(_)) = &r {
            self.watch.failed = true;
        }
        r
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WatchedIo<'_, T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        this.note(r)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WatchedIo<'_, T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.watch.written += n as u64;
        }
        this.note(r)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.io).poll_flush(cx);
        this.note(r)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.io).poll_shutdown(cx);
        this.note(r)
    }
}

/// A `Content-Length` given as a list of equal values (RFC 9110 §8.6; hyper accepted it and
/// framed the body by it), on one line or several, is sent on as its one value, as HAProxy
/// does: a next hop may refuse the list or read it otherwise.
fn single_content_length(headers: &mut http::HeaderMap) {
    let mut lines = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = lines.next() else {
        return;
    };
    if lines.next().is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let one = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if let Ok(v) = HeaderValue::from_bytes(one) {
        headers.insert(CONTENT_LENGTH, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cookies_are_joined_in_their_order() {
        let mut h = http::HeaderMap::new();
        join_cookies(&mut h);
        assert!(h.is_empty());
        h.append("cookie", HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1"]);
        h.append("cookie", HeaderValue::from_static("b=2; c=3"));
        h.append("cookie", HeaderValue::from_static("d=4"));
        h.append("x-other", HeaderValue::from_static("z"));
        join_cookies(&mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2; c=3; d=4"]
        );
        assert_eq!(h["x-other"], "z");
    }

    #[test]
    fn the_http2_preface_is_told_from_an_http1_request_by_its_first_differing_byte() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            for (sent, expected) in [
                (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"[..], Preface::Http2),
                (b"GET / HTTP/1.1\r\n", Preface::Other),
                // "PR" then a byte that differs: HTTP/1 (a PROPFIND).
                (b"PROPFIND / HTTP/1.1\r\n", Preface::Other),
                // Part of the preface and no more: the deadline.
                (b"PRI * HTTP/2.0\r\n", Preface::TimedOut),
            ] {
                let mut client = TcpStream::connect(addr).await.unwrap();
                let (mut server, _) = listener.accept().await.unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut client, sent)
                    .await
                    .unwrap();
                let mut early = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
                assert_eq!(
                    read_preface(&mut server, &mut early, deadline).await,
                    expected
                );
                // What was read is kept for the server that goes on.
                assert!(sent.starts_with(&early) && !early.is_empty());
            }
        });
    }

    #[test]
    fn replay_rebuilds_the_same_head_with_repeated_names_in_order() {
        let mut headers = http::HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append(HOST, HeaderValue::from_static("example.com"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-forwarded-for", HeaderValue::from_static("198.18.0.1"));
        let replay = Replay {
            method: Method::PUT,
            uri: Uri::from_static("/p?q=1"),
            version: Version::HTTP_11,
            headers: headers
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            body: Bytes::from_static(b"body"),
            after_failure: true,
        };
        for _ in 0..2 {
            let r = replay.build();
            assert_eq!(r.body().size_hint().exact(), Some(4), "the body goes again");
            assert_eq!(r.method(), Method::PUT);
            assert_eq!(r.uri(), "/p?q=1");
            assert_eq!(r.version(), Version::HTTP_11);
            assert_eq!(r.headers(), &headers);
            let a: Vec<_> = r.headers().get_all("x-a").iter().collect();
            assert_eq!(a, ["1", "2"]);
        }
        let bodiless = Replay {
            body: Bytes::new(),
            ..replay
        };
        assert!(bodiless.build().body().is_end_stream());
    }
}
