//! Model-based test of [`VirtualRouter`]: random event sequences run on the machine and on
//! [`Rfc`], a plain transcription of the pseudo-code of [RFC 5798 §6.4] (v3) and
//! [RFC 3768 §6.4] (v2), and after every event the two must agree on the state, the armed
//! timer and its deadline, the adverts sent (priority and interval), the VIPs added or
//! removed, the gratuitous ARPs and the transitions.
//!
//! The configurations are the plain RFC feature set: one fixed list of VIPs, multicast,
//! no tracking, no `preempt_delay`, no startup delay, `down_timer_adverts` 3, no delayed
//! or periodic gratuitous ARPs. What varies is what §6.1 configures (version, priority
//! including the owner's 255, Advertisement_Interval, Preempt_Mode, Accept_Mode, address
//! family for v3) and the three keepalived options that change what a Master answers.
//!
//! [RFC 5798 §6.4]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4
//! [RFC 3768 §6.4]: https://www.rfc-editor.org/rfc/rfc3768#section-6.4

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::model_clock::Tick;
use super::{Action, Config, Reason, RxMeta, State, Timer, VirtualRouter};
use crate::wire::{
    AdvertInterval, AdvertRepr, Auth, Priority, Version, Vrid, VRRP_MCAST_V4, VRRP_MCAST_V6,
};

/// Our primary address is host 100 of the test network; peers are below or above it.
const OUR_HOST: u8 = 100;

fn addr(v6: bool, host: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(host)))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, host))
    }
}

fn vips(v6: bool) -> Vec<IpAddr> {
    if v6 {
        vec![
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x200)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x201)),
        ]
    } else {
        vec![addr(false, 200), addr(false, 201)]
    }
}

/// One generated configuration.
#[derive(Debug, Clone)]
struct Setup {
    version: Version,
    /// IPv6 (v3 only).
    v6: bool,
    priority: u8,
    /// Advertisement_Interval in centiseconds (whole seconds for v2).
    interval_cs: u16,
    preempt: bool,
    accept_mode: bool,
    /// keepalived `lower_prio_no_advert`.
    lower_prio_no_advert: bool,
    /// keepalived `garp_lower_prio_repeat` (0 or its default, 5).
    garp_lower_prio_repeat: u32,
    /// keepalived `higher_prio_send_advert`.
    higher_prio_send_advert: bool,
}

impl Setup {
    fn config(&self) -> Config {
        let mut c = Config::new(
            Vrid::new(51).unwrap(),
            addr(self.v6, OUR_HOST),
            vips(self.v6),
        );
        c.version = self.version;
        c.priority = Priority(self.priority);
        c.advert_interval = AdvertInterval::from_centis(self.interval_cs).unwrap();
        c.preempt = self.preempt;
        c.accept_mode = self.accept_mode;
        c.lower_prio_no_advert = self.lower_prio_no_advert;
        c.garp_lower_prio_repeat = self.garp_lower_prio_repeat;
        c.higher_prio_send_advert = self.higher_prio_send_advert;
        // Gratuitous ARPs only as the RFC sends them, when becoming Master (and, as
        // keepalived, when a Master hears a lower priority): no timers of their own.
        c.garp_master_repeat = 5;
        c.garp_master_delay = None;
        c.garp_master_refresh = None;
        c.garp_lower_prio_delay = None;
        c
    }
}

/// The virtual router of RFC 5798 §6.4 / RFC 3768 §6.4, written from the pseudo-code and
/// the definitions of §6.1 only (it calls nothing of the machine's), plus the documented
/// keepalived behaviour listed on `machine_follows_the_rfc_pseudo_code`.
#[derive(Debug)]
struct Rfc {
    // §6.1 parameters.
    version: Version,
    priority: u8,
    /// Advertisement_Interval, centiseconds.
    advertisement_interval: u16,
    preempt_mode: bool,
    primary: IpAddr,
    vips: Vec<IpAddr>,
    lower_prio_no_advert: bool,
    garp_lower_prio_repeat: u32,
    higher_prio_send_advert: bool,
    /// Gratuitous ARPs sent on becoming Master (keepalived's `garp_master_repeat`, 5).
    garp_master_repeat: u32,
    // State, Master_Adver_Interval (§6.1) and the timers (§6.2).
    state: State,
    /// Master_Adver_Interval, centiseconds.
    master_adver_interval: u16,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// The Master_Down_Timer was last set to Skew_Time by a priority-0 advert: its expiry
    /// is [`Reason::MasterStopped`], else [`Reason::MasterDown`].
    down_by_stop: bool,
    /// What the router did since the last check, in order.
    out: Vec<Action>,
}

impl Rfc {
    fn new(s: &Setup) -> Self {
        Self {
            version: s.version,
            priority: s.priority,
            advertisement_interval: s.interval_cs,
            preempt_mode: s.preempt,
            primary: addr(s.v6, OUR_HOST),
            vips: vips(s.v6),
            lower_prio_no_advert: s.lower_prio_no_advert,
            garp_lower_prio_repeat: s.garp_lower_prio_repeat,
            higher_prio_send_advert: s.higher_prio_send_advert,
            garp_master_repeat: 5,
            state: State::Initialize,
            master_adver_interval: s.interval_cs,
            adver_timer: None,
            master_down_timer: None,
            down_by_stop: false,
            out: Vec::new(),
        }
    }

    fn cs(cs: u16) -> Duration {
        Duration::from_millis(u64::from(cs) * 10)
    }

    /// Skew_Time (§6.1): v3 `((256 - Priority) * Master_Adver_Interval) / 256`
    /// centiseconds, v2 `(256 - Priority) / 256` seconds; exact to the microsecond
    /// (truncated), keepalived's resolution.
    fn skew_time(&self) -> Duration {
        let k = 256 - u64::from(self.priority);
        match self.version {
            Version::V3 => {
                Duration::from_micros(k * u64::from(self.master_adver_interval) * 10_000 / 256)
            }
            Version::V2 => Duration::from_micros(k * 1_000_000 / 256),
        }
    }

    /// Master_Down_Interval (§6.1): `3 * Master_Adver_Interval + Skew_Time`; v2 has no
    /// Master_Adver_Interval and uses its own Advertisement_Interval.
    fn master_down_interval(&self) -> Duration {
        let interval = match self.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => self.advertisement_interval,
        };
        3 * Self::cs(interval) + self.skew_time()
    }

    /// Preempt_Mode, except that the owner always preempts (§6.1, note on Preempt_Mode).
    fn preempts(&self) -> bool {
        self.preempt_mode || self.priority == 255
    }

    fn send_advert(&mut self, priority: u8) {
        self.out.push(Action::SendAdvert(AdvertRepr {
            version: self.version,
            vrid: Vrid::new(51).unwrap(),
            priority: Priority(priority),
            interval: AdvertInterval::from_centis(self.advertisement_interval).unwrap(),
            auth: Auth::None,
            addresses: self.vips.clone(),
        }));
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        self.out.push(Action::Transition { from, to, reason });
    }

    /// Send an ADVERTISEMENT, gratuitous ARP for each VIP (which the router now holds), set
    /// the Adver_Timer to Advertisement_Interval, transition to Master.
    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.send_advert(self.priority);
        self.out.push(Action::AddVips);
        self.out.push(Action::AnnounceVips {
            repeat: self.garp_master_repeat,
        });
        self.adver_timer = Some(now + Self::cs(self.advertisement_interval));
        self.master_down_timer = None;
        self.down_by_stop = false;
        self.transition(State::Master, reason);
    }

    /// The Startup event (§6.4.1).
    fn startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.priority == 255 {
            self.become_master(now, Reason::Startup);
        } else {
            self.master_adver_interval = self.advertisement_interval;
            self.master_down_timer = Some(now + self.master_down_interval());
            self.down_by_stop = false;
            self.transition(State::Backup, Reason::Startup);
        }
    }

    /// The Shutdown event (§6.4.2, §6.4.3).
    fn shutdown(&mut self) {
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                self.master_down_timer = None;
                self.transition(State::Initialize, Reason::Shutdown);
            }
            State::Master => {
                self.adver_timer = None;
                self.send_advert(0);
                self.out.push(Action::RemoveVips);
                self.transition(State::Initialize, Reason::Shutdown);
            }
        }
    }

    /// A wake-up at `now`: every timer due fires.
    fn timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.state {
            // §6.4.3: send an ADVERTISEMENT, reset the Adver_Timer.
            State::Master if due(self.adver_timer) => {
                self.send_advert(self.priority);
                self.adver_timer = Some(now + Self::cs(self.advertisement_interval));
            }
            // §6.4.2: the Master_Down_Timer fired.
            State::Backup if due(self.master_down_timer) => {
                let reason = if self.down_by_stop {
                    Reason::MasterStopped
                } else {
                    Reason::MasterDown
                };
                self.become_master(now, reason);
            }
            _ => {}
        }
    }

    /// An ADVERTISEMENT is received: the §7.1 checks the generated adverts can fail, then
    /// §6.4.2 (Backup) or §6.4.3 (Master).
    fn advert(&mut self, now: Instant, rx: &Rx) {
        let Rx {
            src,
            ttl,
            priority,
            interval_cs,
            our_vips,
        } = *rx;
        if matches!(self.state, State::Initialize | State::Fault) {
            return;
        }
        // §7.1: the TTL (hop limit) must be 255.
        if ttl != 255 {
            return;
        }
        // RFC 3768 §7.1: a v2 advert whose Adver Int is not ours is discarded, and so is
        // one with other addresses unless the owner (priority 255) sent it. RFC 5798 §7.1
        // only asks to log the latter: the machine drops it, as keepalived.
        if self.version == Version::V2 && interval_cs != self.advertisement_interval {
            return;
        }
        let from_v2_owner = self.version == Version::V2 && priority == 255;
        if !(our_vips || from_v2_owner) {
            return;
        }
        match self.state {
            State::Backup => {
                if priority == 0 {
                    self.master_down_timer = Some(now + self.skew_time());
                    self.down_by_stop = true;
                } else if !self.preempts() || priority >= self.priority {
                    if self.version == Version::V3 {
                        self.master_adver_interval = interval_cs;
                    }
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.down_by_stop = false;
                }
                // else: discard the advert (the Master_Down_Timer runs on).
            }
            State::Master => {
                let higher = priority > self.priority
                    || (priority == self.priority && addr_key(src) > addr_key(self.primary));
                if priority == 0 {
                    self.send_advert(self.priority);
                    self.adver_timer = Some(now + Self::cs(self.advertisement_interval));
                } else if higher {
                    // keepalived `higher_prio_send_advert`: one advert before yielding.
                    if self.higher_prio_send_advert {
                        self.send_advert(self.priority);
                    }
                    self.adver_timer = None;
                    if self.version == Version::V3 {
                        self.master_adver_interval = interval_cs;
                    }
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.down_by_stop = false;
                    self.out.push(Action::RemoveVips);
                    self.transition(State::Backup, Reason::Preempted);
                } else {
                    // The RFC discards it. keepalived answers with an advert at once (its
                    // Adver_Timer restarts) and gratuitous ARPs, each unless configured off.
                    if !self.lower_prio_no_advert {
                        self.send_advert(self.priority);
                        self.adver_timer = Some(now + Self::cs(self.advertisement_interval));
                    }
                    if self.garp_lower_prio_repeat > 0 {
                        self.out.push(Action::AnnounceVips {
                            repeat: self.garp_lower_prio_repeat,
                        });
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }
}

/// What the model needs of a received advert.
#[derive(Debug, Clone, Copy)]
struct Rx {
    src: IpAddr,
    ttl: u8,
    priority: u8,
    interval_cs: u16,
    our_vips: bool,
}

/// Addresses compared as unsigned integers (§6.4.3: "greater than the local primary
/// IPvX address").
fn addr_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[derive(Debug, Clone)]
enum Ev {
    /// A step of virtual time.
    Tick(Tick),
    /// An advert from host `host` (below or above ours); `interval_cs` `None` carries our
    /// own interval; `our_vips` false carries another address list.
    Advert {
        host: u8,
        ttl: u8,
        priority: u8,
        interval_cs: Option<u16>,
        our_vips: bool,
    },
    Shutdown,
    Start,
}

fn setup() -> impl Strategy<Value = Setup> {
    let version = prop_oneof![Just(Version::V2), Just(Version::V3)];
    let priority = prop_oneof![Just(255u8), Just(254), Just(1), Just(100), 1..=255u8];
    (
        version,
        any::<bool>(),
        priority,
        prop_oneof![Just(1u16), 1..=5u16, 1..=255u16],
        prop_oneof![Just(100u16), Just(1), 1..=4095u16],
        any::<[bool; 5]>(),
    )
        .prop_map(|(version, v6, priority, secs, centis, flags)| {
            let v3 = version == Version::V3;
            Setup {
                version,
                v6: v3 && v6,
                priority,
                interval_cs: if v3 { centis } else { secs * 100 },
                preempt: flags[0],
                accept_mode: flags[1],
                lower_prio_no_advert: flags[2],
                garp_lower_prio_repeat: if flags[3] { 5 } else { 0 },
                higher_prio_send_advert: flags[4],
            }
        })
}

fn events(s: &Setup) -> impl Strategy<Value = Vec<Ev>> {
    let p = s.priority;
    let priority = prop_oneof![
        Just(0u8),
        Just(255),
        Just(p),
        Just(p.saturating_sub(1)),
        Just(p.saturating_add(1)),
        any::<u8>(),
    ];
    let host = prop_oneof![1..OUR_HOST, OUR_HOST + 1..=254];
    let interval = if s.version == Version::V3 {
        prop_oneof![Just(None), (1..=4095u16).prop_map(Some)].boxed()
    } else {
        // Another v2 interval is discarded (RFC 3768 §7.1); now and then one.
        prop_oneof![4 => Just(None), 1 => (1..=255u16).prop_map(|s| Some(s * 100))].boxed()
    };
    let ttl = prop_oneof![8 => Just(255u8), 1 => any::<u8>()];
    let our_vips = prop_oneof![8 => Just(true), 1 => Just(false)];
    let advert = (host, ttl, priority, interval, our_vips).prop_map(
        |(host, ttl, priority, interval_cs, our_vips)| Ev::Advert {
            host,
            ttl,
            priority,
            interval_cs,
            our_vips,
        },
    );
    let ev = prop_oneof![
        9 => Tick::strategy(4).prop_map(Ev::Tick),
        6 => advert,
        1 => Just(Ev::Shutdown),
        1 => Just(Ev::Start),
    ];
    proptest::collection::vec(ev, 0..80)
}

#[allow(clippy::disallowed_methods)] // tests need some Instant; the machine never reads the clock
fn t0() -> Instant {
    Instant::now()
}

/// Runs `evs` on the machine and the model side by side, comparing after each.
fn run(s: &Setup, evs: &[Ev]) -> Result<(), TestCaseError> {
    let mut vr = VirtualRouter::new(s.config());
    let mut rfc = Rfc::new(s);
    let t0 = t0();
    let mut now = t0;
    // RFC 5798 §6.1: the owner always accepts packets to the VIPs, others by Accept_Mode.
    prop_assert_eq!(vr.accept_mode(), s.accept_mode || s.priority == 255);
    vr.start(now);
    rfc.startup(now);
    compare(&mut vr, &mut rfc, t0, "start")?;
    for (i, ev) in evs.iter().enumerate() {
        match *ev {
            Ev::Tick(tick) => {
                if tick.apply(&mut now, vr.poll_timeout()) {
                    vr.handle_timeout(now);
                    rfc.timeout(now);
                }
            }
            Ev::Advert {
                host,
                ttl,
                priority,
                interval_cs,
                our_vips,
            } => {
                let rx = Rx {
                    src: addr(s.v6, host),
                    ttl,
                    priority,
                    interval_cs: interval_cs.unwrap_or(s.interval_cs),
                    our_vips,
                };
                let mut addresses = vips(s.v6);
                if !our_vips {
                    addresses[1] = addr(s.v6, 202);
                }
                let adv = AdvertRepr {
                    version: s.version,
                    vrid: Vrid::new(51).unwrap(),
                    priority: Priority(priority),
                    interval: AdvertInterval::from_centis(rx.interval_cs).unwrap(),
                    auth: Auth::None,
                    addresses,
                };
                let dst = if s.v6 {
                    IpAddr::V6(VRRP_MCAST_V6)
                } else {
                    IpAddr::V4(VRRP_MCAST_V4)
                };
                let meta = RxMeta {
                    src: rx.src,
                    dst,
                    ttl,
                };
                vr.handle_advert(now, meta, &adv);
                rfc.advert(now, &rx);
            }
            Ev::Shutdown => {
                vr.shutdown(now);
                rfc.shutdown();
            }
            Ev::Start => {
                vr.start(now);
                rfc.startup(now);
            }
        }
        compare(&mut vr, &mut rfc, t0, &format!("event {i} ({ev:?})"))?;
    }
    Ok(())
}

/// The machine's outputs and timers against the model's (timers as offsets from `t0`).
fn compare(
    vr: &mut VirtualRouter,
    rfc: &mut Rfc,
    t0: Instant,
    step: &str,
) -> Result<(), TestCaseError> {
    let actions: Vec<Action> = std::iter::from_fn(|| vr.poll_action()).collect();
    let expected = std::mem::take(&mut rfc.out);
    prop_assert_eq!(actions, expected, "actions after {}", step);
    prop_assert_eq!(vr.state(), rfc.state, "state after {}", step);
    let since = |t: Option<Instant>| t.map(|t| t - t0);
    prop_assert_eq!(
        since(vr.timer(Timer::Advert)),
        since(rfc.adver_timer),
        "Adver_Timer after {}",
        step
    );
    prop_assert_eq!(
        since(vr.timer(Timer::MasterDown)),
        since(rfc.master_down_timer),
        "Master_Down_Timer after {}",
        step
    );
    for t in [Timer::Garp, Timer::GarpRefresh, Timer::GarpLowerPrio] {
        prop_assert_eq!(vr.timer(t), None, "{:?} after {}", t, step);
    }
    let next = rfc
        .adver_timer
        .into_iter()
        .chain(rfc.master_down_timer)
        .min();
    prop_assert_eq!(
        since(vr.poll_timeout()),
        since(next),
        "poll_timeout after {}",
        step
    );
    if rfc.state == State::Backup {
        prop_assert_eq!(
            vr.master_advert_interval().centis(),
            rfc.master_adver_interval,
            "Master_Adver_Interval after {}",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The machine does what RFC 5798 §6.4 (v3) and RFC 3768 §6.4 (v2) say, event by
    /// event, on the plain RFC feature set: state, armed timer and deadline, adverts sent
    /// (priority, interval), VIPs added and removed, gratuitous ARPs, transitions. Covered:
    /// Startup (the owner, priority 255, becomes Master at once, others Backup with
    /// Master_Adver_Interval = Advertisement_Interval); Master_Down_Interval =
    /// 3 × Master_Adver_Interval + Skew_Time, Skew_Time = (256 − Priority) ×
    /// Master_Adver_Interval / 256 (v3) or (256 − Priority) / 256 s (v2); a priority-0
    /// advert sets the Master_Down_Timer to Skew_Time; Preempt_Mode on and off, the owner
    /// preempting whatever it says (§6.1); the Master's comparison of priority then primary
    /// address; Master_Adver_Interval learned from the Master's adverts (v3; a v2 advert of
    /// another interval is discarded, RFC 3768 §7.1); Shutdown sending priority 0; wake-ups
    /// early, late and exactly at `poll_timeout()`; adverts with a TTL other than 255
    /// discarded (§7.1).
    ///
    /// Where the machine departs from the RFC, as its docs say, the model does too:
    ///
    /// * a v3 advert listing other addresses is discarded (RFC 5798 §7.1 asks only to log
    ///   it; RFC 3768 §7.1 discards it for v2 unless the owner sent it, and so does the
    ///   model);
    /// * the address owner handles adverts for its VRID as §6.4 says, where §7.1 of both
    ///   RFCs has it discard them all: another owner with a higher address makes it Backup,
    ///   and as Master it answers priority 0 and lower priorities (keepalived handles them
    ///   too);
    /// * a Master hearing a lower priority (or an equal one from a lower address), which
    ///   the RFC discards, answers with an advert at once and restarts its Adver_Timer
    ///   (unless `lower_prio_no_advert`) and sends `garp_lower_prio_repeat` gratuitous
    ///   ARPs (unless 0): keepalived's `vrrp_state_master_rx`;
    /// * with `higher_prio_send_advert` a Master sends one advert of its own before it
    ///   yields to a higher priority (the RFC sends nothing);
    /// * Skew_Time is exact to the microsecond (keepalived's timer resolution), not rounded
    ///   to whole centiseconds;
    /// * the Master_Down_Timer's expiry is [`Reason::MasterStopped`] when a priority-0
    ///   advert set it, [`Reason::MasterDown`] otherwise (the RFC gives no reasons).
    ///
    /// The gratuitous ARPs of becoming Master are the RFC's (5, keepalived's
    /// `garp_master_repeat`); adding and removing the VIPs stand for starting and stopping
    /// answering for them (§6.4.2, §6.4.3).
    #[test]
    fn machine_follows_the_rfc_pseudo_code(
        (s, evs) in setup().prop_flat_map(|s| {
            let evs = events(&s);
            (Just(s), evs)
        })
    ) {
        run(&s, &evs)?;
    }
}
