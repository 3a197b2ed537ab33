//! HTTP mode against real HTTP backends on loopback (in-process hyper servers).
#![cfg(feature = "http")]

mod http_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

use http_common::{
    dead_addr, pool_at, pool_of, read_head, read_until_eof, tls_connect, watchdog, Client,
    TestBackend,
};
use lb_core::{Algorithm, Backend, BackendId, BackendSet, Health, Pool, PoolConfig};
use lb_proxy::http::{
    AccessEntry, AccessLog, AccessLogSink, BackendTls, ForwardedHeaders, HashKeySource, HttpPool,
    HttpProxy, HttpProxyConfig, Route, TlsTermination, Verify,
};
use lb_proxy::outcome::{Outcome, OutcomeObserver};
use lb_proxy::proxy_protocol::{AcceptProxy, ProxyHeader, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config() -> HttpProxyConfig {
    watchdog();
    let mut c = HttpProxyConfig::new("test");
    c.default_pool = Some("www".into());
    c
}

async fn proxy(config: HttpProxyConfig, pools: Vec<(&str, Arc<Pool>)>) -> HttpProxy {
    HttpProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        pools
            .into_iter()
            .map(|(n, p)| HttpPool::new(n, p))
            .collect(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_per_request_on_one_client_connection() {
    let b: Vec<TestBackend> = futures::future::join_all((1..=3).map(TestBackend::start)).await;
    let p = proxy(
        config(),
        vec![(
            "www",
            pool_of(&b.iter().collect::<Vec<_>>(), Algorithm::RoundRobin),
        )],
    )
    .await;
    let mut client = Client::connect(p.local_addr()).await;
    let mut seen = HashMap::new();
    for _ in 0..30 {
        let r = client.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("id={}", r.backend()));
        *seen.entry(r.backend()).or_insert(0) += 1;
    }
    assert_eq!(seen, HashMap::from([(1, 10), (2, 10), (3, 10)]));
    // Backend connections are kept alive and reused.
    let backend_conns: u64 = b
        .iter()
        .map(|b| b.connections.load(Ordering::Relaxed))
        .sum();
    assert!(
        backend_conns <= 6,
        "{backend_conns} backend connections for 30 requests"
    );
    let s = p.stats();
    assert_eq!(s.virtual_server.connections, 1);
    assert_eq!(s.virtual_server.requests, 30);
    assert_eq!(s.virtual_server.responses.c2xx, 30);
    for be in &s.backends {
        assert_eq!(
            (be.requests, be.responses.c2xx, be.in_flight),
            (10, 10, 0),
            "{be:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.forwarded.forwarded = true;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut client = Client::connect(p.local_addr()).await;
    let r = client
        .get(
            "/",
            &[
                ("x-forwarded-for", "203.0.113.7, 198.51.100.2"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=203.0.113.7"),
                ("host", "www.example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-echo-xff"),
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(r.header("x-echo-xfproto"), "http");
    assert_eq!(r.header("x-echo-xfport"), p.local_addr().port().to_string());
    assert_eq!(r.header("x-echo-host"), "www.example.com");
    let fwd = r.header("x-echo-forwarded");
    assert!(
        fwd.starts_with("for=203.0.113.7, for=\"127.0.0.1:")
            && fwd.ends_with("\";proto=http;host=www.example.com"),
        "{fwd}"
    );

    // Switched off: nothing added.
    let mut c = config();
    c.forwarded = ForwardedHeaders::NONE;
    let p2 = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let r = Client::connect(p2.local_addr()).await.get("/", &[]).await;
    assert_eq!(r.header("x-echo-xff"), "");
    assert_eq!(r.header("x-echo-forwarded"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_client_is_written_correctly() {
    let Ok(l) = tokio::net::TcpListener::bind("[::1]:0").await else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true: no IPv6 loopback (::1) to test with; refusing to skip"
        );
        eprintln!("SKIP ipv6_client_is_written_correctly: no IPv6 loopback");
        return;
    };
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.forwarded.forwarded = true;
    let p = HttpProxy::start(
        l,
        c,
        vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .unwrap();
    let r = Client::connect(p.local_addr()).await.get("/", &[]).await;
    assert_eq!(r.header("x-echo-xff"), "::1");
    assert!(
        r.header("x-echo-forwarded").starts_with("for=\"[::1]:"),
        "{}",
        r.header("x-echo-forwarded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path() {
    let www = TestBackend::start(1).await;
    let api = TestBackend::start(2).await;
    let img = TestBackend::start(3).await;
    let shop = TestBackend::start(4).await;
    let mut c = config();
    c.routes = vec![
        Route::new("shop").host("shop.example.com".parse().unwrap()),
        Route::new("api")
            .host("*.example.com".parse().unwrap())
            .path_prefix("/api/"),
        Route::new("img").path_prefix("/img/"),
    ];
    let p = proxy(
        c,
        vec![
            ("www", pool_of(&[&www], Algorithm::RoundRobin)),
            ("api", pool_of(&[&api], Algorithm::RoundRobin)),
            ("img", pool_of(&[&img], Algorithm::RoundRobin)),
            ("shop", pool_of(&[&shop], Algorithm::RoundRobin)),
        ],
    )
    .await;
    let mut client = Client::connect(p.local_addr()).await;
    for (host, path, want) in [
        ("shop.example.com", "/api/x", 4),
        ("SHOP.example.com:8080", "/", 4),
        ("eu.example.com", "/api/v1", 2),
        ("a.b.example.com", "/api/", 2),
        ("example.com", "/api/v1", 1),
        ("eu.example.com", "/other", 1),
        ("other.org", "/img/logo.png", 3),
        ("other.org", "/", 1),
    ] {
        let r = client.get(path, &[("host", host)]).await;
        assert_eq!(
            (r.status.as_u16(), r.backend()),
            (200, want),
            "{host} {path}"
        );
    }
}

/// A proxy over `b` with Maglev keyed on cookie `sid`.
async fn cookie_hashed(b: &[TestBackend]) -> HttpProxy {
    let mut c = config();
    c.hash_key = HashKeySource::Cookie("sid".into());
    proxy(
        c,
        vec![(
            "www",
            pool_of(&b.iter().collect::<Vec<_>>(), Algorithm::MAGLEV),
        )],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_key_from_cookie_sticks() {
    let b: Vec<TestBackend> = futures::future::join_all((1..=4).map(TestBackend::start)).await;
    let p = cookie_hashed(&b).await;
    let mut client = Client::connect(p.local_addr()).await;
    let mut per_user = HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let cookie = format!("a=1; sid=user{user}");
            let r = client.get("/", &[("cookie", &cookie)]).await;
            let prev = per_user.insert(user, r.backend());
            if round > 0 {
                assert_eq!(prev, Some(r.backend()), "user{user} moved");
            }
        }
    }
    let distinct: std::collections::HashSet<_> = per_user.values().collect();
    assert!(distinct.len() >= 2, "20 users on one backend: {per_user:?}");
}

/// Requests without the cookie (one client, one connection) are spread over the backends,
/// as HAProxy's `balance hdr()` falls back to round robin; they all went to the backend the
/// client address hashes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_hash_key_are_spread() {
    let b: Vec<TestBackend> = futures::future::join_all((1..=4).map(TestBackend::start)).await;
    let p = cookie_hashed(&b).await;
    let mut client = Client::connect(p.local_addr()).await;
    let mut seen = HashMap::new();
    for _ in 0..200 {
        *seen
            .entry(client.get("/", &[]).await.backend())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 20), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_backend_is_503() {
    let b = TestBackend::start(1).await;
    let pool = pool_of(&[&b], Algorithm::RoundRobin);
    let p = proxy(config(), vec![("www", Arc::clone(&pool))]).await;
    let mut client = Client::connect(p.local_addr()).await;
    assert_eq!(client.get("/", &[]).await.status, 200);
    pool.set_health(BackendId(1), Health::Down, now()).unwrap();
    let r = client.get("/", &[]).await;
    assert_eq!(r.status, 503);
    // The connection stays usable, and recovery is seen on the next pick.
    pool.set_health(BackendId(1), Health::Up, now()).unwrap();
    assert_eq!(client.get("/", &[]).await.status, 200);

    // No route and no default pool.
    let mut c = config();
    c.default_pool = None;
    c.routes = vec![Route::new("www").path_prefix("/only/")];
    let p2 = proxy(c, vec![("www", Arc::clone(&pool))]).await;
    assert_eq!(
        Client::connect(p2.local_addr())
            .await
            .get("/", &[])
            .await
            .status,
        503
    );
    assert_eq!(p.stats().virtual_server.no_backend, 1);
    assert_eq!(p2.stats().virtual_server.no_backend, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retries_any_method_else_502() {
    let live = TestBackend::start(2).await;
    let dead = dead_addr().await;
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), dead),
        Backend::new(BackendId(2), live.addr),
    ])
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let p = proxy(config(), vec![("www", pool)]).await;
    let mut client = Client::connect(p.local_addr()).await;
    // rr: even picks hit the dead backend first; GETs are retried on the live one.
    for _ in 0..4 {
        let r = client.get("/", &[]).await;
        assert_eq!((r.status.as_u16(), r.backend()), (200, 2));
    }
    // POST too: a refused connect sent nothing (HAProxy's default `retry-on
    // conn-failure`), so the one that picks the dead backend goes on to the live one.
    for _ in 0..2 {
        let r = client.send("POST", "/", &[]).await;
        assert_eq!((r.status.as_u16(), r.backend()), (200, 2));
    }
    let s = p.stats();
    assert_eq!(s.virtual_server.bad_gateway, 0);
    assert!(s.virtual_server.retries >= 3, "{:?}", s.virtual_server);
    let dead_stats = s.backends.iter().find(|b| b.id == BackendId(1)).unwrap();
    assert!(dead_stats.connect_failures >= 2, "{dead_stats:?}");
    assert_eq!(dead_stats.failures, dead_stats.connect_failures);
    assert_eq!(dead_stats.responses.total(), 0);

    // Only dead backends: GET gets 502 after trying them all.
    let set = BackendSet::new(vec![Backend::new(BackendId(1), dead)]).unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let p2 = proxy(config(), vec![("www", pool)]).await;
    assert_eq!(
        Client::connect(p2.local_addr())
            .await
            .get("/", &[])
            .await
            .status,
        502
    );
}

/// A POST with a body whose first backend refuses the connection reaches another with
/// its body whole: nothing of it was read before the connect failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_survives_a_connect_failure_retry() {
    // A backend answering each request with the body it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(body)))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), dead_addr().await),
        Backend::new(BackendId(2), live),
    ])
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let p = proxy(config(), vec![("www", pool)]).await;
    let body = "x".repeat(100_000);
    for _ in 0..2 {
        let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
        c.write_all(
            format!(
                "POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (got, eof) = read_until_eof(&mut c, Duration::from_secs(10)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(
            eof && got.starts_with("HTTP/1.1 200"),
            "{}",
            &got[..got.len().min(200)]
        );
        assert!(got.ends_with(&body), "body not whole: {} bytes", got.len());
    }
    assert_eq!(p.stats().virtual_server.bad_gateway, 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_is_504() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.backend_response = Duration::from_millis(300);
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut client = Client::connect(p.local_addr()).await;
    let t0 = now();
    let r = client.get("/sleep/3000", &[]).await;
    assert_eq!(r.status, 504);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // A fast request afterwards works.
    assert_eq!(client.get("/", &[]).await.status, 200);
    let s = p.stats();
    assert_eq!(s.virtual_server.gateway_timeout, 1);
    assert_eq!(s.backends[0].timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_5xx_is_passed_and_counted() {
    #[derive(Debug, Default)]
    /// Failures, final successes, 503s.
    struct Count(AtomicU32, AtomicU32, AtomicU32);
    impl OutcomeObserver for Count {
        fn observe(&self, _: &Backend, o: &Outcome) {
            if o.is_failure() {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            if matches!(o, Outcome::Success { .. }) {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
            if matches!(o, Outcome::HttpServerError { status: 503 }) {
                self.2.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let b = TestBackend::start(1).await;
    let obs = Arc::new(Count::default());
    let p =
        HttpProxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            config(),
            vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))
                .with_observer(obs.clone())],
        )
        .await
        .unwrap();
    let mut client = Client::connect(p.local_addr()).await;
    assert_eq!(client.get("/status/503", &[]).await.status, 503);
    assert_eq!(client.get("/status/404", &[]).await.status, 404);
    assert_eq!(client.get("/status/302", &[]).await.status, 302);
    assert_eq!(client.get("/", &[]).await.status, 200);
    // The last response's success is reported once its body is through (2 s at most).
    for _ in 0..100 {
        if obs.1.load(Ordering::Relaxed) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (obs.0.load(Ordering::Relaxed), obs.1.load(Ordering::Relaxed)),
        (1, 3)
    );
    let s = p.stats();
    let be = &s.backends[0];
    assert_eq!(
        (
            be.responses.c2xx,
            be.responses.c3xx,
            be.responses.c4xx,
            be.responses.c5xx
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(be.failures, 1);
    assert_eq!(
        s.virtual_server.no_backend, 0,
        "a backend's 503 is not ours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_400_and_closed() {
    let b = TestBackend::start(1).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        .await
        .unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(eof, "connection left open after 400");
    assert_eq!(b.requests.load(Ordering::Relaxed), 0);

    // Too many headers: 431.
    let mut c = config();
    c.limits.max_headers = 8;
    let p2 = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut s = TcpStream::connect(p2.local_addr()).await.unwrap();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(eof);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(p.stats().virtual_server.bad_requests, 1);
    assert_eq!(p.stats().virtual_server.responses.c4xx, 1);
    assert_eq!(p2.stats().virtual_server.bad_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cut_off_while_others_are_served() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.header_read = Duration::from_millis(700);
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let addr = p.local_addr();
    let slow = tokio::spawn(async move {
        // Timed from before the connect: the proxy's timer starts later, at its accept.
        let t0 = now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // One header byte every 100 ms, for at most 5 s.
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(if i % 2 == 0 { b"X" } else { b"y" })
                .await
                .is_err()
            {
                break;
            }
            // Stop at the answer or the close.
            let mut probe = [0u8; 1];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
            {
                break;
            }
        }
        let (got, eof) = read_until_eof(&mut s, Duration::from_secs(2)).await;
        (t0.elapsed(), eof, got)
    });
    // Meanwhile other clients are served.
    let mut served = 0;
    for _ in 0..10 {
        let r = Client::connect(addr).await.get("/", &[]).await;
        assert_eq!(r.status, 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (elapsed, eof, got) = slow.await.unwrap();
    assert_eq!(served, 10);
    assert!(eof, "slowloris connection still open");
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_millis(2500),
        "cut off after {elapsed:?}"
    );
    // As HAProxy's `timeout http-request`: a 408 for the head that did not complete.
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text:?}"
    );
    let v = p.stats().virtual_server;
    assert_eq!((v.header_timeouts, v.responses.c4xx), (1, 1));
}

/// Reads one response to a `GET /` (the test backend's bodies are short) off `s`.
async fn one_response(s: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("no response")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A proxy with these two timeouts over one backend, and a keep-alive client connection to
/// it that has had one response.
async fn after_one_response(
    header_read: Duration,
    client_idle: Duration,
) -> (TestBackend, HttpProxy, TcpStream) {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.header_read = header_read;
    c.timeouts.client_idle = client_idle;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_response(&mut s).await.starts_with("HTTP/1.1 200"));
    (b, p, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_wait_is_not_cut_by_the_request_head_timeout() {
    // HAProxy's split: `timeout http-keep-alive` bounds the wait for the next request,
    // `timeout http-request` the request head itself. hyper's own header timer also ran
    // during the keep-alive wait and closed this connection after 300 ms.
    let (_b, p, mut s) =
        after_one_response(Duration::from_millis(300), Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let v = p.stats().virtual_server;
    assert_eq!((v.header_timeouts, v.idle_timeouts), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_second_request_head_is_cut_off_from_its_first_byte() {
    let (_b, p, mut s) =
        after_one_response(Duration::from_millis(400), Duration::from_secs(5)).await;
    // Idle for a while (under client_idle), then a head that never completes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t0 = now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
        {
            break;
        }
        if s.write_all(b"X").await.is_err() {
            break;
        }
    }
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    let elapsed = t0.elapsed();
    assert!(eof, "slow head not cut off");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_millis(2000),
        "cut off after {elapsed:?}"
    );
    let v = p.stats().virtual_server;
    assert_eq!((v.header_timeouts, v.idle_timeouts), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_sending_nothing_is_closed_at_the_request_head_timeout() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.header_read = Duration::from_millis(300);
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    // Timed from before the connect: the proxy's timer starts later, at its accept.
    let t0 = now();
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(eof && got.is_empty());
    assert!(
        t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        t0.elapsed()
    );
    assert_eq!(p.stats().virtual_server.header_timeouts, 1);
}

/// An HTTPS listener: requests over TLS spread over the backends, which learn the scheme
/// (`X-Forwarded-Proto: https`, `proto=https`); with `accept_proxy` the PROXY header and
/// the ClientHello may come in one segment. A client speaking plain HTTP, one that trusts
/// another certificate and one that sends nothing are closed and counted
/// (`tls_handshake_errors`), while the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_terminates_tls() {
    let b: Vec<TestBackend> = futures::future::join_all((1..=2).map(TestBackend::start)).await;
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let der = cert.cert.der().clone();
    let mut c = config();
    c.forwarded.forwarded = true;
    c.timeouts.header_read = Duration::from_millis(300);
    c.tls = Some(
        TlsTermination::from_pem(
            cert.cert.pem().as_bytes(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap(),
    );
    let p = proxy(
        c.clone(),
        vec![(
            "www",
            pool_of(&b.iter().collect::<Vec<_>>(), Algorithm::RoundRobin),
        )],
    )
    .await;
    let mut client = Client::connect_tls(p.local_addr(), der.clone(), "www.example.com", b"")
        .await
        .unwrap();
    let mut seen = HashMap::new();
    for _ in 0..4 {
        let r = client.get("/", &[("host", "www.example.com")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-xfproto"), "https");
        assert!(
            r.header("x-echo-forwarded")
                .ends_with(";proto=https;host=www.example.com"),
            "{}",
            r.header("x-echo-forwarded")
        );
        *seen.entry(r.backend()).or_insert(0) += 1;
    }
    assert_eq!(seen, HashMap::from([(1, 2), (2, 2)]));

    // Plain HTTP to the HTTPS port: closed (rustls answers with an alert, no HTTP).
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(eof && !got.starts_with(b"HTTP"), "{got:?}");
    // A client that trusts another certificate gives up.
    let other = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let refused = Client::connect_tls(
        p.local_addr(),
        other.cert.der().clone(),
        "www.example.com",
        b"",
    )
    .await;
    assert!(refused.is_err());
    // Nothing at all: closed at the header-read timeout.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(eof && got.is_empty());
    // The client's served connection went on meanwhile.
    assert_eq!(client.get("/", &[]).await.status, 200);
    let tls_errors = || p.stats().virtual_server.tls_handshake_errors;
    for _ in 0..100 {
        if tls_errors() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tls_errors(), 3);
    assert_eq!(p.stats().virtual_server.requests, 5);

    // Behind another load balancer: the PROXY header, then TLS.
    c.accept_proxy = Some(AcceptProxy {
        header_timeout: Duration::from_millis(500),
    });
    let p2 = proxy(c, vec![("www", pool_of(&[&b[0]], Algorithm::RoundRobin))]).await;
    let header = ProxyHeader::tcp(
        "198.51.100.7:40000".parse().unwrap(),
        "203.0.113.1:8443".parse().unwrap(),
    )
    .to_bytes(Version::V1);
    let mut client = Client::connect_tls(p2.local_addr(), der, "www.example.com", &header)
        .await
        .unwrap();
    let r = client.get("/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-xff"), "198.51.100.7");
    assert_eq!(r.header("x-echo-xfproto"), "https");
    assert_eq!(r.header("x-echo-xfport"), "8443");
}

/// `redirect_https`: every request is answered with a redirect to https, same host (without
/// its port), path and query; 301 for GET, 308 for POST; a port other than 443 is written;
/// a request without Host goes to the address it reached. No backend is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_sends_every_request_to_https() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.redirect_https = Some(443);
    let p = proxy(
        c.clone(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let mut client = Client::connect(p.local_addr()).await;
    let r = client
        .get("/a/b?x=1", &[("host", "WWW.Example.com:8080")])
        .await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), "https://www.example.com/a/b?x=1");
    let r = client
        .send("POST", "/form", &[("host", "www.example.com")])
        .await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), "https://www.example.com/form");
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        text.contains("location: https://127.0.0.1/old\r\n"),
        "{text}"
    );
    // Asterisk-form names no resource: the root (it gave `https://host*`).
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 308") && text.contains("location: https://www.example.com/\r\n"),
        "{text}"
    );
    let st = p.stats();
    assert_eq!(st.virtual_server.responses.c3xx, 4);
    assert_eq!(st.backends[0].requests, 0);

    c.redirect_https = Some(8443);
    let p2 = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let r = Client::connect(p2.local_addr())
        .await
        .get("/", &[("host", "[2001:db8::1]:80")])
        .await;
    assert_eq!(r.header("location"), "https://[2001:db8::1]:8443/");
}

/// Accepts any server certificate: the SNI test looks at which one was served.
#[derive(Debug)]
struct AnyCert(
    Arc<rustls::crypto::CryptoProvider>,
    /// The signature schemes offered, when not all the provider's.
    Option<Vec<rustls::SignatureScheme>>,
);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1
            .clone()
            .unwrap_or_else(|| self.0.signature_verification_algorithms.supported_schemes())
    }
}

/// The certificate an HTTPS listener at `addr` serves to a client asking for `name` (an IP
/// address sends no SNI).
async fn served_certificate(
    addr: SocketAddr,
    name: &str,
) -> rustls_pki_types::CertificateDer<'static> {
    served_certificate_offering(addr, name, None).await
}

/// [`served_certificate`] to a client that offers only `schemes` (all when `None`).
async fn served_certificate_offering(
    addr: SocketAddr,
    name: &str,
    schemes: Option<Vec<rustls::SignatureScheme>>,
) -> rustls_pki_types::CertificateDer<'static> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider, schemes)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let s = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, s))
        .await
        .unwrap()
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Several certificates on one HTTPS listener, chosen by SNI as HAProxy's `crt-list`: the
/// first one covering the name (exact or `*.` wildcard), else the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_picks_the_certificate_by_sni() {
    let b = TestBackend::start(1).await;
    let www = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let api = rcgen::generate_simple_self_signed(vec!["*.api.example.com".into()]).unwrap();
    let pems: Vec<(String, String)> = [&www, &api]
        .iter()
        .map(|c| (c.cert.pem(), c.key_pair.serialize_pem()))
        .collect();
    let pairs: Vec<(&[u8], &[u8])> = pems
        .iter()
        .map(|(c, k)| (c.as_bytes(), k.as_bytes()))
        .collect();
    let mut c = config();
    c.tls = Some(TlsTermination::from_pems(&pairs).unwrap());
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    for (name, want) in [
        ("www.example.com", &www),
        ("v1.api.example.com", &api),
        ("deep.v1.api.example.com", &www),
        ("other.example.org", &www),
        ("127.0.0.1", &www),
    ] {
        let got = served_certificate(p.local_addr(), name).await;
        assert_eq!(&got, want.cert.der(), "{name}");
    }
    // A certificate naming no DNS name (its name only in the CN) would never be chosen:
    // refused after the first (it was taken and never served).
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cn.example.com");
    let cn_key = rcgen::KeyPair::generate().unwrap();
    let cn_only = params.self_signed(&cn_key).unwrap();
    let (cn_pem, cn_key_pem) = (cn_only.pem(), cn_key.serialize_pem());
    let e = TlsTermination::from_pems(&[pairs[0], (cn_pem.as_bytes(), cn_key_pem.as_bytes())])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tls sni certificate: certificate 2: no DNS name"),
        "{e}"
    );
    assert!(TlsTermination::check_sni_certificate(cn_pem.as_bytes()).is_err());
    assert!(TlsTermination::check_sni_certificate(pairs[1].0).is_ok());
    // As the first (the default) it is served to every client.
    TlsTermination::from_pems(&[(cn_pem.as_bytes(), cn_key_pem.as_bytes()), pairs[0]]).unwrap();
    // The pair's index is in the error.
    let bad: Vec<(&[u8], &[u8])> = vec![pairs[0], (pairs[1].0, pairs[0].1)];
    let e = TlsTermination::from_pems(&bad).unwrap_err().to_string();
    assert!(
        e.contains("certificate 2: does not go with the certificate"),
        "{e}"
    );
}

/// Two certificates for one name with keys of different kinds (ECDSA and Ed25519 here, as
/// nginx's RSA and ECDSA `ssl_certificate` pair): each client gets the one it can verify,
/// with or without SNI. A client that could not verify the first got a handshake failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_picks_the_certificate_the_client_can_verify() {
    use rustls::SignatureScheme;
    let b = TestBackend::start(1).await;
    let ecdsa = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let ed_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_cert = rcgen::CertificateParams::new(vec!["www.example.com".into()])
        .unwrap()
        .self_signed(&ed_key)
        .unwrap();
    let pems = [
        (ecdsa.cert.pem(), ecdsa.key_pair.serialize_pem()),
        (ed_cert.pem(), ed_key.serialize_pem()),
    ];
    let pairs: Vec<(&[u8], &[u8])> = pems
        .iter()
        .map(|(c, k)| (c.as_bytes(), k.as_bytes()))
        .collect();
    let mut c = config();
    c.tls = Some(TlsTermination::from_pems(&pairs).unwrap());
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let ed_only = Some(vec![SignatureScheme::ED25519]);
    let ecdsa_only = Some(vec![SignatureScheme::ECDSA_NISTP256_SHA256]);
    for name in ["www.example.com", "127.0.0.1"] {
        assert_eq!(
            &served_certificate_offering(p.local_addr(), name, ed_only.clone()).await,
            ed_cert.der(),
            "{name}"
        );
        assert_eq!(
            &served_certificate_offering(p.local_addr(), name, ecdsa_only.clone()).await,
            ecdsa.cert.der(),
            "{name}"
        );
        // Both verifiable: the first.
        assert_eq!(
            &served_certificate(p.local_addr(), name).await,
            ecdsa.cert.der(),
            "{name}"
        );
    }
}

/// Keys that cannot be used are named for what they are: an encrypted key (it read as
/// "no key" or a base64 error) and a key of a kind the provider cannot sign with (a P-521
/// key read as "does not go with the certificate"); a key of another certificate still
/// reads as a mismatch.
#[test]
fn unusable_tls_keys_say_why() {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let pem = cert.cert.pem();
    let err = |key: &str| {
        TlsTermination::from_pem(pem.as_bytes(), key.as_bytes())
            .unwrap_err()
            .to_string()
    };
    for encrypted in [
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMIIE\n-----END RSA PRIVATE KEY-----\n",
    ] {
        let e = err(encrypted);
        assert!(e.contains("the private key is encrypted"), "{e}");
    }
    // openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521
    let p521 = "-----BEGIN PRIVATE KEY-----
MIHuAgEAMBAGByqGSM49AgEGBSuBBAAjBIHWMIHTAgEBBEIAkIk1xdbHaxAocLm0
THbYjp3BJtdLdRcGC4bNEenrwHSGfmprSdWE5kIH4L6+ymVHAWvI2TV8fIbTEiCv
dLkYEoahgYkDgYYABACs0jOJnQWoB4CFmNUBnX0jQg88v7xO/W7O156NjRdA+7vN
FH9cvFCVMmDRW+5tc4zQ1l3ssUmBh5nbtT+p5lDLygFsk5goUQ02SuMMXhk/ucgd
Y1gAiOzM2i4VSdpmq/jehVEuRKm+dcQEPNUxyYMdi25obE3+wUyC1lAsaSxG2SjZ
7w==
-----END PRIVATE KEY-----
";
    let e = err(p521);
    assert!(e.contains("unsupported private key"), "{e}");
    assert!(!e.contains("does not go with"), "{e}");
    let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let e = err(&other.key_pair.serialize_pem());
    assert!(e.contains("does not go with the certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.client_idle = Duration::from_millis(300);
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t0 = now();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(eof, "idle connection not closed");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(p.stats().virtual_server.idle_timeouts, 1);
}

/// A WebSocket echo through the proxy. The tunnel holds its connection's `maxconn` slot
/// while it lasts: with one, another client waits until the tunnel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_echoes_through_the_proxy() {
    use tokio::io::AsyncReadExt;
    let b = TestBackend::start(7).await;
    let mut c = config();
    c.maxconn = 1;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let (mut s, head) = open_websocket(p.local_addr()).await;
    assert!(
        head.contains("upgrade: websocket") && head.contains("x-backend-id: 7"),
        "{head}"
    );
    echo_each(&mut s, &[b"hello", b"through the proxy", &[0u8, 1, 2, 255]]).await;
    assert_eq!(p.stats().virtual_server.upgrades, 1);
    assert_eq!(p.stats().virtual_server.responses.c1xx, 1);
    // The tunnel counts as an open connection while it lasts (hyper's connection task,
    // which counted it first, has ended), and no longer once the client has gone.
    assert_eq!(p.stats().virtual_server.active_connections, 1);
    let mut other = TcpStream::connect(p.local_addr()).await.unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), other.read(&mut [0u8; 16])).await;
    assert!(
        early.is_err(),
        "served beside the tunnel past maxconn: {early:?}"
    );
    drop(s);
    let (got, _) = read_until_eof(&mut other, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let t = tokio::time::Instant::now();
    while p.stats().virtual_server.active_connections > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.stats().virtual_server.active_connections, 0);
}

/// A passive health tracker as the daemon would wire one: `fall` consecutive failures mark
/// the backend down in the shared pool.
#[derive(Debug)]
struct Passive {
    pool: Arc<Pool>,
    fall: u32,
    consecutive: std::sync::Mutex<HashMap<BackendId, u32>>,
    detected: AtomicBool,
}

impl OutcomeObserver for Passive {
    fn observe(&self, b: &Backend, o: &Outcome) {
        let now = now();
        let mut m = self.consecutive.lock().unwrap();
        let n = m.entry(b.id()).or_insert(0);
        if o.is_failure() {
            *n += 1;
            if *n >= self.fall {
                let _ = self.pool.set_health(b.id(), Health::Down, now);
                self.detected.store(true, Ordering::SeqCst);
            }
        } else {
            *n = 0;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_load_idempotent_requests_retried() {
    let mut b: Vec<TestBackend> = futures::future::join_all((1..=3).map(TestBackend::start)).await;
    let pool = pool_of(&b.iter().collect::<Vec<_>>(), Algorithm::RoundRobin);
    let passive = Arc::new(Passive {
        pool: Arc::clone(&pool),
        fall: 3,
        consecutive: Default::default(),
        detected: AtomicBool::new(false),
    });
    let p = HttpProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        config(),
        vec![HttpPool::new("www", Arc::clone(&pool)).with_observer(passive.clone())],
    )
    .await
    .unwrap();
    let addr: SocketAddr = p.local_addr();
    let non_2xx = Arc::new(AtomicU64::new(0));
    let non_2xx_after = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (non_2xx, non_2xx_after, ok, passive) = (
            non_2xx.clone(),
            non_2xx_after.clone(),
            ok.clone(),
            passive.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            for i in 0..300 {
                // Some requests stay in flight on the backend when it dies.
                let path = if i % 5 == 0 { "/sleep/20" } else { "/" };
                let detected = passive.detected.load(Ordering::SeqCst);
                let r = c.get(path, &[]).await;
                if r.status.is_success() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    non_2xx.fetch_add(1, Ordering::Relaxed);
                    if detected {
                        non_2xx_after.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Kill backend 2 once load is flowing.
    let deadline = now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) < 200 && now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b[1].kill().await;
    let killed_at = ok.load(Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let s = p.stats();
    eprintln!(
        "killed after {killed_at} ok; ok={} non_2xx={} retries={} backend 2: {:?}",
        ok.load(Ordering::Relaxed),
        non_2xx.load(Ordering::Relaxed),
        s.virtual_server.retries,
        s.backends[1]
    );
    assert!(
        passive.detected.load(Ordering::SeqCst),
        "backend 2 never marked down"
    );
    assert_eq!(
        pool.backends().get(BackendId(2)).unwrap().health(),
        Health::Down
    );
    assert_eq!(
        non_2xx_after.load(Ordering::Relaxed),
        0,
        "5xx after detection"
    );
    assert_eq!(
        non_2xx.load(Ordering::Relaxed),
        0,
        "idempotent requests were not retried"
    );
    assert_eq!(ok.load(Ordering::Relaxed), 1200);
    assert!(s.virtual_server.retries >= 1);
    assert!(s.backends[1].failures >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_stops_listening() {
    let b = TestBackend::start(1).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let addr = p.local_addr();
    assert_eq!(Client::connect(addr).await.get("/", &[]).await.status, 200);
    p.shutdown(Duration::from_secs(2)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A connection accepted before a graceful shutdown whose request arrives after it began is
/// still answered (its first request is served, then it closes), instead of being closed
/// unanswered: a reload hands the listener over while clients are mid-connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_serves_a_connections_first_request() {
    let b = TestBackend::start(1).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let mut early = TcpStream::connect(p.local_addr()).await.unwrap();
    // Bounded wait until the proxy has taken the connection.
    let deadline = now() + Duration::from_secs(5);
    while p.stats().virtual_server.connections == 0 && now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(p.stats().virtual_server.connections, 1);
    let stopping = tokio::spawn(p.shutdown(Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    early
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (bytes, closed) = read_until_eof(&mut early, Duration::from_secs(5)).await;
    let response = String::from_utf8_lossy(&bytes).into_owned();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(closed, "the connection closes after its first response");
    stopping.await.unwrap();
}

/// The same for an HTTPS listener whose client had not done its handshake when the stop
/// came (a reload renewing the certificate): the handshake and the first request are
/// served, not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_serves_a_tls_connections_first_request() {
    use tokio::io::AsyncReadExt;
    let b = TestBackend::start(1).await;
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let mut c = config();
    c.tls = Some(
        TlsTermination::from_pem(
            cert.cert.pem().as_bytes(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap(),
    );
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let tcp = TcpStream::connect(p.local_addr()).await.unwrap();
    let deadline = now() + Duration::from_secs(5);
    while p.stats().virtual_server.connections == 0 && now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = tokio::spawn(p.shutdown(Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tls = tls_connect(tcp, cert.cert.der().clone(), "www.example.com")
        .await
        .expect("the handshake of a connection accepted before the stop");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    stopping.await.unwrap();
}

/// Over HTTPS the TLS handshake and the first request head share one `header_read`
/// (HAProxy's `timeout http-request` covers the handshake): a client that takes most of it
/// to start the handshake, then sends no request, is closed `header_read` after it
/// connected. The head used to get a `header_read` of its own after the handshake (up to
/// twice it from the connection's start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_handshake_and_first_head_share_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let b = TestBackend::start(1).await;
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let mut c = config();
    c.timeouts.header_read = Duration::from_millis(1_000);
    c.tls = Some(
        TlsTermination::from_pem(
            cert.cert.pem().as_bytes(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap(),
    );
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let t0 = now();
    let tcp = TcpStream::connect(p.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut tls = tls_connect(tcp, cert.cert.der().clone(), "www.example.com")
        .await
        .expect("handshake inside header_read");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
    let closed = t0.elapsed();
    assert!(read.is_ok(), "not closed in 5 s");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(1_500),
        "closed {closed:?} after the connection opened (header_read 1 s)"
    );
    assert_eq!(p.stats().virtual_server.header_timeouts, 1);
    assert_eq!(p.stats().virtual_server.tls_handshake_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_from_proxy_protocol_header() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.accept_proxy = Some(AcceptProxy {
        header_timeout: Duration::from_millis(500),
    });
    c.forwarded.forwarded = true;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;

    // v1, header and request in one segment.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(
        b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 8443\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("x-echo-xff: 198.51.100.7\r\n"), "{text}");
    assert!(text.contains("x-echo-xfport: 8443\r\n"), "{text}");

    // v2 with an IPv6 client.
    let header = ProxyHeader::tcp(
        "[2001:db8::1]:4711".parse().unwrap(),
        "[2001:db8::80]:80".parse().unwrap(),
    );
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    let mut bytes = header.to_bytes(Version::V2);
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&bytes).await.unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.contains("x-echo-xff: 2001:db8::1\r\n"), "{text}");
    assert!(
        text.contains("x-echo-forwarded: for=\"[2001:db8::1]:4711\";proto=http;host=x\r\n"),
        "{text}"
    );

    // No header: closed without an answer.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(eof && got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(p.stats().virtual_server.proxy_header_errors, 1);
    assert_eq!(b.requests.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_keep_alive_pool_is_bounded() {
    let b = TestBackend::start(1).await;
    // Limit 0: no backend keep-alive, one backend connection per request.
    let mut c = config();
    c.limits.max_idle_per_backend = 0;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut client = Client::connect(p.local_addr()).await;
    for _ in 0..5 {
        assert_eq!(client.get("/", &[]).await.status, 200);
    }
    assert_eq!(b.connections.load(Ordering::Relaxed), 5);
    drop(p);

    // Limit 2: 6 concurrent requests open 6 connections; 2 stay idle, so the next 6
    // concurrent requests reuse 2 and open 4.
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.limits.max_idle_per_backend = 2;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let addr = p.local_addr();
    let batch = || async move {
        let runs = (0..6).map(|_| async move {
            Client::connect(addr)
                .await
                .get("/sleep/200", &[])
                .await
                .status
        });
        futures::future::join_all(runs).await
    };
    assert!(batch().await.iter().all(|s| *s == 200));
    assert_eq!(b.connections.load(Ordering::Relaxed), 6);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(batch().await.iter().all(|s| *s == 200));
    assert_eq!(b.connections.load(Ordering::Relaxed), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_is_431() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.limits.max_header_bytes = 8192;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    let big = "a".repeat(10_000);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(eof);
    // A normal request on a new connection still works.
    assert_eq!(
        Client::connect(p.local_addr())
            .await
            .get("/", &[])
            .await
            .status,
        200
    );
}

/// A backend that answers one request per connection and then closes it without saying
/// `Connection: close`: every pooled connection to it goes stale.
async fn one_shot_backend() -> (SocketAddr, tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&served);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let served = Arc::clone(&s2);
            tokio::spawn(async move {
                if !read_head(&mut s, &mut Vec::new()).await {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                served.fetch_add(1, Ordering::Relaxed);
                // Close after a moment, as a backend's keep-alive timeout would.
                tokio::time::sleep(Duration::from_millis(5)).await;
            });
        }
    });
    (addr, task, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_are_retried_transparently() {
    let (addr, task, served) = one_shot_backend().await;
    let pool = pool_at(addr);
    let p = proxy(config(), vec![("www", pool)]).await;
    let mut client = Client::connect(p.local_addr()).await;
    for i in 0..30 {
        let r = client.get("/", &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, "ok"),
            "request {i}"
        );
        // Vary the gap so some requests race the backend's close and some find it closed.
        tokio::time::sleep(Duration::from_millis(i % 10)).await;
    }
    assert_eq!(served.load(Ordering::Relaxed), 30);
    let s = p.stats();
    eprintln!("stale-connection retries: {}", s.virtual_server.retries);
    assert_eq!(s.virtual_server.responses.c2xx, 30);
    // Keep-alive races are not held against the backend (passive health would eject it).
    assert_eq!(s.backends[0].failures, 0, "{:?}", s.backends[0]);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_share_one_virtual_server() {
    let b = TestBackend::start(1).await;
    let mut listeners = vec![tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()];
    if let Ok(l6) = tokio::net::TcpListener::bind("[::1]:0").await {
        listeners.push(l6);
    } else {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap());
    }
    let p = HttpProxy::start_many(
        listeners,
        config(),
        vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .unwrap();
    assert_eq!(p.local_addrs().len(), 2);
    for addr in p.local_addrs().to_vec() {
        assert_eq!(Client::connect(addr).await.get("/", &[]).await.status, 200);
    }
    assert_eq!(p.stats().virtual_server.requests, 2);
    assert!(HttpProxy::start_many(vec![], config(), vec![]).is_err());
    p.shutdown(Duration::from_secs(1)).await;
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or with two, is a 400 that closes the
/// connection (a backend reading the other `Host` line would serve another site than the
/// one routed on); HTTP/1.0 may omit it. An absolute-form target's authority replaces the
/// received `Host` (§3.2.2), and `Connection: host` cannot remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_validated_and_follows_the_target() {
    let b = TestBackend::start(1).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let addr = p.local_addr();
    let exchange = |req: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (got, eof) = read_until_eof(&mut s, Duration::from_secs(3)).await;
        (String::from_utf8_lossy(&got).into_owned(), eof)
    };
    for bad in [
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nHost: admin.example.com\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        // An absolute-form authority gets the Host checks: it is routed on and forwarded.
        "GET http://a..b@c..d:99999/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://c..d/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let (text, eof) = exchange(bad).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{bad:?}: {text}");
        assert!(eof, "{bad:?}: connection left open after 400");
    }
    assert_eq!(b.requests.load(Ordering::Relaxed), 0);
    assert_eq!(p.stats().virtual_server.bad_requests, 4);

    let (text, _) = exchange("GET / HTTP/1.0\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    let (text, _) = exchange(
        "GET http://public.example.com/x HTTP/1.1\r\nHost: internal.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-echo-host: public.example.com\r\n"),
        "{text}"
    );
    let (text, _) =
        exchange("GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: host, close\r\n\r\n")
            .await;
    assert!(
        text.to_ascii_lowercase()
            .contains("x-echo-host: www.example.com\r\n"),
        "{text}"
    );
}

/// A client that goes away in the middle of its request body is its own failure: the
/// backend, which was reading it, is not reported to passive health nor counted as failed
/// (HAProxy's termination state `CD`). Repeated, it used to eject healthy backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abort_mid_upload_is_not_held_against_the_backend() {
    let b = TestBackend::start(1).await;
    let obs = Arc::new(FailureCount::default());
    let p =
        HttpProxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            config(),
            vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))
                .with_observer(obs.clone())],
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
            .await
            .unwrap();
        // Let the head and the first bytes reach the backend, then go away.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    // Bounded wait for the proxy to notice each abort.
    let t = tokio::time::Instant::now();
    while b.requests.load(Ordering::Relaxed) < 3 && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.requests.load(Ordering::Relaxed),
        3,
        "the uploads reached the backend"
    );
    assert_eq!(
        obs.0.load(Ordering::Relaxed),
        0,
        "client aborts blamed on the backend"
    );
    assert_eq!(p.stats().backends[0].failures, 0);
    assert_eq!(p.stats().virtual_server.bad_gateway, 0);
}

/// A backend that stops in the middle of its response body is cut off after
/// `backend_response` without a byte (HAProxy `timeout server` is an inactivity timeout):
/// the client connection closes instead of hanging for good, and the backend's `timeouts`
/// and passive health count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_stalling_mid_body_is_cut_off() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Sends a head promising 100 bytes, then 10 of them, then nothing (for 30 s at most).
    let backend = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        if !read_head(&mut s, &mut Vec::new()).await {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let pool = pool_at(addr);
    let mut c = config();
    c.timeouts.backend_response = Duration::from_millis(500);
    let p = proxy(c, vec![("www", pool)]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0123456789"), "{text}");
    assert!(
        eof,
        "client connection still open after the backend stalled"
    );
    let be = &p.stats().backends[0];
    assert_eq!((be.timeouts, be.failures), (1, 1), "{be:?}");
    backend.abort();
}

/// Counts the failures passive health is told of.
#[derive(Debug, Default)]
struct FailureCount(AtomicU32);

impl OutcomeObserver for FailureCount {
    fn observe(&self, _: &Backend, o: &Outcome) {
        if o.is_failure() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A client that stops sending its request body gets 408 once the client timeout passes
/// (HAProxy `timeout client`) and its connection is closed; the backend, which waited for
/// the body, is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_408_and_not_held_against_the_backend() {
    let b = TestBackend::start(1).await;
    let obs = Arc::new(FailureCount::default());
    let mut c = config();
    c.timeouts.client = Duration::from_millis(300);
    let p =
        HttpProxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            c,
            vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))
                .with_observer(obs.clone())],
        )
        .await
        .unwrap();
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        .await
        .unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(eof, "connection left open after the 408");
    let v = p.stats().virtual_server;
    assert_eq!(
        (v.client_timeouts, v.responses.c4xx, v.bad_gateway),
        (1, 1, 0),
        "{v:?}"
    );
    assert_eq!(
        obs.0.load(Ordering::Relaxed),
        0,
        "the stalled client was blamed on the backend"
    );
    assert_eq!(p.stats().backends[0].failures, 0);
}

/// With `timeouts.client` and `timeouts.backend_response` equal (both default to 30 s), a
/// stalled upload is still the client's: 408, not a 504 held against the backend, which
/// was only waiting for the body. The backend's response timer used to run out first (it
/// ran from the upload's last progress, truncated to the millisecond), so the backend was
/// counted and reported to passive health for a client's stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_408_also_when_the_backend_timeout_is_as_long() {
    let b = TestBackend::start(1).await;
    let obs = Arc::new(FailureCount::default());
    let mut c = config();
    c.timeouts.client = Duration::from_millis(300);
    c.timeouts.backend_response = Duration::from_millis(300);
    let p =
        HttpProxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            c,
            vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))
                .with_observer(obs.clone())],
        )
        .await
        .unwrap();
    // A few uploads at once: the two timers ran out in the same millisecond now and then.
    let mut uploads = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let addr = p.local_addr();
        uploads.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
                .await
                .unwrap();
            let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
            (String::from_utf8_lossy(&got).into_owned(), eof)
        });
    }
    while let Some(r) = uploads.join_next().await {
        let (text, eof) = r.unwrap();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(eof, "connection left open after the 408");
    }
    let v = p.stats().virtual_server;
    assert_eq!((v.client_timeouts, v.gateway_timeout), (4, 0), "{v:?}");
    assert_eq!(
        obs.0.load(Ordering::Relaxed),
        0,
        "a stalled client was blamed on the backend"
    );
    assert_eq!(p.stats().backends[0].timeouts, 0);
}

/// An upload that keeps coming, however long it takes in all, is not cut off by the
/// backend's response timeout, which runs from the upload's last progress (HAProxy's
/// `timeout server` is an inactivity timeout): here 1 s of upload against 400 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_steady_upload_is_not_a_backend_timeout() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.timeouts.backend_response = Duration::from_millis(400);
    c.timeouts.client = Duration::from_secs(2);
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"0123456789").await.unwrap();
    }
    let text = one_response(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("id=1"), "{text}");
    let v = p.stats().virtual_server;
    assert_eq!((v.gateway_timeout, v.client_timeouts), (0, 0), "{v:?}");
}

/// A client that reads nothing of a large response is cut off once its writes have
/// waited for the client timeout, instead of holding both connections for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_not_reading_its_response_is_cut_off() {
    let b = TestBackend::start_with_body(1, Some(bytes::Bytes::from(vec![b'x'; 64 << 20]))).await;
    let obs = Arc::new(FailureCount::default());
    let mut c = config();
    c.timeouts.client = Duration::from_millis(300);
    let p =
        HttpProxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            c,
            vec![HttpPool::new("www", pool_of(&[&b], Algorithm::RoundRobin))
                .with_observer(obs.clone())],
        )
        .await
        .unwrap();
    // A small receive buffer, so the proxy's writes have to wait soon.
    let mut s = small_window_client(&p).await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Until the connection was accepted, cut off and closed (bounded).
    vs_until(&p, Duration::from_secs(10), |v| {
        v.connections == 1 && v.client_timeouts == 1 && v.active_connections == 0
    })
    .await;
    assert_eq!(
        obs.0.load(Ordering::Relaxed),
        0,
        "the client was blamed on the backend"
    );
    // What the client had buffered ends, short of the 64 MiB, in an EOF or a reset.
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(
        eof && got.len() < 64 << 20,
        "{} bytes, eof {eof}",
        got.len()
    );
}

/// A backend that answers before it has the whole request body (a 413, say) is still
/// receiving that body: its connection must not serve the next request, which would wait
/// behind the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_response_to_an_unfinished_upload_does_not_hold_up_the_next_request() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // POST: 413 at once, keep-alive, body left unread. GET: 200 `ok`. Each connection
    // serves requests until EOF (bounded by the test's traffic).
    let backend = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            conns.spawn(async move {
                let mut got = Vec::new();
                loop {
                    if !read_head(&mut s, &mut got).await {
                        return;
                    }
                    let reply: &[u8] = if got.starts_with(b"POST") {
                        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    got.clear();
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let pool = pool_at(addr);
    let mut c = config();
    c.timeouts.client = Duration::from_secs(20);
    let p = proxy(c, vec![("www", pool)]).await;

    let mut uploader = TcpStream::connect(p.local_addr()).await.unwrap();
    uploader
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
        .await
        .unwrap();
    let text = one_response(&mut uploader).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // The upload stays unfinished; another client's request must not wait for it.
    let mut other = Client::connect(p.local_addr()).await;
    let got = tokio::time::timeout(Duration::from_secs(3), other.get("/", &[]))
        .await
        .expect("the next request waited behind an unfinished upload");
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "ok"));
    drop(uploader);
    backend.abort();
}

/// A transfer coding besides `chunked` (`gzip, chunked`) is still on the body after hyper
/// undoes the chunking, so it reaches the next hop in both directions (RFC 9112 §6.1); it
/// used to be dropped, and the backend read gzip as plain bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_besides_chunked_are_kept() {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    let backend = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(5).any(|w| w == b"0\r\n\r\n") && got.len() < 65_536 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = seen_tx.send(String::from_utf8_lossy(&got).to_ascii_lowercase());
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let pool = pool_at(addr);
    let p = proxy(config(), vec![("www", pool)]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let request = tokio::time::timeout(Duration::from_secs(5), seen_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        request.contains("\r\ntransfer-encoding: gzip, chunked\r\n"),
        "{request}"
    );
    assert!(request.contains("hello"), "{request}");
    let response = one_response(&mut s).await.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(
        response.contains("\r\ntransfer-encoding: gzip, chunked\r\n"),
        "{response}"
    );
    assert!(response.contains("abc"), "{response}");
    backend.abort();
}

/// A backend response with both `Transfer-Encoding: gzip, chunked` and `Content-Length`
/// (the length is ignored, RFC 9112 §6.3) reaches the client framed by the kept
/// `Transfer-Encoding` alone: an intermediary must drop the `Content-Length` before
/// forwarding it. Both were forwarded, hyper refused to write such a head, and the client
/// connection closed without a response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_transfer_coding_drops_a_content_length() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        if !read_head(&mut s, &mut Vec::new()).await {
            return;
        }
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let pool = pool_at(addr);
    let p = proxy(config(), vec![("www", pool)]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    let response = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response:?}");
    assert!(
        response.contains("\r\ntransfer-encoding: gzip, chunked\r\n"),
        "{response}"
    );
    assert!(!response.contains("content-length"), "{response}");
    assert!(response.ends_with("3\r\nabc\r\n0\r\n\r\n"), "{response:?}");
    backend.abort();
}

/// A proxy replacing another (a reload restarting the virtual server) goes on from its
/// counters: the virtual server's totals and, by pool name and address, each backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_carry_over_to_a_replacing_proxy() {
    let b = TestBackend::start(1).await;
    let old = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let mut c = Client::connect(old.local_addr()).await;
    for path in ["/", "/status/503", "/"] {
        c.get(path, &[]).await;
    }
    drop(c);
    old.stop_accepting();
    // A new pool of the same backend, as a restart builds it.
    let new = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    new.carry_counters_from(&old);
    let mut c = Client::connect(new.local_addr()).await;
    c.get("/", &[]).await;
    let s = new.stats();
    let v = &s.virtual_server;
    assert_eq!(
        (v.requests, v.responses.c2xx, v.responses.c5xx),
        (4, 3, 1),
        "{v:?}"
    );
    assert_eq!(v.active_connections, 1, "open connections are not carried");
    let be = &s.backends[0];
    assert_eq!(
        (be.requests, be.responses.c2xx, be.responses.c5xx),
        (4, 3, 1),
        "{be:?}"
    );
}

/// HAProxy `busy-polling` in HTTP mode: the runtime polls with a zero timeout while a
/// client connection is open, and stops when it has closed; requests are served meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn busy_polling_spins_while_a_client_connection_is_open() {
    use lb_proxy::busy_poll::BusyPolling;
    let b = TestBackend::start(1).await;
    let busy = BusyPolling::new();
    let mut c = config();
    c.busy_polling = Some(busy.clone());
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(busy.spins(), 0, "no client: the loop sleeps");
    let mut client = Client::connect(p.local_addr()).await;
    for _ in 0..3 {
        assert_eq!(client.get("/", &[]).await.status, 200);
    }
    let before = busy.spins();
    let deadline = now() + Duration::from_secs(30);
    while busy.spins() < before + 100 {
        assert!(
            now() < deadline,
            "not busy polling with a client connection open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(client);
    let deadline = now() + Duration::from_secs(30);
    while p.stats().virtual_server.active_connections > 0 || busy.holders() > 0 {
        assert!(now() < deadline, "the client connection never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stopped = busy.spins();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(busy.spins(), stopped, "no client: no spinning");
}

/// A backend's `Content-Length: 2, 2` (equal values, RFC 9110 §8.6) reaches the client as
/// `content-length: 2`, as HAProxy sends it; it was passed on as the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_list_is_sent_as_one_value() {
    let (addr, _seen, _task) =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", false).await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let text = exchange(
        &p,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = text.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{text}");
    assert!(lower.contains("\r\ncontent-length: 2\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}

/// An HTTP/1.0 client asking for keep-alive, whose response has no length (the backend
/// ends it by closing), is told `Connection: close`: the close that frames the body ends
/// the connection, as announced. It was told `keep-alive`, then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_response_without_length_says_close() {
    let (addr, _seen, _task) = raw_backend(b"HTTP/1.1 200 OK\r\n\r\nhello", true).await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let text = exchange(
        &p,
        b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    let lower = text.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.0 200"), "{text}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(!lower.contains("keep-alive"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

/// Frontend `maxconn` (HAProxy's): with one slot, a second client is not served while the
/// first keeps its keep-alive connection open (it waits in the kernel's accept queue), and
/// is served as soon as the first closes. HTTP mode had no limit on client connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_holds_further_clients_until_a_connection_closes() {
    let b = TestBackend::start(1).await;
    let mut c = config();
    c.maxconn = 1;
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let mut first = Client::connect(p.local_addr()).await;
    assert_eq!(first.get("/", &[]).await.status, 200);
    let mut second = TcpStream::connect(p.local_addr()).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::io::AsyncReadExt::read(&mut second, &mut buf),
    )
    .await;
    assert!(early.is_err(), "served past maxconn: {early:?}");
    assert_eq!(p.stats().virtual_server.connections, 1);
    // The first one's request still goes on, then it leaves.
    assert_eq!(first.get("/", &[]).await.status, 200);
    drop(first);
    let (got, eof) = read_until_eof(&mut second, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(eof && text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(p.stats().virtual_server.connections, 2);
}

/// An HTTP/1.0 request's `Expect: 100-continue` is ignored (RFC 9110 §10.1.1), not passed
/// on to the backend, which would see a 1.1 request expecting a 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_expect_is_not_forwarded() {
    let (addr, seen, _task) =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let text = exchange(
        &p,
        b"POST / HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    let request = seen.await.unwrap().to_ascii_lowercase();
    assert!(!request.contains("expect:"), "{request}");
    assert!(request.ends_with("\r\n\r\nabc"), "{request}");
}

/// A raw backend for one connection: reads until 300 ms pass with nothing new, hands what
/// it read to the test, writes `reply`, then closes (`close`) or holds the connection 3 s.
async fn raw_backend(
    reply: &'static [u8],
    close: bool,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<String>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded: at most 50 reads of what one request sends.
        for _ in 0..50 {
            match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
        let _ = s.write_all(reply).await;
        if !close {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    (addr, rx, task)
}

/// Sends `req` on a new connection and reads until the proxy closes it (3 s at most).
async fn exchange(p: &HttpProxy, req: &[u8]) -> String {
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(req).await.unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(3)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A chunked body on a GET (Elasticsearch's `GET /_search`) reaches the backend, still
/// chunked: hyper sends a GET of unknown length with no body at all once the client's
/// `Transfer-Encoding` is stripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_get_body_reaches_the_backend() {
    let (addr, seen, backend) = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        true,
    )
    .await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let resp = exchange(
        &p,
        b"GET /_search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let req = seen.await.unwrap().to_ascii_lowercase();
    assert!(
        req.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{req:?}"
    );
    assert!(req.contains("\r\n5\r\nhello\r\n0\r\n\r\n"), "{req:?}");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    backend.abort();
}

/// Trailer fields the backend declares in `Trailer` reach the client: `Trailer` is not a
/// hop-by-hop header (RFC 9110 §7.6.1), and hyper writes only declared trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_are_forwarded() {
    let (addr, _seen, backend) = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n",
        false,
    )
    .await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let resp = exchange(
        &p,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(resp.contains("\r\ntrailer: x-sum\r\n"), "{resp:?}");
    assert!(resp.contains("\r\n0\r\nx-sum: 42\r\n\r\n"), "{resp:?}");
    backend.abort();
}

/// A backend that closes before the end of the body it announced has failed, though its
/// head was a success: passive health and the backend's failures hear of it (the client's
/// response ends short, and its connection closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_breaking_mid_body_is_counted() {
    let (addr, _seen, backend) =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", true).await;
    let failures = Arc::new(FailureCount::default());
    let p = HttpProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        config(),
        vec![HttpPool::new("www", pool_at(addr)).with_observer(failures.clone())],
    )
    .await
    .unwrap();
    let resp = exchange(&p, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(resp.ends_with("abc"), "{resp:?}");
    let be = &p.stats().backends[0];
    assert_eq!((be.failures, be.timeouts), (1, 0), "{be:?}");
    assert_eq!(failures.0.load(Ordering::Relaxed), 1);
    backend.abort();
}

/// Every outcome the observer is told of, in order.
#[derive(Debug, Default)]
struct OutcomeLog(std::sync::Mutex<Vec<Outcome>>);

impl OutcomeObserver for OutcomeLog {
    fn observe(&self, _: &Backend, o: &Outcome) {
        self.0.lock().unwrap().push(o.clone());
    }
}

/// A response head is not a response's final result for passive health: it is reported as
/// `Connected`, and the response as a `Success` only once its body arrived whole (or at
/// once when it has none). A body the backend breaks is a failure and never a success, so
/// a backend that sends good heads and then breaks its bodies is not let off by them; a 5xx
/// head is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_is_a_success_only_once_its_body_is_complete() {
    let cases: [(&[u8], usize); 5] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            2,
        ),
        (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 2),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 2),
        (
            b"HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
            1,
        ),
        // A 5xx whose body breaks: one failure, not two.
        (
            b"HTTP/1.1 503 Unavailable\r\nContent-Length: 100\r\n\r\nabc",
            2,
        ),
    ];
    let mut logs = Vec::new();
    for (reply, expected) in cases {
        let (addr, _seen, backend) = raw_backend(reply, true).await;
        let log = Arc::new(OutcomeLog::default());
        let p = HttpProxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            config(),
            vec![HttpPool::new("www", pool_at(addr)).with_observer(log.clone())],
        )
        .await
        .unwrap();
        let resp = exchange(
            &p,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 "), "{resp:?}");
        // The final result may come just after the client has the response (2 s at most).
        for _ in 0..100 {
            if log.0.lock().unwrap().len() >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        logs.push(log.0.lock().unwrap().clone());
        backend.abort();
    }
    let [complete, empty, broken, error, broken_error] = &logs[..] else {
        unreachable!()
    };
    for log in [complete, empty] {
        assert!(
            matches!(
                &log[..],
                [Outcome::Connected { .. }, Outcome::Success { .. }]
            ),
            "{log:?}"
        );
    }
    assert!(
        matches!(
            &broken[..],
            [
                Outcome::Connected { .. },
                Outcome::Closed {
                    backend_error: true,
                    ..
                }
            ]
        ),
        "{broken:?}"
    );
    for log in [error, broken_error] {
        assert!(
            matches!(&log[..], [Outcome::HttpServerError { status: 503 }]),
            "{log:?}"
        );
    }
}

/// The proxy speaks its own HTTP version (RFC 9110 §6.2): an HTTP/1.0 backend's answer
/// reaches an HTTP/1.1 client as HTTP/1.1 and keeps its connection open, and an HTTP/1.0
/// client's request goes to the backend as HTTP/1.1 with an (empty) Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_the_proxys_http_version() {
    use tokio::io::AsyncReadExt;
    let (addr, _seen, backend) = raw_backend(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        false,
    )
    .await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = one_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(
        !resp.to_ascii_lowercase().contains("connection: close"),
        "{resp:?}"
    );
    // Still open: no EOF within 300 ms.
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut b))
            .await
            .is_err(),
        "the client connection was closed"
    );
    backend.abort();

    let (addr, seen, backend) =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let resp = exchange(&p, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp:?}");
    let req = seen.await.unwrap().to_ascii_lowercase();
    assert!(req.starts_with("get /old http/1.1\r\n"), "{req:?}");
    assert!(req.contains("\r\nhost: \r\n"), "{req:?}");
    backend.abort();
}

/// CONNECT asks for a tunnel to the host it names, not for a backend's resource: 501 and
/// the connection closed (HAProxy's and Envoy's default), never `CONNECT /` to a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_501_and_closed() {
    let backend = TestBackend::start(1).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&backend], Algorithm::RoundRobin))],
    )
    .await;
    let resp = exchange(
        &p,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 501"), "{resp:?}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp:?}"
    );
    assert_eq!(p.stats().virtual_server.bad_requests, 1);
    assert_eq!(p.stats().backends[0].requests, 0);
}

/// A scripted backend: for each connection, reads one request head, sends it to `seen`
/// (lowercased), and writes `reply`, then holds the connection a while.
async fn scripted_backend(
    reply: &'static [u8],
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65_536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&got).to_ascii_lowercase());
                let _ = s.write_all(reply).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    (addr, rx, task)
}

/// Upgrades a proxy must not carry out: `Upgrade: h2c` (a tunnel would carry the client's
/// next requests to the backend unrouted, "h2c smuggling"; HAProxy drops it) and any
/// `Upgrade` of an HTTP/1.0 request (RFC 9110 §7.8) reach the backend as plain requests
/// without `Upgrade`; a `101` the client did not ask for is a 502, not a bare 101 followed
/// by a dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_a_proxy_must_not_carry_out_are_dropped() {
    let (addr, mut seen, backend) =
        scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    for request in [
        &b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"[..],
        &b"GET /x HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"[..],
    ] {
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(request).await.unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!head.contains("\r\nupgrade:"), "{head}");
        let response = one_response(&mut s).await;
        assert!(response.contains(" 200 OK"), "{response}");
    }
    backend.abort();

    let (addr, _seen, backend) = scripted_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = one_response(&mut s).await;
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    backend.abort();
}

/// An early answer to an upload (the backend answers 413 at once and then stops reading):
/// the client, whose writes then stall, no longer holds the connection past every timeout
/// — the client timeout bounds the rest of its body. And an early answer from a backend
/// that goes on reading (a 202) does not cut a steady upload off as a slow request head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_to_uploads_are_bounded_by_the_client_timeout() {
    // Reads the head, lets the upload fill the socket buffers for a second, answers 413,
    // then reads nothing more.
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut b, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match b.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = b
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let mut c = config();
    c.timeouts.client = Duration::from_millis(500);
    c.timeouts.client_idle = Duration::from_millis(500);
    c.timeouts.header_read = Duration::from_millis(500);
    c.timeouts.backend_response = Duration::from_secs(2);
    let p = proxy(c, vec![("www", pool_at(addr))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'a'; 65_536];
    // Until the proxy stops taking the upload (bounded: at most 30 s of writing).
    let writing = tokio::time::Instant::now();
    while writing.elapsed() < Duration::from_secs(30)
        && matches!(
            tokio::time::timeout(Duration::from_millis(300), s.write_all(&chunk)).await,
            Ok(Ok(()))
        )
    {}
    let t = tokio::time::Instant::now();
    while p.stats().virtual_server.active_connections > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        p.stats().virtual_server.active_connections,
        0,
        "held past the client timeout"
    );
    backend.abort();

    // 202 at once, then reads the whole body.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<usize>();
    let backend = tokio::spawn(async move {
        let (mut b, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut total = 0usize;
        let mut answered = false;
        loop {
            match b.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            if !answered {
                answered = true;
                let _ = b
                    .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
            if total >= 1_000_000 {
                break;
            }
        }
        let _ = got_tx.send(total);
    });
    let mut c = config();
    c.timeouts.header_read = Duration::from_millis(500);
    let p = proxy(c, vec![("www", pool_at(addr))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    let body_len = 900_000usize;
    s.write_all(
        format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {body_len}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // 100 kB every 150 ms: 1.35 s of upload, well past header_read.
    for i in 0..9 {
        if let Err(e) = s.write_all(&vec![b'b'; 100_000]).await {
            panic!(
                "upload cut at chunk {i}: {e}; {:?}",
                p.stats().virtual_server
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let response = one_response(&mut s).await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    drop(s);
    let total = tokio::time::timeout(Duration::from_secs(5), got_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(total >= body_len, "the backend got {total} bytes");
    assert_eq!(p.stats().virtual_server.header_timeouts, 0);
    backend.abort();
}

/// A response kept with `Transfer-Encoding: gzip, chunked` cannot go to an HTTP/1.0
/// client (RFC 9112 §6.1): a 502, where it got the gzip-coded bytes as its body with
/// nothing saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_coding_to_an_http10_client_is_502() {
    let (addr, _seen, backend) = scripted_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n",
    )
    .await;
    let p = proxy(config(), vec![("www", pool_at(addr))]).await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = one_response(&mut s).await;
    assert!(response.starts_with("HTTP/1.0 502"), "{response}");
    backend.abort();
}

/// A hand-written backend answering every request head with `response` (then closing), and
/// counting the requests it saw.
async fn fixed_backend(response: &'static [u8]) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if read_head(&mut s, &mut Vec::new()).await {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = s.write_all(response).await;
                }
            });
        }
    });
    (addr, seen)
}

/// A client that goes away (closes, or resets) while its request is with the backend
/// abandons it: the proxy closes the backend connection at once, freeing it and the
/// backend's in-flight count (nginx's default; HAProxy's `option abortonclose`). A change
/// that answered half-closed clients stopped hyper from reading mid-request, and the
/// backend request ran to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_request_abandons_it() {
    use tokio::io::AsyncReadExt;
    for reset in [false, true] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            assert!(read_head(&mut s, &mut Vec::new()).await);
            // Never answers: is the connection closed under it?
            let mut b = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
            let _ = tx.send(matches!(r, Ok(Ok(0) | Err(_))));
        });
        let p = proxy(config(), vec![("www", pool_at(addr))]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if reset {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(s);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("the backend saw the request end within 10 s")
                .unwrap(),
            "reset {reset}: the backend request went on after the client left"
        );
    }
}

/// A response with more header lines than the limit was replayed on every backend (a
/// parse error on a fresh connection looked like a broken backend), each counted failed.
/// It is a 502 from the one backend that sent it, as HAProxy's `PH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_response_is_one_502_not_replayed() {
    const MANY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
        a0: x\r\na1: x\r\na2: x\r\na3: x\r\na4: x\r\na5: x\r\na6: x\r\na7: x\r\na8: x\r\na9: x\r\n\
        b0: x\r\nb1: x\r\nb2: x\r\nb3: x\r\nb4: x\r\nb5: x\r\nb6: x\r\nb7: x\r\nb8: x\r\nb9: x\r\n\
        \r\nok";
    let (a, seen_a) = fixed_backend(MANY).await;
    let (b, seen_b) = fixed_backend(MANY).await;
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), a),
        Backend::new(BackendId(2), b),
    ])
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let mut c = config();
    c.limits.max_headers = 10;
    let p = proxy(c, vec![("www", pool)]).await;
    let mut client = Client::connect(p.local_addr()).await;
    let r = client.get("/", &[]).await;
    assert_eq!(r.status, 502);
    let seen = seen_a.load(Ordering::Relaxed) + seen_b.load(Ordering::Relaxed);
    assert_eq!(seen, 1, "sent to one backend only");
    let st = p.stats();
    assert_eq!(st.virtual_server.retries, 0);
    assert_eq!(st.virtual_server.bad_gateway, 1);
    assert_eq!(st.backends.iter().map(|b| b.failures).sum::<u64>(), 1);
}

/// A header continued on the next line (obs-fold) made the whole response a 502; HAProxy
/// passes it on with the lines joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_response_header_is_joined() {
    let (a, _) = fixed_backend(
        b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    let p = proxy(config(), vec![("www", pool_at(a))]).await;
    let mut client = Client::connect(p.local_addr()).await;
    let r = client.get("/", &[]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
    let long = r.header("x-long");
    assert!(long.starts_with('a') && long.ends_with('b'), "{long:?}");
}

/// hyper answers some parse errors and not others: an HTTP/2 preface is closed without a
/// response, and was counted as a 400 sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_errors_count_only_the_responses_sent() {
    let b = TestBackend::start(1).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(eof && got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Counted when the connection task ends, just after the close the client saw.
    let mut vs = p.stats().virtual_server;
    for _ in 0..100 {
        if vs.bad_requests == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        vs = p.stats().virtual_server;
    }
    assert_eq!(vs.bad_requests, 2);
    assert_eq!(vs.responses.c4xx, 1, "only the 400 was sent");
}

/// Each backend counts the bytes that crossed its connections (HAProxy's per-server
/// `bin`/`bout`), heads and bodies; one address in two route pools is two backends, and
/// neither's connections (reused from the idle pool) count into the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_count_the_bytes_of_their_requests_and_responses() {
    const BODY: usize = 10_000;
    const PAD: usize = 2_000;
    let b = TestBackend::start_with_body(1, Some(bytes::Bytes::from(vec![b'x'; BODY]))).await;
    let www = pool_of(&[&b], Algorithm::RoundRobin);
    let shop = pool_of(&[&b], Algorithm::RoundRobin);
    let mut c = config();
    c.routes = vec![Route::new("shop").host("shop.example.com".parse().unwrap())];
    let p = proxy(
        c,
        vec![("www", Arc::clone(&www)), ("shop", Arc::clone(&shop))],
    )
    .await;
    let pad = "p".repeat(PAD);
    let mut client = Client::connect(p.local_addr()).await;
    for _ in 0..3 {
        let r = client.get("/", &[("x-pad", &pad)]).await;
        assert_eq!((r.status.as_u16(), r.body.len()), (200, BODY));
    }
    let r = client.get("/", &[("host", "shop.example.com")]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, BODY));
    let stats = |p: &Pool| {
        let s = Arc::clone(p.backends().iter().next().unwrap().stats());
        (s.bytes_to_backend(), s.bytes_to_client())
    };
    let (to_backend, to_client) = stats(&www);
    // Three requests with their padding, three responses with their bodies; heads add
    // well under 1 KiB each.
    assert!(
        (3 * PAD..3 * PAD + 3 * 1024).contains(&(to_backend as usize)),
        "www: {to_backend} bytes to the backend"
    );
    assert!(
        (3 * BODY..3 * BODY + 3 * 1024).contains(&(to_client as usize)),
        "www: {to_client} bytes to the client"
    );
    let (to_backend, to_client) = stats(&shop);
    assert!(
        (1..1024).contains(&(to_backend as usize)),
        "shop: {to_backend} bytes to the backend"
    );
    assert!(
        (BODY..BODY + 1024).contains(&(to_client as usize)),
        "shop: {to_client} bytes to the client"
    );
}

/// A CA and a certificate it issued for `names` (no IP address among them), as a private
/// PKI gives backends: (CA PEM, rustls server configuration with the issued certificate).
fn issued(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    issued_with(names, |_| {})
}

/// [`issued`], the certificate's parameters adjusted by `adjust` (its validity, say). Each
/// CA has a name of its own (a wrong CA is then an unknown issuer, not a bad signature).
fn issued_with(
    names: &[&str],
    adjust: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, Arc<rustls::ServerConfig>) {
    static CAS: AtomicU32 = AtomicU32::new(0);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("lb test CA {}", CAS.fetch_add(1, Ordering::Relaxed)),
    );
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    adjust(&mut params);
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), server_config(&leaf, &key, None))
}

/// A server configuration with `leaf` and its `key`, requiring a client certificate from
/// `client_cas` when given.
fn server_config(
    leaf: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    client_cas: Option<rustls::RootCertStore>,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_cas {
        None => builder.with_no_client_auth(),
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
        ),
    };
    let mut config = builder
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// HAProxy's server `crt` (mutual TLS): a backend that requires a client certificate from
/// its CA serves the proxy that presents one and refuses (502) the one that does not or
/// presents another CA's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_presents_a_client_certificate() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "lb test mTLS CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = issue("api.internal");
    let mut clients = rustls::RootCertStore::empty();
    clients.add(ca.der().clone()).unwrap();
    let b =
        TestBackend::start_tls(1, server_config(&server_cert, &server_key, Some(clients))).await;
    let roots = || BackendTls::roots_from_pem(ca.pem().as_bytes()).unwrap();
    let (client_cert, client_key) = issue("lb.internal");
    let (stranger, stranger_key) = issued_client_elsewhere();
    let cases = [
        (
            "client certificate",
            BackendTls::with_client_certificate(
                Verify::Required(roots()),
                Some("api.internal"),
                client_cert.pem().as_bytes(),
                client_key.serialize_pem().as_bytes(),
            )
            .unwrap(),
            200,
        ),
        (
            "none",
            BackendTls::new(Verify::Required(roots()), Some("api.internal")).unwrap(),
            502,
        ),
        (
            "another CA's",
            BackendTls::with_client_certificate(
                Verify::Required(roots()),
                Some("api.internal"),
                stranger.as_bytes(),
                stranger_key.as_bytes(),
            )
            .unwrap(),
            502,
        ),
    ];
    for (what, tls, status) in cases {
        let p = proxy_tls(pool_of(&[&b], Algorithm::RoundRobin), tls).await;
        let r = Client::connect(p.local_addr()).await.get("/", &[]).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
    }
    // A key that is not the certificate's is refused when the configuration is built.
    let e = BackendTls::with_client_certificate(
        Verify::None,
        None,
        client_cert.pem().as_bytes(),
        server_key.serialize_pem().as_bytes(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("does not go with the certificate"),
        "{e}"
    );
}

/// A client certificate and key (PEM) from a CA of its own.
fn issued_client_elsewhere() -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "lb test other CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["lb.internal".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn proxy_tls(pool: Arc<Pool>, tls: BackendTls) -> HttpProxy {
    HttpProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        config(),
        vec![HttpPool::new("www", pool).with_tls(tls)],
    )
    .await
    .unwrap()
}

/// HAProxy `server … ssl verify required ca-file … sni str(api.internal)`: requests on one
/// client connection go re-encrypted to both HTTPS backends in turn, over kept-alive TLS
/// connections that sent the name as SNI; a WebSocket tunnels through TLS too, and the
/// backends' byte counters count the requests and responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_reencrypts_to_https_backends() {
    let (ca, server) = issued(&["api.internal"]);
    let b = [
        TestBackend::start_tls(1, Arc::clone(&server)).await,
        TestBackend::start_tls(2, server).await,
    ];
    let roots = BackendTls::roots_from_pem(ca.as_bytes()).unwrap();
    let tls = BackendTls::new(Verify::Required(roots), Some("api.internal")).unwrap();
    let p = proxy_tls(pool_of(&[&b[0], &b[1]], Algorithm::RoundRobin), tls).await;
    let mut client = Client::connect(p.local_addr()).await;
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let r = client.get("/", &[("host", "www.example.com")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-echo-xfproto"), "http");
        *seen.entry(r.backend()).or_insert(0) += 1;
    }
    assert_eq!(seen, HashMap::from([(1, 3), (2, 3)]));
    for b in &b {
        // One TLS connection each, kept alive across the requests, named by SNI.
        assert_eq!(b.connections.load(Ordering::Relaxed), 1);
        assert_eq!(
            *b.tls_names.lock().unwrap(),
            [Some("api.internal".to_owned())]
        );
    }
    let s = p.stats();
    assert_eq!(s.virtual_server.responses.c2xx, 6);
    let pool = p.pools()[0].pool.backends();
    let counted = pool.get(BackendId(1)).unwrap();
    assert!(
        counted.stats().bytes_to_backend() > 3 * 16 && counted.stats().bytes_to_client() > 3 * 4,
        "plaintext bytes counted: {:?}",
        (
            counted.stats().bytes_to_backend(),
            counted.stats().bytes_to_client()
        )
    );

    // A WebSocket to a backend over TLS.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s, &mut head));
    assert!(read.await.unwrap());
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    echo_each(&mut s, &[b"over tls"]).await;

    // A connection per request: each backend resumes the sessions it gave (HAProxy caches
    // them per server), though the name is the same for both.
    let (ca, server) = issued(&["api.internal"]);
    let b = [
        TestBackend::start_tls(1, Arc::clone(&server)).await,
        TestBackend::start_tls(2, server).await,
    ];
    let roots = BackendTls::roots_from_pem(ca.as_bytes()).unwrap();
    let tls = BackendTls::new(Verify::Required(roots), Some("api.internal")).unwrap();
    let mut c = config();
    c.limits.max_idle_per_backend = 0;
    let p = HttpProxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        c,
        vec![HttpPool::new("www", pool_of(&[&b[0], &b[1]], Algorithm::RoundRobin)).with_tls(tls)],
    )
    .await
    .unwrap();
    let mut client = Client::connect(p.local_addr()).await;
    for _ in 0..6 {
        assert_eq!(client.get("/", &[]).await.status, 200);
    }
    for b in &b {
        assert_eq!(b.connections.load(Ordering::Relaxed), 3);
        assert_eq!(b.tls_resumed.load(Ordering::Relaxed), 2, "backend {}", b.id);
    }
}

/// A backend certificate that does not verify is a failed connect: counted against that
/// backend, retried on another, 502 when none is left; what verifies is served. Without a
/// server name only the chain is verified (HAProxy without `sni`/`verifyhost`): backends
/// addressed by IP with certificates naming hosts. `verify none` takes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_certificates_that_do_not_verify_are_502() {
    let (ca, server) = issued(&["api.internal"]);
    let b = TestBackend::start_tls(1, server).await;
    let (other_ca, _) = issued(&["api.internal"]);
    let ours = || BackendTls::roots_from_pem(ca.as_bytes()).unwrap();
    let cases = [
        // (what, tls, status)
        (
            "another CA",
            BackendTls::new(
                Verify::Required(BackendTls::roots_from_pem(other_ca.as_bytes()).unwrap()),
                Some("api.internal"),
            ),
            502,
        ),
        (
            "another name",
            BackendTls::new(Verify::Required(ours()), Some("web.internal")),
            502,
        ),
        (
            "chain only",
            BackendTls::new(Verify::Required(ours()), None),
            200,
        ),
        (
            "chain only, another CA",
            BackendTls::new(
                Verify::Required(BackendTls::roots_from_pem(other_ca.as_bytes()).unwrap()),
                None,
            ),
            502,
        ),
        ("verify none", BackendTls::new(Verify::None, None), 200),
    ];
    for (what, tls, status) in cases {
        let p = proxy_tls(pool_of(&[&b], Algorithm::RoundRobin), tls.unwrap()).await;
        let mut client = Client::connect(p.local_addr()).await;
        let r = client.get("/", &[]).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let s = p.stats();
        let failures = u64::from(status == 502);
        assert_eq!(s.backends[0].connect_failures, failures, "{what}");
    }
    // Without SNI configured none was sent.
    assert_eq!(
        *b.tls_names.lock().unwrap(),
        [None, None],
        "completed handshakes"
    );

    // An expired certificate from the right CA: refused, with or without a name.
    let (ca, server) = issued_with(&["api.internal"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let expired = TestBackend::start_tls(1, server).await;
    for name in [Some("api.internal"), None] {
        let roots = BackendTls::roots_from_pem(ca.as_bytes()).unwrap();
        let tls = BackendTls::new(Verify::Required(roots), name).unwrap();
        let p = proxy_tls(pool_of(&[&expired], Algorithm::RoundRobin), tls).await;
        let r = Client::connect(p.local_addr()).await.get("/", &[]).await;
        assert_eq!(r.status, 502, "expired, name {name:?}");
    }

    // A backend that does not speak TLS fails its handshake; the request goes on to one
    // that does.
    let (ca, server) = issued(&["api.internal"]);
    let plain = TestBackend::start(1).await;
    let https = TestBackend::start_tls(2, server).await;
    let roots = BackendTls::roots_from_pem(ca.as_bytes()).unwrap();
    let tls = BackendTls::new(Verify::Required(roots), Some("api.internal")).unwrap();
    let p = proxy_tls(pool_of(&[&plain, &https], Algorithm::RoundRobin), tls).await;
    let mut client = Client::connect(p.local_addr()).await;
    for _ in 0..4 {
        let r = client.get("/", &[]).await;
        assert_eq!((r.status.as_u16(), r.backend()), (200, 2), "{}", r.body);
    }
    let s = p.stats();
    assert!(s.backends[0].connect_failures >= 1, "{:?}", s.backends[0]);
    assert_eq!(s.virtual_server.responses.c5xx, 0);
}

/// An access log sink that keeps the lines, HAProxy's layout.
#[derive(Debug, Default)]
struct Lines(std::sync::Mutex<Vec<String>>);

impl AccessLog for Lines {
    fn log(&self, entry: &AccessEntry<'_>) {
        let mut line = String::new();
        entry.write_httplog(&mut line);
        self.0.lock().unwrap().push(line);
    }
}

impl Lines {
    /// The `n`-th line, once written (the entry follows the response's end by a moment).
    async fn nth(&self, n: usize) -> String {
        for _ in 0..500 {
            if let Some(l) = self.0.lock().unwrap().get(n) {
                return l.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no line {n}: {:?}", self.0.lock().unwrap());
    }
}

/// The fields of an httplog line after the date: virtual server, pool/backend,
/// TR/Tw/Tc/Tr/Ta, status, bytes, -, -, termination, retries, and the request line.
fn fields(line: &str) -> Vec<String> {
    let (_, rest) = line.split_once("] ").unwrap();
    let (head, request) = rest.split_once(" \"").unwrap();
    let mut f: Vec<String> = head.split(' ').map(str::to_owned).collect();
    f.push(request.trim_end_matches('"').to_owned());
    f
}

/// HAProxy `option httplog`: one line per request once its response ended, with the
/// client, the pool and backend that served, the times (`Tc` only for a new connection),
/// the status, body bytes, termination state and retries — for a success, a HEAD, a
/// connect failure retried elsewhere, no live backend (503 `SC`), a backend timeout (504
/// `sH`) and a client that goes away mid-body (`CD`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_line_per_request() {
    let big = TestBackend::start_with_body(1, Some(bytes::Bytes::from(vec![b'x'; 8 << 20]))).await;
    let live = TestBackend::start(2).await;
    let dead = dead_addr().await;
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), dead),
        Backend::new(BackendId(2), live.addr),
    ])
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let lines = Arc::new(Lines::default());
    let mut c = config();
    c.timeouts.backend_response = Duration::from_millis(300);
    c.access_log = Some(AccessLogSink(Arc::clone(&lines) as Arc<dyn AccessLog>));
    c.routes = vec![Route::new("big").path_prefix("/big")];
    let p = proxy(
        c,
        vec![
            ("www", Arc::clone(&pool)),
            ("big", pool_of(&[&big], Algorithm::RoundRobin)),
        ],
    )
    .await;
    let (mut client, client_addr) = Client::connect_from(p.local_addr()).await;

    // The first pick is the dead backend: retried on the live one, on a new connection.
    assert_eq!(client.get("/a?b=1", &[]).await.status, 200);
    let line = lines.nth(0).await;
    assert!(line.starts_with(&format!("{client_addr} [")), "{line}");
    let f = fields(&line);
    let t: Vec<i64> = f[2].split('/').map(|x| x.parse().unwrap()).collect();
    assert_eq!(
        (
            &f[0][..],
            &f[1][..],
            t.len(),
            t[1],
            &f[3][..],
            &f[4][..],
            &f[7][..],
            &f[8][..],
            &f[9][..]
        ),
        (
            "test",
            &format!("www/{}", live.addr)[..],
            5,
            0,
            "200",
            "4",
            "----",
            "1",
            "GET /a?b=1 HTTP/1.1"
        ),
        "{line}"
    );
    // Ta counts from the head's first byte: at least TR + Tw + Tc + Tr.
    assert!(
        t[2] >= 0 && t[3] >= 0 && t[4] >= t[0] + t[1] + t[2] + t[3],
        "{line}"
    );
    // A pooled connection: connect time 0 (HAProxy's for a reused connection). HEAD: no
    // body bytes.
    let r = client.send("HEAD", "/", &[]).await;
    assert_eq!(r.status, 200);
    let f = fields(&lines.nth(1).await);
    assert_eq!(
        (&f[4][..], &f[7][..], &f[9][..]),
        ("0", "----", "HEAD / HTTP/1.1"),
        "{f:?}"
    );
    assert_eq!(f[2].split('/').nth(2), Some("0"), "{f:?}");

    // 504 after the backend's timeout.
    assert_eq!(client.get("/sleep/3000", &[]).await.status, 504);
    let f = fields(&lines.nth(2).await);
    assert_eq!((&f[3][..], &f[7][..]), ("504", "sH--"), "{f:?}");
    assert_eq!(f[2].split('/').nth(3), Some("-1"), "{f:?}");

    // No live backend: 503, no backend reached.
    pool.set_health(BackendId(2), Health::Down, now()).unwrap();
    pool.set_health(BackendId(1), Health::Down, now()).unwrap();
    assert_eq!(client.get("/", &[]).await.status, 503);
    let f = fields(&lines.nth(3).await);
    assert_eq!(
        (&f[1][..], &f[3][..], &f[7][..]),
        ("www/<NOSRV>", "503", "SC--"),
        "{f:?}"
    );

    // A client that reads the head of an 8 MiB body and goes away.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    assert!(read_head(&mut s, &mut got).await);
    drop(s);
    let f = fields(&lines.nth(4).await);
    assert_eq!(
        (&f[1][..], &f[3][..], &f[7][..]),
        (&format!("big/{}", big.addr)[..], "200", "CD--"),
        "{f:?}"
    );
    let sent: u64 = f[4].parse().unwrap();
    assert!(sent < 8 << 20, "{f:?}");

    // A client that goes away while the backend prepares its answer: logged all the same,
    // with no status (HAProxy's -1) and `CH` (the client closed waiting for the head).
    pool.set_health(BackendId(2), Health::Up, now()).unwrap();
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    s.write_all(b"GET /sleep/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let f = fields(&lines.nth(5).await);
    assert_eq!(
        (&f[1][..], &f[3][..], &f[7][..], &f[9][..]),
        (
            &format!("www/{}", live.addr)[..],
            "-1",
            "CH--",
            "GET /sleep/1500 HTTP/1.1"
        ),
        "{f:?}"
    );
    assert_eq!(
        lines.0.lock().unwrap().len(),
        6,
        "{:#?}",
        lines.0.lock().unwrap()
    );
}

/// Writes each message to a tunnel to an echoing backend and reads it back whole (5 s
/// each), asserting it came back unchanged.
async fn echo_each(s: &mut TcpStream, msgs: &[&[u8]]) {
    for msg in msgs {
        s.write_all(msg).await.unwrap();
        expect_read(s, msg).await;
    }
}

/// Reads `want.len()` bytes from `s` (within 5 s) and checks that they are `want`.
async fn expect_read(s: &mut TcpStream, want: &[u8]) {
    use tokio::io::AsyncReadExt;
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
}

/// Opens a WebSocket through the proxy at `addr` and reads its `101` head (returned, lower
/// case).
async fn open_websocket(addr: SocketAddr) -> (TcpStream, String) {
    open_websocket_with(addr, b"").await
}

/// [`open_websocket`], with `early` written in the same `write` right behind the upgrade
/// request (a client that starts talking before the `101`).
async fn open_websocket_with(addr: SocketAddr, early: &[u8]) -> (TcpStream, String) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request =
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec();
    request.extend_from_slice(early);
    s.write_all(&request).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (s, head)
}

/// A WebSocket is logged when its tunnel ends, as HAProxy logs it: status 101, the bytes
/// the tunnel carried to the client, `----` when it closed cleanly, `KD--` when the proxy
/// stopped under it — not at its `101`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_logged_when_its_tunnel_ends() {
    use tokio::io::AsyncReadExt;
    let b = TestBackend::start(7).await;
    let lines = Arc::new(Lines::default());
    let mut c = config();
    c.access_log = Some(AccessLogSink(Arc::clone(&lines) as Arc<dyn AccessLog>));
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;
    let (mut s, _) = open_websocket(p.local_addr()).await;
    echo_each(&mut s, &[b"hello", b"through the proxy", &[0u8, 1, 2, 255]]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        lines.0.lock().unwrap().is_empty(),
        "logged before the tunnel ended"
    );
    s.shutdown().await.unwrap();
    let (_, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(eof);
    let line = lines.nth(0).await;
    assert!(
        line.ends_with(" 101 26 - - ---- 0 \"GET /ws HTTP/1.1\""),
        "{line}"
    );
    // Ta covers the tunnel (the 100 ms above at least).
    let t: Vec<i64> = fields(&line)[2]
        .split('/')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(t[4] >= 100, "{line}");

    let (mut s, _) = open_websocket(p.local_addr()).await;
    s.write_all(b"abc").await.unwrap();
    let mut back = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    drop(p);
    let line = lines.nth(1).await;
    assert!(
        line.ends_with(" 101 3 - - KD-- 0 \"GET /ws HTTP/1.1\""),
        "{line}"
    );
}

/// Requests refused before they were parsed whole are logged as HAProxy logs them, with
/// `<BADREQ>` for the request line and no pool or backend: a malformed head (hyper's 400,
/// `PR`), a head past `max_header_bytes` (431), a head not complete in time (408, `cR`).
/// A connection that sent nothing is not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_logged_as_badreq() {
    let b = TestBackend::start(1).await;
    let lines = Arc::new(Lines::default());
    let mut c = config();
    c.timeouts.header_read = Duration::from_millis(300);
    c.access_log = Some(AccessLogSink(Arc::clone(&lines) as Arc<dyn AccessLog>));
    let p = proxy(c, vec![("www", pool_of(&[&b], Algorithm::RoundRobin))]).await;

    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    let cases: [(&[u8], &str); 3] = [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
            "400 0 - - PR-- 0",
        ),
        (long.as_bytes(), "431 0 - - PR-- 0"),
        (b"GET / HTTP/1.1\r\nHost:", "408 20 - - cR-- 0"),
    ];
    for (n, (sent, tail)) in cases.iter().enumerate() {
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        let client = s.local_addr().unwrap();
        let _ = s.write_all(sent).await;
        let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
        assert!(eof, "{}", String::from_utf8_lossy(&got));
        let status = &tail[..3];
        assert!(
            got.starts_with(format!("HTTP/1.1 {status}").as_bytes()),
            "{}",
            String::from_utf8_lossy(&got)
        );
        let line = lines.nth(n).await;
        assert!(line.starts_with(&format!("{client} [")), "{line}");
        let f = fields(&line);
        assert_eq!((&f[0][..], &f[1][..]), ("test", "test/<NOSRV>"), "{line}");
        // TR/Tw/Tc/Tr/Ta: no queue, connect or response.
        let t: Vec<&str> = f[2].split('/').collect();
        assert_eq!(t[1..4], ["0", "-1", "-1"], "{line}");
        assert!(line.ends_with(&format!(" {tail} \"<BADREQ>\"")), "{line}");
    }
    // Nothing sent: closed after the timeout, not logged.
    let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
    let (_, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(eof);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        lines.0.lock().unwrap().len(),
        3,
        "{:?}",
        lines.0.lock().unwrap()
    );
}

/// A client socket connected to `p` with a 4 KiB receive buffer: its window fills soon.
async fn small_window_client(p: &HttpProxy) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(p.local_addr()).await.unwrap()
}

/// A proxy over the backend at `addr` whose client sockets have a 4 KiB send buffer
/// (inherited from the listener): its writes to a client that reads slowly come back
/// short soon.
fn proxy_with_small_send_buffer(c: HttpProxyConfig, addr: SocketAddr) -> HttpProxy {
    let listener = tokio::net::TcpSocket::new_v4().unwrap();
    listener.set_send_buffer_size(4096).unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    HttpProxy::start(
        listener.listen(64).unwrap(),
        c,
        vec![HttpPool::new("www", pool_at(addr))],
    )
    .unwrap()
}

/// The virtual server's counters once `done` holds of them, or after `limit` (asserted).
async fn vs_until(
    p: &HttpProxy,
    limit: Duration,
    done: impl Fn(&lb_proxy::http::VirtualServerStats) -> bool,
) -> lb_proxy::http::VirtualServerStats {
    let t = tokio::time::Instant::now();
    while !done(&p.stats().virtual_server) && t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = p.stats().virtual_server;
    assert!(done(&v), "{v:?}");
    v
}

/// A backend for one connection that answers its request with a `len`-byte body (byte `i`
/// is `i % 251`) written 1 KiB at a time, pausing 1 ms after every `every` KiB, so that
/// the proxy reads and writes it in small pieces and large ones alike. Stops at the first
/// failed write.
async fn trickling_backend(len: usize, every: usize) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        if !read_head(&mut s, &mut Vec::new()).await {
            return;
        }
        let mut buf = [0u8; 4096];
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for (n, piece) in body.chunks(1024).enumerate() {
            if s.write_all(piece).await.is_err() {
                return;
            }
            if n % every == every - 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Until the proxy closes (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    });
    (addr, task)
}

/// On the current-thread runtime (lb-node's `nbthread = 1`) the proxy's small writes are
/// queued and sent at the end of each turn, large ones at once. A response that arrives in
/// pieces of both sizes reaches a client that reads nothing for a while and then reads
/// slowly whole and in order: with a small send buffer on the proxy's side (inherited from
/// the listener), the queue's sends come back short and the rest waits with the
/// connection, which writes it before anything else.
#[tokio::test]
async fn a_response_in_small_pieces_reaches_a_slow_reader_whole_and_in_order() {
    use tokio::io::AsyncReadExt;
    let len = 1 << 20;
    let (addr, backend) = trickling_backend(len, 4).await;
    let p = proxy_with_small_send_buffer(config(), addr);
    let mut s = small_window_client(&p).await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::with_capacity(len + 256);
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Bounded by the deadline: reads, with a pause after every fourth one.
    let mut reads = 0u32;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read: {e}"),
            Err(_) => panic!("not all in time: {} bytes", got.len()),
        }
        reads += 1;
        if reads % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body = &got[head_end..];
    assert_eq!(body.len(), len);
    let first_wrong = body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8);
    assert_eq!(first_wrong, None, "the body arrived intact and in order");
    backend.abort();
}

/// A client that reads nothing of a response written to it in small and large pieces (the
/// small ones queued, on the current-thread runtime) is cut off after the client timeout.
#[tokio::test]
async fn a_client_reading_nothing_of_small_pieces_is_cut_off() {
    let (addr, backend) = trickling_backend(64 << 20, 16).await;
    let mut c = config();
    c.timeouts.client = Duration::from_millis(300);
    let p = proxy(c, vec![("www", pool_at(addr))]).await;
    let mut s = small_window_client(&p).await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    vs_until(&p, Duration::from_secs(20), |v| {
        v.connections == 1 && v.client_timeouts == 1 && v.active_connections == 0
    })
    .await;
    let (got, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(
        eof && got.len() < 64 << 20,
        "{} bytes, eof {eof}",
        got.len()
    );
    backend.abort();
}

/// On the current-thread runtime (where small writes are queued until the end of a turn),
/// a WebSocket echo works as on the multi-thread one: the tunnel's writes go out at once,
/// and the bytes the client sent right behind its upgrade request reach the backend.
#[tokio::test]
async fn websocket_echoes_on_the_current_thread_runtime() {
    let b = TestBackend::start(7).await;
    let p = proxy(
        config(),
        vec![("www", pool_of(&[&b], Algorithm::RoundRobin))],
    )
    .await;
    let (mut s, head) = open_websocket_with(p.local_addr(), b"early").await;
    assert!(head.contains("upgrade: websocket"), "{head}");
    expect_read(&mut s, b"early").await;
    echo_each(
        &mut s,
        &[b"hello", b"through the proxy", &[7u8; 3000], &[9u8; 20_000]],
    )
    .await;
    assert_eq!(p.stats().virtual_server.upgrades, 1);
}

/// A tunnel whose backend sends small messages to a client that reads none of them, then
/// goes quiet, is cut off after the client timeout (`client_timeouts`), on the
/// current-thread runtime (where the tunnel's writes go out at once, not queued).
#[tokio::test]
async fn a_tunnel_to_a_client_reading_nothing_is_cut_off_after_the_backend_goes_quiet() {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        if !read_head(&mut s, &mut Vec::new()).await {
            return;
        }
        let mut buf = [0u8; 4096];
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await;
        // 2 MiB in 1 KiB messages (more than the client's buffers take), then quiet.
        for n in 0..2048 {
            let w = s.write_all(&[b'm'; 1024]);
            match tokio::time::timeout(Duration::from_millis(500), w).await {
                Ok(Ok(())) => {}
                _ => break,
            }
            if n % 8 == 7 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Until the proxy closes (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    });
    let mut c = config();
    c.timeouts.client = Duration::from_millis(300);
    let p = proxy_with_small_send_buffer(c, addr);
    let mut s = small_window_client(&p).await;
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    vs_until(&p, Duration::from_secs(20), |v| {
        v.upgrades == 1 && v.client_timeouts == 1 && v.active_connections == 0
    })
    .await;
    let (_, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert!(eof);
    backend.abort();
}
