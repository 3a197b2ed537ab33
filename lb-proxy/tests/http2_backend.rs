//! HTTP/2 to backends (`HttpPool::http2`, HAProxy `server … proto h2`) against real HTTP/2
//! servers on loopback (in-process hyper servers, h2c and TLS with ALPN `h2`), with HTTP/1.1
//! and HTTP/2 clients.
#![cfg(feature = "http")]

mod http_common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use http_common::{dead_addr, read_head, watchdog, Client};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::http::{BackendTls, HttpPool, HttpProxy, HttpProxyConfig, Verify};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A hyper HTTP/2-only backend on 127.0.0.1 (h2c with prior knowledge, or TLS offering ALPN
/// `h2` alone). It answers:
/// - `/grpc`: the request body echoed, then trailers `grpc-status: 0` and
///   `x-echo-request-trailer` (the request's `x-client-trailer` trailer, if any);
/// - `/sleep/<ms>`: 200 after that long;
/// - anything else: 200 `id=<id>`.
///
/// Every response carries `x-backend-id` and echoes what the request arrived with: its
/// version, `:scheme`, `:authority`, `host`, `te` and `x-forwarded-for` as `x-echo-*`.
/// After `goaway_after` requests on one connection it shuts that connection down
/// gracefully (GOAWAY). Dropping it closes the listener and every connection.
struct H2Backend {
    id: u32,
    addr: SocketAddr,
    /// Connections accepted, and those still open.
    connections: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    conns: Arc<Mutex<Option<JoinSet<()>>>>,
    task: JoinHandle<()>,
}

impl H2Backend {
    async fn start(id: u32) -> Self {
        Self::start_with(id, None, None).await
    }

    async fn start_with(
        id: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
        goaway_after: Option<u64>,
    ) -> Self {
        watchdog();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(Mutex::new(Some(JoinSet::new())));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (c, o, r, set) = (
            Arc::clone(&connections),
            Arc::clone(&open),
            Arc::clone(&requests),
            Arc::clone(&conns),
        );
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                o.fetch_add(1, Ordering::Relaxed);
                let (o, r, acceptor) = (Arc::clone(&o), Arc::clone(&r), acceptor.clone());
                let serve = async move {
                    match acceptor {
                        None => serve_h2(stream, id, r, goaway_after).await,
                        Some(a) => {
                            if let Ok(Ok(s)) =
                                tokio::time::timeout(Duration::from_secs(10), a.accept(stream))
                                    .await
                            {
                                assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                                serve_h2(s, id, r, goaway_after).await;
                            }
                        }
                    }
                    o.fetch_sub(1, Ordering::Relaxed);
                };
                if let Some(s) = set.lock().unwrap().as_mut() {
                    s.spawn(serve);
                }
            }
        });
        Self {
            id,
            addr,
            connections,
            open,
            requests,
            conns,
            task,
        }
    }

    /// Closes every open connection at once (no GOAWAY), the listener staying up.
    fn drop_connections(&self) {
        let mut set = self.conns.lock().unwrap();
        if let Some(s) = set.as_mut() {
            s.abort_all();
        }
        *set = Some(JoinSet::new());
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
        self.conns.lock().unwrap().take();
    }
}

/// Serves one HTTP/2 connection as backend `id`, counting its requests into `requests`;
/// after `goaway_after` requests, shuts it down gracefully.
async fn serve_h2<S>(io: S, id: u32, requests: Arc<AtomicU64>, goaway_after: Option<u64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let (counted, notify) = (Arc::clone(&served), Arc::clone(&reached));
    let svc = service_fn(move |req| {
        requests.fetch_add(1, Ordering::Relaxed);
        let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
        if goaway_after.is_some_and(|limit| n >= limit) {
            notify.notify_one();
        }
        respond(id, req)
    });
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let mut shut = false;
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            tokio::select! {
                r = conn.as_mut() => return r,
                () = reached.notified(), if !shut => {
                    conn.as_mut().graceful_shutdown();
                    shut = true;
                }
            }
        }
    })
    .await;
}

fn echo_headers(h: &mut HeaderMap, id: u32, req: &Request<Incoming>) {
    h.insert("x-backend-id", id.into());
    h.insert(
        "x-echo-version",
        format!("{:?}", req.version()).parse().unwrap(),
    );
    let uri = req.uri();
    for (name, value) in [
        ("x-echo-scheme", uri.scheme_str().map(str::to_owned)),
        ("x-echo-authority", uri.authority().map(|a| a.to_string())),
        (
            "x-echo-host",
            req.headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        (
            "x-echo-te",
            req.headers()
                .get("te")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        (
            "x-echo-xff",
            req.headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
    ] {
        if let Some(v) = value {
            h.insert(name, v.parse().unwrap());
        }
    }
}

async fn respond(id: u32, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut headers = HeaderMap::new();
    echo_headers(&mut headers, id, &req);
    let mut resp = if path == "/grpc" {
        let collected = req.into_body().collect().await.unwrap();
        let request_trailer = collected
            .trailers()
            .and_then(|t| t.get("x-client-trailer"))
            .cloned();
        let data = collected.to_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        if let Some(t) = request_trailer {
            trailers.insert("x-echo-request-trailer", t);
        }
        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
            vec![Ok(Frame::data(data)), Ok(Frame::trailers(trailers))];
        let mut r = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed());
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        r
    } else {
        if let Some(ms) = path.strip_prefix("/sleep/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        let _ = req.into_body().collect().await;
        Response::new(Full::new(Bytes::from(format!("id={id}"))).boxed())
    };
    resp.headers_mut().extend(headers);
    Ok(resp)
}

/// A round-robin pool over `addrs` (ids 1..).
fn pool(addrs: &[SocketAddr]) -> Arc<Pool> {
    let set = BackendSet::new(
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Backend::new(BackendId(i as u32 + 1), *a))
            .collect(),
    )
    .unwrap();
    Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap())
}

async fn proxy(config: HttpProxyConfig, pool: HttpPool) -> HttpProxy {
    HttpProxy::bind("127.0.0.1:0".parse().unwrap(), config, vec![pool])
        .await
        .unwrap()
}

fn config() -> HttpProxyConfig {
    let mut c = HttpProxyConfig::new("h2-backends");
    c.default_pool = Some("grpc".into());
    c
}

/// Waits (5 s at most, polling every 10 ms) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn http1_requests_share_one_http2_connection_per_backend() {
    let (b1, b2) = (H2Backend::start(1).await, H2Backend::start(2).await);
    let p = proxy(
        config(),
        HttpPool::new("grpc", pool(&[b1.addr, b2.addr])).with_http2(),
    )
    .await;
    let addr = p.local_addr();
    // 5 client connections, 4 requests each, all in flight at once (each backend answers
    // after 100 ms): HTTP/1.1 backends would need 20 connections.
    let mut tasks = JoinSet::new();
    for _ in 0..5 {
        tasks.spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(
                    c.get(
                        "/sleep/100",
                        &[
                            ("host", "api.example:8443"),
                            ("x-forwarded-for", "192.0.2.7"),
                        ],
                    )
                    .await,
                );
            }
            got
        });
    }
    // Those four go one after another on each client connection; the five connections in
    // parallel.
    let mut seen = std::collections::HashMap::new();
    while let Some(r) = tasks.join_next().await {
        for g in r.unwrap() {
            assert_eq!(g.status, StatusCode::OK);
            assert_eq!(g.header("x-echo-version"), "HTTP/2.0");
            assert_eq!(g.header("x-echo-scheme"), "http");
            // The Host routed on is the :authority, not a second field beside it.
            assert_eq!(g.header("x-echo-authority"), "api.example:8443");
            assert_eq!(g.header("x-echo-host"), "");
            assert_eq!(g.header("x-echo-xff"), "192.0.2.7, 127.0.0.1");
            *seen.entry(g.backend()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.get(&1), Some(&10), "{seen:?}");
    assert_eq!(seen.get(&2), Some(&10), "{seen:?}");
    assert_eq!(
        b1.connections.load(Ordering::Relaxed),
        1,
        "one connection to backend 1"
    );
    assert_eq!(
        b2.connections.load(Ordering::Relaxed),
        1,
        "one connection to backend 2"
    );
    let s = p.stats();
    assert_eq!(s.virtual_server.requests, 20);
    assert_eq!(s.virtual_server.bad_gateway, 0);
}

#[tokio::test]
async fn grpc_trailers_pass_between_an_http2_client_and_an_http2_backend() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.http2 = true;
    let p = proxy(c, HttpPool::new("grpc", pool(&[b.addr])).with_http2()).await;
    let tcp = TcpStream::connect(p.local_addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Body>(TokioIo::new(tcp))
        .await
        .unwrap();
    let _conn = tokio::spawn(conn);
    // A unary gRPC call's shape: a length-prefixed message, `te: trailers`, a trailer of the
    // client's own after the body.
    let message = Bytes::from_static(b"\0\0\0\0\x05hello");
    let mut client_trailers = HeaderMap::new();
    client_trailers.insert("x-client-trailer", "t1".parse().unwrap());
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(message.clone())),
        Ok(Frame::trailers(client_trailers)),
    ];
    let req = Request::post("http://grpc.example/grpc")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)).boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), async {
        tx.ready().await.unwrap();
        tx.send_request(req).await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(
        h["x-echo-te"], "trailers",
        "te: trailers reaches the backend"
    );
    assert_eq!(h["x-echo-authority"], "grpc.example");
    assert_eq!(h["content-type"], "application/grpc");
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers["x-echo-request-trailer"], "t1",
        "the request's trailer reached the backend"
    );
    assert_eq!(collected.to_bytes(), message);
}

/// A self-signed certificate and a server configuration offering ALPN `h2` alone:
/// a client offering only `http/1.1` fails the handshake (rustls refuses a client with no
/// common protocol).
fn tls_h2_server() -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["backend.internal".into()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

#[tokio::test]
async fn tls_backends_are_spoken_to_in_http2_with_alpn_h2() {
    let b = H2Backend::start_with(1, Some(tls_h2_server()), None).await;
    let tls = BackendTls::new(Verify::None, None).unwrap();
    let p = proxy(
        config(),
        HttpPool::new("grpc", pool(&[b.addr]))
            .with_tls(tls)
            .with_http2(),
    )
    .await;
    let mut c = Client::connect(p.local_addr()).await;
    for _ in 0..3 {
        let g = c.get("/", &[("host", "www.example")]).await;
        assert_eq!(g.status, StatusCode::OK, "{g:?}");
        assert_eq!(g.header("x-echo-version"), "HTTP/2.0");
        assert_eq!(g.header("x-echo-scheme"), "https");
    }
    assert_eq!(b.connections.load(Ordering::Relaxed), 1);
    assert_eq!(p.stats().backends[0].connect_failures, 0);
}

#[tokio::test]
async fn a_backend_going_away_is_reconnected_without_a_failed_request() {
    // GOAWAY after every 3 requests, gracefully.
    let b = H2Backend::start_with(1, None, Some(3)).await;
    let p = proxy(
        config(),
        HttpPool::new("grpc", pool(&[b.addr])).with_http2(),
    )
    .await;
    let mut c = Client::connect(p.local_addr()).await;
    for i in 0..12 {
        let g = c.get("/", &[("host", "www.example")]).await;
        assert_eq!(g.status, StatusCode::OK, "request {i}: {g:?}");
    }
    assert!(
        b.connections.load(Ordering::Relaxed) >= 4,
        "a new connection after each GOAWAY: {}",
        b.connections.load(Ordering::Relaxed)
    );
    // Connections closed under it, no GOAWAY: the next requests go out on a new one (a
    // request caught on the dead connection is sent again, it was not processed).
    let before = b.connections.load(Ordering::Relaxed);
    b.drop_connections();
    for i in 0..5 {
        let g = c.get("/", &[("host", "www.example")]).await;
        assert_eq!(
            g.status,
            StatusCode::OK,
            "after the drop, request {i}: {g:?}"
        );
    }
    assert!(b.connections.load(Ordering::Relaxed) > before);
    assert_eq!(p.stats().virtual_server.bad_gateway, 0);
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_another_http2_backend() {
    let b = H2Backend::start(2).await;
    let dead = dead_addr().await;
    let p = proxy(
        config(),
        HttpPool::new("grpc", pool(&[dead, b.addr])).with_http2(),
    )
    .await;
    let mut c = Client::connect(p.local_addr()).await;
    for _ in 0..4 {
        let g = c.get("/", &[("host", "www.example")]).await;
        assert_eq!(g.status, StatusCode::OK, "{g:?}");
        assert_eq!(g.backend(), b.id);
    }
    assert!(p.stats().virtual_server.retries >= 1);
}

#[tokio::test]
async fn an_upgrade_to_an_http2_pool_gets_501_and_a_closed_connection() {
    let b = H2Backend::start(1).await;
    let p = proxy(
        config(),
        HttpPool::new("grpc", pool(&[b.addr])).with_http2(),
    )
    .await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    assert!(read_head(&mut s, &mut got).await);
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 501"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(
        b.requests.load(Ordering::Relaxed),
        0,
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn an_idle_http2_backend_connection_is_closed_after_backend_idle() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.timeouts.backend_idle = Duration::from_millis(300);
    let p = proxy(c, HttpPool::new("grpc", pool(&[b.addr])).with_http2()).await;
    let mut client = Client::connect(p.local_addr()).await;
    let g = client.get("/", &[("host", "www.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(b.open.load(Ordering::Relaxed), 1);
    assert!(
        eventually(|| b.open.load(Ordering::Relaxed) == 0).await,
        "the idle connection was let go"
    );
    // And a new one is made for the next request.
    let g = client.get("/", &[("host", "www.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(b.connections.load(Ordering::Relaxed), 2);
}
