//! Pooled HTTP/1.1 connections to backends over `hyper::client::conn::http1`: one idle list
//! per backend (its address and counters: one address in two route pools is two backends,
//! each counting its own bytes), most recently used first, bounded by
//! [`Limits::max_idle_per_backend`](super::Limits::max_idle_per_backend), expired after
//! [`Timeouts::backend_idle`](super::Timeouts::backend_idle).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use lb_core::BackendStats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use tokio_rustls::client::TlsStream;

use super::backend_tls::BackendTls;
use super::body::ClientBody;
use super::error::ForwardError;

/// The body of a request sent to a backend: the client's, or empty on a replay.
pub(crate) type BackendBody = Either<ClientBody, Empty<Bytes>>;

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
    Plain(TcpStream),
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

/// An idle list's key: the backend's address, the address of its counters, and the
/// [`BackendTls::id`] its connections were made with (0: plain TCP).
type ListKey = (SocketAddr, usize, usize);

#[derive(Debug)]
struct IdleConn {
    tx: SendRequest<BackendBody>,
    since: Instant,
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
    pub(crate) tx: SendRequest<BackendBody>,
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
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    builder: Builder,
}

/// hyper's own header-count limit, kept on the stack: a limit is set only when it differs
/// (once set, hyper moves the headers to the heap, about 5 % slower).
pub(crate) const HYPER_MAX_HEADERS: usize = 100;

impl ConnPool {
    /// `max_headers`: the most header lines a response may have (the requests' limit).
    pub(crate) fn new(
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        max_headers: usize,
    ) -> Self {
        let mut builder = Builder::new();
        // A header continued on the next line (obs-fold, RFC 9112 §5.2) is joined with
        // spaces, as HAProxy does, rather than the whole response refused (502).
        builder.allow_obsolete_multiline_headers_in_responses(true);
        // As for requests: hyper keeps 100 on the stack unless a limit is set.
        if max_headers != HYPER_MAX_HEADERS {
            builder.max_headers(max_headers);
        }
        Self {
            lists: RwLock::default(),
            max_idle,
            idle_timeout,
            connect_timeout,
            builder,
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
    /// ([`Counted`]). The connect and the TLS handshake share the connect timeout.
    ///
    /// # Errors
    /// [`ForwardError::Connect`], [`ForwardError::ConnectTimeout`], [`ForwardError::Tls`]
    /// or [`ForwardError::Handshake`] when a new connection cannot be made.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection being made is dropped; pooled ones are untouched.
    pub(crate) async fn checkout(
        &self,
        addr: SocketAddr,
        stats: &Arc<BackendStats>,
        tls: Option<&BackendTls>,
        reuse: bool,
    ) -> Result<Checkout, ForwardError> {
        // The counters' address tells two backends of one address apart; a connection in
        // the list holds them, so the address is not reused while the list is in use. The
        // pool holds its TLS configuration as long as this proxy runs.
        let list = self.list((
            addr,
            Arc::as_ptr(stats) as usize,
            tls.map_or(0, BackendTls::id),
        ));
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
                        tx: idle.tx,
                        reused: true,
                        list,
                    });
                }
            }
        }
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
            None => BackendIo::Plain(stream),
            Some(tls) => match tokio::time::timeout_at(deadline, tls.connect(addr, stream)).await {
                Ok(Ok(s)) => BackendIo::Tls(Box::new(s)),
                Ok(Err(source)) => {
                    return Err(ForwardError::Tls {
                        backend: addr,
                        source,
                    })
                }
                Err(_) => return Err(ForwardError::ConnectTimeout { backend: addr }),
            },
        };
        let (tx, conn) = self
            .builder
            .handshake(TokioIo::new(Counted {
                inner,
                stats: Arc::clone(stats),
            }))
            .await
            .map_err(|source| ForwardError::Handshake {
                backend: addr,
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended");
            }
        });
        Ok(Checkout {
            tx,
            reused: false,
            list,
        })
    }

    /// Returns a connection whose response is complete to its idle list, unless it is
    /// closed or the list is full.
    pub(crate) fn checkin(&self, list: &IdleList, tx: SendRequest<BackendBody>) {
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

    /// Drops idle connections older than the idle timeout or already closed.
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
    }
}
