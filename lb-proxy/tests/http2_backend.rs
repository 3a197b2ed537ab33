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
use futures::SinkExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use http_common::{dead_addr, read_head, watchdog, Client};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::http::{BackendTls, HttpPool, HttpProxy, HttpProxyConfig, Verify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A hyper HTTP/2-only backend on 127.0.0.1 (h2c with prior knowledge, or TLS offering ALPN
/// `h2` alone). It answers:
/// - `/grpc`: the request body echoed, then trailers `grpc-status: 0` and
///   `x-echo-request-trailer` (the request's `x-client-trailer` trailer, if any);
/// - `/stream`: each request DATA frame echoed as it arrives;
/// - `/big/<n>`: n MiB;
/// - `/sleep/<ms>`: 200 after that long;
/// - `/hold/<n>`: 200 once `n` requests have been in flight at once (`load.peak`; 5 s at
///   most), however slowly they came;
/// - anything else: 200 `id=<id>`.
///
/// Every response carries `x-backend-id` and echoes what the request arrived with: its
/// version, `:scheme`, `:authority`, `host`, `te` and `x-forwarded-for` as `x-echo-*`.
/// After `goaway_after` requests on one connection it shuts that connection down
/// gracefully (GOAWAY); `max_streams` is its `SETTINGS_MAX_CONCURRENT_STREAMS`. Dropping it
/// closes the listener and every connection.
struct H2Backend {
    id: u32,
    addr: SocketAddr,
    /// Connections accepted, and those still open.
    connections: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    /// Requests being answered now, and the most there were at once.
    load: Arc<Load>,
    conns: Arc<Mutex<Option<JoinSet<()>>>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Load {
    now: AtomicU64,
    peak: AtomicU64,
}

/// What an [`H2Backend`] does besides answering.
#[derive(Default, Clone, Copy)]
struct Opts {
    goaway_after: Option<u64>,
    max_streams: Option<u32>,
}

impl H2Backend {
    async fn start(id: u32) -> Self {
        Self::start_with(id, None, Opts::default()).await
    }

    async fn start_opts(id: u32, opts: Opts) -> Self {
        Self::start_with(id, None, opts).await
    }

    async fn start_with(id: u32, tls: Option<Arc<rustls::ServerConfig>>, opts: Opts) -> Self {
        watchdog();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let load = Arc::new(Load::default());
        let conns = Arc::new(Mutex::new(Some(JoinSet::new())));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (c, o, set) = (
            Arc::clone(&connections),
            Arc::clone(&open),
            Arc::clone(&conns),
        );
        let counters = (Arc::clone(&requests), Arc::clone(&load));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                o.fetch_add(1, Ordering::Relaxed);
                let (o, acceptor) = (Arc::clone(&o), acceptor.clone());
                let counters = (Arc::clone(&counters.0), Arc::clone(&counters.1));
                let serve = async move {
                    match acceptor {
                        None => serve_h2(stream, id, counters, opts).await,
                        Some(a) => {
                            if let Ok(Ok(s)) =
                                tokio::time::timeout(Duration::from_secs(10), a.accept(stream))
                                    .await
                            {
                                assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                                serve_h2(s, id, counters, opts).await;
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
            load,
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

/// Serves one HTTP/2 connection as backend `id`, counting its requests and their load;
/// after `opts.goaway_after` requests, shuts it down gracefully.
async fn serve_h2<S>(io: S, id: u32, (requests, load): (Arc<AtomicU64>, Arc<Load>), opts: Opts)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    // Set once GOAWAY is queued: the response that reached the limit waits for it, so the
    // GOAWAY frame goes out ahead of that response and the client (which sends its next
    // request only after this response) cannot have sent another stream on this connection
    // first. Without it a loaded machine can serve a fourth request here.
    let went_away = Arc::new(tokio::sync::Notify::new());
    let (counted, notify, gone) = (
        Arc::clone(&served),
        Arc::clone(&reached),
        Arc::clone(&went_away),
    );
    let svc = service_fn(move |req: Request<Incoming>| {
        requests.fetch_add(1, Ordering::Relaxed);
        let hold = req
            .uri()
            .path()
            .strip_prefix("/hold/")
            .and_then(|n| n.parse::<u64>().ok());
        let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
        let at_limit = opts.goaway_after == Some(n);
        if opts.goaway_after.is_some_and(|limit| n >= limit) {
            notify.notify_one();
        }
        let load = Arc::clone(&load);
        let gone = Arc::clone(&gone);
        async move {
            if at_limit {
                gone.notified().await;
            }
            let now = load.now.fetch_add(1, Ordering::Relaxed) + 1;
            load.peak.fetch_max(now, Ordering::Relaxed);
            if let Some(n) = hold {
                // The peak, not the count now: the first one released answers and leaves.
                eventually(|| load.peak.load(Ordering::Relaxed) >= n).await;
            }
            let r = respond(id, req).await;
            load.now.fetch_sub(1, Ordering::Relaxed);
            r
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(m) = opts.max_streams {
        builder.max_concurrent_streams(m);
    }
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let mut shut = false;
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            tokio::select! {
                r = conn.as_mut() => return r,
                () = reached.notified(), if !shut => {
                    conn.as_mut().graceful_shutdown();
                    went_away.notify_one();
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
    let mut resp = if let Some(mib) = path.strip_prefix("/big/") {
        // That many MiB, in 64 KiB frames.
        let chunks = mib.parse::<usize>().unwrap_or(1) * 16;
        let frames = futures::stream::iter(
            (0..chunks).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 65536])))),
        );
        Response::new(StreamBody::new(frames).boxed())
    } else if path == "/stream" {
        // Each request DATA frame echoed as it comes (a bidirectional gRPC stream).
        let frames = futures::StreamExt::map(req.into_body().into_data_stream(), |d| {
            Ok::<_, Infallible>(Frame::data(d.unwrap_or_default()))
        });
        Response::new(StreamBody::new(frames).boxed())
    } else if path == "/grpc" {
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

/// A proxy speaking HTTP/2 to the backends at `addrs` (pool `grpc`).
async fn h2_proxy(config: HttpProxyConfig, addrs: &[SocketAddr]) -> HttpProxy {
    proxy(config, HttpPool::new("grpc", pool(addrs)).with_http2()).await
}

/// An HTTP/2 client connection (prior knowledge) to `addr`, and the task running it.
async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Body>(TokioIo::new(tcp))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
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
    let p = h2_proxy(config(), &[b1.addr, b2.addr]).await;
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
    let p = h2_proxy(c, &[b.addr]).await;
    let (mut tx, _conn) = h2_client(p.local_addr()).await;
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
    let b = H2Backend::start_with(1, Some(tls_h2_server()), Opts::default()).await;
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
    let b = H2Backend::start_opts(
        1,
        Opts {
            goaway_after: Some(3),
            ..Opts::default()
        },
    )
    .await;
    let p = h2_proxy(config(), &[b.addr]).await;
    let mut c = Client::connect(p.local_addr()).await;
    for i in 0..12 {
        let g = c.get("/", &[("host", "www.example")]).await;
        assert_eq!(g.status, StatusCode::OK, "request {i}: {g:?}");
    }
    assert!(
        b.connections.load(Ordering::Relaxed) == 4,
        "one new connection after each GOAWAY, 4 in all: {}",
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
    let p = h2_proxy(config(), &[dead, b.addr]).await;
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
    let p = h2_proxy(config(), &[b.addr]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), read_head(&mut s, &mut got));
    assert!(read.await.unwrap_or(false), "a response within 10 s");
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
    let p = h2_proxy(c, &[b.addr]).await;
    let mut client = Client::connect(p.local_addr()).await;
    // Timed from before the request, which takes the connection: it is let go no sooner
    // than 300 ms after. (Whether it is still open once the response is read is a race
    // with those 300 ms on a loaded machine; this bound is not.)
    let t0 = tokio::time::Instant::now();
    let g = client.get("/", &[("host", "www.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(
        eventually(|| b.open.load(Ordering::Relaxed) == 0).await,
        "the idle connection was let go"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "let go before it was idle for 300 ms: {:?}",
        t0.elapsed()
    );
    // And a new one is made for the next request.
    let g = client.get("/", &[("host", "www.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(b.connections.load(Ordering::Relaxed), 2);
}

/// A bidirectional stream (gRPC's shape): the client sends its next message only after
/// the echo of the last one came back, through the proxy with HTTP/2 on both sides; a
/// proxy that waited for the request's end before the response (or held frames back)
/// would stall it.
#[tokio::test]
async fn a_bidirectional_stream_flows_both_ways_at_once() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.http2 = true;
    let p = h2_proxy(c, &[b.addr]).await;
    let (mut tx, _conn) = h2_client(p.local_addr()).await;
    let (mut send, frames) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(frames).boxed();
    let req = Request::post("http://grpc.example/stream")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        tx.ready().await.unwrap();
        send.send(Ok(Frame::data(Bytes::from_static(b"m0"))))
            .await
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        for i in 0..5 {
            let want = format!("m{i}");
            let mut got = Vec::new();
            while got.len() < want.len() {
                let f = body.frame().await.expect("a frame").unwrap();
                got.extend_from_slice(&f.into_data().unwrap_or_default());
            }
            assert_eq!(got, want.as_bytes());
            if i < 4 {
                send.send(Ok(Frame::data(Bytes::from(format!("m{}", i + 1)))))
                    .await
                    .unwrap();
            }
        }
        drop(send);
        assert!(body.frame().await.is_none_or(|f| f.is_ok()));
    })
    .await
    .expect("the echoes came back one by one within 10 s");
}

/// A backend allowing 2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`) gets
/// more connections when more requests are in flight, as Envoy and HAProxy open them,
/// rather than the requests queueing on one.
#[tokio::test]
async fn more_connections_are_made_past_the_backends_stream_limit() {
    let b = H2Backend::start_opts(
        1,
        Opts {
            max_streams: Some(2),
            ..Opts::default()
        },
    )
    .await;
    let p = h2_proxy(config(), &[b.addr]).await;
    let addr = p.local_addr();
    // Two requests first: the connection learns the backend's limit from its SETTINGS,
    // which h2 applies before it reads the first response, and the proxy notes it as it
    // sends the second. (Its looks 10 and 100 ms after the connect could both come before
    // the SETTINGS on a loaded machine: the six below could then all share one connection.)
    let mut c = Client::connect(addr).await;
    for _ in 0..2 {
        assert_eq!(
            c.get("/", &[("host", "www.example")]).await.status,
            StatusCode::OK
        );
    }
    // Their stream closed: the first connection has its two streams free.
    assert!(eventually(|| p.stats().backends[0].in_flight == 0).await);
    // Each of the six answered once all six are in flight: none ends (freeing its stream)
    // before the last is sent, however slowly a loaded machine sends them.
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        tasks.spawn(async move {
            let mut c = Client::connect(addr).await;
            c.get("/hold/6", &[("host", "www.example")]).await.status
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        b.load.peak.load(Ordering::Relaxed),
        6,
        "all six in flight at once"
    );
    assert_eq!(
        b.connections.load(Ordering::Relaxed),
        3,
        "three connections of two streams"
    );
}

/// `n` POSTs with a 5-byte body each on their own client connections at once; their
/// statuses.
async fn posts_at_once(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /rpc HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), read_head(&mut s, &mut got));
            assert!(read.await.unwrap_or(false), "a response within 10 s");
            String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        });
    }
    let mut v = Vec::new();
    while let Some(r) = set.join_next().await {
        v.push(r.unwrap());
    }
    v
}

/// Streams the backend refused unprocessed (RFC 9113 §8.7) go out again, POSTs with a body
/// included, and are no failure of the backend: those left out by a graceful GOAWAY (on a
/// new connection), those reset with REFUSED_STREAM (on the same one).
#[tokio::test]
async fn streams_refused_unprocessed_go_out_again_whatever_their_method() {
    for (goaway, connections) in [(true, 2), (false, 1)] {
        // On the first connection: the first request answered once the two others have
        // come (not after a delay they could overrun on a loaded machine, going out on a
        // new connection after the GOAWAY), with a GOAWAY naming it the last stream before
        // it, or the two others reset with REFUSED_STREAM. Later requests answered at once.
        let all_three = When::Requests(3);
        let (addr, conns, reqs) = scripted_h2(None, move |k, n, sid| match (k, n) {
            (0, 0) if goaway => {
                let mut f = h2_goaway(sid, 0);
                f.extend(h2_no_content(sid));
                (all_three, f)
            }
            (0, 0) => (all_three, h2_no_content(sid)),
            (0, 1 | 2) if goaway => (all_three, Vec::new()),
            (0, 1 | 2) => (all_three, h2_reset(sid, 7)),
            _ => (When::After(Duration::ZERO), h2_no_content(sid)),
        })
        .await;
        let p = h2_proxy(config(), &[addr]).await;
        let got = posts_at_once(p.local_addr(), 3).await;
        assert!(got.iter().all(|l| l.starts_with("HTTP/1.1 204")), "{got:?}");
        assert_eq!(conns.load(Ordering::SeqCst), connections);
        assert_eq!(
            reqs.load(Ordering::SeqCst),
            5,
            "three, and the two refused again"
        );
        let s = p.stats();
        assert_eq!(s.virtual_server.bad_gateway, 0);
        assert_eq!(s.backends[0].failures, 0, "a refusal is no failure");
        assert_eq!(s.virtual_server.retries, 2);
    }
}

/// A client that stalls or abandons its upload to an HTTP/2 backend is the client's fault,
/// as towards an HTTP/1.1 one: 408 for a stall, and no failure of the backend either way
/// (over HTTP/2 the body's failure comes back as its stream's reset).
#[tokio::test]
async fn a_failed_upload_to_an_http2_backend_is_not_the_backends_fault() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.timeouts.client = Duration::from_millis(300);
    let p = h2_proxy(c, &[b.addr]).await;
    let head =
        b"POST /sleep/3000 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100\r\n\r\n0123456789";
    // A stall: 10 of 100 bytes, then nothing.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(head).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), read_head(&mut s, &mut got));
    assert!(read.await.unwrap_or(false));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let st = p.stats();
    assert_eq!(st.virtual_server.client_timeouts, 1);
    assert_eq!(st.virtual_server.bad_gateway, 0);
    assert_eq!(st.backends[0].failures, 0, "the backend did nothing wrong");
    // An abandon: the client goes away mid-body, once the proxy has its request. Through a
    // proxy with the default client timeout: 300 ms could run out before the client goes,
    // on a loaded machine, and make this a stall too.
    let p = h2_proxy(config(), &[b.addr]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(head).await.unwrap();
    assert!(eventually(|| p.stats().virtual_server.requests == 1).await);
    drop(s);
    assert!(
        eventually(|| p.stats().virtual_server.bad_requests
            + p.stats().virtual_server.client_timeouts
            >= 1)
        .await,
        "{:?}",
        p.stats().virtual_server
    );
    let st = p.stats();
    assert_eq!(st.virtual_server.client_timeouts, 0, "no stall");
    assert_eq!(st.virtual_server.bad_gateway, 0);
    assert_eq!(st.backends[0].failures, 0, "the backend did nothing wrong");
}

/// A request whose HTTP/2 backend connection answers nothing in time gets 504, and that
/// connection takes no more requests: the next goes out on a new one (a connection that
/// stopped answering is not used for good).
#[tokio::test]
async fn a_response_timeout_takes_the_connection_out_of_use() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.timeouts.backend_response = Duration::from_millis(300);
    let p = h2_proxy(c, &[b.addr]).await;
    let mut client = Client::connect(p.local_addr()).await;
    let g = client.get("/sleep/2000", &[("host", "a.example")]).await;
    assert_eq!(g.status, StatusCode::GATEWAY_TIMEOUT);
    let g = client.get("/", &[("host", "a.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(b.connections.load(Ordering::Relaxed), 2);
}

/// Clients that do not read their large responses hold their streams' windows, not the
/// whole connection's: another client's response from the same backend still flows.
#[tokio::test]
async fn slow_readers_do_not_stall_the_other_streams_of_a_connection() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.timeouts.backend_response = Duration::from_secs(3);
    let p = h2_proxy(c, &[b.addr]).await;
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(b"GET /big/40 HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .unwrap();
        stuck.push(s); // never read
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut client = Client::connect(p.local_addr()).await;
    let g = client.get("/big/1", &[("host", "a.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body.len(), 1 << 20, "the whole MiB");
    assert_eq!(
        b.connections.load(Ordering::Relaxed),
        1,
        "on the same connection"
    );
    drop(stuck);
}

/// nginx as the HTTP/2 backend, sending GOAWAY after every 10 requests on a connection
/// (`keepalive_requests 10`): with 20 clients at once, the streams caught past each GOAWAY
/// go out again (GETs, and POSTs with a body); no client sees an error and nginx is never
/// held at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_going_away_every_ten_requests_costs_no_request() {
    watchdog();
    let dir = std::env::temp_dir().join(format!("lb-h2b-nginx-{}", std::process::id()));
    let port = lb_testkit::ports::unused_port();
    let _nginx = lb_testkit::nginx::Nginx::start(
        &dir,
        &format!(
            "  keepalive_requests 10;\n  server {{ listen 127.0.0.1:{port} http2; location / {{ return 200 \"ok\\n\"; }} }}"
        ),
        &[port],
    )
    .expect("nginx (Debian's nginx-light, installed by .ci/run)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let p = h2_proxy(config(), &[addr]).await;
    let a = p.local_addr();
    let mut set = JoinSet::new();
    for i in 0..20 {
        set.spawn(async move {
            let mut statuses = Vec::new();
            if i % 2 == 1 {
                let mut c = Client::connect(a).await;
                for _ in 0..20 {
                    statuses.push(c.get("/", &[("host", "a.example")]).await.status.as_u16());
                }
                return statuses;
            }
            // POSTs with a body (a gRPC call's shape), kept alive.
            let mut s = TcpStream::connect(a).await.unwrap();
            for _ in 0..20 {
                s.write_all(
                    b"POST /rpc HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello",
                )
                .await
                .unwrap();
                let mut head = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(10), read_head(&mut s, &mut head));
                assert!(read.await.unwrap_or(false), "a response within 10 s");
                let text = String::from_utf8_lossy(&head).into_owned();
                let status: u16 = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
                statuses.push(status);
                if status != 200 {
                    break;
                }
                // nginx's body, "ok\n", may follow the head.
                let end = text.find("\r\n\r\n").map_or(head.len(), |i| i + 4);
                let mut rest = head.len() - end;
                while rest < 3 {
                    let mut b = [0u8; 16];
                    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
                        .await
                        .expect("the body within 10 s")
                        .unwrap();
                    assert!(n > 0);
                    rest += n;
                }
            }
            statuses
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = set.join_next().await {
        bad.extend(r.unwrap().into_iter().filter(|s| *s != 200));
    }
    let s = p.stats();
    assert!(bad.is_empty(), "{bad:?} {:?}", s.virtual_server);
    assert_eq!(s.backends[0].failures, 0, "{:?}", s.backends[0]);
    assert_eq!(s.virtual_server.requests, 400);
}

/// When a [`scripted_h2`] server writes the frames for a request: after a delay, or once it
/// has had that many requests in all, on any connection (5 s at most).
#[derive(Clone, Copy)]
enum When {
    After(Duration),
    Requests(u64),
}

impl From<Duration> for When {
    fn from(delay: Duration) -> Self {
        Self::After(delay)
    }
}

/// A hand-written h2c server for scripted behaviours: `max_streams` is its
/// SETTINGS_MAX_CONCURRENT_STREAMS; `act(connection index, request index, stream id)` says
/// what to do with a request once whole: the frames to write, and when ([`When`], or a
/// delay). Counts connections and requests. Its tasks end with the test's runtime.
async fn scripted_h2<F, W>(
    max_streams: Option<u32>,
    act: F,
) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>)
where
    F: Fn(u64, u64, u32) -> (W, Vec<u8>) + Send + Sync + 'static,
    W: Into<When>,
{
    use tokio::io::AsyncReadExt;
    let act = Arc::new(act);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let reqs = Arc::new(AtomicU64::new(0));
    let (c2, r2) = (Arc::clone(&conns), Arc::clone(&reqs));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let k = c2.fetch_add(1, Ordering::SeqCst);
            let reqs = Arc::clone(&r2);
            let act = Arc::clone(&act);
            tokio::spawn(async move {
                let (mut rd, wr) = s.into_split();
                let wr = Arc::new(tokio::sync::Mutex::new(wr));
                let mut preface = [0u8; 24];
                if rd.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let mut settings = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
                if let Some(m) = max_streams {
                    settings = vec![0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3];
                    settings.extend_from_slice(&m.to_be_bytes());
                }
                let _ = wr.lock().await.write_all(&settings).await;
                loop {
                    let mut h = [0u8; 9];
                    if rd.read_exact(&mut h).await.is_err() {
                        return;
                    }
                    let len =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let (ty, flags) = (h[3], h[4]);
                    let sid = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let mut payload = vec![0u8; len];
                    if rd.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    if ty == 4 && flags & 1 == 0 {
                        let _ = wr
                            .lock()
                            .await
                            .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
                            .await;
                    }
                    if ty == 6 && flags & 1 == 0 {
                        let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                        pong.extend_from_slice(&payload);
                        let _ = wr.lock().await.write_all(&pong).await;
                    }
                    if !((ty == 1 || ty == 0) && flags & 1 != 0) {
                        continue;
                    }
                    let n = reqs.fetch_add(1, Ordering::SeqCst);
                    let (when, frames) = act(k, n, sid);
                    let when: When = when.into();
                    let (wr, reqs) = (Arc::clone(&wr), Arc::clone(&reqs));
                    tokio::spawn(async move {
                        match when {
                            When::After(delay) => tokio::time::sleep(delay).await,
                            When::Requests(m) => {
                                eventually(|| reqs.load(Ordering::SeqCst) >= m).await;
                            }
                        }
                        let _ = wr.lock().await.write_all(&frames).await;
                    });
                }
            });
        }
    });
    (addr, conns, reqs)
}

fn h2_no_content(sid: u32) -> Vec<u8> {
    let mut f = vec![0, 0, 1, 1, 5];
    f.extend_from_slice(&sid.to_be_bytes());
    f.push(0x89);
    f
}

fn h2_reset(sid: u32, code: u32) -> Vec<u8> {
    let mut r = vec![0, 0, 4, 3, 0];
    r.extend_from_slice(&sid.to_be_bytes());
    r.extend_from_slice(&code.to_be_bytes());
    r
}

fn h2_goaway(last: u32, code: u32) -> Vec<u8> {
    let mut g = vec![0, 0, 8, 7, 0, 0, 0, 0, 0];
    g.extend_from_slice(&last.to_be_bytes());
    g.extend_from_slice(&code.to_be_bytes());
    g
}

/// A backend that refuses every stream (REFUSED_STREAM) answers nothing: after its tries
/// the client gets 502, and the backend is counted failed once per request (a refusal is
/// excused while the request can go out again). With a second backend, a request refused
/// twice by one goes to the other.
#[tokio::test]
async fn a_backend_refusing_every_stream_is_counted_failed_and_avoided() {
    let (addr, _, _) = scripted_h2(None, |_, _, sid| (Duration::ZERO, h2_reset(sid, 7))).await;
    let p = h2_proxy(config(), &[addr]).await;
    let mut c = Client::connect(p.local_addr()).await;
    for _ in 0..3 {
        let g = c.get("/", &[("host", "a.example")]).await;
        assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(
        p.stats().backends[0].failures,
        3,
        "one per request that ended refused"
    );
    let good = H2Backend::start(2).await;
    let p = h2_proxy(config(), &[addr, good.addr]).await;
    let mut c = Client::connect(p.local_addr()).await;
    for _ in 0..4 {
        let g = c.send("POST", "/", &[("host", "a.example")]).await;
        assert_eq!(g.status, StatusCode::OK);
        assert_eq!(g.backend(), 2);
    }
}

/// A request waiting in hyper for a stream on a connection that then gets GOAWAY is
/// dropped unsent (hyper's "dispatch gone", one of its user errors): a backend failure to
/// retry (a GET goes out again), not the client's fault (400).
#[tokio::test]
async fn a_request_waiting_for_a_stream_survives_a_goaway() {
    // One stream per connection; the first two requests are answered at once, then the
    // connections send GOAWAY with their answer after 700 ms, the 17th on answers at once.
    let (addr, _, _) = scripted_h2(Some(1), |k, n, sid| {
        if n <= 1 || k >= 16 {
            (Duration::ZERO, h2_no_content(sid))
        } else {
            let mut f = h2_goaway(sid, 0);
            f.extend(h2_no_content(sid));
            (Duration::from_millis(700), f)
        }
    })
    .await;
    let p = h2_proxy(config(), &[addr]).await;
    let a = p.local_addr();
    let mut c = Client::connect(a).await;
    // The limit (1) is noted as the second is sent, the first's response having come after
    // the SETTINGS (the proxy's looks soon after the connect could come before them on a
    // loaded machine: the 17 could then all queue on this connection).
    for _ in 0..2 {
        assert_eq!(
            c.get("/", &[("host", "a.example")]).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let mut set = JoinSet::new();
    for _ in 0..17 {
        set.spawn(async move {
            let mut c = Client::connect(a).await;
            c.get("/", &[("host", "a.example")]).await.status
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = set.join_next().await {
        statuses.push(r.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::NO_CONTENT),
        "{statuses:?} {:?}",
        p.stats().virtual_server
    );
    assert_eq!(p.stats().virtual_server.bad_requests, 0);
}

/// A backend resetting streams (INTERNAL_ERROR: a stream's error, not its connection's)
/// keeps its one connection, and every request that ends failed counts.
#[tokio::test]
async fn stream_resets_do_not_take_the_connection_out_of_use() {
    let (addr, conns, _) = scripted_h2(None, |_, _, sid| (Duration::ZERO, h2_reset(sid, 2))).await;
    let p = h2_proxy(config(), &[addr]).await;
    let mut c = Client::connect(p.local_addr()).await;
    for _ in 0..6 {
        let g = c.get("/", &[("host", "a.example")]).await;
        assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection");
    // Every try a failure: the first request's one (on a new connection, it goes to
    // another backend next: there is none), the 5 others' 1 + 2 retries each.
    assert_eq!(p.stats().backends[0].failures, 16);
}

/// A body of known length read whole before it goes to an HTTP/2 backend keeps the client
/// timeout for its gaps, not for the whole read: a slow client that keeps sending is served
/// (20 bytes over two seconds, the client timeout 1 s: each 100 ms gap may overrun by most
/// of a second on a loaded machine, the whole read still takes twice the timeout).
#[tokio::test]
async fn a_slow_steady_upload_to_an_http2_backend_is_not_cut_off() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.timeouts.client = Duration::from_secs(1);
    let p = h2_proxy(c, &[b.addr]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a.example\r\nContent-Length: 20\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"a").await.unwrap();
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), read_head(&mut s, &mut got));
    assert!(read.await.unwrap_or(false), "a response within 10 s");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(p.stats().virtual_server.client_timeouts, 0);
}

/// A request that times out while the same HTTP/2 connection answers other streams is that
/// request's slowness, not a dead connection: it gets 504 and only its stream is reset; the
/// connection serves on (a backend with one slow endpoint does not churn connections).
#[tokio::test]
async fn a_response_timeout_while_other_streams_are_answered_keeps_the_connection() {
    let b = H2Backend::start(1).await;
    let mut c = config();
    c.timeouts.backend_response = Duration::from_secs(2);
    let p = h2_proxy(c, &[b.addr]).await;
    let a = p.local_addr();
    let slow = tokio::spawn(async move {
        let mut client = Client::connect(a).await;
        client
            .get("/sleep/5000", &[("host", "a.example")])
            .await
            .status
    });
    // The others once the slow one is on the connection (the backend has it): answered
    // while it waits, not after its timeout, however late a loaded machine runs the test
    // (its timeout 2 s, with none of it spent in sleeps of the test's).
    assert!(eventually(|| b.requests.load(Ordering::Relaxed) == 1).await);
    let mut client = Client::connect(a).await;
    for _ in 0..8 {
        let g = client.get("/", &[("host", "a.example")]).await;
        assert_eq!(g.status, StatusCode::OK);
    }
    assert_eq!(slow.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    let g = client.get("/", &[("host", "a.example")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(
        b.connections.load(Ordering::Relaxed),
        1,
        "the connection stayed in use"
    );
    assert_eq!(p.stats().virtual_server.gateway_timeout, 1);
}

/// Requests that wait for one HTTP/2 connect which fails all get its failure, but the
/// backend failed once: one connect failure counted, one failure told to passive health
/// (each waiter used to count one, so that a handful of concurrent requests could eject a
/// backend for a single failed connect). Here the backend takes the TCP connection and
/// leaves the TLS handshake unanswered until the 5 requests wait for it, then closes it.
#[tokio::test]
async fn one_failed_http2_connect_counts_once_for_the_requests_that_waited() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let mut c = config();
    // Past the test's own steps: the connect fails when the backend closes it, not on a
    // timer that a loaded machine could let run out before the last request comes (that
    // one would connect again).
    c.timeouts.backend_connect = Duration::from_secs(5);
    c.retries = 0;
    let p = proxy(
        c,
        HttpPool::new("grpc", pool(&[addr]))
            .with_tls(BackendTls::new(Verify::None, None).unwrap())
            .with_http2(),
    )
    .await;
    let a = p.local_addr();
    let mut set = JoinSet::new();
    for _ in 0..5 {
        set.spawn(async move {
            let mut client = Client::connect(a).await;
            client.get("/", &[("host", "a.example")]).await.status
        });
    }
    let (held, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
        .await
        .expect("the proxy connects within 10 s")
        .unwrap();
    // A request counts in flight as it picks the backend, in the same step as it starts
    // waiting for the connect.
    assert!(
        eventually(|| p.stats().backends[0].in_flight == 5).await,
        "{:?}",
        p.stats().backends[0]
    );
    drop(held);
    while let Some(status) = set.join_next().await {
        assert!(status.unwrap().is_server_error());
    }
    let st = p.stats();
    assert_eq!(st.backends[0].connect_failures, 1, "{:?}", st.backends[0]);
    assert_eq!(st.backends[0].failures, 1, "{:?}", st.backends[0]);
    drop(silent);
}

/// A request a graceful GOAWAY left out that is not re-sent (a bodiless POST: hyper may
/// report a stream it had just sent so) gets 502, but the backend only closed its
/// connection, as HTTP/2 allows: no failure is counted against it.
#[tokio::test]
async fn a_bodiless_post_left_out_by_goaway_is_not_held_against_the_backend() {
    let (addr, _, _) = scripted_h2(None, |_, _, sid| {
        (Duration::ZERO, h2_goaway(sid.saturating_sub(2), 0))
    })
    .await;
    let p = h2_proxy(config(), &[addr]).await;
    let mut c = Client::connect(p.local_addr()).await;
    let g = c.send("POST", "/", &[("host", "a.example")]).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        p.stats().backends[0].failures,
        0,
        "{:?}",
        p.stats().backends[0]
    );
}
