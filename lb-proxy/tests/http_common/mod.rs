//! Test helpers for the HTTP mode: in-process hyper backends on loopback and a keep-alive
//! client. Everything started here stops when its guard drops.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A hyper backend on 127.0.0.1 answering:
/// - `/sleep/<ms>`: 200 after that long;
/// - `/status/<code>`: that status;
/// - `/ws` with `Upgrade`: 101, then echoes bytes;
/// - `/echo`: 200 with the request's body, its framing in `x-echo-framing` (`length` or
///   `chunked`);
/// - anything else: 200 `id=<id>`.
///
/// Every response carries `x-backend-id` and echoes `x-forwarded-*` / `forwarded` / `host`
/// / `cookie` as `x-echo-*` headers (repeated fields joined by ` | `). Dropping it (or [`TestBackend::kill`]) closes the listener and
/// every connection.
pub struct TestBackend {
    pub id: u32,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    /// With TLS ([`TestBackend::start_tls`]): the server name (SNI) of every completed
    /// handshake, in order (`None`: the client sent none).
    pub tls_names: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// With TLS: the handshakes that resumed an earlier session.
    pub tls_resumed: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

/// How long this test binary may run in all: past it, a test has hung (its own steps are
/// bounded, but not every await of a raw stream is), and the process aborts rather than
/// holding CI until its own limit.
const BINARY_BOUND: Duration = Duration::from_secs(15 * 60);

/// Starts, once per test binary, a thread that aborts the process after [`BINARY_BOUND`]
/// (the process's end ends it earlier).
pub fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // A plain thread on the wall clock: it must outlive any runtime a test pauses.
        #[allow(clippy::disallowed_methods)]
        std::thread::spawn(|| {
            std::thread::sleep(BINARY_BOUND);
            eprintln!("test binary still running after {BINARY_BOUND:?}: a test hangs; aborting");
            std::process::abort();
        });
    });
}

impl TestBackend {
    pub async fn start(id: u32) -> Self {
        Self::start_with_body(id, None).await
    }

    /// With a fixed body for every plain request (benchmarks).
    pub async fn start_with_body(id: u32, body: Option<Bytes>) -> Self {
        Self::start_inner(id, body, None).await
    }

    /// Speaking HTTPS with `config` (a connection whose handshake fails is closed).
    pub async fn start_tls(id: u32, config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(id, None, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_inner(
        id: u32,
        body: Option<Bytes>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        watchdog();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let tls_names = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tls_resumed = Arc::new(AtomicU64::new(0));
        let resumed = Arc::clone(&tls_resumed);
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let names = Arc::clone(&tls_names);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((stream, _)) = a else { continue };
                        let _ = stream.set_nodelay(true);
                        c.fetch_add(1, Ordering::Relaxed);
                        let r = Arc::clone(&r);
                        let body = body.clone();
                        let (tls, names) = (tls.clone(), Arc::clone(&names));
                        let resumed = Arc::clone(&resumed);
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                r.fetch_add(1, Ordering::Relaxed);
                                respond(id, req, body.clone())
                            });
                            let http = hyper::server::conn::http1::Builder::new();
                            let Some(tls) = tls else {
                                let _ = http
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .with_upgrades()
                                    .await;
                                return;
                            };
                            let handshake = tls.accept(stream);
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(Duration::from_secs(10), handshake).await
                            else {
                                return;
                            };
                            let conn = stream.get_ref().1;
                            let name = conn.server_name().map(str::to_owned);
                            if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                            names.lock().unwrap().push(name);
                            let _ = http
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            id,
            addr,
            connections,
            requests,
            tls_names,
            tls_resumed,
            task: Some(task),
        }
    }

    /// Closes the listener and every open connection now.
    pub async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn respond(
    id: u32,
    mut req: Request<Incoming>,
    fixed: Option<Bytes>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut status = StatusCode::OK;
    let mut body = fixed.unwrap_or_else(|| Bytes::from(format!("id={id}")));
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    } else if let Some(code) = path.strip_prefix("/status/") {
        status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
    } else if path == "/ws" && req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                // Echo until EOF (bounded by the test's own traffic).
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut().insert("x-backend-id", id.into());
        return Ok(r);
    } else if path == "/echo" {
        let framing = if req.headers().contains_key("content-length") {
            "length"
        } else if req.headers().contains_key("transfer-encoding") {
            "chunked"
        } else {
            "none"
        };
        body = req
            .body_mut()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut r = Response::new(Full::new(body));
        r.headers_mut()
            .insert("x-echo-framing", framing.parse().unwrap());
        r.headers_mut().insert("x-backend-id", id.into());
        return Ok(r);
    } else {
        // Read the request body (to its end) for POSTs.
        let _ = req.body_mut().collect().await;
    }
    let mut r = Response::new(Full::new(body.split_off(0)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("x-backend-id", id.into());
    for (from, to) in [
        ("x-forwarded-for", "x-echo-xff"),
        ("x-forwarded-proto", "x-echo-xfproto"),
        ("x-forwarded-port", "x-echo-xfport"),
        ("forwarded", "x-echo-forwarded"),
        ("host", "x-echo-host"),
        ("cookie", "x-echo-cookie"),
    ] {
        let joined: Vec<&str> = req
            .headers()
            .get_all(from)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !joined.is_empty() {
            h.insert(to, joined.join(" | ").parse().unwrap());
        }
    }
    Ok(r)
}

/// A pool over the backends (ids 1..), round robin unless told otherwise.
pub fn pool_of(backends: &[&TestBackend], algo: Algorithm) -> Arc<Pool> {
    let set = BackendSet::new(
        backends
            .iter()
            .map(|b| Backend::new(BackendId(b.id), b.addr))
            .collect(),
    )
    .unwrap();
    Arc::new(Pool::new(algo, set, PoolConfig::default()).unwrap())
}

/// A round-robin pool of one backend at `addr` (id 1), for hand-written backends.
pub fn pool_at(addr: SocketAddr) -> Arc<Pool> {
    let set = BackendSet::new(vec![Backend::new(BackendId(1), addr)]).unwrap();
    Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap())
}

/// Reads from `s` into `got` until it holds a complete request or response head (up to
/// `\r\n\r\n`); `false` at EOF or on an error first.
pub async fn read_head(s: &mut TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A port with nothing listening on it, below the ephemeral range (so no parallel test's
/// listener can take it).
pub async fn dead_addr() -> SocketAddr {
    lb_testkit::ports::dead_addr()
}

/// One keep-alive client connection.
pub struct Client {
    tx: SendRequest<Empty<Bytes>>,
    conn: JoinHandle<()>,
}

/// A stream whose first write goes out with `prefix` in front, in one `write`: a PROXY
/// header and a ClientHello in one segment, as a load balancer in front sends them.
struct PrefixFirstWrite {
    prefix: Vec<u8>,
    inner: TcpStream,
}

impl tokio::io::AsyncRead for PrefixFirstWrite {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PrefixFirstWrite {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let mut both = this.prefix.clone();
        both.extend_from_slice(buf);
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, &both) {
            // A loopback socket's empty send buffer takes these few hundred bytes whole.
            Poll::Ready(Ok(n)) if n == both.len() => {
                this.prefix.clear();
                Poll::Ready(Ok(buf.len()))
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Err(std::io::Error::other(format!(
                "short first write: {n} of {}",
                both.len()
            )))),
            other => other,
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Got {
    pub fn backend(&self) -> u32 {
        self.headers
            .get("x-backend-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A TLS client handshake (ALPN `http/1.1`) over `stream` with a server whose certificate
/// is `cert`, for the name `name`; panics after 10 s.
pub async fn tls_connect<S>(
    stream: S,
    cert: rustls_pki_types::CertificateDer<'static>,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<S>, std::io::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tls_connect_alpn(stream, cert, name, &[b"http/1.1"]).await
}

/// As [`tls_connect`], offering `alpn`.
pub async fn tls_connect_alpn<S>(
    stream: S,
    cert: rustls_pki_types::CertificateDer<'static>,
    name: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<S>, std::io::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
        .await
        .expect("handshake within 10 s")
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_from(addr).await.0
    }

    /// Also the client's own address.
    pub async fn connect_from(addr: SocketAddr) -> (Self, SocketAddr) {
        let s = TcpStream::connect(addr).await.unwrap();
        let local = s.local_addr().unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        (Self { tx, conn }, local)
    }

    /// A client of an HTTPS listener at `addr` that trusts `cert` and asks for `name`,
    /// after writing `before` (a PROXY header) on the socket. The handshake's error, if it
    /// fails.
    pub async fn connect_tls(
        addr: SocketAddr,
        cert: rustls_pki_types::CertificateDer<'static>,
        name: &str,
        before: &[u8],
    ) -> Result<Self, std::io::Error> {
        let s = PrefixFirstWrite {
            prefix: before.to_vec(),
            inner: TcpStream::connect(addr).await.unwrap(),
        };
        let tls = tls_connect(s, cert, name).await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { tx, conn })
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Got {
        self.send("GET", path, headers).await
    }

    /// Sends one request and reads the whole response (panics after 10 s).
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut b = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("host", "test.invalid");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Empty::new()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            self.tx.ready().await.unwrap();
            let resp = self.tx.send_request(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Got {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
        .await
        .expect("response within 10 s")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// Reads from a raw stream until EOF or `limit`, returning what arrived and whether EOF was
/// seen.
pub async fn read_until_eof(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}
