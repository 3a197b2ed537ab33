//! Model-based test of the BFD [`Session`]: random event sequences run on the session and on
//! [`Rfc`], a plain transcription of [RFC 5880] §6.8 for one single-hop session in
//! Asynchronous mode, and after every event the two must agree on the state, the
//! diagnostic, what the session knows of its peer, the intervals in force, the detection
//! time and its deadline, the packets sent (every field) and the window the next periodic
//! packet must fall in.
//!
//! The model implements what the session does (its module docs): no Demand mode of our
//! own, no Echo function, no authentication; a peer's Demand mode is honoured. Where the
//! RFC leaves a choice, or where the session documents that it departs from the RFC, the
//! model does what the session documents; the list is on
//! `session_follows_rfc_5880_section_6_8`.
//!
//! [RFC 5880]: https://www.rfc-editor.org/rfc/rfc5880

// A simulated clock needs one real `Instant` to start from.
#![allow(clippy::disallowed_methods)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use lb_health::bfd::session::ADMIN_DOWN_MAX;
use lb_health::bfd::{BfdConfig, ControlPacket, Counters, Diagnostic, Session, SessionState};
use proptest::prelude::*;

/// bfd.LocalDiscr of the session under test.
const LOCAL_DISCR: u32 = 1;
/// Another session's discriminator: packets carrying it are not ours.
const OTHER_DISCR: u32 = 2;

const US: Duration = Duration::from_micros(1);
const SECOND: Duration = Duration::from_secs(1);

/// Whole microseconds (every duration in this test is one).
fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).expect("durations here fit u64 microseconds")
}

fn wire_us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One generated configuration (always one [`BfdConfig::validate`] accepts).
#[derive(Debug, Clone)]
struct Setup {
    passive: bool,
    min_rx: Duration,
    min_tx: Duration,
    idle_tx: Duration,
    multiplier: u8,
    seed: u64,
}

impl Setup {
    fn config(&self) -> BfdConfig {
        let c = BfdConfig {
            passive: self.passive,
            min_rx: self.min_rx,
            min_tx: self.min_tx,
            idle_tx: self.idle_tx,
            multiplier: self.multiplier,
            ..BfdConfig::new("198.18.0.2".parse().unwrap())
        };
        c.validate().expect("generated configurations are valid");
        c
    }
}

/// The AdminDown schedule the session documents ([`Session::shutdown`]).
#[derive(Debug, Clone, Copy)]
struct AdminDown {
    /// The transmit interval in force at the shutdown.
    interval: Duration,
    /// No AdminDown packet from then on.
    until: Instant,
    /// An input at or after `until` ended the schedule: no timer any more.
    over: bool,
}

/// Whether a periodic packet must, may or must not go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Must,
    May,
    Not,
}

/// One BFD session as RFC 5880 §6.8 describes it, written from the RFC's text (it calls
/// nothing of the session's), plus the choices the session documents.
#[derive(Debug)]
struct Rfc {
    // Settings.
    /// Passive role (§6.1): no packet before bfd.RemoteDiscr is known.
    passive: bool,
    /// bfd.LocalDiscr.
    local_discr: u32,
    /// `min_tx`: bfd.DesiredMinTxInterval while Up.
    min_tx: Duration,
    /// `idle_tx`: bfd.DesiredMinTxInterval while not Up (at least 1 s is used, §6.8.3).
    idle_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    required_min_rx: Duration,
    /// bfd.DetectMult.
    detect_mult: u8,

    // The state variables of §6.8.1.
    session_state: SessionState,
    remote_session_state: SessionState,
    remote_discr: u32,
    local_diag: Diagnostic,
    desired_min_tx: Duration,
    remote_min_rx: Duration,
    remote_demand_mode: bool,

    // The rest of the peer's last packet, for the Detection Time (§6.8.4).
    remote_detect_mult: Option<u8>,
    remote_desired_min_tx: Duration,
    remote_diag: Option<Diagnostic>,
    /// When the last valid packet was received: the Detection Time runs from it.
    last_rx: Option<Instant>,

    // The Poll Sequence (§6.5) and the values §6.8.3 keeps in force until it ends.
    polling: bool,
    /// A packet with P and the current values has gone out: only a Final received after it
    /// answers this Poll Sequence.
    poll_sent: bool,
    /// The Desired Min TX the transmit interval uses (an increase while Up waits).
    tx_in_use: Duration,
    /// The Required Min RX the Detection Time uses (a decrease while Up waits).
    rx_in_use: Duration,

    // Transmission (§6.8.7).
    /// A Final is owed.
    final_owed: bool,
    /// A packet is owed at once: a state change, a start, a change while not Up.
    send_now: bool,
    /// When the last packet other than a Final went out: the periodic timer runs from it.
    last_tx: Option<Instant>,
    admin_down: Option<AdminDown>,

    // Not RFC: what the session reports besides.
    neighbour_admin_down: bool,
    counters: Counters,
}

impl Rfc {
    fn new(s: &Setup) -> Self {
        let not_up_tx = s.idle_tx.max(SECOND);
        Self {
            passive: s.passive,
            local_discr: LOCAL_DISCR,
            min_tx: s.min_tx,
            idle_tx: s.idle_tx,
            required_min_rx: s.min_rx,
            detect_mult: s.multiplier,
            // §6.8.1 initial values.
            session_state: SessionState::Down,
            remote_session_state: SessionState::Down,
            remote_discr: 0,
            local_diag: Diagnostic::NoDiagnostic,
            desired_min_tx: not_up_tx,
            remote_min_rx: US,
            remote_demand_mode: false,
            remote_detect_mult: None,
            remote_desired_min_tx: Duration::ZERO,
            remote_diag: None,
            last_rx: None,
            polling: false,
            poll_sent: false,
            tx_in_use: not_up_tx,
            rx_in_use: s.min_rx,
            final_owed: false,
            // An active session starts sending at once; a passive one waits (§6.1).
            send_now: !s.passive,
            last_tx: None,
            admin_down: None,
            neighbour_admin_down: false,
            counters: Counters::default(),
        }
    }

    /// bfd.DesiredMinTxInterval while not Up: `idle_tx`, at least 1 s (§6.8.3).
    fn not_up_tx(&self) -> Duration {
        self.idle_tx.max(SECOND)
    }

    /// §6.8.4, Asynchronous mode: the remote Detect Mult times the agreed interval, the
    /// greater of our Required Min RX (in force) and the remote Desired Min TX.
    fn detection_time(&self) -> Option<Duration> {
        self.remote_detect_mult
            .map(|m| self.rx_in_use.max(self.remote_desired_min_tx) * u32::from(m))
    }

    /// When a Detection Time without a valid packet runs out (none while AdminDown).
    fn detection_deadline(&self) -> Option<Instant> {
        if self.session_state == SessionState::AdminDown {
            return None;
        }
        Some(self.last_rx? + self.detection_time()?)
    }

    /// §6.8.7: the greater of the Desired Min TX in force and bfd.RemoteMinRxInterval.
    fn tx_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote_min_rx)
    }

    /// §6.8.6: bfd.RemoteDemandMode 1, bfd.SessionState Up and bfd.RemoteSessionState Up.
    fn remote_demand_active(&self) -> bool {
        self.remote_demand_mode
            && self.session_state == SessionState::Up
            && self.remote_session_state == SessionState::Up
    }

    /// §6.8.7: nothing in the passive role before bfd.RemoteDiscr is known, nothing
    /// periodic while bfd.RemoteMinRxInterval is 0 or Demand mode is active on the remote
    /// system without a Poll Sequence; nothing once the AdminDown packets are over.
    fn may_transmit(&self) -> bool {
        let silent_passive = self.passive && self.remote_discr == 0;
        let admin_down_over = self.admin_down.is_some_and(|a| a.over);
        let demanded_silence = self.remote_demand_active() && !self.polling;
        !self.remote_min_rx.is_zero() && !silent_passive && !admin_down_over && !demanded_silence
    }

    fn set_state(&mut self, to: SessionState) {
        if self.session_state != to {
            self.session_state = to;
            // §6.8.7: a packet whose contents differ goes out between periodic ones.
            self.send_now = true;
        }
    }

    /// Down, and bfd.DesiredMinTxInterval back to at least 1 s at once (§6.8.3); the
    /// session documents that this needs no Poll Sequence, and that one under way ends.
    fn go_down(&mut self, diag: Diagnostic) {
        self.local_diag = diag;
        self.set_state(SessionState::Down);
        self.polling = false;
        self.desired_min_tx = self.not_up_tx();
        self.tx_in_use = self.desired_min_tx;
        self.rx_in_use = self.required_min_rx;
    }

    /// Up, with `min_tx` as bfd.DesiredMinTxInterval, changed with a Poll Sequence (§6.8.3).
    fn go_up(&mut self) {
        self.local_diag = Diagnostic::NoDiagnostic;
        self.neighbour_admin_down = false;
        self.set_state(SessionState::Up);
        self.change_desired_min_tx(self.min_tx);
    }

    /// While Up (§6.8.3): an increase is not used before the Poll Sequence ends, a decrease
    /// at once.
    fn change_desired_min_tx(&mut self, to: Duration) {
        if to == self.desired_min_tx {
            return;
        }
        self.desired_min_tx = to;
        self.tx_in_use = self.tx_in_use.min(to);
        self.start_poll();
    }

    /// §6.5: P rides on the periodic packets; only when the remote system's Demand mode has
    /// stopped them does one go out at once.
    fn start_poll(&mut self) {
        self.polling = true;
        self.poll_sent = false;
        if self.remote_demand_active() {
            self.send_now = true;
        }
    }

    /// Time has come to `now`: the AdminDown schedule may be over, and the Detection Time
    /// may have passed (§6.8.4): RemoteDiscr to zero (§6.8.1) and, as the session
    /// documents, the peer's other values back to their initial ones (§6.8.18 for
    /// RemoteMinRxInterval); Init or Up goes Down with diagnostic 1.
    fn elapse(&mut self, now: Instant) {
        if let Some(a) = &mut self.admin_down {
            a.over |= now >= a.until;
        }
        if self.detection_deadline().is_some_and(|d| now >= d) {
            self.remote_discr = 0;
            self.last_rx = None;
            self.remote_session_state = SessionState::Down;
            self.remote_min_rx = US;
            self.remote_detect_mult = None;
            self.remote_demand_mode = false;
            self.remote_desired_min_tx = Duration::ZERO;
            if matches!(self.session_state, SessionState::Init | SessionState::Up) {
                self.go_down(Diagnostic::ControlDetectionTimeExpired);
            }
        }
    }

    /// The discard rules of §6.8.6 that need no session, in its order, as
    /// `ControlPacket::parse` applies them (plus Poll with Final, which §6.5 forbids).
    /// Version and Length are right in every packet `to_bytes` writes.
    fn well_formed(p: &ControlPacket) -> bool {
        if p.detect_mult == 0 || p.multipoint || p.my_discriminator == 0 {
            return false;
        }
        let handshake = matches!(p.state, SessionState::Down | SessionState::AdminDown);
        if p.your_discriminator == 0 && !handshake {
            return false;
        }
        // No authentication is in use (bfd.AuthType 0): the A bit is refused.
        if p.auth_present {
            return false;
        }
        !(p.poll && p.final_)
    }

    /// §6.8.6, a packet that passed [`well_formed`](Self::well_formed), at `now`.
    fn receive(&mut self, now: Instant, p: &ControlPacket) {
        self.elapse(now);
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            self.counters.dropped_discriminator += 1;
            return;
        }
        // The session documents that it discards every packet while AdminDown before
        // taking anything from it (§6.8.6 takes the peer's values first).
        if self.session_state == SessionState::AdminDown {
            self.counters.dropped_admin_down += 1;
            return;
        }
        self.counters.rx += 1;
        self.remote_discr = p.my_discriminator;
        self.remote_session_state = p.state;
        self.remote_demand_mode = p.demand;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx_us));
        self.remote_detect_mult = Some(p.detect_mult);
        self.remote_desired_min_tx = Duration::from_micros(u64::from(p.desired_min_tx_us));
        self.remote_diag = Some(p.diag);
        if self.polling && self.poll_sent && p.final_ {
            // The Poll Sequence ends: what waited for it is used now (§6.8.3).
            self.polling = false;
            self.tx_in_use = self.desired_min_tx;
            self.rx_in_use = self.required_min_rx;
        }
        match (self.session_state, p.state) {
            (SessionState::Down, SessionState::AdminDown) => {}
            (_, SessionState::AdminDown) => {
                self.go_down(Diagnostic::NeighborSignaledSessionDown);
                self.neighbour_admin_down = true;
            }
            (SessionState::Down, SessionState::Down) => {
                // The session clears the diagnostic on the way up (documented choice).
                self.local_diag = Diagnostic::NoDiagnostic;
                self.set_state(SessionState::Init);
            }
            (SessionState::Down, SessionState::Init)
            | (SessionState::Init, SessionState::Init | SessionState::Up) => self.go_up(),
            (SessionState::Up, SessionState::Down) => {
                self.go_down(Diagnostic::NeighborSignaledSessionDown);
            }
            _ => {}
        }
        if p.poll {
            self.final_owed = true;
        }
        self.last_rx = Some(now);
    }

    fn timeout(&mut self, now: Instant) {
        self.elapse(now);
    }

    /// §6.8.16, and the schedule [`Session::shutdown`] documents.
    fn shutdown(&mut self, now: Instant) {
        self.elapse(now);
        if self.session_state == SessionState::AdminDown {
            return;
        }
        let interval = self.tx_interval();
        let silent_passive = self.passive && self.remote_discr == 0;
        let will_send = !self.remote_min_rx.is_zero() && !silent_passive;
        let peer_detection = if will_send {
            self.desired_min_tx.max(self.remote_min_rx) * u32::from(self.detect_mult)
        } else {
            Duration::ZERO
        };
        self.admin_down = Some(AdminDown {
            interval,
            until: now + peer_detection.min(ADMIN_DOWN_MAX),
            over: false,
        });
        self.local_diag = Diagnostic::AdministrativelyDown;
        self.set_state(SessionState::AdminDown);
        self.polling = false;
        self.final_owed = false;
        self.desired_min_tx = self.not_up_tx();
        self.tx_in_use = self.desired_min_tx;
        self.rx_in_use = self.required_min_rx;
    }

    fn set_min_tx(&mut self, now: Instant, min_tx: Duration) {
        self.elapse(now);
        self.min_tx = min_tx;
        if self.session_state == SessionState::Up {
            self.change_desired_min_tx(min_tx);
        }
    }

    /// §6.8.3: while Up a Poll Sequence, and a decrease is not used for the Detection Time
    /// before it ends; while Down or Init (documented) used and sent at once.
    fn set_min_rx(&mut self, now: Instant, min_rx: Duration) {
        self.elapse(now);
        if min_rx == self.required_min_rx {
            return;
        }
        self.required_min_rx = min_rx;
        match self.session_state {
            SessionState::AdminDown => self.rx_in_use = min_rx,
            SessionState::Up => {
                self.rx_in_use = self.rx_in_use.max(min_rx);
                self.start_poll();
            }
            SessionState::Down | SessionState::Init => {
                self.rx_in_use = min_rx;
                self.send_now = true;
            }
        }
    }

    fn set_idle_tx(&mut self, now: Instant, idle_tx: Duration) {
        self.elapse(now);
        if idle_tx == self.idle_tx {
            return;
        }
        self.idle_tx = idle_tx;
        if matches!(self.session_state, SessionState::Down | SessionState::Init) {
            self.desired_min_tx = self.not_up_tx();
            self.tx_in_use = self.desired_min_tx;
            self.send_now = true;
        }
    }

    fn set_multiplier(&mut self, now: Instant, multiplier: u8) {
        self.elapse(now);
        if multiplier == self.detect_mult {
            return;
        }
        self.detect_mult = multiplier;
        match self.session_state {
            SessionState::AdminDown => {}
            SessionState::Up => self.start_poll(),
            SessionState::Down | SessionState::Init => self.send_now = true,
        }
    }

    /// A packet with the contents §6.8.7 lists.
    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.session_state,
            poll: self.polling && !final_,
            final_,
            control_plane_independent: false,
            auth_present: false,
            demand: false,
            multipoint: false,
            detect_mult: self.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: wire_us(self.desired_min_tx),
            required_min_rx_us: wire_us(self.required_min_rx),
            required_min_echo_rx_us: 0,
        }
    }

    /// Where the next periodic packet must fall (§6.8.7): `interval` after the last packet,
    /// reduced by 0–25 %, or by 10–25 % when bfd.DetectMult is 1, in whole microseconds
    /// (never under 75 %, never over 90 %; under 4 µs no whole number lies between the two
    /// and the session documents that it keeps the interval).
    fn window(&self, interval: Duration) -> (Instant, Instant) {
        let last = self.last_tx.expect("a window only after a packet");
        let i = us(interval);
        let lo = i - i / 4;
        let hi = if self.detect_mult == 1 {
            (i * 9 / 10).max(lo)
        } else {
            i
        };
        (
            last + Duration::from_micros(lo),
            last + Duration::from_micros(hi),
        )
    }

    fn need(window: (Instant, Instant), now: Instant) -> Need {
        if now >= window.1 {
            Need::Must
        } else if now >= window.0 {
            Need::May
        } else {
            Need::Not
        }
    }

    /// Whether a packet other than a Final is due at `now`.
    fn periodic(&mut self, now: Instant) -> Need {
        if let Some(a) = self.admin_down {
            if now >= a.until || !self.may_transmit() {
                return Need::Not;
            }
            if self.send_now || self.last_tx.is_none() {
                return Need::Must;
            }
            return Self::need(self.window(a.interval), now);
        }
        if !self.may_transmit() {
            // Nothing but a Final. A packet owed for a change stays owed: its contents
            // differ from the last packet sent, so it goes out once transmission resumes
            // (§6.8.7).
            return Need::Not;
        }
        if self.send_now || self.last_tx.is_none() {
            return Need::Must;
        }
        Self::need(self.window(self.tx_interval()), now)
    }

    /// What goes out at `now`: the Final owed, then the packet due. A periodic packet the
    /// window allows but does not require goes out when the session sent one (its jitter).
    fn transmit(&mut self, now: Instant, sent: &[ControlPacket]) -> Vec<ControlPacket> {
        let mut out = Vec::new();
        if self.final_owed {
            // §6.8.7: "as soon as practicable, without respect to the transmission timer
            // or any other transmission limitations".
            self.final_owed = false;
            out.push(self.packet(true));
        }
        let send = match self.periodic(now) {
            Need::Must => true,
            Need::May => sent.len() > out.len(),
            Need::Not => false,
        };
        if send {
            out.push(self.packet(false));
            self.last_tx = Some(now);
            self.send_now = false;
            if self.polling {
                self.poll_sent = true;
            }
        }
        self.counters.tx += out.len() as u64;
        out
    }

    /// Whether `timeout` is what the session may report as its next wake-up, after it
    /// handled `now` and sent what it had: the detection deadline, the next periodic packet
    /// (somewhere in its window, after `now`) or the end of the AdminDown schedule,
    /// whichever comes first.
    fn timeout_fits(&self, now: Instant, timeout: Option<Instant>) -> bool {
        let tx_window =
            self.last_tx
                .filter(|_| self.may_transmit())
                .map(|_| match self.admin_down {
                    Some(a) => self.window(a.interval),
                    None => self.window(self.tx_interval()),
                });
        let in_window = |t: Instant, (lo, hi): (Instant, Instant)| t > now && lo <= t && t <= hi;
        if let Some(a) = self.admin_down {
            return match (a.over, tx_window, timeout) {
                (true, _, t) => t.is_none(),
                (false, None, t) => t == Some(a.until),
                (false, Some(w), Some(t)) => {
                    (t == a.until && w.1 >= a.until) || (t < a.until && in_window(t, w))
                }
                (false, Some(_), None) => false,
            };
        }
        match (tx_window, self.detection_deadline(), timeout) {
            (None, None, t) => t.is_none(),
            (None, Some(d), t) => t == Some(d),
            (Some(w), None, Some(t)) => in_window(t, w),
            (Some(w), Some(d), Some(t)) => (t == d && d <= w.1) || (t <= d && in_window(t, w)),
            (Some(_), _, None) => false,
        }
    }
}

#[derive(Clone)]
enum Ev {
    /// A packet from the peer (through `ControlPacket::parse`, as the driver does).
    Packet(ControlPacket),
    /// Time passes; nobody tells the session (the next input comes late).
    Advance(Duration),
    /// A wake-up now: early (spurious), or late after an `Advance`.
    Wake,
    /// A wake-up exactly at `poll_timeout()` (or now, if that is past).
    AtDeadline,
    /// A wake-up 1 µs before `poll_timeout()`, if that is not past.
    JustBefore,
    Shutdown,
    SetMinTx(Duration),
    SetMinRx(Duration),
    SetIdleTx(Duration),
    SetMultiplier(u8),
}

impl std::fmt::Debug for Ev {
    /// Packets on one line: a failing sequence stays readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Packet(p) => {
                let flags: String = [
                    (p.poll, 'P'),
                    (p.final_, 'F'),
                    (p.demand, 'D'),
                    (p.multipoint, 'M'),
                    (p.auth_present, 'A'),
                ]
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, c)| *c)
                .collect();
                write!(
                    f,
                    "Packet({} {flags} diag {} mult {} my {} your {} tx {} rx {})",
                    p.state,
                    u8::from(p.diag),
                    p.detect_mult,
                    p.my_discriminator,
                    p.your_discriminator,
                    p.desired_min_tx_us,
                    p.required_min_rx_us,
                )
            }
            Self::Advance(d) => write!(f, "Advance({d:?})"),
            Self::Wake => f.write_str("Wake"),
            Self::AtDeadline => f.write_str("AtDeadline"),
            Self::JustBefore => f.write_str("JustBefore"),
            Self::Shutdown => f.write_str("Shutdown"),
            Self::SetMinTx(d) => write!(f, "SetMinTx({d:?})"),
            Self::SetMinRx(d) => write!(f, "SetMinRx({d:?})"),
            Self::SetIdleTx(d) => write!(f, "SetIdleTx({d:?})"),
            Self::SetMultiplier(m) => write!(f, "SetMultiplier({m})"),
        }
    }
}

/// An interval in microseconds: the defaults, 1 µs, and anything up to 2 s.
fn interval_us() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(10_000u32),
        2 => Just(1_000_000),
        1 => Just(1),
        4 => 1u32..2_000_000,
        1 => 1u32..100_000,
    ]
}

fn interval() -> impl Strategy<Value = Duration> {
    interval_us().prop_map(|u| Duration::from_micros(u64::from(u)))
}

fn multiplier() -> impl Strategy<Value = u8> {
    prop_oneof![Just(1u8), Just(3), Just(5), 1..=255u8]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        interval(),
        interval(),
        prop_oneof![
            Just(SECOND),
            (1_000_000u64..3_000_000).prop_map(Duration::from_micros)
        ],
        multiplier(),
        any::<u64>(),
    )
        .prop_map(
            |(passive, min_rx, min_tx, idle_tx, multiplier, seed)| Setup {
                passive,
                min_rx,
                min_tx,
                idle_tx,
                multiplier,
                seed,
            },
        )
}

/// A packet from the peer: any state and diagnostic, P and F (now and then both), D now
/// and then, Detect Mult (0 now and then), My Discriminator (0, or one of two: the peer
/// may restart), Your Discriminator (ours, zero or another session's), the intervals
/// (Required Min RX 0 and 1 µs included), and rarely M or A.
fn packet() -> impl Strategy<Value = ControlPacket> {
    (
        (
            0u8..4,
            prop_oneof![3 => Just(0u8), 1 => 0u8..32],
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.2),
        ),
        prop_oneof![1 => Just(0u8), 2 => Just(1u8), 6 => 2u8..6, 1 => any::<u8>()],
        (
            prop_oneof![1 => Just(0u32), 8 => Just(77u32), 2 => Just(78u32)],
            prop_oneof![2 => Just(0u32), 8 => Just(LOCAL_DISCR), 1 => Just(OTHER_DISCR)],
        ),
        (
            prop_oneof![1 => Just(0u32), 9 => interval_us()],
            prop_oneof![1 => Just(0u32), 9 => interval_us()],
        ),
        (prop::bool::weighted(0.02), prop::bool::weighted(0.02)),
    )
        .prop_map(
            |((sta, diag, poll, final_, demand), mult, (my, your), (tx, rx), (m, a))| {
                ControlPacket {
                    diag: Diagnostic::from(diag),
                    state: SessionState::from_bits(sta),
                    poll,
                    final_,
                    control_plane_independent: false,
                    auth_present: a,
                    demand,
                    multipoint: m,
                    detect_mult: mult,
                    my_discriminator: my,
                    your_discriminator: your,
                    desired_min_tx_us: tx,
                    required_min_rx_us: rx,
                    required_min_echo_rx_us: 0,
                }
            },
        )
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    let ev = prop_oneof![
        36 => packet().prop_map(Ev::Packet),
        6 => (0u64..20_000).prop_map(|u| Ev::Advance(Duration::from_micros(u))),
        4 => (0u64..3_000_000).prop_map(|u| Ev::Advance(Duration::from_micros(u))),
        3 => Just(Ev::Wake),
        15 => Just(Ev::AtDeadline),
        3 => Just(Ev::JustBefore),
        1 => Just(Ev::Shutdown),
        3 => interval().prop_map(Ev::SetMinTx),
        3 => interval().prop_map(Ev::SetMinRx),
        // Under 1 s now and then: the session uses 1 s then (§6.8.3).
        2 => prop_oneof![3 => 1_000_000u64..3_000_000, 1 => 1u64..1_000_000]
            .prop_map(|u| Ev::SetIdleTx(Duration::from_micros(u))),
        3 => multiplier().prop_map(Ev::SetMultiplier),
    ];
    proptest::collection::vec(ev, 0..100)
}

/// Everything `s` sends at `now` (at most 10 packets: more is a session that never stops
/// sending, which fails the comparison rather than hanging it).
fn drain(s: &mut Session, now: Instant) -> Vec<ControlPacket> {
    std::iter::from_fn(|| s.poll_transmit(now))
        .take(10)
        .collect()
}

/// Runs `evs` on the session and the model side by side, comparing after each input.
fn run(setup: &Setup, evs: &[Ev]) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Session::new(
        setup.config(),
        NonZeroU32::new(LOCAL_DISCR).unwrap(),
        setup.seed,
        now,
    );
    let mut rfc = Rfc::new(setup);
    compare(&mut s, &mut rfc, now, t0, "start")?;
    for (i, ev) in evs.iter().enumerate() {
        match *ev {
            Ev::Packet(p) => {
                let parsed = ControlPacket::parse(&p.to_bytes());
                prop_assert_eq!(
                    parsed.is_ok(),
                    Rfc::well_formed(&p),
                    "parse of {:?}: {:?}",
                    p,
                    parsed
                );
                let Ok(p) = parsed else { continue };
                s.handle_packet(now, &p);
                rfc.receive(now, &p);
            }
            Ev::Advance(d) => {
                now += d;
                continue;
            }
            Ev::Wake => {
                s.handle_timeout(now);
                rfc.timeout(now);
            }
            Ev::AtDeadline => {
                let Some(t) = s.poll_timeout() else { continue };
                now = now.max(t);
                s.handle_timeout(now);
                rfc.timeout(now);
            }
            Ev::JustBefore => {
                let before = s.poll_timeout().map(|t| t - US);
                let Some(t) = before.filter(|t| *t >= now) else {
                    continue;
                };
                now = t;
                s.handle_timeout(now);
                rfc.timeout(now);
            }
            Ev::Shutdown => {
                s.shutdown(now);
                rfc.shutdown(now);
            }
            Ev::SetMinTx(d) => {
                s.set_min_tx(now, d);
                rfc.set_min_tx(now, d);
            }
            Ev::SetMinRx(d) => {
                s.set_min_rx(now, d);
                rfc.set_min_rx(now, d);
            }
            Ev::SetIdleTx(d) => {
                s.set_idle_tx(now, d);
                rfc.set_idle_tx(now, d);
            }
            Ev::SetMultiplier(m) => {
                s.set_multiplier(now, m);
                rfc.set_multiplier(now, m);
            }
        }
        compare(&mut s, &mut rfc, now, t0, &format!("event {i} ({ev:?})"))?;
    }
    Ok(())
}

/// The session's outputs and state against the model's, at `now` (times as offsets from
/// `t0` in messages).
fn compare(
    s: &mut Session,
    rfc: &mut Rfc,
    now: Instant,
    t0: Instant,
    step: &str,
) -> Result<(), TestCaseError> {
    let at = now - t0;
    let sent = drain(s, now);
    let expected = rfc.transmit(now, &sent);
    prop_assert_eq!(&sent, &expected, "sent at {:?} after {}", at, step);
    let st = s.status();
    prop_assert_eq!(st.state, rfc.session_state, "state after {}", step);
    prop_assert_eq!(st.local_diag, rfc.local_diag, "diagnostic after {}", step);
    prop_assert_eq!(
        st.remote_discriminator,
        rfc.remote_discr,
        "RemoteDiscr after {}",
        step
    );
    prop_assert_eq!(
        st.remote_state,
        rfc.remote_session_state,
        "RemoteSessionState after {}",
        step
    );
    prop_assert_eq!(
        st.remote_diag,
        rfc.remote_diag,
        "remote diag after {}",
        step
    );
    prop_assert_eq!(
        st.neighbour_admin_down,
        rfc.neighbour_admin_down,
        "neighbour_admin_down after {}",
        step
    );
    prop_assert_eq!(
        s.desired_min_tx(),
        rfc.desired_min_tx,
        "DesiredMinTxInterval after {}",
        step
    );
    prop_assert_eq!(
        s.tx_interval(),
        rfc.tx_interval(),
        "transmit interval after {}",
        step
    );
    prop_assert_eq!(
        s.detection_time(),
        rfc.detection_time(),
        "Detection Time after {}",
        step
    );
    prop_assert_eq!(s.poll_active(), rfc.polling, "Poll Sequence after {}", step);
    prop_assert_eq!(
        s.may_transmit(),
        rfc.may_transmit(),
        "may_transmit after {}",
        step
    );
    prop_assert_eq!(
        s.remote_demand_active(),
        rfc.remote_demand_active(),
        "remote Demand mode after {}",
        step
    );
    prop_assert_eq!(s.counters(), rfc.counters, "counters after {}", step);
    let c = s.config();
    prop_assert_eq!(
        (c.min_tx, c.min_rx, c.idle_tx, c.multiplier),
        (
            rfc.min_tx,
            rfc.required_min_rx,
            rfc.idle_tx,
            rfc.detect_mult
        ),
        "settings after {}",
        step
    );
    prop_assert_eq!(
        s.admin_down_done(now),
        rfc.admin_down.is_some_and(|a| now >= a.until),
        "admin_down_done after {}",
        step
    );
    let timeout = s.poll_timeout();
    prop_assert!(
        rfc.timeout_fits(now, timeout),
        "poll_timeout {:?} at {:?} after {}: detection deadline {:?}, last packet {:?}, \
         interval {:?}, Detect Mult {}, AdminDown {:?}, may transmit {}",
        timeout.map(|t| t - t0),
        at,
        step,
        rfc.detection_deadline().map(|t| t - t0),
        rfc.last_tx.map(|t| t - t0),
        rfc.tx_interval(),
        rfc.detect_mult,
        rfc.admin_down.map(|a| (a.interval, a.until - t0, a.over)),
        rfc.may_transmit(),
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The session does what RFC 5880 §6.8 says, event by event: state, diagnostic,
    /// bfd.RemoteDiscr and the peer's state, Desired Min TX, the transmit interval, the
    /// Detection Time and its deadline, the Poll Sequence, every field of every packet
    /// sent, and the window of the next periodic packet. Covered: the discard rules of
    /// §6.8.6 (through `ControlPacket::parse`: Detect Mult 0, M, A, My Discriminator 0,
    /// Your Discriminator 0 outside Down and AdminDown, P with F; then Your Discriminator
    /// not ours, and AdminDown); the state table Down/Init/Up against a received
    /// AdminDown/Down/Init/Up; a Final ending our Poll Sequence and what waited for it
    /// (§6.8.3: a higher Desired Min TX, a lower Required Min RX); a Poll answered with a
    /// Final at once, whatever may be sent otherwise (§6.8.7); the Detection Time as the
    /// remote Detect Mult times the greater of our Required Min RX in force and the remote
    /// Desired Min TX (§6.8.4), its expiry (diagnostic 1 from Init or Up, bfd.RemoteDiscr
    /// to 0 in any state, §6.8.1), also when the next input comes late; Desired Min TX at least 1 s while not Up (§6.8.3); the
    /// transmit interval max(Desired Min TX, bfd.RemoteMinRxInterval) with 0–25 % jitter
    /// (10–25 % with Detect Mult 1) counted from the last packet, recalculated on every
    /// change (§6.8.7), at once when a lower remote Required Min RX makes it overdue
    /// (§6.8.3); no periodic packet while bfd.RemoteMinRxInterval is 0, in the passive role
    /// before the peer is known, or while the peer's Demand mode is active without a Poll
    /// Sequence (§6.8.7); AdminDown (§6.8.16) with the packets it documents; the commands
    /// `set_min_tx`, `set_min_rx`, `set_idle_tx`, `set_multiplier` in every state.
    ///
    /// Where the RFC leaves a choice, or the session documents a departure, the model does
    /// what the session documents:
    ///
    /// * a packet goes out at once on a state change and on a timer change while Down or
    ///   Init (§6.8.7 SHOULD); such a change, and the switch to `idle_tx` on leaving Up,
    ///   without a Poll Sequence (§6.8.3 asks for one on any interval change); other
    ///   changes of the contents wait for the periodic packet;
    /// * while Up, a timer change (Detect Mult included) starts a Poll Sequence on the
    ///   periodic packets, with no extra packet unless the peer's Demand mode stopped them
    ///   (§6.5); leaving Up ends it;
    /// * only a Final received after a packet with P and the current values went out ends
    ///   the Poll Sequence (§6.8.3 leaves several changes in one sequence open); a second
    ///   change is measured from the values in force;
    /// * while the peer's Required Min RX is 0 (or in the passive role before it is
    ///   known) not even a state change goes out; it does once transmission resumes;
    /// * the diagnostic is cleared on Down → Init and on the way Up;
    /// * a Detection Time without packets also resets the peer's Required Min RX, Desired
    ///   Min TX, Detect Mult, state and Demand bit (§6.8.18 only asks for the first);
    /// * AdminDown: packets at the interval in force before, for the peer's Detection
    ///   Time capped at `ADMIN_DOWN_MAX`, then silence; packets received while AdminDown
    ///   are discarded before anything is taken from them (§6.8.6 takes the peer's values
    ///   first); a timer change while AdminDown starts nothing, and the AdminDown packets
    ///   carry the new Required Min RX and Detect Mult but keep the Desired Min TX of the
    ///   shutdown;
    /// * intervals under 4 µs, where no whole microsecond lies in 75–90 %, are not
    ///   jittered with Detect Mult 1.
    ///
    /// The jitter is random (seeded): the model checks that each periodic packet falls in
    /// its window and follows the session's choice inside it.
    #[test]
    fn session_follows_rfc_5880_section_6_8(setup in setup(), evs in events()) {
        run(&setup, &evs)?;
    }
}
