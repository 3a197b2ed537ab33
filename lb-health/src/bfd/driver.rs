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
//!   ([`BfdSpeaker::subscribe`], [`BfdHandle::subscribe`]); receivers are woken when the
//!   local state, the local diagnostic, the remote state or the remote diagnostic changes
//!   (counters, intervals and discriminators update silently). State changes are logged
//!   with `tracing`.
//! * [`BfdHandle::reconfigure`] changes the set of instances of the running speaker by
//!   name, as keepalived does on a reload: unchanged sessions keep their state, timer
//!   changes go through a Poll Sequence, and only removed or readdressed sessions go
//!   AdminDown.
//!
//! # TTL / hop limit check
//!
//! [RFC 5881 §5] (GTSM) as keepalived extends it with `max_hops`
//! ([`BfdConfig::accepts_ttl`]): a packet whose TTL (IPv4) or hop limit (IPv6) is below
//! `ttl`/`hoplimit` minus `max_hops` is dropped. The kernel does the comparison: each
//! receive socket carries a classic BPF filter (socket2 `attach_filter`) that cuts such a
//! packet down to its UDP header, so it arrives with an empty payload, which the driver
//! counts as [`Discard::BadTtl`] for the session of its source address. The filter matches
//! the source address, so each neighbor gets its own floor (the most lenient of its
//! sessions, if several share a neighbor). Reading the TTL in user space would need
//! `IP_RECVTTL`/`IPV6_RECVHOPLIMIT` control messages, which neither nix 0.29 nor socket2
//! 0.5 parse without `unsafe` (forbidden in this crate). A genuinely empty datagram to port
//! 3784 is counted as a TTL drop too.
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

use std::collections::{HashMap, HashSet};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage,
};
use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::BfdConfig;
use super::packet::{ControlPacket, CONTROL_PORT, SOURCE_PORTS};
use super::session::{Discard, Session, SessionStatus};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Shutdown,
    Stop,
}

/// A request to the running [`BfdSpeaker::run`] task, answered on `reply`.
#[derive(Debug)]
enum Command {
    Reconfigure {
        instances: Vec<(String, BfdConfig)>,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Each instance's status channel by name, shared by the handles and the `run` task (which
/// adds and removes entries on [`BfdHandle::reconfigure`]).
type StatusMap = Arc<Mutex<HashMap<String, Arc<watch::Sender<SessionStatus>>>>>;

fn lock(map: &StatusMap) -> MutexGuard<'_, HashMap<String, Arc<watch::Sender<SessionStatus>>>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
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
    commands: mpsc::UnboundedSender<Command>,
    /// Whether [`BfdSpeaker::run`] is running and accepting commands.
    running: Arc<AtomicBool>,
    statuses: StatusMap,
    counters: Arc<SharedCounters>,
}

impl BfdHandle {
    /// Takes every session AdminDown ([RFC 5880 §6.8.16]) so that each peer goes Down with
    /// "Neighbor Signaled Session Down" at once, keeps sending AdminDown packets for the
    /// peer's detection time (at most [`ADMIN_DOWN_MAX`](super::session::ADMIN_DOWN_MAX), see [`Session::shutdown`]),
    /// then makes [`BfdSpeaker::run`] return.
    ///
    /// [RFC 5880 §6.8.16]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.16
    pub fn shutdown(&self) {
        self.control.send_replace(Control::Shutdown);
    }

    /// Makes [`BfdSpeaker::run`] return at once without telling the peers (they see the
    /// detection time expire).
    pub fn stop(&self) {
        self.control.send_replace(Control::Stop);
    }

    /// Replaces the set of `bfd_instance`s of the running speaker, as keepalived does on a
    /// reload (bfd_data.c `bfd_complete_init`): by name, without flapping what did not
    /// change.
    ///
    /// * Everything is validated first, as in [`BfdSpeaker::new`]; on any error nothing
    ///   changes.
    /// * A name kept with the same `neighbor_ip`, `source_ip`, `ttl`, `hoplimit`,
    ///   `max_hops` and `passive`: the session keeps its state, discriminators and
    ///   counters; a changed `min_tx`, `min_rx`, `idle_tx` or `multiplier` is applied in
    ///   place ([`Session::set_min_tx`] and its siblings: a Poll Sequence while Up, a
    ///   packet with the new values at once, [RFC 5880 §6.8.3]).
    /// * A name kept with any of those changed: that session alone is replaced: the old
    ///   one goes AdminDown towards the old neighbor (as a removed one, below), a new one
    ///   starts Down with a new discriminator. Its status channel stays open and reports
    ///   the new session.
    /// * A name gone: its session goes AdminDown (diagnostic 7), sends AdminDown packets
    ///   for the peer's detection time (at most [`ADMIN_DOWN_MAX`](super::session::ADMIN_DOWN_MAX)), then is dropped; its
    ///   status channel closes once the AdminDown status is published.
    /// * A new name: a new session, Down, with its own send socket.
    /// * Receive sockets: a family newly in use gets its socket; the TTL filters are
    ///   replaced with the new floors; a socket bound to the common `source_ip` of its
    ///   family that no longer covers every session of the family is rebound to the
    ///   wildcard address (closed, then bound: a packet arriving in between is lost,
    ///   which a BFD session survives). A family no longer used keeps its socket.
    ///
    /// # Errors
    ///
    /// [`Error::BfdSpeakerNotRunning`] before [`BfdSpeaker::run`] has started, or once it
    /// has returned or is shutting down; otherwise the errors of [`BfdSpeaker::new`], with
    /// nothing changed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request has reached the `run` task, dropping the future
    /// does not withdraw it (it is applied, and its result is lost).
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    pub async fn reconfigure(&self, instances: Vec<(String, BfdConfig)>) -> Result<()> {
        if !self.running.load(Ordering::Acquire) {
            return Err(Error::BfdSpeakerNotRunning);
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Reconfigure { instances, reply })
            .map_err(|_| Error::BfdSpeakerNotRunning)?;
        answer.await.map_err(|_| Error::BfdSpeakerNotRunning)?
    }

    /// The status of instance `name`, including instances added by
    /// [`reconfigure`](Self::reconfigure). `None` for an unknown name (or one removed).
    /// The channel closes when the instance is removed.
    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<SessionStatus>> {
        lock(&self.statuses).get(name).map(|s| s.subscribe())
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

/// Clears [`BfdHandle`]'s `running` flag when [`BfdSpeaker::run`] returns or is dropped.
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[derive(Debug)]
struct Instance {
    name: String,
    session: Session,
    socket: StdUdpSocket,
    dest: SocketAddr,
    status: Arc<watch::Sender<SessionStatus>>,
}

/// A receive socket on port 3784 and what it was bound with.
#[derive(Debug)]
struct RxSocket<S> {
    sock: S,
    /// The address it is bound to: the family's common `source_ip`, or the wildcard.
    bound: IpAddr,
    /// Whether it carries the TTL filter.
    filtered: bool,
}

/// Every `bfd_instance` of a node: sockets bound, sessions Down, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct BfdSpeaker {
    instances: Vec<Instance>,
    /// The IPv4 and IPv6 receive sockets.
    rx: [Option<RxSocket<StdUdpSocket>>; 2],
    commands: mpsc::UnboundedReceiver<Command>,
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
    // A source address not (yet) on an interface (an IPv6 one still tentative at boot, one
    // added later) does not stop the speaker: the session sends once it is there
    // (keepalived disables that instance and opens its socket again later).
    freebind(&sock, ip).map_err(|e| socket_error(format!("set IP_FREEBIND for {ip}"), &e))?;
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

/// The lowest TTL / hop limit each neighbor's sessions accept (the most lenient when
/// several sessions share a neighbor); neighbors that are not checked (`max_hops` 255, or
/// a floor of 0) are left out.
fn ttl_floors<'a>(family: impl Iterator<Item = &'a BfdConfig>) -> Vec<(IpAddr, u8)> {
    let mut floors: Vec<(IpAddr, u8)> = Vec::new();
    for c in family {
        let floor = if c.max_hops == u8::MAX {
            0
        } else {
            c.tx_ttl().saturating_sub(c.max_hops)
        };
        match floors.iter_mut().find(|(ip, _)| *ip == c.neighbor_ip) {
            Some((_, f)) => *f = (*f).min(floor),
            None => floors.push((c.neighbor_ip, floor)),
        }
    }
    floors.retain(|&(_, f)| f > 0);
    floors
}

/// The largest classic BPF program the kernel loads (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// A classic BPF program for a UDP receive socket: a packet from neighbor `ip` whose TTL
/// (IPv4 header byte 8) or hop limit (IPv6 header byte 7) is below that neighbor's floor is
/// cut down to its 8-byte UDP header (the least the kernel keeps); anything else passes
/// whole (packets from other addresses too: the driver counts them as unknown peers).
///
/// For each neighbor: compare the source address word by word (IPv4 header bytes 12..16,
/// IPv6 8..24), on a mismatch jump to the next neighbor's block; on a match compare the
/// TTL with the floor and return. Every jump is forward and short, so the size is only
/// bounded by `BPF_MAXINSNS`; `None` if the program would exceed it.
fn ttl_filter(floors: &[(IpAddr, u8)]) -> Option<Vec<nix::libc::sock_filter>> {
    // linux/filter.h opcodes.
    const LDW_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LDB_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const UDP_HEADER: u32 = 8;
    // Offsets from SKF_NET_OFF reach the network header; the kernel takes the two's
    // complement bit pattern as `k`.
    let net = |off: i32| u32::from_ne_bytes((nix::libc::SKF_NET_OFF + off).to_ne_bytes());
    let op = |code, jt, jf, k| nix::libc::sock_filter { code, jt, jf, k };
    let mut prog = Vec::new();
    for &(ip, floor) in floors {
        let (words, src_off, ttl_off): (Vec<u32>, i32, i32) = match ip {
            IpAddr::V4(a) => (vec![u32::from(a)], 12, 8),
            IpAddr::V6(a) => (
                a.octets()
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                8,
                7,
            ),
        };
        // 2 instructions per address word, then ldb, jge, ret, ret.
        let block = 2 * words.len() + 4;
        for (w, word) in (0i32..).zip(&words) {
            prog.push(op(LDW_ABS, 0, 0, net(src_off + 4 * w)));
            // From the jeq (index 2w+1 in the block) to the next block.
            let skip = u8::try_from(block - (2 * usize::try_from(w).ok()? + 1) - 1).ok()?;
            prog.push(op(JEQ_K, 0, skip, *word));
        }
        prog.push(op(LDB_ABS, 0, 0, net(ttl_off)));
        prog.push(op(JGE_K, 1, 0, u32::from(floor)));
        prog.push(op(RET_K, 0, 0, UDP_HEADER));
        prog.push(op(RET_K, 0, 0, u32::MAX));
    }
    prog.push(op(RET_K, 0, 0, u32::MAX));
    (prog.len() <= BPF_MAXINSNS).then_some(prog)
}

/// The receive socket of one family on port 3784, with `IP_PKTINFO` /
/// `IPV6_RECVPKTINFO` so that a packet's destination address is known, and the TTL
/// filter for `floors` (none when empty).
fn bind_receive_socket(
    ip: IpAddr,
    names: &[&str],
    floors: &[(IpAddr, u8)],
) -> Result<StdUdpSocket> {
    let addr = SocketAddr::new(ip, CONTROL_PORT);
    let what = |op: &str| format!("{op} {addr} (bfd_instance {})", names.join(", "));
    let sock = new_udp(ip.is_ipv4()).map_err(|e| socket_error(what("socket"), &e))?;
    let pktinfo = if ip.is_ipv4() {
        setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)
    } else {
        setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
    };
    pktinfo.map_err(|e| socket_error(what("set IP_PKTINFO on"), &e.into()))?;
    if !floors.is_empty() {
        let prog = ttl_filter(floors).ok_or_else(|| Error::InvalidConfig {
            setting: "max_hops",
            reason: format!(
                "{} neighbors with a TTL check exceed one BPF program ({BPF_MAXINSNS} instructions)",
                floors.len()
            ),
        })?;
        sock.attach_filter(&prog)
            .map_err(|e| socket_error(what("attach the TTL filter to"), &e))?;
    }
    freebind(&sock, ip).map_err(|e| socket_error(what("set IP_FREEBIND for"), &e))?;
    sock.bind(&addr.into())
        .map_err(|e| socket_error(what("bind"), &e))?;
    Ok(sock.into())
}

/// Lets `sock` bind `ip` before an interface holds it (`IP_FREEBIND` /
/// `IPV6_FREEBIND`); nothing for the unspecified address.
fn freebind(sock: &Socket, ip: IpAddr) -> io::Result<()> {
    match ip {
        _ if ip.is_unspecified() => Ok(()),
        IpAddr::V4(_) => sock.set_freebind(true),
        IpAddr::V6(_) => sock.set_freebind_ipv6(true),
    }
}

/// Refuses a duplicate name, a duplicate neighbor and source pair, and any refused
/// setting ([`BfdConfig::validate`]).
fn validate_instances(instances: &[(String, BfdConfig)]) -> Result<()> {
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    for (name, cfg) in instances {
        if !names.insert(name.as_str()) || !pairs.insert((cfg.neighbor_ip, cfg.source_ip)) {
            return Err(Error::DuplicateBfdInstance(name.clone()));
        }
        cfg.validate().map_err(|e| in_instance(name, e))?;
    }
    Ok(())
}

/// What the receive socket of one family needs for a set of instances.
#[derive(Debug)]
struct FamilyPlan<'a> {
    /// The family's common `source_ip`, or the wildcard address.
    bind: IpAddr,
    names: Vec<&'a str>,
    floors: Vec<(IpAddr, u8)>,
}

impl FamilyPlan<'_> {
    /// Whether a socket bound to `bound` receives every session's packets.
    fn covered_by(&self, bound: IpAddr) -> bool {
        bound.is_unspecified() || bound == self.bind
    }
}

/// The receive socket needs of family `v4` (slot 0) or IPv6 (slot 1); `None` when no
/// instance is of that family.
fn plan_family(instances: &[(String, BfdConfig)], v4: bool) -> Option<FamilyPlan<'_>> {
    let family: Vec<&(String, BfdConfig)> = instances
        .iter()
        .filter(|(_, c)| c.neighbor_ip.is_ipv4() == v4)
        .collect();
    let (_, first) = family.first()?;
    let common = first
        .source_ip
        .filter(|s| family.iter().all(|(_, c)| c.source_ip == Some(*s)));
    Some(FamilyPlan {
        bind: common.unwrap_or_else(|| unspecified(v4)),
        names: family.iter().map(|(n, _)| n.as_str()).collect(),
        floors: ttl_floors(family.iter().map(|(_, c)| c)),
    })
}

/// Whether a session with `old` can take `new` in place: only timer settings differ.
fn same_identity(old: &BfdConfig, new: &BfdConfig) -> bool {
    old.neighbor_ip == new.neighbor_ip
        && old.source_ip == new.source_ip
        && old.ttl == new.ttl
        && old.hoplimit == new.hoplimit
        && old.max_hops == new.max_hops
        && old.passive == new.passive
}

/// A random non-zero discriminator not in `taken` (§6.8.1: unique per system).
fn new_discriminator(rng: &mut impl Rng, taken: &mut HashSet<NonZeroU32>) -> NonZeroU32 {
    loop {
        if let Some(d) = NonZeroU32::new(rng.gen()) {
            if taken.insert(d) {
                return d;
            }
        }
    }
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
        validate_instances(&instances)?;
        let mut rx = [None, None];
        for (slot, v4) in [(0, true), (1, false)] {
            let Some(plan) = plan_family(&instances, v4) else {
                continue;
            };
            rx[slot] = Some(RxSocket {
                sock: bind_receive_socket(plan.bind, &plan.names, &plan.floors)?,
                bound: plan.bind,
                filtered: !plan.floors.is_empty(),
            });
        }
        let now = tokio::time::Instant::now().into_std();
        let mut rng = rand::thread_rng();
        let mut discriminators = HashSet::new();
        let mut built = Vec::with_capacity(instances.len());
        let mut statuses = HashMap::new();
        for (name, cfg) in instances {
            let socket = bind_send_socket(&cfg).map_err(|e| in_instance(&name, e))?;
            let discr = new_discriminator(&mut rng, &mut discriminators);
            let dest = SocketAddr::new(cfg.neighbor_ip, CONTROL_PORT);
            let session = Session::new(cfg, discr, rng.gen(), now);
            let status = Arc::new(watch::channel(session.status()).0);
            statuses.insert(name.clone(), Arc::clone(&status));
            built.push(Instance {
                name,
                session,
                socket,
                dest,
                status,
            });
        }
        let (control, _) = watch::channel(Control::Run);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        Ok(Self {
            instances: built,
            rx,
            commands: commands_rx,
            handle: BfdHandle {
                control: Arc::new(control),
                commands,
                running: Arc::default(),
                statuses: Arc::new(Mutex::new(statuses)),
                counters: Arc::default(),
            },
        })
    }

    /// The status of instance `name`, updated while [`run`](Self::run) runs (initially
    /// Down). `None` for an unknown name. [`BfdHandle::subscribe`] does the same and also
    /// knows the instances added by [`BfdHandle::reconfigure`].
    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<SessionStatus>> {
        self.handle.subscribe(name)
    }

    /// The local address of instance `name`'s send socket (its source port is in
    /// 49152–65535).
    pub fn source_addr(&self, name: &str) -> Option<SocketAddr> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.socket.local_addr().ok())
    }

    /// A handle to shut the speaker down, stop it, reconfigure it (once running) and
    /// subscribe to its instances, usable before and during [`run`](Self::run).
    pub fn handle(&self) -> BfdHandle {
        self.handle.clone()
    }

    /// Drives every session until [`BfdHandle::shutdown`] (once the AdminDown packets are
    /// out) or [`BfdHandle::stop`], applying [`BfdHandle::reconfigure`] requests on the
    /// way.
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
            rx,
            mut commands,
            handle,
        } = self;
        let [rx4, rx6] = rx;
        let rx4 = rx4.map(register_rx).transpose()?;
        let rx6 = rx6.map(register_rx).transpose()?;
        let mut running = Vec::with_capacity(instances.len());
        for i in instances {
            running.push(Running {
                name: i.name,
                session: i.session,
                socket: register(i.socket)?,
                dest: i.dest,
                status: Some(i.status),
                send_failing: false,
            });
        }
        let mut d = Driver {
            running,
            draining: Vec::new(),
            rx: [rx4, rx6],
            statuses: Arc::clone(&handle.statuses),
        };
        handle.running.store(true, Ordering::Release);
        let _flag = RunningFlag(Arc::clone(&handle.running));
        let mut control = handle.control.subscribe();
        let counters = handle.counters;
        let mut shutting_down = false;
        let mut buf4 = [0u8; 256];
        let mut buf6 = [0u8; 256];
        // Control-message space for IP_PKTINFO / IPV6_PKTINFO, kept across datagrams.
        let mut cmsg4 = nix::cmsg_space!(nix::libc::in6_pktinfo);
        let mut cmsg6 = nix::cmsg_space!(nix::libc::in6_pktinfo);
        loop {
            let now = tokio::time::Instant::now().into_std();
            for r in d.running.iter_mut().chain(&mut d.draining) {
                r.session.handle_timeout(now);
                r.flush(now);
                r.publish();
            }
            d.draining.retain(|r| !r.session.admin_down_done(now));
            match *control.borrow_and_update() {
                Control::Run => {}
                Control::Stop => return Ok(()),
                Control::Shutdown if !shutting_down => {
                    shutting_down = true;
                    handle.running.store(false, Ordering::Release);
                    commands.close();
                    while let Some(r) = d.running.pop() {
                        d.retire(r, now, false);
                    }
                    continue;
                }
                Control::Shutdown => {}
            }
            if shutting_down && d.draining.is_empty() {
                return Ok(());
            }
            let deadline = d
                .running
                .iter()
                .chain(&d.draining)
                .filter_map(|r| r.session.poll_timeout())
                .min();
            let filtered =
                d.rx.each_ref()
                    .map(|r| r.as_ref().is_some_and(|r| r.filtered));
            tokio::select! {
                r = recv(d.rx[0].as_ref().map(|r| &r.sock), &mut buf4, &mut cmsg4) => {
                    let now = tokio::time::Instant::now().into_std();
                    receive(r, &buf4, filtered[0], &mut d, &counters, now);
                }
                r = recv(d.rx[1].as_ref().map(|r| &r.sock), &mut buf6, &mut cmsg6) => {
                    let now = tokio::time::Instant::now().into_std();
                    receive(r, &buf6, filtered[1], &mut d, &counters, now);
                }
                () = sleep_until(deadline) => {}
                _ = control.changed() => {}
                Some(cmd) = commands.recv() => match cmd {
                    // A request queued before the shutdown began is refused.
                    Command::Reconfigure { reply, .. } if shutting_down => {
                        let _ = reply.send(Err(Error::BfdSpeakerNotRunning));
                    }
                    Command::Reconfigure { instances, reply } => {
                        let now = tokio::time::Instant::now().into_std();
                        let _ = reply.send(d.reconfigure(instances, now));
                    }
                },
            }
        }
    }
}

fn register(s: StdUdpSocket) -> Result<UdpSocket> {
    UdpSocket::from_std(s).map_err(|e| socket_error("register socket".into(), &e))
}

fn register_rx(r: RxSocket<StdUdpSocket>) -> Result<RxSocket<UdpSocket>> {
    Ok(RxSocket {
        sock: register(r.sock)?,
        bound: r.bound,
        filtered: r.filtered,
    })
}

/// Attaches the TTL filter for `floors` to a bound receive socket (replacing the one it
/// carries), or detaches it when `floors` is empty.
fn set_ttl_filter(sock: &UdpSocket, floors: &[(IpAddr, u8)]) -> Result<()> {
    let s = socket2::SockRef::from(sock);
    let what = || {
        format!(
            "attach the TTL filter to {}",
            sock.local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string())
        )
    };
    if floors.is_empty() {
        // ENOENT when none was attached: nothing to do.
        let _ = s.detach_filter();
        return Ok(());
    }
    let prog = ttl_filter(floors).ok_or_else(|| too_many_floors(floors.len()))?;
    s.attach_filter(&prog).map_err(|e| socket_error(what(), &e))
}

fn too_many_floors(n: usize) -> Error {
    Error::InvalidConfig {
        setting: "max_hops",
        reason: format!(
            "{n} neighbors with a TTL check exceed one BPF program ({BPF_MAXINSNS} instructions)"
        ),
    }
}

/// The state of a running speaker.
#[derive(Debug)]
struct Driver {
    /// The configured sessions; packets are demultiplexed among them.
    running: Vec<Running>,
    /// Sessions removed (or replaced) and shut down, sending AdminDown until
    /// [`Session::admin_down_done`].
    draining: Vec<Running>,
    rx: [Option<RxSocket<UdpSocket>>; 2],
    statuses: StatusMap,
}

/// How a reconfigured instance is applied.
enum Plan {
    /// Same identity: new timer settings in place.
    Keep(usize),
    /// A new session replacing `Some(old)` (or a new name), with its bound send socket.
    Start(Option<usize>, UdpSocket),
}

impl Driver {
    /// Takes `r` AdminDown and moves it to `draining`; `forget` also removes its name from
    /// the status map and closes its channel once the AdminDown status is published.
    fn retire(&mut self, mut r: Running, now: Instant, forget: bool) {
        r.session.shutdown(now);
        r.flush(now);
        r.publish();
        if forget {
            lock(&self.statuses).remove(&r.name);
            r.status = None;
        }
        self.draining.push(r);
    }

    /// [`BfdHandle::reconfigure`]: every fallible step (validation, sockets) comes before
    /// any session changes.
    fn reconfigure(&mut self, instances: Vec<(String, BfdConfig)>, now: Instant) -> Result<()> {
        validate_instances(&instances)?;
        // 1. Send sockets for new and replaced sessions.
        let mut plans = Vec::with_capacity(instances.len());
        for (name, cfg) in &instances {
            let old = self.running.iter().position(|r| &r.name == name);
            match old {
                Some(i) if same_identity(self.running[i].session.config(), cfg) => {
                    plans.push(Plan::Keep(i));
                }
                _ => {
                    let sock = bind_send_socket(cfg)
                        .and_then(register)
                        .map_err(|e| in_instance(name, e))?;
                    plans.push(Plan::Start(old, sock));
                }
            }
        }
        // 2. Receive sockets: bind a family's missing one, check the filters fit.
        let mut fresh: [Option<RxSocket<UdpSocket>>; 2] = [None, None];
        let mut family_plans = [None, None];
        for (slot, v4) in [(0, true), (1, false)] {
            let Some(plan) = plan_family(&instances, v4) else {
                continue;
            };
            if !plan.floors.is_empty() && ttl_filter(&plan.floors).is_none() {
                return Err(too_many_floors(plan.floors.len()));
            }
            if self.rx[slot].is_none() {
                fresh[slot] = Some(register_rx(RxSocket {
                    sock: bind_receive_socket(plan.bind, &plan.names, &plan.floors)?,
                    bound: plan.bind,
                    filtered: !plan.floors.is_empty(),
                })?);
            }
            family_plans[slot] = Some(plan);
        }
        // 3. Existing receive sockets: widened to the wildcard address where the common
        // source no longer covers the family (the old socket must close first: the kernel
        // refuses the wildcard beside a specific bind of the same port), then the filters
        // of those kept. An error puts back what was changed (the old sockets, with the
        // floors of the sessions that keep running) and changes nothing else.
        let old_configs: Vec<(String, BfdConfig)> = self
            .running
            .iter()
            .map(|r| (r.name.clone(), r.session.config().clone()))
            .collect();
        let old_floors = |slot: usize| {
            plan_family(&old_configs, slot == 0)
                .map(|p| p.floors)
                .unwrap_or_default()
        };
        let mut rebound: Vec<(usize, IpAddr)> = Vec::new();
        let mut refiltered: Vec<usize> = Vec::new();
        let mut failure = None;
        for (slot, plan) in family_plans.iter().enumerate() {
            let (Some(plan), Some(cur)) = (plan, &mut self.rx[slot]) else {
                continue;
            };
            if plan.covered_by(cur.bound) {
                if let Err(e) = set_ttl_filter(&cur.sock, &plan.floors) {
                    failure = Some(e);
                    break;
                }
                cur.filtered = !plan.floors.is_empty();
                refiltered.push(slot);
                continue;
            }
            let wildcard = unspecified(slot == 0);
            let old = cur.bound;
            self.rx[slot] = None;
            match bind_receive_socket(wildcard, &plan.names, &plan.floors).and_then(register) {
                Ok(sock) => {
                    tracing::info!(bound = %wildcard, "bfd: receive socket rebound to the wildcard address");
                    self.rx[slot] = Some(RxSocket {
                        sock,
                        bound: wildcard,
                        filtered: !plan.floors.is_empty(),
                    });
                    rebound.push((slot, old));
                }
                Err(e) => {
                    rebound.push((slot, old));
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for slot in refiltered {
                if let Some(cur) = &mut self.rx[slot] {
                    let floors = old_floors(slot);
                    if let Err(e2) = set_ttl_filter(&cur.sock, &floors) {
                        tracing::error!(error = %e2, "bfd: cannot put the receive socket's TTL filter back");
                    }
                    cur.filtered = !floors.is_empty();
                }
            }
            for (slot, old) in rebound {
                // Its address was free a moment ago.
                let floors = old_floors(slot);
                let names: Vec<&str> = old_configs
                    .iter()
                    .filter(|(_, c)| c.neighbor_ip.is_ipv4() == (slot == 0))
                    .map(|(n, _)| n.as_str())
                    .collect();
                self.rx[slot] = None;
                match bind_receive_socket(old, &names, &floors).and_then(register) {
                    Ok(sock) => {
                        self.rx[slot] = Some(RxSocket {
                            sock,
                            bound: old,
                            filtered: !floors.is_empty(),
                        });
                    }
                    Err(e2) => {
                        tracing::error!(error = %e2, "bfd: cannot rebind the receive socket: its sessions hear nothing until the next reconfigure");
                    }
                }
            }
            return Err(e);
        }
        for (slot, r) in fresh.into_iter().enumerate() {
            if r.is_some() {
                self.rx[slot] = r;
            }
        }
        // 4. Sessions (nothing fails from here on).
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.running)
            .into_iter()
            .map(Some)
            .collect();
        let mut taken: HashSet<NonZeroU32> = old
            .iter()
            .flatten()
            .chain(&self.draining)
            .filter_map(|r| NonZeroU32::new(r.session.local_discriminator()))
            .collect();
        let mut rng = rand::thread_rng();
        let mut running = Vec::with_capacity(instances.len());
        for ((name, cfg), plan) in instances.into_iter().zip(plans) {
            match plan {
                Plan::Keep(i) => {
                    let Some(mut r) = old[i].take() else {
                        continue;
                    };
                    let s = &mut r.session;
                    s.set_min_rx(now, cfg.min_rx);
                    s.set_min_tx(now, cfg.min_tx);
                    s.set_idle_tx(now, cfg.idle_tx);
                    s.set_multiplier(now, cfg.multiplier);
                    running.push(r);
                }
                Plan::Start(replaced, socket) => {
                    let discr = new_discriminator(&mut rng, &mut taken);
                    let dest = SocketAddr::new(cfg.neighbor_ip, CONTROL_PORT);
                    let session = Session::new(cfg, discr, rng.gen(), now);
                    let status = match replaced.and_then(|i| old[i].take()) {
                        Some(mut prev) => {
                            tracing::info!(instance = %name, "bfd: instance's addresses changed, restarting its session");
                            // Its AdminDown reaches the channel before the new session
                            // takes it over.
                            prev.session.shutdown(now);
                            prev.flush(now);
                            prev.publish();
                            let status = prev.status.take();
                            self.retire(prev, now, false);
                            status
                        }
                        None => None,
                    }
                    .unwrap_or_else(|| {
                        let s = Arc::new(watch::channel(session.status()).0);
                        lock(&self.statuses).insert(name.clone(), Arc::clone(&s));
                        s
                    });
                    let r = Running {
                        name,
                        session,
                        socket,
                        dest,
                        status: Some(status),
                        send_failing: false,
                    };
                    r.publish();
                    running.push(r);
                }
            }
        }
        for r in old.into_iter().flatten() {
            tracing::info!(instance = %r.name, "bfd: instance removed");
            self.retire(r, now, true);
        }
        self.running = running;
        Ok(())
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
async fn recv(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<Datagram> {
    match sock {
        Some(s) => {
            s.async_io(Interest::READABLE, || recv_now(s, buf, cmsg))
                .await
        }
        None => std::future::pending().await,
    }
}

/// One datagram into `buf`, its destination read from the packet-info control message
/// (into `cmsg`, space for one `in6_pktinfo`, reused: no allocation per datagram).
fn recv_now(sock: &UdpSocket, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(cmsg),
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
    d: &mut Driver,
    counters: &SharedCounters,
    now: Instant,
) {
    let running = &mut d.running;
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
        let mine = |r: &Running| {
            r.session.local_discriminator() == pkt.your_discriminator
                // Single hop: the peer is the neighbor itself.
                && r.session.config().neighbor_ip == src_ip
        };
        if let Some(r) = d.draining.iter_mut().find(|r| mine(r)) {
            // A removed session still sending AdminDown discards what it hears.
            r.session.handle_packet(now, &pkt);
            return;
        }
        running.iter().position(mine)
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
    /// `None` once the instance is removed (its channel closed) or replaced (its
    /// channel went to the new session).
    status: Option<Arc<watch::Sender<SessionStatus>>>,
    send_failing: bool,
}

impl Running {
    fn flush(&mut self, now: Instant) {
        while let Some(p) = self.session.poll_transmit(now) {
            self.send(&p);
        }
    }

    fn send(&mut self, p: &ControlPacket) {
        // Straight to the kernel (the socket is non-blocking): tokio's `try_send_to`
        // refuses with WouldBlock until the reactor has polled a newly registered socket,
        // which dropped the first packet of every new session (its next came ~1 s later).
        let sent = socket2::SockRef::from(&self.socket).send_to(&p.to_bytes(), &self.dest.into());
        match sent {
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
        let Some(status) = &self.status else {
            return;
        };
        let new = self.session.status();
        let name = &self.name;
        status.send_if_modified(|old| {
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
    fn ttl_floors_per_neighbor() {
        let v4 = BfdConfig::new("198.18.0.2".parse().unwrap());
        let v6 = BfdConfig::new("2001:db8::2".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ttl_floors([&v4].into_iter()), [(ip("198.18.0.2"), 255)]);
        assert_eq!(ttl_floors([&v6].into_iter()), [(ip("2001:db8::2"), 64)]);
        // Two sessions to one neighbor: the more lenient floor.
        let two_hops = BfdConfig {
            max_hops: 2,
            source_ip: Some(ip("198.18.0.9")),
            ..v4.clone()
        };
        assert_eq!(
            ttl_floors([&v4, &two_hops].into_iter()),
            [(ip("198.18.0.2"), 253)]
        );
        // An unchecked neighbor does not weaken another's check.
        let other = BfdConfig {
            max_hops: 255,
            ..BfdConfig::new(ip("198.18.0.3"))
        };
        assert_eq!(
            ttl_floors([&v4, &other].into_iter()),
            [(ip("198.18.0.2"), 255)]
        );
        let all_hops = BfdConfig {
            ttl: 5,
            max_hops: 5,
            ..v4
        };
        assert!(ttl_floors([&all_hops].into_iter()).is_empty());
        assert!(ttl_floors(std::iter::empty()).is_empty());
    }

    /// The kernel floor agrees with `BfdConfig::accepts_ttl` for every TTL, TTL setting
    /// and `max_hops` of a few shapes (small domains, tested exhaustively).
    #[test]
    fn floors_agree_with_accepts_ttl() {
        for tx in [1u8, 2, 64, 200, 255] {
            for max_hops in [0u8, 1, 2, 63, 64, 254, 255] {
                let c = BfdConfig {
                    ttl: tx,
                    max_hops,
                    ..BfdConfig::new("198.18.0.2".parse().unwrap())
                };
                let floors = ttl_floors([&c].into_iter());
                for ttl in 0..=255u8 {
                    let kernel_passes = floors.first().is_none_or(|&(_, f)| ttl >= f);
                    assert_eq!(kernel_passes, c.accepts_ttl(ttl), "{tx} {max_hops} {ttl}");
                }
            }
        }
    }

    /// Runs a cBPF program the way the kernel does for the instructions `ttl_filter`
    /// emits, over an IP header (the network-header offsets) and returns its verdict.
    fn run(prog: &[nix::libc::sock_filter], ip_header: &[u8]) -> u32 {
        let net = u32::from_ne_bytes(nix::libc::SKF_NET_OFF.to_ne_bytes());
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            match i.code {
                0x20 => {
                    let o = (i.k - net) as usize;
                    a = u32::from_be_bytes(ip_header[o..o + 4].try_into().unwrap());
                }
                0x30 => a = u32::from(ip_header[(i.k - net) as usize]),
                0x15 | 0x35 => {
                    let taken = if i.code == 0x15 { a == i.k } else { a >= i.k };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    fn v4_header(src: [u8; 4], ttl: u8) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[8] = ttl;
        h[12..16].copy_from_slice(&src);
        h
    }

    fn v6_header(src: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[7] = hop_limit;
        h[8..24].copy_from_slice(&src.octets());
        h
    }

    #[test]
    fn ttl_filter_checks_each_neighbor_against_its_floor() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let prog = ttl_filter(&[(ip("198.18.0.2"), 255), (ip("198.18.0.3"), 250)]).unwrap();
        assert_eq!(run(&prog, &v4_header([198, 18, 0, 2], 255)), u32::MAX);
        assert_eq!(run(&prog, &v4_header([198, 18, 0, 2], 254)), 8);
        assert_eq!(run(&prog, &v4_header([198, 18, 0, 3], 250)), u32::MAX);
        assert_eq!(run(&prog, &v4_header([198, 18, 0, 3], 249)), 8);
        // Unknown sources pass (the driver counts them).
        assert_eq!(run(&prog, &v4_header([198, 18, 0, 4], 1)), u32::MAX);

        let a: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
        let prog = ttl_filter(&[(IpAddr::V6(a), 64), (IpAddr::V6(b), 255)]).unwrap();
        assert_eq!(run(&prog, &v6_header(a, 64)), u32::MAX);
        assert_eq!(run(&prog, &v6_header(a, 63)), 8);
        assert_eq!(run(&prog, &v6_header(b, 254)), 8);
        assert_eq!(run(&prog, &v6_header(b, 255)), u32::MAX);
        // Differs from `b` only in the last word.
        let c: Ipv6Addr = "2001:db8::1:3".parse().unwrap();
        assert_eq!(run(&prog, &v6_header(c, 1)), u32::MAX);
        // Too many neighbors for one program.
        let many: Vec<(IpAddr, u8)> = (0..400u16)
            .map(|i| {
                (
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                    64,
                )
            })
            .collect();
        assert!(ttl_filter(&many).is_none());
        assert!(ttl_filter(&many[..300]).is_some());
    }
}
