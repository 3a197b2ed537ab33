//! keepalived `PING_CHECK`: one ICMP echo request (ICMPv6 for IPv6 targets), and the
//! check passes when the echo reply comes back within the timeout (keepalived
//! keepalived/check/check_ping.c; [RFC 792], [RFC 4443 §4.1], [RFC 1071]).
//!
//! The codec is sans-IO, in the private `echo` module; this module opens the socket, sends
//! and waits.
//!
//! [RFC 792]: https://www.rfc-editor.org/rfc/rfc792
//! [RFC 1071]: https://www.rfc-editor.org/rfc/rfc1071
//! [RFC 4443 §4.1]: https://www.rfc-editor.org/rfc/rfc4443#section-4.1

mod echo;

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use self::echo::{EchoKind, EchoRepr, Expect, Family, Framing, Packet, DATA};
use super::{elapsed, io_reason, recv_errors, Probe};
use crate::tracker::ProbeOutcome;

/// The receive buffer, in octets: a matching reply is at most 60 (the longest IPv4 header)
/// + 8 + 128 octets; a longer datagram is cut and then fails the comparison.
const RECV_LEN: usize = 1024;

/// Sends one ICMP echo request (ICMPv6 for an IPv6 target) to the backend's address, or to
/// `connect_ip`, and passes when the echo reply arrives within the timeout; anything else
/// fails (keepalived `PING_CHECK`, check_ping.c). The port of the backend's address is
/// ignored.
///
/// # Sockets
///
/// The probe opens, per probe, first an ICMP datagram socket (a "ping socket":
/// `SOCK_DGRAM` with `IPPROTO_ICMP` or `IPPROTO_ICMPV6`, as keepalived does). Linux allows
/// it only to processes whose group is in `net.ipv4.ping_group_range` (a per network
/// namespace setting that governs ICMPv6 too; the kernel's default `1 0` allows nobody, as on this project's test machines; systemd hosts usually widen it to every group) and
/// refuses it otherwise with `EACCES`. The probe then falls back to a raw socket
/// (`SOCK_RAW`), which needs `CAP_NET_RAW`. If neither opens, the outcome is down with a
/// reason naming both remedies. keepalived instead widens `ping_group_range` to include
/// group 0 when it reads a `PING_CHECK`; this probe never changes system settings.
///
/// Sockets are non-blocking and close-on-exec. They are `connect`ed to the target, so that
/// the kernel delivers only the target's packets, and bound to `bindto` when given. With
/// `IP_RECVERR`/`IPV6_RECVERR` set, host and network unreachable errors are reported on the
/// socket and fail the check at once with the error's text (as do errors while
/// connecting or sending, such as "network is unreachable").
///
/// # Request and reply
///
/// The request carries a process-wide sequence number and keepalived's 128 data octets
/// (`"keepalived check - "` repeated). On a raw socket it also carries an identifier that
/// differs between concurrent probes (a process-wide counter mixed with the pid), and the
/// IPv4 checksum ([RFC 1071]); on a ping socket the kernel sets the identifier and the
/// checksum. ICMPv6 checksums are always the kernel's ([RFC 3542 §3.1]).
///
/// A datagram counts as the reply only if it is an echo reply (type 0, or 129 for ICMPv6)
/// with our sequence number, our identifier (on raw sockets: on a ping socket the kernel
/// filters replies by its own identifier) and our data, with a valid checksum (IPv4).
/// Anything else — our own request looped back to a raw socket, other probes' replies,
/// other ICMP messages, truncated or garbage datagrams — is skipped and the probe waits on
/// until the timeout. keepalived fails at the first datagram that is not an echo reply; a
/// raw socket sees too much for that.
///
/// Reasons name the socket kind: `"echo reply from 127.0.0.1 (raw socket)"`,
/// `"no echo reply from 192.0.2.1 within 1s (ping socket)"`.
///
/// # Platform support
///
/// Linux (ping sockets since 3.0 for IPv4, 3.11 for IPv6). Elsewhere the sockets may open
/// but ICMP errors are not requested.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_health::probe::{PingProbe, Probe};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let probe = PingProbe::new().connect_ip("127.0.0.1".parse().unwrap());
/// assert_eq!(probe.kind(), "ping");
/// // The port is ignored; the address is replaced by connect_ip.
/// let outcome = probe.probe("192.0.2.1:80".parse().unwrap(), Duration::from_secs(1)).await;
/// // Up with a ping socket or as root (raw socket); else down, saying what to allow.
/// assert!(
///     outcome.is_up() || outcome.reason.contains("CAP_NET_RAW"),
///     "{}",
///     outcome.reason
/// );
/// # }
/// ```
///
/// [RFC 1071]: https://www.rfc-editor.org/rfc/rfc1071
/// [RFC 3542 §3.1]: https://www.rfc-editor.org/rfc/rfc3542#section-3.1
#[derive(Debug, Clone, Default)]
pub struct PingProbe {
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
}

impl PingProbe {
    /// keepalived's `PING_CHECK {}`:
    ///
    /// - the backend's own address (no `connect_ip`);
    /// - the source address the kernel picks (no `bindto`).
    pub fn new() -> Self {
        Self::default()
    }

    target_options! {
        connect_ip,
        /// An address of the target's family.
        bindto,
    }

    /// Pings `ip` until `deadline`: `Ok` with the reason of an up outcome, `Err` with the
    /// reason of a down one.
    async fn ping(
        &self,
        ip: IpAddr,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<String, String> {
        let family = Family::of(ip);
        let (sock, kind) = open(family, ip)?;
        let failed = |what: String, e: &io::Error| io_reason(&format!("{what} ({kind})"), e);
        let no_reply = || format!("no echo reply from {ip} within {timeout:?} ({kind})");
        recv_errors(&sock, ip).map_err(|e| failed("set IP_RECVERR".into(), &e))?;
        if let Some(src) = self.bindto {
            sock.bind(&SocketAddr::new(src, 0).into())
                .map_err(|e| failed(format!("bind to {src}"), &e))?;
        }
        sock.connect(&SocketAddr::new(ip, 0).into())
            .map_err(|e| failed(format!("connect to {ip}"), &e))?;
        // `AsyncFd::new` is deprecated (tokio#8587) because an arbitrary `AsRawFd` type may
        // close or swap its descriptor while registered; `socket2::Socket` owns its
        // descriptor until the `AsyncFd` drops it, which is what the unsafe
        // `AsyncFd::register` asks, and this crate forbids unsafe code.
        #[allow(deprecated)]
        let sock = AsyncFd::new(sock).map_err(|e| failed("register the socket".into(), &e))?;

        let seq_no = next_seq_no();
        let ident = match kind {
            SocketKind::Ping => None,
            SocketKind::Raw => Some(raw_ident()),
        };
        let request = EchoRepr {
            family,
            kind: EchoKind::Request,
            ident: ident.unwrap_or(0),
            seq_no,
            data: &DATA,
        };
        let mut out = vec![0; request.buffer_len()];
        request.emit(&mut Packet::new_unchecked(&mut out[..]));
        let sent = tokio::time::timeout_at(
            deadline,
            sock.async_io(Interest::WRITABLE, |s| s.send(&out)),
        )
        .await;
        match sent {
            Err(_) => {
                return Err(format!(
                    "could not send an echo request to {ip} within {timeout:?} ({kind})"
                ))
            }
            Ok(Err(e)) => return Err(failed(format!("send an echo request to {ip}"), &e)),
            Ok(Ok(n)) if n != out.len() => {
                return Err(format!("sent {n} of {} octets to {ip} ({kind})", out.len()))
            }
            Ok(Ok(_)) => {}
        }

        let expect = Expect {
            family,
            ident,
            seq_no,
            data: &DATA,
        };
        let framing = match (kind, family) {
            (SocketKind::Raw, Family::V4) => Framing::Ipv4,
            _ => Framing::Icmp,
        };
        let mut buf = [0u8; RECV_LEN];
        // Each turn reads one datagram or waits for one; the deadline is checked on every
        // turn, so a flood of other datagrams cannot keep the probe past it.
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(no_reply());
            }
            // ERROR too: an ICMP error on a ping socket raises only EPOLLERR (nothing to
            // read), which does not wake a READABLE-only wait.
            let ready =
                tokio::time::timeout_at(deadline, sock.ready(Interest::READABLE | Interest::ERROR))
                    .await;
            let mut guard = match ready {
                Err(_) => return Err(no_reply()),
                Ok(Err(e)) => return Err(failed(format!("wait for a reply from {ip}"), &e)),
                Ok(Ok(guard)) => guard,
            };
            // A pending socket error (an ICMP error with IP_RECVERR) is returned by the read.
            let n = match guard.try_io(|s| s.get_ref().read(&mut buf)) {
                Err(_would_block) => continue,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(failed(format!("echo request to {ip}"), &e)),
                Ok(Ok(n)) => n,
            };
            match expect.check(&buf[..n], framing) {
                Ok(()) => return Ok(format!("echo reply from {ip} ({kind})")),
                Err(skip) => tracing::trace!(%ip, %skip, "ping: skipped a datagram"),
            }
        }
    }
}

/// Which socket a probe got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// `SOCK_DGRAM` with `IPPROTO_ICMP`/`IPPROTO_ICMPV6`.
    Ping,
    /// `SOCK_RAW` with `IPPROTO_ICMP`/`IPPROTO_ICMPV6`.
    Raw,
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ping => "ping socket",
            Self::Raw => "raw socket",
        })
    }
}

/// Opens a non-blocking ICMP socket of `family`: a ping socket, else a raw one. The error
/// is the reason of a down outcome, naming both failures and their remedies.
fn open(family: Family, ip: IpAddr) -> Result<(Socket, SocketKind), String> {
    let (domain, protocol) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    // socket2 opens sockets close-on-exec (atomically on Linux).
    let new = |ty: Type| {
        let sock = Socket::new(domain, ty, Some(protocol))?;
        sock.set_nonblocking(true)?;
        Ok::<_, io::Error>(sock)
    };
    let ping = match new(Type::DGRAM) {
        Ok(sock) => return Ok((sock, SocketKind::Ping)),
        Err(e) => e,
    };
    match new(Type::RAW) {
        Ok(sock) => Ok((sock, SocketKind::Raw)),
        Err(raw) => Err(no_socket_reason(ip, &ping, &raw)),
    }
}

/// Why no ICMP socket opened, with the remedy of each refusal: `EACCES` on the ping socket
/// (the group is outside `net.ipv4.ping_group_range`), `EPERM` on the raw one (no
/// `CAP_NET_RAW`). Other errors (`EAFNOSUPPORT` without IPv6…) have no remedy to name.
fn no_socket_reason(ip: IpAddr, ping: &io::Error, raw: &io::Error) -> String {
    let hint = |e: &io::Error, remedy: &str| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            format!("{e} ({remedy})")
        } else {
            e.to_string()
        }
    };
    format!(
        "cannot open an ICMP socket to ping {ip}: ping socket: {}; raw socket: {}",
        hint(ping, "put the process's group in net.ipv4.ping_group_range"),
        hint(raw, "needs CAP_NET_RAW"),
    )
}

/// The next sequence number, process-wide (wraps).
fn next_seq_no() -> u16 {
    static SEQ_NO: AtomicU16 = AtomicU16::new(0);
    SEQ_NO.fetch_add(1, Ordering::Relaxed)
}

/// An identifier for a raw socket's request: the low 16 bits of the pid (as ping(8) uses)
/// mixed with a process-wide counter, so that 65 536 consecutive probes of this process
/// differ, and other processes likely differ too.
fn raw_ident() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid = (std::process::id() & 0xffff) as u16;
    pid ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

#[async_trait]
impl Probe for PingProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its socket.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let ip = self.connect_ip.unwrap_or(addr.ip());
        let start = tokio::time::Instant::now();
        let deadline = super::deadline(start, timeout);
        match self.ping(ip, timeout, deadline).await {
            Ok(reason) => ProbeOutcome::up(reason, elapsed(start)),
            Err(reason) => ProbeOutcome::down(reason, elapsed(start)),
        }
    }

    fn kind(&self) -> &'static str {
        "ping"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_identifiers_differ_between_consecutive_probes() {
        let ids: std::collections::HashSet<u16> = (0..1000).map(|_| raw_ident()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn refusals_name_their_remedies() {
        let ip = "192.0.2.1".parse().unwrap();
        let eacces = io::Error::from_raw_os_error(13);
        let eperm = io::Error::from_raw_os_error(1);
        assert_eq!(
            no_socket_reason(ip, &eacces, &eperm),
            "cannot open an ICMP socket to ping 192.0.2.1: ping socket: Permission denied \
             (os error 13) (put the process's group in net.ipv4.ping_group_range); raw \
             socket: Operation not permitted (os error 1) (needs CAP_NET_RAW)"
        );
        let eafnosupport = io::Error::from_raw_os_error(97);
        let reason = no_socket_reason(ip, &eafnosupport, &eafnosupport);
        assert!(!reason.contains("CAP_NET_RAW"), "{reason}");
        assert!(!reason.contains("ping_group_range"), "{reason}");
    }

    #[test]
    fn builder_sets_addresses() {
        let p = PingProbe::new()
            .connect_ip("192.0.2.1".parse().unwrap())
            .bindto("192.0.2.2".parse().unwrap());
        assert_eq!(p.connect_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.bindto, Some("192.0.2.2".parse().unwrap()));
        let d = PingProbe::default();
        assert_eq!((d.connect_ip, d.bindto), (None, None));
        assert_eq!(d.kind(), "ping");
    }
}
