//! HTTP/2 to clients (`HttpProxyConfig::http2`) against real HTTP/1.1 backends on loopback
//! (in-process hyper servers), with hyper's HTTP/2 client: over TLS with ALPN `h2`, and with
//! prior knowledge on a plain listener.
#![cfg(feature = "http")]

mod http_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use http_common::{pool_of, watchdog, Client, TestBackend};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::{Algorithm, Pool};
use lb_proxy::http::{
    AccessEntry, AccessLog, AccessLogSink, HttpPool, HttpProxy, HttpProxyConfig, TlsTermination,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn config() -> HttpProxyConfig {
    watchdog();
    let mut c = HttpProxyConfig::new("h2");
    c.default_pool = Some("www".into());
    c.http2 = true;
    c
}

async fn proxy(config: HttpProxyConfig, pool: Arc<Pool>) -> HttpProxy {
    HttpProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        vec![HttpPool::new("www", pool)],
    )
    .await
    .unwrap()
}

/// A self-signed certificate for `www.example.com` and the listener's TLS side.
fn certificate() -> (rustls_pki_types::CertificateDer<'static>, TlsTermination) {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let tls = TlsTermination::from_pem(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    (cert.cert.der().clone(), tls)
}

/// A TLS client connection to `addr` trusting `cert`, offering `alpn`.
async fn tls(
    addr: std::net::SocketAddr,
    cert: rustls_pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    http_common::tls_connect_alpn(tcp, cert, "www.example.com", alpn)
        .await
        .unwrap()
}

/// Waits (5 s at most, polling every 10 ms) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP/2 client connection over `io`, and the task running it (which ends when the
/// connection does).
async fn h2<S>(io: S) -> (SendRequest<Body>, tokio::task::JoinHandle<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    h2_with(
        &hyper::client::conn::http2::Builder::new(TokioExecutor::new()),
        io,
    )
    .await
}

/// As [`h2`], with the settings of `builder`.
async fn h2_with<S>(
    builder: &hyper::client::conn::http2::Builder<TokioExecutor>,
    io: S,
) -> (SendRequest<Body>, tokio::task::JoinHandle<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = builder.handshake(TokioIo::new(io)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

/// A response, fully read.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    version: Version,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends `req` on `tx` and reads the whole response (panics after 10 s).
async fn send(tx: &mut SendRequest<Body>, req: Request<Body>) -> Got {
    tokio::time::timeout(Duration::from_secs(10), async {
        tx.ready().await.unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Got {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    })
    .await
    .expect("response within 10 s")
}

/// A bodiless GET of `uri` (absolute: its authority is `:authority`) with `headers`.
fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// An HTTPS listener with `http2`: a client offering `h2` gets HTTP/2, and its concurrent
/// streams on one connection are balanced per request over the backends, which get them
/// in HTTP/1.1 with `Host` from `:authority`, the forwarded headers and the client's split
/// `cookie` fields joined into one. A client offering only `http/1.1` still gets it; without
/// `http2`, a client offering both gets HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_balances_each_stream() {
    let b: Vec<TestBackend> = futures::future::join_all((1..=3).map(TestBackend::start)).await;
    let (der, termination) = certificate();
    let mut c = config();
    c.forwarded.forwarded = true;
    c.tls = Some(termination);
    let pool = pool_of(&b.iter().collect::<Vec<_>>(), Algorithm::RoundRobin);
    let p = proxy(c.clone(), Arc::clone(&pool)).await;

    let stream = tls(p.local_addr(), der.clone(), &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (tx, _conn) = h2(stream).await;
    // 30 streams at once on the one connection.
    let answers = futures::future::join_all((0..30).map(|i| {
        let mut tx = tx.clone();
        async move {
            let req = get(
                &format!("https://www.example.com/n/{i}"),
                &[("cookie", "a=1"), ("cookie", "b=2")],
            );
            send(&mut tx, req).await
        }
    }))
    .await;
    let mut per_backend = HashMap::new();
    for r in &answers {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.version, Version::HTTP_2);
        assert_eq!(r.header("x-echo-host"), "www.example.com");
        assert_eq!(r.header("x-echo-xff"), "127.0.0.1");
        assert_eq!(r.header("x-echo-xfproto"), "https");
        let forwarded = r.header("x-echo-forwarded");
        assert!(
            forwarded.starts_with("for=\"127.0.0.1:")
                && forwarded.ends_with(";proto=https;host=www.example.com"),
            "{forwarded}"
        );
        // One Cookie line for the HTTP/1.1 backend.
        assert_eq!(r.header("x-echo-cookie"), "a=1; b=2");
        *per_backend
            .entry(r.header("x-backend-id").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n == 10), "{per_backend:?}");
    let s = p.stats().virtual_server;
    assert_eq!((s.connections, s.http2_connections), (1, 1));
    assert_eq!((s.requests, s.responses.c2xx), (30, 30));

    // An HTTP/1.1-only client on the same listener.
    let mut h1 = Client::connect_tls(p.local_addr(), der.clone(), "www.example.com", b"")
        .await
        .unwrap();
    let r = h1.get("/", &[("host", "www.example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(p.stats().virtual_server.http2_connections, 1);

    // Without `http2`, `h2` is not offered: the same client speaks HTTP/1.1.
    c.http2 = false;
    let p1 = proxy(c, pool).await;
    let stream = tls(p1.local_addr(), der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// A plain listener with `http2` serves a client with prior knowledge (it opens with the
/// HTTP/2 preface) in HTTP/2, and an HTTP/1.1 client as before — a PROPFIND too, whose
/// first bytes are the preface's. Without `http2` the preface is refused (closed, counted
/// in `bad_requests`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_beside_http1() {
    let b = TestBackend::start(1).await;
    let pool = pool_of(&[&b], Algorithm::RoundRobin);
    let p = proxy(config(), Arc::clone(&pool)).await;
    let addr = p.local_addr();

    let (mut tx, _conn) = h2(TcpStream::connect(addr).await.unwrap()).await;
    let r = send(&mut tx, get("http://www.example.com/x", &[])).await;
    assert_eq!((r.status, r.version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(r.header("x-echo-xfproto"), "http");
    assert_eq!(r.header("x-echo-host"), "www.example.com");

    let mut h1 = Client::connect(addr).await;
    assert_eq!(h1.get("/", &[]).await.status, 200);
    assert_eq!(h1.send("PROPFIND", "/dav", &[]).await.status, 200);
    let s = p.stats().virtual_server;
    assert_eq!((s.connections, s.http2_connections, s.requests), (2, 1, 3));

    let mut c = config();
    c.http2 = false;
    let p1 = proxy(c, pool).await;
    let mut raw = TcpStream::connect(p1.local_addr()).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", &buf[..n]);
    assert_eq!(p1.stats().virtual_server.http2_connections, 0);
    eventually(|| p1.stats().virtual_server.bad_requests == 1).await;
    assert_eq!(p1.stats().virtual_server.bad_requests, 1);
}

/// A stream's failure is its own: on one connection, a backend that does not answer in
/// time gets its stream a 504, a stream with too many header fields gets 431, a `CONNECT`
/// 501 — while another stream, started at the same time, and later ones are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_leaves_the_others_alone() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.backend_response = Duration::from_secs(1);
    c.limits.max_headers = 20;
    let p = proxy(c, pool_of(&[&b], Algorithm::RoundRobin)).await;
    let (tx, _conn) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;

    let (mut t1, mut t2) = (tx.clone(), tx.clone());
    let (slow, fast) = tokio::join!(
        send(&mut t1, get("http://www.example.com/sleep/5000", &[])),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            send(&mut t2, get("http://www.example.com/fast", &[])).await
        }
    );
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(fast.status, StatusCode::OK);

    // 25 cookie fields are one Cookie line: within the limit.
    let cookies: Vec<String> = (0..25).map(|i| format!("c{i}=v")).collect();
    let split: Vec<(&str, &str)> = cookies.iter().map(|c| ("cookie", c.as_str())).collect();
    let mut t = tx.clone();
    let r = send(&mut t, get("http://www.example.com/", &split)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-echo-cookie"), cookies.join("; "));
    let names: Vec<String> = (0..25).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let r = send(&mut t, get("http://www.example.com/", &many)).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let connect = Request::builder()
        .method("CONNECT")
        .uri("www.example.com:443")
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .unwrap();
    let r = send(&mut t, connect).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    // The connection goes on.
    let r = send(&mut t, get("http://www.example.com/after", &[])).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = p.stats().virtual_server;
    assert_eq!(
        (s.connections, s.gateway_timeout, s.bad_requests, s.requests),
        (1, 1, 2, 6)
    );
}

/// An HTTP/2 client connection over `io` with `window` bytes of flow-control window per
/// stream and per connection (hyper's default is 2 MiB per stream).
async fn h2_window(
    io: TcpStream,
    window: u32,
    ping: Option<Duration>,
) -> (SendRequest<Body>, tokio::task::JoinHandle<()>) {
    let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    b.initial_stream_window_size(window)
        .initial_connection_window_size(window.max(65_535));
    if let Some(every) = ping {
        b.timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(every)
            .keep_alive_while_idle(true);
    }
    h2_with(&b, io).await
}

/// Reads `body` a frame at a time, `pause` after each; its bytes, or the error that ended it.
async fn read_slowly(
    mut body: hyper::body::Incoming,
    pause: Duration,
) -> Result<Vec<u8>, hyper::Error> {
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            got.extend_from_slice(&d);
        }
        tokio::time::sleep(pause).await;
    }
    Ok(got)
}

/// Waits (5 s at most) for the backend's requests in flight to drop to 0.
async fn no_request_in_flight(p: &HttpProxy) {
    eventually(|| p.stats().backends[0].in_flight == 0).await;
    assert_eq!(p.stats().backends[0].in_flight, 0);
}

/// A client that reads nothing of a response (its flow-control window stays shut, though
/// its socket reads) has that stream reset after the client timeout, as an HTTP/1.1 client
/// whose writes stall is cut off: the stream's backend request ends, freeing its backend
/// connection, the access log says `cD`, and the connection goes on. A large body (the
/// window shuts mid-body), a small one (a window of 0: not even its one frame may go), and
/// a client that keeps pinging (the PING answers are no progress) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_reads_nothing_of_is_reset() {
    let cases = [
        (16usize << 20, 65_535u32, None),
        (1_000, 0, None),
        (1_000, 0, Some(Duration::from_millis(100))),
    ];
    for (size, window, ping) in cases {
        let b = TestBackend::start_with_body(1, Some(Bytes::from(vec![b'x'; size]))).await;
        let lines = Arc::new(Lines::default());
        let mut c = config();
        c.timeouts.client = Duration::from_millis(500);
        c.access_log = Some(AccessLogSink(Arc::clone(&lines) as Arc<dyn AccessLog>));
        let p = proxy(c, pool_of(&[&b], Algorithm::RoundRobin)).await;
        let (mut tx, _conn) = h2_window(
            TcpStream::connect(p.local_addr()).await.unwrap(),
            window,
            ping,
        )
        .await;
        let t0 = tokio::time::Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(5), async {
            tx.ready().await.unwrap();
            tx.send_request(get("http://www.example.com/big", &[]))
                .await
                .unwrap()
        })
        .await
        .expect("response head within 5 s");
        assert_eq!(resp.status(), 200);
        // Not read: hyper's client opens no window beyond its first. Waited for: the reset.
        let (_, body) = resp.into_parts();
        let waiting = tokio::spawn(async move {
            let mut body = body;
            // One frame at most gets through, then the reset.
            loop {
                match body.frame().await {
                    Some(Ok(_)) => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        no_request_in_flight(&p).await;
        let case = format!("{size} bytes, window {window}, ping {ping:?}");
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{case}: {:?}",
            t0.elapsed()
        );
        assert_eq!(p.stats().virtual_server.client_timeouts, 1, "{case}");
        eventually(|| !lines.0.lock().unwrap().is_empty()).await;
        let line = lines.0.lock().unwrap()[0].clone();
        assert!(
            line.contains(" 200 ") && line.contains(" cD-- "),
            "{case}: {line}"
        );
        waiting.abort();
        // The connection goes on.
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            tx.ready().await.unwrap();
            tx.send_request(get("http://www.example.com/status/204", &[]))
                .await
                .unwrap()
        })
        .await
        .expect("answered within 5 s");
        assert_eq!(r.status(), 204, "{case}");
        assert_eq!(p.stats().virtual_server.connections, 1);
    }
}

/// A client reading steadily but slowly (pausing 20 ms after each frame, through a 64 KiB
/// window: 3 MiB in about 6 s here) is not taken for a stalled one however large the
/// backend's chunks (hyper waits for a chunk to be sent whole before it asks for the next,
/// but the connection is written to meanwhile), nor is the end of its download cut by a
/// graceful stop that comes meanwhile (h2 may still be sending the last chunk after the
/// stream's end): the client timeout (1 s) runs from the last write, not from the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_reader_gets_its_whole_response() {
    let data = Bytes::from(
        (0..3usize << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let b = TestBackend::start_with_body(1, Some(data.clone())).await;
    let mut c = config();
    c.timeouts.client = Duration::from_secs(1);
    let p = proxy(c, pool_of(&[&b], Algorithm::RoundRobin)).await;
    for stop in [false, true] {
        let (mut tx, _conn) = h2_window(
            TcpStream::connect(p.local_addr()).await.unwrap(),
            65_535,
            None,
        )
        .await;
        let resp = tokio::time::timeout(Duration::from_secs(5), async {
            tx.ready().await.unwrap();
            tx.send_request(get("http://www.example.com/big", &[]))
                .await
                .unwrap()
        })
        .await
        .expect("response head within 5 s");
        if stop {
            p.stop_accepting();
        }
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            read_slowly(resp.into_body(), Duration::from_millis(20)),
        )
        .await
        .expect("read within 30 s");
        let got = got.unwrap_or_else(|e| panic!("stop {stop}: {e}"));
        assert!(
            got == data,
            "stop {stop}: {} of {} bytes",
            got.len(),
            data.len()
        );
    }
    assert_eq!(p.stats().virtual_server.client_timeouts, 0);
}

/// A backend's transfer coding other than chunked cannot reach an HTTP/2 client (HTTP/2
/// has none): 502, as for an HTTP/1.0 client, instead of coded bytes without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_is_not_passed_to_http2_clients() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        // One connection, bounded by the test's own request.
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let _ = http_common::read_head(&mut s, &mut got).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n")
            .await;
        let _ = s.read(&mut [0u8; 1]).await;
    });
    let p = proxy(config(), http_common::pool_at(addr)).await;
    let (mut tx, _conn) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;
    let r = send(&mut tx, get("http://www.example.com/", &[])).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(p.stats().backends[0].failures, 0);
    backend.abort();
}

/// Request bodies go to the backend as sent: with a length, and streamed without one (the
/// backend gets it chunked), 1 MiB each, several streams at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reach_the_backend_whole() {
    let b = TestBackend::start(1).await;
    let p = proxy(config(), pool_of(&[&b], Algorithm::RoundRobin)).await;
    let (tx, _conn) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;
    let data: Bytes = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let answers = futures::future::join_all((0..4).map(|i| {
        let (mut tx, data) = (tx.clone(), data.clone());
        async move {
            let b = Request::builder()
                .method("POST")
                .uri("http://www.example.com/echo");
            let req = if i % 2 == 0 {
                b.header("content-length", data.len())
                    .body(Full::new(data).map_err(|e| match e {}).boxed())
                    .unwrap()
            } else {
                // In 64 KiB frames, with no length given.
                let frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = data
                    .chunks(64 << 10)
                    .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                    .collect();
                b.body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
                    frames,
                ))))
                .unwrap()
            };
            (i, send(&mut tx, req).await)
        }
    }))
    .await;
    for (i, r) in answers {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, data, "stream {i}");
        let framing = if i % 2 == 0 { "length" } else { "chunked" };
        assert_eq!(r.header("x-echo-framing"), framing, "stream {i}");
    }
}

/// The connection's timers: a client that opens and sends no request is closed after
/// `header_read` (counted); a connection idle for `client_idle` after its last stream gets
/// GOAWAY and closes (counted), not while a stream is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_are_closed() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.header_read = Duration::from_millis(600);
    c.timeouts.client_idle = Duration::from_millis(400);
    let p = proxy(c, pool_of(&[&b], Algorithm::RoundRobin)).await;

    // The preface and the SETTINGS handshake, then nothing.
    let t0 = tokio::time::Instant::now();
    let (_tx, silent) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;
    tokio::time::timeout(Duration::from_secs(5), silent)
        .await
        .expect("closed within 5 s")
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(p.stats().virtual_server.header_timeouts, 1);

    let (mut tx, conn) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;
    // A stream longer than the idle timeout: not cut.
    let t1 = tokio::time::Instant::now();
    let r = send(&mut tx, get("http://www.example.com/sleep/700", &[])).await;
    assert_eq!(r.status, 200);
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed within 5 s")
        .unwrap();
    // The idle time runs from the stream's end on the proxy, at least 700 ms after the
    // request was sent: timed from there (less the proxy's rounding to the millisecond),
    // not from the client's read of the response, which a loaded machine can delay by
    // most of the idle time.
    assert!(
        t1.elapsed() >= Duration::from_millis(700 + 400 - 10),
        "{:?}",
        t1.elapsed()
    );
    assert_eq!(p.stats().virtual_server.idle_timeouts, 1);
    eventually(|| p.stats().virtual_server.active_connections == 0).await;
    assert_eq!(p.stats().virtual_server.active_connections, 0);
}

/// A graceful shutdown sends GOAWAY: the stream in flight is answered, the connection then
/// closes, and nothing new is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_streams_in_flight() {
    let b = TestBackend::start(1).await;
    let p = proxy(config(), pool_of(&[&b], Algorithm::RoundRobin)).await;
    let addr = p.local_addr();
    let (mut tx, conn) = h2(TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(
        send(&mut tx, get("http://www.example.com/", &[]))
            .await
            .status,
        200
    );
    let in_flight =
        tokio::spawn(
            async move { send(&mut tx, get("http://www.example.com/sleep/500", &[])).await },
        );
    // The stream has reached the backend before the stop.
    eventually(|| b.requests.load(std::sync::atomic::Ordering::Relaxed) == 2).await;
    assert_eq!(b.requests.load(std::sync::atomic::Ordering::Relaxed), 2);
    let stopped = tokio::spawn(p.shutdown(Duration::from_secs(5)));
    assert_eq!(in_flight.await.unwrap().status, 200);
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed within 5 s")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stopped within 5 s")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A proxy dropped (aborted) under a stream in flight ends that stream at once, with its
/// backend request, not when the backend answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_proxy_ends_its_streams() {
    let b = TestBackend::start(1).await;
    let pool = pool_of(&[&b], Algorithm::RoundRobin);
    let p = proxy(config(), Arc::clone(&pool)).await;
    let (mut tx, _conn) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;
    let in_flight = || pool.backends().as_slice()[0].stats().in_flight();
    let req = tokio::spawn(async move {
        tx.ready().await?;
        tx.send_request(get("http://www.example.com/sleep/30000", &[]))
            .await
    });
    eventually(|| in_flight() == 1).await;
    assert_eq!(in_flight(), 1);
    let t0 = tokio::time::Instant::now();
    drop(p);
    eventually(|| in_flight() == 0).await;
    assert_eq!(
        in_flight(),
        0,
        "still in flight {:?} after the abort",
        t0.elapsed()
    );
    let r = tokio::time::timeout(Duration::from_secs(5), req)
        .await
        .expect("the client hears within 5 s")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
}

/// An access log sink that keeps the lines.
#[derive(Debug, Default)]
struct Lines(Mutex<Vec<String>>);

impl AccessLog for Lines {
    fn log(&self, entry: &AccessEntry<'_>) {
        let mut line = String::new();
        entry.write_httplog(&mut line);
        self.0.lock().unwrap().push(line);
    }
}

/// Each stream is one access entry, with the HTTP/2 version in its request line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_is_logged() {
    let b = TestBackend::start(1).await;
    let lines = Arc::new(Lines::default());
    let mut c = config();
    c.access_log = Some(AccessLogSink(Arc::clone(&lines) as Arc<dyn AccessLog>));
    let p = proxy(c, pool_of(&[&b], Algorithm::RoundRobin)).await;
    let (tx, _conn) = h2(TcpStream::connect(p.local_addr()).await.unwrap()).await;
    futures::future::join_all((0..3).map(|i| {
        let mut tx = tx.clone();
        async move {
            let r = send(&mut tx, get(&format!("http://www.example.com/l/{i}"), &[])).await;
            assert_eq!(r.status, 200);
        }
    }))
    .await;
    eventually(|| lines.0.lock().unwrap().len() == 3).await;
    let mut got = lines.0.lock().unwrap().clone();
    got.sort_by_key(|l| l.rsplit_once(" \"").map(|(_, r)| r.to_owned()));
    assert_eq!(got.len(), 3, "{got:?}");
    for (i, line) in got.iter().enumerate() {
        assert!(
            line.ends_with(&format!(
                " 200 4 - - ---- 0 \"GET http://www.example.com/l/{i} HTTP/2.0\""
            )),
            "{line}"
        );
    }
}
