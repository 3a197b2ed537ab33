//! Socket options as newtypes, applied through `socket2` (linkerd style).
//!
//! Listening sockets: [`FreeBind`] (IP_FREEBIND / IPV6_FREEBIND, so a VRRP backup can bind a
//! VIP it does not hold yet) and [`ReusePort`] (SO_REUSEPORT, several acceptors on one
//! address). Established sockets: [`Keepalive`] (SO_KEEPALIVE + TCP_KEEPIDLE), [`NoDelay`]
//! (TCP_NODELAY) and [`BufferSize`] (SO_RCVBUF / SO_SNDBUF).
//!
//! # Platform support
//! `FreeBind` and `ReusePort` are Linux options; elsewhere setting them to `true` fails with
//! [`std::io::ErrorKind::Unsupported`].
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_proxy::sockopt::{Keepalive, NoDelay, StreamOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let stream = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
//! let opts = StreamOptions {
//!     keepalive: Keepalive(Some(Duration::from_secs(60))),
//!     nodelay: NoDelay(true),
//!     ..StreamOptions::default()
//! };
//! opts.apply(&stream)?;
//! assert!(stream.nodelay()?);
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, Socket, TcpKeepalive};

/// TCP keepalive: `Some(idle)` sends probes after `idle` without traffic (TCP_KEEPIDLE, in
/// whole seconds, at least 1 s); `None` leaves SO_KEEPALIVE off. Default `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive(pub Option<Duration>);

/// TCP_NODELAY: `true` disables Nagle's algorithm. Default `true` (HAProxy's behaviour for
/// forwarded streams: the proxy must not add latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoDelay(pub bool);

impl Default for NoDelay {
    fn default() -> Self {
        Self(true)
    }
}

/// IP_FREEBIND / IPV6_FREEBIND: bind an address this host does not (yet) own. Default `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FreeBind(pub bool);

/// SO_REUSEPORT: several sockets bound to one address, the kernel spreading connections
/// over them. Default `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReusePort(pub bool);

/// A socket buffer size in bytes (SO_RCVBUF or SO_SNDBUF; HAProxy `tune.rcvbuf.client`,
/// `tune.sndbuf.server`, …). `None` (default) leaves the kernel's autotuning on, which grows
/// buffers up to `net.ipv4.tcp_rmem` / `tcp_wmem`'s maximum (several MiB). A fixed size turns
/// autotuning off for that socket; Linux doubles the value for its bookkeeping and caps it
/// at `net.core.rmem_max` / `wmem_max` unless the process is privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferSize(pub Option<usize>);

/// Options for an established TCP stream (client or backend side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// SO_KEEPALIVE / TCP_KEEPIDLE.
    pub keepalive: Keepalive,
    /// TCP_NODELAY.
    pub nodelay: NoDelay,
    /// SO_RCVBUF, bytes.
    pub rcvbuf: BufferSize,
    /// SO_SNDBUF, bytes.
    pub sndbuf: BufferSize,
}

impl StreamOptions {
    /// Applies the options to a freshly created `socket` (anything with a socket fd:
    /// `tokio::net::TcpStream`, `std::net::TcpStream`, `socket2::Socket`). `Keepalive(None)`
    /// leaves the socket's keepalive setting as it is (off for new sockets); `BufferSize(None)`
    /// leaves autotuning on.
    ///
    /// # Errors
    /// The `setsockopt` error.
    pub fn apply<S: std::os::fd::AsFd>(&self, socket: &S) -> io::Result<()> {
        let sock = SockRef::from(socket);
        self.apply_all_but_nodelay(&sock)?;
        sock.set_nodelay(self.nodelay.0)
    }

    /// Sets on a listening socket the options its accepted sockets inherit, for
    /// [`StreamOptions::apply_accepted`]: TCP_NODELAY, which Linux copies from the listener
    /// to every socket it accepts. One `setsockopt` per listener instead of one per
    /// connection.
    ///
    /// # Errors
    /// The `setsockopt` error.
    pub fn apply_listener<S: std::os::fd::AsFd>(&self, listener: &S) -> io::Result<()> {
        SockRef::from(listener).set_nodelay(self.nodelay.0)
    }

    /// [`StreamOptions::apply`] for a socket accepted from a listener set up with
    /// [`StreamOptions::apply_listener`]: on Linux TCP_NODELAY is already inherited and is
    /// not set again; elsewhere this is `apply`.
    ///
    /// # Errors
    /// The `setsockopt` error.
    pub fn apply_accepted<S: std::os::fd::AsFd>(&self, socket: &S) -> io::Result<()> {
        if !cfg!(target_os = "linux") {
            return self.apply(socket);
        }
        self.apply_all_but_nodelay(&SockRef::from(socket))
    }

    fn apply_all_but_nodelay(&self, sock: &SockRef<'_>) -> io::Result<()> {
        // New sockets start without keepalive: skip a syscall per connection in that case.
        if self.keepalive.0.is_some() {
            set_keepalive(sock, self.keepalive)?;
        }
        if let Some(n) = self.rcvbuf.0 {
            sock.set_recv_buffer_size(n)?;
        }
        if let Some(n) = self.sndbuf.0 {
            sock.set_send_buffer_size(n)?;
        }
        Ok(())
    }
}

/// Sets SO_KEEPALIVE (and TCP_KEEPIDLE) on `sock`.
///
/// # Errors
/// The `setsockopt` error.
pub fn set_keepalive(sock: &Socket, keepalive: Keepalive) -> io::Result<()> {
    match keepalive.0 {
        None => sock.set_keepalive(false),
        Some(idle) => {
            let idle = idle.max(Duration::from_secs(1));
            sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))
        }
    }
}

/// Sets IP_FREEBIND (IPv4 sockets) or IPV6_FREEBIND (IPv6 sockets) on `sock`.
///
/// # Errors
/// The `setsockopt` error; [`io::ErrorKind::Unsupported`] off Linux when `on`.
pub fn set_freebind(sock: &Socket, ipv6: bool, on: FreeBind) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if ipv6 {
            sock.set_freebind_ipv6(on.0)
        } else {
            sock.set_freebind(on.0)
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (sock, ipv6);
        if on.0 {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "IP_FREEBIND is Linux-only",
            ))
        } else {
            Ok(())
        }
    }
}

/// Which address of the client connections to backends leave from (HAProxy `source
/// 0.0.0.0 usesrc …`, Linux transparent proxying): [`crate::tcp::TcpProxyConfig::usesrc`],
/// [`crate::udp::UdpProxyConfig::usesrc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseSrc {
    /// HAProxy `usesrc clientip`: the client's IP address, a port of the kernel's choice.
    ClientIp,
    /// HAProxy `usesrc client`: the client's IP address and port.
    Client,
}

impl UseSrc {
    /// The local address for a connection of `client` to `backend`: the client's IP (an
    /// IPv4 client of a dual-stack listener, `::ffff:a.b.c.d`, as IPv4) with port 0
    /// (`ClientIp`) or the client's port.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] when the client is not of the backend's family.
    pub fn bind_addr(self, client: SocketAddr, backend: SocketAddr) -> io::Result<SocketAddr> {
        let ip = client.ip().to_canonical();
        if ip.is_ipv4() != backend.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("usesrc: client {ip} is not of backend {backend}'s address family"),
            ));
        }
        let port = match self {
            Self::ClientIp => 0,
            Self::Client => client.port(),
        };
        Ok(SocketAddr::new(ip, port))
    }
}

/// Makes `sock` able to bind a client's (non-local) address for `usesrc`: IP_TRANSPARENT
/// (which also covers IPv6 sockets on Linux); with [`UseSrc::Client`] also SO_REUSEADDR,
/// as HAProxy sets it: the client's address and port may be bound by another connection of
/// the proxy (to another backend), and the four-tuple is what must be unique. Not with
/// [`UseSrc::ClientIp`]: a port the kernel picks for a SO_REUSEADDR socket may be one
/// another such socket holds, and two UDP sessions of one client to one backend would
/// then share an address pair (one getting the other's replies).
///
/// # Errors
/// The `setsockopt` error (`EPERM` without `CAP_NET_ADMIN` or `CAP_NET_RAW`);
/// [`io::ErrorKind::Unsupported`] off Linux.
pub fn set_transparent(sock: &SockRef<'_>, usesrc: UseSrc) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        sock.set_ip_transparent(true)?;
        if usesrc == UseSrc::Client {
            sock.set_reuse_address(true)?;
        }
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (sock, usesrc);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IP_TRANSPARENT is Linux-only",
        ))
    }
}

/// Whether this process may use [`set_transparent`]: checked on a scratch socket when a
/// proxy with `usesrc` starts, so that a missing capability fails the start, not every
/// connection.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) for `usesrc`, naming the capability.
pub(crate) fn check_transparent() -> crate::Result<()> {
    let check = || -> io::Result<()> {
        let s = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        set_transparent(&SockRef::from(&s), UseSrc::Client)
    };
    check().map_err(|e| crate::Error::Config {
        setting: "usesrc",
        reason: format!("IP_TRANSPARENT refused (it needs CAP_NET_ADMIN or CAP_NET_RAW): {e}"),
    })
}

/// Sets SO_REUSEPORT on `sock`.
///
/// # Errors
/// The `setsockopt` error; [`io::ErrorKind::Unsupported`] where the option does not exist.
pub fn set_reuseport(sock: &Socket, on: ReusePort) -> io::Result<()> {
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    {
        sock.set_reuse_port(on.0)
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    {
        let _ = sock;
        if on.0 {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SO_REUSEPORT unsupported",
            ))
        } else {
            Ok(())
        }
    }
}

/// Bytes written to the TCP socket `fd` that its peer has not acknowledged yet (Linux
/// `SIOCOUTQ`: unsent plus unacknowledged bytes). A writer blocked on a peer that reads
/// slowly sees this fall as the peer takes data, long before the socket reports writable
/// again (a third of its send buffer free): how the idle timeout tells a slow reader from
/// a stalled one.
///
/// # Errors
/// The `ioctl`'s error; [`io::ErrorKind::Unsupported`] off Linux.
pub(crate) fn unacked_bytes(fd: &impl std::os::fd::AsFd) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one `int` through the pointer, which points
        // to a live local; the descriptor is borrowed, so open, for the call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u32::try_from(n).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};

    #[test]
    fn freebind_binds_an_address_we_do_not_own() {
        // 192.0.2.0/24 is TEST-NET-1: never configured on this host.
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        set_freebind(&s, false, FreeBind(true)).unwrap();
        // Port 0: concurrent test processes must not collide.
        let addr: SocketAddr = "192.0.2.250:0".parse().unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(16).unwrap();
        assert_eq!(s.local_addr().unwrap().as_socket().unwrap().ip(), addr.ip());

        let plain = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        assert!(
            plain.bind(&addr.into()).is_err(),
            "EADDRNOTAVAIL without freebind"
        );
    }

    /// TCP_NODELAY set on a listener reaches the sockets it accepts (Linux), in both
    /// settings: `apply_accepted` relies on it.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        for on in [true, false] {
            let opts = StreamOptions {
                nodelay: NoDelay(on),
                ..StreamOptions::default()
            };
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // The opposite first, so the test sees the listener's setting, not a default.
            SockRef::from(&l).set_nodelay(!on).unwrap();
            opts.apply_listener(&l).unwrap();
            let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (a, _) = l.accept().unwrap();
            opts.apply_accepted(&a).unwrap();
            assert_eq!(a.nodelay().unwrap(), on);
        }
    }

    #[test]
    fn keepalive_and_nodelay_apply() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        StreamOptions {
            keepalive: Keepalive(Some(Duration::from_secs(30))),
            nodelay: NoDelay(true),
            rcvbuf: BufferSize(Some(64 * 1024)),
            sndbuf: BufferSize(Some(96 * 1024)),
        }
        .apply(&s)
        .unwrap();
        let r = SockRef::from(&s);
        assert!(r.keepalive().unwrap());
        assert_eq!(r.keepalive_time().unwrap(), Duration::from_secs(30));
        assert!(r.nodelay().unwrap());
        // Linux doubles the requested size (socket(7)).
        assert_eq!(r.recv_buffer_size().unwrap(), 128 * 1024);
        assert_eq!(r.send_buffer_size().unwrap(), 192 * 1024);
    }
}
