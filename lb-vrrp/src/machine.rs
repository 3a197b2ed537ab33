//! The VRRP state machine of one virtual router ([RFC 5798 §6]), sans-IO, and
//! keepalived-style sync groups ([`SyncGroup`]).
//!
//! A [`VirtualRouter`] never reads the clock and never touches a socket: every input
//! carries `now: Instant`, and every effect comes out of [`VirtualRouter::poll_action`].
//! Its methods follow quinn's taxonomy:
//!
//! * **A. Getters** (`&self`): [`state`](VirtualRouter::state),
//!   [`effective_priority`](VirtualRouter::effective_priority),
//!   [`master_down_interval`](VirtualRouter::master_down_interval), [`counters`](VirtualRouter::counters), …
//! * **B. Handlers** for things that happened, `handle_*(now, …)`:
//!   [`handle_packet`](VirtualRouter::handle_packet) / [`handle_advert`](VirtualRouter::handle_advert),
//!   [`handle_timeout`](VirtualRouter::handle_timeout), [`handle_link`](VirtualRouter::handle_link),
//!   [`handle_address`](VirtualRouter::handle_address), [`handle_track`](VirtualRouter::handle_track).
//! * **C. Commands** from the operator: [`start`](VirtualRouter::start),
//!   [`set_priority`](VirtualRouter::set_priority), [`shutdown`](VirtualRouter::shutdown).
//! * **D. Outputs**, `#[must_use]`: [`poll_action`](VirtualRouter::poll_action) and
//!   [`poll_timeout`](VirtualRouter::poll_timeout).
//!
//! # States
//!
//! [`State::Initialize`], [`State::Backup`] and [`State::Master`] are RFC 5798 §6.4.
//! [`State::Fault`] is a **non-RFC extension** taken from keepalived: the instance enters it
//! when its interface is down ([`VirtualRouter::handle_link`]) or holds no address to send
//! adverts from ([`VirtualRouter::handle_address`]), or a tracked check with weight 0 fails; it neither sends nor listens, and holds no VIP. A master entering Fault
//! first sends a priority-0 advert so that a backup takes over after Skew_Time. When the
//! last fault condition clears the instance goes to Backup, the address owner too (as
//! keepalived 2.2.7's `try_up_instance`: only at start-up does the owner become Master at
//! once), and takes over when its Master_Down_Timer runs out.
//!
//! # Receive validation
//!
//! [RFC 5798 §7.1] / [RFC 3768 §7.1]: TTL / hop limit 255, version, checksum, VRID, v2
//! authentication and advert interval, and in unicast mode the source must be a
//! configured peer. A packet that fails is dropped and counted by [`Discard`] reason in
//! [`Counters`]; it never changes state and is never an error.
//!
//! The address owner (priority 255) is not made to drop every advert for its VRID, as
//! §7.1 of both RFCs would have it: it handles them as §6.4 says, so that of two routers
//! both configured as owner the one with the higher address is Master. (keepalived handles
//! them too, but an owner that hears another owner lowers its own priority to 254.)
//!
//! # Examples
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::{Duration, Instant};
//! use lb_vrrp::machine::{Action, Config, State, VirtualRouter};
//! use lb_vrrp::wire::{Priority, Vrid};
//!
//! let now = Instant::now(); // in a driver; tests use any Instant
//! let mut cfg = Config::new(
//!     Vrid::new(51).unwrap(),
//!     IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
//!     vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
//! );
//! cfg.priority = Priority(150);
//! let mut vr = VirtualRouter::new(cfg);
//! vr.start(now);
//! assert_eq!(vr.state(), State::Backup);
//! while let Some(_action) = vr.poll_action() {}
//! // Nobody advertises: the Master_Down_Timer fires and we take over.
//! let t = vr.poll_timeout().unwrap();
//! assert_eq!(t - now, vr.master_down_interval());
//! vr.handle_timeout(t);
//! assert_eq!(vr.state(), State::Master);
//! assert!(std::iter::from_fn(|| vr.poll_action()).any(|a| a == Action::AddVips));
//! ```
//!
//! [RFC 5798 §6]: https://www.rfc-editor.org/rfc/rfc5798#section-6
//! [RFC 5798 §7.1]: https://www.rfc-editor.org/rfc/rfc5798#section-7.1
//! [RFC 3768 §7.1]: https://www.rfc-editor.org/rfc/rfc3768#section-7.1

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::wire::{
    AdvertInterval, AdvertRepr, Auth, AuthType, Packet, ParseError, Priority, Version, Vrid,
    VRRP_TTL,
};

/// Configuration of one virtual router (keepalived `vrrp_instance` names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Virtual router id (`virtual_router_id`).
    pub vrid: Vrid,
    /// Protocol version (`version`); default 2 (keepalived's default).
    pub version: Version,
    /// Base priority (`priority`); default 100. 255 makes this router the address owner.
    pub priority: Priority,
    /// Advertisement interval (`advert_int`); default 1 s. Must be whole seconds for v2.
    pub advert_interval: AdvertInterval,
    /// v2 authentication (`authentication { auth_type PASS; auth_pass … }`); default none.
    pub auth: Auth,
    /// Our primary address on the interface (or `unicast_src_ip`): the advert's source and
    /// the equal-priority tie breaker ([RFC 5798 §6.4.3]).
    ///
    /// [RFC 5798 §6.4.3]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.3
    pub primary_addr: IpAddr,
    /// Virtual addresses carried in adverts (`virtual_ipaddress`).
    pub vips: Vec<IpAddr>,
    /// Unicast peers (`unicast_peer`); empty means multicast. When set, adverts from other
    /// sources are discarded ([`Discard::NotPeer`]), and, as keepalived does, the TTL of
    /// 255 is not required: unicast peers may be routers apart.
    pub unicast_peers: Vec<IpAddr>,
    /// keepalived `skip_check_adv_addr`: a Backup accepts adverts whose address list
    /// differs from [`Config::vips`] (counted in [`Counters::address_list_mismatch`])
    /// instead of dropping them ([`Discard::AddressList`]) when they come from the master it
    /// last accepted one from, as keepalived's `vrrp_state_backup`; a Master, and a Backup
    /// hearing another sender, still check the list. Default `false`, as keepalived.
    pub skip_check_adv_addr: bool,
    /// keepalived `down_timer_adverts`: how many Master_Adver_Intervals a Backup waits
    /// for an advert before it takes over, 1..=100 (Master_Down_Interval =
    /// `down_timer_adverts × Master_Adver_Interval + Skew_Time`). Default 3, RFC 5798
    /// §6.1's.
    pub down_timer_adverts: u8,
    /// Preempt_Mode ([RFC 5798 §6.1]); `false` is keepalived's `nopreempt`. Default `true`.
    ///
    /// [RFC 5798 §6.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.1
    pub preempt: bool,
    /// keepalived `preempt_delay`: a Backup preempts a lower-priority master only this long
    /// after start-up or after it first heard that master, as keepalived counts it: the
    /// delay starts at start-up, and again at the first lower-priority advert after it left
    /// Master or Fault or heard an advert of priority at least its own. Default 0.
    pub preempt_delay: Duration,
    /// Accept_Mode ([RFC 5798 §6.1], keepalived `accept`); default `false`. Reported to the
    /// data plane by [`VirtualRouter::accept_mode`]; the machine itself does not filter.
    pub accept_mode: bool,
    /// keepalived `garp_master_delay`: a second gratuitous ARP burst this long after becoming
    /// master; default 5 s, `None` disables it.
    pub garp_master_delay: Option<Duration>,
    /// keepalived `garp_master_repeat`: gratuitous ARPs per burst; default 5.
    pub garp_master_repeat: u32,
    /// keepalived `garp_master_refresh`: periodic bursts while master; default `None`.
    pub garp_master_refresh: Option<Duration>,
    /// keepalived `garp_master_refresh_repeat`: gratuitous ARPs per periodic burst;
    /// default 1.
    pub garp_master_refresh_repeat: u32,
    /// keepalived `garp_lower_prio_repeat`: gratuitous ARPs sent by a Master that receives
    /// an advert of lower priority (another node that took over, say while the network was
    /// partitioned, and pointed the neighbours' ARP caches at itself); default 5
    /// (keepalived: `garp_master_repeat`), 0 sends none.
    pub garp_lower_prio_repeat: u32,
    /// keepalived `garp_lower_prio_delay`: a second such burst this long after the first;
    /// default 5 s (keepalived: `garp_master_delay`), `None` disables it.
    pub garp_lower_prio_delay: Option<Duration>,
    /// keepalived `lower_prio_no_advert`: do not answer a lower-priority advert with an
    /// advert of our own at once (RFC 5798 only discards it). Default `false`, as keepalived.
    pub lower_prio_no_advert: bool,
    /// keepalived `higher_prio_send_advert`: as Master, answer an advert of higher
    /// priority (or of equal priority from a higher address) with one advert of our own
    /// before becoming Backup, so that a peer which has not heard us (a unicast peer that
    /// just came back, say) learns at once that we were Master. RFC 5798 §6.4.3 sends
    /// nothing then. Default `false`, as keepalived.
    pub higher_prio_send_advert: bool,
    /// Weights of tracked checks (keepalived `track_script`/`track_interface` `weight`),
    /// indexed by [`TrackId`]. They start as [`Config::track_start`] says (default healthy).
    pub tracks: Vec<TrackWeight>,
    /// The state each track starts in, by [`TrackId`]: `Some(healthy)`, or `None` for
    /// unknown until its first [`VirtualRouter::handle_track`] (keepalived's script INIT
    /// state): an unknown track adds or takes no weight and faults nothing. Tracks beyond
    /// this list start healthy.
    pub track_start: Vec<Option<bool>>,
    /// The offset each valued track starts with, by [`TrackId`] (keepalived `track_file`,
    /// see [`VirtualRouter::handle_track_value`]); tracks beyond this list start at 0.
    pub track_offset_start: Vec<i32>,
    /// Start as Master at once: this router takes over from a previous instance of the
    /// same virtual router in the same process that was Master (a configuration reload;
    /// keepalived's `reload_master`). Without it the new instance would wait a
    /// Master_Down_Interval as Backup, long enough for a peer to take over. Default
    /// false. A fault still wins.
    pub resume_master: bool,
}

impl Config {
    /// A configuration with keepalived's defaults:
    ///
    /// * version 2, priority 100, `advert_int 1`, no authentication;
    /// * multicast, preempt on with no delay, accept mode off;
    /// * `garp_master_delay 5`, `garp_master_repeat 5`, no refresh, nothing tracked;
    /// * on a lower-priority advert while Master: an advert at once and 5 gratuitous ARPs,
    ///   5 more 5 s later.
    pub fn new(vrid: Vrid, primary_addr: IpAddr, vips: Vec<IpAddr>) -> Self {
        Self {
            vrid,
            version: Version::V2,
            priority: Priority::DEFAULT,
            advert_interval: AdvertInterval::ONE_SECOND,
            auth: Auth::None,
            primary_addr,
            vips,
            unicast_peers: Vec::new(),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: false,
            garp_master_delay: Some(Duration::from_secs(5)),
            garp_master_repeat: 5,
            garp_master_refresh_repeat: 1,
            garp_master_refresh: None,
            garp_lower_prio_repeat: 5,
            garp_lower_prio_delay: Some(Duration::from_secs(5)),
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            tracks: Vec::new(),
            track_start: Vec::new(),
            track_offset_start: Vec::new(),
            resume_master: false,
            skip_check_adv_addr: false,
            down_timer_adverts: 3,
        }
    }
}

/// Weight of a tracked check, keepalived semantics: a positive weight is added to the
/// priority while the check is healthy, a negative one while it fails; weight 0 means
/// a failure puts the instance in [`State::Fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackWeight(pub i16);

/// Rise/fall hysteresis of a tracked check (keepalived `vrrp_script` `rise` / `fall`):
/// the check turns unhealthy after `fall` consecutive failures and healthy again after
/// `rise` consecutive successes. It starts unknown and its first result decides at once,
/// whatever `rise` and `fall` say, as keepalived's scripts do without `init_fail` (their
/// result starts at `rise - 1`).
///
/// # Examples
///
/// ```
/// use lb_vrrp::machine::TrackHysteresis;
///
/// let mut h = TrackHysteresis::new(2, 3);
/// assert_eq!(h.is_healthy(), None);
/// assert_eq!(h.handle_result(true), Some(true)); // the first result decides
/// assert_eq!(h.handle_result(false), None);
/// assert_eq!(h.handle_result(false), None);
/// assert_eq!(h.handle_result(false), Some(false)); // third failure: down
/// assert_eq!(h.handle_result(true), None);
/// assert_eq!(h.handle_result(true), Some(true)); // second success: up
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackHysteresis {
    rise: u32,
    fall: u32,
    /// `None` until the first result.
    healthy: Option<bool>,
    run: u32,
}

impl TrackHysteresis {
    /// `rise` and `fall` are clamped to at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: None,
            run: 0,
        }
    }
    /// As [`TrackHysteresis::new`], already `healthy` (`None`: unknown): a change then
    /// needs `rise` or `fall` results like any other.
    pub fn starting(rise: u32, fall: u32, healthy: Option<bool>) -> Self {
        Self {
            healthy,
            ..Self::new(rise, fall)
        }
    }
    /// Current health; `None` before the first result.
    pub fn is_healthy(&self) -> Option<bool> {
        self.healthy
    }
    /// Records one result; returns the new health when it flips (always for the first
    /// result).
    pub fn handle_result(&mut self, ok: bool) -> Option<bool> {
        let Some(healthy) = self.healthy else {
            self.healthy = Some(ok);
            return Some(ok);
        };
        if ok == healthy {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.run >= needed {
            self.healthy = Some(ok);
            self.run = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// The value of a valued track ([`VirtualRouter::handle_track_value`]) that means Fault:
/// keepalived's -254 for a `track_file` whose value times weight is -254 or less, or
/// whose weight is 0 and value not 0.
pub const TRACK_VALUE_FAULT: i32 = -254;

/// A tracked check's state as the router counts it ([`VirtualRouter::tracks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackState {
    /// Healthy, failing, or `None` while unknown (a script before its first result).
    pub healthy: Option<bool>,
    /// What a valued track adds to the priority ([`VirtualRouter::handle_track_value`]);
    /// 0 for the others.
    pub offset: i32,
}

/// Index of a tracked check in [`Config::tracks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackId(pub usize);

/// Router state ([RFC 5798 §6.4]); `Fault` is a non-RFC extension (see the module docs).
///
/// [RFC 5798 §6.4]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or shut down ([RFC 5798 §6.4.1]).
    ///
    /// [RFC 5798 §6.4.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.1
    Initialize,
    /// Monitoring the master ([RFC 5798 §6.4.2]).
    ///
    /// [RFC 5798 §6.4.2]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.2
    Backup,
    /// Forwarding for the virtual addresses ([RFC 5798 §6.4.3]).
    ///
    /// [RFC 5798 §6.4.3]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.3
    Master,
    /// Non-RFC (keepalived): interface down or a weight-0 tracked check failing.
    Fault,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Initialize => "INIT",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        })
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`VirtualRouter::start`].
    Startup,
    /// The Master_Down_Timer fired: no advert from a master for Master_Down_Interval.
    MasterDown,
    /// The master sent priority 0 (it is stopping) and Skew_Time passed.
    MasterStopped,
    /// A master heard a higher priority (or an equal priority from a higher address).
    Preempted,
    /// [`VirtualRouter::shutdown`].
    Shutdown,
    /// The interface went down.
    LinkDown,
    /// The interface holds no address to send adverts from.
    NoAddress,
    /// A weight-0 tracked check failed.
    TrackFault,
    /// The last fault condition cleared.
    FaultCleared,
    /// Another member of the sync group changed state.
    SyncGroup,
    /// Started as Master because the instance it replaces was ([`Config::resume_master`]).
    Reload,
}

/// Something the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advert to the multicast group, or to every unicast peer.
    SendAdvert(AdvertRepr),
    /// Add the virtual addresses to the interface.
    AddVips,
    /// Remove the virtual addresses from the interface.
    RemoveVips,
    /// Send `repeat` gratuitous ARPs (IPv4) / unsolicited neighbour advertisements (IPv6)
    /// for every virtual address.
    AnnounceVips {
        /// Packets per address (`garp_master_repeat`).
        repeat: u32,
    },
    /// The state changed (for events, logs and notify scripts).
    Transition {
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
    },
}

/// Timers of a virtual router ([RFC 5798 §6.2] plus keepalived's GARP timers).
///
/// [RFC 5798 §6.2]: https://www.rfc-editor.org/rfc/rfc5798#section-6.2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Adver_Timer: next advert (Master).
    Advert,
    /// Master_Down_Timer: take over if it fires (Backup).
    MasterDown,
    /// The delayed second GARP burst (`garp_master_delay`).
    Garp,
    /// The periodic GARP refresh (`garp_master_refresh`).
    GarpRefresh,
    /// The delayed second GARP burst after a lower-priority advert
    /// (`garp_lower_prio_delay`).
    GarpLowerPrio,
}

impl Timer {
    const ALL: [Self; 5] = [
        Self::Advert,
        Self::MasterDown,
        Self::Garp,
        Self::GarpRefresh,
        Self::GarpLowerPrio,
    ];
}

#[derive(Debug, Clone, Default)]
struct TimerTable([Option<Instant>; Timer::ALL.len()]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    fn clear(&mut self) {
        self.0 = [None; Timer::ALL.len()];
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
    fn is_expired(&self, t: Timer, now: Instant) -> bool {
        self.get(t).is_some_and(|at| at <= now)
    }
}

/// Why a received packet was dropped ([RFC 5798 §7.1], [RFC 3768 §7.1]).
///
/// [RFC 5798 §7.1]: https://www.rfc-editor.org/rfc/rfc5798#section-7.1
/// [RFC 3768 §7.1]: https://www.rfc-editor.org/rfc/rfc3768#section-7.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// IP TTL / hop limit was not 255.
    Ttl,
    /// Version is not the configured one (or not 2/3).
    Version,
    /// Checksum did not verify.
    Checksum,
    /// Malformed: truncated, bad type, VRID 0, zero interval, bad family.
    Malformed,
    /// VRID is not ours.
    Vrid,
    /// v2 authentication type or password mismatch.
    Auth,
    /// v2 advert interval differs from ours.
    Interval,
    /// Unicast mode: the source is not a configured peer.
    NotPeer,
    /// IP family differs from ours.
    Family,
    /// The source is our own address (our own advert looped back).
    OwnAddress,
    /// Not listening: Initialize or Fault.
    Inactive,
    /// The advert's address list differs from ours: another count, or one of our VIPs
    /// missing (order does not matter). keepalived drops these unless
    /// `skip_check_adv_addr`; [RFC 3768 §7.1] requires it for v2 unless the sender is
    /// the address owner (priority 255). ([RFC 5798 §7.1] asks only to log it: set
    /// [`Config::skip_check_adv_addr`] for that.) Two clusters sharing a VRID by mistake
    /// then keep their own masters instead of one silencing the other.
    ///
    /// [RFC 3768 §7.1]: https://www.rfc-editor.org/rfc/rfc3768#section-7.1
    /// [RFC 5798 §7.1]: https://www.rfc-editor.org/rfc/rfc5798#section-7.1
    AddressList,
    /// Sent to a unicast address while we are a multicast instance, or to a multicast
    /// group while we are a unicast one (keepalived: "Expected multicast packet but
    /// received unicast packet", counted with the address-list errors). Any host could
    /// otherwise speak for a multicast router with a unicast advert.
    Destination,
}

impl Discard {
    /// Whether this reason means another router of this VRID is configured unlike this
    /// one (version, authentication, interval, address list, unicast peers, multicast or
    /// unicast) or sends what no router should (TTL, checksum, malformed): logged at INFO,
    /// once a minute per reason, as keepalived logs these. Another VRID on the link, our
    /// own advert looped back, a packet while Initialize/Fault and a family mismatch are
    /// normal and logged at DEBUG.
    pub fn is_misconfiguration(self) -> bool {
        !matches!(
            self,
            Self::Vrid | Self::OwnAddress | Self::Inactive | Self::Family
        )
    }

    /// The reason's name in counters and status (`ttl`, `auth`, `address_list`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::Version => "version",
            Self::Checksum => "checksum",
            Self::Malformed => "malformed",
            Self::Vrid => "vrid",
            Self::Auth => "auth",
            Self::Interval => "interval",
            Self::NotPeer => "not_peer",
            Self::Family => "family",
            Self::OwnAddress => "own_address",
            Self::Inactive => "inactive",
            Self::AddressList => "address_list",
            Self::Destination => "destination",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [Self; 13] = [
        Self::Ttl,
        Self::Version,
        Self::Checksum,
        Self::Malformed,
        Self::Vrid,
        Self::Auth,
        Self::Interval,
        Self::NotPeer,
        Self::Family,
        Self::OwnAddress,
        Self::Inactive,
        Self::AddressList,
        Self::Destination,
    ];

    /// The reason for a packet [`AdvertRepr::parse`] rejected.
    pub fn from_parse_error(e: &ParseError) -> Self {
        match e {
            ParseError::UnsupportedVersion(_) | ParseError::V2OverIpv6 => Self::Version,
            ParseError::Checksum(_) => Self::Checksum,
            ParseError::UnsupportedAuth(_) => Self::Auth,
            ParseError::FamilyMismatch(_) => Self::Family,
            _ => Self::Malformed,
        }
    }
}

/// Counters of one virtual router (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Adverts that passed validation.
    pub adverts_rx: u64,
    /// Adverts sent (including priority 0).
    pub adverts_tx: u64,
    /// Accepted adverts with priority 0.
    pub priority_zero_rx: u64,
    /// Priority-0 adverts sent.
    pub priority_zero_tx: u64,
    /// Times this router became master.
    pub became_master: u64,
    /// Accepted adverts whose address list differs from ours: with
    /// [`Config::skip_check_adv_addr`] (logged, not dropped, [RFC 5798 §7.1]), or from the
    /// v2 address owner. Otherwise such adverts are dropped ([`Discard::AddressList`]).
    ///
    /// [RFC 5798 §7.1]: https://www.rfc-editor.org/rfc/rfc5798#section-7.1
    pub address_list_mismatch: u64,
    /// Adverts of lower priority received while Master: another router acting as Master
    /// (after a partition, say), answered as [`Config::lower_prio_no_advert`] and
    /// [`Config::garp_lower_prio_repeat`] say.
    pub lower_priority_rx: u64,
    discards: [u64; Discard::ALL.len()],
}

impl Counters {
    /// Packets dropped for `reason`.
    pub fn discards(&self, reason: Discard) -> u64 {
        self.discards[reason as usize]
    }
    /// All dropped packets.
    pub fn total_discards(&self) -> u64 {
        self.discards.iter().sum()
    }
    fn discard(&mut self, reason: Discard) {
        self.discards[reason as usize] += 1;
    }
}

/// Metadata of a received advert that the IP layer knows and the VRRP message does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// IP source address.
    pub src: IpAddr,
    /// IP destination address (group or our unicast address).
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit; must be 255.
    pub ttl: u8,
}

/// Skew_Time ([RFC 5798 §6.1], [RFC 3768 §6.1]):
/// v3 `((256 - priority) * Master_Adver_Interval) / 256`, v2 `(256 - priority) / 256` s.
/// Computed in microseconds, as keepalived does.
///
/// [RFC 5798 §6.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.1
/// [RFC 3768 §6.1]: https://www.rfc-editor.org/rfc/rfc3768#section-6.1
pub fn skew_time(
    version: Version,
    priority: Priority,
    master_adver_interval: AdvertInterval,
) -> Duration {
    let k = 256 - u64::from(priority.get());
    let us = match version {
        Version::V3 => k * u64::from(master_adver_interval.centis()) * 10_000 / 256,
        Version::V2 => k * 1_000_000 / 256,
    };
    Duration::from_micros(us)
}

/// Master_Down_Interval ([RFC 5798 §6.1], [RFC 3768 §6.1]):
/// `3 * Master_Adver_Interval + Skew_Time` (v2: the configured Advertisement_Interval).
///
/// [RFC 5798 §6.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.1
/// [RFC 3768 §6.1]: https://www.rfc-editor.org/rfc/rfc3768#section-6.1
pub fn master_down_interval(
    version: Version,
    priority: Priority,
    master_adver_interval: AdvertInterval,
) -> Duration {
    3 * master_adver_interval.as_duration() + skew_time(version, priority, master_adver_interval)
}

/// One VRRP virtual router (keepalived `vrrp_instance`): see the module docs.
#[derive(Debug, Clone)]
pub struct VirtualRouter {
    cfg: Config,
    state: State,
    base_priority: Priority,
    /// Each track's health; `None` while unknown.
    track_ok: Vec<Option<bool>>,
    /// Each valued track's priority offset (0 for the others).
    track_offset: Vec<i32>,
    link_up: bool,
    /// The interface holds an address to send adverts from.
    has_addr: bool,
    group_fault: bool,
    master_adver_interval: AdvertInterval,
    master_addr: Option<IpAddr>,
    /// The Master_Down_Timer was last armed by a priority-0 advert.
    stop_heard: bool,
    /// When a Backup may preempt a lower-priority master (keepalived's `preempt_time`);
    /// `None`: not before the delay restarts. Unused with `preempt_delay` 0.
    preempt_at: Option<Instant>,
    /// keepalived's `vrrp_startup_delay` end ([`VirtualRouter::delay_start_until`]).
    delayed_start: Option<Instant>,
    /// In a sync group of several: a Master_Down_Timer expiry only records that this member
    /// wants Master ([`VirtualRouter::wants_master`]); the group decides.
    sync_hold: bool,
    /// Held in Backup by its sync group after its Master_Down_Timer ran out (keepalived's
    /// `wantstate` MASTER), with the reason it would have given; cleared by a master's
    /// advert and by any transition.
    wants_master: Option<Reason>,
    /// In a sync group with a member that is no address owner: an owner starts as Backup
    /// (keepalived's `vrrp_complete_init`). Set by [`SyncGroup::start`].
    owner_waits: bool,
    timers: TimerTable,
    actions: VecDeque<Action>,
    counters: Counters,
    /// When each discard reason was last logged at INFO ([`Discard::is_misconfiguration`]).
    discard_logged: [Option<Instant>; Discard::ALL.len()],
}

/// What a discarded advert says against this router's configuration, for the log: the
/// version, interval, authentication type or address count it carries, and ours (never a
/// password). Copied out of the advert and the configuration (no allocation).
struct DiscardDetail {
    reason: Discard,
    /// (the advert's, ours)
    version: (Version, Version),
    interval: (AdvertInterval, AdvertInterval),
    auth: (AuthType, AuthType),
    addresses: (usize, usize),
    vrid: Vrid,
}

impl DiscardDetail {
    fn new(reason: Discard, adv: &AdvertRepr, cfg: &Config) -> Self {
        Self {
            reason,
            version: (adv.version, cfg.version),
            interval: (adv.interval, cfg.advert_interval),
            auth: (adv.auth.auth_type(), cfg.auth.auth_type()),
            addresses: (adv.addresses.len(), cfg.vips.len()),
            vrid: adv.vrid,
        }
    }
}

impl fmt::Display for DiscardDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |i: AdvertInterval| i.as_duration().as_millis();
        match self.reason {
            Discard::Version => write!(
                f,
                "version {}, ours {}",
                self.version.0.number(),
                self.version.1.number()
            ),
            Discard::Interval => write!(
                f,
                "advert_int {} ms, ours {} ms",
                ms(self.interval.0),
                ms(self.interval.1)
            ),
            Discard::Auth => write!(
                f,
                "authentication {:?}, ours {:?} (or another password)",
                self.auth.0, self.auth.1
            ),
            Discard::AddressList => write!(
                f,
                "{} virtual addresses, ours {} (or other ones)",
                self.addresses.0, self.addresses.1
            ),
            Discard::Vrid => write!(f, "VRID {}", self.vrid),
            r => f.write_str(r.name()),
        }
    }
}

/// How often at most a discard reason that points at a misconfiguration is logged at INFO
/// per virtual router (the others, and the rest, at DEBUG; every one is counted).
const DISCARD_LOG_EVERY: Duration = Duration::from_secs(60);

impl VirtualRouter {
    /// A router in [`State::Initialize`]; call [`VirtualRouter::start`] to run it.
    pub fn new(cfg: Config) -> Self {
        Self {
            state: State::Initialize,
            base_priority: cfg.priority,
            track_ok: (0..cfg.tracks.len())
                .map(|i| cfg.track_start.get(i).copied().unwrap_or(Some(true)))
                .collect(),
            track_offset: (0..cfg.tracks.len())
                .map(|i| cfg.track_offset_start.get(i).copied().unwrap_or(0))
                .collect(),
            link_up: true,
            has_addr: true,
            group_fault: false,
            master_adver_interval: cfg.advert_interval,
            master_addr: None,
            stop_heard: false,
            preempt_at: None,
            delayed_start: None,
            sync_hold: false,
            wants_master: None,
            owner_waits: false,
            timers: TimerTable::default(),
            actions: VecDeque::new(),
            counters: Counters::default(),
            discard_logged: [None; Discard::ALL.len()],
            cfg,
        }
    }

    // ----- A. getters -----

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The virtual router id.
    pub fn vrid(&self) -> Vrid {
        self.cfg.vrid
    }
    /// The configured (base) priority, as last set.
    pub fn base_priority(&self) -> Priority {
        self.base_priority
    }
    /// Priority after tracking: base plus the weights of tracked checks (positive weights
    /// while healthy, negative ones while failing) and the offsets of valued tracks,
    /// clamped to 1..=254; the owner (255) is never adjusted.
    pub fn effective_priority(&self) -> Priority {
        if self.base_priority.is_owner() {
            return Priority::OWNER;
        }
        let mut p = i32::from(self.base_priority.get()) + self.track_offset.iter().sum::<i32>();
        for (w, ok) in self.cfg.tracks.iter().zip(&self.track_ok) {
            let w = i32::from(w.0);
            if (w > 0 && *ok == Some(true)) || (w < 0 && *ok == Some(false)) {
                p += w;
            }
        }
        Priority(p.clamp(1, 254) as u8)
    }
    /// Each track's state, by [`TrackId`] (for status displays: why the effective
    /// priority is what it is).
    pub fn tracks(&self) -> Vec<TrackState> {
        self.track_ok
            .iter()
            .zip(&self.track_offset)
            .map(|(&healthy, &offset)| TrackState { healthy, offset })
            .collect()
    }
    /// Configured advert interval.
    pub fn advert_interval(&self) -> AdvertInterval {
        self.cfg.advert_interval
    }
    /// Master_Adver_Interval: learned from the master's adverts (v3), else ours.
    pub fn master_advert_interval(&self) -> AdvertInterval {
        self.master_adver_interval
    }
    /// Skew_Time for our effective priority ([RFC 5798 §6.1]).
    ///
    /// [RFC 5798 §6.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.1
    pub fn skew_time(&self) -> Duration {
        skew_time(
            self.cfg.version,
            self.effective_priority(),
            self.master_adver_interval,
        )
    }
    /// Master_Down_Interval for our effective priority ([RFC 5798 §6.1]), with
    /// [`Config::down_timer_adverts`] Master_Adver_Intervals.
    ///
    /// [RFC 5798 §6.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.1
    pub fn master_down_interval(&self) -> Duration {
        let n = u32::from(self.cfg.down_timer_adverts.clamp(1, 100));
        n * self.master_adver_interval.as_duration()
            + skew_time(
                self.cfg.version,
                self.effective_priority(),
                self.master_adver_interval,
            )
    }
    /// Source of the last accepted advert (the current master, as seen from Backup).
    pub fn master_addr(&self) -> Option<IpAddr> {
        self.master_addr
    }
    /// Whether the data plane should accept packets addressed to the VIPs: the owner
    /// always does, others only with Accept_Mode ([RFC 5798 §6.1]).
    ///
    /// [RFC 5798 §6.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.1
    pub fn accept_mode(&self) -> bool {
        self.cfg.accept_mode || self.base_priority.is_owner()
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// When `timer` fires, if armed.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }
    /// True if a fault condition of this router's own holds (link down or a weight-0
    /// check failing), not counting a fault imposed by its sync group.
    pub fn has_own_fault(&self) -> bool {
        !self.link_up
            || !self.has_addr
            || self
                .cfg
                .tracks
                .iter()
                .zip(&self.track_ok)
                .any(|(w, ok)| w.0 == 0 && *ok == Some(false))
    }

    // ----- D. outputs -----

    /// The next thing for the driver to do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    /// When to call [`VirtualRouter::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- C. commands -----

    /// The Startup event ([RFC 5798 §6.4.1]): the owner becomes Master at once, others
    /// Backup (or Fault if a fault condition holds). No-op unless in Initialize. In a
    /// [`SyncGroup`] with a member that is no owner, the owner starts as Backup too.
    ///
    /// [RFC 5798 §6.4.1]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.1
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        // A delay too long for the clock (Duration::MAX) means never.
        self.preempt_at = (!self.cfg.preempt_delay.is_zero())
            .then(|| now.checked_add(self.cfg.preempt_delay))
            .flatten();
        self.enter_running(now, Reason::Startup);
        // Once: a later start (after a shutdown) is an ordinary one.
        self.cfg.resume_master = false;
    }

    /// The Shutdown event: a master sends a priority-0 advert and removes its VIPs; all
    /// timers stop and the router returns to Initialize ([RFC 5798 §6.4.2], §6.4.3).
    ///
    /// [RFC 5798 §6.4.2]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.2
    pub fn shutdown(&mut self, now: Instant) {
        let _ = now;
        match self.state {
            State::Initialize => {}
            State::Master => {
                self.send_advert(Priority::STOP);
                self.actions.push_back(Action::RemoveVips);
                self.transition(State::Initialize, Reason::Shutdown);
            }
            State::Backup | State::Fault => self.transition(State::Initialize, Reason::Shutdown),
        }
        self.timers.clear();
        self.preempt_at = None;
    }

    /// keepalived's `vrrp_startup_delay`: until `until`, a Backup's Master_Down timer,
    /// whenever it is armed, runs from `until` instead of from now, and an address owner
    /// starts as Backup and becomes Master at `until` (keepalived's
    /// `vrrp_init_instance_sands` with `vrrp_delayed_start_time`). The instance starts at
    /// once otherwise (its state and notifications as without the delay); only taking
    /// over waits. In a sync group the members take over together, once each may
    /// (keepalived's `vrrp_sync_can_goto_master`): an owner waits for the others' timers.
    /// Call before [`VirtualRouter::start`].
    pub fn delay_start_until(&mut self, until: Instant) {
        self.delayed_start = Some(until);
    }

    /// When a Master_Down timer armed at `now` for `interval` expires: `now + interval`,
    /// or within the startup delay, its end plus `interval`.
    fn master_down_at(&self, now: Instant, interval: Duration) -> Instant {
        match self.delayed_start {
            Some(end) if now < end => end + interval,
            _ => now + interval,
        }
    }

    /// Changes the base priority. A master advertises it with its next scheduled advert (as
    /// keepalived); a backup's new priority takes effect with the next advert it hears.
    pub fn set_priority(&mut self, now: Instant, priority: Priority) {
        let before = self.effective_priority();
        self.base_priority = priority;
        self.priority_changed(now, before);
    }

    // ----- B. handlers -----

    /// The advert source changed (the driver found the interface's address gone and took
    /// another, or one appeared where there was none): adverts carry it from now on, and
    /// it breaks priority ties ([RFC 5798 §6.4.3]). The family must stay the same.
    ///
    /// [RFC 5798 §6.4.3]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.3
    pub fn set_primary_addr(&mut self, addr: IpAddr) {
        if addr.is_ipv6() != self.cfg.primary_addr.is_ipv6() {
            return;
        }
        self.cfg.primary_addr = addr;
        if self.state == State::Master {
            self.master_addr = Some(addr);
        }
    }

    /// A tracked check changed health. Out-of-range ids are ignored.
    pub fn handle_track(&mut self, now: Instant, id: TrackId, healthy: bool) {
        let before = self.effective_priority();
        match self.track_ok.get_mut(id.0) {
            Some(ok) if *ok != Some(healthy) => *ok = Some(healthy),
            _ => return,
        }
        if !self.reevaluate_fault(now, Reason::TrackFault) {
            self.priority_changed(now, before);
        }
    }

    /// A valued track changed (keepalived `track_file`: the file's value times the weight,
    /// clamped by the caller to `-254..=253`). [`TRACK_VALUE_FAULT`] (-254) puts the router
    /// in [`State::Fault`], as a failing weight-0 check does (configure the track with
    /// [`TrackWeight`] 0); any other value is added to the priority (an owner's stays 255)
    /// until the next change. Out-of-range ids are ignored.
    pub fn handle_track_value(&mut self, now: Instant, id: TrackId, value: i32) {
        let before = self.effective_priority();
        let healthy = value > TRACK_VALUE_FAULT;
        let offset = if healthy { value } else { 0 };
        match (self.track_ok.get_mut(id.0), self.track_offset.get_mut(id.0)) {
            (Some(ok), Some(o)) if *ok != Some(healthy) || *o != offset => {
                *ok = Some(healthy);
                *o = offset;
            }
            _ => return,
        }
        if !self.reevaluate_fault(now, Reason::TrackFault) {
            self.priority_changed(now, before);
        }
    }

    /// The interface went up or down (non-RFC: down means [`State::Fault`]).
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        self.reevaluate_fault(now, Reason::LinkDown);
    }

    /// The interface lost its last usable address to send adverts from, or has one again
    /// (non-RFC, keepalived: none means [`State::Fault`]). A Master that loses it while its
    /// link is up still sends a priority-0 advert (from the address it had, which the
    /// driver can still send from), so that a backup takes over after Skew_Time rather than
    /// Master_Down_Interval.
    pub fn handle_address(&mut self, now: Instant, present: bool) {
        if self.has_addr == present {
            return;
        }
        self.has_addr = present;
        self.reevaluate_fault(now, Reason::NoAddress);
    }

    /// Timer expiry. Idempotent: a wake-up before any deadline does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in Timer::ALL {
            if !self.timers.is_expired(t, now) {
                continue;
            }
            self.timers.stop(t);
            match (t, self.state) {
                (Timer::Advert, State::Master) => {
                    self.send_advert(self.effective_priority());
                    self.timers
                        .set(Timer::Advert, now + self.cfg.advert_interval.as_duration());
                }
                (Timer::MasterDown, State::Backup) => {
                    let reason = if self.stop_heard {
                        Reason::MasterStopped
                    } else {
                        Reason::MasterDown
                    };
                    if self.sync_hold {
                        // keepalived's vrrp_sync_can_goto_master: wait for the other
                        // members, timer re-armed.
                        self.wants_master = Some(reason);
                        self.timers.set(
                            Timer::MasterDown,
                            self.master_down_at(now, self.master_down_interval()),
                        );
                    } else {
                        self.become_master(now, reason);
                    }
                }
                (Timer::Garp, State::Master) => self.announce(self.cfg.garp_master_repeat),
                (Timer::GarpLowerPrio, State::Master) => {
                    self.announce(self.cfg.garp_lower_prio_repeat);
                }
                (Timer::GarpRefresh, State::Master) => {
                    self.announce(self.cfg.garp_master_refresh_repeat);
                    if let Some(r) = self.cfg.garp_master_refresh {
                        self.timers.set(Timer::GarpRefresh, now + r);
                    }
                }
                _ => {}
            }
        }
    }

    /// Parses and handles a received VRRP message (the IP payload). Malformed packets are
    /// counted ([`Discard`]) and dropped.
    pub fn handle_packet(&mut self, now: Instant, meta: RxMeta, bytes: &[u8]) {
        let packet = Packet::new_unchecked(bytes);
        match AdvertRepr::parse(&packet, meta.src, meta.dst) {
            Ok(repr) => self.handle_advert(now, meta, &repr),
            Err(e) => self.note_discard(now, meta, Discard::from_parse_error(&e), &e),
        }
    }

    /// Counts a discarded packet and logs it: at INFO once a minute per reason when the
    /// reason points at a misconfiguration ([`Discard::is_misconfiguration`]: keepalived
    /// logs these, "received an invalid passwd!", "advertisement interval mismatch", as
    /// two routers disagree and the VRID's election is not what it seems), else at DEBUG.
    fn note_discard(
        &mut self,
        now: Instant,
        meta: RxMeta,
        reason: Discard,
        detail: &dyn fmt::Display,
    ) {
        self.counters.discard(reason);
        let last = &mut self.discard_logged[reason as usize];
        if reason.is_misconfiguration()
            && last.is_none_or(|t| now.saturating_duration_since(t) >= DISCARD_LOG_EVERY)
        {
            *last = Some(now);
            tracing::info!(vrid = %self.cfg.vrid, src = %meta.src, reason = reason.name(), %detail, total = self.counters.discards(reason), "discarding VRRP packet (logged once a minute per reason; each is counted)");
        } else {
            tracing::debug!(vrid = %self.cfg.vrid, src = %meta.src, reason = reason.name(), %detail, "discarding VRRP packet");
        }
    }

    /// Handles a parsed advert after the receive checks of [RFC 5798 §7.1] (see
    /// [`Discard`]); then [RFC 5798 §6.4.2] (Backup) or §6.4.3 (Master).
    ///
    /// [RFC 5798 §7.1]: https://www.rfc-editor.org/rfc/rfc5798#section-7.1
    /// [RFC 5798 §6.4.2]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.2
    pub fn handle_advert(&mut self, now: Instant, meta: RxMeta, adv: &AdvertRepr) {
        if let Err(reason) = self.validate(meta, adv) {
            let detail = DiscardDetail::new(reason, adv, &self.cfg);
            self.note_discard(now, meta, reason, &detail);
            return;
        }
        self.counters.adverts_rx += 1;
        if adv.priority == Priority::STOP {
            self.counters.priority_zero_rx += 1;
        }
        if !self.same_addresses(adv) {
            self.counters.address_list_mismatch += 1;
        }
        let mine = self.effective_priority();
        match self.state {
            State::Backup => {
                self.master_addr = Some(meta.src);
                if adv.priority == Priority::STOP {
                    self.stop_heard = true;
                    self.timers.set(
                        Timer::MasterDown,
                        self.master_down_at(now, self.skew_time()),
                    );
                } else if !self.may_preempt(now) || adv.priority >= mine {
                    self.note_preempt_delay(now, adv.priority >= mine);
                    self.stop_heard = false;
                    self.wants_master = None;
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval = adv.interval;
                    }
                    self.timers.set(
                        Timer::MasterDown,
                        self.master_down_at(now, self.master_down_interval()),
                    );
                }
                // else: a lower-priority master and we preempt: let the timer run out.
            }
            State::Master => {
                let higher = adv.priority > mine
                    || (adv.priority == mine
                        && addr_key(meta.src) > addr_key(self.cfg.primary_addr));
                if adv.priority == Priority::STOP {
                    self.send_advert(mine);
                    self.timers
                        .set(Timer::Advert, now + self.cfg.advert_interval.as_duration());
                } else if higher {
                    if self.cfg.higher_prio_send_advert {
                        self.send_advert(mine);
                    }
                    self.master_addr = Some(meta.src);
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval = adv.interval;
                    }
                    self.become_backup(now, Reason::Preempted);
                } else {
                    // keepalived: answer a lower-priority master at once so it backs off
                    // without waiting for our next Adver_Timer, and point the neighbours'
                    // ARP caches back at us (it announced the addresses as its own).
                    self.counters.lower_priority_rx += 1;
                    if !self.cfg.lower_prio_no_advert {
                        self.send_advert(mine);
                        self.timers
                            .set(Timer::Advert, now + self.cfg.advert_interval.as_duration());
                    }
                    self.reannounce_after_lower_priority(now);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// As Master after a lower-priority advert (to this router or, in a sync group, to
    /// another member): `garp_lower_prio_repeat` gratuitous ARPs now and, after
    /// `garp_lower_prio_delay`, again.
    fn reannounce_after_lower_priority(&mut self, now: Instant) {
        if self.state != State::Master || self.cfg.garp_lower_prio_repeat == 0 {
            return;
        }
        self.announce(self.cfg.garp_lower_prio_repeat);
        if let Some(d) = self.cfg.garp_lower_prio_delay.filter(|d| !d.is_zero()) {
            self.timers.set(Timer::GarpLowerPrio, now + d);
        }
    }

    // ----- sync-group hooks -----

    /// Sync group: become Master now if Backup.
    ///
    /// A member held after its own Master_Down_Timer ran out gives the reason it had,
    /// the others [`Reason::SyncGroup`].
    pub(crate) fn force_master(&mut self, now: Instant) {
        if self.state == State::Backup {
            let reason = self.wants_master.unwrap_or(Reason::SyncGroup);
            self.become_master(now, reason);
        }
    }
    /// Whether this member wants Master (held by its sync group) or is Master.
    fn wants_or_is_master(&self) -> bool {
        self.wants_master.is_some() || self.state == State::Master
    }
    /// Sync group: become Backup now if Master.
    pub(crate) fn force_backup(&mut self, now: Instant) {
        if self.state == State::Master {
            // The master is unknown until an advert names it (it is no longer us), and so is
            // its interval: our own until then (RFC 5798 §6.4.1), not one learned from an
            // earlier master.
            self.master_addr = None;
            self.master_adver_interval = self.cfg.advert_interval;
            self.become_backup(now, Reason::SyncGroup);
        }
    }
    /// Sync group: hold (or release) this member in Fault because another member is.
    pub(crate) fn set_group_fault(&mut self, now: Instant, fault: bool) {
        if self.group_fault != fault {
            self.group_fault = fault;
            self.reevaluate_fault(now, Reason::SyncGroup);
        }
    }

    // ----- internals -----

    fn validate(&self, meta: RxMeta, adv: &AdvertRepr) -> Result<(), Discard> {
        if matches!(self.state, State::Initialize | State::Fault) {
            return Err(Discard::Inactive);
        }
        // keepalived checks the TTL only in multicast mode: unicast peers may be routers
        // apart, and their adverts arrive with a lower TTL.
        if self.cfg.unicast_peers.is_empty() && meta.ttl != VRRP_TTL {
            return Err(Discard::Ttl);
        }
        if meta.src.is_ipv6() != self.cfg.primary_addr.is_ipv6() {
            return Err(Discard::Family);
        }
        if adv.version != self.cfg.version {
            return Err(Discard::Version);
        }
        if adv.vrid != self.cfg.vrid {
            return Err(Discard::Vrid);
        }
        if meta.src == self.cfg.primary_addr {
            return Err(Discard::OwnAddress);
        }
        if meta.dst.is_multicast() != self.cfg.unicast_peers.is_empty() {
            return Err(Discard::Destination);
        }
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&meta.src) {
            return Err(Discard::NotPeer);
        }
        if adv.version == Version::V2 {
            if adv.auth != self.cfg.auth {
                return Err(Discard::Auth);
            }
            if adv.interval != self.cfg.advert_interval {
                return Err(Discard::Interval);
            }
        }
        let from_v2_owner = adv.version == Version::V2 && adv.priority.is_owner();
        // keepalived skips the check only as a Backup, for the master it last heard
        // (`vrrp_state_backup`: `skip_check_adv_addr && pkt_saddr == master_saddr`); a
        // Master always checks (`vrrp_state_master_rx`), so another cluster's router on
        // the same VRID cannot take its VIPs away.
        let skip = self.cfg.skip_check_adv_addr
            && self.state == State::Backup
            && self.master_addr == Some(meta.src);
        if !skip && !from_v2_owner && !self.same_addresses(adv) {
            return Err(Discard::AddressList);
        }
        Ok(())
    }

    /// Whether `adv` carries our VIPs: as many, and each of ours among them (keepalived's
    /// check; the order may differ).
    fn same_addresses(&self, adv: &AdvertRepr) -> bool {
        adv.addresses.len() == self.cfg.vips.len()
            && self.cfg.vips.iter().all(|v| adv.addresses.contains(v))
    }

    /// Whether a Backup may preempt a lower-priority master now: preempt on, and
    /// `preempt_delay` 0 or run out (keepalived's `preempt_time`).
    fn may_preempt(&self, now: Instant) -> bool {
        // An address owner always preempts (keepalived clears nopreempt and preempt_delay
        // for priority 255): it is a Backup only within a startup delay.
        self.effective_priority().is_owner()
            || (self.cfg.preempt
                && (self.cfg.preempt_delay.is_zero() || self.preempt_at.is_some_and(|t| now >= t)))
    }

    /// keepalived's `preempt_time` as a Backup accepts an advert: an advert of priority at
    /// least ours (`not_lower`) stops the delay; the first lower-priority one after that
    /// starts it.
    fn note_preempt_delay(&mut self, now: Instant, not_lower: bool) {
        if self.cfg.preempt_delay.is_zero() {
            return;
        }
        if not_lower {
            self.preempt_at = None;
        } else if self.preempt_at.is_none() {
            self.preempt_at = now.checked_add(self.cfg.preempt_delay);
        }
    }

    fn in_fault(&self) -> bool {
        self.has_own_fault() || self.group_fault
    }

    /// Enter or leave Fault as the fault conditions say; true if the state changed.
    fn reevaluate_fault(&mut self, now: Instant, reason: Reason) -> bool {
        match (self.state, self.in_fault()) {
            (State::Initialize, _) => false,
            (State::Fault, false) => {
                self.enter_running(now, Reason::FaultCleared);
                true
            }
            (State::Backup | State::Master, true) => {
                let reason = if !self.link_up {
                    Reason::LinkDown
                } else if !self.has_addr {
                    Reason::NoAddress
                } else {
                    reason
                };
                if self.state == State::Master {
                    if self.link_up {
                        self.send_advert(Priority::STOP);
                    }
                    self.actions.push_back(Action::RemoveVips);
                }
                self.timers.clear();
                self.transition(State::Fault, reason);
                true
            }
            _ => false,
        }
    }

    fn enter_running(&mut self, now: Instant, reason: Reason) {
        // A resumed Master's predecessor left its VIPs on the interface: one that cannot be
        // Master now removes them instead of holding them silently.
        let resumed = reason == Reason::Startup && self.cfg.resume_master;
        // Only at start-up does the owner become Master at once (RFC 5798 §6.4.1), and in
        // a sync group only beside other owners (keepalived's `vrrp_complete_init`). One
        // whose fault clears goes Backup like any other (keepalived's `try_up_instance`
        // sets its `wantstate` to BACKUP) and takes over when its Master_Down_Timer runs
        // out, in a sync group once the others' have too.
        let owner_starts =
            self.effective_priority().is_owner() && reason == Reason::Startup && !self.owner_waits;
        if self.in_fault() {
            if resumed {
                self.actions.push_back(Action::RemoveVips);
            }
            let r = if !self.link_up {
                Reason::LinkDown
            } else if !self.has_addr {
                Reason::NoAddress
            } else if self.has_own_fault() {
                Reason::TrackFault
            } else {
                // Held by another member's fault.
                Reason::SyncGroup
            };
            self.transition(
                State::Fault,
                if reason == Reason::Startup { r } else { reason },
            );
        } else if owner_starts && self.delayed_start.is_some_and(|end| now < end) {
            // keepalived: an owner within the startup delay waits as Backup for its end.
            self.timers.clear();
            self.timers
                .set(Timer::MasterDown, self.master_down_at(now, Duration::ZERO));
            self.transition(State::Backup, reason);
        } else if owner_starts {
            self.become_master(now, reason);
        } else if reason == Reason::Startup && self.cfg.resume_master {
            self.become_master(now, Reason::Reload);
        } else {
            // keepalived's `state MASTER` changes nothing here: as in keepalived 2.x, only
            // the address owner becomes Master at once; any other instance first waits a
            // Master_Down_Interval as Backup (RFC 5798 §6.4.1), so a restarted node does not
            // take the VIPs from a higher-priority master for a moment.
            self.master_adver_interval = self.cfg.advert_interval;
            self.become_backup(now, reason);
        }
    }

    fn priority_changed(&mut self, now: Instant, before: Priority) {
        let after = self.effective_priority();
        if after == before {
            return;
        }
        match self.state {
            // The next scheduled advert carries it, as keepalived's (its
            // `vrrp_set_effective_priority` moves only a backup's timers): no advert out of
            // turn, which would shift the advert phase and start a backup's preempt_delay
            // early at every flap of a track.
            State::Master => {}
            // Within a startup delay an owner takes over at its end.
            State::Backup if after.is_owner() && self.delayed_start.is_some_and(|e| now < e) => {
                self.timers
                    .set(Timer::MasterDown, self.master_down_at(now, Duration::ZERO));
            }
            State::Backup if after.is_owner() => self.become_master(now, Reason::Preempted),
            // An owner no longer: a whole Master_Down_Interval, from the delay's end.
            State::Backup if before.is_owner() && self.delayed_start.is_some_and(|e| now < e) => {
                self.timers.set(
                    Timer::MasterDown,
                    self.master_down_at(now, self.master_down_interval()),
                );
            }
            State::Backup => {
                // The running Master_Down_Timer moves by the change in Skew_Time, as in
                // keepalived when the timer was set by a Master's advert: a backup whose
                // priority rose times out as if it had had that priority since the last
                // advert (sooner than a lower backup), and one whose priority fell later.
                // Never into the past. (When a priority-0 or an ignored lower advert set
                // it, keepalived restarts it at a whole Master_Down_Interval instead; here
                // it moves by the same change in Skew_Time.)
                if let Some(at) = self.timers.get(Timer::MasterDown) {
                    let old = skew_time(self.cfg.version, before, self.master_adver_interval);
                    let new = self.skew_time();
                    let moved = if new < old {
                        at.checked_sub(old - new).map_or(now, |t| t.max(now))
                    } else {
                        at.checked_add(new - old).unwrap_or(at)
                    };
                    self.timers.set(Timer::MasterDown, moved);
                }
            }
            _ => {}
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.send_advert(self.effective_priority());
        self.actions.push_back(Action::AddVips);
        self.announce(self.cfg.garp_master_repeat);
        self.timers.clear();
        self.timers
            .set(Timer::Advert, now + self.cfg.advert_interval.as_duration());
        if let Some(d) = self.cfg.garp_master_delay.filter(|d| !d.is_zero()) {
            self.timers.set(Timer::Garp, now + d);
        }
        if let Some(r) = self.cfg.garp_master_refresh.filter(|d| !d.is_zero()) {
            self.timers.set(Timer::GarpRefresh, now + r);
        }
        self.master_addr = Some(self.cfg.primary_addr);
        self.stop_heard = false;
        self.counters.became_master += 1;
        self.transition(State::Master, reason);
    }

    fn become_backup(&mut self, now: Instant, reason: Reason) {
        if self.state == State::Master {
            self.actions.push_back(Action::RemoveVips);
        }
        self.timers.clear();
        self.timers.set(
            Timer::MasterDown,
            self.master_down_at(now, self.master_down_interval()),
        );
        self.stop_heard = false;
        self.transition(State::Backup, reason);
    }

    fn announce(&mut self, repeat: u32) {
        if repeat > 0 {
            self.actions.push_back(Action::AnnounceVips { repeat });
        }
    }

    fn send_advert(&mut self, priority: Priority) {
        self.counters.adverts_tx += 1;
        if priority == Priority::STOP {
            self.counters.priority_zero_tx += 1;
        }
        self.actions.push_back(Action::SendAdvert(AdvertRepr {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval: self.cfg.advert_interval,
            auth: if self.cfg.version == Version::V2 {
                self.cfg.auth
            } else {
                Auth::None
            },
            addresses: self.cfg.vips.clone(),
        }));
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        if matches!(to, State::Fault | State::Initialize) {
            // Nothing heard from a master counts any more; a Backup learns it again.
            self.master_addr = None;
        }
        if from == to {
            return;
        }
        self.wants_master = None;
        if matches!(from, State::Master | State::Fault) {
            // keepalived clears preempt_time when leaving Master or Fault: the next
            // lower-priority master is waited for a whole preempt_delay again.
            self.preempt_at = None;
        }
        self.actions
            .push_back(Action::Transition { from, to, reason });
    }
}

/// Orders addresses for the equal-priority tie break: numerically, IPv4 as u32, IPv6 as u128.
fn addr_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Runs `f` on member `i` (if any); when it made that member answer a lower-priority
/// advert, the group's other Masters re-announce their addresses too (keepalived).
fn lower_priority_heard_by_all(
    ms: &mut [VirtualRouter],
    i: usize,
    now: Instant,
    f: impl FnOnce(&mut VirtualRouter),
) {
    let Some(m) = ms.get_mut(i) else { return };
    let before = m.counters().lower_priority_rx;
    f(m);
    if m.counters().lower_priority_rx != before {
        for (j, other) in ms.iter_mut().enumerate() {
            if j != i {
                other.reannounce_after_lower_priority(now);
            }
        }
    }
}

/// A keepalived `vrrp_sync_group`: member routers change state together, as keepalived
/// 2.2.7's `vrrp_sync.c` moves them.
///
/// * A member whose Master_Down_Timer runs out becomes Master only once every other member
///   wants to as well (its own timer ran out, or it is Master); until then it waits as
///   Backup, its timer started again (`vrrp_sync_can_goto_master`: "prefer backup state
///   to avoid thrashing"). An advert it accepts makes it stop wanting to.
/// * One member becomes Master → every Backup member becomes Master.
/// * One member falls from Master to Backup → every Master member becomes Backup.
/// * One member has a fault → every member is held in Fault (a Master sends priority 0)
///   until no member has one; then all go to Backup, address owners too, and take over
///   together as above.
/// * At start, a group whose members are all address owners becomes Master at once (as
///   keepalived's does when they also say `state MASTER`; without it keepalived waits one
///   Advertisement_Interval first). In a group with a member that is no owner, an owner
///   starts as Backup like the others (keepalived's `vrrp_complete_init`), so that it
///   does not take the whole group over at once from a peer that is Master for the other
///   members.
/// * A Master member that hears a lower priority re-announces its addresses, and so do the
///   group's other Masters (`garp_lower_prio_repeat`).
///
/// The weights of the members' tracked checks count as they do outside a group, as
/// keepalived's do with `sync_group_tracking_weight`.
///
/// Sans-IO like [`VirtualRouter`]; handlers take the member index.
///
/// # Examples
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use std::time::Instant;
/// use lb_vrrp::machine::{Config, State, SyncGroup, VirtualRouter};
/// use lb_vrrp::wire::Vrid;
///
/// let ip = |d| IpAddr::V4(Ipv4Addr::new(198, 18, 0, d));
/// let vr = |id| VirtualRouter::new(Config::new(Vrid::new(id).unwrap(), ip(1), vec![ip(id)]));
/// let mut group = SyncGroup::new(vec![vr(51), vr(52)]);
/// let now = Instant::now();
/// group.start(now);
/// group.handle_link(now, 0, false);
/// assert!(group.members().iter().all(|m| m.state() == State::Fault));
/// ```
#[derive(Debug, Clone)]
pub struct SyncGroup {
    members: Vec<VirtualRouter>,
}

impl SyncGroup {
    /// A group of routers (all in Initialize).
    pub fn new(mut members: Vec<VirtualRouter>) -> Self {
        let several = members.len() > 1;
        for m in &mut members {
            m.sync_hold = several;
        }
        Self { members }
    }
    /// The members, in the order given.
    pub fn members(&self) -> &[VirtualRouter] {
        &self.members
    }
    /// Member `i`. # Panics if out of range.
    pub fn member(&self, i: usize) -> &VirtualRouter {
        &self.members[i]
    }

    /// Next action of any member, with its index.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<(usize, Action)> {
        self.members
            .iter_mut()
            .enumerate()
            .find_map(|(i, m)| m.poll_action().map(|a| (i, a)))
    }
    /// Earliest timer of any member.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.members
            .iter()
            .filter_map(VirtualRouter::poll_timeout)
            .min()
    }

    /// Starts every member. A member whose link is down or whose weight-0 check fails (as
    /// known before the start) holds the others in Fault from the first instant: a healthy
    /// owner does not become Master, add its VIPs and announce them, only to be pulled to
    /// Fault at once. An owner beside a member that is no owner starts as Backup (see the
    /// type's docs).
    pub fn start(&mut self, now: Instant) {
        let own: Vec<bool> = self
            .members
            .iter()
            .map(VirtualRouter::has_own_fault)
            .collect();
        let owners_only = self
            .members
            .iter()
            .all(|m| m.effective_priority().is_owner());
        let several = self.members.len() > 1;
        for (i, m) in self.members.iter_mut().enumerate() {
            m.group_fault = own.iter().enumerate().any(|(j, f)| j != i && *f);
            m.owner_waits = several && !owners_only;
        }
        self.with(now, |ms| ms.iter_mut().for_each(|m| m.start(now)));
    }
    /// Shuts every member down.
    pub fn shutdown(&mut self, now: Instant) {
        self.members.iter_mut().for_each(|m| m.shutdown(now));
    }
    /// [`VirtualRouter::delay_start_until`] for every member.
    pub fn delay_start_until(&mut self, until: Instant) {
        self.members
            .iter_mut()
            .for_each(|m| m.delay_start_until(until));
    }
    /// Timer expiry for every member.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.with(now, |ms| ms.iter_mut().for_each(|m| m.handle_timeout(now)));
    }
    /// A packet for member `i` (ignored if out of range).
    pub fn handle_packet(&mut self, now: Instant, i: usize, meta: RxMeta, bytes: &[u8]) {
        self.with(now, |ms| {
            lower_priority_heard_by_all(ms, i, now, |m| m.handle_packet(now, meta, bytes));
        });
    }
    /// An advert for member `i` (ignored if out of range). A member that is Master and
    /// hears a lower-priority one re-announces its addresses, and so do the group's other
    /// Masters (keepalived: the other node took them all over).
    pub fn handle_advert(&mut self, now: Instant, i: usize, meta: RxMeta, adv: &AdvertRepr) {
        self.with(now, |ms| {
            lower_priority_heard_by_all(ms, i, now, |m| m.handle_advert(now, meta, adv));
        });
    }
    /// Member `i`'s interface lost its last usable address, or has one again: see
    /// [`VirtualRouter::handle_address`].
    pub fn handle_address(&mut self, now: Instant, i: usize, present: bool) {
        self.with(now, |ms| {
            if let Some(m) = ms.get_mut(i) {
                m.handle_address(now, present);
            }
        });
    }
    /// Link state of member `i`'s interface.
    pub fn handle_link(&mut self, now: Instant, i: usize, up: bool) {
        self.with(now, |ms| {
            if let Some(m) = ms.get_mut(i) {
                m.handle_link(now, up);
            }
        });
    }
    /// A tracked check of member `i`.
    pub fn handle_track(&mut self, now: Instant, i: usize, id: TrackId, healthy: bool) {
        self.with(now, |ms| {
            if let Some(m) = ms.get_mut(i) {
                m.handle_track(now, id, healthy);
            }
        });
    }
    /// A valued track of member `i`: see [`VirtualRouter::handle_track_value`].
    pub fn handle_track_value(&mut self, now: Instant, i: usize, id: TrackId, value: i32) {
        self.with(now, |ms| {
            if let Some(m) = ms.get_mut(i) {
                m.handle_track_value(now, id, value);
            }
        });
    }
    /// The advert source of member `i` changed: see [`VirtualRouter::set_primary_addr`].
    pub fn set_primary_addr(&mut self, i: usize, addr: IpAddr) {
        if let Some(m) = self.members.get_mut(i) {
            m.set_primary_addr(addr);
        }
    }
    /// Base priority of member `i`.
    pub fn set_priority(&mut self, now: Instant, i: usize, p: Priority) {
        self.with(now, |ms| {
            if let Some(m) = ms.get_mut(i) {
                m.set_priority(now, p);
            }
        });
    }

    fn with(&mut self, now: Instant, f: impl FnOnce(&mut [VirtualRouter])) {
        let before: Vec<State> = self.members.iter().map(VirtualRouter::state).collect();
        f(&mut self.members);
        // Faults first: hold everyone in Fault while any member has its own fault. A member
        // is held by the *others'* faults, so one whose own fault clears while another
        // member's remains stays in Fault (it does not pass through Backup or Master).
        let own: Vec<bool> = self
            .members
            .iter()
            .map(VirtualRouter::has_own_fault)
            .collect();
        let running = self.members.iter().any(|m| m.state() != State::Initialize);
        if running {
            for (i, m) in self.members.iter_mut().enumerate() {
                let others = own.iter().enumerate().any(|(j, f)| j != i && *f);
                m.set_group_fault(now, others);
            }
        }
        let fell = self
            .members
            .iter()
            .zip(&before)
            .any(|(m, b)| *b == State::Master && m.state() == State::Backup);
        let rose = self
            .members
            .iter()
            .zip(&before)
            .any(|(m, b)| *b != State::Master && m.state() == State::Master);
        // keepalived 2.x (vrrp_sync_can_goto_master): the group goes Master only once every
        // member wants it (its Master_Down_Timer ran out) or is Master: one member that
        // stops hearing its master while another still hears one stays Backup ("prefer
        // backup state to avoid thrashing").
        let all_want = self.members.iter().any(|m| m.wants_master.is_some())
            && self.members.iter().all(VirtualRouter::wants_or_is_master);
        if fell {
            self.members.iter_mut().for_each(|m| m.force_backup(now));
        } else if rose || all_want {
            self.members.iter_mut().for_each(|m| m.force_master(now));
        }
    }
}

#[cfg(test)]
mod model_clock;

#[cfg(test)]
mod rfc_model;

#[cfg(test)]
mod sync_model;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[allow(clippy::disallowed_methods)] // tests need some Instant; the machine never reads the clock
    fn t0() -> Instant {
        Instant::now()
    }
    fn ip(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, d))
    }
    fn cfg(prio: u8, me: u8) -> Config {
        let mut c = Config::new(Vrid::new(51).unwrap(), ip(me), vec![ip(100)]);
        c.priority = Priority(prio);
        c.auth = Auth::password("7road123");
        c
    }
    fn meta(src: u8) -> RxMeta {
        RxMeta {
            src: ip(src),
            dst: IpAddr::V4(crate::wire::VRRP_MCAST_V4),
            ttl: 255,
        }
    }
    /// A unicast advert from `src` to us (ip(1)).
    fn umeta(src: u8) -> RxMeta {
        RxMeta {
            src: ip(src),
            dst: ip(1),
            ttl: 255,
        }
    }
    fn advert(c: &Config, prio: u8) -> AdvertRepr {
        AdvertRepr {
            version: c.version,
            vrid: c.vrid,
            priority: Priority(prio),
            interval: c.advert_interval,
            auth: c.auth,
            addresses: c.vips.clone(),
        }
    }
    fn drain(vr: &mut VirtualRouter) -> Vec<Action> {
        std::iter::from_fn(|| vr.poll_action()).collect()
    }

    /// keepalived's `init_fail`: a script that starts failed needs `rise` successes,
    /// where an unknown one is decided by its first result.
    #[test]
    fn hysteresis_started_failed_needs_rise_successes() {
        let mut h = TrackHysteresis::starting(2, 3, Some(false));
        assert_eq!(h.is_healthy(), Some(false));
        assert_eq!(h.handle_result(true), None);
        assert_eq!(h.handle_result(true), Some(true));
        let mut h = TrackHysteresis::new(2, 3);
        assert_eq!(h.handle_result(true), Some(true));
    }

    #[test]
    fn formulas() {
        let one = AdvertInterval::ONE_SECOND;
        assert_eq!(
            skew_time(Version::V2, Priority(100), one),
            Duration::from_micros(609_375)
        );
        assert_eq!(
            master_down_interval(Version::V2, Priority(100), one),
            Duration::from_micros(3_609_375)
        );
        let cs = AdvertInterval::from_centis(1).unwrap();
        assert_eq!(
            skew_time(Version::V3, Priority(255), cs),
            Duration::from_micros(39)
        );
        assert_eq!(
            master_down_interval(Version::V3, Priority(128), cs),
            Duration::from_micros(35_000)
        );
        // Skew decreases as priority grows, for all priorities.
        for p in 1..=255u8 {
            assert!(
                skew_time(Version::V3, Priority(p), one)
                    < skew_time(Version::V3, Priority(p - 1), one)
            );
        }
    }

    /// keepalived's `down_timer_adverts`: the Backup waits N Master_Adver_Intervals plus
    /// Skew_Time after the last advert, then becomes Master.
    #[test]
    fn down_timer_adverts_sets_the_master_down_interval() {
        for n in [1_u8, 3, 5] {
            let t0 = t0();
            let mut c = cfg(100, 1);
            c.down_timer_adverts = n;
            let mut vr = VirtualRouter::new(c.clone());
            vr.start(t0);
            drain(&mut vr);
            let t1 = t0 + Duration::from_secs(1);
            vr.handle_advert(t1, meta(2), &advert(&c, 150));
            let wait = u32::from(n) * Duration::from_secs(1) + Duration::from_micros(609_375);
            assert_eq!(vr.master_down_interval(), wait);
            assert_eq!(vr.poll_timeout(), Some(t1 + wait));
            vr.handle_timeout(t1 + wait - Duration::from_millis(1));
            assert_eq!(vr.state(), State::Backup);
            vr.handle_timeout(t1 + wait);
            assert_eq!(vr.state(), State::Master, "n = {n}");
        }
    }

    /// keepalived's `vrrp_startup_delay`: the instance starts as Backup at once; its
    /// Master_Down timer runs from the delay's end, also when re-armed by an advert within
    /// it; an owner becomes Master at the end.
    #[test]
    fn delayed_start_holds_only_the_takeover() {
        let t0 = t0();
        let delay = Duration::from_secs(5);
        let c = cfg(100, 1);
        let mut vr = VirtualRouter::new(c.clone());
        vr.delay_start_until(t0 + delay);
        vr.start(t0);
        assert_eq!(vr.state(), State::Backup);
        let mdi = vr.master_down_interval();
        assert_eq!(vr.poll_timeout(), Some(t0 + delay + mdi));
        let t1 = t0 + Duration::from_secs(1);
        vr.handle_advert(t1, meta(2), &advert(&c, 150));
        assert_eq!(vr.poll_timeout(), Some(t0 + delay + mdi));
        // Past the delay, an advert re-arms it from now.
        let t2 = t0 + delay + Duration::from_secs(1);
        vr.handle_advert(t2, meta(2), &advert(&c, 150));
        assert_eq!(vr.poll_timeout(), Some(t2 + mdi));

        let mut owner = VirtualRouter::new(cfg(255, 1));
        owner.delay_start_until(t0 + delay);
        owner.start(t0);
        assert_eq!(owner.state(), State::Backup);
        owner.handle_timeout(t0 + delay - Duration::from_millis(1));
        assert_eq!(owner.state(), State::Backup);
        owner.handle_timeout(t0 + delay);
        assert_eq!(owner.state(), State::Master);

        // An owner with nopreempt hearing a lower-priority Master within the delay still
        // takes over at its end (keepalived clears nopreempt for priority 255).
        let mut c = cfg(255, 1);
        c.preempt = false;
        let mut owner = VirtualRouter::new(c.clone());
        owner.delay_start_until(t0 + delay);
        owner.start(t0);
        owner.handle_advert(t1, meta(2), &advert(&c, 100));
        assert_eq!(owner.poll_timeout(), Some(t0 + delay));
        owner.handle_timeout(t0 + delay);
        assert_eq!(owner.state(), State::Master);
    }

    #[test]
    fn owner_starts_master() {
        let t0 = t0();
        let mut vr = VirtualRouter::new(cfg(255, 1));
        vr.start(t0);
        assert_eq!(vr.state(), State::Master);
        let a = drain(&mut vr);
        assert!(matches!(&a[0], Action::SendAdvert(r) if r.priority == Priority::OWNER));
        assert!(a.contains(&Action::AddVips));
    }

    #[test]
    fn backup_follows_master_and_takes_over_after_priority_zero() {
        let t0 = t0();
        let c = cfg(100, 1);
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        drain(&mut vr);
        let t1 = t0 + Duration::from_secs(1);
        vr.handle_advert(t1, meta(2), &advert(&c, 150));
        assert_eq!(vr.poll_timeout(), Some(t1 + vr.master_down_interval()));
        // Spurious wake-up: nothing happens.
        vr.handle_timeout(t1 + Duration::from_secs(1));
        assert_eq!(vr.state(), State::Backup);
        vr.handle_advert(t1, meta(2), &advert(&c, 0));
        assert_eq!(vr.poll_timeout(), Some(t1 + vr.skew_time()));
        vr.handle_timeout(t1 + vr.skew_time());
        assert_eq!(vr.state(), State::Master);
        assert_eq!(vr.counters().priority_zero_rx, 1);
        assert!(drain(&mut vr).contains(&Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterStopped
        }));
        // Preempted by a higher router that then dies silently: that takeover is
        // MasterDown, not the earlier stop heard again.
        let t2 = t1 + Duration::from_secs(5);
        vr.handle_advert(t2, meta(3), &advert(&c, 200));
        assert_eq!(vr.state(), State::Backup);
        drain(&mut vr);
        vr.handle_timeout(t2 + vr.master_down_interval());
        assert_eq!(vr.state(), State::Master);
        assert!(drain(&mut vr).contains(&Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown
        }));
    }

    #[test]
    fn preempt_and_nopreempt() {
        let t0 = t0();
        for preempt in [true, false] {
            let mut c = cfg(200, 1);
            c.preempt = preempt;
            let mut vr = VirtualRouter::new(c.clone());
            vr.start(t0);
            let mut t = t0;
            for _ in 0..10 {
                t += Duration::from_secs(1);
                vr.handle_advert(t, meta(2), &advert(&c, 100));
                vr.handle_timeout(t);
            }
            assert_eq!(vr.state() == State::Master, preempt, "preempt={preempt}");
        }
    }

    #[test]
    fn preempt_delay_holds_off() {
        let t0 = t0();
        let mut c = cfg(200, 1);
        c.preempt_delay = Duration::from_secs(8);
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let mut t = t0;
        let mut became = None;
        for i in 0..20 {
            t = t0 + Duration::from_secs(i);
            vr.handle_advert(t, meta(2), &advert(&c, 100));
            vr.handle_timeout(t);
            if vr.state() == State::Master && became.is_none() {
                became = Some(i);
            }
            // Fire the exact timer too.
            if let Some(d) = vr
                .poll_timeout()
                .filter(|d| *d < t + Duration::from_secs(1))
            {
                vr.handle_timeout(d);
            }
        }
        let _ = t;
        let became = became.expect("preempted eventually");
        assert!(became >= 8, "preempted at {became}s, before preempt_delay");
    }

    /// A sync group's forced Backup waits with its own Advertisement_Interval, not one
    /// learned (v3) from a master it heard before it became Master.
    #[test]
    fn forced_backup_forgets_the_learned_interval() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.version = Version::V3;
        c.auth = Auth::None;
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let mut other = c.clone();
        other.advert_interval = AdvertInterval::from_centis(50).unwrap();
        vr.handle_advert(t0, meta(2), &advert(&other, 150));
        let down = vr.poll_timeout().expect("master down timer");
        vr.handle_timeout(down);
        assert_eq!(vr.state(), State::Master);
        let t1 = down + Duration::from_secs(1);
        vr.force_backup(t1);
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(
            vr.poll_timeout(),
            Some(t1 + master_down_interval(Version::V3, Priority(100), c.advert_interval))
        );
    }

    /// The master's address is forgotten in Fault and by a sync group's forced Backup:
    /// status does not name this router as master while it is not.
    #[test]
    fn master_address_is_forgotten_when_no_longer_known() {
        let t0 = t0();
        let mut vr = VirtualRouter::new(cfg(255, 1));
        vr.start(t0);
        assert_eq!(vr.master_addr(), Some(ip(1)));
        vr.handle_link(t0, false);
        assert_eq!(vr.master_addr(), None);
        vr.handle_link(t0, true);
        assert_eq!(vr.state(), State::Backup, "an owner leaves Fault as Backup");
        assert_eq!(vr.master_addr(), None);
        let down = vr.poll_timeout().unwrap();
        vr.handle_timeout(down);
        assert_eq!(vr.master_addr(), Some(ip(1)), "owner: Master again");
        vr.force_backup(down);
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(vr.master_addr(), None);
    }

    /// A Backup's priority change moves its running Master_Down_Timer by the change in
    /// Skew_Time (keepalived), never before `now`.
    #[test]
    fn backup_priority_change_moves_the_master_down_timer() {
        let t0 = t0();
        let c = cfg(100, 1);
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        vr.handle_advert(t0, meta(2), &advert(&c, 150));
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(
            vr.poll_timeout(),
            Some(t0 + Duration::from_micros(3_609_375))
        );
        let t1 = t0 + Duration::from_secs(1);
        vr.set_priority(t1, Priority(200));
        assert_eq!(
            vr.poll_timeout(),
            Some(t0 + Duration::from_micros(3_218_750))
        );
        vr.set_priority(t1, Priority(100));
        assert_eq!(
            vr.poll_timeout(),
            Some(t0 + Duration::from_micros(3_609_375))
        );
        // Late in the wait, a large rise times out now rather than in the past.
        let t2 = t0 + Duration::from_micros(3_500_000);
        vr.set_priority(t2, Priority(254));
        assert_eq!(vr.poll_timeout(), Some(t2));
    }

    /// `resume_master` (a reload's successor of a Master): Master at start, without the
    /// Master_Down_Interval wait, with its advert, VIPs and announcement; a fault still
    /// wins, and then removes the VIPs; without it a non-owner starts as Backup.
    #[test]
    fn resumed_master_starts_as_master_unless_faulted() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.resume_master = true;
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        assert_eq!(vr.state(), State::Master);
        let acts = drain(&mut vr);
        assert!(
            matches!(
                &acts[..],
                [
                    Action::SendAdvert(_),
                    Action::AddVips,
                    Action::AnnounceVips { .. },
                    Action::Transition {
                        to: State::Master,
                        reason: Reason::Reload,
                        ..
                    }
                ]
            ),
            "{acts:?}"
        );
        let mut vr = VirtualRouter::new(c.clone());
        vr.handle_link(t0, false);
        vr.start(t0);
        assert_eq!(vr.state(), State::Fault);
        // The VIPs its predecessor handed over are not kept in Fault.
        let acts = drain(&mut vr);
        assert!(
            matches!(
                &acts[..],
                [
                    Action::RemoveVips,
                    Action::Transition {
                        to: State::Fault,
                        ..
                    }
                ]
            ),
            "{acts:?}"
        );
        c.resume_master = false;
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        assert_eq!(vr.state(), State::Backup);
    }

    /// A Master that loses its address with its link up sends a priority-0 advert before
    /// Fault; one whose link went down cannot. Either fault alone holds it in Fault.
    #[test]
    fn losing_the_address_is_a_fault_announced_by_priority_zero() {
        let t0 = t0();
        let mut vr = VirtualRouter::new(cfg(255, 1));
        vr.start(t0);
        drain(&mut vr);
        vr.handle_address(t0, false);
        assert_eq!(vr.state(), State::Fault);
        let acts = drain(&mut vr);
        assert!(
            matches!(&acts[..], [Action::SendAdvert(a), Action::RemoveVips, Action::Transition { to: State::Fault, reason: Reason::NoAddress, .. }] if a.priority == Priority::STOP),
            "{acts:?}"
        );
        vr.handle_link(t0, false);
        vr.handle_address(t0, true);
        assert_eq!(vr.state(), State::Fault, "the link is still down");
        vr.handle_link(t0, true);
        assert_eq!(vr.state(), State::Backup);
        let t1 = vr.poll_timeout().unwrap();
        vr.handle_timeout(t1);
        assert_eq!(vr.state(), State::Master);
        drain(&mut vr);
        vr.handle_link(t1, false);
        vr.handle_address(t1, false);
        let acts = drain(&mut vr);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::SendAdvert(_))),
            "{acts:?}"
        );
    }

    /// keepalived's INIT state of a script: an unknown track adds no weight and faults
    /// nothing until its first result; a weight-0 track known to fail before the start
    /// faults the instance from the first instant (an owner never becomes Master).
    #[test]
    fn unknown_tracks_count_nothing_and_known_failures_fault_at_start() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.tracks = vec![TrackWeight(50), TrackWeight(-30)];
        c.track_start = vec![None, None];
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        assert_eq!(vr.effective_priority(), Priority(100));
        vr.handle_track(t0, TrackId(0), true);
        assert_eq!(vr.effective_priority(), Priority(150));
        vr.handle_track(t0, TrackId(1), false);
        assert_eq!(vr.effective_priority(), Priority(120));

        let mut c = cfg(255, 1);
        c.tracks = vec![TrackWeight(0)];
        c.track_start = vec![Some(false)];
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        assert_eq!(vr.state(), State::Fault);
        let actions = drain(&mut vr);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::AddVips | Action::SendAdvert(_))),
            "{actions:?}"
        );
        vr.handle_track(t0, TrackId(0), true);
        assert_eq!(vr.state(), State::Backup);
    }

    /// keepalived's preempt_delay counts again after Fault, and after an advert of priority
    /// at least ours: from the first lower-priority advert that follows.
    #[test]
    fn preempt_delay_restarts_after_fault_and_after_a_higher_master() {
        let t0 = t0();
        let mut c = cfg(200, 1);
        c.preempt_delay = Duration::from_secs(8);
        let delay = c.preempt_delay;
        let mut forever = c.clone();
        forever.preempt_delay = Duration::MAX;
        let mut vr = VirtualRouter::new(forever);
        vr.start(t0); // no overflow panic: a delay past the clock's range is never over
        vr.handle_advert(t0, meta(2), &advert(&c, 100));
        assert_eq!(vr.state(), State::Backup);
        // Adverts of `prio(i)` at `from + i` s, timers fired as they fall due; the second
        // at which the router is Master, if it becomes one within `secs`.
        let run = |vr: &mut VirtualRouter, from: Instant, secs: u64, prio: &dyn Fn(u64) -> u8| {
            for i in 0..secs {
                let t = from + Duration::from_secs(i);
                for _ in 0..100 {
                    match vr.poll_timeout().filter(|d| *d <= t) {
                        Some(d) => vr.handle_timeout(d),
                        None => break,
                    }
                }
                drain(vr);
                if vr.state() == State::Master {
                    return Some(i);
                }
                vr.handle_advert(t, meta(2), &advert(&c, prio(i)));
            }
            None
        };
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let became = run(&mut vr, t0, 30, &|_| 100).expect("preempts after start-up");
        assert!(became >= delay.as_secs(), "at {became} s");

        // A link flap: Fault, then Backup with the lower master still there.
        let t1 = t0 + Duration::from_secs(120);
        vr.handle_link(t1, false);
        assert_eq!(vr.state(), State::Fault);
        vr.handle_link(t1, true);
        assert_eq!(vr.state(), State::Backup);
        let became = run(&mut vr, t1, 30, &|_| 100).expect("preempts after the fault");
        assert!(
            became >= delay.as_secs(),
            "at {became} s after the fault ended"
        );

        // Backup again (link flap); a higher master for 2 s in the middle restarts the
        // delay at the next lower advert (second 6).
        let t2 = t1 + Duration::from_secs(120);
        vr.handle_link(t2, false);
        vr.handle_link(t2, true);
        let prio = |i: u64| if (4..6).contains(&i) { 250 } else { 100 };
        let became = run(&mut vr, t2, 40, &prio).expect("preempts in the end");
        assert!(became >= 6 + delay.as_secs(), "at {became} s");
    }

    #[test]
    fn master_yields_to_higher_and_tie_breaks_on_address() {
        let t0 = t0();
        let c = cfg(255, 5);
        // Owner never yields to equal priority from a lower address.
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        vr.handle_advert(t0, meta(4), &advert(&c, 255));
        assert_eq!(vr.state(), State::Master);
        vr.handle_advert(t0, meta(6), &advert(&c, 255));
        assert_eq!(vr.state(), State::Backup);
        let a = drain(&mut vr);
        assert!(a.contains(&Action::RemoveVips));
        assert!(a.contains(&Action::Transition {
            from: State::Master,
            to: State::Backup,
            reason: Reason::Preempted
        }));
    }

    /// keepalived `higher_prio_send_advert`: the Master answers the advert that makes it
    /// Backup with one of its own (its priority) first; without it (RFC 5798 §6.4.3) it
    /// sends nothing. A lower-priority advert is answered either way.
    #[test]
    fn higher_prio_send_advert_answers_before_yielding() {
        let t0 = t0();
        for send in [false, true] {
            let mut c = cfg(150, 5);
            c.higher_prio_send_advert = send;
            let mut vr = VirtualRouter::new(c.clone());
            vr.start(t0);
            vr.handle_timeout(t0 + Duration::from_secs(4));
            assert_eq!(vr.state(), State::Master);
            drain(&mut vr);
            let t1 = t0 + Duration::from_secs(10);
            // Equal priority from a higher address wins too.
            vr.handle_advert(t1, meta(6), &advert(&c, 150));
            assert_eq!(vr.state(), State::Backup);
            let a = drain(&mut vr);
            let sent: Vec<_> = a
                .iter()
                .filter_map(|x| match x {
                    Action::SendAdvert(r) => Some(r.priority),
                    _ => None,
                })
                .collect();
            if send {
                assert_eq!(sent, [Priority(150)], "{a:?}");
                // Sent while still Master: before the VIPs leave.
                let adv = a.iter().position(|x| matches!(x, Action::SendAdvert(_)));
                let rm = a.iter().position(|x| *x == Action::RemoveVips);
                assert!(adv < rm, "{a:?}");
            } else {
                assert!(sent.is_empty(), "{a:?}");
            }
        }
    }

    #[test]
    fn receive_validation_counts_drops() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.unicast_peers = vec![ip(2)];
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let deadline = vr.poll_timeout();
        // Multicast: the TTL must be 255 (unicast below: not checked, as keepalived).
        let mut mc = VirtualRouter::new(cfg(100, 1));
        mc.start(t0);
        let mut bad_ttl = meta(2);
        bad_ttl.ttl = 254;
        mc.handle_advert(t0, bad_ttl, &advert(&c, 200));
        assert_eq!(mc.counters().discards(Discard::Ttl), 1);
        vr.handle_advert(t0, umeta(3), &advert(&c, 200));
        let mut wrong_pass = advert(&c, 200);
        wrong_pass.auth = Auth::password("nope");
        vr.handle_advert(t0, umeta(2), &wrong_pass);
        let mut wrong_int = advert(&c, 200);
        wrong_int.interval = AdvertInterval::from_secs(2).unwrap();
        vr.handle_advert(t0, umeta(2), &wrong_int);
        let mut wrong_vrid = advert(&c, 200);
        wrong_vrid.vrid = Vrid::new(52).unwrap();
        vr.handle_advert(t0, umeta(2), &wrong_vrid);
        let mut v3 = advert(&c, 200);
        v3.version = Version::V3;
        vr.handle_advert(t0, umeta(2), &v3);
        vr.handle_packet(t0, umeta(2), &[0x21, 51, 1]);
        let mut bytes = advert(&c, 200).to_bytes(ip(2), umeta(2).dst).unwrap();
        bytes[7] ^= 1;
        vr.handle_packet(t0, umeta(2), &bytes);
        let mut other_vips = advert(&c, 200);
        other_vips.addresses = vec![ip(101)];
        vr.handle_advert(t0, umeta(2), &other_vips);
        let k = vr.counters();
        for d in [
            Discard::AddressList,
            Discard::NotPeer,
            Discard::Auth,
            Discard::Interval,
            Discard::Vrid,
            Discard::Version,
            Discard::Malformed,
            Discard::Checksum,
        ] {
            assert_eq!(k.discards(d), 1, "{d:?}");
        }
        assert_eq!(k.adverts_rx, 0);
        // Nothing changed: the Master_Down_Timer was not reset.
        assert_eq!(vr.poll_timeout(), deadline);
    }

    /// What an operator reads: a packet that fails to parse (checksum) is logged at INFO
    /// as a misconfigured advert is, once a minute per reason, with what differs; another
    /// VRID's advert only at DEBUG.
    #[test]
    fn discards_are_logged_at_info_once_a_minute_per_reason() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let t0 = t0();
        let c = cfg(100, 1);
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        tracing::subscriber::with_default(subscriber, || {
            let mut bytes = advert(&c, 200).to_bytes(ip(2), meta(2).dst).unwrap();
            bytes[7] ^= 1;
            vr.handle_packet(t0, meta(2), &bytes);
            vr.handle_packet(t0 + Duration::from_secs(1), meta(2), &bytes);
            let mut wrong_int = advert(&c, 200);
            wrong_int.interval = AdvertInterval::from_secs(2).unwrap();
            vr.handle_advert(t0, meta(2), &wrong_int);
            let mut wrong_vrid = advert(&c, 200);
            wrong_vrid.vrid = Vrid::new(52).unwrap();
            vr.handle_advert(t0, meta(2), &wrong_vrid);
            vr.handle_packet(t0 + DISCARD_LOG_EVERY, meta(2), &bytes);
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("INFO") && lines[0].contains("reason=\"checksum\""));
        assert!(lines[0].contains("total=1"), "{out}");
        assert!(
            lines[1].contains("reason=\"interval\"")
                && lines[1].contains("advert_int 2000 ms, ours 1000 ms"),
            "{out}"
        );
        assert!(
            lines[2].contains("reason=\"checksum\"") && lines[2].contains("total=3"),
            "{out}"
        );
        assert_eq!(vr.counters().discards(Discard::Vrid), 1);
    }

    #[test]
    fn tracking_weights_and_fault() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.tracks = vec![TrackWeight(20), TrackWeight(-30), TrackWeight(0)];
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        assert_eq!(vr.effective_priority(), Priority(120));
        vr.handle_track(t0, TrackId(0), false);
        assert_eq!(vr.effective_priority(), Priority(100));
        vr.handle_track(t0, TrackId(1), false);
        assert_eq!(vr.effective_priority(), Priority(70));
        vr.handle_track(t0, TrackId(2), false);
        assert_eq!(vr.state(), State::Fault);
        vr.handle_track(t0, TrackId(2), true);
        assert_eq!(vr.state(), State::Backup);
        // Clamping.
        let mut c = cfg(250, 1);
        c.tracks = vec![TrackWeight(50)];
        assert_eq!(VirtualRouter::new(c).effective_priority(), Priority(254));
        let mut c = cfg(10, 1);
        c.tracks = vec![TrackWeight(-50)];
        let mut vr = VirtualRouter::new(c);
        vr.handle_track(t0, TrackId(0), false);
        assert_eq!(vr.effective_priority(), Priority(1));
    }

    /// keepalived `track_file`: the value is added to the priority, -254 means Fault, an
    /// owner keeps 255 but still faults; the start offset counts from the first instant.
    #[test]
    fn valued_tracks_add_their_value_and_fault_at_minus_254() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.tracks = vec![TrackWeight(0), TrackWeight(-10)];
        c.track_offset_start = vec![15];
        let mut vr = VirtualRouter::new(c);
        assert_eq!(vr.effective_priority(), Priority(115));
        vr.start(t0);
        vr.handle_track_value(t0, TrackId(0), -40);
        assert_eq!(vr.effective_priority(), Priority(60));
        vr.handle_track(t0, TrackId(1), false);
        assert_eq!(vr.effective_priority(), Priority(50));
        vr.handle_track_value(t0, TrackId(0), 253);
        assert_eq!(vr.effective_priority(), Priority(254));
        vr.handle_track_value(t0, TrackId(0), TRACK_VALUE_FAULT);
        assert_eq!(vr.state(), State::Fault);
        assert_eq!(
            vr.effective_priority(),
            Priority(90),
            "no offset while faulted"
        );
        vr.handle_track_value(t0, TrackId(0), 0);
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(vr.effective_priority(), Priority(90));
        // A Master whose value drops below a peer's priority keeps running as Master
        // (the peer preempts) and advertises the new priority with its next scheduled
        // advert, not out of turn (keepalived's `vrrp_set_effective_priority` moves only a
        // backup's timers; lb-node sent one at once, shifting the advert phase).
        let mut c = cfg(100, 1);
        c.tracks = vec![TrackWeight(0)];
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        vr.handle_timeout(vr.poll_timeout().unwrap());
        assert_eq!(vr.state(), State::Master);
        drain(&mut vr);
        let next = vr.timer(Timer::Advert).expect("advert timer");
        vr.handle_track_value(t0, TrackId(0), -60);
        let a = drain(&mut vr);
        assert!(
            !a.iter().any(|a| matches!(a, Action::SendAdvert(_))),
            "no advert out of turn: {a:?}"
        );
        assert_eq!(
            vr.timer(Timer::Advert),
            Some(next),
            "the advert phase stays"
        );
        vr.handle_timeout(next);
        let a = drain(&mut vr);
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::SendAdvert(r) if r.priority == Priority(40))),
            "{a:?}"
        );
        // The owner is not adjusted, but faults.
        let mut c = cfg(255, 1);
        c.tracks = vec![TrackWeight(0)];
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        vr.handle_track_value(t0, TrackId(0), -100);
        assert_eq!(vr.effective_priority(), Priority::OWNER);
        vr.handle_track_value(t0, TrackId(0), TRACK_VALUE_FAULT);
        assert_eq!(vr.state(), State::Fault);
    }

    #[test]
    fn master_fault_sends_priority_zero() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.tracks = vec![TrackWeight(0)];
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        vr.handle_timeout(vr.poll_timeout().unwrap());
        assert_eq!(vr.state(), State::Master);
        drain(&mut vr);
        vr.handle_track(t0, TrackId(0), false);
        let a = drain(&mut vr);
        assert!(matches!(&a[0], Action::SendAdvert(r) if r.priority == Priority::STOP));
        assert_eq!(a[1], Action::RemoveVips);
        assert_eq!(vr.poll_timeout(), None);
        // Link down: no advert (cannot send), VIPs removed.
        vr.handle_track(t0, TrackId(0), true);
        vr.handle_timeout(vr.poll_timeout().unwrap());
        drain(&mut vr);
        vr.handle_link(t0, false);
        let a = drain(&mut vr);
        assert_eq!(a[0], Action::RemoveVips);
        assert_eq!(vr.state(), State::Fault);
    }

    #[test]
    fn shutdown_from_master() {
        let t0 = t0();
        let mut vr = VirtualRouter::new(cfg(255, 1));
        vr.start(t0);
        drain(&mut vr);
        vr.shutdown(t0);
        let a = drain(&mut vr);
        assert!(matches!(&a[0], Action::SendAdvert(r) if r.priority == Priority::STOP));
        assert_eq!(a[1], Action::RemoveVips);
        assert_eq!(vr.state(), State::Initialize);
        assert_eq!(vr.poll_timeout(), None);
    }

    #[test]
    fn garp_timers() {
        let t0 = t0();
        let mut c = cfg(255, 1);
        c.garp_master_refresh = Some(Duration::from_secs(60));
        let mut vr = VirtualRouter::new(c);
        vr.start(t0);
        drain(&mut vr);
        assert_eq!(vr.timer(Timer::Garp), Some(t0 + Duration::from_secs(5)));
        vr.handle_timeout(t0 + Duration::from_secs(5));
        assert!(drain(&mut vr).contains(&Action::AnnounceVips { repeat: 5 }));
        assert_eq!(vr.timer(Timer::Garp), None);
        assert_eq!(
            vr.timer(Timer::GarpRefresh),
            Some(t0 + Duration::from_secs(60))
        );
        // The periodic burst has keepalived's garp_master_refresh_repeat packets (1).
        vr.handle_timeout(t0 + Duration::from_secs(60));
        let a = drain(&mut vr);
        assert!(a.contains(&Action::AnnounceVips { repeat: 1 }), "{a:?}");
        assert_eq!(
            vr.timer(Timer::GarpRefresh),
            Some(t0 + Duration::from_secs(120))
        );
    }

    /// keepalived: a Master hearing a lower-priority Master (after a partition healed, say)
    /// answers with an advert and re-announces its addresses: the other node's gratuitous
    /// ARPs pointed the neighbours at it. Both are configurable.
    #[test]
    fn lower_priority_master_gets_an_advert_and_gratuitous_arps() {
        let t0 = t0();
        let c = cfg(150, 5);
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        vr.handle_timeout(t0 + Duration::from_secs(4));
        assert_eq!(vr.state(), State::Master);
        drain(&mut vr);
        let t1 = t0 + Duration::from_secs(20);
        vr.handle_advert(t1, meta(6), &advert(&c, 100));
        assert_eq!(vr.state(), State::Master);
        let a = drain(&mut vr);
        assert!(
            matches!(a.first(), Some(Action::SendAdvert(r)) if r.priority == Priority(150)),
            "{a:?}"
        );
        assert!(a.contains(&Action::AnnounceVips { repeat: 5 }), "{a:?}");
        assert_eq!(vr.counters().lower_priority_rx, 1);
        assert_eq!(
            vr.timer(Timer::GarpLowerPrio),
            Some(t1 + Duration::from_secs(5))
        );
        vr.handle_timeout(t1 + Duration::from_secs(5));
        assert!(drain(&mut vr).contains(&Action::AnnounceVips { repeat: 5 }));
        assert_eq!(vr.timer(Timer::GarpLowerPrio), None);

        // lower_prio_no_advert, garp_lower_prio_repeat 2, no second burst.
        let mut c2 = c.clone();
        c2.lower_prio_no_advert = true;
        c2.garp_lower_prio_repeat = 2;
        c2.garp_lower_prio_delay = None;
        let mut vr = VirtualRouter::new(c2);
        vr.start(t0);
        vr.handle_timeout(t0 + Duration::from_secs(4));
        drain(&mut vr);
        vr.handle_advert(t1, meta(6), &advert(&c, 100));
        assert_eq!(drain(&mut vr), [Action::AnnounceVips { repeat: 2 }]);
        assert_eq!(vr.timer(Timer::GarpLowerPrio), None);

        // garp_lower_prio_repeat 0: the advert only (RFC 5798 itself would discard it).
        let mut c3 = c;
        c3.garp_lower_prio_repeat = 0;
        let mut vr = VirtualRouter::new(c3.clone());
        vr.start(t0);
        vr.handle_timeout(t0 + Duration::from_secs(4));
        drain(&mut vr);
        vr.handle_advert(t1, meta(6), &advert(&c3, 100));
        let a = drain(&mut vr);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(matches!(a[0], Action::SendAdvert(_)));
    }

    #[test]
    fn v3_learns_master_interval() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.version = Version::V3;
        c.auth = Auth::None;
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let mut a = advert(&c, 200);
        a.interval = AdvertInterval::from_centis(10).unwrap();
        vr.handle_advert(t0, meta(2), &a);
        assert_eq!(vr.master_advert_interval().centis(), 10);
        assert_eq!(
            vr.poll_timeout(),
            Some(t0 + Duration::from_micros(300_000 + 60_937))
        );
    }

    /// keepalived's unicast mode: a peer's advert with a TTL below 255 (routers apart) is
    /// accepted.
    #[test]
    fn unicast_peers_may_be_routers_apart() {
        let t0 = t0();
        let mut c = cfg(100, 1);
        c.unicast_peers = vec![ip(2)];
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let mut routed = umeta(2);
        routed.ttl = 62;
        vr.handle_advert(t0, routed, &advert(&c, 200));
        assert_eq!(vr.counters().adverts_rx, 1);
        assert_eq!(vr.counters().total_discards(), 0);
    }

    /// An advert for other VIPs on our VRID (another cluster's, by mistake) is dropped: our
    /// master keeps its VIPs instead of yielding to it. With `skip_check_adv_addr`, or from
    /// the v2 address owner (RFC 3768 §7.1), it is accepted and counted. Order of the list
    /// does not matter.
    #[test]
    fn adverts_for_other_addresses_are_dropped() {
        let t0 = t0();
        let mut c = cfg(150, 1);
        c.vips = vec![ip(100), ip(101)];
        let mut other = advert(&c, 200);
        other.addresses = vec![ip(100), ip(102)];
        let mut shorter = advert(&c, 200);
        shorter.addresses = vec![ip(100)];
        let mut reordered = advert(&c, 100);
        reordered.addresses = vec![ip(101), ip(100)];

        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        vr.handle_timeout(vr.timer(Timer::MasterDown).unwrap());
        assert_eq!(vr.state(), State::Master);
        vr.handle_advert(t0, meta(2), &other);
        vr.handle_advert(t0, meta(2), &shorter);
        assert_eq!(
            vr.state(),
            State::Master,
            "yielded to another cluster's master"
        );
        assert_eq!(vr.counters().discards(Discard::AddressList), 2);
        vr.handle_advert(t0, meta(2), &reordered);
        assert_eq!(vr.counters().adverts_rx, 1);
        assert_eq!(vr.counters().address_list_mismatch, 0);

        let mut owner = advert(&c, 255);
        owner.addresses = vec![ip(100), ip(102)];
        vr.handle_advert(t0, meta(3), &owner);
        assert_eq!(vr.state(), State::Backup, "the v2 owner is obeyed");
        assert_eq!(vr.counters().address_list_mismatch, 1);

        // skip_check_adv_addr, as keepalived: a Backup skips the check only for the
        // master it last heard; a Master always checks.
        let mut skip = c.clone();
        skip.skip_check_adv_addr = true;
        let mut vr = VirtualRouter::new(skip.clone());
        vr.start(t0);
        vr.handle_advert(t0, meta(2), &other);
        assert_eq!(
            vr.counters().discards(Discard::AddressList),
            1,
            "a new sender"
        );
        vr.handle_advert(t0, meta(2), &advert(&c, 200));
        vr.handle_advert(t0, meta(2), &other);
        assert_eq!(vr.counters().adverts_rx, 2);
        assert_eq!(vr.counters().address_list_mismatch, 1);
        assert_eq!(vr.counters().total_discards(), 1);
        let mut vr = VirtualRouter::new(skip);
        vr.start(t0);
        vr.handle_timeout(vr.timer(Timer::MasterDown).unwrap());
        assert_eq!(vr.state(), State::Master);
        vr.handle_advert(t0, meta(9), &other);
        assert_eq!(
            vr.state(),
            State::Master,
            "another cluster's higher priority"
        );
        assert_eq!(vr.counters().discards(Discard::AddressList), 1);
    }

    /// A multicast instance drops unicast adverts and a unicast one multicast adverts, as
    /// keepalived; the wrong sender could otherwise speak for the group.
    #[test]
    fn adverts_to_the_wrong_kind_of_destination_are_dropped() {
        let t0 = t0();
        let c = cfg(100, 1);
        let mut vr = VirtualRouter::new(c.clone());
        vr.start(t0);
        let unicast = umeta(2);
        vr.handle_advert(t0, unicast, &advert(&c, 200));
        assert_eq!(vr.counters().discards(Discard::Destination), 1);
        assert_eq!(vr.counters().adverts_rx, 0);
        let mut u = c.clone();
        u.unicast_peers = vec![ip(2)];
        let mut vr = VirtualRouter::new(u.clone());
        vr.start(t0);
        vr.handle_advert(t0, meta(2), &advert(&u, 200));
        assert_eq!(vr.counters().discards(Discard::Destination), 1);
        vr.handle_advert(t0, unicast, &advert(&u, 200));
        assert_eq!(vr.counters().adverts_rx, 1);
    }

    /// A sync group member of priority `prio` and VRID `vrid`, advertising every second.
    fn member(prio: u8, vrid: u8) -> VirtualRouter {
        let mut c = cfg(prio, 1);
        c.vrid = Vrid::new(vrid).unwrap();
        VirtualRouter::new(c)
    }

    /// Two members with faults of their own: when one clears, that member stays in Fault
    /// (held by the other's), with no transition, no VIPs added and no advert sent. When
    /// the other's clears too, both go Backup (keepalived's `vrrp_sync_backup`, owners too).
    #[test]
    fn sync_group_member_stays_in_fault_while_another_is_faulted() {
        let t0 = t0();
        let mut g = SyncGroup::new(vec![member(255, 51), member(255, 52)]);
        g.start(t0);
        g.handle_link(t0, 0, false);
        g.handle_link(t0, 1, false);
        assert!(g.members().iter().all(|m| m.state() == State::Fault));
        while g.poll_action().is_some() {}
        g.handle_link(t0, 0, true);
        assert!(g.members().iter().all(|m| m.state() == State::Fault));
        let actions: Vec<_> = std::iter::from_fn(|| g.poll_action()).collect();
        assert!(actions.is_empty(), "{actions:?}");
        g.handle_link(t0, 1, true);
        assert!(g.members().iter().all(|m| m.state() == State::Backup));
    }

    /// A group whose member starts with its link down: the healthy owner beside it starts
    /// in Fault too, without becoming Master first (no VIPs added, no advert), and says
    /// that its group holds it there. When the link comes back both go Backup.
    #[test]
    fn sync_group_starts_in_fault_when_a_member_starts_faulted() {
        let t0 = t0();
        let mut down = member(255, 52);
        down.handle_link(t0, false);
        let mut g = SyncGroup::new(vec![member(255, 51), down]);
        g.start(t0);
        assert!(g.members().iter().all(|m| m.state() == State::Fault));
        let actions: Vec<_> = std::iter::from_fn(|| g.poll_action()).collect();
        let fault = |reason| Action::Transition {
            from: State::Initialize,
            to: State::Fault,
            reason,
        };
        assert_eq!(
            actions,
            vec![(0, fault(Reason::SyncGroup)), (1, fault(Reason::LinkDown))]
        );
        g.handle_link(t0, 1, true);
        assert!(g.members().iter().all(|m| m.state() == State::Backup));
    }

    #[test]
    fn sync_group_moves_together() {
        let t0 = t0();
        let mut g = SyncGroup::new(vec![member(100, 51), member(100, 52)]);
        g.start(t0);
        // Member 1 hears a master every second; member 0 hears none (keepalived 2.x: the
        // group prefers Backup, member 0 waits for the others): nobody becomes Master.
        let c1 = g.member(1).config().clone();
        let mut t = t0;
        for s in 0..20 {
            t = t0 + Duration::from_secs(s);
            for _ in 0..10 {
                match g.poll_timeout().filter(|d| *d <= t) {
                    Some(d) => g.handle_timeout(d),
                    None => break,
                }
            }
            g.handle_advert(t, 1, meta(2), &advert(&c1, 150));
            assert!(
                g.members().iter().all(|m| m.state() == State::Backup),
                "at {s} s: {:?}",
                g.members()
                    .iter()
                    .map(VirtualRouter::state)
                    .collect::<Vec<_>>()
            );
        }
        assert!(g.member(0).wants_master.is_some());
        // Member 1's master goes quiet: once member 1's timer runs out too, both go Master.
        let down = g.member(1).timer(Timer::MasterDown).unwrap();
        assert!(down > t);
        g.handle_timeout(down);
        assert!(g.members().iter().all(|m| m.state() == State::Master));
        let t1 = down;
        // Member 1 hears a higher priority: both go backup.
        g.handle_advert(t1, 1, meta(2), &advert(&c1, 150));
        assert!(g.members().iter().all(|m| m.state() == State::Backup));
        // Fault on one holds both in fault; recovery releases both.
        g.handle_link(t1, 0, false);
        assert!(g.members().iter().all(|m| m.state() == State::Fault));
        g.handle_link(t1, 0, true);
        assert!(g.members().iter().all(|m| m.state() == State::Backup));
        let n = std::iter::from_fn(|| g.poll_action()).count();
        assert!(n > 0);
    }

    /// keepalived: when a sync group member that is Master hears a lower-priority Master,
    /// the group's other members re-announce their addresses too (the other node took
    /// them all over), through the parsed-packet path the driver uses.
    #[test]
    fn sync_group_members_all_reannounce_after_a_lower_priority_advert() {
        let t0 = t0();
        let mk = |vrid: u8| {
            let mut c = cfg(150, 1);
            c.vrid = Vrid::new(vrid).unwrap();
            c.garp_lower_prio_repeat = 3;
            VirtualRouter::new(c)
        };
        let mut g = SyncGroup::new(vec![mk(51), mk(52)]);
        g.start(t0);
        g.handle_timeout(t0 + Duration::from_secs(4));
        assert!(g.members().iter().all(|m| m.state() == State::Master));
        while g.poll_action().is_some() {}
        let c0 = g.member(0).config().clone();
        let adv = advert(&c0, 100);
        let mut buf = vec![0u8; adv.buffer_len()];
        adv.emit(
            &mut Packet::new_unchecked(&mut buf[..]),
            ip(2),
            IpAddr::V4(crate::wire::VRRP_MCAST_V4),
        )
        .unwrap();
        let t1 = t0 + Duration::from_secs(10);
        g.handle_packet(t1, 0, meta(2), &buf);
        let actions: Vec<(usize, Action)> = std::iter::from_fn(|| g.poll_action()).collect();
        for i in 0..2 {
            assert!(
                actions.contains(&(i, Action::AnnounceVips { repeat: 3 })),
                "member {i}: {actions:?}"
            );
            assert_eq!(
                g.member(i).timer(Timer::GarpLowerPrio),
                Some(t1 + Duration::from_secs(5))
            );
        }
        // Only the member that heard it answers with an advert.
        assert!(actions
            .iter()
            .any(|(i, a)| *i == 0 && matches!(a, Action::SendAdvert(_))));
        assert!(!actions
            .iter()
            .any(|(i, a)| *i == 1 && matches!(a, Action::SendAdvert(_))));
    }

    /// keepalived 2.2.7 (`try_up_instance`): an address owner whose fault clears goes to
    /// Backup like any other instance and takes over when its Master_Down timer runs out,
    /// not at once.
    #[test]
    fn owner_leaves_fault_as_backup() {
        let t0 = t0();
        let mut vr = VirtualRouter::new(cfg(255, 1));
        vr.start(t0);
        assert_eq!(vr.state(), State::Master);
        vr.handle_link(t0, false);
        assert_eq!(vr.state(), State::Fault);
        drain(&mut vr);
        let t1 = t0 + Duration::from_secs(2);
        vr.handle_link(t1, true);
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(
            drain(&mut vr),
            vec![Action::Transition {
                from: State::Fault,
                to: State::Backup,
                reason: Reason::FaultCleared
            }]
        );
        let down = t1 + vr.master_down_interval();
        assert_eq!(vr.timer(Timer::MasterDown), Some(down));
        vr.handle_timeout(down);
        assert_eq!(vr.state(), State::Master);
        assert!(drain(&mut vr).contains(&Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown
        }));
    }

    /// keepalived 2.2.7 (`vrrp_complete_init`): in a sync group with a member that is no
    /// address owner, the owner starts as Backup too, and the group takes over together
    /// once every member's Master_Down timer has run out: the owner does not take the
    /// others' VIPs at once from a peer that may be their master.
    #[test]
    fn sync_group_owner_beside_a_non_owner_starts_backup() {
        let t0 = t0();
        let mut g = SyncGroup::new(vec![member(255, 51), member(100, 52)]);
        g.start(t0);
        assert!(g.members().iter().all(|m| m.state() == State::Backup));
        let actions: Vec<_> = std::iter::from_fn(|| g.poll_action()).collect();
        assert!(
            actions.iter().all(|(_, a)| matches!(
                a,
                Action::Transition {
                    reason: Reason::Startup,
                    ..
                }
            )),
            "{actions:?}"
        );
        // The owner's timer runs out first (its Skew_Time is the shortest): it waits.
        let owner_down = g.member(0).timer(Timer::MasterDown).unwrap();
        let other_down = g.member(1).timer(Timer::MasterDown).unwrap();
        assert_eq!(owner_down, t0 + g.member(0).master_down_interval());
        assert!(owner_down < other_down);
        g.handle_timeout(owner_down);
        assert!(g.members().iter().all(|m| m.state() == State::Backup));
        g.handle_timeout(other_down);
        assert!(g.members().iter().all(|m| m.state() == State::Master));
    }

    /// A group of address owners only starts as Master at once, as keepalived's does when
    /// they say `state MASTER`.
    #[test]
    fn sync_group_of_owners_starts_master() {
        let t0 = t0();
        let mut g = SyncGroup::new(vec![member(255, 51), member(255, 52)]);
        g.start(t0);
        assert!(g.members().iter().all(|m| m.state() == State::Master));
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Advance(u16),
        Timeout,
        Advert {
            src: u8,
            ttl: u8,
            prio: u8,
            vrid: u8,
            good_pass: bool,
        },
        Raw(Vec<u8>),
        Link(bool),
        Track(u8, bool),
        SetPriority(u8),
        Shutdown,
        Start,
    }

    fn ev() -> impl proptest::strategy::Strategy<Value = Ev> {
        use proptest::prelude::*;
        prop_oneof![
            (0..3000u16).prop_map(Ev::Advance),
            Just(Ev::Timeout),
            Just(Ev::Timeout),
            (
                1..4u8,
                prop_oneof![Just(255u8), any::<u8>()],
                any::<u8>(),
                prop_oneof![Just(51u8), 1..=255u8],
                any::<bool>()
            )
                .prop_map(|(src, ttl, prio, vrid, good_pass)| Ev::Advert {
                    src,
                    ttl,
                    prio,
                    vrid,
                    good_pass
                }),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Ev::Raw),
            any::<bool>().prop_map(Ev::Link),
            (0..4u8, any::<bool>()).prop_map(|(i, ok)| Ev::Track(i, ok)),
            (1..=255u8).prop_map(Ev::SetPriority),
            Just(Ev::Shutdown),
            Just(Ev::Start),
        ]
    }

    proptest::proptest! {
        /// Any event sequence keeps the invariants (the in-crate twin of the
        /// `vrrp_machine` fuzz target): a Master holds its VIPs and has an Adver_Timer, a
        /// Backup has a Master_Down_Timer and no VIPs, Fault/Initialize have neither,
        /// AddVips/RemoveVips alternate, and the effective priority stays in range.
        #[test]
        fn invariants_hold(preempt: bool, prio in 1..=255u8, evs in proptest::collection::vec(ev(), 0..120)) {
            let mut c = cfg(prio, 1);
            c.preempt = preempt;
            c.tracks = vec![TrackWeight(-20), TrackWeight(0), TrackWeight(30)];
            let mut vr = VirtualRouter::new(c.clone());
            let mut now = t0();
            let mut vips = false;
            vr.start(now);
            for e in evs {
                match e {
                    Ev::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                    Ev::Timeout => {
                        if let Some(t) = vr.poll_timeout() {
                            now = now.max(t);
                        }
                        vr.handle_timeout(now);
                    }
                    Ev::Advert { src, ttl, prio, vrid, good_pass } => {
                        let mut a = advert(&c, prio);
                        a.vrid = Vrid::new(vrid).unwrap();
                        if !good_pass {
                            a.auth = Auth::password("x");
                        }
                        let mut m = meta(src);
                        m.ttl = ttl;
                        vr.handle_advert(now, m, &a);
                    }
                    Ev::Raw(b) => vr.handle_packet(now, meta(2), &b),
                    Ev::Link(up) => vr.handle_link(now, up),
                    Ev::Track(i, ok) => vr.handle_track(now, TrackId(usize::from(i)), ok),
                    Ev::SetPriority(p) => vr.set_priority(now, Priority(p)),
                    Ev::Shutdown => vr.shutdown(now),
                    Ev::Start => vr.start(now),
                }
                while let Some(a) = vr.poll_action() {
                    match a {
                        Action::AddVips => { proptest::prop_assert!(!vips); vips = true; }
                        Action::RemoveVips => { proptest::prop_assert!(vips); vips = false; }
                        _ => {}
                    }
                }
                match vr.state() {
                    State::Master => {
                        proptest::prop_assert!(vips);
                        proptest::prop_assert!(vr.timer(Timer::Advert).is_some());
                    }
                    State::Backup => {
                        proptest::prop_assert!(!vips);
                        proptest::prop_assert!(vr.timer(Timer::MasterDown).is_some());
                    }
                    State::Fault | State::Initialize => {
                        proptest::prop_assert!(!vips);
                        proptest::prop_assert!(vr.poll_timeout().is_none());
                    }
                }
                let p = vr.effective_priority().get();
                proptest::prop_assert!(p >= 1 && (p <= 254 || vr.base_priority().is_owner()));
            }
        }
    }
}
