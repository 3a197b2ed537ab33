//! PROXY protocol v2 from a real sender: HAProxy 2.x (Debian package `haproxy`) with
//! `send-proxy-v2 proxy-v2-options crc32c,unique-id` — a header carrying a CRC32C TLV and a
//! unique-ID TLV — is accepted, and the same bytes with one address byte changed are
//! refused for their checksum.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lb_proxy::proxy_protocol::{parse, ParseError, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// HAProxy in the foreground, killed by PID on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy_available() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "haproxy (Debian package haproxy) is needed under CI"
        );
        eprintln!("SKIPPED: haproxy is not installed");
    }
    found
}

#[tokio::test]
async fn haproxy_v2_header_with_crc32c_and_unique_id_is_accepted_and_checked() {
    if !haproxy_available() {
        return;
    }
    let capture = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = capture.local_addr().unwrap();
    let front = SocketAddr::from(([127, 0, 0, 1], lb_testkit::ports::unused_port()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    let mut f = std::fs::File::create(&cfg).unwrap();
    write!(
        f,
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\
         frontend f\n  bind {front}\n  unique-id-format %{{+X}}o\\ %ci:%cp_%Ts\n  default_backend b\n\
         backend b\n  server s {server} send-proxy-v2 proxy-v2-options crc32c,unique-id\n"
    )
    .unwrap();
    drop(f);
    let _haproxy = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Bounded: HAProxy listens within a second or two.
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect(front).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = client.expect("haproxy did not listen");
    client.write_all(b"hello").await.unwrap();
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), capture.accept())
        .await
        .expect("haproxy did not connect")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let (header, used) = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("no header")
            .unwrap();
        assert!(n > 0, "closed before the header");
        got.extend_from_slice(&buf[..n]);
        // A header is at most 536 bytes (v2 without TLVs: far less).
        assert!(
            got.len() <= 4096,
            "no complete header in {} bytes",
            got.len()
        );
        if let Some(done) = parse(&got).unwrap() {
            break done;
        }
    };
    match header {
        ProxyHeader::Proxy { source, .. } => {
            assert_eq!(source, client.local_addr().unwrap());
        }
        ProxyHeader::Local => panic!("LOCAL header"),
    }
    // The TLVs after the 12 address bytes: a CRC32C (0x03) and a unique ID (0x05).
    let mut kinds = Vec::new();
    let mut at = 16 + 12;
    while at + 3 <= used {
        kinds.push(got[at]);
        at += 3 + usize::from(u16::from_be_bytes([got[at + 1], got[at + 2]]));
    }
    assert!(kinds.contains(&0x03) && kinds.contains(&0x05), "{kinds:x?}");
    // One bit of the source address changed: refused for its checksum.
    let mut forged = got[..used].to_vec();
    forged[16] ^= 1;
    assert_eq!(parse(&forged), Err(ParseError::V2Checksum));
}
