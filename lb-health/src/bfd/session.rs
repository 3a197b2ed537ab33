//! The BFD state machine of one session ([RFC 5880 §6.8]), asynchronous mode, sans-IO.
//!
//! A [`Session`] never reads the clock and never touches a socket: every input carries
//! `now: Instant`, and every packet to send comes out of [`Session::poll_transmit`]. Its
//! methods follow quinn's taxonomy:
//!
//! * **A. Getters** (`&self`): [`state`](Session::state), [`status`](Session::status),
//!   [`detection_time`](Session::detection_time), [`tx_interval`](Session::tx_interval),
//!   [`counters`](Session::counters), ...
//! * **B. Handlers** for things that happened: [`handle_packet`](Session::handle_packet)
//!   and [`handle_timeout`](Session::handle_timeout) (idempotent: a spurious wake-up does
//!   nothing).
//! * **C. Commands** from the operator: [`shutdown`](Session::shutdown) (AdminDown,
//!   §6.8.16), the timer settings [`set_min_tx`](Session::set_min_tx),
//!   [`set_min_rx`](Session::set_min_rx), [`set_idle_tx`](Session::set_idle_tx) and
//!   [`set_multiplier`](Session::set_multiplier) (§6.8.3), and
//!   [`record_drop`](Session::record_drop).
//! * **D. Outputs**, `#[must_use]`: [`poll_transmit`](Session::poll_transmit) and
//!   [`poll_timeout`](Session::poll_timeout).
//!
//! # What it implements
//!
//! * The three-way handshake Down → Init → Up and the way down (§6.2, §6.8.6): a received
//!   AdminDown, or a received Down while Up, takes the session Down with diagnostic 3.
//! * The detection time (§6.8.4): the remote Detect Mult times the greater of our
//!   `min_rx` (the previous one after a decrease while Up, until the Poll Sequence ends,
//!   §6.8.3) and the remote Desired Min TX. It runs in every state but AdminDown, and a
//!   change of either moves its deadline at once. When it passes without a valid packet,
//!   bfd.RemoteDiscr is reset to 0 (§6.8.1), and the peer's other values to their initial
//!   ones (§6.8.18); an Init or Up session goes Down with diagnostic 1.
//! * Desired Min TX of `idle_tx` (at least 1 s) while not Up, `min_tx` while Up (§6.8.3),
//!   changed with a Poll Sequence (§6.5); an increase while Up only takes effect when the
//!   Final arrives. A Poll is answered with a Final at once (§6.8.7). A Final ends our Poll
//!   Sequence only once a packet with P and the current values has gone out: one that
//!   comes earlier answers an older Poll (§6.8.3 leaves several changes in one sequence
//!   open).
//! * Transmission every max(Desired Min TX, remote Required Min RX), reduced by a random
//!   0–25 % (10–25 % when our Detect Mult is 1; in whole microseconds, never under 75 %
//!   nor, with Detect Mult 1, over 90 %) per packet, counted from the last packet
//!   sent other than a Final (§6.8.7). When the interval or our Detect Mult changes, the
//!   next packet is drawn again from the last one (§6.8.7 has the interval recalculated):
//!   a longer interval delays it, a shorter one brings it forward, at once if that much
//!   time has passed (§6.8.3: no waiting longer than the new interval after a lower remote
//!   Required Min RX).
//! * Nothing but the Final that answers a Poll while the remote Required Min RX is 0;
//!   nothing in the passive role until bfd.RemoteDiscr is known (§6.1, §6.8.7). When
//!   transmission resumes, a packet owed for a change goes out at once; otherwise the
//!   periodic timer runs on from the last packet.
//! * One packet at once on every state change, and on a change of our timer settings while
//!   Down or Init, besides the periodic ones (§6.8.7 asks for one when the contents
//!   change), so the handshake does not wait for `idle_tx`. Such a change while not Up, and
//!   the switch to `idle_tx` on leaving Up, go out in that packet without a Poll Sequence
//!   (§6.8.3 asks for one on any change of the intervals; only while Up does anything wait
//!   for its Final). While Up a change starts a Poll Sequence whose P rides on the periodic
//!   packets: "additional packets MUST NOT be sent" (§6.5), as keepalived only sets the
//!   flag. Other changes of the contents (bfd.RemoteDiscr learnt or forgotten without a
//!   state change) wait for the next periodic packet.
//! * Every input (a packet, a command) first does what
//!   [`handle_timeout`](Session::handle_timeout) would at its `now`: a packet handled after
//!   the detection time ran out comes too late, and is handled in Down, whether or not the
//!   driver called `handle_timeout` first (a datagram and the timer may wake it at once).
//! * AdminDown (§6.8.16): one packet at once, then one per transmit interval in force
//!   before [`shutdown`](Session::shutdown) for the peer's detection time, at most
//!   [`ADMIN_DOWN_MAX`]; then silence ([`admin_down_done`](Session::admin_down_done)).
//!   This departs from RFC 5880 three ways: the packets keep the rate in force before,
//!   although they advertise a Desired Min TX of at least 1 s (§6.8.7 would send them no
//!   faster than that), so a lost one is made up for at the rate the peer expects; they
//!   stop after [`ADMIN_DOWN_MAX`] even when the peer's detection time is longer (§6.8.16:
//!   "SHOULD be transmitted for at least a Detection Time"); and every packet received
//!   while AdminDown is discarded before anything is taken from it (§6.8.6 first takes the
//!   peer's discriminator, state and Required Min RX), so the schedule and the Your
//!   Discriminator of those packets stay as they were at the shutdown.
//!
//! * A peer's Demand mode (§6.8.6, §6.8.7): while it sets D and both sides are Up, no
//!   periodic packets, only Poll Sequences and Finals (keepalived too stops its sender).
//!
//! Not implemented, as in keepalived: Demand mode of our own (we never set D), the Echo
//! function, authentication (the codec refuses the A bit).
//!
//! Randomness comes in as a seed ([`Session::new`]), so runs are reproducible.
//!
//! # Examples
//!
//! Two sessions wired back to back on a simulated clock:
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::{Duration, Instant};
//! use lb_health::bfd::{BfdConfig, Session, SessionState};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now();
//! let cfg = BfdConfig::new("198.18.0.2".parse().unwrap());
//! let mut a = Session::new(cfg.clone(), NonZeroU32::new(1).unwrap(), 7, t0);
//! let mut b = Session::new(cfg, NonZeroU32::new(2).unwrap(), 8, t0);
//! let mut now = t0;
//! for _ in 0..10 {
//!     while let Some(p) = a.poll_transmit(now) { b.handle_packet(now, &p); }
//!     while let Some(p) = b.poll_transmit(now) { a.handle_packet(now, &p); }
//!     now += Duration::from_millis(5);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! assert_eq!((a.state(), b.state()), (SessionState::Up, SessionState::Up));
//! ```
//!
//! [RFC 5880 §6.8]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::BfdConfig;
use super::packet::{ControlPacket, Diagnostic, SessionState};

/// bfd.RemoteMinRxInterval's initial value, 1 µs ([RFC 5880 §6.8.1]).
///
/// [RFC 5880 §6.8.1]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.1
const INITIAL_REMOTE_MIN_RX: Duration = Duration::from_micros(1);

/// The longest AdminDown packets keep going out after [`Session::shutdown`], whatever the
/// peer's detection time.
pub const ADMIN_DOWN_MAX: Duration = Duration::from_secs(2);

/// The AdminDown transmissions after [`Session::shutdown`] ([RFC 5880 §6.8.16]).
///
/// [RFC 5880 §6.8.16]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.16
#[derive(Debug, Clone, Copy)]
struct AdminDownTx {
    /// The transmit interval in force when the session was shut down.
    interval: Duration,
    /// No AdminDown packet goes out from then on.
    until: Instant,
    /// [`Session::handle_timeout`] saw `until` pass: no timer any more.
    over: bool,
}

/// Why a packet did not reach the state machine. Counted per reason in [`Counters`]; a bad
/// peer packet is never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Discard {
    /// Failed [`ControlPacket::parse`] (counted by the driver when the source is known).
    Malformed,
    /// A TTL / hop limit below what [`BfdConfig::accepts_ttl`] allows.
    BadTtl,
    /// Your Discriminator is non-zero and not ours.
    Discriminator,
    /// We are AdminDown: every packet is discarded (§6.8.6), before anything is taken from
    /// it (see the [module docs](self)).
    AdminDown,
}

/// Packet counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets accepted by the state machine.
    pub rx: u64,
    /// Packets returned by [`Session::poll_transmit`].
    pub tx: u64,
    /// Malformed packets from this session's neighbor.
    pub dropped_malformed: u64,
    /// Packets with a TTL / hop limit that failed the check.
    pub dropped_ttl: u64,
    /// Packets with another session's discriminator.
    pub dropped_discriminator: u64,
    /// Packets received while AdminDown.
    pub dropped_admin_down: u64,
}

impl Counters {
    /// Every dropped packet, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_ttl
            + self.dropped_discriminator
            + self.dropped_admin_down
    }
}

/// A snapshot of a session for subscribers (lb-node's `track_bfd`, `BFD_CHECK`, lbctl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    /// bfd.SessionState.
    pub state: SessionState,
    /// bfd.LocalDiag: why we last left Up (diag 1 after a detection timeout, 3 when the
    /// neighbor signalled Down, 7 after [`Session::shutdown`]), cleared to 0 when the
    /// session starts up again (Down → Init or Up), as keepalived does (RFC 5880 leaves it
    /// open).
    pub local_diag: Diagnostic,
    /// bfd.RemoteSessionState (Down until the peer is heard).
    pub remote_state: SessionState,
    /// The last Diag received from the peer, if any.
    pub remote_diag: Option<Diagnostic>,
    /// bfd.LocalDiscr.
    pub local_discriminator: u32,
    /// bfd.RemoteDiscr (0: unknown).
    pub remote_discriminator: u32,
    /// When `state` was entered.
    pub since: Instant,
    /// The session went Down because its neighbour signalled AdminDown (it stopped its BFD
    /// on purpose: no path failure, RFC 5882 §3.2) and has not been Up since; a detection
    /// timeout while it stays quiet, or its coming back through Init, does not clear it.
    pub neighbour_admin_down: bool,
    /// The current detection time, once the peer has been heard (§6.8.4).
    pub detection_time: Option<Duration>,
    /// The current transmit interval before jitter (§6.8.7).
    pub tx_interval: Duration,
    /// Packet counters.
    pub counters: Counters,
}

/// One BFD session ([RFC 5880 §6.8]); see the [module docs](self).
///
/// [RFC 5880 §6.8]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8
#[derive(Debug)]
pub struct Session {
    config: BfdConfig,
    state: SessionState,
    since: Instant,
    local_discr: u32,
    local_diag: Diagnostic,
    remote_state: SessionState,
    remote_discr: u32,
    remote_diag: Option<Diagnostic>,
    /// bfd.RemoteMinRxInterval.
    remote_min_rx: Duration,
    /// The last Desired Min TX received.
    remote_desired_min_tx: Duration,
    /// The last Detect Mult received (0: not heard yet).
    remote_detect_mult: u8,
    /// bfd.RemoteDemandMode: the D bit of the last packet received.
    remote_demand: bool,
    /// bfd.DesiredMinTxInterval as advertised in our packets.
    desired_min_tx: Duration,
    /// The Desired Min TX our transmit timer uses: lags `desired_min_tx` after an increase
    /// while Up until the Poll Sequence ends (§6.8.3).
    effective_min_tx: Duration,
    /// bfd.RequiredMinRxInterval our detection time uses: lags `config.min_rx` after a
    /// decrease while Up until the Poll Sequence ends (§6.8.3).
    effective_min_rx: Duration,
    /// A Poll Sequence is under way: our periodic packets carry P.
    poll: bool,
    /// A packet with P and the current values has gone out: only a Final received after
    /// it ends the Poll Sequence (an earlier one may answer an older Poll).
    poll_sent: bool,
    /// A Final is owed: the next packet goes out at once with F.
    final_pending: bool,
    /// Send a packet at once (a state change, a start).
    tx_now: bool,
    /// When the next periodic packet is due (`None` before the first packet, and after
    /// [`Session::shutdown`] until the first AdminDown packet).
    next_tx: Option<Instant>,
    /// When the last packet other than a Final went out: the periodic timer runs from it.
    last_tx: Option<Instant>,
    /// When the detection time runs out (`None` until a packet is received).
    detect_deadline: Option<Instant>,
    /// When the last valid packet was received (restarts the detection time).
    last_rx: Option<Instant>,
    /// The AdminDown schedule, once shut down.
    admin_down: Option<AdminDownTx>,
    /// [`SessionStatus::neighbour_admin_down`].
    neighbour_admin_down: bool,
    counters: Counters,
    rng: SmallRng,
    /// The `now` of the last input: an urgent packet is due from then.
    last_event: Instant,
}

impl Session {
    /// A session in state Down with our discriminator `local_discriminator` (unique among
    /// the speaker's sessions, §6.8.1), the jitter drawn from a generator seeded with
    /// `seed`. An active session sends its first packet at once; a passive one waits.
    ///
    /// `config` should have passed [`BfdConfig::validate`]; out-of-range intervals are
    /// clamped to the wire range.
    pub fn new(
        config: BfdConfig,
        local_discriminator: NonZeroU32,
        seed: u64,
        now: Instant,
    ) -> Self {
        let idle = config.idle_tx.max(Duration::from_secs(1));
        let passive = config.passive;
        let config_min_rx = config.min_rx;
        Self {
            config,
            state: SessionState::Down,
            since: now,
            local_discr: local_discriminator.get(),
            local_diag: Diagnostic::NoDiagnostic,
            remote_state: SessionState::Down,
            remote_discr: 0,
            remote_diag: None,
            remote_min_rx: INITIAL_REMOTE_MIN_RX,
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            desired_min_tx: idle,
            effective_min_tx: idle,
            effective_min_rx: config_min_rx,
            poll: false,
            poll_sent: false,
            final_pending: false,
            tx_now: !passive,
            next_tx: None,
            last_tx: None,
            detect_deadline: None,
            last_rx: None,
            admin_down: None,
            neighbour_admin_down: false,
            counters: Counters::default(),
            rng: SmallRng::seed_from_u64(seed),
            last_event: now,
        }
    }

    // ----- A. Getters -----

    /// bfd.SessionState.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The configuration: the one the session was built with, with the timer settings
    /// changed since.
    pub fn config(&self) -> &BfdConfig {
        &self.config
    }

    /// bfd.LocalDiscr.
    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    /// bfd.RemoteDiscr (0 while unknown).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    /// bfd.LocalDiag.
    pub fn local_diag(&self) -> Diagnostic {
        self.local_diag
    }

    /// Whether a Poll Sequence we started is still waiting for its Final (§6.5).
    pub fn poll_active(&self) -> bool {
        self.poll
    }

    /// Whether Demand mode is active on the remote system ([RFC 5880 §6.8.6]): its last
    /// packet had D set and both sides are Up. We then send no periodic packets, only a
    /// Poll Sequence's and the Finals we owe (§6.8.7).
    ///
    /// [RFC 5880 §6.8.6]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.6
    pub fn remote_demand_active(&self) -> bool {
        self.remote_demand
            && self.state == SessionState::Up
            && self.remote_state == SessionState::Up
    }

    /// The Desired Min TX Interval we advertise: `idle_tx` while not Up, `min_tx` while Up
    /// (§6.8.3).
    pub fn desired_min_tx(&self) -> Duration {
        self.desired_min_tx
    }

    /// The detection time once the peer has been heard: its Detect Mult times the greater
    /// of our Required Min RX in force and its last Desired Min TX ([RFC 5880 §6.8.4]).
    /// After a decrease of `min_rx` while Up, the previous value stays in force until the
    /// Poll Sequence ends ([RFC 5880 §6.8.3]).
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    /// [RFC 5880 §6.8.4]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.4
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult != 0).then(|| {
            self.effective_min_rx.max(self.remote_desired_min_tx)
                * u32::from(self.remote_detect_mult)
        })
    }

    /// Whether a shut-down session has sent its last AdminDown packet (its peer's
    /// detection time, at most [`ADMIN_DOWN_MAX`], has passed since
    /// [`shutdown`](Self::shutdown)): the driver may drop it. False while not AdminDown.
    pub fn admin_down_done(&self, now: Instant) -> bool {
        self.admin_down.is_some_and(|a| now >= a.until)
    }

    /// The periodic transmit interval before jitter: the greater of the Desired Min TX in
    /// force and bfd.RemoteMinRxInterval ([RFC 5880 §6.8.7]).
    ///
    /// [RFC 5880 §6.8.7]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.7
    pub fn tx_interval(&self) -> Duration {
        self.effective_min_tx.max(self.remote_min_rx)
    }

    /// The packet counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A snapshot for subscribers.
    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            state: self.state,
            local_diag: self.local_diag,
            remote_state: self.remote_state,
            remote_diag: self.remote_diag,
            local_discriminator: self.local_discr,
            remote_discriminator: self.remote_discr,
            since: self.since,
            neighbour_admin_down: self.neighbour_admin_down,
            detection_time: self.detection_time(),
            tx_interval: self.tx_interval(),
            counters: self.counters,
        }
    }

    // ----- B. Handlers -----

    /// A valid Control packet from this session's peer ([RFC 5880 §6.8.6], the part after
    /// the stateless checks of [`ControlPacket::parse`]). The driver chose this session by
    /// Your Discriminator, or by address when it is zero, and checked the TTL. A detection
    /// time that ran out by `now` expires first, as in [`handle_timeout`](Self::handle_timeout).
    ///
    /// [RFC 5880 §6.8.6]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.6
    pub fn handle_packet(&mut self, now: Instant, pkt: &ControlPacket) {
        // A detection time that ran out by `now` did so before this input.
        self.handle_timeout(now);
        if pkt.your_discriminator != 0 && pkt.your_discriminator != self.local_discr {
            self.record_drop(Discard::Discriminator);
            return;
        }
        if self.state == SessionState::AdminDown {
            self.record_drop(Discard::AdminDown);
            return;
        }
        self.counters.rx += 1;
        self.last_event = now;
        let timing = self.tx_timing();
        self.remote_discr = pkt.my_discriminator;
        self.remote_state = pkt.state;
        self.remote_diag = Some(pkt.diag);
        self.remote_min_rx = Duration::from_micros(u64::from(pkt.required_min_rx_us));
        self.remote_desired_min_tx = Duration::from_micros(u64::from(pkt.desired_min_tx_us));
        self.remote_detect_mult = pkt.detect_mult;
        self.remote_demand = pkt.demand;

        if pkt.final_ && self.poll && self.poll_sent {
            // The Poll Sequence is over: a deferred increase of Desired Min TX and a
            // deferred decrease of Required Min RX take effect now (§6.8.3).
            self.poll = false;
            self.effective_min_tx = self.desired_min_tx;
            self.effective_min_rx = self.config.min_rx;
        }

        match (self.state, pkt.state) {
            (SessionState::Down, SessionState::AdminDown) => {}
            (_, SessionState::AdminDown) => {
                self.go_down(now, Diagnostic::NeighborSignaledSessionDown);
                self.neighbour_admin_down = true;
            }
            (SessionState::Up, SessionState::Down) => {
                self.go_down(now, Diagnostic::NeighborSignaledSessionDown);
            }
            (SessionState::Down, SessionState::Down) => {
                // keepalived clears the diagnostic on the way up; RFC 5880 leaves it open.
                self.local_diag = Diagnostic::NoDiagnostic;
                self.set_state(now, SessionState::Init);
            }
            (SessionState::Down, SessionState::Init)
            | (SessionState::Init, SessionState::Init | SessionState::Up) => self.go_up(now),
            _ => {}
        }

        if pkt.poll {
            self.final_pending = true;
        }
        self.last_rx = Some(now);
        self.detect_deadline = self.detection_time().map(|d| now + d);
        self.reschedule(now, timing);
    }

    /// Time passed: the detection time may have run out (§6.8.4). Idempotent; a call before
    /// [`poll_timeout`](Self::poll_timeout) does nothing. Periodic transmissions are due
    /// from [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(a) = &mut self.admin_down {
            a.over |= now >= a.until;
        }
        if let Some(deadline) = self.detect_deadline {
            if now >= deadline {
                self.detect_deadline = None;
                self.last_event = now;
                let timing = self.tx_timing();
                // "If a period of a Detection Time passes without the receipt of a valid,
                // authenticated BFD packet from the remote system, [RemoteDiscr] MUST be
                // set to zero" (§6.8.1). The peer's other parameters go back to their
                // initial values too, so a peer that asked for no packets (Required Min RX
                // 0) and then died does not keep us silent forever.
                self.remote_discr = 0;
                self.last_rx = None;
                self.remote_state = SessionState::Down;
                self.remote_min_rx = INITIAL_REMOTE_MIN_RX;
                self.remote_detect_mult = 0;
                self.remote_demand = false;
                self.remote_desired_min_tx = Duration::ZERO;
                if matches!(self.state, SessionState::Init | SessionState::Up) {
                    self.go_down(now, Diagnostic::ControlDetectionTimeExpired);
                }
                self.reschedule(now, timing);
            }
        }
    }

    // ----- C. Commands -----

    /// Takes the session administratively down ([RFC 5880 §6.8.16]): state AdminDown,
    /// diagnostic 7, and an AdminDown packet at once, so that the peer goes Down with
    /// "Neighbor Signaled Session Down" instead of waiting for its detection time.
    ///
    /// Further AdminDown packets follow at the transmit interval in force until now (so a
    /// lost one is made up for at the rate the peer expects), for the peer's detection
    /// time (our Detect Mult times the greater of our Desired Min TX and its Required Min
    /// RX; none when the session may not transmit, [`may_transmit`](Self::may_transmit)),
    /// at most [`ADMIN_DOWN_MAX`]; then the session falls silent and
    /// [`admin_down_done`](Self::admin_down_done) holds. The packets advertise `idle_tx`
    /// as Desired Min TX (at least 1 s when not Up, §6.8.3). Every packet received from
    /// now on is discarded.
    ///
    /// [RFC 5880 §6.8.16]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.16
    pub fn shutdown(&mut self, now: Instant) {
        // A detection time that ran out by `now` did so before this input.
        self.handle_timeout(now);
        if self.state == SessionState::AdminDown {
            return;
        }
        let interval = self.tx_interval();
        // A session that may not transmit (passive and never heard, or a peer that wants
        // no packets at all) will send nothing, so its schedule ends at once. A peer in
        // Demand mode gets the AdminDown all the same: from now on we discard its Polls
        // (§6.8.6), and it must hear that we went down (§6.8.16).
        let silent_passive = self.config.passive && self.remote_discr == 0;
        let peer_detection = if !self.remote_min_rx.is_zero() && !silent_passive {
            self.desired_min_tx.max(self.remote_min_rx) * u32::from(self.config.multiplier)
        } else {
            Duration::ZERO
        };
        self.admin_down = Some(AdminDownTx {
            interval,
            until: now + peer_detection.min(ADMIN_DOWN_MAX),
            over: false,
        });
        self.last_event = now;
        self.local_diag = Diagnostic::AdministrativelyDown;
        self.set_state(now, SessionState::AdminDown);
        self.detect_deadline = None;
        self.poll = false;
        self.final_pending = false;
        self.desired_min_tx = self.config.idle_tx.max(Duration::from_secs(1));
        self.effective_min_tx = self.desired_min_tx;
        self.effective_min_rx = self.config.min_rx;
        // The first AdminDown goes out at once (`set_state`), the next after `interval`.
        self.next_tx = None;
    }

    /// Changes `min_tx`, the Desired Min TX while Up ([RFC 5880 §6.8.3]). While Up this
    /// starts a Poll Sequence, whose P rides on the next periodic packet (§6.5); a
    /// decrease is used at once, an increase only once the Final arrives. Otherwise it
    /// takes effect when the session comes Up.
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    pub fn set_min_tx(&mut self, now: Instant, min_tx: Duration) {
        // A detection time that ran out by `now` did so before this input.
        self.handle_timeout(now);
        self.config.min_tx = min_tx;
        if self.state == SessionState::Up {
            self.last_event = now;
            self.change_desired_min_tx(now, min_tx);
        }
    }

    /// Changes `min_rx`, bfd.RequiredMinRxInterval ([RFC 5880 §6.8.3]). While Down or Init
    /// it is advertised at once (a packet goes out now). While Up this starts a Poll
    /// Sequence (P on the next periodic packet, §6.5), and a decrease only
    /// shortens our detection time once the Final arrives (the peer may still be sending
    /// at the old rate until it has seen the new value); an increase lengthens it at once.
    /// Nothing is sent while AdminDown.
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    pub fn set_min_rx(&mut self, now: Instant, min_rx: Duration) {
        // A detection time that ran out by `now` did so before this input.
        self.handle_timeout(now);
        if min_rx == self.config.min_rx {
            return;
        }
        self.config.min_rx = min_rx;
        match self.state {
            SessionState::AdminDown => self.effective_min_rx = min_rx,
            SessionState::Up => {
                // An increase at once, a decrease only once the Final arrives (§6.8.3),
                // measured from what is in use: the detection time never shrinks before
                // the peer has been told, even when a second change comes before the
                // first one's Final.
                self.effective_min_rx = self.effective_min_rx.max(min_rx);
                self.start_poll(now);
            }
            SessionState::Down | SessionState::Init => {
                self.effective_min_rx = min_rx;
                self.send_now(now);
            }
        }
        // The detection time in force changed, and so does its deadline, in any state it
        // runs in (in Down its expiry forgets the peer, §6.8.1).
        if self.detect_deadline.is_some() {
            self.detect_deadline = self
                .last_rx
                .zip(self.detection_time())
                .map(|(rx, d)| rx + d);
        }
    }

    /// Changes `idle_tx`, the Desired Min TX while not Up (at least 1 s is used,
    /// [RFC 5880 §6.8.3]). While Down or Init it is used and advertised at once (a packet
    /// goes out now, without a Poll Sequence, as on the way Down); while Up it takes
    /// effect when the session leaves Up; while AdminDown it is only kept (the AdminDown
    /// packets keep the value of the shutdown).
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    pub fn set_idle_tx(&mut self, now: Instant, idle_tx: Duration) {
        // A detection time that ran out by `now` did so before this input.
        self.handle_timeout(now);
        if idle_tx == self.config.idle_tx {
            return;
        }
        self.config.idle_tx = idle_tx;
        if matches!(self.state, SessionState::Down | SessionState::Init) {
            let timing = self.tx_timing();
            self.desired_min_tx = idle_tx.max(Duration::from_secs(1));
            self.effective_min_tx = self.desired_min_tx;
            self.send_now(now);
            self.reschedule(now, timing);
        }
    }

    /// Changes `multiplier`, bfd.DetectMult: while Down or Init advertised at once (a
    /// packet goes out now); while Up with a Poll Sequence on the next periodic packet
    /// (§6.5), as FRR does for any timer change, although [RFC 5880 §6.8.3] only requires
    /// one for the intervals (keepalived starts none). Nothing is sent while AdminDown.
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    pub fn set_multiplier(&mut self, now: Instant, multiplier: u8) {
        // A detection time that ran out by `now` did so before this input.
        self.handle_timeout(now);
        if multiplier == self.config.multiplier {
            return;
        }
        let timing = self.tx_timing();
        self.config.multiplier = multiplier;
        match self.state {
            SessionState::AdminDown => {}
            SessionState::Up => self.start_poll(now),
            SessionState::Down | SessionState::Init => self.send_now(now),
        }
        // Detect Mult 1 narrows the jitter of the packet already scheduled (§6.8.7).
        self.reschedule(now, timing);
    }

    /// Counts a packet for this session dropped before [`handle_packet`](Self::handle_packet)
    /// (malformed, bad TTL).
    pub fn record_drop(&mut self, reason: Discard) {
        let c = &mut self.counters;
        match reason {
            Discard::Malformed => c.dropped_malformed += 1,
            Discard::BadTtl => c.dropped_ttl += 1,
            Discard::Discriminator => c.dropped_discriminator += 1,
            Discard::AdminDown => c.dropped_admin_down += 1,
        }
    }

    // ----- D. Outputs -----

    /// The next packet to send now, if any: a Final owed, a packet for a state change, or a
    /// periodic packet whose time has come. Call until `None`.
    ///
    /// A Final answers a Poll "without respect to the transmission timer or any other
    /// transmission limitations" ([RFC 5880 §6.8.7]), so it goes out even while the peer's
    /// Required Min RX is 0; every other packet waits until [`may_transmit`] holds.
    ///
    /// [RFC 5880 §6.8.7]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.7
    /// [`may_transmit`]: Self::may_transmit
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<ControlPacket> {
        if self.final_pending {
            self.final_pending = false;
            self.counters.tx += 1;
            return Some(self.packet(true));
        }
        let due = self.tx_now || self.next_tx.is_none_or(|t| now >= t);
        if let Some(a) = self.admin_down {
            // AdminDown: at the interval in force before, until the end of the schedule.
            if !due || now >= a.until || !self.may_transmit() {
                return None;
            }
            self.tx_now = false;
            self.restart_tx_timer(now, a.interval);
            self.counters.tx += 1;
            return Some(self.packet(false));
        }
        if !self.may_transmit() {
            // When transmission resumes, a packet owed for a change goes out at once (its
            // contents differ from the last one sent, §6.8.7); otherwise the periodic timer
            // runs on from the last packet, so the next one comes no sooner than the
            // interval allows.
            return None;
        }
        if !due {
            return None;
        }
        self.tx_now = false;
        self.restart_tx_timer(now, self.tx_interval());
        self.counters.tx += 1;
        if self.poll {
            self.poll_sent = true;
        }
        Some(self.packet(false))
    }

    /// When [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) next has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(a) = self.admin_down {
            // The next AdminDown packet while there is one, then the end of the schedule
            // (so the driver wakes up to drop the session), then nothing.
            return if a.over {
                None
            } else if self.tx_now && self.may_transmit() {
                Some(self.last_event)
            } else {
                match self.next_tx {
                    Some(t) if t < a.until && self.may_transmit() => Some(t),
                    _ => Some(a.until),
                }
            };
        }
        let tx = if self.final_pending {
            Some(self.last_event)
        } else if !self.may_transmit() {
            None
        } else if self.tx_now || self.next_tx.is_none() {
            Some(self.last_event)
        } else {
            self.next_tx
        };
        match (tx, self.detect_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    /// Whether periodic packets (and one on a state change) may go out ([RFC 5880 §6.8.7]):
    /// not while the peer's Required Min RX is 0, not in the passive role before the peer
    /// is known (bfd.RemoteDiscr still 0), not once the AdminDown packets are over, not
    /// while Demand mode is active on the remote system unless a Poll Sequence is under
    /// way ([`remote_demand_active`](Self::remote_demand_active)).
    ///
    /// [RFC 5880 §6.8.7]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.7
    pub fn may_transmit(&self) -> bool {
        let silent_passive = self.config.passive && self.remote_discr == 0;
        let admin_down_over = self.admin_down.is_some_and(|a| a.over);
        let demanded_silence = self.remote_demand_active() && !self.poll;
        !self.remote_min_rx.is_zero() && !silent_passive && !admin_down_over && !demanded_silence
    }

    fn packet(&self, final_: bool) -> ControlPacket {
        let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            // P and F are never both set (§6.5); the Poll goes out with the next periodic
            // packet.
            poll: self.poll && !final_,
            final_,
            control_plane_independent: false,
            auth_present: false,
            demand: false,
            multipoint: false,
            detect_mult: self.config.multiplier,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: us(self.desired_min_tx),
            required_min_rx_us: us(self.config.min_rx),
            required_min_echo_rx_us: 0,
        }
    }

    /// The interval reduced by a random 0–25 %, or 10–25 % when our Detect Mult is 1
    /// (§6.8.7), in whole microseconds: never under 75 % nor, with Detect Mult 1, over
    /// 90 % (below 4 µs no whole number lies between the two, and the interval stays as it
    /// is).
    fn jittered(&mut self, interval: Duration) -> Duration {
        let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        let min = if self.config.multiplier == 1 {
            us.div_ceil(10)
        } else {
            0
        };
        let max = us / 4;
        let cut = if max >= min {
            self.rng.gen_range(min..=max)
        } else {
            max
        };
        Duration::from_micros(us - cut)
    }

    /// A packet other than a Final goes out at `now`: the periodic timer starts again
    /// from it.
    fn restart_tx_timer(&mut self, now: Instant, interval: Duration) {
        self.last_tx = Some(now);
        self.next_tx = Some(now + self.jittered(interval));
    }

    /// What the periodic timer depends on: the transmit interval (the one saved for the
    /// AdminDown packets once shut down) and our Detect Mult (the jitter range).
    fn tx_timing(&self) -> (Duration, u8) {
        let interval = self
            .admin_down
            .map_or_else(|| self.tx_interval(), |a| a.interval);
        (interval, self.config.multiplier)
    }

    /// After [`tx_timing`](Self::tx_timing) changed from `before`: the next periodic packet
    /// is drawn again from the last one sent, as §6.8.7 has the interval "recalculated"
    /// whenever bfd.DesiredMinTxInterval or bfd.RemoteMinRxInterval changes. A longer
    /// interval delays it (no packet comes sooner than the interval allows); a shorter one
    /// brings it forward, to now if that much time has passed already (§6.8.3: "the local
    /// system cannot wait longer than the new interval between the previous packet
    /// transmission and the next one").
    fn reschedule(&mut self, now: Instant, before: (Duration, u8)) {
        if self.tx_timing() == before {
            return;
        }
        if let (Some(_), Some(last)) = (self.next_tx, self.last_tx) {
            let next = last + self.jittered(self.tx_timing().0);
            self.next_tx = Some(next.max(now));
        }
    }

    fn set_state(&mut self, now: Instant, to: SessionState) {
        if self.state != to {
            self.state = to;
            self.since = now;
            self.tx_now = true;
        }
    }

    fn go_up(&mut self, now: Instant) {
        self.local_diag = Diagnostic::NoDiagnostic;
        self.neighbour_admin_down = false;
        self.set_state(now, SessionState::Up);
        let min_tx = self.config.min_tx;
        self.change_desired_min_tx(now, min_tx);
    }

    fn go_down(&mut self, now: Instant, diag: Diagnostic) {
        self.local_diag = diag;
        self.set_state(now, SessionState::Down);
        // Not Up: at least 1 s (§6.8.3), at once, without a Poll Sequence.
        let timing = self.tx_timing();
        self.poll = false;
        self.desired_min_tx = self.config.idle_tx.max(Duration::from_secs(1));
        self.effective_min_tx = self.desired_min_tx;
        self.effective_min_rx = self.config.min_rx;
        self.reschedule(now, timing);
    }

    /// A packet at once: the contents changed (§6.8.7).
    fn send_now(&mut self, now: Instant) {
        self.last_event = now;
        self.tx_now = true;
    }

    /// Starts (or restarts, with the new values) a Poll Sequence (§6.5): P rides on the
    /// next periodic packet ("additional packets MUST NOT be sent" while they flow); only
    /// while the peer's Demand mode has stopped them does a packet go out at once.
    fn start_poll(&mut self, now: Instant) {
        self.poll = true;
        self.poll_sent = false;
        if self.remote_demand_active() {
            self.send_now(now);
        } else {
            self.last_event = now;
        }
    }

    fn change_desired_min_tx(&mut self, now: Instant, to: Duration) {
        if to == self.desired_min_tx {
            return;
        }
        let timing = self.tx_timing();
        self.desired_min_tx = to;
        // While Up a decrease is used at once and an increase only once the Final arrives
        // (§6.8.3), measured from what is in use: never slower than the peer has been told
        // of, even when a second change comes before the first one's Final.
        self.effective_min_tx = if self.state == SessionState::Up {
            self.effective_min_tx.min(to)
        } else {
            to
        };
        self.start_poll(now);
        self.reschedule(now, timing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BfdConfig {
        BfdConfig::new("198.18.0.2".parse().unwrap())
    }

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn session(cfg: BfdConfig, discr: u32, now: Instant) -> Session {
        Session::new(cfg, NonZeroU32::new(discr).unwrap(), u64::from(discr), now)
    }

    #[test]
    fn active_sends_at_once_passive_waits() {
        let now = t0();
        let mut a = session(cfg(), 1, now);
        let p = a.poll_transmit(now).expect("active sends at start");
        assert_eq!(p.state, SessionState::Down);
        assert_eq!(p.your_discriminator, 0);
        assert_eq!(p.desired_min_tx_us, 1_000_000);
        assert_eq!(p.required_min_rx_us, 10_000);
        assert_eq!(p.detect_mult, 5);
        assert!(a.poll_transmit(now).is_none());
        let next = a.poll_timeout().unwrap();
        assert!(next - now >= Duration::from_millis(750) && next - now <= Duration::from_secs(1));

        let mut b = session(
            BfdConfig {
                passive: true,
                ..cfg()
            },
            2,
            now,
        );
        assert!(b.poll_transmit(now).is_none());
        assert!(b.poll_timeout().is_none());
        assert!(b.poll_transmit(now + Duration::from_secs(60)).is_none());
        b.handle_packet(now, &p);
        assert_eq!(b.state(), SessionState::Init);
        let q = b
            .poll_transmit(now)
            .expect("passive answers once it heard the peer");
        assert_eq!(q.state, SessionState::Init);
        assert_eq!(q.your_discriminator, 1);
    }

    #[test]
    fn no_transmit_while_remote_min_rx_is_zero() {
        let now = t0();
        let mut a = session(cfg(), 1, now);
        let pkt = ControlPacket {
            state: SessionState::Down,
            detect_mult: 3,
            my_discriminator: 9,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 0,
            poll: true,
            ..ControlPacket::default()
        };
        a.handle_packet(now, &pkt);
        assert_eq!(a.state(), SessionState::Init);
        assert!(!a.may_transmit());
        // The Poll is still answered (§6.8.7: "without respect to ... any other
        // transmission limitations"), then nothing, not even for the state change.
        let f = a.poll_transmit(now).expect("Final");
        assert!(f.final_);
        // Only the detection timer is left: 3 x 1 s.
        assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(3)));
        for i in 0..100 {
            assert!(a.poll_transmit(now + Duration::from_secs(i)).is_none());
        }
    }

    #[test]
    fn discriminator_mismatch_and_admin_down_are_dropped() {
        let now = t0();
        let mut a = session(cfg(), 1, now);
        let pkt = ControlPacket {
            state: SessionState::Init,
            detect_mult: 3,
            my_discriminator: 9,
            your_discriminator: 2,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 1_000,
            ..ControlPacket::default()
        };
        a.handle_packet(now, &pkt);
        assert_eq!(a.state(), SessionState::Down);
        assert_eq!(a.counters().dropped_discriminator, 1);
        a.shutdown(now);
        a.handle_packet(
            now,
            &ControlPacket {
                your_discriminator: 1,
                ..pkt
            },
        );
        assert_eq!(a.state(), SessionState::AdminDown);
        assert_eq!(a.counters().dropped_admin_down, 1);
        assert_eq!(a.counters().rx, 0);
    }
}
