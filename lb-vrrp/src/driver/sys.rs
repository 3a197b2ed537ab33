//! The only `unsafe` code of the crate: socket options socket2 does not wrap, `recvmsg`
//! control messages (IPv6 hop limit and destination), and `sendto` on AF_PACKET.
//!
//! # Platform support
//!
//! Linux only.

use std::io;
use std::mem;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::Socket;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call;
    // the option value points to a live `c_int` whose exact size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for the hop limit and destination of received IPv6 packets as control messages
/// (`IPV6_RECVHOPLIMIT`, `IPV6_RECVPKTINFO`).
pub(crate) fn enable_v6_rx_info(sock: &Socket) -> io::Result<()> {
    setsockopt_int(
        sock.as_raw_fd(),
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVHOPLIMIT,
        1,
    )?;
    setsockopt_int(
        sock.as_raw_fd(),
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVPKTINFO,
        1,
    )
}

/// One received IPv6 datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct V6RxInfo {
    pub(crate) len: usize,
    pub(crate) src: Ipv6Addr,
    pub(crate) dst: Option<Ipv6Addr>,
    pub(crate) hop_limit: Option<u8>,
}

/// `recvmsg` on a raw IPv6 socket, returning the payload length, source, and the
/// destination and hop limit from the control messages.
pub(crate) fn recv_v6(sock: &Socket, buf: &mut [u8]) -> io::Result<V6RxInfo> {
    // u64 array: control buffer aligned for cmsghdr.
    let mut control = [0u64; 32];
    #[allow(unsafe_code)]
    // SAFETY: all-zero is a valid `sockaddr_in6` and `msghdr` (plain C structs).
    let (mut src, mut msg): (libc::sockaddr_in6, libc::msghdr) =
        unsafe { (mem::zeroed(), mem::zeroed()) };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    msg.msg_name = (&mut src as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    #[allow(unsafe_code)]
    // SAFETY: `msg` points to `src`, `iov` (which covers exactly `buf`) and `control`,
    // all alive and exclusively borrowed for this call; lengths are their real sizes.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut info = V6RxInfo {
        len: n as usize,
        src: Ipv6Addr::from(src.sin6_addr.s6_addr),
        dst: None,
        hop_limit: None,
    };
    #[allow(unsafe_code)]
    // SAFETY: `msg` was filled by a successful recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR walk the
    // kernel-written control buffer within `msg_controllen` and return null at its end.
    // Each payload is read with read_unaligned from inside its cmsg, after checking the
    // cmsg's level/type, whose payload layout the kernel defines (c_int / in6_pktinfo).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 {
                if c.cmsg_type == libc::IPV6_HOPLIMIT {
                    let v: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    info.hop_limit = u8::try_from(v).ok();
                } else if c.cmsg_type == libc::IPV6_PKTINFO {
                    let pi: libc::in6_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    info.dst = Some(Ipv6Addr::from(pi.ipi6_addr.s6_addr));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(info)
}

/// Sends one Ethernet `frame` (with its own header) out of interface `ifindex` on an
/// AF_PACKET socket, to the broadcast address. Used for gratuitous ARP.
pub(crate) fn send_packet(
    sock: &Socket,
    ifindex: u32,
    ethertype: u16,
    frame: &[u8],
) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: all-zero is a valid `sockaddr_ll` (plain C struct).
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    #[allow(unsafe_code)]
    // SAFETY: `frame` is a live slice whose pointer and length we pass; `sll` is a live,
    // initialised sockaddr_ll and we pass its exact size; the fd is owned by `sock`.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A type that owns one file descriptor for its whole life and whose `as_raw_fd()` always
/// returns it: what [`tokio::io::unix::AsyncFd::register`] asks of its argument.
pub(crate) trait OwnsFd: AsRawFd {}
impl OwnsFd for Socket {}
impl OwnsFd for netlink_sys::Socket {}
impl OwnsFd for super::track::InotifyFd {}
impl OwnsFd for super::track::Connector {}

/// Registers `sock` with the tokio reactor.
pub(crate) fn async_socket(sock: Socket) -> io::Result<tokio::io::unix::AsyncFd<Socket>> {
    async_fd(sock)
}

/// Registers `fd` with the tokio reactor.
pub(crate) fn async_fd<T: OwnsFd>(fd: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    #[allow(unsafe_code)]
    // SAFETY: every `OwnsFd` type owns its file descriptor (`socket2::Socket` and
    // `netlink_sys::Socket` close theirs on drop, `Connector` holds a `netlink_sys::Socket`,
    // `InotifyFd` holds nix's `Inotify`, an `OwnedFd`): it stays open and `as_raw_fd()` returns the same descriptor until the
    // `AsyncFd` drops the owner.
    let r = unsafe { tokio::io::unix::AsyncFd::register(fd) };
    r.map_err(|e| e.into_parts().1)
}
