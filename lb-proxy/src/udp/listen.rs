//! A UDP listening socket that answers from the address each client wrote to.
//!
//! A socket bound to one address (a VIP) replies from it. A socket bound to a wildcard
//! address (`0.0.0.0:53`, `[::]:53`) receives datagrams for every local address, and a plain
//! `sendto` from it leaves from whichever address routing picks for the client — a host's
//! primary address, not the VIP the client wrote to — so a client that connected its socket
//! to the VIP drops the reply. On such a socket each datagram's destination is read from
//! `IP_PKTINFO` / `IPV6_PKTINFO` (ip(7), ipv6(7); `IPV6_RECVPKTINFO`, RFC 3542 §6) and the
//! replies carry it back as their source, as `dnsmasq` and `unbound` do on wildcard sockets.
//! An IPv4 datagram on a dual-stack `[::]` socket gets `IP_PKTINFO`; its addresses are
//! written IPv4-mapped, as the kernel writes the client's.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A listening socket, and where its datagrams' destinations come from.
#[derive(Debug)]
pub(super) struct ListenSocket {
    socket: UdpSocket,
    /// The bound address.
    bound: SocketAddr,
    /// Bound to a wildcard address: destinations come from packet info.
    wildcard: bool,
}

impl ListenSocket {
    /// Wraps a bound socket; on a wildcard address, turns on packet info (`IP_PKTINFO`, and
    /// `IPV6_RECVPKTINFO` for IPv6, where `IP_PKTINFO` covers IPv4 datagrams on a dual-stack
    /// socket).
    ///
    /// # Errors
    /// The socket has no local address, or packet info cannot be turned on (for an IPv6
    /// socket, only `IPV6_RECVPKTINFO` must succeed: `IP_PKTINFO` is refused on a v6-only
    /// socket, which receives no IPv4 anyway).
    pub(super) fn new(socket: UdpSocket) -> io::Result<Self> {
        let bound = socket.local_addr()?;
        let wildcard = bound.ip().is_unspecified();
        if wildcard {
            match bound {
                SocketAddr::V4(_) => setsockopt(&socket.as_fd(), sockopt::Ipv4PacketInfo, &true)?,
                SocketAddr::V6(_) => {
                    setsockopt(&socket.as_fd(), sockopt::Ipv6RecvPacketInfo, &true)?;
                    let _ = setsockopt(&socket.as_fd(), sockopt::Ipv4PacketInfo, &true);
                }
            }
        }
        Ok(Self {
            socket,
            bound,
            wildcard,
        })
    }

    /// The bound address.
    pub(super) fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// A control-message buffer for [`ListenSocket::recv`], room for one `in_pktinfo` and one
    /// `in6_pktinfo` (72 bytes): made once per receive loop, not per datagram.
    pub(super) fn cmsg_buffer() -> Vec<u8> {
        nix::cmsg_space!(libc::in_pktinfo, libc::in6_pktinfo)
    }

    /// Receives one datagram into `buf`, packet info into `cmsgs` (from
    /// [`ListenSocket::cmsg_buffer`]): its length (a longer datagram is truncated to
    /// `buf`: callers give one byte more than they accept), the client, and the local address it was sent to (the bound address, or on a
    /// wildcard socket the datagram's destination; an IPv6 link-local one carries the
    /// arrival interface as its scope).
    ///
    /// # Cancel safety
    /// Cancel safe: a datagram is either returned or left in the socket.
    ///
    /// # Errors
    /// The receive's (`ECONNREFUSED` for an ICMP error about an earlier reply).
    pub(super) async fn recv(
        &self,
        buf: &mut [u8],
        cmsgs: &mut Vec<u8>,
    ) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        if !self.wildcard {
            let (n, client) = self.socket.recv_from(buf).await?;
            return Ok((n, client, self.bound));
        }
        self.socket
            .async_io(Interest::READABLE, || {
                let fd = self.socket.as_raw_fd();
                let mut iov = [IoSliceMut::new(buf)];
                let msg =
                    recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut *cmsgs), MsgFlags::empty())?;
                let client = msg
                    .address
                    .as_ref()
                    .and_then(to_std)
                    .ok_or_else(|| io::Error::other("datagram without a source address"))?;
                let mut local = self.bound;
                for cmsg in msg.cmsgs()? {
                    if let Some(ip) = destination(&cmsg, self.bound.is_ipv6()) {
                        local = ip;
                    }
                }
                Ok((msg.bytes, client, with_port(local, self.bound.port())))
            })
            .await
    }

    /// Sends `datagram` to `client` from `local` (an address [`ListenSocket::recv`]
    /// returned).
    ///
    /// # Errors
    /// The send's (`EINVAL` when `local` is no longer this host's: a VIP that moved away).
    pub(super) async fn send(
        &self,
        datagram: &[u8],
        client: SocketAddr,
        local: SocketAddr,
    ) -> io::Result<usize> {
        if !self.wildcard || local.ip().is_unspecified() {
            return self.socket.send_to(datagram, client).await;
        }
        let to = SockaddrStorage::from(client);
        let v4;
        let v6;
        let cmsg = match local {
            SocketAddr::V4(a) => {
                v4 = in_pktinfo(*a.ip());
                ControlMessage::Ipv4PacketInfo(&v4)
            }
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(ip) => {
                    v4 = in_pktinfo(ip);
                    ControlMessage::Ipv4PacketInfo(&v4)
                }
                None => {
                    v6 = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: a.ip().octets(),
                        },
                        ipi6_ifindex: a.scope_id(),
                    };
                    ControlMessage::Ipv6PacketInfo(&v6)
                }
            },
        };
        self.socket
            .async_io(Interest::WRITABLE, || {
                let fd = self.socket.as_raw_fd();
                Ok(sendmsg(
                    fd,
                    &[IoSlice::new(datagram)],
                    std::slice::from_ref(&cmsg),
                    MsgFlags::empty(),
                    Some(&to),
                )?)
            })
            .await
    }
}

/// Packet info that sets a datagram's source address; routing picks the interface.
fn in_pktinfo(source: Ipv4Addr) -> libc::in_pktinfo {
    libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    }
}

/// The local address a datagram was received on, from its packet info, written as the
/// socket's family writes addresses (IPv4-mapped on an IPv6 socket). Port 0.
fn destination(cmsg: &ControlMessageOwned, v6_socket: bool) -> Option<SocketAddr> {
    match cmsg {
        ControlMessageOwned::Ipv4PacketInfo(info) => {
            // ip(7): ipi_spec_dst is the local address the datagram was received on (for a
            // broadcast, the interface's address, which a reply can leave from).
            let ip = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            Some(if v6_socket {
                SocketAddr::V6(SocketAddrV6::new(ip.to_ipv6_mapped(), 0, 0, 0))
            } else {
                SocketAddr::V4(SocketAddrV4::new(ip, 0))
            })
        }
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            let ip = std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr);
            let scope = if ip.is_unicast_link_local() {
                info.ipi6_ifindex
            } else {
                0
            };
            Some(SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, scope)))
        }
        _ => None,
    }
}

fn with_port(mut addr: SocketAddr, port: u16) -> SocketAddr {
    addr.set_port(port);
    addr
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())));
    }
    let a = addr.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        a.ip(),
        a.port(),
        a.flowinfo(),
        a.scope_id(),
    )))
}
