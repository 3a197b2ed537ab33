//! Listening sockets for virtual servers: TCP and UDP, IPv4 and IPv6, with non-local bind
//! (a VRRP backup listens on the VIP before it holds it) and `SO_REUSEPORT` acceptors.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::listener::{bind_tcp, ListenOptions};
//! use lb_proxy::sockopt::ReusePort;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> lb_proxy::Result<()> {
//! let opts = ListenOptions { reuseport: ReusePort(true), ..ListenOptions::default() };
//! let a = bind_tcp("127.0.0.1:0".parse().unwrap(), &opts)?;
//! // A second acceptor on the same address, the kernel balancing between them.
//! let b = bind_tcp(a.local_addr()?, &opts)?;
//! assert_eq!(a.local_addr()?, b.local_addr()?);
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::sockopt::{set_freebind, set_reuseport, FreeBind, ReusePort};

/// How to create a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// IP_FREEBIND / IPV6_FREEBIND (default `true`: a backup node binds the VIP before VRRP
    /// gives it the address, so it serves the instant it becomes master).
    pub freebind: FreeBind,
    /// SO_REUSEPORT (default `false`). Needed to bind several acceptors to one address.
    pub reuseport: ReusePort,
    /// `listen(2)` backlog, in connections (default 1024; the kernel caps it at
    /// `net.core.somaxconn`).
    pub backlog: u32,
    /// IPV6_V6ONLY on IPv6 listeners (default `false`: `[::]:80` also takes IPv4 clients as
    /// v4-mapped addresses).
    pub v6only: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            freebind: FreeBind(true),
            reuseport: ReusePort(false),
            backlog: 1024,
            v6only: false,
        }
    }
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol, opts: &ListenOptions) -> Result<Socket> {
    let bind_err = |source| Error::Bind { addr, source };
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto)).map_err(bind_err)?;
    if addr.is_ipv6() {
        sock.set_only_v6(opts.v6only).map_err(bind_err)?;
    }
    if ty == Type::STREAM {
        sock.set_reuse_address(true).map_err(bind_err)?;
    }
    set_reuseport(&sock, opts.reuseport).map_err(bind_err)?;
    set_freebind(&sock, addr.is_ipv6(), opts.freebind).map_err(bind_err)?;
    sock.set_nonblocking(true).map_err(bind_err)?;
    sock.set_cloexec(true).map_err(bind_err)?;
    sock.bind(&addr.into()).map_err(bind_err)?;
    Ok(sock)
}

/// Binds a TCP listener on `addr`.
///
/// Must be called inside a tokio runtime (the socket is registered with its reactor).
///
/// # Errors
/// [`Error::Bind`] with the failing system call's error (EADDRINUSE without `reuseport`,
/// EADDRNOTAVAIL for a foreign address without `freebind`, EACCES for ports below 1024).
pub fn bind_tcp(addr: SocketAddr, opts: &ListenOptions) -> Result<tokio::net::TcpListener> {
    let sock = socket(addr, Type::STREAM, Protocol::TCP, opts)?;
    let backlog = i32::try_from(opts.backlog).unwrap_or(i32::MAX);
    sock.listen(backlog)
        .map_err(|source| Error::Bind { addr, source })?;
    tokio::net::TcpListener::from_std(sock.into()).map_err(|source| Error::Bind { addr, source })
}

/// Binds a UDP socket on `addr` (same options as [`bind_tcp`]; `backlog` is unused).
///
/// # Errors
/// [`Error::Bind`].
pub fn bind_udp(addr: SocketAddr, opts: &ListenOptions) -> Result<tokio::net::UdpSocket> {
    let sock = socket(addr, Type::DGRAM, Protocol::UDP, opts)?;
    tokio::net::UdpSocket::from_std(sock.into()).map_err(|source| Error::Bind { addr, source })
}

/// Binds `count` TCP acceptors on `addr` with SO_REUSEPORT (forced on when `count > 1`).
/// A port 0 is resolved by the first socket and reused by the others.
///
/// # Errors
/// [`Error::Bind`].
pub fn bind_tcp_acceptors(
    addr: SocketAddr,
    count: usize,
    opts: &ListenOptions,
) -> Result<Vec<tokio::net::TcpListener>> {
    let mut opts = *opts;
    if count > 1 {
        opts.reuseport = ReusePort(true);
    }
    let first = bind_tcp(addr, &opts)?;
    let actual = first
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let mut all = vec![first];
    for _ in 1..count.max(1) {
        all.push(bind_tcp(actual, &opts)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv6_and_foreign_vip() {
        let l = bind_tcp("[::1]:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        assert!(l.local_addr().unwrap().is_ipv6());
        // A VIP this host does not hold (TEST-NET-2), like a VRRP backup before failover.
        let vip = bind_tcp(
            "198.51.100.250:0".parse().unwrap(),
            &ListenOptions::default(),
        )
        .unwrap();
        assert_eq!(
            vip.local_addr().unwrap().ip(),
            "198.51.100.250".parse::<std::net::IpAddr>().unwrap()
        );
        let no_freebind = ListenOptions {
            freebind: FreeBind(false),
            ..ListenOptions::default()
        };
        assert!(matches!(
            bind_tcp("198.51.100.251:0".parse().unwrap(), &no_freebind),
            Err(Error::Bind { .. })
        ));
        let acceptors =
            bind_tcp_acceptors("127.0.0.1:0".parse().unwrap(), 3, &ListenOptions::default())
                .unwrap();
        assert_eq!(acceptors.len(), 3);
        let u = bind_udp("[::1]:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        assert!(u.local_addr().unwrap().is_ipv6());
    }
}
