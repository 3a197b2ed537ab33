//! [`BfdSpeaker`]: the thin tokio driver that runs every BFD [`Session`] over UDP
//! ([RFC 5881]).
//!
//! * One receive socket per address family in use, on UDP port 3784, bound to the
//!   sessions' common `source_ip` when they share one, else to the wildcard address.
//! * One send socket per session, bound to its `source_ip` (or the wildcard address) and a
//!   source port in 49152–65535 ([RFC 5881 §4]), sending with the configured TTL (IPv4)
//!   or hop limit (IPv6).
//! * One task ([`BfdSpeaker::run`]) drives all sessions: it receives, demultiplexes by Your
//!   Discriminator when it is non-zero and by source address otherwise, feeds the
//!   sessions, sends what they return and sleeps until the earliest
//!   [`Session::poll_timeout`]. The clock is `tokio::time::Instant`, so paused-time tests
//!   work.
//! * Each instance publishes a [`SessionStatus`] on a `tokio::sync::watch`
//!   ([`BfdSpeaker::subscribe`]); receivers are woken on a change of state or diagnostic
//!   (counters update silently). State changes are logged with `tracing`.
//!
//! # TTL / hop limit check
//!
//! [RFC 5881 §5] (GTSM) as keepalived extends it with `max_hops`
//! ([`BfdConfig::accepts_ttl`]): a packet whose TTL (IPv4) or hop limit (IPv6) is below
//! `ttl`/`hoplimit` minus `max_hops` is dropped. The kernel does the comparison: each
//! receive socket carries a classic BPF filter (socket2 `attach_filter`) that cuts such a
//! packet down to its UDP header, so it arrives with an empty payload, which the driver
//! counts as [`Discard::BadTtl`] for the session of its source address. Reading the TTL in
//! user space would need `IP_RECVTTL`/`IPV6_RECVHOPLIMIT` control messages, which neither
//! nix 0.29 nor socket2 0.5 parse without `unsafe` (forbidden in this crate). One filter
//! serves every session of a family, so when their `ttl`/`hoplimit`/`max_hops` differ, the
//! most lenient applies to all; a genuinely empty datagram to port 3784 is also counted as
//! a TTL drop.
//!
//! # Platform support
//!
//! Linux (`SO_ATTACH_FILTER`, `IP_PKTINFO`).
//!
//! # Examples
//!
//! ```no_run
//! use lb_health::bfd::{BfdConfig, BfdSpeaker, SessionState};
//!
//! # async fn demo() -> Result<(), lb_health::Error> {
//! let mut cfg = BfdConfig::new("198.18.0.2".parse().unwrap());
//! cfg.source_ip = Some("198.18.0.1".parse().unwrap());
//! let speaker = BfdSpeaker::new(vec![("peer".to_string(), cfg)])?;
//! let mut status = speaker.subscribe("peer").unwrap();
//! let handle = speaker.handle();
//! let task = tokio::spawn(speaker.run());
//! status.wait_for(|s| s.state == SessionState::Up).await.ok();
//! handle.shutdown(); // AdminDown to the peer, then `run` returns
//! task.await.ok();
//! # Ok(())
//! # }
//! ```
//!
//! [RFC 5881]: https://www.rfc-editor.org/rfc/rfc5881
//! [RFC 5881 §4]: https://www.rfc-editor.org/rfc/rfc5881#section-4
//! [RFC 5881 §5]: https://www.rfc-editor.org/rfc/rfc5881#section-5

use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage,
};
use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::config::BfdConfig;
use super::packet::{ControlPacket, CONTROL_PORT, SOURCE_PORTS};
use super::session::{Discard, Session, SessionStatus};
use crate::error::{Error, Result};

/// Times an AdminDown packet is sent on [`BfdHandle::shutdown`]: one would do on a quiet
/// link; three survive a lost datagram.
const ADMIN_DOWN_COPIES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Shutdown,
    Stop,
}

/// Counters of packets no session could be charged with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeakerCounters {
    /// Valid packets from an address no session has as its neighbor, or with a Your
    /// Discriminator no session owns.
    pub unknown_peer: u64,
    /// Malformed datagrams from an address no session has as its neighbor.
    pub malformed_unknown: u64,
    /// Packets with a TTL / hop limit too low from an address no session has as its
    /// neighbor.
    pub bad_ttl_unknown: u64,
    /// Receive errors from the sockets.
    pub receive_errors: u64,
}

#[derive(Debug, Default)]
struct SharedCounters {
    unknown_peer: AtomicU64,
    malformed_unknown: AtomicU64,
    bad_ttl_unknown: AtomicU64,
    receive_errors: AtomicU64,
}

/// A cloneable handle to a running (or not yet running) [`BfdSpeaker`].
#[derive(Debug, Clone)]
pub struct BfdHandle {
    control: Arc<watch::Sender<Control>>,
    counters: Arc<SharedCounters>,
}

impl BfdHandle {
    /// Takes every session AdminDown ([RFC 5880 §6.8.16]), sends AdminDown packets so that
    /// each peer goes Down with "Neighbor Signaled Session Down" at once, then makes
    /// [`BfdSpeaker::run`] return.
    ///
    /// [RFC 5880 §6.8.16]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.16
    pub fn shutdown(&self) {
        self.control.send_replace(Control::Shutdown);
    }

    /// Makes [`BfdSpeaker::run`] return without telling the peers (they see the detection
    /// time expire): for a reload that rebuilds the speaker.
    pub fn stop(&self) {
        self.control.send_replace(Control::Stop);
    }

    /// Packets no session could be charged with.
    pub fn counters(&self) -> SpeakerCounters {
        SpeakerCounters {
            unknown_peer: self.counters.unknown_peer.load(Ordering::Relaxed),
            malformed_unknown: self.counters.malformed_unknown.load(Ordering::Relaxed),
            bad_ttl_unknown: self.counters.bad_ttl_unknown.load(Ordering::Relaxed),
            receive_errors: self.counters.receive_errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Instance {
    name: String,
    session: Session,
    socket: StdUdpSocket,
    dest: SocketAddr,
    status: watch::Sender<SessionStatus>,
}

/// Every `bfd_instance` of a node: sockets bound, sessions Down, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct BfdSpeaker {
    instances: Vec<Instance>,
    rx4: Option<StdUdpSocket>,
    rx6: Option<StdUdpSocket>,
    /// Whether the IPv4 / IPv6 receive socket carries the TTL filter.
    ttl_filtered: [bool; 2],
    handle: BfdHandle,
}

fn socket_error(what: String, e: &io::Error) -> Error {
    Error::Socket {
        what,
        reason: e.to_string(),
    }
}

fn in_instance(instance: &str, e: Error) -> Error {
    Error::BfdInstance {
        instance: instance.to_owned(),
        source: Box::new(e),
    }
}

fn unspecified(v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

fn new_udp(v4: bool) -> io::Result<Socket> {
    let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if !v4 {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The send socket of one session: source port in 49152–65535 (RFC 5881 §4), starting at
/// a random one and trying the next on `EADDRINUSE`, as keepalived does.
fn bind_send_socket(cfg: &BfdConfig) -> Result<StdUdpSocket> {
    let v4 = cfg.neighbor_ip.is_ipv4();
    let sock = new_udp(v4).map_err(|e| socket_error("socket".into(), &e))?;
    if v4 {
        sock.set_ttl(u32::from(cfg.ttl))
            .map_err(|e| socket_error(format!("set IP_TTL {}", cfg.ttl), &e))?;
    } else {
        sock.set_unicast_hops_v6(u32::from(cfg.hoplimit))
            .map_err(|e| socket_error(format!("set IPV6_UNICAST_HOPS {}", cfg.hoplimit), &e))?;
    }
    let ip = cfg.source_ip.unwrap_or_else(|| unspecified(v4));
    let (lo, hi) = (*SOURCE_PORTS.start(), *SOURCE_PORTS.end());
    let span = u32::from(hi - lo) + 1;
    let first = rand::thread_rng().gen_range(0..span);
    let mut last_err = None;
    for i in 0..span {
        let port = lo + u16::try_from((first + i) % span).unwrap_or(0);
        match sock.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => return Ok(sock.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(socket_error(format!("bind {ip}:{port}"), &e)),
        }
    }
    let e = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse));
    Err(socket_error(format!("bind {ip}:{lo}-{hi}"), &e))
}

/// The lowest TTL / hop limit the sessions `family` accept, `None` when one of them does
/// not check (`max_hops` 255) or it would be 0.
fn ttl_floor<'a>(family: impl Iterator<Item = &'a BfdConfig>) -> Option<u8> {
    family
        .map(|c| {
            if c.max_hops == u8::MAX {
                0
            } else {
                c.tx_ttl().saturating_sub(c.max_hops)
            }
        })
        .min()
        .filter(|&floor| floor > 0)
}

/// A classic BPF program for a UDP socket: a packet whose TTL (IPv4 header byte 8) or hop
/// limit (IPv6 header byte 7) is below `floor` is cut down to its 8-byte UDP header (the
/// least the kernel keeps), anything else passes whole.
fn ttl_filter(v4: bool, floor: u8) -> [nix::libc::sock_filter; 4] {
    // linux/filter.h: BPF_LD|BPF_B|BPF_ABS, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
    const LDB_ABS: u16 = 0x30;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const UDP_HEADER: u32 = 8;
    let field = if v4 { 8 } else { 7 };
    // A negative offset from SKF_NET_OFF reads the network header; the kernel takes the
    // two's complement bit pattern as `k`.
    let k = u32::from_ne_bytes((nix::libc::SKF_NET_OFF + field).to_ne_bytes());
    let op = |code, jt, jf, k| nix::libc::sock_filter { code, jt, jf, k };
    [
        op(LDB_ABS, 0, 0, k),
        op(JGE_K, 1, 0, u32::from(floor)),
        op(RET_K, 0, 0, UDP_HEADER),
        op(RET_K, 0, 0, u32::MAX),
    ]
}

/// The receive socket of one family on port 3784, with `IP_PKTINFO` /
/// `IPV6_RECVPKTINFO` so that a packet's destination address is known, and the TTL
/// filter when `floor` is set.
fn bind_receive_socket(ip: IpAddr, names: &[&str], floor: Option<u8>) -> Result<StdUdpSocket> {
    let addr = SocketAddr::new(ip, CONTROL_PORT);
    let what = |op: &str| format!("{op} {addr} (bfd_instance {})", names.join(", "));
    let sock = new_udp(ip.is_ipv4()).map_err(|e| socket_error(what("socket"), &e))?;
    let pktinfo = if ip.is_ipv4() {
        setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)
    } else {
        setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
    };
    pktinfo.map_err(|e| socket_error(what("set IP_PKTINFO on"), &e.into()))?;
    if let Some(floor) = floor {
        sock.attach_filter(&ttl_filter(ip.is_ipv4(), floor))
            .map_err(|e| socket_error(what("attach the TTL filter to"), &e))?;
    }
    sock.bind(&addr.into())
        .map_err(|e| socket_error(what("bind"), &e))?;
    Ok(sock.into())
}

impl BfdSpeaker {
    /// Validates `instances` (name and settings) and binds every socket. Sessions start
    /// Down, each with a random non-zero discriminator of its own.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateBfdInstance`] for a name, or a neighbor and source pair, given
    /// twice; [`Error::BfdInstance`] naming the instance whose settings are refused
    /// ([`BfdConfig::validate`]) or whose send socket cannot be bound; [`Error::Socket`]
    /// when UDP port 3784 cannot be bound (it names the instances that need it).
    pub fn new(instances: Vec<(String, BfdConfig)>) -> Result<Self> {
        let mut names = HashSet::new();
        let mut pairs = HashSet::new();
        for (name, cfg) in &instances {
            if !names.insert(name.clone()) || !pairs.insert((cfg.neighbor_ip, cfg.source_ip)) {
                return Err(Error::DuplicateBfdInstance(name.clone()));
            }
            cfg.validate().map_err(|e| in_instance(name, e))?;
        }
        let mut rx = [None, None];
        let mut filtered = [false, false];
        for (slot, v4) in [(0, true), (1, false)] {
            let family: Vec<&(String, BfdConfig)> = instances
                .iter()
                .filter(|(_, c)| c.neighbor_ip.is_ipv4() == v4)
                .collect();
            let Some((_, first)) = family.first() else {
                continue;
            };
            let common = first
                .source_ip
                .filter(|s| family.iter().all(|(_, c)| c.source_ip == Some(*s)));
            let names: Vec<&str> = family.iter().map(|(n, _)| n.as_str()).collect();
            let floor = ttl_floor(family.iter().map(|(_, c)| c));
            filtered[slot] = floor.is_some();
            rx[slot] = Some(bind_receive_socket(
                common.unwrap_or_else(|| unspecified(v4)),
                &names,
                floor,
            )?);
        }
        let [rx4, rx6] = rx;
        let [ttl_filter4, ttl_filter6] = filtered;
        let now = tokio::time::Instant::now().into_std();
        let mut rng = rand::thread_rng();
        let mut discriminators = HashSet::new();
        let mut built = Vec::with_capacity(instances.len());
        for (name, cfg) in instances {
            let socket = bind_send_socket(&cfg).map_err(|e| in_instance(&name, e))?;
            let discr = loop {
                if let Some(d) = NonZeroU32::new(rng.gen()) {
                    if discriminators.insert(d) {
                        break d;
                    }
                }
            };
            let dest = SocketAddr::new(cfg.neighbor_ip, CONTROL_PORT);
            let session = Session::new(cfg, discr, rng.gen(), now);
            let (status, _) = watch::channel(session.status());
            built.push(Instance {
                name,
                session,
                socket,
                dest,
                status,
            });
        }
        let (control, _) = watch::channel(Control::Run);
        Ok(Self {
            instances: built,
            rx4,
            rx6,
            ttl_filtered: [ttl_filter4, ttl_filter6],
            handle: BfdHandle {
                control: Arc::new(control),
                counters: Arc::default(),
            },
        })
    }

    /// The status of instance `name`, updated while [`run`](Self::run) runs (initially
    /// Down). `None` for an unknown name.
    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<SessionStatus>> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.status.subscribe())
    }

    /// The local address of instance `name`'s send socket (its source port is in
    /// 49152–65535).
    pub fn source_addr(&self, name: &str) -> Option<SocketAddr> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.socket.local_addr().ok())
    }

    /// A handle to shut the speaker down or stop it, usable before and during
    /// [`run`](Self::run).
    pub fn handle(&self) -> BfdHandle {
        self.handle.clone()
    }

    /// Drives every session until [`BfdHandle::shutdown`] or [`BfdHandle::stop`].
    ///
    /// # Errors
    ///
    /// [`Error::Socket`] if a socket cannot be registered with the tokio reactor (no
    /// runtime with IO enabled). Receive and send errors are logged and counted, never
    /// fatal.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the sockets without telling the peers, like
    /// [`BfdHandle::stop`].
    pub async fn run(self) -> Result<()> {
        let Self {
            instances,
            rx4,
            rx6,
            ttl_filtered,
            handle,
        } = self;
        let reg = |s: StdUdpSocket| {
            UdpSocket::from_std(s).map_err(|e| socket_error("register socket".into(), &e))
        };
        let rx4 = rx4.map(reg).transpose()?;
        let rx6 = rx6.map(reg).transpose()?;
        let mut running = Vec::with_capacity(instances.len());
        for i in instances {
            running.push(Running {
                name: i.name,
                session: i.session,
                socket: reg(i.socket)?,
                dest: i.dest,
                status: i.status,
                send_failing: false,
            });
        }
        let mut control = handle.control.subscribe();
        let counters = handle.counters;
        let mut buf4 = [0u8; 256];
        let mut buf6 = [0u8; 256];
        loop {
            let now = tokio::time::Instant::now().into_std();
            for r in &mut running {
                r.session.handle_timeout(now);
                r.flush(now);
                r.publish();
            }
            match *control.borrow_and_update() {
                Control::Run => {}
                Control::Stop => return Ok(()),
                Control::Shutdown => {
                    for r in &mut running {
                        r.session.shutdown(now);
                        while let Some(p) = r.session.poll_transmit(now) {
                            for _ in 0..ADMIN_DOWN_COPIES {
                                r.send(&p);
                            }
                        }
                        r.publish();
                    }
                    return Ok(());
                }
            }
            let deadline = running
                .iter()
                .filter_map(|r| r.session.poll_timeout())
                .min();
            tokio::select! {
                r = recv(rx4.as_ref(), &mut buf4) => {
                    let now = tokio::time::Instant::now().into_std();
                    receive(r, &buf4, ttl_filtered[0], &mut running, &counters, now);
                }
                r = recv(rx6.as_ref(), &mut buf6) => {
                    let now = tokio::time::Instant::now().into_std();
                    receive(r, &buf6, ttl_filtered[1], &mut running, &counters, now);
                }
                () = sleep_until(deadline) => {}
                _ = control.changed() => {}
            }
        }
    }
}

/// One received datagram: its size, source and (from the packet-info control message)
/// destination address.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    len: usize,
    src: SocketAddr,
    dst: Option<IpAddr>,
}

/// Receives one datagram (cancel safe: nothing is read until the socket is readable).
async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<Datagram> {
    match sock {
        Some(s) => s.async_io(Interest::READABLE, || recv_now(s, buf)).await,
        None => std::future::pending().await,
    }
}

fn recv_now(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let src = msg
        .address
        .and_then(|a| match a.family() {
            Some(nix::sys::socket::AddressFamily::Inet) => a
                .as_sockaddr_in()
                .map(|v| SocketAddr::from(std::net::SocketAddrV4::from(*v))),
            Some(nix::sys::socket::AddressFamily::Inet6) => a
                .as_sockaddr_in6()
                .map(|v| SocketAddr::from(std::net::SocketAddrV6::from(*v))),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut dst = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))));
                }
                ControlMessageOwned::Ipv6PacketInfo(i) => {
                    dst = Some(IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    Ok(Datagram {
        len: msg.bytes,
        src,
        dst,
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The session for a packet from `src` to `dst` with Your Discriminator 0: the one with
/// that neighbor and `dst` as its `source_ip`, else the first with that neighbor and no
/// `source_ip` (or any, when `dst` is unknown).
fn by_addr(running: &[Running], src: IpAddr, dst: Option<IpAddr>) -> Option<usize> {
    let mut fallback = None;
    for (i, r) in running.iter().enumerate() {
        let cfg = r.session.config();
        if cfg.neighbor_ip != src {
            continue;
        }
        match (cfg.source_ip, dst) {
            (Some(s), Some(d)) if s == d => return Some(i),
            (Some(_), Some(_)) => {}
            _ => {
                fallback.get_or_insert(i);
            }
        }
    }
    fallback
}

fn receive(
    r: io::Result<Datagram>,
    buf: &[u8],
    ttl_filtered: bool,
    running: &mut [Running],
    counters: &SharedCounters,
    now: Instant,
) {
    let Datagram { len, src, dst } = match r {
        Ok(x) => x,
        Err(e) => {
            counters.receive_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "bfd receive error");
            return;
        }
    };
    let src_ip = src.ip().to_canonical();
    let dst = dst.map(|d| d.to_canonical());
    let by_addr = |running: &[Running]| by_addr(running, src_ip, dst);
    if len == 0 && ttl_filtered {
        // The kernel's TTL filter emptied it (see the module docs).
        tracing::debug!(%src, "bfd: dropping packet with a TTL / hop limit too low");
        match by_addr(running) {
            Some(i) => running[i].session.record_drop(Discard::BadTtl),
            None => {
                counters.bad_ttl_unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        return;
    }
    let pkt = match ControlPacket::parse(&buf[..len.min(buf.len())]) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%src, error = %e, "bfd: dropping malformed packet");
            match by_addr(running) {
                Some(i) => running[i].session.record_drop(Discard::Malformed),
                None => {
                    counters.malformed_unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
    };
    let found = if pkt.your_discriminator != 0 {
        running
            .iter()
            .position(|r| r.session.local_discriminator() == pkt.your_discriminator)
            // Single hop: the peer is the neighbor itself.
            .filter(|&i| running[i].session.config().neighbor_ip == src_ip)
    } else {
        by_addr(running)
    };
    let Some(i) = found else {
        tracing::debug!(%src, your_discriminator = pkt.your_discriminator, "bfd: packet for no session");
        counters.unknown_peer.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let r = &mut running[i];
    r.session.handle_packet(now, &pkt);
    r.flush(now);
    r.publish();
}

#[derive(Debug)]
struct Running {
    name: String,
    session: Session,
    socket: UdpSocket,
    dest: SocketAddr,
    status: watch::Sender<SessionStatus>,
    send_failing: bool,
}

impl Running {
    fn flush(&mut self, now: Instant) {
        while let Some(p) = self.session.poll_transmit(now) {
            self.send(&p);
        }
    }

    fn send(&mut self, p: &ControlPacket) {
        match self.socket.try_send_to(&p.to_bytes(), self.dest) {
            Ok(_) => self.send_failing = false,
            Err(e) => {
                // Logged once per failing spell, as keepalived does.
                if !self.send_failing {
                    tracing::warn!(instance = %self.name, dest = %self.dest, error = %e, "bfd: send failed");
                    self.send_failing = true;
                }
            }
        }
    }

    /// Publishes the status; wakes subscribers and logs only when the state or a
    /// diagnostic changed.
    fn publish(&self) {
        let new = self.session.status();
        let name = &self.name;
        self.status.send_if_modified(|old| {
            let changed = old.state != new.state
                || old.local_diag != new.local_diag
                || old.remote_state != new.remote_state
                || old.remote_diag != new.remote_diag;
            if old.state != new.state {
                tracing::info!(
                    instance = %name,
                    from = %old.state,
                    to = %new.state,
                    diag = %new.local_diag,
                    remote_diag = ?new.remote_diag.map(|d| d.to_string()),
                    "BFD_Instance({name}) {} -> {} ({})",
                    old.state,
                    new.state,
                    new.local_diag,
                );
            }
            *old = new;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_floor_is_the_most_lenient_of_a_family() {
        let v4 = BfdConfig::new("198.18.0.2".parse().unwrap());
        let v6 = BfdConfig::new("2001:db8::2".parse().unwrap());
        assert_eq!(ttl_floor([&v4].into_iter()), Some(255));
        assert_eq!(ttl_floor([&v6].into_iter()), Some(64));
        let two_hops = BfdConfig {
            max_hops: 2,
            ..v4.clone()
        };
        assert_eq!(ttl_floor([&v4, &two_hops].into_iter()), Some(253));
        let unchecked = BfdConfig {
            max_hops: 255,
            ..v4.clone()
        };
        assert_eq!(ttl_floor([&v4, &unchecked].into_iter()), None);
        let all_hops = BfdConfig {
            ttl: 5,
            max_hops: 5,
            ..v4
        };
        assert_eq!(ttl_floor([&all_hops].into_iter()), None);
        assert_eq!(ttl_floor(std::iter::empty()), None);
    }

    #[test]
    fn ttl_filter_reads_the_right_header_byte() {
        let f = ttl_filter(true, 255);
        // ldb [SKF_NET_OFF + 8]; jge #255 over the truncating ret.
        assert_eq!((f[0].code, f[0].k), (0x30, 0xfff0_0008));
        assert_eq!((f[1].code, f[1].jt, f[1].jf, f[1].k), (0x35, 1, 0, 255));
        assert_eq!((f[2].code, f[2].k), (0x06, 8));
        assert_eq!((f[3].code, f[3].k), (0x06, u32::MAX));
        assert_eq!(ttl_filter(false, 64)[0].k, 0xfff0_0007);
    }
}
