//! Probes against real servers on loopback that the tests start themselves. Every server
//! loop is bounded by the test's lifetime (tasks die with the runtime) and every wait by a
//! timeout; only 127.0.0.1 is used.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Backend, BackendId, BackendSet, Health, Pool, PoolConfig, Weight};
use lb_health::probe::grpc::GrpcProbe;
use lb_health::probe::http::{HttpProbe, TlsOptions};
use lb_health::probe::{
    DnsName, DnsProbe, ExecProbe, HexPattern, ProxyHeader, QueryType, SmtpProbe, TcpProbe,
    UdpExpect, UdpProbe, UdpReply, DEFAULT_MAX_REPLY_LENGTH, KEEPALIVED_DEFAULT_PAYLOAD,
};
use lb_health::{HealthCheckConfig, HealthDriver, HealthEvent, OnFailure, PoolApplier, Probe};
use lb_testkit::dns::Dnsmasq;
use lb_testkit::smtp::Aiosmtpd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const T: Duration = Duration::from_millis(500);

/// Reads an HTTP request head (bounded) and returns whether one arrived.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < 16 * 1024 {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
    }
    false
}

fn response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A tiny HTTP/1.1 server: `reply(n)` gives the raw bytes of the `n`-th response.
async fn http_server<F>(reply: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&count);
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = Arc::clone(&reply);
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                if read_head(&mut s).await {
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(&reply(n)).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn tcp_refused_accepted_connect_port_and_bindto() {
    // A port no parallel test's bind(…:0) can take once this listener is dropped.
    let listener = TcpListener::bind(lb_testkit::ports::dead_addr())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let up = TcpProbe::new()
        .bindto("127.0.0.1".parse().unwrap())
        .probe(addr, T)
        .await;
    assert!(up.is_up(), "{}", up.reason);
    // connect_port: probe the listener's port although the backend's port is 1.
    let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let via_port = TcpProbe::new()
        .connect_port(addr.port())
        .probe(other, T)
        .await;
    assert!(via_port.is_up(), "{}", via_port.reason);
    // connect_ip: probe the listener although the backend's address (port 1 of 127.0.0.2)
    // has nothing listening; with connect_port too, only the IP comes from the backend
    // when connect_ip is absent.
    let elsewhere: SocketAddr = "127.0.0.2:1".parse().unwrap();
    assert!(!TcpProbe::new().probe(elsewhere, T).await.is_up());
    let via_ip = TcpProbe::new()
        .connect_ip(addr.ip())
        .connect_port(addr.port())
        .probe(elsewhere, T)
        .await;
    assert!(via_ip.is_up(), "{}", via_ip.reason);
    let http = HttpProbe::builder("/")
        .connect_ip(addr.ip())
        .build()
        .unwrap()
        .probe(
            SocketAddr::new("127.0.0.2".parse().unwrap(), addr.port()),
            T,
        )
        .await;
    assert!(http.reason.contains(&addr.to_string()), "{}", http.reason);
    // A source address of the wrong family is a reason, not a panic.
    let wrong = TcpProbe::new()
        .bindto("::1".parse().unwrap())
        .probe(addr, T)
        .await;
    assert!(!wrong.is_up());
    drop(listener);
    let refused = TcpProbe::new().probe(addr, T).await;
    assert_eq!(refused.health, Health::Down);
    assert!(refused.reason.contains("refused"), "{}", refused.reason);
    assert!(refused.latency < T);
}

#[tokio::test]
async fn http_accept_then_hang_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().await.push(s); // accept, never answer
        }
    });
    let probe = HttpProbe::builder("/").build().unwrap();
    let timeout = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let out = probe.probe(addr, timeout).await;
    assert!(!out.is_up());
    assert!(out.reason.contains("within"), "{}", out.reason);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(out.latency >= timeout);
}

/// A backend that answers its head at once, then its 6-byte body one byte every 150 ms
/// (`stall` after the head: waits that long first).
async fn trickling_server(stall: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n")
                    .await;
                tokio::time::sleep(stall).await;
                for b in b"abcdef" {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// keepalived re-arms `connect_timeout` for each read: with `timeout_per_step`, a body that
/// comes slowly but steadily (0.9 s in all, a byte every 150 ms) passes a 600 ms timeout
/// (450 ms of slack for a loaded machine: server and probe share one thread), and one that
/// stops for 2 s fails as stalled; by default the whole exchange is bounded
/// and the reason says the body was still coming (it said "no HTTP response").
#[tokio::test]
async fn http_timeout_per_step_or_for_the_whole_exchange() {
    let t = Duration::from_millis(600);
    let steady = trickling_server(Duration::ZERO).await;
    let whole = HttpProbe::builder("/")
        .build()
        .unwrap()
        .probe(steady, t)
        .await;
    assert!(!whole.is_up());
    assert_eq!(
        whole.reason,
        format!("HTTP response body from {steady} not complete within 600ms (whole exchange)")
    );
    let per_step = HttpProbe::builder("/").timeout_per_step().build().unwrap();
    let out = per_step.probe(steady, t).await;
    assert!(out.is_up(), "{}", out.reason);
    assert!(
        out.latency >= Duration::from_millis(900),
        "{:?}",
        out.latency
    );
    let stalls = trickling_server(Duration::from_secs(2)).await;
    let out = per_step.probe(stalls, t).await;
    assert!(!out.is_up());
    assert_eq!(
        out.reason,
        format!("HTTP response body from {stalls} stalled for 600ms")
    );
    assert!(
        out.latency < Duration::from_millis(1500),
        "{:?}",
        out.latency
    );
    assert_eq!(Probe::max_duration(&per_step, t), t * 10);
}

#[tokio::test]
async fn http_500_then_200_with_host_and_status_list() {
    let (addr, _) = http_server(|n| {
        if n == 0 {
            response(500, "oops")
        } else {
            response(200, "fine")
        }
    })
    .await;
    let probe = HttpProbe::builder("/health")
        .host("backend.test")
        .status_code("200-299,302")
        .unwrap()
        .build()
        .unwrap();
    let first = probe.probe(addr, T).await;
    assert!(!first.is_up());
    assert_eq!(first.reason, "status 500 not in 200-299,302");
    let second = probe.probe(addr, T).await;
    assert!(second.is_up(), "{}", second.reason);
    assert_eq!(probe.kind(), "http");
}

#[tokio::test]
async fn http_body_digest_detects_a_changed_body() {
    let (addr, _) = http_server(|n| {
        response(
            200,
            if n == 0 {
                "The quick brown fox jumps over the lazy dog"
            } else {
                "The quick brown fox jumps over the lazy cat"
            },
        )
    })
    .await;
    // md5("The quick brown fox jumps over the lazy dog"), as keepalived's genhash prints it.
    let probe = HttpProbe::builder("/")
        .digest("9e107d9d372bb6826bd81d3542a419d6")
        .unwrap()
        .build()
        .unwrap();
    let same = probe.probe(addr, T).await;
    assert!(same.is_up(), "{}", same.reason);
    let changed = probe.probe(addr, T).await;
    assert!(!changed.is_up());
    assert!(
        changed
            .reason
            .contains("!= expected 9e107d9d372bb6826bd81d3542a419d6"),
        "{}",
        changed.reason
    );
    let contains = HttpProbe::builder("/")
        .body_contains("lazy cat")
        .build()
        .unwrap();
    assert!(contains.probe(addr, T).await.is_up());
}

/// keepalived's `regex` on a url: the body must match (with `regex_no_match`, must not),
/// the match starting within the offsets; a url's digest and regex are both checked, in
/// one read of the body.
#[tokio::test]
async fn http_body_regex_with_offsets_no_match_and_digest() {
    use lb_health::probe::http::{BodyRegex, RegexFlags};
    let (addr, _) =
        http_server(|_| response(200, "The quick brown fox jumps over the lazy dog")).await;
    let probe = |r: BodyRegex| HttpProbe::builder("/").regex(r).build().unwrap();
    let re = |p: &str| BodyRegex::new(p, RegexFlags::default()).unwrap();

    let out = probe(re("brown [a-z]+")).probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(
        out.reason,
        "status 200, regex \"brown [a-z]+\" matched at 10"
    );
    let out = probe(re("BROWN")).probe(addr, T).await;
    assert!(!out.is_up());
    assert_eq!(out.reason, "regex \"BROWN\" did not match in 43 body bytes");
    let caseless = BodyRegex::new(
        "BROWN",
        RegexFlags {
            caseless: true,
            ..RegexFlags::default()
        },
    )
    .unwrap();
    assert!(probe(caseless).probe(addr, T).await.is_up());
    // "fox" starts at 16: inside 10..=16, outside 17.. and ..=15.
    assert!(probe(re("fox").offsets(10, Some(16)).unwrap())
        .probe(addr, T)
        .await
        .is_up());
    let late = probe(re("fox").offsets(17, None).unwrap())
        .probe(addr, T)
        .await;
    assert_eq!(
        late.reason,
        "regex \"fox\" did not match starting at 17 or later in 43 body bytes"
    );
    assert!(!probe(re("fox").offsets(0, Some(15)).unwrap())
        .probe(addr, T)
        .await
        .is_up());
    let no_match = probe(re("error|fail").no_match(true)).probe(addr, T).await;
    assert!(no_match.is_up(), "{}", no_match.reason);
    let matched = probe(re("lazy").no_match(true)).probe(addr, T).await;
    assert_eq!(
        matched.reason,
        "regex \"lazy\" matched at 35 (regex_no_match)"
    );
    // Digest and regex together: both must pass.
    let both = |md5: &str, r: BodyRegex| {
        HttpProbe::builder("/")
            .digest(md5)
            .unwrap()
            .regex(r)
            .build()
            .unwrap()
    };
    let out = both("9e107d9d372bb6826bd81d3542a419d6", re("dog$"))
        .probe(addr, T)
        .await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(
        out.reason,
        "status 200, digest 9e107d9d372bb6826bd81d3542a419d6, regex \"dog$\" matched at 40"
    );
    assert!(!both("00000000000000000000000000000000", re("dog$"))
        .probe(addr, T)
        .await
        .is_up());
    assert!(!both("9e107d9d372bb6826bd81d3542a419d6", re("cat$"))
        .probe(addr, T)
        .await
        .is_up());
}

/// A body longer than the search limit (1 MiB by default) passes when the string is in its
/// first megabyte, as HAProxy's `http-check expect string` looks at the start it buffered,
/// and fails, naming the limit, when the string comes only later. The whole body is not
/// read: the probe stops at the match.
#[tokio::test]
async fn http_body_string_is_searched_in_the_first_megabyte_of_a_long_body() {
    let big = |needle_at: usize| {
        let mut body = vec![b'.'; 2 << 20];
        body[needle_at..needle_at + 7].copy_from_slice(b"healthy");
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    };
    let (addr, _) = http_server(move |n| big(if n == 0 { 0 } else { 3 << 19 })).await;
    let probe = HttpProbe::builder("/")
        .body_contains("healthy")
        .build()
        .unwrap();
    let t = Duration::from_secs(5);
    let early = probe.probe(addr, t).await;
    assert!(early.is_up(), "{}", early.reason);
    let late = probe.probe(addr, t).await;
    assert!(!late.is_up());
    assert!(
        late.reason.contains("in the first 1048576 bytes"),
        "{}",
        late.reason
    );
}

#[tokio::test]
async fn http_garbage_is_down_with_a_reason() {
    for garbage in [
        &b"garbage\r\n\r\n"[..],
        &[0u8, 0xff, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n'][..],
        &b"HTTP/1.1 abc\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\ncontent-length: 99999\r\n\r\nshort"[..],
    ] {
        let bytes = garbage.to_vec();
        let (addr, _) = http_server(move |_| bytes.clone()).await;
        let digest = HttpProbe::builder("/")
            .digest("9e107d9d372bb6826bd81d3542a419d6")
            .unwrap()
            .build()
            .unwrap();
        let out = digest.probe(addr, T).await;
        assert!(!out.is_up(), "{garbage:?} passed: {}", out.reason);
        assert!(!out.reason.is_empty());
    }
    // A backend that closes at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let out = HttpProbe::builder("/")
        .build()
        .unwrap()
        .probe(addr, T)
        .await;
    assert!(!out.is_up());
    assert!(out.reason.contains("HTTP"), "{}", out.reason);
}

#[tokio::test]
async fn flapping_backend_never_flips_with_hysteresis_then_goes_down() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::clone(&failing);
    let (addr, served) = http_server(move |n| {
        if f.load(Ordering::SeqCst) || n % 2 == 1 {
            response(500, "")
        } else {
            response(200, "")
        }
    })
    .await;
    let config = HealthCheckConfig::haproxy()
        .rise(2)
        .fall(2)
        .inter(Duration::from_millis(20))
        // Generous: a probe timing out on a loaded machine would be a failure of its own.
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut driver = HealthDriver::new(16);
    let mut events = driver.subscribe();
    driver
        .add(
            BackendId(1),
            addr,
            Box::new(HttpProbe::builder("/").build().unwrap()),
            config,
        )
        .unwrap();
    // Alternating 200/500: never two failures in a row.
    let quiet = tokio::time::timeout(Duration::from_millis(600), events.recv()).await;
    assert!(quiet.is_err(), "flipped while flapping: {quiet:?}");
    assert!(served.load(Ordering::SeqCst) >= 6, "enough checks ran");
    failing.store(true, Ordering::SeqCst);
    let e = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("down in time")
        .unwrap();
    assert_eq!((e.old, e.new), (Health::Up, Health::Down));
    assert!(e.reason.contains("500"), "{}", e.reason);
    driver.shutdown().await;
}

fn self_signed() -> (
    rustls_pki_types::CertificateDer<'static>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (
        cert.der().clone(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
    )
}

async fn tls_server() -> (SocketAddr, rustls_pki_types::CertificateDer<'static>) {
    let (cert, key) = self_signed();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(Ok(mut tls)) = tokio::time::timeout(T, acceptor.accept(s)).await {
                    if read_head(&mut tls).await {
                        let _ = tls.write_all(&response(200, "secure")).await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, cert)
}

/// A TLS server that answers 200 with the Server Name Indication it received (`none`
/// without one) as the body.
async fn sni_echo_server() -> SocketAddr {
    let (cert, key) = self_signed();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let acceptor =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), s);
                let Ok(Ok(start)) = tokio::time::timeout(T, acceptor).await else {
                    return;
                };
                let sni = start
                    .client_hello()
                    .server_name()
                    .unwrap_or("none")
                    .to_owned();
                if let Ok(Ok(mut tls)) = tokio::time::timeout(T, start.into_stream(config)).await {
                    if read_head(&mut tls).await {
                        let _ = tls.write_all(&response(200, &format!("sni={sni}"))).await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}

/// What a server behind a PROXY-protocol listener speaks after the header.
#[derive(Clone, Copy)]
enum AfterHeader {
    Http,
    Https,
    Smtp,
}

/// A server that, like nginx's `listen … proxy_protocol`, takes a connection only when it
/// starts with `header`: it records the first `header.len()` bytes of every connection and
/// closes those that differ; the others are served as `after` says.
async fn proxy_protocol_server(
    header: &'static [u8],
    after: AfterHeader,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let (cert, key) = self_signed();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut first = vec![0u8; header.len()];
                let got = tokio::time::timeout(T, s.read_exact(&mut first)).await;
                if !matches!(got, Ok(Ok(_))) {
                    return;
                }
                record.lock().unwrap().push(first.clone());
                if first != header {
                    return;
                }
                match after {
                    AfterHeader::Http => {
                        if read_head(&mut s).await {
                            let _ = s.write_all(&response(200, "ok")).await;
                            let _ = s.shutdown().await;
                        }
                    }
                    AfterHeader::Https => {
                        if let Ok(Ok(mut tls)) = tokio::time::timeout(T, acceptor.accept(s)).await {
                            if read_head(&mut tls).await {
                                let _ = tls.write_all(&response(200, "secure")).await;
                                let _ = tls.shutdown().await;
                            }
                        }
                    }
                    AfterHeader::Smtp => {
                        let mut buf = [0u8; 256];
                        let _ = s.write_all(b"220 mx ready\r\n").await;
                        let _ = s.read(&mut buf).await; // HELO
                        let _ = s.write_all(b"250 mx\r\n").await;
                        let _ = s.read(&mut buf).await; // QUIT
                        let _ = s.write_all(b"221 bye\r\n").await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Waits (bounded) until `seen` holds `n` entries and returns them.
async fn recorded(seen: &std::sync::Mutex<Vec<Vec<u8>>>, n: usize) -> Vec<Vec<u8>> {
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

/// HAProxy `check-send-proxy`: TCP, HTTP, HTTPS and SMTP checks of a backend that takes
/// only connections opening with a PROXY header send one first — v1 `PROXY UNKNOWN`, v2
/// `LOCAL` — and pass; without it the same checks fail.
#[tokio::test]
async fn checks_send_the_proxy_header_when_told() {
    let v1: &[u8] = b"PROXY UNKNOWN\r\n";
    let v2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert_eq!(ProxyHeader::V1.bytes(), v1);
    assert_eq!(ProxyHeader::V2.bytes(), v2);

    // TCP: the header goes out before the close.
    let (addr, seen) = proxy_protocol_server(v1, AfterHeader::Http).await;
    let out = TcpProbe::new()
        .send_proxy(ProxyHeader::V1)
        .probe(addr, T)
        .await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(recorded(&seen, 1).await, [v1.to_vec()]);

    for (after, header, tls) in [
        (AfterHeader::Http, ProxyHeader::V1, false),
        (AfterHeader::Http, ProxyHeader::V2, false),
        (AfterHeader::Https, ProxyHeader::V2, true),
    ] {
        let (addr, seen) = proxy_protocol_server(header.bytes(), after).await;
        let build = |send: bool| {
            let mut b = HttpProbe::builder("/");
            if tls {
                b = b.tls(TlsOptions::new().verify(false));
            }
            if send {
                b = b.send_proxy(header);
            }
            b.build().unwrap()
        };
        let with = build(true).probe(addr, T).await;
        assert!(with.is_up(), "{header:?} tls {tls}: {}", with.reason);
        let without = build(false).probe(addr, T).await;
        assert!(
            !without.is_up(),
            "{header:?} tls {tls}: up without the header"
        );
        let got = recorded(&seen, 2).await;
        assert_eq!(got[0], header.bytes(), "{header:?} tls {tls}");
        assert_ne!(got[1], header.bytes(), "{header:?} tls {tls}");
    }

    let (addr, _) = proxy_protocol_server(v2, AfterHeader::Smtp).await;
    let out = SmtpProbe::new()
        .send_proxy(ProxyHeader::V2)
        .probe(addr, T)
        .await;
    assert!(out.is_up(), "{}", out.reason);
    assert!(!SmtpProbe::new().probe(addr, T).await.is_up());
}

/// The Host name goes out as SNI by default; `send_sni(false)` (keepalived's `SSL_GET`
/// without `enable_sni`) sends none.
#[tokio::test]
async fn https_sends_sni_unless_told_not_to() {
    let addr = sni_echo_server().await;
    for (send, expect) in [(true, "sni=www.example.com"), (false, "sni=none")] {
        let probe = HttpProbe::builder("/")
            .host("www.example.com")
            .body_contains(expect)
            .tls(TlsOptions::new().verify(false).send_sni(send))
            .build()
            .unwrap();
        let out = probe.probe(addr, T).await;
        assert!(out.is_up(), "send_sni({send}): {}", out.reason);
    }
}

#[tokio::test]
async fn https_self_signed_verification_on_and_off() {
    let (addr, cert) = tls_server().await;
    let insecure = HttpProbe::builder("/")
        .body_contains("secure")
        .tls(TlsOptions::new().verify(false))
        .build()
        .unwrap();
    assert_eq!(insecure.kind(), "https");
    let out = insecure.probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);

    let verified = HttpProbe::builder("/")
        .tls(TlsOptions::new().sni("localhost"))
        .build()
        .unwrap();
    let out = verified.probe(addr, T).await;
    assert!(
        !out.is_up(),
        "a self-signed cert must not verify by default"
    );
    assert!(out.reason.contains("TLS handshake"), "{}", out.reason);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let pinned = HttpProbe::builder("/")
        .host("localhost")
        .tls(TlsOptions::new().roots(roots))
        .build()
        .unwrap();
    let out = pinned.probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);

    // Plain HTTP to a TLS port, and TLS to a plain port: reasons, no panic.
    let plain = HttpProbe::builder("/")
        .build()
        .unwrap()
        .probe(addr, T)
        .await;
    assert!(!plain.is_up());
    let (http_addr, _) = http_server(|_| response(200, "")).await;
    let tls_to_plain = insecure.probe(http_addr, T).await;
    assert!(!tls_to_plain.is_up());
}

/// A UDP server on 127.0.0.1 answering each datagram with `answer(datagram)` (nothing for
/// `None`); it lives as long as the test's runtime.
async fn udp_server(answer: fn(&[u8]) -> Option<Vec<u8>>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            if let Some(reply) = answer(&buf[..n]) {
                let _ = sock.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

/// A port on 127.0.0.1 with nothing bound: datagrams to it draw ICMP port unreachable.
fn closed_udp_port() -> SocketAddr {
    lb_testkit::ports::dead_addr()
}

fn reply(hex: &str, min: u16, max: u16) -> UdpExpect {
    UdpExpect::Reply(UdpReply::new(hex.parse::<HexPattern>().unwrap(), min, max).unwrap())
}

/// keepalived without `require_reply`: silence until the timeout passes (only an ICMP error
/// fails); with `require_reply`, silence fails. A closed port fails both, at once.
#[tokio::test]
async fn udp_silence_passes_only_without_require_reply() {
    // Bound but never read: no reply, no ICMP error.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let out = UdpProbe::new(*b"ping").probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);
    assert!(
        out.latency >= T,
        "waited the whole timeout: {:?}",
        out.latency
    );
    for expect in [UdpExpect::AnyReply, reply("70", 0, 255)] {
        let out = UdpProbe::new(*b"ping")
            .expect(expect.clone())
            .probe(addr, T)
            .await;
        assert!(!out.is_up(), "{expect:?}: {}", out.reason);
        assert!(out.reason.contains("no UDP reply"), "{}", out.reason);
    }
    drop(silent);

    let closed = closed_udp_port();
    for expect in [UdpExpect::NoIcmpError, UdpExpect::AnyReply] {
        let out = UdpProbe::new(*b"ping")
            .expect(expect.clone())
            .probe(closed, T)
            .await;
        assert!(!out.is_up(), "{expect:?}");
        assert!(out.latency < T, "refused at once: {}", out.reason);
        assert!(out.reason.contains("refused"), "{}", out.reason);
    }

    // Any reply passes both ways.
    let echo = udp_server(|d| Some(d.to_vec())).await;
    for expect in [UdpExpect::NoIcmpError, UdpExpect::AnyReply] {
        let out = UdpProbe::new(*b"ping").expect(expect).probe(echo, T).await;
        assert!(out.is_up(), "{}", out.reason);
        assert!(out.latency < T);
    }
}

/// A timeout of `Duration::MAX` (the check's configuration accepts it) does not panic: the
/// UDP probe computed `start + timeout`, which overflows `Instant`; its deadline is capped
/// like the tracker's. Answered and refused probes return at once; the TCP probe too.
#[tokio::test]
async fn probes_with_a_duration_max_timeout_do_not_panic() {
    let echo = udp_server(|d| Some(d.to_vec())).await;
    let closed = closed_udp_port();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap();
    let five = Duration::from_secs(5);
    for expect in [UdpExpect::NoIcmpError, UdpExpect::AnyReply] {
        let probe = UdpProbe::new(*b"ping").expect(expect);
        let up = tokio::time::timeout(five, probe.probe(echo, Duration::MAX))
            .await
            .expect("an answered probe returns");
        assert!(up.is_up(), "{}", up.reason);
        let down = tokio::time::timeout(five, probe.probe(closed, Duration::MAX))
            .await
            .expect("a refused probe returns");
        assert!(!down.is_up(), "{}", down.reason);
    }
    let tcp_probe = TcpProbe::new();
    let up = tokio::time::timeout(five, tcp_probe.probe(tcp, Duration::MAX))
        .await
        .expect("a TCP probe returns");
    assert!(up.is_up(), "{}", up.reason);
}

/// `require_reply HEX`: wildcard nibbles, keepalived's comparison on the shorter length, and
/// `min_reply_length`/`max_reply_length`, against a server that answers
/// `0x42 0x37 <the datagram>`.
#[tokio::test]
async fn udp_reply_matching_with_wildcards_and_length_bounds() {
    let addr = udp_server(|d| Some([&[0x42, 0x37][..], d].concat())).await;
    let probe = |payload: &[u8], expect: UdpExpect| UdpProbe::new(payload).expect(expect);
    // 5 octets: 42 37 de ad 01.
    let cases: [(&str, u16, u16, bool); 10] = [
        ("42 37 de ad 01", 0, 255, true),
        ("4x 3X xx ad", 0, 255, true),
        ("x2 x7", 0, 255, true),
        ("43 37", 0, 255, false),
        ("42 38", 0, 255, false),
        ("4x 3x xx ae", 0, 255, false),
        // Pattern longer than the reply: only the reply's 5 octets are compared.
        ("42 37 de ad 01 ff ff", 0, 255, true),
        ("42", 5, 5, true),
        ("42", 6, 255, false),
        ("42", 0, 4, false),
    ];
    for (hex, min, max, pass) in cases {
        let out = probe(&[0xde, 0xad, 0x01], reply(hex, min, max))
            .probe(addr, T)
            .await;
        assert_eq!(out.is_up(), pass, "{hex} {min}..={max}: {}", out.reason);
    }
    // The default max_reply_length (255): a 256 octet reply is too long, 255 is not.
    let long = probe(&[0u8; 254], reply("42", 0, DEFAULT_MAX_REPLY_LENGTH))
        .probe(addr, T)
        .await;
    assert!(!long.is_up());
    assert!(long.reason.contains("256 octet reply"), "{}", long.reason);
    let longest = probe(&[0u8; 253], reply("42", 0, DEFAULT_MAX_REPLY_LENGTH))
        .probe(addr, T)
        .await;
    assert!(longest.is_up(), "{}", longest.reason);
    // Without data, require_reply takes a reply of any length.
    let any = probe(&[0u8; 1000], UdpExpect::AnyReply)
        .probe(addr, T)
        .await;
    assert!(any.is_up(), "{}", any.reason);
}

/// With no payload given, keepalived sends its 32 octet filler.
#[tokio::test]
async fn udp_default_payload_is_keepalived_s() {
    let addr = udp_server(|d| Some(d.to_vec())).await;
    let expect = reply("6b 65 65 70 61 6c 69 76 65 64 20 63 68 65 63 6b", 32, 32);
    let out = UdpProbe::default().expect(expect).probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(KEEPALIVED_DEFAULT_PAYLOAD.len(), 32);
}

#[tokio::test]
async fn exec_exit_codes_and_dynamic_weight() {
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let ok = ExecProbe::shell("exit 0").probe(addr, T * 4).await;
    assert!(ok.is_up(), "{}", ok.reason);
    let down = ExecProbe::shell("exit 1").probe(addr, T * 4).await;
    assert!(!down.is_up());
    assert_eq!(down.reason, "exit 1");
    let seven = ExecProbe::shell("exit 7")
        .misc_dynamic(true)
        .probe(addr, T * 4)
        .await;
    assert!(seven.is_up());
    assert_eq!(seven.weight, Some(Weight::new(5).unwrap()));
    let static_seven = ExecProbe::shell("exit 7").probe(addr, T * 4).await;
    assert!(!static_seven.is_up());
    // The backend is passed in the environment.
    let env = ExecProbe::shell(r#"test "$LB_BACKEND_ADDR:$LB_BACKEND_PORT" = 127.0.0.1:8080"#)
        .probe(addr, T * 4)
        .await;
    assert!(env.is_up(), "{}", env.reason);
    let missing = ExecProbe::new("/nonexistent/check").probe(addr, T).await;
    assert!(!missing.is_up());
    assert!(missing.reason.contains("start"), "{}", missing.reason);
}

/// keepalived `MISC_CHECK { user nobody }`: the program runs as that user and group, with
/// no supplementary group left from the daemon. Needs root (as lb-node runs); skipped
/// loudly without it, and fails under `CI=true`.
#[tokio::test]
async fn exec_runs_as_the_configured_user() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: running a check as another user needs root"
        );
        eprintln!("\n!!!!! SKIPPING exec_runs_as_the_configured_user: not root !!!!!\n");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let script = format!(r#"test "$(id -u):$(id -g):$(id -G)" = "{uid}:{gid}:{gid}""#);
    let out = ExecProbe::shell(script.clone())
        .run_as(uid, gid)
        .probe(addr, T * 4)
        .await;
    assert!(out.is_up(), "{}", out.reason);
    // The same test as the daemon's own user (root) fails.
    let out = ExecProbe::shell(script).probe(addr, T * 4).await;
    assert!(!out.is_up(), "{}", out.reason);
}

async fn next(events: &mut tokio::sync::broadcast::Receiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(Duration::from_secs(3), events.recv())
        .await
        .expect("event in time")
        .unwrap()
}

/// Processes of process group `pgid` that are still alive (not zombies).
fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

async fn read_pid(path: &std::path::Path) -> i32 {
    // Up to 5 s: a loaded machine can be slow to start `sh`.
    for _ in 0..500 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse() {
                return p;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("script did not write its pid to {}", path.display());
}

/// keepalived's `misc_timeout 0` is no timeout of its own (the check's applies), not an
/// instant timeout that fails every run.
#[tokio::test]
async fn exec_misc_timeout_zero_is_the_checks_timeout() {
    let probe = ExecProbe::shell("exit 0").misc_timeout(Duration::ZERO);
    assert_eq!(probe.timeout(), None);
    let out = probe
        .probe("127.0.0.1:1".parse().unwrap(), Duration::from_secs(5))
        .await;
    assert!(out.is_up(), "{}", out.reason);
}

#[tokio::test]
async fn exec_hung_script_is_killed_with_its_group_and_reaped() {
    let pidfile = std::env::temp_dir().join(format!("lb-health-hang-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    // A script that hangs, with a grandchild in the same group.
    let script = format!("echo $$ > {}; sleep 30 & sleep 30; wait", pidfile.display());
    // 1 s: long enough for `sh` to start and write its pid on a loaded machine.
    let probe = ExecProbe::shell(script).misc_timeout(Duration::from_secs(1));
    assert_eq!(probe.timeout(), Some(Duration::from_secs(1)));
    let started = tokio::time::Instant::now();
    let running = tokio::spawn(async move {
        probe
            .probe("127.0.0.1:1".parse().unwrap(), Duration::from_secs(60))
            .await
    });
    let pid = read_pid(&pidfile).await;
    let _ = std::fs::remove_file(&pidfile);
    let _guard = GroupGuard(pid);
    // While it hangs, the group is there (so the check below can see a leak).
    let members = live_group_members(pid);
    assert!(members.contains(&pid), "{members:?}");
    let out = running.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(!out.is_up());
    assert!(out.reason.contains("timed out"), "{}", out.reason);
    // The leader was reaped by the probe; the group's other members die with SIGKILL.
    let mut live = live_group_members(pid);
    for _ in 0..50 {
        if live.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = live_group_members(pid);
    }
    assert!(live.is_empty(), "leaked processes {live:?} of group {pid}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the script itself was reaped"
    );
}

/// Kills what is left of a test's process group (if the test fails half-way).
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !live_group_members(self.0).is_empty() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Waits (1 s at most) until group `pgid` has no live member; returns those left.
async fn group_gone(pgid: i32) -> Vec<i32> {
    let mut live = live_group_members(pgid);
    for _ in 0..50 {
        if live.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = live_group_members(pgid);
    }
    live
}

/// A timed-out program's group gets SIGTERM first, as keepalived sends it, so its
/// `trap … TERM` runs (here it touches a file) instead of dying at once by SIGKILL. The
/// program exits at once, so the probe does not wait out the grace; what it left in its
/// group (a child ignoring SIGTERM) is killed.
#[tokio::test]
async fn exec_timed_out_script_gets_sigterm_and_cleans_up() {
    let tag = std::process::id();
    let dir = std::env::temp_dir();
    let (pidfile, marker) = (
        dir.join(format!("lb-health-term-pid-{tag}")),
        dir.join(format!("lb-health-term-marker-{tag}")),
    );
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        "echo $$ > {pid}; (trap '' TERM; exec sleep 30) & trap 'touch {marker}; exit 0' TERM; wait",
        pid = pidfile.display(),
        marker = marker.display()
    );
    // 700 ms: long enough for `sh` to set its trap on a loaded machine, short enough to
    // tell "exited at SIGTERM" from "waited out the 2 s grace".
    let probe = ExecProbe::shell(script).misc_timeout(Duration::from_millis(700));
    let started = tokio::time::Instant::now();
    let running = tokio::spawn(async move {
        probe
            .probe("127.0.0.1:1".parse().unwrap(), Duration::from_secs(60))
            .await
    });
    let pid = read_pid(&pidfile).await;
    let _guard = GroupGuard(pid);
    let _ = std::fs::remove_file(&pidfile);
    let out = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the probe returned")
        .unwrap();
    assert!(!out.is_up());
    assert!(out.reason.contains("timed out"), "{}", out.reason);
    assert!(
        marker.exists(),
        "the script's TERM trap did not run: {}",
        out.reason
    );
    let _ = std::fs::remove_file(&marker);
    assert!(
        started.elapsed() < lb_health::probe::TERM_GRACE,
        "waited out the grace for a script that exited"
    );
    let live = group_gone(pid).await;
    assert!(live.is_empty(), "leaked processes {live:?} of group {pid}");
}

/// A timed-out program that ignores SIGTERM gets SIGKILL once the grace is over.
#[tokio::test]
async fn exec_script_ignoring_sigterm_is_killed_after_the_grace() {
    let pidfile = std::env::temp_dir().join(format!("lb-health-noterm-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let script = format!("echo $$ > {}; trap '' TERM; sleep 30", pidfile.display());
    // 1 s: long enough for `sh` to ignore TERM before it comes, on a loaded machine.
    let probe = ExecProbe::shell(script).misc_timeout(Duration::from_secs(1));
    assert!(probe.cleanup_grace() >= lb_health::probe::TERM_GRACE);
    let started = tokio::time::Instant::now();
    let running = tokio::spawn(async move {
        probe
            .probe("127.0.0.1:1".parse().unwrap(), Duration::from_secs(60))
            .await
    });
    let pid = read_pid(&pidfile).await;
    let _guard = GroupGuard(pid);
    let _ = std::fs::remove_file(&pidfile);
    let out = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the probe returned")
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.reason.contains("killed after the SIGTERM grace"),
        "{}",
        out.reason
    );
    assert!(
        took >= Duration::from_secs(1) + lb_health::probe::TERM_GRACE
            && took < Duration::from_secs(6),
        "{took:?}"
    );
    let live = group_gone(pid).await;
    assert!(live.is_empty(), "leaked processes {live:?} of group {pid}");
}

#[tokio::test]
async fn exec_dropped_probe_kills_its_group() {
    let pidfile = std::env::temp_dir().join(format!("lb-health-drop-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let script = format!("echo $$ > {}; sleep 30; exit 0", pidfile.display());
    let probe = ExecProbe::shell(script);
    // The caller gives up first (a driver shutdown, a removed backend), after 1 s: time
    // for `sh` to write its pid on a loaded machine.
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        probe.probe("127.0.0.1:1".parse().unwrap(), Duration::from_secs(60)),
    )
    .await;
    assert!(r.is_err());
    let pid = read_pid(&pidfile).await;
    let _ = std::fs::remove_file(&pidfile);
    let _guard = GroupGuard(pid);
    let mut live = live_group_members(pid);
    for _ in 0..100 {
        if live.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = live_group_members(pid);
    }
    assert!(live.is_empty(), "leaked processes {live:?} of group {pid}");
}

#[tokio::test]
async fn driver_updates_a_pool_with_dynamic_weight_and_inhibit() {
    // Dropped later to fail the backend: a port no parallel test's bind(…:0) can take.
    let listener = TcpListener::bind(lb_testkit::ports::dead_addr())
        .await
        .unwrap();
    let tcp_addr = listener.local_addr().unwrap();
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), tcp_addr).with_weight(Weight::new(3).unwrap()),
        Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()),
    ])
    .unwrap();
    let pool = Arc::new(
        Pool::new(
            "wrr".parse::<lb_core::Algorithm>().unwrap(),
            set,
            PoolConfig::default(),
        )
        .unwrap(),
    );
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_millis(50))
        .rise(1)
        .fall(1)
        .timeout(T * 4)
        .build()
        .unwrap();
    let mut driver = HealthDriver::new(64);
    let mut events = driver.subscribe();
    driver.apply_to_pool(
        Arc::clone(&pool),
        PoolApplier::new(&pool, OnFailure::Inhibit),
    );
    driver
        .add(
            BackendId(1),
            tcp_addr,
            Box::new(TcpProbe::new()),
            config.clone(),
        )
        .unwrap();
    driver
        .add(
            BackendId(2),
            "127.0.0.1:2".parse().unwrap(),
            Box::new(ExecProbe::shell("exit 7").misc_dynamic(true)),
            config,
        )
        .unwrap();
    let e = next(&mut events).await;
    assert_eq!(
        (e.backend, e.weight),
        (BackendId(2), Some(Weight::new(5).unwrap()))
    );
    drop(listener);
    let e = next(&mut events).await;
    assert_eq!((e.backend, e.new), (BackendId(1), Health::Down));
    // The updater runs concurrently; give it a moment (bounded).
    let mut state = (0, 0);
    for _ in 0..100 {
        let b = pool.backends();
        state = (
            b.get(BackendId(1)).unwrap().weight().get(),
            b.get(BackendId(2)).unwrap().weight().get(),
        );
        if state == (0, 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, (0, 5), "inhibited at weight 0; dynamic weight 5");
    assert_eq!(
        pool.backends().get(BackendId(1)).unwrap().health(),
        Health::Up,
        "inhibit keeps the backend in the set"
    );
    driver.shutdown().await;
}

/// keepalived `SSL_GET` with a `virtualhost` that is no DNS name (a wildcard, an IPv6
/// literal with a zone): the probe builds, falls back to the backend IP as the TLS server
/// name (no SNI) and passes. It used to fail to build ("invalid server name"), and the
/// virtual server with it failed to start. A name given explicitly with `sni` that cannot
/// be used is still an error while verification is on.
#[tokio::test]
async fn https_host_that_is_no_dns_name_falls_back_to_the_ip() {
    let (addr, _) = tls_server().await;
    for host in ["*.example.com", "[fe80::1%eth0]:443", "bad name"] {
        let probe = HttpProbe::builder("/")
            .host(host)
            .body_contains("secure")
            .tls(TlsOptions::new().verify(false))
            .build()
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let out = probe.probe(addr, T).await;
        assert!(out.is_up(), "{host}: {}", out.reason);
        // Verification on: builds too, and fails at the handshake (self-signed), not before.
        let verified = HttpProbe::builder("/")
            .host(host)
            .tls(TlsOptions::new())
            .build()
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let out = verified.probe(addr, T).await;
        assert!(
            out.reason.contains("TLS handshake"),
            "{host}: {}",
            out.reason
        );
    }
    assert!(HttpProbe::builder("/")
        .tls(TlsOptions::new().sni("*.example.com"))
        .build()
        .is_err());
    let lenient = HttpProbe::builder("/")
        .tls(TlsOptions::new().sni("*.example.com").verify(false))
        .build()
        .unwrap();
    let out = lenient.probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);
}

#[tokio::test]
async fn dns_against_dnsmasq_judges_the_rcode() {
    if !Dnsmasq::available() {
        return;
    }
    let mut server = Dnsmasq::start(&[("example.test", "198.18.0.9".parse().unwrap())]).unwrap();
    let addr = server.addr();
    let a = DnsProbe::new("example.test".parse().unwrap(), QueryType::A);
    let out = a.probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);
    assert!(
        out.reason
            .starts_with("NOERROR (0) to example.test. A from 127.0.0.1:"),
        "{}",
        out.reason
    );
    assert!(out.reason.ends_with(", 1 answer records"), "{}", out.reason);

    // keepalived's default question, `. SOA`: dnsmasq without upstream refuses it.
    let out = DnsProbe::default().probe(addr, T).await;
    assert!(!out.is_up());
    assert!(
        out.reason.starts_with("REFUSED (5) to . SOA from"),
        "{}",
        out.reason
    );

    // connect_port and connect_ip replace the backend's.
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 53));
    let out = a
        .clone()
        .connect_ip("127.0.0.1".parse().unwrap())
        .connect_port(addr.port())
        .bindto("127.0.0.1".parse().unwrap())
        .probe(elsewhere, T)
        .await;
    assert!(out.is_up(), "{}", out.reason);

    // No server: the port unreachable comes back at once, long before the timeout.
    server.stop();
    let out = a.probe(addr, Duration::from_secs(5)).await;
    assert!(!out.is_up());
    assert!(out.reason.contains("refused"), "{}", out.reason);
    assert!(out.latency < Duration::from_secs(2), "{:?}", out.latency);
}

#[tokio::test]
async fn dns_skips_what_is_not_the_response_and_times_out_on_silence() {
    // Before the real response: a short datagram, another identifier and the query echoed
    // back (QR clear). keepalived skips all three; so does the probe.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let query = buf[..n].to_vec();
            // The two that are not the response say SERVFAIL: taking either fails the
            // probe.
            let mut other = query.clone();
            other[0] ^= 0xff;
            other[2] |= 0x80;
            other[3] |= 2;
            let mut echoed = query.clone();
            echoed[3] |= 2;
            let mut answer = query.clone();
            answer[2] |= 0x80;
            for d in [&query[..5], &other[..], &echoed[..], &answer[..]] {
                let _ = sock.send_to(d, peer).await;
            }
        }
    });
    let out = DnsProbe::new("example.test".parse().unwrap(), QueryType::MX)
        .probe(addr, T)
        .await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(
        out.reason,
        format!("NOERROR (0) to example.test. MX from {addr}, 0 answer records")
    );

    // Only what is not the response: down at the timeout, saying what was skipped.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], peer).await;
        }
    });
    let out = DnsProbe::new(DnsName::root(), QueryType::SOA)
        .probe(addr, Duration::from_millis(200))
        .await;
    assert!(!out.is_up());
    assert_eq!(
        out.reason,
        format!("no DNS response from {addr} to . SOA within 200ms (1 other datagrams skipped)")
    );
    assert!(
        out.latency >= Duration::from_millis(200),
        "{:?}",
        out.latency
    );
}

#[tokio::test]
async fn smtp_against_aiosmtpd_then_killed() {
    if !Aiosmtpd::available() {
        return;
    }
    let mut server = tokio::task::spawn_blocking(Aiosmtpd::start)
        .await
        .unwrap()
        .unwrap();
    let addr = server.addr();
    let probe = SmtpProbe::new().helo_name("lb.example");
    let out = probe.probe(addr, Duration::from_secs(2)).await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(out.reason, "greeting 220, HELO 250, QUIT 221");
    // connect_ip and connect_port replace the backend's.
    let out = probe
        .clone()
        .connect_ip("127.0.0.1".parse().unwrap())
        .connect_port(addr.port())
        .probe(
            SocketAddr::from(([127, 0, 0, 2], 25)),
            Duration::from_secs(2),
        )
        .await;
    assert!(out.is_up(), "{}", out.reason);
    server.stop();
    let out = probe.probe(addr, Duration::from_secs(2)).await;
    assert!(!out.is_up());
    assert!(out.reason.contains("connect to"), "{}", out.reason);
}

/// What a scripted SMTP server does after its greeting.
#[derive(Clone, Copy)]
enum AfterGreeting {
    /// Closes at once.
    Close,
    /// Reads the first command, then closes (no reset: a clean end of stream).
    ReadThenClose,
    /// Answers a `HELO` with keepalived's default name with these bytes, then `QUIT` with
    /// `221 bye`.
    Answer(&'static [u8]),
    /// Answers `HELO` with `250 mx`, then `QUIT` with these bytes.
    AnswerQuit(&'static [u8]),
}

/// A scripted SMTP server: for each connection, sends `greeting`, then does `then`.
async fn smtp_server(greeting: &'static [u8], then: AfterGreeting) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                if s.write_all(greeting).await.is_err() {
                    return;
                }
                let helo = match then {
                    AfterGreeting::Close => return,
                    AfterGreeting::ReadThenClose => {
                        let _ = s.read(&mut buf).await;
                        return;
                    }
                    AfterGreeting::Answer(helo) => helo,
                    AfterGreeting::AnswerQuit(_) => b"250 mx\r\n",
                };
                if !matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"HELO smtpchecker.keepalived.org\r\n"))
                {
                    return;
                }
                let _ = s.write_all(helo).await;
                if matches!(s.read(&mut buf).await, Ok(n) if &buf[..n] == b"QUIT\r\n") {
                    let quit: &[u8] = match then {
                        AfterGreeting::AnswerQuit(q) => q,
                        _ => b"221 bye\r\n",
                    };
                    let _ = s.write_all(quit).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn smtp_replies_are_judged_as_keepalived_and_rfc_5321() {
    let t = Duration::from_millis(500);
    let probe = SmtpProbe::new();
    // A greeting of several lines (RFC 5321 §4.2.1) is one reply: keepalived would read
    // its second line as the answer to HELO and fail.
    let multi = smtp_server(
        b"220-mx.example ESMTP\r\n220 ready\r\n",
        AfterGreeting::Answer(b"250 mx\r\n"),
    )
    .await;
    let out = probe.probe(multi, t).await;
    assert!(out.is_up(), "{}", out.reason);
    // Any line answers QUIT (keepalived's SMTP_RECV_QUIT); it was a failure.
    // Any first line answers QUIT (keepalived's SMTP_RECV_QUIT): a malformed one, or the
    // first line of a continued reply followed by a close. Both failed.
    for quit in [&b"bye\r\n"[..], b"221-bye\r\n"] {
        let addr = smtp_server(b"220 ready\r\n", AfterGreeting::AnswerQuit(quit)).await;
        let out = probe.probe(addr, t).await;
        assert!(out.is_up(), "{}", out.reason);
    }

    let cases: [(&'static [u8], AfterGreeting, &str); 5] = [
        (
            b"554 no service here\r\n",
            AfterGreeting::Answer(b"250 mx\r\n"),
            "greeting 554 \"no service here\", expected 220",
        ),
        (
            b"220 ready\r\n",
            AfterGreeting::Answer(b"502 no HELO\r\n"),
            "HELO answered 502 \"no HELO\", expected 250",
        ),
        (
            b"220 ready\r\n",
            AfterGreeting::ReadThenClose,
            "connection closed before the HELO reply",
        ),
        (
            b"HTTP/1.1 400 Bad Request\r\n",
            AfterGreeting::Close,
            "greeting reply: malformed reply line \"HTTP/1.1 400 Bad Request\"",
        ),
        (
            b"220 rea",
            AfterGreeting::Close,
            "connection closed before the greeting reply",
        ),
    ];
    for (greeting, then, want) in cases {
        let addr = smtp_server(greeting, then).await;
        let out = probe.probe(addr, t).await;
        assert!(!out.is_up(), "{want}");
        assert_eq!(out.reason, format!("{addr}: {want}"));
    }

    // Silence: down at the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let out = probe.probe(addr, Duration::from_millis(200)).await;
    assert_eq!(
        out.reason,
        format!("{addr}: no SMTP conversation within 200ms")
    );
    assert!(out.latency >= Duration::from_millis(200));
    drop(silent);
}

/// An `openssl s_server -www` on loopback with a self-signed certificate made by
/// `openssl req` with `key_args` (`rsa:1024`, an EC P-521 key): servers whose keys rustls'
/// verifier refuses. Killed on drop.
struct OpensslServer {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "lb-health-probes-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl OpensslServer {
    async fn start(key_args: &[&str]) -> Self {
        let dir = TempDir::new();
        let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
        let mut req = std::process::Command::new("openssl");
        req.args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lb-test",
        ])
        .args(key_args)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        assert!(req
            .status()
            .expect("openssl (Debian package openssl)")
            .success());
        let port = lb_testkit::ports::unused_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = std::process::Command::new("openssl")
            // Security level 0: OpenSSL 3 refuses an RSA-1024 key of its own otherwise.
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
                "-accept",
            ])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Listening within 5 s.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `SSL_GET` without verification accepts any certificate, as keepalived's (OpenSSL's
/// `SSL_VERIFY_NONE`): RSA-1024 and P-521 keys too. rustls' signature check still ran and
/// refused them ("BadSignature", a handshake failure) for good.
#[tokio::test]
async fn https_without_verification_accepts_any_key() {
    for key in [
        &["-newkey", "rsa:1024"][..],
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"][..],
    ] {
        let server = OpensslServer::start(key).await;
        let probe = HttpProbe::builder("/")
            .tls(TlsOptions::new().verify(false))
            .build()
            .unwrap();
        let out = probe.probe(server.addr, Duration::from_secs(3)).await;
        assert!(out.is_up(), "{key:?}: {}", out.reason);
    }
}

/// keepalived reads a response to its end and judges what it received: a body shorter
/// than its Content-Length passes a regex or a digest of what arrived (the reason says it
/// was cut short; it was down), a body that stalls fails a status-only check by the
/// timeout (it passed at the headers), and a head of more than 100 header lines is fine
/// (hyper's default limit refused it).
#[tokio::test]
async fn http_bodies_are_read_as_keepalived_reads_them() {
    // Short: Content-Length 1000, 23 bytes, close.
    let (short, _) = http_server(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n<html>status: OK</html>"
            .to_vec()
    })
    .await;
    use lb_health::probe::http::{BodyRegex, RegexFlags};
    let regex = HttpProbe::builder("/")
        .regex(BodyRegex::new("status: OK", RegexFlags::default()).unwrap())
        .build()
        .unwrap();
    let out = regex.probe(short, T).await;
    assert!(out.is_up(), "{}", out.reason);
    assert!(out.reason.contains("body cut short"), "{}", out.reason);
    let digest = HttpProbe::builder("/")
        // md5("<html>status: OK</html>")
        .digest("49e62f8dfb42f296e5209a149ec43659")
        .unwrap()
        .build()
        .unwrap();
    let out = digest.probe(short, T).await;
    assert!(out.is_up(), "{}", out.reason);

    // Stalled: 7 of 100 bytes, then nothing for longer than the timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstarted")
                        .await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    });
    let status_only = HttpProbe::builder("/").build().unwrap();
    let out = status_only.probe(stalled, T).await;
    assert!(!out.is_up(), "a stalled body passed: {}", out.reason);

    // 150 header lines.
    let (many, _) = http_server(|_| {
        let mut r = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n");
        for i in 0..150 {
            r.push_str(&format!("x-h{i}: v\r\n"));
        }
        r.push_str("\r\nok");
        r.into_bytes()
    })
    .await;
    let out = status_only.probe(many, T).await;
    assert!(out.is_up(), "{}", out.reason);
}

/// A per-step timeout past what an instant holds (the tracker allows `Duration::MAX`) never
/// runs out instead of panicking on `Instant + Duration`.
#[tokio::test]
async fn http_per_step_timeout_of_duration_max_does_not_panic() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s); // accept, never answer
        }
    });
    let probe = HttpProbe::builder("/").timeout_per_step().build().unwrap();
    let r =
        tokio::time::timeout(Duration::from_millis(300), probe.probe(addr, Duration::MAX)).await;
    assert!(r.is_err(), "still waiting, no panic: {r:?}");
    held.abort();
}

/// The gRPC health checking protocol against gRPC's own server (its C core, Debian's
/// python3-grpcio): the server as a whole and a known service pass, an unknown service
/// fails with NOT_FOUND, a service reported NOT_SERVING fails and passes again once it
/// serves, a stopped server fails.
#[tokio::test]
async fn grpc_health_against_grpcs_own_server() {
    if !lb_testkit::grpc::available() {
        return;
    }
    let health = std::env::temp_dir().join(format!("lb-grpc-health-{}", std::process::id()));
    let _ = std::fs::remove_file(&health);
    let file = health.clone();
    let mut server =
        tokio::task::spawn_blocking(move || lb_testkit::grpc::GrpcServer::start("s1", Some(&file)))
            .await
            .unwrap()
            .unwrap();
    let addr = server.addr();
    let t = Duration::from_secs(5);
    let out = GrpcProbe::new("").probe(addr, t).await;
    assert!(out.is_up(), "{}", out.reason);
    assert_eq!(out.reason, "server SERVING");
    let echo = GrpcProbe::new("echo.Echo").authority("echo.internal");
    let out = echo.probe(addr, t).await;
    assert_eq!(out.reason, "service \"echo.Echo\" SERVING");
    let out = GrpcProbe::new("nope").probe(addr, t).await;
    assert!(!out.is_up());
    assert_eq!(out.reason, "grpc-status 5 NOT_FOUND: unknown service");
    std::fs::write(&health, "").unwrap();
    let out = echo.probe(addr, t).await;
    assert!(!out.is_up());
    assert_eq!(out.reason, "service \"echo.Echo\" NOT_SERVING");
    std::fs::remove_file(&health).unwrap();
    assert!(echo.probe(addr, t).await.is_up());
    server.stop();
    let out = echo.probe(addr, t).await;
    assert!(!out.is_up());
    assert!(out.reason.starts_with("connect to"), "{}", out.reason);
}

/// A server that does not speak HTTP/2 (an HTTP/1.1 one) fails the gRPC check, saying so.
#[tokio::test]
async fn grpc_health_fails_against_an_http1_server() {
    let (addr, _) = http_server(|_| response(200, "ok")).await;
    let out = GrpcProbe::new("").probe(addr, T).await;
    assert!(!out.is_up());
    assert!(
        out.reason.starts_with("HTTP/2 connection") || out.reason.starts_with("gRPC call"),
        "{}",
        out.reason
    );
}

/// An HTTP/2 server over TLS answering `Check` with `status` (3: without gRPC's
/// content-type), offering ALPN `alpn` (none when empty).
async fn grpc_tls_server(status: u8, alpn: &[u8]) -> SocketAddr {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let (cert, key) = self_signed();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(T, acceptor.accept(s)).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let ok = req.uri().path() == "/grpc.health.v1.Health/Check"
                            && req.headers()["te"] == "trailers";
                        let _ = req.into_body().collect().await;
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", if ok { "0" } else { "3" }.parse().unwrap());
                        let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                            Ok(Frame::data(bytes::Bytes::from(vec![
                                0, 0, 0, 0, 2, 0x08, status,
                            ]))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let mut r =
                            hyper::Response::new(StreamBody::new(futures::stream::iter(frames)));
                        // Status 3 (an unknown value) stands for "not a gRPC server": no
                        // content-type.
                        if status != 3 {
                            r.headers_mut()
                                .insert("content-type", "application/grpc".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
            });
        }
    });
    addr
}

/// Over TLS the check offers ALPN `h2`: it passes against a server serving HTTP/2, reads
/// its NOT_SERVING, and fails against one that speaks only HTTP/1.1.
#[tokio::test]
async fn grpc_health_over_tls_offers_h2() {
    let tls = || TlsOptions::new().verify(false);
    let serving = grpc_tls_server(1, b"h2").await;
    let probe = GrpcProbe::new("").tls(tls()).unwrap();
    let out = probe.probe(serving, T).await;
    assert!(out.is_up(), "{}", out.reason);
    let not_serving = grpc_tls_server(2, b"h2").await;
    assert_eq!(
        probe.probe(not_serving, T).await.reason,
        "server NOT_SERVING"
    );
    let http1 = grpc_tls_server(1, b"http/1.1").await;
    let out = probe.probe(http1, T).await;
    assert!(!out.is_up());
    assert!(out.reason.starts_with("TLS handshake"), "{}", out.reason);
    // A server with no ALPN at all completes the handshake choosing nothing.
    let none = grpc_tls_server(1, b"").await;
    let out = probe.probe(none, T).await;
    assert_eq!(
        out.reason,
        "TLS handshake: the server did not choose ALPN h2"
    );
    // An HTTP/2 server whose answer is not gRPC's.
    let not_grpc = grpc_tls_server(3, b"h2").await;
    let out = probe.probe(not_grpc, T).await;
    assert_eq!(out.reason, "content-type \"none\" (not gRPC)");
}

/// HAProxy's `check-proto h2`: an HTTP check speaking HTTP/2 with prior knowledge to
/// nginx's `listen … http2` (which takes only HTTP/2 on that port), with the `Host` as the
/// `:authority`; the status and body checks as over HTTP/1.1. An HTTP/1.1 check fails
/// against that port, and an HTTP/2 one against an HTTP/1.1 server, each saying why.
#[tokio::test]
async fn http2_checks_against_nginx_h2c() {
    let dir = std::env::temp_dir().join(format!("lb-health-h2-nginx-{}", std::process::id()));
    let port = lb_testkit::ports::unused_port();
    let _nginx = lb_testkit::nginx::Nginx::start(
        &dir,
        &format!(
            "  server {{ listen 127.0.0.1:{port} http2;\n\
               location /health {{ return 200 \"$server_protocol host=$host\\n\"; }}\n\
               location /bad {{ return 503; }} }}"
        ),
        &[port],
    )
    .expect("nginx (Debian's nginx-light, installed by .ci/run)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let probe = HttpProbe::builder("/health")
        .http2()
        .host("svc.example:8080")
        .body_contains("HTTP/2.0 host=svc.example\n")
        .build()
        .unwrap();
    let out = probe.probe(addr, T).await;
    assert!(out.is_up(), "{}", out.reason);
    let out = HttpProbe::builder("/bad")
        .http2()
        .build()
        .unwrap()
        .probe(addr, T)
        .await;
    assert_eq!(out.reason, "status 503 not in 200-299");
    // The same check over HTTP/1.1: nginx reads its request line as a bad HTTP/2 preface.
    let out = HttpProbe::builder("/health")
        .build()
        .unwrap()
        .probe(addr, T)
        .await;
    assert!(
        out.reason.starts_with("invalid HTTP response"),
        "{}",
        out.reason
    );
    // An HTTP/2 check against an HTTP/1.1 server.
    let (http1, _) = http_server(|_| response(200, "ok")).await;
    let out = HttpProbe::builder("/")
        .http2()
        .build()
        .unwrap()
        .probe(http1, T)
        .await;
    assert!(!out.is_up());
    assert!(
        out.reason.starts_with("HTTP/2 connection") || out.reason.starts_with("invalid HTTP/2"),
        "{}",
        out.reason
    );
    // A Host that cannot be an :authority is refused when the check is built.
    let err = HttpProbe::builder("/")
        .http2()
        .host("a b")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no HTTP/2 :authority"), "{err}");
}

/// An HTTP/2 check over TLS offers ALPN `h2` alone: it passes against an HTTP/2 server and
/// fails at the TLS step against one that chooses HTTP/1.1 or nothing.
#[tokio::test]
async fn http2_checks_over_tls_offer_h2() {
    let probe = HttpProbe::builder("/")
        .http2()
        .tls(TlsOptions::new().verify(false))
        .build()
        .unwrap();
    assert_eq!(probe.kind(), "https");
    let h2 = grpc_tls_server(1, b"h2").await;
    let out = probe.probe(h2, T).await;
    assert!(out.is_up(), "{}", out.reason);
    let http1 = grpc_tls_server(1, b"http/1.1").await;
    let out = probe.probe(http1, T).await;
    assert!(out.reason.starts_with("TLS handshake"), "{}", out.reason);
    let none = grpc_tls_server(1, b"").await;
    let out = probe.probe(none, T).await;
    assert_eq!(
        out.reason,
        "TLS handshake: the server did not choose ALPN h2"
    );
}
