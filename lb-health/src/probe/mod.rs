//! Active probes behind one object-safe async trait, [`Probe`], stored as
//! `Box<dyn Probe + Send + Sync>` (pingora `HealthCheck`).
//!
//! | keepalived | probe |
//! |---|---|
//! | `TCP_CHECK` | [`TcpProbe`] |
//! | `HTTP_GET` | [`HttpProbe`](http::HttpProbe) (feature `http`) |
//! | `SSL_GET` | [`HttpProbe`](http::HttpProbe) with [`TlsOptions`](http::TlsOptions) (feature `http`) |
//! | `MISC_CHECK` | [`ExecProbe`] |
//! | `UDP_CHECK` | [`UdpProbe`] with [`UdpExpect`] (`require_reply`) |
//! | `DNS_CHECK` | [`DnsProbe`] |
//! | `SMTP_CHECK` | [`SmtpProbe`] |
//! | `PING_CHECK` | [`PingProbe`] |
//! | (HAProxy `check-proto h2`) | [`HttpProbe`](http::HttpProbe) with [`http2`](http::HttpProbeBuilder::http2) (feature `http`) |
//! | (Envoy `grpc_health_check`, Kubernetes' `grpc` probe) | [`GrpcProbe`](grpc::GrpcProbe) (feature `http`) |
//!
//! A probe never fails with an error and never panics on what a backend sends: every
//! failure — refused, timed out, garbage, wrong status, wrong body — is a
//! [`ProbeOutcome`] with [`Health::Down`](lb_core::Health::Down) and the reason.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_health::probe::{Probe, TcpProbe};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let probe: Box<dyn Probe + Send + Sync> = Box::new(TcpProbe::new());
//! let outcome = probe.probe(addr, Duration::from_secs(1)).await;
//! assert!(outcome.is_up(), "{}", outcome.reason);
//! drop(listener);
//! let outcome = probe.probe(addr, Duration::from_secs(1)).await;
//! assert!(!outcome.is_up());
//! # }
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;

use crate::tracker::ProbeOutcome;

/// The builder methods of keepalived's checker keywords that every probe of an address
/// shares, for a probe type with fields of the same names: `connect_port` (`Option<u16>`),
/// `connect_ip` and `bindto` (`Option<IpAddr>`), and `send_proxy` (`Option<ProxyHeader>`)
/// for the TCP-based ones. Doc lines written before a keyword are added to that method's
/// docs (what is particular to the probe).
///
/// ```text
/// impl TcpProbe {
///     target_options! {
///         connect_port,
///         /// A line of this probe's own, added to the method's docs.
///         connect_ip,
///         bindto,
///     }
/// }
/// ```
macro_rules! target_options {
    ($($(#[doc = $doc:expr])* $option:ident),+ $(,)?) => {
        $( target_options!(@ $option [$($doc)*]); )+
    };
    (@ connect_port [$($doc:expr)*]) => {
        /// keepalived `connect_port`: connect to this port instead of the backend's.
        $(#[doc = $doc])*
        #[must_use = "the changed probe is returned"]
        pub fn connect_port(mut self, port: u16) -> Self {
            self.connect_port = Some(port);
            self
        }
    };
    (@ connect_ip [$($doc:expr)*]) => {
        /// keepalived `connect_ip`: probe this address instead of the backend's (a real
        /// server that answers health checks on another address, as in LVS-DR setups).
        $(#[doc = $doc])*
        #[must_use = "the changed probe is returned"]
        pub fn connect_ip(mut self, ip: std::net::IpAddr) -> Self {
            self.connect_ip = Some(ip);
            self
        }
    };
    (@ bindto [$($doc:expr)*]) => {
        /// keepalived `bindto`: the source address of the probe.
        $(#[doc = $doc])*
        #[must_use = "the changed probe is returned"]
        pub fn bindto(mut self, ip: std::net::IpAddr) -> Self {
            self.bindto = Some(ip);
            self
        }
    };
    (@ send_proxy [$($doc:expr)*]) => {
        /// HAProxy `check-send-proxy`: send this PROXY protocol header first, to a backend
        /// that expects one on every connection ([`ProxyHeader`](crate::probe::ProxyHeader)).
        /// Default none.
        $(#[doc = $doc])*
        #[must_use = "the changed probe is returned"]
        pub fn send_proxy(mut self, header: crate::probe::ProxyHeader) -> Self {
            self.send_proxy = Some(header);
            self
        }
    };
}

mod all;
mod dns;
mod exec;
#[cfg(feature = "http")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
mod ping;
mod smtp;
mod tcp;
mod udp;

pub use all::AllOf;
pub use dns::{
    encode_query, parse_response, DnsName, DnsProbe, QueryType, ResponseHeader, HEADER_LEN,
};
pub use exec::{split_command_line, ExecProbe, TERM_GRACE};
pub use ping::PingProbe;
pub use smtp::{Reply, ReplyError, ReplyReader, SmtpProbe, DEFAULT_HELO_NAME, MAX_REPLY};
pub use tcp::TcpProbe;
pub use udp::{
    parse_hex, HexPattern, UdpExpect, UdpProbe, UdpReply, DEFAULT_MAX_REPLY_LENGTH,
    KEEPALIVED_DEFAULT_PAYLOAD,
};

/// One kind of active check. Implementations do the IO; the
/// [`HealthTracker`](crate::HealthTracker) decides what the outcomes mean.
#[async_trait]
pub trait Probe: fmt::Debug + Send + Sync {
    /// Probes the backend at `addr` once, within `timeout`, and says what happened.
    ///
    /// Implementations must return within about `timeout` (the driver also enforces it) and
    /// must turn every failure into a down [`ProbeOutcome`] with a reason, never a panic.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the probe and releases what it holds
    /// (sockets are closed; a running program's process group is killed).
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome;

    /// A timeout of the probe's own that replaces the check's (keepalived `misc_timeout` on
    /// `MISC_CHECK`); `None` (the default) uses the check's timeout.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// How long past its timeout the probe may still run to clean up after a timeout
    /// ([`ExecProbe`]: a `SIGTERM` grace, then `SIGKILL` and reaping). Callers that bound a
    /// probe from outside (the [driver](crate::driver), [`AllOf`]) allow for it, so that the
    /// cleanup is not cut short. Default: none.
    fn cleanup_grace(&self) -> Duration {
        Duration::ZERO
    }

    /// The longest the probe may run when called with `timeout`: callers that bound a
    /// probe from outside (the [driver](crate::driver), [`AllOf`]) stop it only after this.
    /// Default: `timeout` plus the [`cleanup_grace`](Self::cleanup_grace).
    /// [`HttpProbe`](http::HttpProbe) with
    /// [`timeout_per_step`](http::HttpProbeBuilder::timeout_per_step) runs longer, each of
    /// its steps bounded by `timeout`.
    fn max_duration(&self, timeout: Duration) -> Duration {
        timeout.saturating_add(self.cleanup_grace())
    }

    /// A short name for logs: `"tcp"`, `"http"`, `"https"`, `"grpc"`, `"exec"`, `"udp"`,
    /// `"dns"`, `"smtp"`, `"ping"`.
    fn kind(&self) -> &'static str;
}

/// Where to connect: the backend's address, with its IP replaced by `connect_ip` and its
/// port by `connect_port` where given (keepalived's checker keywords).
pub(crate) fn target(
    addr: SocketAddr,
    connect_ip: Option<IpAddr>,
    connect_port: Option<u16>,
) -> SocketAddr {
    SocketAddr::new(
        connect_ip.unwrap_or(addr.ip()),
        connect_port.unwrap_or(addr.port()),
    )
}

/// The PROXY protocol header a check sends first, to a backend that expects one before
/// anything else (HAProxy `check-send-proxy`, and its default for the checks of a
/// `send-proxy` server on its traffic port). A check relays no client, so the header says
/// so, as HAProxy's checks' do (proxy-protocol.txt, sections 2.1 and 2.2):
///
/// | variant | bytes |
/// |---|---|
/// | [`V1`](Self::V1) | `PROXY UNKNOWN\r\n` (15 bytes) |
/// | [`V2`](Self::V2) | the 12-byte signature, `0x20` (version 2, command `LOCAL`), `0x00` (family and transport `UNSPEC`), length `0x0000` (16 bytes) |
///
/// A receiver takes the connection's own addresses for such a connection (nginx's
/// `proxy_protocol`, HAProxy's `accept-proxy`, lb-proxy's
/// `AcceptProxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyHeader {
    /// The text header (HAProxy `send-proxy`).
    V1,
    /// The binary header (HAProxy `send-proxy-v2`).
    V2,
}

impl ProxyHeader {
    /// The header's bytes, as in the table above.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::V1 => b"PROXY UNKNOWN\r\n",
            Self::V2 => b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
        }
    }
}

/// Connects a TCP stream from `bindto` (if any) to `addr` and sends `proxy_header` (if
/// any). No timeout: callers wrap it. A failure to send the header is an error saying so.
pub(crate) async fn tcp_connect(
    addr: SocketAddr,
    bindto: Option<IpAddr>,
    proxy_header: Option<ProxyHeader>,
) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = bindto {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    let mut stream = socket.connect(addr).await?;
    if let Some(h) = proxy_header {
        stream
            .write_all(h.bytes())
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("sending the PROXY header: {e}")))?;
    }
    Ok(stream)
}

/// The deadline of a probe started at `start` with `timeout`, capped as the tracker caps
/// its delays: `start + Duration::MAX` would panic (a check's configuration accepts any
/// timeout).
pub(crate) fn deadline(start: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    start
        .checked_add(timeout.min(crate::tracker::FAR_FUTURE))
        .unwrap_or(start)
}

/// Binds a UDP socket (to `bindto`, else the unspecified address of `to`'s family), asks
/// for every ICMP error ([`recv_errors`]), connects it to `to` and sends `datagram`; the
/// socket, or why not. No timeout: callers wrap it.
pub(crate) async fn udp_send(
    to: SocketAddr,
    bindto: Option<IpAddr>,
    datagram: &[u8],
) -> Result<tokio::net::UdpSocket, String> {
    let local = match (bindto, to) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
        (None, SocketAddr::V6(_)) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let sock = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| io_reason("bind", &e))?;
    recv_errors(&sock, to.ip()).map_err(|e| io_reason("set IP_RECVERR", &e))?;
    sock.connect(to)
        .await
        .map_err(|e| io_reason(&format!("connect to {to}"), &e))?;
    let sent = sock
        .send(datagram)
        .await
        .map_err(|e| io_reason(&format!("send to {to}"), &e))?;
    if sent != datagram.len() {
        return Err(format!("sent {sent} of {} octets to {to}", datagram.len()));
    }
    Ok(sock)
}

/// Latency since `start`, read from tokio's clock (paused in tests).
pub(crate) fn elapsed(start: tokio::time::Instant) -> Duration {
    tokio::time::Instant::now().saturating_duration_since(start)
}

/// The error text of an IO failure, with its kind when the message alone is vague.
pub(crate) fn io_reason(what: &str, e: &std::io::Error) -> String {
    format!("{what}: {e}")
}

/// Asks the kernel to report every ICMP error on `sock`, a socket of `ip`'s family
/// (`IP_RECVERR`/`IPV6_RECVERR`; keepalived sets the same option on its UDP sockets).
/// Without it Linux reports only port and protocol unreachable on a connected UDP socket,
/// and nothing on a raw one.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn recv_errors(sock: &impl std::os::fd::AsFd, ip: IpAddr) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    match ip {
        IpAddr::V4(_) => setsockopt(sock, sockopt::Ipv4RecvErr, &true),
        IpAddr::V6(_) => setsockopt(sock, sockopt::Ipv6RecvErr, &true),
    }
    .map_err(std::io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn recv_errors(_: &impl std::os::fd::AsFd, _: IpAddr) -> std::io::Result<()> {
    Ok(())
}
