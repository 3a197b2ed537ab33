//! A real DNS server for tests: Debian's `dnsmasq` (package `dnsmasq-base`) on a loopback
//! port, authoritative for nothing and with no upstream, answering `A` queries for the
//! names it is given and refusing everything else. Plus a blocking `A` query to read which
//! server answered.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::peer::LoopbackPeer;

/// Where Debian installs dnsmasq.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A `dnsmasq` in the foreground on `127.0.0.1:port`; killed by PID and reaped when
/// dropped.
#[derive(Debug)]
pub struct Dnsmasq(LoopbackPeer);

impl Dnsmasq {
    /// True if dnsmasq is installed. Otherwise prints a loud skip message and returns
    /// false — except under `CI=true`, where it panics (`.ci/run` installs it).
    pub fn available() -> bool {
        let ok = std::path::Path::new(DNSMASQ).is_file();
        if !ok {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true: {DNSMASQ} (Debian dnsmasq-base) is missing; refusing to skip");
            }
            eprintln!("\n!!!!! SKIPPING: {DNSMASQ} is not installed (apt-get install dnsmasq-base) !!!!!\n");
        }
        ok
    }

    /// Starts one on a free loopback port that answers `A` queries for each `(name,
    /// address)` of `answers` (and the names under it) with that address, and refuses
    /// every other question (RCODE REFUSED: it has no upstream). Waits (at most 1 s a try,
    /// 5 tries) until it answers.
    ///
    /// # Errors
    /// The spawn error, or [`io::ErrorKind::TimedOut`] when no port gave an answering
    /// server in 5 tries.
    pub fn start(answers: &[(&str, Ipv4Addr)]) -> io::Result<Self> {
        let command = |port: u16| {
            let mut cmd = crate::command(DNSMASQ);
            cmd.args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--user=root",
                &format!("--port={port}"),
            ]);
            for (name, ip) in answers {
                cmd.arg(format!("--address=/{name}/{ip}"));
            }
            cmd
        };
        // Any response (REFUSED included) means it is serving.
        let ready = |addr| query(addr, ".", 6, Duration::from_millis(100)).is_ok();
        LoopbackPeer::start("dnsmasq", 5, Duration::from_secs(1), command, ready).map(Self)
    }

    /// Its address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Kills it (SIGKILL, by PID) and reaps it; nothing listens on its port afterwards.
    pub fn stop(&mut self) {
        self.0.stop();
    }
}

/// A DNS response as [`query`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RCODE: 0 NOERROR, 5 REFUSED…
    pub rcode: u8,
    /// The address of the first `A` record in the answer section, if any.
    pub a: Option<Ipv4Addr>,
}

/// Asks `server` for records of type `qtype` (1 for A, 6 for SOA) of `name` over UDP from
/// a fresh socket, and waits at most `timeout` for the response.
///
/// # Errors
/// The socket's errors (port unreachable reads as `ConnectionRefused`), `TimedOut`, or
/// `InvalidData` for a response it cannot read.
pub fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> io::Result<Answer> {
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let question_end = q.len();
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(&q)?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(io::ErrorKind::TimedOut, "no DNS response")
        } else {
            e
        }
    })?;
    let r = &buf[..n];
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if r.len() < question_end || r[..2] != id.to_be_bytes() || r[2] & 0x80 == 0 {
        return Err(bad("not the response"));
    }
    let rcode = r[3] & 0x0f;
    let answers = u16::from_be_bytes([r[6], r[7]]);
    // The question is echoed as sent; an answer's name is a 2-octet pointer to it (as
    // dnsmasq writes it), then type, class, TTL, length and data.
    let mut a = None;
    let mut at = question_end;
    for _ in 0..answers {
        let Some(rr) = r.get(at..at + 12) else {
            return Err(bad("truncated answer"));
        };
        if rr[0] & 0xc0 != 0xc0 {
            return Err(bad("answer name is not a pointer"));
        }
        let rtype = u16::from_be_bytes([rr[2], rr[3]]);
        let len = usize::from(u16::from_be_bytes([rr[10], rr[11]]));
        let data = r
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| bad("truncated data"))?;
        if rtype == 1 && len == 4 && a.is_none() {
            a = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 12 + len;
    }
    Ok(Answer { rcode, a })
}
