//! The tokio driver: raw IP sockets (protocol 112), netlink VIPs, gratuitous ARP /
//! unsolicited NA, link monitoring, and typed events, around the sans-IO
//! [`machine`](crate::machine).
//!
//! The driver is thin (quinn's `drive_timer`): it drains `poll_action()`, then waits on
//! the sockets, `sleep_until(poll_timeout())`, the control channel and a link-state tick.
//! Only this module reads the clock, via `tokio::time::Instant::now().into_std()`.
//!
//! * Multicast: joins 224.0.0.18 / ff02::12 (or `mcast_dst_ip`) on the interface and reads
//!   only that group's adverts (`IP_MULTICAST_ALL` off), sends with TTL / hop limit 255
//!   from the interface's primary (IPv4) or link-local (IPv6) address ([RFC 5798 §5.1.1]);
//!   multicast loop is off.
//! * Unicast (`unicast_peer` set): sends one copy to each peer with TTL 255 and accepts
//!   adverts from peers only.
//! * The IPv4 TTL is read from the IP header that raw IPv4 sockets deliver; the IPv6 hop
//!   limit and destination from `IPV6_HOPLIMIT` / `IPV6_PKTINFO` control messages.
//! * Packets for VRIDs this speaker does not run are ignored silently (several speakers
//!   share a LAN, as with keepalived).
//! * On start the configured VIPs are removed (crash recovery: a previous run may have
//!   died as master); on shutdown a master sends priority 0 and removes them.
//! * With [`VrrpInstanceConfig::use_vmac`], the VIPs live on a macvlan with the virtual
//!   router MAC and adverts are sent and read there ([`crate::vmac`]).
//!
//! # Privileges
//!
//! `CAP_NET_RAW` and `CAP_NET_ADMIN` only, plus `CAP_SETUID` and `CAP_SETGID` for a
//! [`TrackScript`] with a [`TrackScript::run_as`] user.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> lb_vrrp::Result<()> {
//! use lb_vrrp::driver::{Speaker, VrrpInstanceConfig};
//! use lb_vrrp::wire::{Auth, Vrid};
//!
//! let mut vi = VrrpInstanceConfig::new("VI_1", "eth0", Vrid::new(51).unwrap());
//! vi.authentication = Auth::password("7road123");
//! vi.virtual_ipaddress.push("198.18.0.250/24 dev eth0 label eth0:1".parse()?);
//! let speaker = Speaker::new(vec![vi], false)?;
//! let mut events = speaker.subscribe();
//! let handle = speaker.handle();
//! tokio::spawn(async move {
//!     while let Ok(ev) = events.recv().await {
//!         println!("{} {} -> {} ({:?})", ev.instance, ev.from, ev.to, ev.reason);
//!     }
//! });
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     handle.shutdown();
//! });
//! speaker.run().await
//! # }
//! ```
//!
//! [RFC 5798 §5.1.1]: https://www.rfc-editor.org/rfc/rfc5798#section-5.1.1

mod garp;
mod sys;
mod track;

pub use garp::{GarpGroup, GarpPacer};

pub use track::init_track_files;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, watch};

use crate::accept::DropRules;
use crate::machine::{
    Action, Config, Counters, Reason, RxMeta, State, SyncGroup, TrackHysteresis, TrackId,
    TrackState, TrackWeight, VirtualRouter, TRACK_VALUE_FAULT,
};
use crate::track::{TrackFile, TrackProcess};
use crate::vip::{self, Vip, VipManager};
use crate::vmac::{UseVmac, VmacLink};
use crate::wire::{
    AdvertInterval, Auth, Priority, Version, Vrid, IPPROTO_VRRP, MAX_ADDRESSES_V4,
    MAX_ADDRESSES_V6, VRRP_MCAST_V4, VRRP_MCAST_V6, VRRP_TTL,
};
use crate::{Error, Result};

/// Registers a file descriptor owner with the tokio reactor (for [`vip::LinkNotices`]).
pub(crate) fn register_fd<T: sys::OwnsFd>(fd: T) -> io::Result<AsyncFd<T>> {
    sys::async_fd(fd)
}

/// How long [`Speaker::run`] holds an instance back for a tracked process whose first
/// count is not done yet.
const UNCOUNTED_WAIT: Duration = Duration::from_secs(5);

/// How often a speaker reads the interfaces besides netlink's notices, by default
/// ([`Speaker::set_link_poll`]).
pub const LINK_POLL: Duration = Duration::from_millis(200);

/// One `vrrp_instance`, with keepalived's option names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstanceConfig {
    /// Instance name (`vrrp_instance NAME`), used in events and logs.
    pub name: String,
    /// `interface`.
    pub interface: String,
    /// `virtual_router_id`.
    pub virtual_router_id: Vrid,
    /// `priority` (1..=255, 255 = address owner).
    pub priority: Priority,
    /// `advert_int` (v2: whole seconds; v3: centiseconds).
    pub advert_int: AdvertInterval,
    /// `version` (2 or 3).
    pub version: Version,
    /// `authentication { auth_type PASS; auth_pass … }` (v2 only).
    pub authentication: Auth,
    /// `virtual_ipaddress`: added while master and carried in adverts (at most
    /// [`MAX_ADDRESSES_V4`] IPv4 or [`MAX_ADDRESSES_V6`] IPv6 addresses).
    pub virtual_ipaddress: Vec<Vip>,
    /// `virtual_ipaddress_excluded`: added and removed with the VIPs, announced with them,
    /// but never carried in adverts (so not compared with a peer's either); either family.
    pub virtual_ipaddress_excluded: Vec<Vip>,
    /// keepalived `virtual_routes`: added after the VIPs when the instance becomes Master,
    /// deleted before them when it leaves Master ([`crate::route`]). A route the kernel
    /// refuses is logged and skipped; the others are still added.
    pub virtual_routes: Vec<crate::route::VirtualRoute>,
    /// keepalived `virtual_rules`: added after the routes when the instance becomes
    /// Master, deleted before them when it leaves Master ([`crate::rule`]); a rule the
    /// kernel refuses is logged and skipped.
    pub virtual_rules: Vec<crate::rule::VirtualRule>,
    /// With [`VrrpInstanceConfig::resume_master`]: the routes its predecessor installed
    /// ([`InstanceStatus::installed_routes`]). Those of `virtual_routes` equal to one are
    /// this instance's own (deleted when it leaves Master); any other that is there
    /// already when it adds it is not.
    pub installed_routes: Vec<crate::route::VirtualRoute>,
    /// The same for `virtual_rules`.
    pub installed_rules: Vec<crate::rule::VirtualRule>,
    /// `unicast_src_ip`: source of unicast adverts (default: the interface's primary address).
    pub unicast_src_ip: Option<IpAddr>,
    /// keepalived `track_src_ip`: with `unicast_src_ip`, the instance is in Fault while its
    /// interface does not hold that address (at the start too), and leaves Fault when it is
    /// back. Without it a configured source that leaves the interface is used anyway, as
    /// keepalived (an advert source the instance chose itself is always followed). Default
    /// `false`.
    pub track_src_ip: bool,
    /// `unicast_peer`: when non-empty, adverts go to these peers only and come from them only.
    pub unicast_peer: Vec<IpAddr>,
    /// keepalived `dont_track_primary`: the instance's own interface (and its VMAC) going
    /// down does not put it in Fault. Default false: a link down is Fault, as keepalived.
    pub dont_track_primary: bool,
    /// keepalived `down_timer_adverts`: Master_Adver_Intervals a Backup waits before it
    /// takes over, 1..=100 ([`Config::down_timer_adverts`]). Default 3 (RFC 5798).
    pub down_timer_adverts: u8,
    /// keepalived `mcast_dst_ip` (or its global `vrrp_mcast_group4` / `vrrp_mcast_group6`):
    /// the multicast group adverts go to and are read from, of the instance's family
    /// (keepalived wants an IPv6 one of link-local scope). Default `None`: RFC 5798's 224.0.0.18 /
    /// ff02::12. Only adverts sent to the group are read (`IP_MULTICAST_ALL` off, as
    /// keepalived), so VRRP domains on other groups stay apart.
    pub mcast_dst_ip: Option<IpAddr>,
    /// `nopreempt`.
    pub nopreempt: bool,
    /// `preempt_delay`.
    pub preempt_delay: Duration,
    /// `accept` (true, keepalived's default) / `no_accept` (false): RFC 5798 Accept_Mode.
    /// False: while Master, and not the address owner, traffic to and from the VIPs is
    /// dropped by nftables rules ([`crate::accept`]), ARP and ND excepted.
    pub accept: bool,
    /// `skip_check_adv_addr`: as a Backup, accept adverts whose address list differs from
    /// ours when they come from the master last heard ([`Config::skip_check_adv_addr`]).
    /// Default `false`.
    pub skip_check_adv_addr: bool,
    /// `garp_master_delay` (0 disables the second burst).
    pub garp_master_delay: Duration,
    /// `garp_master_repeat`.
    pub garp_master_repeat: u32,
    /// `garp_master_refresh` (`None`: no periodic refresh).
    pub garp_master_refresh: Option<Duration>,
    /// `garp_master_refresh_repeat`: gratuitous ARPs per periodic burst (default 1).
    pub garp_master_refresh_repeat: u32,
    /// `garp_lower_prio_repeat`: gratuitous ARPs when, as Master, a lower-priority advert
    /// arrives (default 5; 0 sends none). See [`Config::garp_lower_prio_repeat`].
    pub garp_lower_prio_repeat: u32,
    /// `garp_lower_prio_delay`: the second such burst (default 5 s; 0 disables it).
    pub garp_lower_prio_delay: Duration,
    /// keepalived `vrrp_garp_interval`: the least time between two gratuitous ARPs sent
    /// out of one interface (a VMAC's count against its base interface) by the instances
    /// of the speakers that share a [`GarpPacer`] (see [`Speaker::set_garp_pacer`]; lb-node
    /// shares one among all its speakers), for switches and hypervisors that drop bursts.
    /// A message over that rate waits its turn, and is not sent if its instance has
    /// removed its VIPs meanwhile. Default 0: every burst at once. An interface of a
    /// [`GarpGroup`] ([`GarpPacer::set_groups`]) takes its group's interval instead.
    pub garp_interval: Duration,
    /// keepalived `unicast_ttl`: the TTL (IPv6 hop limit) of adverts sent to
    /// [`VrrpInstanceConfig::unicast_peer`]s, 1..=255, for peers a few routers away that
    /// should be reached no farther. Multicast adverts always leave with 255 (RFC 5798
    /// §5.1.1.3). Default 255.
    pub unicast_ttl: u8,
    /// keepalived `vrrp_gna_interval`: the same for unsolicited neighbour advertisements
    /// (IPv6 VIPs), counted apart from the ARPs. Default 0. An interface of a
    /// [`GarpGroup`] takes its group's interval instead.
    pub gna_interval: Duration,
    /// `lower_prio_no_advert`: no advert in answer to a lower-priority one (default
    /// `false`).
    pub lower_prio_no_advert: bool,
    /// `higher_prio_send_advert`: one advert of our own, as Master, in answer to a
    /// higher-priority one before becoming Backup (default `false`). See
    /// [`Config::higher_prio_send_advert`].
    pub higher_prio_send_advert: bool,
    /// Weights of tracked checks driven by the library user with
    /// [`SpeakerHandle::set_track`] (ids `0..track.len()`), see [`TrackWeight`].
    pub track: Vec<TrackWeight>,
    /// The health each [`VrrpInstanceConfig::track`] entry starts with, by index (missing:
    /// healthy), as known before the start: a weight-0 track already failing puts the
    /// instance in Fault from the first instant (keepalived: "entering FAULT state
    /// (interface eth1 down)" before it runs), and a weighted one counts from the start.
    pub track_initial: Vec<bool>,
    /// keepalived `track_script`: scripts the driver runs itself (their ids follow
    /// those of [`VrrpInstanceConfig::track`]).
    pub track_script: Vec<TrackScript>,
    /// keepalived `track_process`: process counts the driver watches itself (ids after
    /// the scripts'). Known from the start (a scan of `/proc`); then followed through the
    /// kernel's process events connector, or by a `/proc` scan every second where the
    /// connector is not available (any network namespace but the initial one).
    pub track_process: Vec<TrackProcess>,
    /// keepalived `track_file`: files the driver watches itself with inotify (ids after
    /// the processes'). Read at start; a missing file reads as 0.
    pub track_file: Vec<TrackFile>,
    /// Set by a daemon reloading its configuration when the instance this one replaces
    /// was Master and was stopped with [`SpeakerHandle::handover`]: it starts as Master at
    /// once (keepalived's `reload_master`, [`Config::resume_master`]), keeping the VIPs
    /// already on the interface instead of removing them first. Default false.
    pub resume_master: bool,
    /// keepalived `use_vmac` / `vmac_xmit_base`: the VIPs on a macvlan interface with the
    /// virtual router MAC of RFC 5798 §7.3, adverts sent from it ([`crate::vmac`]).
    /// Default `None`: the VIPs on [`VrrpInstanceConfig::interface`], with its MAC.
    pub use_vmac: Option<UseVmac>,
}

/// What an instance's tracked processes and files are at start, in the order of
/// [`VrrpInstanceConfig::track_process`] and [`VrrpInstanceConfig::track_file`]: quorum
/// held, and [`TrackFile::status`].
#[derive(Debug, Clone, Default)]
struct TrackedStart {
    /// `None`: not counted yet (the first count of `/proc` took too long).
    processes: Vec<Option<bool>>,
    files: Vec<i32>,
}

/// A keepalived `vrrp_script` tracked by an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackScript {
    /// Command line, run with `sh -c`; exit status 0 means healthy.
    pub script: String,
    /// `interval` between runs.
    pub interval: Duration,
    /// `timeout`: a run that takes longer counts as a failure.
    pub timeout: Duration,
    /// `weight` (see [`TrackWeight`]; 0 means a failure puts the instance in Fault).
    pub weight: TrackWeight,
    /// `weight … reverse`: the weight applies to the opposite result (a positive weight
    /// is taken off while the script succeeds, a negative one added back while it fails;
    /// with weight 0, success means Fault), as keepalived.
    pub reverse: bool,
    /// `rise`: consecutive successes to become healthy.
    pub rise: u32,
    /// `fall`: consecutive failures to become unhealthy.
    pub fall: u32,
    /// `user USER [GROUP]`: run as this user and group, with no supplementary groups.
    /// `None` (default): as the daemon's user.
    pub run_as: Option<RunAs>,
    /// The script's last result, when known before the start: a configuration reload
    /// carries it from the speaker it replaces (keepalived keeps a script's state across
    /// a reload). `None` (default): unknown until the first run, which a weight-0 script's
    /// instance waits for.
    pub initial: Option<bool>,
    /// keepalived `init_fail`: `initial` is the script's own result at the start (usually
    /// `Some(false)`: failed), and changing it takes `rise` successes or `fall` failures
    /// like any later change (keepalived's `result = 0`), where otherwise the first result
    /// decides at once. A weight-0 script's instance then starts in Fault instead of
    /// waiting for the first run. Default false.
    pub init_fail: bool,
}

/// The user and group a [`TrackScript`] runs as (keepalived `vrrp_script { user … }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id (the only group of the script: supplementary groups are dropped).
    pub gid: u32,
}

impl RunAs {
    /// Looks up `user` and `group` (default: the user's primary group) in the system's
    /// user database.
    ///
    /// # Errors
    /// A message naming the user or group that does not exist or cannot be looked up.
    pub fn resolve(user: &str, group: Option<&str>) -> std::result::Result<Self, String> {
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| format!("cannot look up user {user:?}: {e}"))?
            .ok_or_else(|| format!("unknown user {user:?}"))?;
        let gid = match group {
            None => u.gid,
            Some(g) => {
                nix::unistd::Group::from_name(g)
                    .map_err(|e| format!("cannot look up group {g:?}: {e}"))?
                    .ok_or_else(|| format!("unknown group {g:?}"))?
                    .gid
            }
        };
        Ok(Self {
            uid: u.uid.as_raw(),
            gid: gid.as_raw(),
        })
    }
}

impl TrackScript {
    /// keepalived's defaults: `interval 1`, timeout = interval, `weight 0`, `rise 1`, `fall 1`.
    pub fn new(script: &str) -> Self {
        Self {
            script: script.to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            weight: TrackWeight(0),
            reverse: false,
            rise: 1,
            fall: 1,
            run_as: None,
            initial: None,
            init_fail: false,
        }
    }

    /// The command of one run: `sh -c SCRIPT`, as [`TrackScript::run_as`] when set (std
    /// then drops the supplementary groups too), leading a process group of its own (so a
    /// timeout ends what it started too, [`run_script`]), killed when dropped.
    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c")
            .arg(&self.script)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(r) = self.run_as {
            c.gid(r.gid).uid(r.uid);
        }
        c
    }
}

impl VrrpInstanceConfig {
    /// An instance with keepalived's defaults: priority 100, `advert_int 1`, version 2, no
    /// authentication, no VIP, multicast, preempt, `garp_master_delay 5`,
    /// `garp_master_repeat 5`, no refresh, nothing tracked.
    pub fn new(name: &str, interface: &str, virtual_router_id: Vrid) -> Self {
        Self {
            name: name.to_owned(),
            interface: interface.to_owned(),
            virtual_router_id,
            priority: Priority::DEFAULT,
            advert_int: AdvertInterval::ONE_SECOND,
            version: Version::V2,
            authentication: Auth::None,
            virtual_ipaddress: Vec::new(),
            virtual_ipaddress_excluded: Vec::new(),
            virtual_routes: Vec::new(),
            virtual_rules: Vec::new(),
            installed_routes: Vec::new(),
            installed_rules: Vec::new(),
            unicast_src_ip: None,
            track_src_ip: false,
            unicast_peer: Vec::new(),
            mcast_dst_ip: None,
            down_timer_adverts: 3,
            dont_track_primary: false,
            nopreempt: false,
            preempt_delay: Duration::ZERO,
            skip_check_adv_addr: false,
            accept: true,
            garp_master_delay: Duration::from_secs(5),
            garp_master_repeat: 5,
            garp_master_refresh: None,
            garp_master_refresh_repeat: 1,
            garp_lower_prio_repeat: 5,
            garp_lower_prio_delay: Duration::from_secs(5),
            garp_interval: Duration::ZERO,
            unicast_ttl: VRRP_TTL,
            gna_interval: Duration::ZERO,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            track: Vec::new(),
            track_initial: Vec::new(),
            resume_master: false,
            track_script: Vec::new(),
            track_process: Vec::new(),
            track_file: Vec::new(),
            use_vmac: None,
        }
    }

    fn is_v6(&self) -> bool {
        self.unicast_src_ip
            .or_else(|| self.virtual_ipaddress.first().map(|v| v.addr))
            .or(self.mcast_dst_ip)
            .is_some_and(|a| a.is_ipv6())
    }

    /// The multicast group of the instance's adverts: [`VrrpInstanceConfig::mcast_dst_ip`],
    /// else RFC 5798's.
    fn group(&self) -> IpAddr {
        match self.mcast_dst_ip {
            Some(g) => g,
            None if self.is_v6() => IpAddr::V6(VRRP_MCAST_V6),
            None => IpAddr::V4(VRRP_MCAST_V4),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::Config(format!("{}: {why}", self.name)));
        if self.version == Version::V2 && self.advert_int.as_v2_secs().is_none() {
            return bad("VRRPv2 advert_int must be whole seconds");
        }
        if self.version == Version::V3 && !self.advert_int.fits_v3() {
            return bad("VRRPv3 advert_int must be at most 40.95 s");
        }
        if self.version == Version::V2 && self.is_v6() {
            return bad("VRRPv2 is IPv4 only");
        }
        if self.version == Version::V3 && self.authentication != Auth::None {
            return bad("VRRPv3 has no authentication");
        }
        let v6 = self.is_v6();
        if self
            .virtual_ipaddress
            .iter()
            .any(|v| v.addr.is_ipv6() != v6)
        {
            return bad("virtual_ipaddress mixes IPv4 and IPv6");
        }
        let max = if v6 {
            MAX_ADDRESSES_V6
        } else {
            MAX_ADDRESSES_V4
        };
        for p in &self.track_process {
            if !(-254..=254).contains(&p.weight.0) {
                return bad(&format!(
                    "track_process {}: weight {} is outside -254..=254",
                    p.name, p.weight.0
                ));
            }
            if p.quorum > p.quorum_max {
                return bad(&format!(
                    "track_process {}: quorum {} is above quorum_max {}",
                    p.name, p.quorum, p.quorum_max
                ));
            }
        }
        if self.virtual_ipaddress.len() > max {
            return bad(&format!(
                "{} addresses in virtual_ipaddress; an advert carries at most {max}",
                self.virtual_ipaddress.len()
            ));
        }
        if !(1..=100).contains(&self.down_timer_adverts) {
            return bad("down_timer_adverts must be 1..=100");
        }
        match self.mcast_dst_ip {
            Some(g) if g.is_ipv6() != v6 => {
                return bad("mcast_dst_ip must be of the instance's address family")
            }
            Some(IpAddr::V4(g)) if !g.is_multicast() => {
                return bad("mcast_dst_ip must be an IPv4 multicast address")
            }
            Some(IpAddr::V6(g)) if !g.is_multicast() => {
                return bad("mcast_dst_ip must be an IPv6 multicast address")
            }
            _ => {}
        }
        if let Some(vm) = &self.use_vmac {
            vm.validate(&self.interface).or_else(|why| bad(&why))?;
            if !self.unicast_peer.is_empty() && !vm.xmit_base {
                return bad(
                    "use_vmac with unicast peers needs vmac_xmit_base (keepalived sets it)",
                );
            }
        }
        Ok(())
    }

    /// The VIPs as placed with `use_vmac` (keepalived's rule): those of the instance's
    /// family without `dev`, or whose `dev` is the instance's interface, go on the VMAC
    /// (`dev` none: the instance's VIP interface); the other family's without `dev` stay
    /// on the instance's interface.
    fn place_vips_on_vmac(&mut self) {
        let v6 = self.is_v6();
        let base = self.interface.clone();
        for v in self
            .virtual_ipaddress
            .iter_mut()
            .chain(self.virtual_ipaddress_excluded.iter_mut())
        {
            if v.addr.is_ipv6() == v6 {
                if v.dev.as_deref() == Some(base.as_str()) {
                    v.dev = None;
                }
            } else if v.dev.is_none() {
                v.dev = Some(base.clone());
            }
        }
    }

    /// The state machine's configuration, advertising from `src`: its VIPs (those adverts
    /// carry and received adverts are compared with) are `virtual_ipaddress` only, never
    /// `virtual_ipaddress_excluded`.
    fn machine_config(&self, src: IpAddr, tracked: &TrackedStart) -> Config {
        let vip_addrs: Vec<IpAddr> = self.virtual_ipaddress.iter().map(|v| v.addr).collect();
        let mut mc = Config::new(self.virtual_router_id, src, vip_addrs);
        mc.version = self.version;
        mc.priority = self.priority;
        mc.advert_interval = self.advert_int;
        mc.auth = self.authentication;
        mc.unicast_peers = self.unicast_peer.clone();
        mc.preempt = !self.nopreempt;
        mc.preempt_delay = self.preempt_delay;
        mc.accept_mode = self.accept;
        mc.down_timer_adverts = self.down_timer_adverts;
        mc.skip_check_adv_addr = self.skip_check_adv_addr;
        mc.garp_master_delay = Some(self.garp_master_delay).filter(|d| !d.is_zero());
        mc.garp_master_repeat = self.garp_master_repeat;
        mc.garp_master_refresh = self.garp_master_refresh;
        mc.garp_master_refresh_repeat = self.garp_master_refresh_repeat;
        mc.garp_lower_prio_repeat = self.garp_lower_prio_repeat;
        mc.garp_lower_prio_delay = Some(self.garp_lower_prio_delay).filter(|d| !d.is_zero());
        mc.lower_prio_no_advert = self.lower_prio_no_advert;
        mc.higher_prio_send_advert = self.higher_prio_send_advert;
        mc.resume_master = self.resume_master;
        mc.tracks = self
            .track
            .iter()
            .copied()
            // `reverse`: the opposite weight on the opposite result (script_loop).
            .chain(self.track_script.iter().map(|s| {
                if s.reverse {
                    TrackWeight(-s.weight.0)
                } else {
                    s.weight
                }
            }))
            .chain(self.track_process.iter().map(|p| p.as_track(true).0))
            // A file's Fault is a weight-0 track failing; its value an offset.
            .chain(self.track_file.iter().map(|_| TrackWeight(0)))
            .collect();
        // Scripts are unknown until their first result (keepalived's INIT state: no weight,
        // no fault; the speaker holds a weight-0 one's instance in Initialize meanwhile),
        // unless a reload carried their last one.
        // Processes and files are known: counted and read before the start.
        mc.track_start = (0..self.track.len())
            .map(|i| Some(self.track_initial.get(i).copied().unwrap_or(true)))
            .chain(
                self.track_script
                    .iter()
                    .map(|s| s.initial.map(|own| own != s.reverse)),
            )
            .chain(
                self.track_process
                    .iter()
                    .zip(&tracked.processes)
                    .map(|(p, up)| up.map(|up| p.as_track(up).1)),
            )
            .chain(tracked.files.iter().map(|v| Some(*v > TRACK_VALUE_FAULT)))
            .collect();
        let before_files = self.track.len() + self.track_script.len() + self.track_process.len();
        mc.track_offset_start = std::iter::repeat_n(0, before_files)
            .chain(
                tracked
                    .files
                    .iter()
                    .map(|v| if *v > TRACK_VALUE_FAULT { *v } else { 0 }),
            )
            .collect();
        mc
    }

    /// Every address the instance adds while master: the advertised ones, then the
    /// excluded ones.
    fn all_vips(&self) -> impl Iterator<Item = &Vip> {
        self.virtual_ipaddress
            .iter()
            .chain(&self.virtual_ipaddress_excluded)
    }
}

/// Logs the outcome of adding back tracked route or rule `key` (`what`: its text) of a
/// Master: added (it had been deleted), there, or failing (logged once until it works).
fn track_result(
    failed: &mut HashSet<(bool, usize)>,
    instance: &str,
    key: (bool, usize),
    what: &str,
    r: std::result::Result<bool, String>,
) {
    let kind = if key.0 { "rule" } else { "route" };
    match r {
        Ok(true) => {
            failed.remove(&key);
            tracing::warn!(instance = %instance, "virtual {kind} {what} deleted while MASTER: added back");
        }
        Ok(false) => {
            failed.remove(&key);
        }
        Err(e) if failed.insert(key) => {
            tracing::error!(instance = %instance, error = %e, "virtual {kind} deleted while MASTER: cannot add it back (tried again every second)");
        }
        Err(e) => {
            tracing::debug!(instance = %instance, error = %e, "adding back a virtual {kind}");
        }
    }
}

/// How often a Master's tracked routes and rules are looked at (added again if missing).
const TRACK_ROUTES_EVERY: Duration = Duration::from_secs(1);

/// The indexes whose flag in `set` is on; every flag is off afterwards.
fn take_set(set: &std::sync::Mutex<Vec<bool>>) -> Vec<usize> {
    let mut set = lock(set);
    let on = set
        .iter()
        .enumerate()
        .filter_map(|(k, s)| s.then_some(k))
        .collect();
    set.iter_mut().for_each(|s| *s = false);
    on
}

/// The entries of `all` whose flag in `set` is on.
fn installed<T: Clone>(all: &[T], set: &std::sync::Mutex<Vec<bool>>) -> Vec<T> {
    let set = lock(set);
    all.iter()
        .zip(set.iter())
        .filter(|(_, s)| **s)
        .map(|(x, _)| x.clone())
        .collect()
}

/// Locks `m`, whatever a panicking holder left (the flags stay meaningful).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A state change of one instance, for the library user (the binary maps these to
/// keepalived's `notify_master` / `notify_backup` / `notify_fault` / `notify_stop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Instance name.
    pub instance: String,
    /// Its VRID.
    pub vrid: Vrid,
    /// Old state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// Effective priority after the change.
    pub priority: Priority,
}

/// What happened to an instance that is not a transition, for the library user (the
/// binary maps these to keepalived's notify FIFO lines `MASTER_PRIORITY` /
/// `BACKUP_PRIORITY` and `MASTER_RX_LOWER_PRI`, and its `notify_master_rx_lower_pri`
/// script). Several of one kind between two reads of the instance may come as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Instance name.
    pub instance: String,
    /// Its VRID.
    pub vrid: Vrid,
    /// Its state now.
    pub state: State,
    /// Its effective priority now.
    pub priority: Priority,
    /// What happened.
    pub kind: NoticeKind,
}

/// What a [`Notice`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The effective priority changed: a tracked check or file, or a new base priority.
    PriorityChanged,
    /// As Master, the instance heard an advert of lower priority: another node took over
    /// while they could not hear each other (keepalived's `MASTER_RX_LOWER_PRI`; for a
    /// cloud's address assignment, the moment to take the address back).
    MasterRxLowerPriority,
}

#[derive(Debug)]
enum Control {
    Shutdown,
    Handover(tokio::sync::oneshot::Sender<Vec<InstanceStatus>>),
    SetPriority(usize, Priority),
    Track(usize, TrackId, bool),
    TrackValue(usize, TrackId, i32),
    Status(tokio::sync::oneshot::Sender<Vec<InstanceStatus>>),
}

/// A snapshot of one instance, from [`SpeakerHandle::status`] (for metrics and `lbctl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Instance name.
    pub instance: String,
    /// Current state.
    pub state: State,
    /// Effective priority.
    pub priority: Priority,
    /// The current master's address: ours while Master, the source of the last accepted
    /// advert while Backup, `None` before one is heard.
    pub master: Option<IpAddr>,
    /// Counters, including every discarded packet by [`crate::machine::Discard`] reason.
    pub counters: Counters,
    /// Each tracked check's state, by [`TrackId`]: [`VrrpInstanceConfig::track`], then the
    /// scripts, processes and files. A reversed script or process shows the state the
    /// weight applies to (the opposite of its own result).
    pub tracks: Vec<TrackState>,
    /// The virtual routes and rules this instance installed (keepalived's `set`: those it
    /// deletes when it leaves Master). A successor after a hand-over takes them as
    /// [`VrrpInstanceConfig::installed_routes`] / `installed_rules`.
    pub installed_routes: Vec<crate::route::VirtualRoute>,
    /// See `installed_routes`.
    pub installed_rules: Vec<crate::rule::VirtualRule>,
}

/// Commands to a running [`Speaker`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpeakerHandle {
    tx: mpsc::UnboundedSender<Control>,
}

impl SpeakerHandle {
    /// Stops every instance: masters send priority 0 and remove their VIPs, then
    /// [`Speaker::run`] returns.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Control::Shutdown);
    }
    /// Stops every instance as they are, for a successor that takes over (a
    /// configuration reload): no priority-0 advert, no transition, the VIPs and the
    /// Accept_Mode drop rules stay; then [`Speaker::run`] returns. Returns each instance's
    /// status at the moment it stopped (`None` if the speaker had already stopped). Start
    /// the successor's instances that were Master with
    /// [`VrrpInstanceConfig::resume_master`] within a Master_Down_Interval, or a peer takes
    /// over. [`VrrpInstanceConfig::use_vmac`] interfaces stay too, VIPs on them, with the
    /// settings changed for them: the successor must have the same `use_vmac` (name, MAC)
    /// to take each over, or the caller removes it with [`crate::vmac::discard`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the speaker stops even if the answer is dropped.
    pub async fn handover(&self) -> Option<Vec<InstanceStatus>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Control::Handover(tx)).ok()?;
        rx.await.ok()
    }
    /// Sets the base priority of instance `index` (in the order given to [`Speaker::new`]).
    pub fn set_priority(&self, index: usize, priority: Priority) {
        let _ = self.tx.send(Control::SetPriority(index, priority));
    }
    /// Reports the health of tracked check `track` of instance `index`.
    pub fn set_track(&self, index: usize, track: TrackId, healthy: bool) {
        let _ = self.tx.send(Control::Track(index, track, healthy));
    }
    /// State, priority and counters of every instance; `None` if the speaker has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn status(&self) -> Option<Vec<InstanceStatus>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Control::Status(tx)).ok()?;
        rx.await.ok()
    }
}

struct Rx {
    instance: usize,
    meta: RxMeta,
    bytes: Vec<u8>,
}

struct Instance {
    cfg: VrrpInstanceConfig,
    /// The interface the VIPs without `dev` go on: the VMAC with `use_vmac`, else
    /// `cfg.interface`.
    vip_if: String,
    /// `vip_if`'s index.
    ifindex: u32,
    /// The interface adverts leave from and are read on: the VMAC with `use_vmac`
    /// (unless `vmac_xmit_base`), else `cfg.interface`.
    sock_if: String,
    /// `sock_if`'s index.
    sock_ifindex: u32,
    /// The VMAC, deleted with the instance unless handed over.
    vmac: Option<VmacLink>,
    /// `vip_if`'s MAC address.
    mac: Option<[u8; 6]>,
    /// The advert source; the unspecified address while `has_src` is false.
    src: IpAddr,
    socket: Arc<AsyncFd<Socket>>,
    send_socket: Socket,
    announce: Option<Arc<Announcer>>,
    /// Bumped when the VIPs are removed: gratuitous ARPs / NAs still waiting for their
    /// turn ([`VrrpInstanceConfig::garp_interval`]) see it and are not sent.
    announce_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// The interface is up (as last seen).
    link_up: bool,
    /// `src` is an address the interface holds (or `unicast_src_ip`).
    has_src: bool,
    /// VIPs whose re-adding (see [`Speaker::restore_vips`]) failed, logged once.
    restore_failed: HashSet<IpAddr>,
    /// Failed attempts to recreate the VMAC or its sockets in a row (the first is logged),
    /// and when to try again (doubling from 1 s to at most 32 s).
    vmac_failures: u32,
    vmac_retry_at: Option<tokio::time::Instant>,
    /// The VMAC was recreated but its sockets not: Fault until they open.
    sockets_lost: bool,
    /// The VIPs are in the Accept_Mode drop set.
    dropping: std::sync::atomic::AtomicBool,
    /// Which of `virtual_routes` / `virtual_rules` this instance installed (keepalived's
    /// `set`): only those are deleted when it leaves Master. A route equal to one there
    /// already counts as installed (keepalived takes the kernel's EEXIST for success); a
    /// rule does not, so that an equal rule that was there before stays. A resumed
    /// Master's own are those its predecessor installed (`installed_routes` / `_rules`).
    routes_set: std::sync::Mutex<Vec<bool>>,
    rules_set: std::sync::Mutex<Vec<bool>>,
    /// Tracked routes and rules (by index; `true` for a rule) whose re-adding failed,
    /// logged once.
    track_failed: HashSet<(bool, usize)>,
    /// The effective priority and the count of lower-priority adverts received as Master
    /// last reported ([`Notice`]).
    seen_priority: Priority,
    seen_lower_rx: u64,
    group: usize,
    member: usize,
}

impl Drop for Instance {
    /// Gratuitous ARPs / NAs still waiting for their turn are not sent for an instance
    /// that stopped (or handed over to a successor, which announces for itself).
    fn drop(&mut self) {
        self.announce_epoch.fetch_add(1, Ordering::Relaxed);
    }
}

impl Instance {
    /// Records a failed VMAC recreation: logged the first time, tried again after a
    /// delay doubling from 1 s to 32 s.
    fn vmac_failed(&mut self, error: &str) {
        if self.vmac_failures == 0 {
            tracing::error!(instance = %self.cfg.name, interface = %self.vip_if, %error, "interface (or VMAC) deleted and not set up again: FAULT, tried again later");
        }
        let delay = Duration::from_secs(1 << self.vmac_failures.min(5));
        self.vmac_failures = self.vmac_failures.saturating_add(1);
        self.vmac_retry_at = Some(tokio::time::Instant::now() + delay);
    }

    /// The task that reads this instance's adverts (instance `i`) into `tx`.
    fn receive(&self, i: usize, tx: mpsc::Sender<Rx>) -> impl std::future::Future<Output = ()> {
        recv_loop(
            i,
            self.socket.clone(),
            self.cfg.virtual_router_id,
            self.cfg.group(),
            tx,
        )
    }

    /// keepalived's `track_src_ip`: Fault while the interface does not hold the configured
    /// source `src`; when it is back, a new send socket bound to it (the old one may have
    /// lost its address).
    fn track_configured_src(&mut self, ifs: &vip::Interfaces, src: IpAddr) {
        let held = ifs.has_address(&self.cfg.interface, src);
        if held == self.has_src {
            return;
        }
        if !held {
            tracing::warn!(instance = %self.cfg.name, %src, "unicast_src_ip gone from the interface: FAULT until it is back (track_src_ip)");
            self.has_src = false;
            return;
        }
        match open_send_socket(&self.cfg, &self.sock_if, self.sock_ifindex, src) {
            Ok(tx) => {
                tracing::info!(instance = %self.cfg.name, %src, "unicast_src_ip back on the interface");
                self.send_socket = tx;
                self.has_src = true;
            }
            Err(e) => {
                tracing::debug!(instance = %self.cfg.name, %src, error = %e, "cannot open the advert socket");
            }
        }
    }

    /// Checks that the advert source is still on the interface (without
    /// `unicast_src_ip`): when it is gone the instance has none (Fault) until the interface
    /// holds a usable address again, which becomes the source (a new send socket bound to
    /// it). `ifs`: this tick's reading of the interfaces. Returns the new source when it
    /// changed.
    fn refresh_src(&mut self, ifs: &vip::Interfaces) -> Option<IpAddr> {
        if let (Some(src), true) = (self.cfg.unicast_src_ip, self.cfg.track_src_ip) {
            self.track_configured_src(ifs, src);
            return None;
        }
        if self.cfg.unicast_src_ip.is_some()
            || (self.has_src && ifs.has_address(&self.cfg.interface, self.src))
        {
            return None;
        }
        let all: Vec<IpAddr> = self.cfg.all_vips().map(|v| v.addr).collect();
        let Some(src) = ifs.primary_address(&self.cfg.interface, self.src.is_ipv6(), &all) else {
            if self.has_src {
                tracing::warn!(instance = %self.cfg.name, src = %self.src, "advert source gone from the interface: FAULT until it holds a usable address");
                self.has_src = false;
            }
            return None;
        };
        match open_send_socket(&self.cfg, &self.sock_if, self.sock_ifindex, src) {
            Ok(tx) => {
                tracing::info!(instance = %self.cfg.name, %src, "advert source");
                self.send_socket = tx;
                self.src = src;
                self.has_src = true;
                Some(src)
            }
            Err(e) => {
                // No socket bound to a source we hold: Fault until one opens (tried again
                // at every tick, logged once).
                if self.has_src {
                    tracing::warn!(instance = %self.cfg.name, %src, error = %e, "cannot open the advert socket: FAULT until it opens");
                    self.has_src = false;
                } else {
                    tracing::debug!(instance = %self.cfg.name, %src, error = %e, "cannot open the advert socket");
                }
                None
            }
        }
    }
}

/// Runs one or more VRRP instances (all in one sync group, or each on its own).
#[derive(Debug)]
pub struct Speaker {
    instances: Vec<Instance>,
    groups: Vec<SyncGroup>,
    members: Vec<Vec<usize>>,
    vips: VipManager,
    /// Installed by [`Speaker::run`] when an instance runs without Accept_Mode.
    drop_rules: Option<DropRules>,
    events: broadcast::Sender<Event>,
    notices: broadcast::Sender<Notice>,
    /// When the Masters' tracked routes and rules were last looked at
    /// ([`TRACK_ROUTES_EVERY`]).
    routes_checked: Option<tokio::time::Instant>,
    ctl_tx: mpsc::UnboundedSender<Control>,
    ctl_rx: mpsc::UnboundedReceiver<Control>,
    /// The `track_file` watcher, started by [`Speaker::run`].
    files: Option<track::FileWatcher>,
    /// Tracked processes whose first count was not done when [`Speaker::new`] returned:
    /// their instances wait for it, as for a weight-0 script's first result.
    uncounted: Vec<(usize, TrackId)>,
    /// How often interfaces are read besides netlink's notices ([`Speaker::set_link_poll`]).
    link_poll: Duration,
    /// While [`Speaker::run`] runs: where the receive tasks send, and each instance's
    /// receive task (restarted on new sockets when a VMAC is recreated).
    receivers: Option<(mpsc::Sender<Rx>, Vec<tokio::task::JoinHandle<()>>)>,
    /// Counts VMAC recreations (their interface indexes change).
    vmac_generation: u64,
    /// keepalived `vrrp_startup_delay` ([`Speaker::set_startup_delay`]).
    startup_delay: Duration,
    /// Spacing of gratuitous ARPs / NAs ([`Speaker::set_garp_pacer`]).
    pacer: GarpPacer,
    /// Where the tracked scripts run ([`Speaker::set_script_runners`]).
    scripts: ScriptRunners,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.cfg.name)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Speaker {
    /// Opens the sockets of every instance. With `sync_group`, the instances form one
    /// keepalived `vrrp_sync_group` ([`SyncGroup`]).
    ///
    /// Must be called inside a tokio runtime (it spawns the netlink connection).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an inconsistent instance, [`Error::Vip`] for an unknown
    /// interface, [`Error::Io`] if a socket cannot be opened (usually: no `CAP_NET_RAW`).
    /// An interface that holds no usable address yet (no IPv4 address, or no IPv6
    /// link-local one while it is down) is no error: its instance starts in Fault and
    /// leaves it once the interface holds one, which becomes the advert source, as in
    /// keepalived. Without `unicast_src_ip`, an advert source removed from the interface
    /// later also means Fault until another address appears.
    pub fn new(configs: Vec<VrrpInstanceConfig>, sync_group: bool) -> Result<Self> {
        Self::build(configs, sync_group, true)
    }

    /// What [`Speaker::new`] checks, without starting anything: the configurations, the
    /// interfaces, the sockets and the tracked files' directories (a daemon checks a new
    /// configuration before it stops the running one). Tracked processes are not counted.
    ///
    /// # Errors
    /// As [`Speaker::new`].
    pub fn check(configs: Vec<VrrpInstanceConfig>, sync_group: bool) -> Result<()> {
        Self::build(configs, sync_group, false).map(drop)
    }

    fn build(
        configs: Vec<VrrpInstanceConfig>,
        sync_group: bool,
        follow_processes: bool,
    ) -> Result<Self> {
        for cfg in &configs {
            cfg.validate()?;
        }
        // Tracked processes and files are counted and read before the instances start, so
        // that their state holds from the first instant (keepalived reads them at start).
        let (procs, files) = track::collect(&configs);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        // On a thread of its own, which ends once this speaker is gone (its channel
        // closes); its reports wait in the channel until the speaker runs. Not for a
        // check ([`Speaker::check`]).
        let (processes, watcher) = if procs.is_empty() || !follow_processes {
            (Vec::new(), None)
        } else {
            track::ProcessWatcher::start(procs, ctl_tx.clone())
        };
        // Waited for only if a watcher will report them.
        let uncounted: Vec<(usize, TrackId)> = if watcher.is_some() {
            processes
                .iter()
                .filter(|(_, _, up)| up.is_none())
                .map(|(i, id, _)| (*i, *id))
                .collect()
        } else {
            Vec::new()
        };
        let files = if files.is_empty() {
            None
        } else {
            Some(track::FileWatcher::new(files)?)
        };
        let mut instances = Vec::new();
        let mut routers = Vec::new();
        for (i, mut cfg) in configs.into_iter().enumerate() {
            let base_ifindex = VipManager::ifindex(&cfg.interface).map_err(|_| {
                Error::Config(format!(
                    "vrrp_instance {}: interface {:?} does not exist",
                    cfg.name, cfg.interface
                ))
            })?;
            let v6 = cfg.is_v6();
            // The VMAC exists from the start, whatever the state (keepalived); a check
            // creates nothing and opens its sockets on the base interface.
            let vmac = match &cfg.use_vmac {
                Some(vm) if follow_processes => Some(VmacLink::set_up(&cfg.interface, vm, v6)?),
                _ => None,
            };
            if cfg.use_vmac.is_some() {
                cfg.place_vips_on_vmac();
            }
            let (vip_if, ifindex) = match &vmac {
                Some(l) => (l.name.clone(), l.ifindex),
                None => (cfg.interface.clone(), base_ifindex),
            };
            let (sock_if, sock_ifindex) = match &cfg.use_vmac {
                Some(vm) if !vm.xmit_base => (vip_if.clone(), ifindex),
                _ => (cfg.interface.clone(), base_ifindex),
            };
            // Never our own VIPs, advertised or not, as the advert source.
            let all_addrs: Vec<IpAddr> = cfg.all_vips().map(|v| v.addr).collect();
            // The advert source: unicast_src_ip, else the interface's first address of the
            // VIPs' family (IPv6: link-local). With none yet (no IPv4 address configured
            // yet, an IPv6 interface down at boot), the instance starts in Fault, as
            // keepalived's "no IPv4 address for interface", until one appears.
            let found = match cfg.unicast_src_ip {
                Some(a) => Some(a),
                None => vip::primary_address(&cfg.interface, v6, &all_addrs),
            };
            let src = found.unwrap_or(if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            });
            if found.is_none() {
                tracing::warn!(instance = %cfg.name, interface = %cfg.interface, "no usable {} address on the interface: FAULT until one appears", if v6 { "IPv6 link-local" } else { "IPv4" });
            }
            // track_src_ip: the configured source must be on the interface (the sockets
            // bind to it anyway, with IP_FREEBIND).
            let src_held = match cfg.unicast_src_ip {
                Some(a) if cfg.track_src_ip => {
                    let held = vip::Interfaces::read().has_address(&cfg.interface, a);
                    if !held {
                        tracing::warn!(instance = %cfg.name, interface = %cfg.interface, src = %a, "unicast_src_ip is not on the interface: FAULT until it is (track_src_ip)");
                    }
                    held
                }
                _ => found.is_some(),
            };
            let (socket, send_socket) = open_vrrp_sockets(&cfg, &sock_if, sock_ifindex, src)?;
            let announce = match open_announce_socket(&cfg, &vip_if, ifindex) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(instance = %cfg.name, error = %e, "cannot open GARP/NA socket");
                    None
                }
            };
            let base = cfg.track.len() + cfg.track_script.len();
            let tracked = TrackedStart {
                processes: (0..cfg.track_process.len())
                    .map(|k| {
                        processes
                            .iter()
                            .find(|(inst, id, _)| *inst == i && *id == TrackId(base + k))
                            .and_then(|(_, _, up)| *up)
                    })
                    .collect(),
                files: (0..cfg.track_file.len())
                    .map(|k| {
                        let id = TrackId(base + cfg.track_process.len() + k);
                        files.as_ref().and_then(|w| w.status(i, id)).unwrap_or(0)
                    })
                    .collect(),
            };
            let mc = cfg.machine_config(src, &tracked);
            routers.push(VirtualRouter::new(mc));
            let link_up = cfg.dont_track_primary
                || (vip::link_is_up(&cfg.interface) && vip::link_is_up(&vip_if));
            instances.push(Instance {
                mac: vip::mac_address(&vip_if).ok(),
                vip_if,
                sock_if,
                sock_ifindex,
                vmac,
                link_up,
                has_src: src_held,
                restore_failed: HashSet::new(),
                vmac_failures: 0,
                vmac_retry_at: None,
                sockets_lost: false,
                // A resumed no_accept Master's predecessor left its drop elements.
                dropping: std::sync::atomic::AtomicBool::new(cfg.resume_master && !cfg.accept),
                routes_set: std::sync::Mutex::new(
                    cfg.virtual_routes
                        .iter()
                        .map(|r| cfg.resume_master && cfg.installed_routes.contains(r))
                        .collect(),
                ),
                rules_set: std::sync::Mutex::new(
                    cfg.virtual_rules
                        .iter()
                        .map(|r| cfg.resume_master && cfg.installed_rules.contains(r))
                        .collect(),
                ),
                track_failed: HashSet::new(),
                cfg,
                ifindex,
                src,
                socket: Arc::new(sys::async_socket(socket)?),
                send_socket,
                announce,
                announce_epoch: Arc::default(),
                seen_priority: routers
                    .last()
                    .map_or(Priority::DEFAULT, VirtualRouter::effective_priority),
                seen_lower_rx: 0,
                group: if sync_group { 0 } else { i },
                member: if sync_group { i } else { 0 },
            });
        }
        let (groups, members) = if sync_group {
            (
                vec![SyncGroup::new(routers)],
                vec![(0..instances.len()).collect()],
            )
        } else {
            let n = routers.len();
            (
                routers
                    .into_iter()
                    .map(|r| SyncGroup::new(vec![r]))
                    .collect(),
                (0..n).map(|i| vec![i]).collect(),
            )
        };
        Ok(Self {
            instances,
            groups,
            members,
            vips: VipManager::new()?,
            drop_rules: None,
            events: broadcast::channel(64).0,
            notices: broadcast::channel(64).0,
            routes_checked: None,
            ctl_tx,
            ctl_rx,
            files,
            uncounted,
            link_poll: LINK_POLL,
            receivers: None,
            vmac_generation: 0,
            startup_delay: Duration::ZERO,
            pacer: GarpPacer::new(),
            scripts: ScriptRunners::default(),
        })
    }

    /// How often the speaker reads the interfaces (link state, addresses, its VIPs) on
    /// its own. It also reads them at once whenever netlink reports a link or address
    /// change, as keepalived reacts to netlink; the poll is the safety net for a lost
    /// notice. Default 200 ms; at least 10 ms.
    pub fn set_link_poll(&mut self, every: Duration) {
        self.link_poll = every.max(Duration::from_millis(10));
    }

    /// keepalived `vrrp_startup_delay`: for this long after [`Speaker::run`] starts, no
    /// instance becomes Master (interfaces such as bonds may pass no traffic for seconds
    /// after boot, and an instance started then would become Master over a peer it cannot
    /// hear yet). The instances start at once, as Backup or Fault with their
    /// notifications; a Backup's Master_Down timer runs from the delay's end, and an
    /// address owner becomes Master at its end (in a sync group, with the others)
    /// ([`crate::machine::VirtualRouter::delay_start_until`]). A sync group with a resumed
    /// Master ([`VrrpInstanceConfig::resume_master`]) is not delayed. Default zero.
    pub fn set_startup_delay(&mut self, delay: Duration) {
        self.startup_delay = delay;
    }

    /// The spacing of gratuitous ARPs / NAs ([`VrrpInstanceConfig::garp_interval`]) this
    /// speaker shares: give every speaker of a process the same [`GarpPacer`] to space
    /// their messages together, as keepalived spaces those of all its instances. Default:
    /// one of its own.
    pub fn set_garp_pacer(&mut self, pacer: GarpPacer) {
        self.pacer = pacer;
    }

    /// The tracked scripts' runners this speaker shares ([`ScriptRunners`]): give every
    /// speaker of a process the same, and a `vrrp_script` tracked by instances of several
    /// speakers runs once per `interval` for all of them, as keepalived runs it. Default:
    /// its own (shared by its own instances).
    pub fn set_script_runners(&mut self, runners: ScriptRunners) {
        self.scripts = runners;
    }

    /// A handle to send commands.
    pub fn handle(&self) -> SpeakerHandle {
        SpeakerHandle {
            tx: self.ctl_tx.clone(),
        }
    }

    /// Subscribes to state-change events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The [`Notice`]s of every instance (what is not a transition: a changed effective
    /// priority, a lower-priority advert heard as Master).
    pub fn subscribe_notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Runs until [`SpeakerHandle::shutdown`]: removes stale VIPs, starts every instance
    /// and drives it. An instance with weight-0 `track_script`s stays in Initialize until
    /// each has given its first result (at most its `timeout`), as keepalived holds it in
    /// INIT, and so do the other members of its sync group; likewise for tracked processes
    /// whose first count was not done when [`Speaker::new`] returned (at most 5 s). A
    /// group with a resumed Master waits for nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Accept`] at once if an instance runs without Accept_Mode and its nftables
    /// table cannot be installed. Nothing after that: send, netlink, ARP and nftables
    /// failures are logged and the speaker goes on. On return its addresses are out of
    /// the drop set, but the table stays (shared by the process's speakers): see
    /// [`DropRules::uninstall`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future leaves VIPs in place without a priority-0
    /// advert; use [`SpeakerHandle::shutdown`].
    pub async fn run(mut self) -> Result<()> {
        // Addresses a crashed or reloaded predecessor left in the drop set, like its VIPs
        // below, except a resumed no_accept Master's (dropped still); also when no instance
        // here needs the table any more (no_accept turned off).
        let stale: Vec<IpAddr> = self
            .instances
            .iter()
            .filter(|inst| !inst.cfg.resume_master || inst.cfg.accept)
            .flat_map(|inst| inst.cfg.all_vips().map(|v| v.addr))
            .collect();
        if self.instances.iter().any(|inst| !inst.cfg.accept) {
            let rules = DropRules::install().await?;
            if let Err(e) = rules.accept_addresses(&stale).await {
                tracing::warn!(error = %e, "removing stale Accept_Mode drop rules");
            }
            self.drop_rules = Some(rules);
        } else if let Err(e) = DropRules::clear_stale(&stale).await {
            // Usually: no table (or no nft), so nothing to clear.
            tracing::debug!(error = %e, "no stale Accept_Mode drop rules cleared");
        }
        // A resumed master keeps its VIPs: its predecessor handed them over. Others' rules
        // and VIPs a crashed predecessor left are deleted, in that order; routes are not
        // (keepalived's vrrp_restore_interfaces_startup forces the rules' deletion only).
        for inst in self.instances.iter().filter(|i| !i.cfg.resume_master) {
            for r in &inst.cfg.virtual_rules {
                if let Err(e) = self.vips.remove_rule(r).await {
                    tracing::warn!(instance = %inst.cfg.name, error = %e, "removing stale virtual rule");
                }
            }
            for v in inst.cfg.all_vips() {
                if let Err(e) = self.vips.remove(inst.ifindex, v).await {
                    tracing::warn!(instance = %inst.cfg.name, vip = %v.addr, error = %e, "removing stale VIP");
                }
            }
        }
        let (rx_tx, mut rx) = mpsc::channel::<Rx>(1024);
        let mut tasks = Vec::new();
        let receive: Vec<_> = self
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| tokio::spawn(inst.receive(i, rx_tx.clone())))
            .collect();
        self.receivers = Some((rx_tx, receive));
        for (i, inst) in self.instances.iter().enumerate() {
            for (k, script) in inst.cfg.track_script.iter().enumerate() {
                let id = TrackId(inst.cfg.track.len() + k);
                tasks.push(tokio::spawn(script_loop(
                    i,
                    id,
                    script.clone(),
                    self.scripts.clone(),
                    self.ctl_tx.clone(),
                )));
            }
        }
        if let Some(w) = self.files.take() {
            tasks.push(tokio::spawn(w.run(self.ctl_tx.clone())));
        }
        // keepalived holds an instance in INIT until its weight-0 scripts have given their
        // first result: one that fails puts it in Fault before it could become Master (an
        // owner at once). A group starts once none of its members' is still unknown.
        let mut awaiting: Vec<HashSet<(usize, TrackId)>> = self
            .members
            .iter()
            .map(|members| {
                // A group with a resumed Master does not wait: its predecessor's checks
                // were good (keepalived's INIT_GOOD across a reload), and waiting would
                // stop its adverts long enough for a peer to take over (a member the
                // reload added included: the group starts as one).
                let resumed = members.iter().any(|&i| self.instances[i].cfg.resume_master);
                members
                    .iter()
                    .filter(move |_| !resumed)
                    .flat_map(|&i| {
                        let cfg = &self.instances[i].cfg;
                        cfg.track_script
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| s.weight.0 == 0 && s.initial.is_none())
                            .map(move |(k, _)| (i, TrackId(cfg.track.len() + k)))
                    })
                    // Processes whose first count came too late for Speaker::new: the
                    // watcher reports each once it is done (weighted ones too, or the
                    // instance would start at a priority it does not have).
                    .chain(
                        self.uncounted
                            .iter()
                            .filter(move |(i, _)| !resumed && members.contains(i))
                            .copied(),
                    )
                    .collect()
            })
            .collect();
        let t = now();
        // vrrp_startup_delay: no group but one with a resumed Master takes over before its
        // end (keepalived's vrrp_delayed_start_time).
        if !self.startup_delay.is_zero() {
            tracing::info!(delay = ?self.startup_delay, "vrrp_startup_delay: no instance becomes MASTER before it ends");
            for (gi, members) in self.members.iter().enumerate() {
                if !members.iter().any(|&i| self.instances[i].cfg.resume_master) {
                    self.groups[gi].delay_start_until(t + self.startup_delay);
                }
            }
        }
        for (gi, waiting) in awaiting.iter().enumerate() {
            if waiting.is_empty() {
                self.start_group(gi, t);
            }
        }
        // Processes not counted yet are waited for at most this long: a count stuck in
        // /proc (a process hung in the kernel) must not keep the instances from starting.
        let uncounted_deadline = tokio::time::Instant::now() + UNCOUNTED_WAIT;
        let mut link_tick = tokio::time::interval(self.link_poll);
        link_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Link and address changes as netlink reports them: a link going down is Fault at
        // once, a VIP deleted by someone else is added back at once.
        // The interfaces whose notices matter: the instances', and their VIPs' `dev`s
        // (`None`: one cannot be named yet, so every notice matters).
        let mut watched = self.watched();
        let mut watched_for = self.vmac_generation;
        let monitor = match vip::LinkNotices::open() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "no netlink link/address notices: interfaces are read every {:?} only", self.link_poll);
                None
            }
        };
        let mut stopping = false;
        loop {
            // A recreated VMAC has a new index.
            if watched_for != self.vmac_generation {
                watched = self.watched();
                watched_for = self.vmac_generation;
            }
            self.drain().await;
            if stopping {
                break;
            }
            let deadline = self.groups.iter().filter_map(SyncGroup::poll_timeout).min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let waiting_uncounted = !self.uncounted.is_empty()
                && awaiting
                    .iter()
                    .any(|a| a.iter().any(|e| self.uncounted.contains(e)));
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(uncounted_deadline), if waiting_uncounted => {
                    tracing::warn!("track_process: the first count of /proc is still not done after {UNCOUNTED_WAIT:?}: starting, those processes unknown until it is");
                    let t = now();
                    let mut ready = Vec::new();
                    for (gi, waiting) in awaiting.iter_mut().enumerate() {
                        let before = waiting.len();
                        waiting.retain(|e| !self.uncounted.contains(e));
                        if before > 0 && waiting.is_empty() {
                            ready.push(gi);
                        }
                    }
                    for gi in ready {
                        self.start_group(gi, t);
                    }
                    self.uncounted.clear();
                }
                Some(c) = self.ctl_rx.recv() => {
                    let t = now();
                    match c {
                        Control::Shutdown => {
                            self.groups.iter_mut().for_each(|g| g.shutdown(t));
                            stopping = true;
                        }
                        Control::Handover(reply) => {
                            // The successor takes the VMACs over, VIPs and all.
                            for inst in &mut self.instances {
                                if let Some(v) = &mut inst.vmac {
                                    v.keep = true;
                                }
                            }
                            // Nothing to perform: the loop ends before the next drain. The
                            // states go back with the stop, so no transition can slip in
                            // between what the successor is told and the stop.
                            let _ = reply.send(self.snapshot());
                            for t in tasks {
                                t.abort();
                            }
                            self.stop_receivers();
                            return Ok(());
                        }
                        Control::SetPriority(i, p) => {
                            if let Some(inst) = self.instances.get(i) {
                                self.groups[inst.group].set_priority(t, inst.member, p);
                            }
                        }
                        Control::Track(i, id, ok) => {
                            if let Some(inst) = self.instances.get(i) {
                                let gi = inst.group;
                                self.groups[gi].handle_track(t, inst.member, id, ok);
                                if awaiting[gi].remove(&(i, id)) && awaiting[gi].is_empty() {
                                    self.start_group(gi, t);
                                }
                            }
                        }
                        Control::TrackValue(i, id, v) => {
                            if let Some(inst) = self.instances.get(i) {
                                self.groups[inst.group].handle_track_value(t, inst.member, id, v);
                            }
                        }
                        Control::Status(reply) => {
                            let _ = reply.send(self.snapshot());
                        }
                    }
                }
                () = sleep => {
                    // Adverts that arrived while the loop was busy (a drain's netlink
                    // calls, another instance's transition) come first, as keepalived
                    // reads a readable socket before running an expired timer: a Backup
                    // whose Master_Down_Timer ran out meanwhile must not take over from a
                    // master whose advert is already here.
                    while let Ok(p) = rx.try_recv() {
                        let inst = &self.instances[p.instance];
                        self.groups[inst.group].handle_packet(now(), inst.member, p.meta, &p.bytes);
                    }
                    let t = now();
                    self.groups.iter_mut().for_each(|g| g.handle_timeout(t));
                }
                Some(p) = rx.recv() => {
                    let inst = &self.instances[p.instance];
                    self.groups[inst.group].handle_packet(now(), inst.member, p.meta, &p.bytes);
                }
                () = vip::next_notice(monitor.as_ref(), |i| watched.as_ref().is_none_or(|w| w.contains(&i))) => {
                    link_tick.reset();
                    self.check_links().await;
                }
                _ = link_tick.tick() => self.check_links().await,
            }
        }
        for t in tasks {
            t.abort();
        }
        self.stop_receivers();
        // The VMACs go now (netlink, sysctls, nft: off the event loop), not when the
        // speaker is dropped.
        let vmacs: Vec<VmacLink> = self
            .instances
            .iter_mut()
            .filter_map(|inst| inst.vmac.take())
            .collect();
        if !vmacs.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop(vmacs)).await;
        }
        Ok(())
    }

    /// The interfaces whose netlink notices matter: the instances' (VMAC and base), and
    /// their VIPs' `dev`s (`None`: one cannot be named yet, so every notice matters).
    fn watched(&self) -> Option<HashSet<u32>> {
        self.instances
            .iter()
            .flat_map(|inst| {
                [
                    Some(inst.ifindex),
                    VipManager::ifindex(&inst.cfg.interface).ok(),
                ]
                .into_iter()
                .chain(
                    inst.cfg
                        .all_vips()
                        .filter_map(|v| v.dev.as_deref())
                        .map(|d| VipManager::ifindex(d).ok()),
                )
            })
            .collect()
    }

    fn stop_receivers(&mut self) {
        if let Some((_, tasks)) = self.receivers.take() {
            tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }

    /// Recreates instance `i`'s VMAC, deleted by someone else (keepalived recreates it
    /// too), on a blocking thread (netlink, sysctls, nft): a new interface, new sockets on
    /// it, a new receive task. A Master's VIPs come back with [`Speaker::restore_vips`].
    /// A failure is logged once and tried again later, backing off from 1 s to 32 s; while
    /// the sockets are not open the instance is in Fault.
    async fn recreate_vmac(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        if inst
            .vmac_retry_at
            .is_some_and(|at| tokio::time::Instant::now() < at)
        {
            return;
        }
        let Some(vm) = inst.cfg.use_vmac.clone() else {
            return;
        };
        // Messages waiting for their turn on the old interface are not sent.
        self.pacer.invalidate(&inst.announce_epoch);
        // Gone, or not recreated by an earlier attempt (only the sockets may be missing).
        if inst.vmac.is_none() || VipManager::ifindex(&vm.name).is_err() {
            // The old one is gone: forgetting it (off the event loop) puts its settings
            // back if it was the last; the new one takes them again.
            let old = inst.vmac.take();
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
            let (base, v6) = (inst.cfg.interface.clone(), inst.cfg.is_v6());
            let set_up = tokio::task::spawn_blocking(move || VmacLink::set_up(&base, &vm, v6))
                .await
                .map_err(|e| vip::VipError::Vmac(e.to_string()))
                .and_then(|r| r);
            match set_up {
                Ok(link) => {
                    inst.ifindex = link.ifindex;
                    inst.mac = vip::mac_address(&link.name).ok();
                    inst.vmac = Some(link);
                    tracing::warn!(instance = %inst.cfg.name, vmac = %inst.vip_if, "VMAC deleted by someone else: recreated");
                }
                Err(e) => {
                    inst.vmac_failed(&e.to_string());
                    return;
                }
            }
        }
        self.reopen_sockets(i).await;
    }

    /// Opens instance `i`'s sockets again on its interfaces as they are now (new indexes:
    /// a VMAC recreated, an interface deleted and created again) and restarts its receive
    /// task. On failure the instance is in Fault (`sockets_lost`), tried again later with
    /// the same back-off as a VMAC.
    async fn reopen_sockets(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        // The base's index looked up again too, for vmac_xmit_base.
        let sock_ifindex = match VipManager::ifindex(&inst.sock_if) {
            Ok(x) => x,
            Err(e) => {
                inst.sockets_lost = true;
                inst.vmac_failed(&e.to_string());
                return;
            }
        };
        let opened = open_vrrp_sockets(&inst.cfg, &inst.sock_if, sock_ifindex, inst.src)
            .and_then(|(rx, tx)| Ok((sys::async_socket(rx)?, tx)))
            .and_then(|(rx, tx)| {
                Ok((
                    rx,
                    tx,
                    open_announce_socket(&inst.cfg, &inst.vip_if, inst.ifindex)?,
                ))
            });
        match opened {
            Ok((rx, tx, announce)) => {
                inst.sock_ifindex = sock_ifindex;
                inst.socket = Arc::new(rx);
                inst.send_socket = tx;
                inst.announce = Some(Arc::new(announce));
                inst.sockets_lost = false;
                inst.vmac_failures = 0;
                inst.vmac_retry_at = None;
                if let Some((tx, tasks)) = &mut self.receivers {
                    tasks[i].abort();
                    tasks[i] = tokio::spawn(self.instances[i].receive(i, tx.clone()));
                }
            }
            Err(e) => {
                inst.sockets_lost = true;
                inst.vmac_failed(&format!("interface back, its sockets not: {e}"));
            }
        }
    }

    /// keepalived's `update_added_interface`: an instance interface (not a VMAC, see
    /// [`recreate_vmac`](Self::recreate_vmac)) deleted and created again has a new index;
    /// the instance's sockets, bound to the old one, hear and announce nothing there. They
    /// are opened again on the new one, its MAC address read again, and the netlink
    /// watch follows the new index. Until then (or while that fails) the instance is in
    /// Fault.
    async fn follow_recreated_interface(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        if inst.cfg.use_vmac.is_some()
            || inst
                .vmac_retry_at
                .is_some_and(|at| tokio::time::Instant::now() < at)
        {
            return;
        }
        let Ok(ifindex) = VipManager::ifindex(&inst.vip_if) else {
            return; // gone: its link is down, the instance in Fault
        };
        let moved = ifindex != inst.ifindex
            || VipManager::ifindex(&inst.sock_if).is_ok_and(|x| x != inst.sock_ifindex);
        if !moved && !inst.sockets_lost {
            return;
        }
        if moved {
            tracing::warn!(instance = %inst.cfg.name, interface = %inst.vip_if, old = inst.ifindex, new = ifindex, "interface deleted and created again: sockets reopened on it");
            // Messages waiting for their turn on the old interface are not sent.
            self.pacer.invalidate(&inst.announce_epoch);
            inst.ifindex = ifindex;
            inst.mac = vip::mac_address(&inst.vip_if).ok();
            // Fault until the sockets are open on the new one.
            inst.sockets_lost = true;
        }
        self.reopen_sockets(i).await;
        self.vmac_generation += 1;
    }

    /// Reads the interfaces once for every instance: link state, the advert source, and
    /// a Master's VIPs (added back when someone removed them).
    async fn check_links(&mut self) {
        let t = now();
        // A VMAC someone deleted while its base is still there comes back first, so that
        // the reading below finds it (and its instance does not fall into Fault).
        for i in 0..self.instances.len() {
            let inst = &self.instances[i];
            if inst.cfg.use_vmac.is_some()
                && (inst.sockets_lost || VipManager::ifindex(&inst.vip_if).is_err())
                && VipManager::ifindex(&inst.cfg.interface).is_ok()
            {
                self.recreate_vmac(i).await;
                self.vmac_generation += 1;
            }
        }
        for i in 0..self.instances.len() {
            self.follow_recreated_interface(i).await;
        }
        // One reading of the interfaces for every instance.
        let ifs = vip::Interfaces::read();
        // Masters now have added their VIPs (every action was performed).
        let was_master: Vec<bool> = self
            .instances
            .iter()
            .map(|inst| self.groups[inst.group].member(inst.member).state() == State::Master)
            .collect();
        for inst in &mut self.instances {
            // With use_vmac, the VMAC too (keepalived tracks both), and its sockets; none
            // of the links with dont_track_primary.
            let up = (inst.cfg.dont_track_primary
                || (ifs.link_is_up(&inst.cfg.interface) && ifs.link_is_up(&inst.vip_if)))
                && !inst.sockets_lost;
            if up != inst.link_up {
                inst.link_up = up;
                tracing::info!(instance = %inst.cfg.name, up, "link state changed");
                self.groups[inst.group].handle_link(t, inst.member, up);
            }
            let had_src = inst.has_src;
            if let Some(src) = inst.refresh_src(&ifs) {
                self.groups[inst.group].set_primary_addr(inst.member, src);
                // A VMAC sending adverts carries a copy of the base's link-local source
                // (netlink: off the event loop).
                let sends = inst.vmac.as_ref().map(|v| v.ifindex) == Some(inst.sock_ifindex);
                if let (true, IpAddr::V6(ll)) = (sends, src) {
                    if let Some(mut v) = inst.vmac.take() {
                        let moved = tokio::task::spawn_blocking(move || {
                            v.follow_link_local(ll);
                            v
                        });
                        inst.vmac = moved.await.ok();
                    }
                }
            }
            if inst.has_src != had_src {
                self.groups[inst.group].handle_address(t, inst.member, inst.has_src);
            }
        }
        self.restore_vips(&ifs, &was_master).await;
    }

    /// Starts group `gi`. Links first, recorded while in Initialize: a member whose link is
    /// down starts in Fault (and holds its sync group there) instead of becoming Master,
    /// adding VIPs and sending gratuitous ARPs before falling into Fault.
    fn start_group(&mut self, gi: usize, t: std::time::Instant) {
        let g = &mut self.groups[gi];
        for (m, &i) in self.members[gi].iter().enumerate() {
            let inst = &self.instances[i];
            if !inst.link_up {
                g.handle_link(t, m, false);
            }
            if !inst.has_src {
                g.handle_address(t, m, false);
            }
        }
        g.start(t);
    }

    /// Adds back, and announces, the VIPs of a Master that are no longer on their
    /// interface: an operator or another program removed them (`ip addr del`, a network
    /// manager flushing the interface). keepalived, told by netlink, resigns (a
    /// priority-0 advert) and becomes Master again at once, adding them back: the same
    /// outcome, here without the priority-0 advert, at netlink's notice of the deletion
    /// (or the next interface poll, [`Speaker::set_link_poll`]).
    /// `ifs`: this tick's reading, taken after every pending action was performed;
    /// `was_master`: each instance was Master then (its VIPs were added). One that became
    /// Master since has its VIPs still to add, and is left alone.
    async fn restore_vips(&mut self, ifs: &vip::Interfaces, was_master: &[bool]) {
        let now = tokio::time::Instant::now();
        let check_routes = self
            .routes_checked
            .is_none_or(|t| now.duration_since(t) >= TRACK_ROUTES_EVERY);
        if check_routes {
            self.routes_checked = Some(now);
        }
        for (inst, &was_master) in self.instances.iter_mut().zip(was_master) {
            if !was_master || self.groups[inst.group].member(inst.member).state() != State::Master {
                inst.restore_failed.clear();
                continue;
            }
            let missing: Vec<Vip> = inst
                .cfg
                .all_vips()
                .filter(|v| {
                    !ifs.has_address(v.dev.as_deref().unwrap_or(&inst.vip_if), v.addr)
                        && !v
                            .label
                            .as_deref()
                            .is_some_and(|l| ifs.has_address_labelled(l, v.addr))
                })
                .cloned()
                .collect();
            let mut added = Vec::new();
            for v in missing {
                match self.vips.add(inst.ifindex, &v).await {
                    Ok(()) => {
                        tracing::warn!(instance = %inst.cfg.name, vip = %v.addr, "VIP removed from its interface while MASTER: added back");
                        inst.restore_failed.remove(&v.addr);
                        added.push(v.addr);
                    }
                    Err(e) if inst.restore_failed.insert(v.addr) => {
                        tracing::error!(instance = %inst.cfg.name, vip = %v.addr, error = %e, "VIP removed from its interface while MASTER: cannot add it back (tried again at every interface change or poll)");
                    }
                    Err(e) => {
                        tracing::debug!(instance = %inst.cfg.name, vip = %v.addr, error = %e, "adding back a removed VIP");
                    }
                }
            }
            if !added.is_empty() {
                let repeat = inst.cfg.garp_master_repeat;
                if let Err(e) = announce(inst, &self.pacer, repeat, |a| added.contains(&a)) {
                    tracing::warn!(instance = %inst.cfg.name, error = %e, "sending gratuitous ARP / NA");
                }
            }
            // Tracked routes and rules it added (keepalived tracks a route with `dev` and a
            // rule, unless `no_track`): one deleted by someone else is added back, as the
            // VIPs, at most once a second (an add of one that is there is refused by the
            // kernel, EEXIST, but each costs a netlink request).
            if !check_routes {
                continue;
            }
            let routes = lock(&inst.routes_set).clone();
            for (k, r) in inst.cfg.virtual_routes.iter().enumerate() {
                if r.no_track || r.dev.is_none() || !routes[k] {
                    continue;
                }
                let added = self.vips.add_route(r).await;
                track_result(
                    &mut inst.track_failed,
                    &inst.cfg.name,
                    (false, k),
                    &r.to_string(),
                    added.map_err(|e| e.to_string()),
                );
            }
            let rules = lock(&inst.rules_set).clone();
            for (k, r) in inst.cfg.virtual_rules.iter().enumerate() {
                if r.no_track || !rules[k] {
                    continue;
                }
                let added = self.vips.add_rule(r).await;
                track_result(
                    &mut inst.track_failed,
                    &inst.cfg.name,
                    (true, k),
                    &r.to_string(),
                    added.map_err(|e| e.to_string()),
                );
            }
        }
    }

    /// State, priority and counters of every instance, in order.
    fn snapshot(&self) -> Vec<InstanceStatus> {
        self.instances
            .iter()
            .map(|inst| {
                let vr = self.groups[inst.group].member(inst.member);
                InstanceStatus {
                    instance: inst.cfg.name.clone(),
                    state: vr.state(),
                    priority: vr.effective_priority(),
                    master: vr.master_addr(),
                    counters: vr.counters().clone(),
                    tracks: vr.tracks(),
                    installed_routes: installed(&inst.cfg.virtual_routes, &inst.routes_set),
                    installed_rules: installed(&inst.cfg.virtual_rules, &inst.rules_set),
                }
            })
            .collect()
    }

    /// Performs every pending action, then sends the [`Notice`]s of what changed.
    async fn drain(&mut self) {
        for gi in 0..self.groups.len() {
            while let Some((m, action)) = self.groups[gi].poll_action() {
                let i = self.members[gi][m];
                self.perform(i, action).await;
            }
        }
        for inst in &mut self.instances {
            let vr = self.groups[inst.group].member(inst.member);
            let (state, priority) = (vr.state(), vr.effective_priority());
            let lower_rx = vr.counters().lower_priority_rx;
            let notice = |kind| Notice {
                instance: inst.cfg.name.clone(),
                vrid: inst.cfg.virtual_router_id,
                state,
                priority,
                kind,
            };
            if priority != inst.seen_priority {
                inst.seen_priority = priority;
                tracing::info!(instance = %inst.cfg.name, priority = priority.0, "effective priority changed");
                let _ = self.notices.send(notice(NoticeKind::PriorityChanged));
            }
            if lower_rx != inst.seen_lower_rx {
                inst.seen_lower_rx = lower_rx;
                let _ = self.notices.send(notice(NoticeKind::MasterRxLowerPriority));
            }
        }
    }

    async fn perform(&self, i: usize, action: Action) {
        let inst = &self.instances[i];
        let name = &inst.cfg.name;
        match action {
            Action::SendAdvert(repr) => {
                let dsts: Vec<IpAddr> = if inst.cfg.unicast_peer.is_empty() {
                    vec![inst.cfg.group()]
                } else {
                    inst.cfg.unicast_peer.clone()
                };
                for dst in dsts {
                    let bytes = match repr.to_bytes(inst.src, dst) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(instance = %name, error = %e, "cannot encode advert");
                            continue;
                        }
                    };
                    let to = match dst {
                        IpAddr::V6(a) => {
                            SocketAddr::V6(SocketAddrV6::new(a, 0, 0, inst.sock_ifindex))
                        }
                        a => SocketAddr::new(a, 0),
                    };
                    if let Err(e) = inst.send_socket.send_to(&bytes, &SockAddr::from(to)) {
                        tracing::warn!(instance = %name, %dst, error = %e, "sending advert");
                    }
                }
            }
            Action::AddVips => {
                // Without Accept_Mode, traffic to the VIPs is dropped before they are
                // local (keepalived: "setting firewall drop rule", then "setting VIPs").
                let member = self.groups[inst.group].member(inst.member);
                if let Some(rules) = &self.drop_rules {
                    if !member.accept_mode() && !inst.dropping.swap(true, Ordering::Relaxed) {
                        let addrs: Vec<IpAddr> = inst.cfg.all_vips().map(|v| v.addr).collect();
                        if let Err(e) = rules.drop_addresses(&addrs).await {
                            inst.dropping.store(false, Ordering::Relaxed);
                            tracing::error!(instance = %name, error = %e, "Accept_Mode: cannot drop traffic to the VIPs");
                        }
                    }
                }
                for v in inst.cfg.all_vips() {
                    if let Err(e) = self.vips.add(inst.ifindex, v).await {
                        tracing::error!(instance = %name, vip = %v.addr, error = %e, "adding VIP");
                    }
                }
                // After the VIPs: a route may take one as its source.
                // A route equal to one already there counts as added, as keepalived's
                // netlink_talk takes EEXIST for success on RTM_NEWROUTE (a rule's
                // EEXIST is an error there: not ours).
                for (k, r) in inst.cfg.virtual_routes.iter().enumerate() {
                    let added = self.vips.add_route(r).await;
                    match added {
                        Ok(_) => lock(&inst.routes_set)[k] = true,
                        Err(e) => {
                            tracing::error!(instance = %name, error = %e, "adding virtual route");
                        }
                    }
                }
                for (k, r) in inst.cfg.virtual_rules.iter().enumerate() {
                    let added = self.vips.add_rule(r).await;
                    let mut set = lock(&inst.rules_set);
                    match added {
                        Ok(true) => set[k] = true,
                        Ok(false) if set[k] => {}
                        Ok(false) => {
                            tracing::warn!(instance = %name, rule = %r, "virtual rule already there (not lb's): left alone, and not deleted when leaving MASTER");
                        }
                        Err(e) => {
                            tracing::error!(instance = %name, error = %e, "adding virtual rule");
                        }
                    }
                }
            }
            Action::RemoveVips => {
                self.pacer.invalidate(&inst.announce_epoch);
                // Only what this instance added (keepalived's `set`).
                for k in take_set(&inst.rules_set) {
                    let r = &inst.cfg.virtual_rules[k];
                    if let Err(e) = self.vips.remove_rule(r).await {
                        tracing::error!(instance = %name, error = %e, "deleting virtual rule");
                    }
                }
                for k in take_set(&inst.routes_set) {
                    let r = &inst.cfg.virtual_routes[k];
                    if let Err(e) = self.vips.remove_route(r).await {
                        tracing::error!(instance = %name, error = %e, "deleting virtual route");
                    }
                }
                for v in inst.cfg.all_vips() {
                    if let Err(e) = self.vips.remove(inst.ifindex, v).await {
                        tracing::error!(instance = %name, vip = %v.addr, error = %e, "removing VIP");
                    }
                }
                if let Some(rules) = &self.drop_rules {
                    if inst.dropping.swap(false, Ordering::Relaxed) {
                        let addrs: Vec<IpAddr> = inst.cfg.all_vips().map(|v| v.addr).collect();
                        if let Err(e) = rules.accept_addresses(&addrs).await {
                            tracing::error!(instance = %name, error = %e, "Accept_Mode: cannot stop dropping traffic to the VIPs");
                        }
                    }
                }
            }
            Action::AnnounceVips { repeat } => {
                if let Err(e) = announce(inst, &self.pacer, repeat, |_| true) {
                    tracing::warn!(instance = %name, error = %e, "sending gratuitous ARP / NA");
                }
            }
            Action::Transition { from, to, reason } => {
                tracing::info!(instance = %name, vrid = %inst.cfg.virtual_router_id, %from, %to, ?reason, "VRRP_Instance({name}) Entering {to} STATE");
                let _ = self.events.send(Event {
                    instance: name.clone(),
                    vrid: inst.cfg.virtual_router_id,
                    from,
                    to,
                    reason,
                    priority: self.groups[inst.group]
                        .member(inst.member)
                        .effective_priority(),
                });
            }
        }
    }
}

/// What one announcement says and where: (VIP, interface index, the MAC address announced,
/// the NA's Router flag).
type Target = (IpAddr, u32, [u8; 6], bool);

/// One gratuitous ARP (IPv4) or unsolicited NA (IPv6) for `addr` out of `ifindex`.
fn send_announcement(sockets: &Announcer, (addr, ifindex, mac, router): Target) -> io::Result<()> {
    let no_socket = || io::Error::other(format!("no socket to announce {addr} with"));
    match addr {
        IpAddr::V4(a) => {
            let sock = sockets.arp.as_ref().ok_or_else(no_socket)?;
            sys::send_packet(sock, ifindex, 0x0806, &vip::garp_frame(mac, a))
        }
        IpAddr::V6(a) => {
            let sock = sockets.na.as_ref().ok_or_else(no_socket)?;
            let to = SocketAddrV6::new(
                std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                0,
                0,
                ifindex,
            );
            sock.send_to(&vip::unsolicited_na(mac, a, router), &SockAddr::from(to))
                .map(drop)
        }
    }
}

/// Sends `repeat` gratuitous ARPs / unsolicited NAs for every VIP whose address passes
/// `which`, each out of its own interface with that interface's MAC address, in
/// keepalived's order (every VIP once, then again). A failed send does not stop the others
/// (one VIP's error must not leave the rest unannounced); the first error is returned.
///
/// With a `garp_interval` / `gna_interval`, the messages go through `pacer` instead (the
/// `garp` module: spaced per base interface, dropped when `announce_epoch` moves), and
/// their errors are logged there.
fn announce(
    inst: &Instance,
    pacer: &GarpPacer,
    repeat: u32,
    which: impl Fn(IpAddr) -> bool,
) -> io::Result<()> {
    // The MAC as it is now: a bond's follows its active slave (`fail_over_mac`), an
    // operator may change it (keepalived reads it at each send, `IF_HWADDR`).
    let (Some(sock), Some(mac)) = (
        &inst.announce,
        vip::mac_address(&inst.vip_if).ok().or(inst.mac),
    ) else {
        return Ok(());
    };
    // A VIP on another `dev` is announced there, with that interface's MAC (a neighbour
    // on that link must not learn the instance interface's address for it).
    // One whose interface is gone or has no link-layer address (nothing to announce
    // there) is skipped.
    // An IPv6 VIP's neighbour advertisement carries the Router flag when its interface
    // forwards IPv6 (keepalived; see vip::unsolicited_na).
    // Each with the base interface it is paced on: the VIP's `dev`, or the instance's
    // `interface` (keepalived paces per base interface: a VMAC's messages count against
    // its parent).
    let base = match &inst.vmac {
        Some(_) => VipManager::ifindex(&inst.cfg.interface).unwrap_or(inst.ifindex),
        None => inst.ifindex,
    };
    let targets: Vec<(Target, &str, u32)> = inst
        .cfg
        .all_vips()
        .filter(|v| which(v.addr))
        .filter_map(|v| {
            let router = |ifname: &str| v.addr.is_ipv6() && vip::ipv6_forwarding(ifname);
            match &v.dev {
                Some(d) => match (VipManager::ifindex(d), vip::mac_address(d)) {
                    // A `dev` that is the instance's own (VMAC) interface counts
                    // against the base interface too.
                    (Ok(ifindex), Ok(dev_mac)) if ifindex == inst.ifindex => Some((
                        (v.addr, ifindex, dev_mac, router(d)),
                        inst.cfg.interface.as_str(),
                        base,
                    )),
                    (Ok(ifindex), Ok(dev_mac)) => {
                        Some(((v.addr, ifindex, dev_mac, router(d)), d.as_str(), ifindex))
                    }
                    _ => {
                        tracing::debug!(vip = %v.addr, dev = %d, "not announced: no such interface or no MAC address");
                        None
                    }
                },
                None => Some((
                    (v.addr, inst.ifindex, mac, router(&inst.vip_if)),
                    inst.cfg.interface.as_str(),
                    base,
                )),
            }
        })
        .collect();
    // Nothing on a base interface that does no ARP (keepalived checks the same): read once
    // per interface, not per VIP (255 VIPs would be 255 address dumps).
    let mut no_arp: HashMap<&str, bool> = HashMap::new();
    let targets: Vec<(Target, &str, u32)> = targets
        .into_iter()
        .filter(|(_, base_name, _)| {
            !*no_arp
                .entry(base_name)
                .or_insert_with(|| vip::no_arp(base_name))
        })
        .collect();
    // A message with an interval (its group's, else the instance's for its family) goes
    // through the pacer; one without leaves at once.
    let mut now = Vec::new();
    let mut paced = Vec::new();
    for (t, base_name, base_index) in targets {
        let instance = if t.0.is_ipv6() {
            inst.cfg.gna_interval
        } else {
            inst.cfg.garp_interval
        };
        match pacer.lane_of(base_name, base_index, t.0.is_ipv6(), instance) {
            Some((key, interval)) => paced.push((t, key, interval)),
            None => now.push(t),
        }
    }
    if !paced.is_empty() && repeat > 0 {
        let at_epoch = inst.announce_epoch.load(Ordering::Relaxed);
        let name: Arc<str> = inst.cfg.name.as_str().into();
        let mut lanes: Vec<(garp::LaneKey, Vec<garp::Queued>)> = Vec::new();
        for (t, key, interval) in paced {
            let sock = sock.clone();
            let q = garp::Queued {
                addr: t.0,
                ifindex: t.1,
                send: Arc::new(move || send_announcement(&sock, t)),
                interval,
                left: repeat,
                epoch: inst.announce_epoch.clone(),
                at_epoch,
                instance: name.clone(),
            };
            match lanes.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(q),
                None => lanes.push((key, vec![q])),
            }
        }
        for (key, msgs) in lanes {
            pacer.submit(key, msgs);
        }
    }
    let mut first_err = None;
    for _ in 0..repeat {
        for &t in &now {
            if let Err(e) = send_announcement(sock, t) {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Opens the receive socket (joined to the group, unbound so that it sees multicast) and
/// the send socket (bound to `src`, so the kernel cannot pick another source address than
/// the one the v3 checksum covers; `IP_FREEBIND` so a still-tentative IPv6 link-local
/// address does not fail the bind).
/// TOS / traffic class of adverts: precedence 6, network control (RFC 791
/// IPTOS_PREC_INTERNETCONTROL), keepalived's.
const ADVERT_TOS: u8 = 0xc0;

fn open_vrrp_sockets(
    cfg: &VrrpInstanceConfig,
    ifname: &str,
    ifindex: u32,
    src: IpAddr,
) -> io::Result<(Socket, Socket)> {
    let rx = open_vrrp_socket(ifname, ifindex, src)?;
    // Only the group's adverts, not those of another group some other socket of this host
    // joined (keepalived's IP_MULTICAST_ALL off, on every read socket). Where the kernel
    // lacks IPV6_MULTICAST_ALL (before Linux 4.20), the receive task drops them.
    match cfg.group() {
        IpAddr::V4(g) => {
            rx.set_multicast_all_v4(false)?;
            if cfg.unicast_peer.is_empty() {
                rx.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex))?;
            }
        }
        IpAddr::V6(g) => {
            if let Err(e) = rx.set_multicast_all_v6(false) {
                tracing::debug!(instance = %cfg.name, error = %e, "IPV6_MULTICAST_ALL");
            }
            if cfg.unicast_peer.is_empty() {
                rx.join_multicast_v6(&g, ifindex)?;
            }
        }
    }
    Ok((rx, open_send_socket(cfg, ifname, ifindex, src)?))
}

/// A raw VRRP socket bound to interface `ifname` (index `ifindex`), sending with TTL /
/// hop limit 255, no multicast loop.
fn open_vrrp_socket(ifname: &str, ifindex: u32, src: IpAddr) -> io::Result<Socket> {
    let proto = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
    let sock = match src {
        IpAddr::V4(src4) => {
            let s = Socket::new(Domain::IPV4, Type::RAW, proto)?;
            s.set_ttl(u32::from(VRRP_TTL))?;
            s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
            s.set_multicast_loop_v4(false)?;
            // A source the interface does not hold (yet: unicast_src_ip with
            // track_src_ip, or configured elsewhere) cannot name the multicast interface;
            // the device binding below sends out of the right one anyway.
            match s.set_multicast_if_v4(&src4) {
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    tracing::debug!(src = %src4, "IP_MULTICAST_IF: not a local address yet");
                }
                r => r?,
            }
            s
        }
        IpAddr::V6(_) => {
            let s = Socket::new(Domain::IPV6, Type::RAW, proto)?;
            s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
            s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
            s.set_multicast_loop_v6(false)?;
            s.set_multicast_if_v6(ifindex)?;
            sys::enable_v6_rx_info(&s)?;
            s
        }
    };
    sock.bind_device(Some(ifname.as_bytes()))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// The socket adverts leave from, bound to `src` (freebind: it may be an address the
/// interface does not hold yet, or the unspecified one while it holds none).
fn open_send_socket(
    cfg: &VrrpInstanceConfig,
    ifname: &str,
    ifindex: u32,
    src: IpAddr,
) -> io::Result<Socket> {
    let tx = open_vrrp_socket(ifname, ifindex, src)?;
    // Adverts go out as network control traffic, precedence 6 (IPTOS_PREC_INTERNETCONTROL,
    // 0xc0), in the IPv4 TOS or the IPv6 traffic class, as keepalived sends them: queues
    // that honour it do not drop them before data under load.
    match src {
        IpAddr::V4(_) => {
            tx.set_freebind(true)?;
            // Transparent: the kernel routes a datagram from a source no interface holds
            // (otherwise ENETUNREACH), so that a Master whose address was removed still
            // sends its priority-0 advert from it. Needs CAP_NET_ADMIN (which VIPs need);
            // without it only that advert is lost.
            if let Err(e) = tx.set_ip_transparent(true) {
                tracing::debug!(instance = %cfg.name, error = %e, "IP_TRANSPARENT on the advert socket");
            }
            tx.set_tos(u32::from(ADVERT_TOS))?;
        }
        IpAddr::V6(_) => {
            tx.set_freebind_ipv6(true)?;
            tx.set_tclass_v6(u32::from(ADVERT_TOS))?;
        }
    }
    if !cfg.unicast_peer.is_empty() && cfg.unicast_ttl != VRRP_TTL {
        let ttl = u32::from(cfg.unicast_ttl.max(1));
        match src {
            IpAddr::V4(_) => tx.set_ttl(ttl)?,
            IpAddr::V6(_) => tx.set_unicast_hops_v6(ttl)?,
        }
    }
    let bind_to = match src {
        IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, ifindex)),
        a => SocketAddr::new(a, 0),
    };
    tx.bind(&SockAddr::from(bind_to))?;
    // The send socket never reads: a raw socket still queues every matching packet
    // (shutdown(SHUT_RD) does not stop it), so a filter drops them all, as keepalived's
    // `if_setsockopt_no_receive` does.
    drop_all_received(&tx)?;
    Ok(tx)
}

/// The gratuitous ARP / unsolicited NA socket of the VIP interface `ifname`.
/// The sockets an instance announces its VIPs with: an `AF_PACKET` one for gratuitous
/// ARPs, a raw ICMPv6 one for unsolicited NAs. The instance's own family always has one;
/// the other only when VIPs of that family are configured (keepalived allows IPv6
/// `virtual_ipaddress_excluded` in an IPv4 instance, and the reverse).
struct Announcer {
    arp: Option<Socket>,
    na: Option<Socket>,
}

/// Opens the [`Announcer`] of `cfg` on `ifname`: an error when its own family's socket
/// cannot be opened; the other family's failure is logged, and its VIPs go unannounced.
fn open_announce_socket(
    cfg: &VrrpInstanceConfig,
    ifname: &str,
    ifindex: u32,
) -> io::Result<Announcer> {
    let v6 = cfg.is_v6();
    let own = open_family_announce_socket(ifname, ifindex, v6)?;
    let other = if cfg.all_vips().any(|v| v.addr.is_ipv6() != v6) {
        open_family_announce_socket(ifname, ifindex, !v6)
            .inspect_err(|e| {
                tracing::warn!(instance = %cfg.name, error = %e, "cannot open the socket to announce the VIPs of the other family");
            })
            .ok()
    } else {
        None
    };
    Ok(if v6 {
        Announcer {
            arp: other,
            na: Some(own),
        }
    } else {
        Announcer {
            arp: Some(own),
            na: other,
        }
    })
}

/// Attaches a one-instruction socket filter that accepts nothing (`ret #0`): a socket that
/// only sends queues no received packet (keepalived's `if_setsockopt_no_receive`).
fn drop_all_received(s: &Socket) -> io::Result<()> {
    s.attach_filter(&[libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }])
}

fn open_family_announce_socket(ifname: &str, ifindex: u32, v6: bool) -> io::Result<Socket> {
    if v6 {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        // It only sends: every ICMPv6 message on the link would queue on it.
        drop_all_received(&s)?;
        s.set_multicast_hops_v6(255)?;
        s.set_unicast_hops_v6(255)?;
        s.set_multicast_if_v6(ifindex)?;
        s.bind_device(Some(ifname.as_bytes()))?;
        s.set_nonblocking(true)?;
        Ok(s)
    } else {
        // Protocol 0: this AF_PACKET socket only sends.
        let s = Socket::new(Domain::PACKET, Type::RAW, None)?;
        s.set_nonblocking(true)?;
        Ok(s)
    }
}

/// Kills a script's process group when dropped while armed: the script timed out, or its
/// task was aborted (the instance stopped). Declared after the `Child`, so it runs before
/// the child is dropped and reaped: the group id is still the script's.
struct ScriptGroup(Option<nix::unistd::Pid>);

impl Drop for ScriptGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (already gone) is fine.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// One run of a tracked script: its exit status 0 is success. Past `timeout` it fails,
/// and its whole process group is killed (keepalived: `kill(-pid, …)`), not only the
/// `sh` running it: a `sleep` or a hung `curl` it started would otherwise live on, one
/// more at every interval.
/// Returns whether it succeeded, and its exit code when it exited.
async fn run_script(s: &TrackScript) -> (bool, Option<i32>) {
    let mut child = match s.command().spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(script = %s.script, error = %e, "cannot run tracked script");
            return (false, None);
        }
    };
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(nix::unistd::Pid::from_raw);
    let mut group = ScriptGroup(pid);
    match tokio::time::timeout(s.timeout, child.wait()).await {
        Ok(Ok(st)) => {
            // Exited and reaped: its group id may be reused, and what it left running
            // in the background is not ours to end (keepalived leaves it too).
            group.0 = None;
            (st.success(), st.code())
        }
        Ok(Err(e)) => {
            tracing::warn!(script = %s.script, error = %e, "waiting for tracked script");
            (false, None)
        }
        Err(_) => {
            tracing::debug!(script = %s.script, timeout = ?s.timeout, "tracked script timed out: its process group killed");
            drop(group);
            let _ = child.wait().await;
            (false, None)
        }
    }
}

/// The runs of the tracked scripts: one run per `interval` of each `vrrp_script`, its
/// result (after `rise`/`fall`) given to every instance that tracks it, as keepalived
/// runs a `vrrp_script` once whatever the number of instances tracking it (with one run
/// per instance, a script ran N times as often, and two instances tracking it could see
/// different results at a time and take different decisions). Scripts are the same when
/// their command, `interval`, `timeout`, `rise`, `fall`, user and `init_fail` are; each
/// instance applies its own `weight` and `reverse`. A script runs while an instance
/// tracks it. Cloning shares the runners.
#[derive(Debug, Clone, Default)]
pub struct ScriptRunners(Arc<std::sync::Mutex<HashMap<ScriptKey, std::sync::Weak<ScriptRunner>>>>);

/// What makes two [`TrackScript`]s one script ([`ScriptRunners`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScriptKey {
    script: String,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
    run_as: Option<RunAs>,
    init_fail: bool,
}

/// One script's runs: its state (`None` until known) and the task that runs it, ended
/// with the last instance that tracks it.
#[derive(Debug)]
struct ScriptRunner {
    state: watch::Receiver<Option<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptRunners {
    /// The runner of `s`, started (on the current runtime) if none runs.
    fn runner(&self, s: &TrackScript) -> Arc<ScriptRunner> {
        let key = ScriptKey {
            script: s.script.clone(),
            interval: s.interval,
            timeout: s.timeout,
            rise: s.rise,
            fall: s.fall,
            run_as: s.run_as,
            init_fail: s.init_fail,
        };
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|_, r| r.strong_count() > 0);
        // One whose task ended (its runtime shut down) is replaced.
        if let Some(r) = all.get(&key).and_then(std::sync::Weak::upgrade) {
            if !r.task.is_finished() {
                return r;
            }
        }
        let (tx, state) = watch::channel(None);
        let task = tokio::spawn(run_script_shared(s.clone(), tx));
        let r = Arc::new(ScriptRunner { state, task });
        all.insert(key, Arc::downgrade(&r));
        r
    }
}

/// Reports to `instance`'s speaker its tracked script `id`'s health and each change of it
/// (with the instance's `reverse`), from the script's shared runner ([`ScriptRunners`]).
async fn script_loop(
    instance: usize,
    id: TrackId,
    s: TrackScript,
    runners: ScriptRunners,
    tx: mpsc::UnboundedSender<Control>,
) {
    // Bounded: a runner ends only with its runtime, and this task with it.
    for _ in 0..1000 {
        let runner = runners.runner(&s);
        let mut state = runner.state.clone();
        // What the runner knows already (another instance's runs): said at once.
        let mut known = *state.borrow_and_update();
        if let Some(healthy) = known {
            if tx
                .send(Control::Track(instance, id, healthy != s.reverse))
                .is_err()
            {
                return;
            }
        }
        while state.changed().await.is_ok() {
            let now = *state.borrow_and_update();
            if now == known {
                continue;
            }
            known = now;
            if let Some(healthy) = now {
                if tx
                    .send(Control::Track(instance, id, healthy != s.reverse))
                    .is_err()
                {
                    return;
                }
            }
        }
        drop(runner);
        tokio::time::sleep(s.interval.max(Duration::from_millis(10))).await;
    }
}

/// Runs a `vrrp_script` every `interval` and publishes its health (after rise/fall) on
/// each change.
async fn run_script_shared(s: TrackScript, state: watch::Sender<Option<bool>>) {
    let mut h = if s.init_fail {
        TrackHysteresis::starting(s.rise, s.fall, s.initial)
    } else {
        TrackHysteresis::new(s.rise, s.fall)
    };
    // With `init_fail` (or a carried result) the state is known before the first run.
    state.send_replace(h.is_healthy());
    let mut tick = tokio::time::interval(s.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_code = None;
    loop {
        tick.tick().await;
        let (ok, code) = run_script(&s).await;
        // The shell's own codes for a program it could not run: said once, or a typo in
        // the path would only show as a failing script (keepalived: "not found/accessible").
        if code != last_code {
            match code {
                Some(127) => {
                    tracing::warn!(script = %s.script, "tracked script: command not found (sh exit 127)");
                }
                Some(126) => {
                    tracing::warn!(script = %s.script, "tracked script: command not executable (sh exit 126)");
                }
                _ => {}
            }
            last_code = code;
        }
        if let Some(healthy) = h.handle_result(ok) {
            tracing::info!(script = %s.script, healthy, "tracked script changed state");
            state.send_replace(Some(healthy));
        }
    }
}

/// Parses a raw IPv4 datagram (header included): (src, dst, ttl, payload).
fn split_ipv4(buf: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
    let ihl = usize::from(buf.first()? & 0x0f) * 4;
    if buf.first()? >> 4 != 4 || ihl < 20 || buf.len() < ihl || buf[9] != IPPROTO_VRRP {
        return None;
    }
    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
    let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
    Some((src, dst, buf[8], &buf[ihl..]))
}

async fn recv_loop(
    instance: usize,
    sock: Arc<AsyncFd<Socket>>,
    vrid: Vrid,
    group: IpAddr,
    tx: mpsc::Sender<Rx>,
) {
    let v6 = group.is_ipv6();
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok(mut guard) = sock.readable().await else {
            return;
        };
        let res = guard.try_io(|s| {
            if v6 {
                let info = sys::recv_v6(s.get_ref(), &mut buf)?;
                let dst = info.dst.map_or(group, IpAddr::V6);
                let meta = RxMeta {
                    src: IpAddr::V6(info.src),
                    dst,
                    ttl: info.hop_limit.unwrap_or(0),
                };
                Ok(Some((meta, buf[..info.len].to_vec())))
            } else {
                let n = s.get_ref().read(&mut buf)?;
                Ok(split_ipv4(&buf[..n]).map(|(src, dst, ttl, payload)| {
                    (
                        RxMeta {
                            src: IpAddr::V4(src),
                            dst: IpAddr::V4(dst),
                            ttl,
                        },
                        payload.to_vec(),
                    )
                }))
            }
        });
        match res {
            Ok(Ok(Some((meta, bytes)))) => {
                // Demultiplex by VRID, and by group: other routers' traffic is not ours
                // to count.
                if bytes.get(1) != Some(&vrid.get())
                    || (meta.dst.is_multicast() && meta.dst != group)
                {
                    continue;
                }
                if tx
                    .send(Rx {
                        instance,
                        meta,
                        bytes,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "receiving VRRP packet");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_split() {
        let mut b = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 255, 112, 0, 0, 198, 18, 0, 1, 224, 0, 0, 18,
        ];
        b.extend_from_slice(&[0x21, 51, 100, 0, 0, 1, 0, 0]);
        let (src, dst, ttl, p) = split_ipv4(&b).unwrap();
        assert_eq!(
            (src, dst, ttl, p.len()),
            (Ipv4Addr::new(198, 18, 0, 1), VRRP_MCAST_V4, 255, 8)
        );
        b[9] = 6;
        assert!(split_ipv4(&b).is_none());
        assert!(split_ipv4(&b[..3]).is_none());
    }

    #[test]
    fn config_validation() {
        let mut c = VrrpInstanceConfig::new("VI_1", "lo", Vrid::new(1).unwrap());
        c.advert_int = AdvertInterval::from_centis(10).unwrap();
        assert!(c.validate().is_err());
        c.version = Version::V3;
        assert!(c.validate().is_ok());
        c.authentication = Auth::password("x");
        assert!(c.validate().is_err());
    }

    fn v4_vips(n: usize, third: u8) -> Vec<Vip> {
        (0..n)
            .map(|i| {
                format!("10.{third}.{}.{}", i / 256, i % 256)
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn advertised_vips_are_capped_excluded_ones_are_not() {
        let mut c = VrrpInstanceConfig::new("VI_1", "lo", Vrid::new(1).unwrap());
        c.virtual_ipaddress = v4_vips(MAX_ADDRESSES_V4, 0);
        c.virtual_ipaddress_excluded = v4_vips(1000, 1);
        assert!(c.validate().is_ok());
        c.virtual_ipaddress = v4_vips(MAX_ADDRESSES_V4 + 1, 0);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("at most 255"), "{e}");

        let mut c = VrrpInstanceConfig::new("VI_6", "lo", Vrid::new(1).unwrap());
        c.version = Version::V3;
        let v6 = |n: usize| -> Vec<Vip> {
            (0..n)
                .map(|i| format!("2001:db8::{:x}", i + 1).parse().unwrap())
                .collect()
        };
        c.virtual_ipaddress = v6(MAX_ADDRESSES_V6);
        assert!(c.validate().is_ok());
        c.virtual_ipaddress = v6(MAX_ADDRESSES_V6 + 1);
        assert!(c.validate().is_err());
        assert_eq!(MAX_ADDRESSES_V6, 89, "keepalived's count at MTU 1500");
    }

    /// `virtual_ipaddress_excluded` is added with the VIPs but never advertised: the
    /// master's advert carries only `virtual_ipaddress` and still encodes with hundreds of
    /// excluded addresses.
    #[test]
    fn excluded_vips_are_managed_but_not_advertised() {
        let mut c = VrrpInstanceConfig::new("VI_1", "lo", Vrid::new(1).unwrap());
        c.virtual_ipaddress = v4_vips(2, 0);
        c.virtual_ipaddress_excluded = v4_vips(300, 1);
        c.virtual_ipaddress_excluded
            .push("2001:db8::1/64".parse().unwrap());
        assert!(c.validate().is_ok());
        let src: IpAddr = "198.18.0.1".parse().unwrap();
        let mc = c.machine_config(src, &TrackedStart::default());
        let advertised: Vec<IpAddr> = c.virtual_ipaddress.iter().map(|v| v.addr).collect();
        assert_eq!(mc.vips, advertised);
        assert_eq!(c.all_vips().count(), 2 + 301);
        let mut vr = VirtualRouter::new(mc);
        vr.start(now());
        let mut adverts = 0;
        for _ in 0..3 {
            while let Some(a) = vr.poll_action() {
                if let Action::SendAdvert(repr) = a {
                    assert_eq!(repr.addresses, advertised);
                    repr.to_bytes(src, IpAddr::V4(VRRP_MCAST_V4)).unwrap();
                    adverts += 1;
                }
            }
            if let Some(t) = vr.poll_timeout() {
                vr.handle_timeout(t);
            }
        }
        assert_eq!(vr.state(), State::Master);
        assert!(adverts > 0, "the master advertises");
    }

    /// `run_as` runs the script as that user and group, with no other group (root's
    /// supplementary groups are not kept). Needs root; skipped otherwise.
    #[tokio::test]
    async fn track_script_runs_as_its_user() {
        let nobody = RunAs::resolve("nobody", None).expect("nobody exists");
        assert!(RunAs::resolve("no-such-user-lb", None)
            .unwrap_err()
            .contains("unknown user \"no-such-user-lb\""));
        assert!(RunAs::resolve("nobody", Some("no-such-group-lb"))
            .unwrap_err()
            .contains("unknown group"));
        let mut s = TrackScript::new("echo $(id -u) $(id -g) $(id -G)");
        let out = s.command().output().await.unwrap();
        let me = String::from_utf8(out.stdout).unwrap();
        if !me.starts_with("0 ") {
            // CI runs as root: there, not being root is a failure, not a skip.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but not root: {me}"
            );
            eprintln!("not root, skipped: {me}");
            return;
        }
        s.run_as = Some(nobody);
        let out = s.command().output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            format!("{} {} {}", nobody.uid, nobody.gid, nobody.gid)
        );
    }

    /// A tracked script past its timeout fails and what it started dies with it: its
    /// process group is killed (keepalived `kill(-pid, …)`). Only its `sh` was killed
    /// before, and the `sleep` it ran lived on, one more at every interval.
    #[tokio::test]
    async fn a_timed_out_script_takes_its_children_with_it() {
        // A marker no other process has.
        let marker = format!("{}.{}", 40 + std::process::id() % 50, std::process::id());
        let mut s = TrackScript::new(&format!("sleep {marker}; true"));
        s.timeout = Duration::from_millis(300);
        let running = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
                .any(|c| {
                    String::from_utf8_lossy(&c).replace('\0', " ").trim()
                        == format!("sleep {marker}")
                })
        };
        assert!(!run_script(&s).await.0, "timed out: a failure");
        // Reaped at once by init's or our own wait; give the kill a moment to land.
        let mut gone = false;
        for _ in 0..50 {
            if !running() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the script's sleep outlived its timeout");
        s.timeout = Duration::from_secs(5);
        let mut ok = TrackScript::new("exit 0");
        ok.timeout = Duration::from_secs(5);
        assert!(run_script(&ok).await.0);
        assert!(!run_script(&TrackScript::new("exit 3")).await.0);
        assert_eq!(
            run_script(&TrackScript::new("/nonexistent/chk.sh")).await,
            (false, Some(127)),
            "sh: not found"
        );
    }

    /// Two instances tracking one script share its runs: one run per interval, and each
    /// instance gets the result with its own `reverse`; an instance that starts tracking
    /// it later gets the known result at once.
    #[tokio::test]
    async fn instances_tracking_one_script_share_its_runs() {
        let dir = std::env::temp_dir().join(format!("lb-vrrp-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runs = dir.join("runs");
        let mut s = TrackScript::new(&format!("echo x >> {}", runs.display()));
        s.interval = Duration::from_millis(100);
        let mut reversed = s.clone();
        reversed.reverse = true;
        let runners = ScriptRunners::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = tokio::spawn(script_loop(
            0,
            TrackId(0),
            s.clone(),
            runners.clone(),
            tx.clone(),
        ));
        let b = tokio::spawn(script_loop(
            1,
            TrackId(0),
            reversed,
            runners.clone(),
            tx.clone(),
        ));
        let mut got = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Control::Track(i, _, healthy))) => got.push((i, healthy)),
                other => panic!("{other:?}"),
            }
        }
        got.sort_unstable();
        assert_eq!(got, [(0, true), (1, false)]);
        // One runner runs at most once per 100 ms (its tick delays, never bursts); two
        // would run about twice as often. A loaded machine runs fewer, never more.
        let started = tokio::time::Instant::now();
        let before = std::fs::read_to_string(&runs).unwrap().lines().count();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let n = std::fs::read_to_string(&runs).unwrap().lines().count() - before;
        let most = usize::try_from(started.elapsed().as_millis() / 100).unwrap_or(usize::MAX) + 2;
        assert!(
            n >= 1 && n <= most,
            "{n} runs in {:?} (one runner: {most} at most)",
            started.elapsed()
        );
        // A late follower: told at once what is known.
        let c = tokio::spawn(script_loop(2, TrackId(0), s, runners.clone(), tx));
        // Told from what is known: the script's state does not change again, so a
        // follower that waited for a change would hear nothing (2 s: a loaded machine).
        let late = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(
            matches!(late, Ok(Some(Control::Track(2, _, true)))),
            "{late:?}"
        );
        for t in [a, b, c] {
            t.abort();
            let _ = t.await;
        }
        // The last follower gone, the script stops running (a run already started may
        // still write: 1 s for it on a loaded machine).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stopped = std::fs::read_to_string(&runs).unwrap().lines().count();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            std::fs::read_to_string(&runs).unwrap().lines().count(),
            stopped
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `weight W reverse` (keepalived): a script that succeeds reports a failure on the
    /// opposite weight, so +10 reversed takes 10 off while it succeeds.
    #[tokio::test]
    async fn reversed_scripts_report_the_opposite_result_on_the_opposite_weight() {
        let mut c = VrrpInstanceConfig::new("VI_1", "lo", Vrid::new(1).unwrap());
        let mut s = TrackScript::new("true");
        s.weight = TrackWeight(10);
        s.reverse = true;
        s.interval = Duration::from_millis(50);
        c.track_script.push(s.clone());
        let mc = c.machine_config("198.18.0.1".parse().unwrap(), &TrackedStart::default());
        assert_eq!(mc.tracks, [TrackWeight(-10)]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(script_loop(0, TrackId(0), s, ScriptRunners::default(), tx));
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        task.abort();
        assert!(
            matches!(got, Ok(Some(Control::Track(0, TrackId(0), false)))),
            "a succeeding reversed script reports a failure"
        );
        let mut vr = VirtualRouter::new(mc);
        vr.start(now());
        vr.handle_track(now(), TrackId(0), false);
        assert_eq!(vr.effective_priority(), Priority(90));
    }
}
