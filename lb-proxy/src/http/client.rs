//! Pooled connections to backends.
//!
//! - HTTP/1.1 over `hyper::client::conn::http1`: one idle list per backend (its address and
//!   counters: one address in two route pools is two backends, each counting its own
//!   bytes), most recently used first, bounded by
//!   [`Limits::max_idle_per_backend`](super::Limits::max_idle_per_backend), expired after
//!   [`Timeouts::backend_idle`](super::Timeouts::backend_idle).
//! - HTTP/2 over `hyper::client::conn::http2` ([`HttpPool::http2`](super::HttpPool::http2)):
//!   a backend's requests share its connections as streams; another connection is made
//!   when each open one has as many streams as the backend allows (its
//!   `SETTINGS_MAX_CONCURRENT_STREAMS`), up to [`MAX_H2_CONNS_PER_BACKEND`]; a closed or
//!   retired one ([`Sender::retire`]) is replaced by the next request, and one without a
//!   stream for [`Timeouts::backend_idle`](super::Timeouts::backend_idle) is let go.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use lb_core::BackendStats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use tokio_rustls::client::TlsStream;

use super::backend_tls::BackendTls;
use super::batch::{Batched, WriteBatch};
use super::body::ClientBody;
use super::error::ForwardError;

/// The body of a request sent to a backend: the client's as it comes, or one held whole
/// (a replay's, a prefetched one: [`super::body::prefetch`]).
pub(crate) type BackendBody = Either<ClientBody, Full<Bytes>>;

/// A connection to a backend that adds what it writes and reads to that backend's byte
/// counters ([`BackendStats::add_bytes`]: to the backend, to the client), heads and bodies
/// as they cross the socket, and an upgraded connection's tunnel too — as HAProxy's
/// per-server `bin`/`bout` count what crossed the server side. Vectored writes pass through.
///
/// Over TLS it counts the plaintext (the requests and responses), as over plain TCP.
#[derive(Debug)]
struct Counted {
    inner: BackendIo,
    stats: Arc<BackendStats>,
}

/// A backend connection: plain TCP, or TLS over it ([`BackendTls`]).
#[derive(Debug)]
enum BackendIo {
    Plain(Batched),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BackendIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.stats.add_bytes(0, n as u64);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.stats.add_bytes(n as u64, 0);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.stats.add_bytes(n as u64, 0);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A backend connection upgraded by its `101`, as the tunnel copies it
/// ([`super::io::tunnel_io`]): a plain one's writes go direct.
pub(crate) fn backend_tunnel_io(up: hyper::upgrade::Upgraded) -> Box<dyn super::io::TunnelIo> {
    super::io::tunnel_io(up, true, |io: &mut Counted| {
        if let BackendIo::Plain(b) = &mut io.inner {
            b.go_direct();
        }
    })
}

/// An idle list's key: the backend's address, the address of its counters, and the
/// [`BackendTls::id`] its connections were made with (0: plain TCP).
type ListKey = (SocketAddr, usize, usize);

#[derive(Debug)]
struct IdleConn {
    tx: http1::SendRequest<BackendBody>,
    since: Instant,
}

/// One of a backend's HTTP/2 connections.
#[derive(Debug)]
struct SharedConn {
    tx: http2::SendRequest<BackendBody>,
    streams: Arc<Streams>,
    /// When a request last took it.
    used: Instant,
}

/// An HTTP/2 connection's streams: those open (requests taken until their response ends),
/// and how many the backend allows (its `SETTINGS_MAX_CONCURRENT_STREAMS`, RFC 9113
/// §6.5.2), noted by the connection's task as it changes.
#[derive(Debug)]
struct Streams {
    open: AtomicUsize,
    max: AtomicUsize,
    /// Set when it takes no more requests ([`Sender::retire`]): it failed one at the
    /// connection's level, its backend is going away, or it answered nothing in time. Its
    /// streams still running finish on it.
    retired: std::sync::atomic::AtomicBool,
    /// Response heads received on it ([`Sender::answered`]): a stream's timeout while others
    /// were answered is that request's slowness, not a connection that stopped answering.
    answers: AtomicUsize,
}

impl Streams {
    fn has_room(&self) -> bool {
        self.open.load(Ordering::Relaxed) < self.max.load(Ordering::Relaxed).max(1)
    }
}

/// A request's stream on an HTTP/2 connection, counted open until it is dropped (held,
/// not read).
#[derive(Debug)]
pub(crate) struct Stream(Arc<Streams>);

impl Stream {
    fn open(streams: &Arc<Streams>) -> Self {
        streams.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(streams))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The most HTTP/2 connections kept to one backend: more are made when the open ones have
/// as many streams as the backend allows (as Envoy and HAProxy open another connection),
/// up to this; past it, requests share the least busy one and wait in it for a stream.
const MAX_H2_CONNS_PER_BACKEND: usize = 16;

/// A backend's HTTP/2 connections, behind an async lock that a request making one holds:
/// the requests arriving meanwhile wait for it rather than each making one.
#[derive(Debug, Default)]
struct SharedSlot {
    conns: Vec<SharedConn>,
    /// The last connect that failed: when it did, and how. The requests that waited for it
    /// get the same answer rather than each trying again in turn (a backend that times out
    /// would hold the last of them for as many connect timeouts).
    failed: Option<(Instant, FailedConnect)>,
}

impl SharedSlot {
    /// A stream on a connection with room; past [`MAX_H2_CONNS_PER_BACKEND`], on the least
    /// busy one. Closed connections are dropped from the slot first.
    fn take(&mut self, now: Instant) -> Option<Sender> {
        self.conns
            .retain(|c| !c.tx.is_closed() && !c.streams.retired.load(Ordering::Relaxed));
        let full = self.conns.len() >= MAX_H2_CONNS_PER_BACKEND;
        let c = match self.conns.iter_mut().find(|c| c.streams.has_room()) {
            Some(c) => c,
            None if full => self
                .conns
                .iter_mut()
                .min_by_key(|c| c.streams.open.load(Ordering::Relaxed))?,
            None => return None,
        };
        c.used = now;
        Some(Sender::Http2(c.tx.clone(), Stream::open(&c.streams)))
    }
}

/// A failed connect, kept to answer the requests that waited for it.
#[derive(Debug, Clone)]
enum FailedConnect {
    Timeout,
    Connect(io::ErrorKind, String),
    Tls(io::ErrorKind, String),
}

impl FailedConnect {
    fn of(e: &ForwardError) -> Self {
        match e {
            ForwardError::ConnectTimeout { .. } => Self::Timeout,
            ForwardError::Connect { source, .. } => {
                Self::Connect(source.kind(), source.to_string())
            }
            ForwardError::Tls { source, .. } => Self::Tls(source.kind(), source.to_string()),
            other => Self::Connect(io::ErrorKind::Other, other.to_string()),
        }
    }

    fn error(&self, backend: SocketAddr) -> ForwardError {
        match self {
            Self::Timeout => ForwardError::ConnectTimeout { backend },
            Self::Connect(kind, m) => ForwardError::Connect {
                backend,
                source: io::Error::new(*kind, m.clone()),
            },
            Self::Tls(kind, m) => ForwardError::Tls {
                backend,
                source: io::Error::new(*kind, m.clone()),
            },
        }
    }
}

/// A failed [`ConnPool::checkout`]: the error, and whether this request made the
/// connection attempt that failed. Requests that waited for another request's HTTP/2
/// connect get its failure without an attempt of their own: the backend failed once, and
/// is counted (and told to passive health) once, by the request that tried.
#[derive(Debug)]
pub(crate) struct CheckoutError {
    pub(crate) error: ForwardError,
    pub(crate) attempted: bool,
}

impl CheckoutError {
    fn attempted(error: ForwardError) -> Self {
        Self {
            error,
            attempted: true,
        }
    }
}

/// A connection to send one request on.
#[derive(Debug)]
pub(crate) enum Sender {
    /// An HTTP/1.1 connection, this request's alone until its response ends.
    Http1(http1::SendRequest<BackendBody>),
    /// One of a backend's HTTP/2 connections, shared with its other requests; the stream
    /// counts open until this is dropped.
    Http2(http2::SendRequest<BackendBody>, Stream),
}

impl Sender {
    /// Takes an HTTP/2 connection out of use: no more requests are given to it (its
    /// streams still running finish). Nothing for an HTTP/1.1 one, which is not pooled
    /// again after a failure.
    pub(crate) fn retire(&self) {
        if let Self::Http2(_, stream) = self {
            stream.0.retired.store(true, Ordering::Relaxed);
        }
    }

    /// How many response heads its HTTP/2 connection has received (0 for HTTP/1.1). A
    /// request that timed out on a connection whose count moved meanwhile leaves it in use:
    /// only its stream is reset, as HAProxy and Envoy do, while the other streams are
    /// answered.
    pub(crate) fn answers(&self) -> usize {
        match self {
            Self::Http1(_) => 0,
            Self::Http2(_, stream) => stream.0.answers.load(Ordering::Relaxed),
        }
    }

    /// Notes a response head received on its HTTP/2 connection ([`answers`](Self::answers)).
    pub(crate) fn note_answer(&self) {
        if let Self::Http2(_, stream) = self {
            stream.0.answers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends `req`; on failure, the request is handed back if it was not sent
    /// (`TrySendError::take_message`).
    pub(crate) fn try_send_request(
        &mut self,
        req: Request<BackendBody>,
    ) -> impl Future<
        Output = Result<
            Response<hyper::body::Incoming>,
            hyper::client::conn::TrySendError<Request<BackendBody>>,
        >,
    > {
        match self {
            Self::Http1(tx) => futures::future::Either::Left(tx.try_send_request(req)),
            Self::Http2(tx, _) => futures::future::Either::Right(tx.try_send_request(req)),
        }
    }
}

/// The idle connections to one backend.
#[derive(Debug, Default)]
pub(crate) struct IdleList {
    conns: Mutex<Vec<IdleConn>>,
}

impl IdleList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection taken from the pool (or freshly made) for one request.
#[derive(Debug)]
pub(crate) struct Checkout {
    pub(crate) tx: Sender,
    /// Whether it served an earlier request (a failure may be a keep-alive race).
    pub(crate) reused: bool,
    pub(crate) list: Arc<IdleList>,
}

/// Every backend's idle list.
#[derive(Debug)]
pub(crate) struct ConnPool {
    /// Keyed by backend address, counters and TLS configuration ([`ListKey`]), which come from configuration,
    /// not from clients: foldhash's fast hash is enough (SipHash cost about 200 instructions
    /// per request here).
    lists: RwLock<HashMap<ListKey, Arc<IdleList>, foldhash::fast::RandomState>>,
    /// Each HTTP/2 backend's connection, by the same key.
    shared:
        Mutex<HashMap<ListKey, Arc<tokio::sync::Mutex<SharedSlot>>, foldhash::fast::RandomState>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    builder: http1::Builder,
    builder2: http2::Builder<TokioExecutor>,
    /// Where plain connections' small writes are queued ([`super::batch`]).
    batch: Option<Arc<WriteBatch>>,
}

/// hyper's own header-count limit, kept on the stack: a limit is set only when it differs
/// (once set, hyper moves the headers to the heap, about 5 % slower).
pub(crate) const HYPER_MAX_HEADERS: usize = 100;

/// The decoded size of an HTTP/2 backend's response header fields (RFC 9113
/// `SETTINGS_MAX_HEADER_LIST_SIZE`), bytes: hyper's bound on an HTTP/1.1 head.
const MAX_H2_HEADER_LIST: u32 = 400 * 1024;

/// An HTTP/2 backend stream's flow-control window, bytes (hyper's default).
const H2_STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// An HTTP/2 backend connection's flow-control window, bytes: 8 streams' windows. Bounds
/// what clients that do not read can leave buffered: 16 MiB per connection, at most
/// [`MAX_H2_CONNS_PER_BACKEND`] connections per backend.
const H2_CONNECTION_WINDOW: u32 = 8 * H2_STREAM_WINDOW;

/// The streams an HTTP/2 connection is taken to allow until the backend's SETTINGS say
/// (hyper's and h2's initial `max_send_streams`).
const INITIAL_MAX_SEND_STREAMS: usize = 100;

impl ConnPool {
    /// `max_headers`: the most header lines a response may have (the requests' limit);
    /// `batch`: where plain connections' small writes are queued (none: written at once).
    pub(crate) fn new(
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        max_headers: usize,
        batch: Option<Arc<WriteBatch>>,
    ) -> Self {
        let mut builder = http1::Builder::new();
        // A header continued on the next line (obs-fold, RFC 9112 §5.2) is joined with
        // spaces, as HAProxy does, rather than the whole response refused (502).
        builder.allow_obsolete_multiline_headers_in_responses(true);
        // As for requests: hyper keeps 100 on the stack unless a limit is set.
        if max_headers != HYPER_MAX_HEADERS {
            builder.max_headers(max_headers);
        }
        let mut builder2 = http2::Builder::new(TokioExecutor::new());
        // A response's header fields, decoded, bounded as hyper bounds an HTTP/1.1 head
        // (its `max_buf_size`, about 400 KiB); h2's default of 16 KiB would turn a
        // backend's large cookie into a 502.
        builder2.max_header_list_size(MAX_H2_HEADER_LIST);
        // Each stream's response may wait in its window for a slow client: the
        // connection's window holds many of them, so that a few slow readers do not stall
        // every other client's responses from this backend (Envoy's windows are 256 MiB).
        builder2.initial_stream_window_size(H2_STREAM_WINDOW);
        builder2.initial_connection_window_size(H2_CONNECTION_WINDOW);
        // No PINGs (as HAProxy and Envoy by default): gRPC servers take a client's PINGs
        // more often than every 5 minutes as abuse (grpc-go's GOAWAY `too_many_pings`). A
        // connection that stops answering is retired at its first response timeout.
        Self {
            lists: RwLock::default(),
            shared: Mutex::default(),
            max_idle,
            idle_timeout,
            connect_timeout,
            builder,
            builder2,
            batch,
        }
    }

    fn list(&self, key: ListKey) -> Arc<IdleList> {
        if let Some(l) = self
            .lists
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(l);
        }
        Arc::clone(
            self.lists
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default(),
        )
    }

    /// A ready connection to `addr`: the most recent idle one that is still open (when
    /// `reuse`), else a new one, over TLS with `tls`, counting its bytes into `stats`
    /// ([`Counted`]). The connect and the TLS handshake share the connect timeout. With
    /// `http2`, a stream on one of the backend's HTTP/2 connections with room (not a
    /// retired one) when `reuse`, else on a new one.
    ///
    /// # Errors
    /// [`ForwardError::Connect`], [`ForwardError::ConnectTimeout`], [`ForwardError::Tls`]
    /// or [`ForwardError::Handshake`] when a new connection cannot be made
    /// ([`CheckoutError`]: by this request, or by another one it waited for).
    ///
    /// # Cancel safety
    /// Cancel safe: a connection being made is dropped; pooled ones are untouched.
    pub(crate) async fn checkout(
        &self,
        addr: SocketAddr,
        stats: &Arc<BackendStats>,
        tls: Option<&BackendTls>,
        (reuse, http2): (bool, bool),
    ) -> Result<Checkout, CheckoutError> {
        // The counters' address tells two backends of one address apart; a connection in
        // the list holds them, so the address is not reused while the list is in use. The
        // pool holds its TLS configuration as long as this proxy runs.
        let key = (
            addr,
            Arc::as_ptr(stats) as usize,
            tls.map_or(0, BackendTls::id),
        );
        let list = self.list(key);
        if http2 {
            return self.checkout_shared(key, stats, tls, reuse, list).await;
        }
        if reuse {
            let now = Instant::now();
            loop {
                let Some(mut idle) = list.lock().pop() else {
                    break;
                };
                if idle.tx.is_closed() || now.duration_since(idle.since) >= self.idle_timeout {
                    continue;
                }
                // A pooled connection is ready, or about to be: its task may not have run
                // since the response ended. Bounded all the same (by the connect timeout): a
                // connection that does not become ready is dropped, not waited on.
                let ready = idle.tx.is_ready()
                    || matches!(
                        tokio::time::timeout(self.connect_timeout, idle.tx.ready()).await,
                        Ok(Ok(()))
                    );
                if ready {
                    return Ok(Checkout {
                        tx: Sender::Http1(idle.tx),
                        reused: true,
                        list,
                    });
                }
            }
        }
        let io = self
            .connect(addr, stats, tls, false)
            .await
            .map_err(CheckoutError::attempted)?;
        let (tx, conn) = self.builder.handshake(io).await.map_err(|source| {
            CheckoutError::attempted(ForwardError::Handshake {
                backend: addr,
                source,
            })
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended");
            }
        });
        Ok(Checkout {
            tx: Sender::Http1(tx),
            reused: false,
            list,
        })
    }

    /// [`ConnPool::checkout`] of an HTTP/2 backend's shared connection.
    #[cold]
    #[inline(never)]
    async fn checkout_shared(
        &self,
        key: ListKey,
        stats: &Arc<BackendStats>,
        tls: Option<&BackendTls>,
        reuse: bool,
        list: Arc<IdleList>,
    ) -> Result<Checkout, CheckoutError> {
        let slot = Arc::clone(
            self.shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default(),
        );
        let waiting_since = Instant::now();
        // Held while a connection is made: bounded by the connect timeout.
        let mut slot = slot.lock().await;
        // A connection another request made has served others: a failure on it may be
        // its closing, as on a kept-alive HTTP/1.1 one.
        if let Some(tx) = reuse.then(|| slot.take(Instant::now())).flatten() {
            return Ok(Checkout {
                tx,
                reused: true,
                list,
            });
        }
        if let Some((at, failed)) = &slot.failed {
            if *at >= waiting_since {
                return Err(CheckoutError {
                    error: failed.error(key.0),
                    attempted: false,
                });
            }
        }
        // A new connection to a backend allows what its others do until its own SETTINGS
        // say (h2 would take 100, and queue the streams past the backend's limit).
        let known_max = slot
            .conns
            .iter()
            .map(|c| c.streams.max.load(Ordering::Relaxed))
            .min();
        match self.connect_h2(key.0, stats, tls, known_max).await {
            Ok((tx, streams)) => {
                let now = Instant::now();
                let stream = Stream::open(&streams);
                slot.conns.push(SharedConn {
                    tx: tx.clone(),
                    streams,
                    used: now,
                });
                slot.failed = None;
                Ok(Checkout {
                    tx: Sender::Http2(tx, stream),
                    reused: false,
                    list,
                })
            }
            Err(e) => {
                slot.failed = Some((Instant::now(), FailedConnect::of(&e)));
                Err(CheckoutError::attempted(e))
            }
        }
    }

    /// A new HTTP/2 connection to `addr`, run by a task of its own.
    async fn connect_h2(
        &self,
        addr: SocketAddr,
        stats: &Arc<BackendStats>,
        tls: Option<&BackendTls>,
        known_max: Option<usize>,
    ) -> Result<(http2::SendRequest<BackendBody>, Arc<Streams>), ForwardError> {
        let io = self.connect(addr, stats, tls, true).await?;
        let builder = match known_max {
            None => Cow::Borrowed(&self.builder2),
            Some(max) => {
                let mut b = self.builder2.clone();
                b.initial_max_send_streams(max);
                Cow::Owned(b)
            }
        };
        let (tx, conn) = builder
            .handshake(io)
            .await
            .map_err(|source| ForwardError::Handshake {
                backend: addr,
                source,
            })?;
        let streams = Arc::new(Streams {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(known_max.unwrap_or(INITIAL_MAX_SEND_STREAMS)),
            retired: std::sync::atomic::AtomicBool::new(false),
            answers: AtomicUsize::new(0),
        });
        let noted = Arc::clone(&streams);
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // hyper's connection task is woken by the requests sent on it, not by the
            // backend's SETTINGS (h2 reads them in a task of its own): the limit is noted
            // at each request and, for a connection that gets none for a while after its
            // first, a few times soon after it is made.
            let start = Instant::now();
            let mut looks = [10, 100, 1000]
                .map(|ms| start + Duration::from_millis(ms))
                .into_iter();
            let mut look = looks
                .next()
                .map(|at| Box::pin(tokio::time::sleep_until(at)));
            let r = std::future::poll_fn(|cx| {
                let r = conn.as_mut().poll(cx);
                while let Some(sleep) = &mut look {
                    if sleep.as_mut().poll(cx).is_pending() {
                        break;
                    }
                    look = looks
                        .next()
                        .map(|at| Box::pin(tokio::time::sleep_until(at)));
                }
                noted
                    .max
                    .store(conn.current_max_send_streams(), Ordering::Relaxed);
                r
            })
            .await;
            if let Err(e) = r {
                tracing::debug!(backend = %addr, error = %e, "backend HTTP/2 connection ended");
            }
        });
        Ok((tx, streams))
    }

    /// A new connection to `addr`, TLS set up with `tls` (offering `h2` when `http2`),
    /// counting its bytes into `stats`.
    async fn connect(
        &self,
        addr: SocketAddr,
        stats: &Arc<BackendStats>,
        tls: Option<&BackendTls>,
        http2: bool,
    ) -> Result<TokioIo<Counted>, ForwardError> {
        // One deadline for the connect and the TLS handshake, as HAProxy's `timeout
        // connect` covers both.
        let deadline = Instant::now() + self.connect_timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(ForwardError::ConnectTimeout { backend: addr }),
            Ok(Err(source)) => {
                return Err(ForwardError::Connect {
                    backend: addr,
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let inner = match tls {
            None => BackendIo::Plain(Batched::new(stream, self.batch.as_ref())),
            Some(tls) => {
                match tokio::time::timeout_at(deadline, tls.connect(addr, stream, http2)).await {
                    // A backend that does not choose `h2` would get HTTP/2 it does not
                    // speak: one clear TLS failure instead of every request failing.
                    Ok(Ok(s)) if http2 && s.get_ref().1.alpn_protocol() != Some(b"h2") => {
                        return Err(ForwardError::Tls {
                            backend: addr,
                            source: io::Error::other(
                                "the backend did not choose ALPN h2 (it is spoken to in HTTP/2)",
                            ),
                        })
                    }
                    Ok(Ok(s)) => BackendIo::Tls(Box::new(s)),
                    Ok(Err(source)) => {
                        return Err(ForwardError::Tls {
                            backend: addr,
                            source,
                        })
                    }
                    Err(_) => return Err(ForwardError::ConnectTimeout { backend: addr }),
                }
            }
        };
        Ok(TokioIo::new(Counted {
            inner,
            stats: Arc::clone(stats),
        }))
    }

    /// Returns a connection whose response is complete to its idle list, unless it is
    /// closed or the list is full. An HTTP/2 connection stays shared: nothing to do.
    pub(crate) fn checkin(&self, list: &IdleList, tx: Sender) {
        let Sender::Http1(tx) = tx else {
            return;
        };
        if tx.is_closed() {
            return;
        }
        let mut conns = list.lock();
        if conns.len() < self.max_idle {
            conns.push(IdleConn {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// Drops idle connections older than the idle timeout or already closed, then the idle
    /// lists and HTTP/2 slots left empty that no request holds: those of backends a reload
    /// removed would otherwise stay, one per backend and reload (one still in use comes
    /// back at its next request).
    pub(crate) fn purge(&self) {
        let now = Instant::now();
        let lists: Vec<Arc<IdleList>> = self
            .lists
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for l in lists {
            l.lock()
                .retain(|c| !c.tx.is_closed() && now.duration_since(c.since) < self.idle_timeout);
        }
        // An HTTP/2 connection no request took for the idle timeout is let go: it closes
        // once the streams still on it end.
        let slots: Vec<_> = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for slot in slots {
            // One being made (or taken) now is not idle.
            if let Ok(mut slot) = slot.try_lock() {
                slot.conns.retain(|c| {
                    !c.tx.is_closed()
                        && !c.streams.retired.load(Ordering::Relaxed)
                        && (c.streams.open.load(Ordering::Relaxed) > 0
                            || now.duration_since(c.used) < self.idle_timeout)
                });
            }
        }
        // Under the maps' locks nothing clones an entry: one only the map holds stays
        // unheld while it is looked at.
        self.lists
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, l| Arc::strong_count(l) > 1 || !l.lock().is_empty());
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, slot| {
                Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |s| !s.conns.is_empty())
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle lists and HTTP/2 slots of backends no request uses any more (a reload
    /// removed them) go at the next purge once empty; one a request holds stays.
    #[tokio::test]
    async fn purge_drops_empty_unheld_lists_and_slots() {
        let pool = ConnPool::new(
            8,
            Duration::from_secs(60),
            Duration::from_secs(1),
            100,
            None,
        );
        let key = |port| (SocketAddr::from(([127, 0, 0, 1], port)), 1, 0);
        let held = pool.list(key(1));
        drop(pool.list(key(2)));
        let slot =
            |k| {
                Arc::clone(
                    pool.shared.lock().unwrap().entry(k).or_insert_with(|| {
                        Arc::new(tokio::sync::Mutex::new(SharedSlot::default()))
                    }),
                )
            };
        let held_slot = slot(key(3));
        drop(slot(key(4)));
        pool.purge();
        let lists: Vec<_> = pool.lists.read().unwrap().keys().copied().collect();
        assert_eq!(lists, [key(1)]);
        let slots: Vec<_> = pool.shared.lock().unwrap().keys().copied().collect();
        assert_eq!(slots, [key(3)]);
        drop((held, held_slot));
        pool.purge();
        assert!(pool.lists.read().unwrap().is_empty());
        assert!(pool.shared.lock().unwrap().is_empty());
    }
}
