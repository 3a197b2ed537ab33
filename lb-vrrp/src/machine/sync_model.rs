//! Model-based test of [`SyncGroup`]: random event sequences run on a group of two or three
//! [`VirtualRouter`]s (with a router outside the group beside it, as a control) and on
//! [`Keepalived`], a plain transcription of keepalived 2.2.7's `vrrp_sync_group` logic
//! (`vrrp_sync.c`: `vrrp_sync_can_goto_master`, `vrrp_sync_master`, `vrrp_sync_backup`,
//! `vrrp_sync_fault`; `vrrp_scheduler.c`: `vrrp_init_state`, `try_up_instance`, the
//! transition table `VRRP_TSM`; `vrrp_track.c`: `down_instance`; `vrrp.c`:
//! `vrrp_complete_init`, `vrrp_state_backup`, `vrrp_state_master_rx`,
//! `vrrp_state_goto_master`, `vrrp_state_leave_master`, `vrrp_state_leave_fault`). After
//! every event each member's state, effective priority, timers and deadlines, adverts sent,
//! VIPs added and removed, gratuitous ARPs and transitions (with their reasons) must agree.
//!
//! Each instance's own VRRP behaviour is the part `rfc_model` checks against RFC 5798
//! §6.4; here it is written as keepalived's functions do it, with the departures the
//! machine documents. What is new is what the members do to each other.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::model_clock::Tick;
use super::{
    Action, Config, Reason, RxMeta, State, SyncGroup, Timer, TrackId, TrackWeight, VirtualRouter,
};
use crate::wire::{
    AdvertInterval, AdvertRepr, Auth, Packet, Priority, Version, Vrid, VRRP_MCAST_V4,
};

/// Our primary address is host 100 of the test network; peers are below or above it.
const OUR_HOST: u8 = 100;
/// Member `i` of the group has VRID `FIRST_VRID + i`; the control has its own.
const FIRST_VRID: u8 = 51;
const CONTROL_VRID: u8 = 60;
/// Gratuitous ARPs sent on becoming Master (`garp_master_repeat`).
const GARP_MASTER_REPEAT: u32 = 5;
/// The weighted track of every instance; [`ZERO`] is its weight-0 (fault) track.
const WEIGHTED: TrackId = TrackId(0);
const ZERO: TrackId = TrackId(1);

fn host(h: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, h))
}

fn vips(vrid: u8) -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, vrid)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 2, vrid)),
    ]
}

/// One generated `vrrp_instance`.
#[derive(Debug, Clone)]
struct InstSetup {
    version: Version,
    priority: u8,
    /// Advertisement_Interval in centiseconds (whole seconds for v2).
    interval_cs: u16,
    preempt: bool,
    /// The weight of [`WEIGHTED`] (never 0); [`ZERO`] has weight 0.
    weight: i16,
    /// `garp_lower_prio_repeat` (0: none).
    garp_lower_prio_repeat: u32,
    /// `garp_lower_prio_delay`.
    garp_lower_prio_delay: Option<Duration>,
}

impl InstSetup {
    fn config(&self, vrid: u8) -> Config {
        let mut c = Config::new(Vrid::new(vrid).unwrap(), host(OUR_HOST), vips(vrid));
        c.version = self.version;
        c.priority = Priority(self.priority);
        c.advert_interval = AdvertInterval::from_centis(self.interval_cs).unwrap();
        c.preempt = self.preempt;
        c.tracks = vec![TrackWeight(self.weight), TrackWeight(0)];
        c.garp_master_repeat = GARP_MASTER_REPEAT;
        c.garp_master_delay = None;
        c.garp_master_refresh = None;
        c.garp_lower_prio_repeat = self.garp_lower_prio_repeat;
        c.garp_lower_prio_delay = self.garp_lower_prio_delay;
        c
    }
}

/// One generated case: the group's members and the control outside it.
#[derive(Debug, Clone)]
struct Setup {
    members: Vec<InstSetup>,
    control: InstSetup,
}

/// keepalived's `wantstate`: the state an instance would be in disregarding its sync
/// group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Backup,
    Master,
    Fault,
}

/// One keepalived `vrrp_t`, as far as the sync group logic reads and writes it.
#[derive(Debug)]
struct Inst {
    s: InstSetup,
    vrid: u8,
    /// The fault conditions (keepalived's `num_script_if_fault` counts those that hold).
    link: bool,
    address: bool,
    zero_ok: bool,
    /// The weighted track's health.
    weighted_ok: bool,
    state: State,
    want: Want,
    /// Why it wants Master since its own Master_Down timer ran out: the reason the machine
    /// gives when it becomes Master.
    want_reason: Option<Reason>,
    /// `sands` of a Backup: when its Master_Down timer runs out.
    down_at: Option<Instant>,
    /// `sands` of a Master: its next advert.
    advert_at: Option<Instant>,
    /// The delayed burst after a lower-priority advert (`vrrp_lower_prio_gratuitous_arp_thread`).
    garp_lower_prio_at: Option<Instant>,
    /// The Master_Down timer was last set by a priority-0 advert.
    stop_heard: bool,
    /// What the instance did since the last check, in order.
    out: Vec<Action>,
}

impl Inst {
    fn new(s: &InstSetup, vrid: u8) -> Self {
        Self {
            s: s.clone(),
            vrid,
            link: true,
            address: true,
            zero_ok: true,
            weighted_ok: true,
            state: State::Initialize,
            want: Want::Backup,
            want_reason: None,
            down_at: None,
            advert_at: None,
            garp_lower_prio_at: None,
            stop_heard: false,
            out: Vec::new(),
        }
    }

    fn is_owner(&self) -> bool {
        self.s.priority == 255
    }

    /// `vrrp_set_effective_priority`: the base plus the weight (a positive one while the
    /// check is healthy, a negative one while it fails), in 1..=254; the owner's stays
    /// 255.
    fn effective_priority(&self) -> u8 {
        if self.is_owner() {
            return 255;
        }
        let w = i32::from(self.s.weight);
        let mut p = i32::from(self.s.priority);
        if (w > 0 && self.weighted_ok) || (w < 0 && !self.weighted_ok) {
            p += w;
        }
        p.clamp(1, 254) as u8
    }

    /// `num_script_if_fault != 0`.
    fn own_fault(&self) -> bool {
        !self.link || !self.address || !self.zero_ok
    }

    /// The reason the machine gives for a fault of its own.
    fn fault_reason(&self) -> Reason {
        if !self.link {
            Reason::LinkDown
        } else if !self.address {
            Reason::NoAddress
        } else {
            Reason::TrackFault
        }
    }

    fn adver_int(&self) -> Duration {
        Duration::from_millis(u64::from(self.s.interval_cs) * 10)
    }

    /// `VRRP_TIMER_SKEW` for priority `p` (Master_Adver_Interval is ours: the peers send
    /// our interval).
    fn skew(&self, p: u8) -> Duration {
        let k = 256 - u64::from(p);
        match self.s.version {
            Version::V3 => Duration::from_micros(k * u64::from(self.s.interval_cs) * 10_000 / 256),
            Version::V2 => Duration::from_micros(k * 1_000_000 / 256),
        }
    }

    /// `VRRP_MS_DOWN_TIMER`.
    fn ms_down_timer(&self) -> Duration {
        3 * self.adver_int() + self.skew(self.effective_priority())
    }

    fn send_adv(&mut self, priority: u8) {
        self.out.push(Action::SendAdvert(AdvertRepr {
            version: self.s.version,
            vrid: Vrid::new(self.vrid).unwrap(),
            priority: Priority(priority),
            interval: AdvertInterval::from_centis(self.s.interval_cs).unwrap(),
            auth: Auth::None,
            addresses: vips(self.vrid),
        }));
    }

    fn announce(&mut self, repeat: u32) {
        if repeat > 0 {
            self.out.push(Action::AnnounceVips { repeat });
        }
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        if from != to {
            self.out.push(Action::Transition { from, to, reason });
        }
    }

    fn clear_timers(&mut self) {
        self.down_at = None;
        self.advert_at = None;
        self.garp_lower_prio_at = None;
    }

    /// `vrrp_state_goto_master` once allowed: `vrrp_state_master_tx` sends an advert and
    /// `vrrp_state_become_master` adds the VIPs and sends `garp_master_repeat` gratuitous
    /// ARPs.
    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.send_adv(self.effective_priority());
        self.out.push(Action::AddVips);
        self.announce(GARP_MASTER_REPEAT);
        self.clear_timers();
        self.advert_at = Some(now + self.adver_int());
        self.stop_heard = false;
        self.want = Want::Master;
        self.transition(State::Master, reason);
        self.want_reason = None;
    }

    /// `vrrp_state_leave_master` with wantstate BACKUP: the VIPs go, the Master_Down timer
    /// runs.
    fn leave_master(&mut self, now: Instant, reason: Reason) {
        self.out.push(Action::RemoveVips);
        self.clear_timers();
        self.down_at = Some(now + self.ms_down_timer());
        self.stop_heard = false;
        self.want = Want::Backup;
        self.want_reason = None;
        self.transition(State::Backup, reason);
    }

    /// Into FAULT (`down_instance`, `vrrp_sync_fault`): a Master sends priority 0 and
    /// removes its VIPs.
    fn enter_fault(&mut self, reason: Reason) {
        if self.state == State::Master {
            // keepalived sends it whatever the link; the machine only where it can (and
            // once where keepalived's own fault sends it twice: vrrp_state_leave_master
            // and vrrp_restore_interface each send one).
            if self.link {
                self.send_adv(0);
            }
            self.out.push(Action::RemoveVips);
        }
        self.clear_timers();
        self.want = Want::Fault;
        self.want_reason = None;
        self.transition(State::Fault, reason);
    }

    /// `vrrp_state_leave_fault` with wantstate BACKUP: Backup, a whole Master_Down_Interval.
    fn leave_fault(&mut self, now: Instant) {
        self.want = Want::Backup;
        self.want_reason = None;
        self.clear_timers();
        self.down_at = Some(now + self.ms_down_timer());
        self.stop_heard = false;
        self.transition(State::Backup, Reason::FaultCleared);
    }

    fn shutdown(&mut self) {
        match self.state {
            State::Initialize => {}
            State::Master => {
                self.send_adv(0);
                self.out.push(Action::RemoveVips);
                self.transition(State::Initialize, Reason::Shutdown);
            }
            State::Backup | State::Fault => self.transition(State::Initialize, Reason::Shutdown),
        }
        self.clear_timers();
    }

    /// `vrrp_set_effective_priority` for a Backup: its timer moves by the change in
    /// Skew_Time, never into the past (the machine's documented rule).
    fn priority_changed(&mut self, now: Instant, before: u8) {
        let after = self.effective_priority();
        if after == before || self.state != State::Backup {
            return;
        }
        if let Some(at) = self.down_at {
            let (old, new) = (self.skew(before), self.skew(after));
            self.down_at = Some(if new < old {
                (at - (old - new)).max(now)
            } else {
                at + (new - old)
            });
        }
    }
}

/// keepalived's `vrrp_sgroup_t.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupState {
    Init,
    Backup,
    Master,
    Fault,
}

/// keepalived's instances: the sync group's members (`group` is `Some`) or one instance
/// outside any group (`None`).
#[derive(Debug)]
struct Node {
    insts: Vec<Inst>,
    group: Option<GroupState>,
}

impl Node {
    fn grouped(&self) -> bool {
        self.group.is_some()
    }

    fn running(&self) -> bool {
        self.insts.iter().any(|m| m.state != State::Initialize)
    }

    /// A fresh start: `vrrp_complete_init`, `initialise_tracking_priorities` and
    /// `vrrp_init_state`.
    fn start(&mut self, now: Instant) {
        if self.running() {
            return;
        }
        // The owner wants MASTER, others BACKUP; in a sync group with a member that is no
        // owner, every member wants BACKUP ("make sure that if any sync group has member
        // wanting to start in master state, then all can start in master state").
        let all_owners = self.insts.iter().all(Inst::is_owner);
        for m in &mut self.insts {
            m.want = if m.is_owner() && all_owners {
                Want::Master
            } else {
                Want::Backup
            };
            m.want_reason = None;
            m.stop_heard = false;
        }
        let any_fault = self.insts.iter().any(Inst::own_fault);
        if self.grouped() {
            // A member in FAULT puts its group in FAULT. The machine starts a group of
            // owners as MASTER at once, as keepalived does when they also say
            // `state MASTER` (without it they wait one Advertisement_Interval first).
            self.group = Some(if any_fault {
                GroupState::Fault
            } else if all_owners {
                GroupState::Master
            } else {
                GroupState::Backup
            });
        }
        let group_fault = self.group == Some(GroupState::Fault);
        for m in &mut self.insts {
            if m.own_fault() {
                let r = m.fault_reason();
                m.enter_fault(r);
            } else if group_fault {
                m.enter_fault(Reason::SyncGroup);
            } else if m.want == Want::Master {
                m.become_master(now, Reason::Startup);
            } else {
                m.down_at = Some(now + m.ms_down_timer());
                m.transition(State::Backup, Reason::Startup);
            }
        }
    }

    fn shutdown(&mut self) {
        self.insts.iter_mut().for_each(Inst::shutdown);
        if self.grouped() {
            self.group = Some(GroupState::Init);
        }
    }

    /// `vrrp_sync_can_goto_master`: MASTER only if every other member wants it; if not,
    /// the Master_Down timer starts again.
    fn can_goto_master(&mut self, i: usize, now: Instant) -> bool {
        match self.group {
            None | Some(GroupState::Master) => return true,
            _ => {}
        }
        let others_want = self
            .insts
            .iter()
            .enumerate()
            .all(|(j, m)| j == i || m.want == Want::Master);
        if !others_want {
            let m = &mut self.insts[i];
            m.down_at = Some(now + m.ms_down_timer());
        }
        others_want
    }

    /// `vrrp_sync_master`, called as member `i` has become MASTER.
    fn sync_master(&mut self, i: usize, now: Instant) {
        if matches!(self.group, None | Some(GroupState::Master)) {
            return;
        }
        for j in 0..self.insts.len() {
            if j == i || self.insts[j].state == State::Master {
                continue;
            }
            self.insts[j].want = Want::Master;
            // vrrp_state_goto_master
            if self.can_goto_master(j, now) {
                let m = &mut self.insts[j];
                let reason = m.want_reason.unwrap_or(Reason::SyncGroup);
                m.become_master(now, reason);
            }
        }
        self.group = Some(GroupState::Master);
    }

    /// `vrrp_sync_backup`, called as member `i` has become BACKUP.
    fn sync_backup(&mut self, i: usize, now: Instant) {
        if matches!(self.group, None | Some(GroupState::Backup)) {
            return;
        }
        for (j, m) in self.insts.iter_mut().enumerate() {
            if j == i || m.state == State::Backup {
                continue;
            }
            if matches!(m.state, State::Fault | State::Initialize) {
                m.leave_fault(now);
            } else {
                m.leave_master(now, Reason::SyncGroup);
            }
        }
        self.group = Some(GroupState::Backup);
    }

    /// `vrrp_sync_fault`, called as member `i` has entered FAULT of its own.
    fn sync_fault(&mut self, i: usize) {
        if matches!(self.group, None | Some(GroupState::Fault)) {
            return;
        }
        for (j, m) in self.insts.iter_mut().enumerate() {
            if j != i && m.state != State::Fault {
                m.enter_fault(Reason::SyncGroup);
            }
        }
        self.group = Some(GroupState::Fault);
    }

    /// `vrrp_dispatcher_read_timeout` (and the gratuitous ARP threads): every instance
    /// whose timer ran out, Backups in the order of their deadlines.
    fn timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for m in &mut self.insts {
            if m.state != State::Master {
                continue;
            }
            // vrrp_state_master_tx
            if due(m.advert_at) {
                m.send_adv(m.effective_priority());
                m.advert_at = Some(now + m.adver_int());
            }
            if due(m.garp_lower_prio_at) {
                m.garp_lower_prio_at = None;
                m.announce(m.s.garp_lower_prio_repeat);
            }
        }
        let mut backups: Vec<(Instant, usize)> = self
            .insts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state == State::Backup && due(m.down_at))
            .map(|(i, m)| (m.down_at.unwrap(), i))
            .collect();
        backups.sort();
        // The reasons are the machine's: one whose timer ran out within this wake-up gives
        // its own, whichever member keepalived happens to take first.
        for &(_, i) in &backups {
            let m = &mut self.insts[i];
            m.want_reason = Some(if m.stop_heard {
                Reason::MasterStopped
            } else {
                Reason::MasterDown
            });
        }
        for (_, i) in backups {
            if self.insts[i].state != State::Backup {
                // Taken to MASTER by its group within this wake-up.
                continue;
            }
            // vrrp_goto_master
            let m = &mut self.insts[i];
            m.want = Want::Master;
            let reason = m.want_reason.unwrap_or(Reason::MasterDown);
            if !self.can_goto_master(i, now) {
                continue;
            }
            self.insts[i].become_master(now, reason);
            // VRRP_TSM[BACKUP][MASTER]
            self.sync_master(i, now);
        }
    }

    /// An advert from a peer of member `i` (multicast, TTL 255, our addresses and interval).
    fn advert(&mut self, i: usize, now: Instant, priority: u8, src: IpAddr) {
        let m = &mut self.insts[i];
        let mine = m.effective_priority();
        match m.state {
            State::Initialize | State::Fault => {}
            // vrrp_state_backup (no preempt_delay)
            State::Backup => {
                if priority == 0 {
                    m.down_at = Some(now + m.skew(mine));
                    m.stop_heard = true;
                } else if !(m.s.preempt || m.is_owner()) || priority >= mine {
                    m.down_at = Some(now + m.ms_down_timer());
                    m.stop_heard = false;
                    // "We might have been held in backup by a sync group, but if
                    // ms_down_timer had expired, we would have wanted MASTER state. Now we
                    // have received a backup, we want to be in BACKUP state."
                    m.want = Want::Backup;
                    m.want_reason = None;
                }
                // else: a lower priority we preempt: the advert is ignored.
            }
            // vrrp_state_master_rx (no higher_prio_send_advert, no lower_prio_no_advert).
            // An owner hearing another owner compares addresses, as the machine documents
            // (keepalived lowers its own priority to 254 first).
            State::Master => {
                let higher = priority > mine || (priority == mine && src > host(OUR_HOST));
                if priority == 0 {
                    m.send_adv(mine);
                    m.advert_at = Some(now + m.adver_int());
                } else if higher {
                    m.leave_master(now, Reason::Preempted);
                    // VRRP_TSM[MASTER][BACKUP]
                    self.sync_backup(i, now);
                } else {
                    m.send_adv(mine);
                    m.advert_at = Some(now + m.adver_int());
                    // Its own gratuitous ARPs and those of every other member (that holds
                    // its VIPs) with garp_lower_prio_repeat.
                    let grouped = self.grouped();
                    for (j, m) in self.insts.iter_mut().enumerate() {
                        if (j == i || grouped) && m.state == State::Master {
                            let repeat = m.s.garp_lower_prio_repeat;
                            if repeat > 0 {
                                m.announce(repeat);
                                if let Some(d) = m.s.garp_lower_prio_delay {
                                    m.garp_lower_prio_at = Some(now + d);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A fault condition of member `i` changed (`change`): `down_instance` when its first
    /// one appears, `try_up_instance` when its last one clears.
    fn fault_condition(&mut self, i: usize, now: Instant, change: impl FnOnce(&mut Inst)) {
        let before = self.insts[i].own_fault();
        change(&mut self.insts[i]);
        let after = self.insts[i].own_fault();
        if !self.running() || before == after {
            return;
        }
        if after {
            // down_instance
            let m = &mut self.insts[i];
            let reason = m.fault_reason();
            m.enter_fault(reason);
            // `num_member_fault++ == 0`
            self.sync_fault(i);
        } else {
            // try_up_instance: an owner too wants BACKUP (its wantstate was FAULT).
            self.insts[i].want = Want::Backup;
            let others = self
                .insts
                .iter()
                .enumerate()
                .any(|(j, m)| j != i && m.own_fault());
            if self.grouped() && others {
                // `--num_member_fault`: still in FAULT with the group.
                return;
            }
            self.insts[i].leave_fault(now);
            self.sync_backup(i, now);
        }
    }

    /// The weighted track of member `i`.
    fn weighted(&mut self, i: usize, now: Instant, ok: bool) {
        let m = &mut self.insts[i];
        let before = m.effective_priority();
        m.weighted_ok = ok;
        m.priority_changed(now, before);
    }
}

/// keepalived running the sync group and, beside it, the control instance.
#[derive(Debug)]
struct Keepalived {
    group: Node,
    control: Node,
}

/// A peer's priority, relative to the receiver's effective one when the advert arrives.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Zero,
    Owner,
    Equal,
    Below,
    Above,
    Any(u8),
}

impl Pick {
    fn resolve(self, mine: u8) -> u8 {
        match self {
            Self::Zero => 0,
            Self::Owner => 255,
            Self::Equal => mine,
            Self::Below => mine.saturating_sub(1).max(1),
            Self::Above => mine.saturating_add(1),
            Self::Any(p) => p,
        }
    }
}

#[derive(Debug, Clone)]
enum Ev {
    /// A step of virtual time.
    Tick(Tick),
    /// An advert for instance `to` (the control after the members) from host `host`,
    /// parsed (`raw`: from its bytes, as the driver hands it over).
    Advert {
        to: usize,
        host: u8,
        priority: Pick,
        raw: bool,
    },
    Link {
        to: usize,
        up: bool,
    },
    Address {
        to: usize,
        present: bool,
    },
    Track {
        to: usize,
        id: TrackId,
        healthy: bool,
    },
    /// Every instance, the group's and the control.
    Shutdown,
    Start,
}

fn inst_setup() -> impl Strategy<Value = InstSetup> {
    let version = prop_oneof![Just(Version::V2), Just(Version::V3)];
    let priority = prop_oneof![
        2 => Just(255u8),
        1 => Just(254),
        1 => Just(1),
        1 => Just(100),
        4 => 1..=255u8,
    ];
    let weight = prop_oneof![-60..=-1i16, 1..=60i16];
    (
        version,
        priority,
        prop_oneof![Just(1u16), 1..=3u16],
        prop_oneof![Just(100u16), 1..=300u16],
        any::<bool>(),
        weight,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(version, priority, secs, centis, preempt, weight, garp, delay)| InstSetup {
                version,
                priority,
                interval_cs: if version == Version::V3 {
                    centis
                } else {
                    secs * 100
                },
                preempt,
                weight,
                garp_lower_prio_repeat: if garp { 3 } else { 0 },
                garp_lower_prio_delay: delay.then_some(Duration::from_secs(2)),
            },
        )
}

fn setup() -> impl Strategy<Value = Setup> {
    (proptest::collection::vec(inst_setup(), 2..=3), inst_setup())
        .prop_map(|(members, control)| Setup { members, control })
}

fn events(n: usize) -> impl Strategy<Value = Vec<Ev>> {
    let to = 0..=n;
    let pick = prop_oneof![
        Just(Pick::Zero),
        Just(Pick::Owner),
        Just(Pick::Equal),
        Just(Pick::Below),
        Just(Pick::Above),
        any::<u8>().prop_map(Pick::Any),
    ];
    let host = prop_oneof![1..OUR_HOST, OUR_HOST + 1..=254];
    let advert =
        (to.clone(), host, pick, any::<bool>()).prop_map(|(to, host, priority, raw)| Ev::Advert {
            to,
            host,
            priority,
            raw,
        });
    // Failures are undone three times as often as they happen: a group with a member in Fault
    // does little else.
    let ok = || prop_oneof![3 => Just(true), 1 => Just(false)];
    let ev = prop_oneof![
        13 => Tick::strategy(8).prop_map(Ev::Tick),
        6 => advert,
        1 => (to.clone(), ok()).prop_map(|(to, up)| Ev::Link { to, up }),
        1 => (to.clone(), ok()).prop_map(|(to, present)| Ev::Address { to, present }),
        1 => (to.clone(), ok()).prop_map(|(to, healthy)| Ev::Track { to, id: ZERO, healthy }),
        2 => (to, any::<bool>()).prop_map(|(to, healthy)| Ev::Track { to, id: WEIGHTED, healthy }),
        1 => Just(Ev::Shutdown),
        1 => Just(Ev::Start),
    ];
    proptest::collection::vec(ev, 0..100)
}

#[allow(clippy::disallowed_methods)] // tests need some Instant; the machine never reads the clock
fn t0() -> Instant {
    Instant::now()
}

/// The machines under test: the group and the control.
struct Real {
    group: SyncGroup,
    control: VirtualRouter,
}

impl Real {
    fn poll_timeout(&self) -> Option<Instant> {
        self.group
            .poll_timeout()
            .into_iter()
            .chain(self.control.poll_timeout())
            .min()
    }

    fn timeout(&mut self, now: Instant) {
        self.group.handle_timeout(now);
        self.control.handle_timeout(now);
    }
}

impl Keepalived {
    /// Instance `to`: a member, or the control after them.
    fn node(&mut self, to: usize) -> (&mut Node, usize) {
        if to < self.group.insts.len() {
            (&mut self.group, to)
        } else {
            (&mut self.control, 0)
        }
    }

    fn timeout(&mut self, now: Instant) {
        self.group.timeout(now);
        self.control.timeout(now);
    }
}

/// Runs `evs` on the machines and the model side by side, comparing after each.
fn run(s: &Setup, evs: &[Ev]) -> Result<(), TestCaseError> {
    let n = s.members.len();
    let vrid = |i: usize| FIRST_VRID + i as u8;
    let mut real = Real {
        group: SyncGroup::new(
            s.members
                .iter()
                .enumerate()
                .map(|(i, m)| VirtualRouter::new(m.config(vrid(i))))
                .collect(),
        ),
        control: VirtualRouter::new(s.control.config(CONTROL_VRID)),
    };
    let mut ka = Keepalived {
        group: Node {
            insts: s
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| Inst::new(m, vrid(i)))
                .collect(),
            group: Some(GroupState::Init),
        },
        control: Node {
            insts: vec![Inst::new(&s.control, CONTROL_VRID)],
            group: None,
        },
    };
    let t0 = t0();
    let mut now = t0;
    real.group.start(now);
    real.control.start(now);
    ka.group.start(now);
    ka.control.start(now);
    compare(&mut real, &mut ka, t0, "start")?;
    for (k, ev) in evs.iter().enumerate() {
        match *ev {
            Ev::Tick(tick) => {
                if tick.apply(&mut now, real.poll_timeout()) {
                    real.timeout(now);
                    ka.timeout(now);
                }
            }
            Ev::Advert {
                to,
                host: h,
                priority,
                raw,
            } => {
                let (node, i) = ka.node(to);
                let priority = priority.resolve(node.insts[i].effective_priority());
                let inst = &node.insts[i];
                let adv = AdvertRepr {
                    version: inst.s.version,
                    vrid: Vrid::new(inst.vrid).unwrap(),
                    priority: Priority(priority),
                    interval: AdvertInterval::from_centis(inst.s.interval_cs).unwrap(),
                    auth: Auth::None,
                    addresses: vips(inst.vrid),
                };
                let meta = RxMeta {
                    src: host(h),
                    dst: IpAddr::V4(VRRP_MCAST_V4),
                    ttl: 255,
                };
                node.advert(i, now, priority, host(h));
                let mut bytes = vec![0u8; adv.buffer_len()];
                adv.emit(
                    &mut Packet::new_unchecked(&mut bytes[..]),
                    meta.src,
                    meta.dst,
                )
                .unwrap();
                match (to < n, raw) {
                    (true, false) => real.group.handle_advert(now, to, meta, &adv),
                    (true, true) => real.group.handle_packet(now, to, meta, &bytes),
                    (false, false) => real.control.handle_advert(now, meta, &adv),
                    (false, true) => real.control.handle_packet(now, meta, &bytes),
                }
            }
            Ev::Link { to, up } => {
                let (node, i) = ka.node(to);
                node.fault_condition(i, now, |m| m.link = up);
                if to < n {
                    real.group.handle_link(now, to, up);
                } else {
                    real.control.handle_link(now, up);
                }
            }
            Ev::Address { to, present } => {
                let (node, i) = ka.node(to);
                node.fault_condition(i, now, |m| m.address = present);
                if to < n {
                    real.group.handle_address(now, to, present);
                } else {
                    real.control.handle_address(now, present);
                }
            }
            Ev::Track { to, id, healthy } => {
                let (node, i) = ka.node(to);
                if id == ZERO {
                    node.fault_condition(i, now, |m| m.zero_ok = healthy);
                } else {
                    node.weighted(i, now, healthy);
                }
                if to < n {
                    real.group.handle_track(now, to, id, healthy);
                } else {
                    real.control.handle_track(now, id, healthy);
                }
            }
            Ev::Shutdown => {
                real.group.shutdown(now);
                real.control.shutdown(now);
                ka.group.shutdown();
                ka.control.shutdown();
            }
            Ev::Start => {
                real.group.start(now);
                real.control.start(now);
                ka.group.start(now);
                ka.control.start(now);
            }
        }
        compare(&mut real, &mut ka, t0, &format!("event {k} ({ev:?})"))?;
    }
    Ok(())
}

/// Every instance's outputs, state, priority and timers against the model's (timers as
/// offsets from `t0`).
fn compare(
    real: &mut Real,
    ka: &mut Keepalived,
    t0: Instant,
    step: &str,
) -> Result<(), TestCaseError> {
    let n = ka.group.insts.len();
    let mut actions: Vec<Vec<Action>> = vec![Vec::new(); n];
    while let Some((i, a)) = real.group.poll_action() {
        actions[i].push(a);
    }
    let control: Vec<Action> = std::iter::from_fn(|| real.control.poll_action()).collect();
    let mut pairs: Vec<(&VirtualRouter, &mut Inst, Vec<Action>, String)> = Vec::new();
    for ((vr, m), a) in real
        .group
        .members()
        .iter()
        .zip(&mut ka.group.insts)
        .zip(actions)
    {
        let name = format!("member {}", m.vrid - FIRST_VRID);
        pairs.push((vr, m, a, name));
    }
    pairs.push((
        &real.control,
        &mut ka.control.insts[0],
        control,
        "the control".into(),
    ));
    let since = |t: Option<Instant>| t.map(|t| t - t0);
    for (vr, m, actions, name) in pairs {
        let expected = std::mem::take(&mut m.out);
        prop_assert_eq!(actions, expected, "{}'s actions after {}", name, step);
        prop_assert_eq!(vr.state(), m.state, "{}'s state after {}", name, step);
        prop_assert_eq!(
            vr.effective_priority().get(),
            m.effective_priority(),
            "{}'s priority after {}",
            name,
            step
        );
        for (t, want) in [
            (Timer::MasterDown, m.down_at),
            (Timer::Advert, m.advert_at),
            (Timer::GarpLowerPrio, m.garp_lower_prio_at),
            (Timer::Garp, None),
            (Timer::GarpRefresh, None),
        ] {
            prop_assert_eq!(
                since(vr.timer(t)),
                since(want),
                "{}'s {:?} timer after {}",
                name,
                t,
                step
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A sync group of two or three members does what keepalived 2.2.7 does, event by
    /// event, and a router outside it does what a lone keepalived instance does: each
    /// instance's state, effective priority, Master_Down, Adver and lower-priority GARP
    /// timers and their deadlines, adverts sent, VIPs added and removed, gratuitous ARPs
    /// and transitions with their reasons. Events go to each member (and the control) at
    /// random: adverts of priority 0, 255, equal to, just below and just above its own, or
    /// any, from addresses below and above ours; wake-ups early, late, exactly at
    /// `poll_timeout()` and just before it; link, address and weight-0 track failures and
    /// recoveries; a weighted track (the priority moves); shutdown and start of the lot.
    /// The configurations vary in version, priority (owners among them, and groups of
    /// owners only), interval, preempt and `garp_lower_prio_repeat` / `_delay`.
    ///
    /// keepalived's rules, as transcribed:
    ///
    /// * a member whose Master_Down timer runs out becomes MASTER only if every other
    ///   member wants MASTER too (its own timer ran out, or it is MASTER); if not, it waits
    ///   as BACKUP, its timer started again (`vrrp_sync_can_goto_master`); an advert it
    ///   accepts makes it want BACKUP again;
    /// * once one becomes MASTER, every other member does (`vrrp_sync_master`); one that
    ///   falls from MASTER to BACKUP takes the others to BACKUP (`vrrp_sync_backup`);
    /// * one with a fault of its own takes all to FAULT (a MASTER sends priority 0) and
    ///   they stay there until none has one (`vrrp_sync_fault`, `try_up_instance`); then
    ///   all go BACKUP, an address owner too, and wait a Master_Down_Interval;
    /// * a group with a member that is no address owner starts BACKUP, owners too
    ///   (`vrrp_complete_init`); a group of owners starts MASTER;
    /// * a MASTER hearing a lower priority answers and re-announces its VIPs, and so do the
    ///   group's other MASTERs with `garp_lower_prio_repeat`.
    ///
    /// Where the machine departs from keepalived, as its docs say, the model does too:
    /// weighted tracks count in a group (keepalived needs `sync_group_tracking_weight`;
    /// lb-node warns); a group of owners starts MASTER at once (keepalived does when they
    /// say `state MASTER`); an owner hearing another owner compares addresses; a Master's
    /// priority-0 advert on entering FAULT goes out once and only while its link is up;
    /// the Backup's timer moves by the change in Skew_Time when the priority changes.
    #[test]
    fn sync_group_follows_keepalived(
        (s, evs) in setup().prop_flat_map(|s| {
            let evs = events(s.members.len());
            (Just(s), evs)
        })
    ) {
        run(&s, &evs)?;
    }
}
