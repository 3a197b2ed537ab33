//! The sans-IO health state machine of one backend: fed probe outcomes and the time, it
//! applies keepalived retries, rise/fall thresholds and HAProxy's `inter`/`fastinter`/
//! `downinter` cadence, and says when the next probe is due. It reads no clock and does no IO.
//!
//! Method taxonomy (quinn, see `STYLE.md` §2):
//!
//! - **Getters** (`&self`): [`health`](HealthTracker::health), [`weight`](HealthTracker::weight),
//!   [`backend`](HealthTracker::backend), [`config`](HealthTracker::config).
//! - **Handlers** of things that happened: [`handle_result`](HealthTracker::handle_result) (a
//!   probe finished), [`handle_timeout`](HealthTracker::handle_timeout) (a deadline passed;
//!   idempotent).
//! - **Commands** from the operator: [`set_health`](HealthTracker::set_health) (HAProxy
//!   `set server <b>/<s> health up|down`).
//! - **Outputs** (`#[must_use]`): [`poll_probe`](HealthTracker::poll_probe) (start a probe now?)
//!   and [`poll_timeout`](HealthTracker::poll_timeout) (when to call back).
//!
//! # Examples
//!
//! Once a check has passed, three failures with `fall 3` take the backend down; nothing
//! flips before (a fresh start goes down at its first failed check, as HAProxy's):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::{BackendId, Health};
//! use lb_health::{HealthCheckConfig, HealthTracker, ProbeOutcome};
//!
//! let config = HealthCheckConfig::haproxy().rise(2).fall(3).build()?;
//! # #[allow(clippy::disallowed_methods)]
//! let mut now = Instant::now();
//! let mut tracker = HealthTracker::new(BackendId(1), config, now);
//! let _ = tracker.poll_probe(now).expect("due at once");
//! assert!(tracker.handle_result(now, ProbeOutcome::up("connected", Duration::ZERO)).is_none());
//! let mut flips = Vec::new();
//! for _ in 0..3 {
//!     now = tracker.poll_timeout().unwrap();
//!     let probe = tracker.poll_probe(now).expect("due");
//!     assert_eq!(probe.timeout, Duration::from_secs(2));
//!     let outcome = ProbeOutcome::down("connection refused", Duration::from_micros(80));
//!     flips.push(tracker.handle_result(now, outcome));
//! }
//! assert!(flips[0].is_none() && flips[1].is_none());
//! let t = flips[2].as_ref().unwrap();
//! assert_eq!((t.old, t.new), (Health::Up, Health::Down));
//! assert_eq!(t.reason, "connection refused");
//! # Ok::<(), lb_health::Error>(())
//! ```

use std::borrow::Cow;
use std::time::{Duration, Instant};

use lb_core::{BackendId, Health, Weight};

use crate::config::{HealthCheckConfig, StartState};

/// Why a probe passed or failed, for logs and events (`"connection refused"`,
/// `"status 500 not in 200-299"`).
pub type Reason = Cow<'static, str>;

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// [`Health::Up`] when the probe passed.
    pub health: Health,
    /// A weight the probe asks for (keepalived `misc_dynamic`: exit code − 2), if any. A
    /// passing outcome without one asks for the configured weight (a `misc_dynamic`
    /// program exiting 0 puts it back).
    pub weight: Option<Weight>,
    /// Why it passed or failed.
    pub reason: Reason,
    /// How long the probe took, from its start to its verdict.
    pub latency: Duration,
}

impl ProbeOutcome {
    /// A passing probe.
    pub fn up(reason: impl Into<Reason>, latency: Duration) -> Self {
        Self {
            health: Health::Up,
            weight: None,
            reason: reason.into(),
            latency,
        }
    }

    /// A failing probe.
    pub fn down(reason: impl Into<Reason>, latency: Duration) -> Self {
        Self {
            health: Health::Down,
            weight: None,
            reason: reason.into(),
            latency,
        }
    }

    /// A probe that did not finish within `timeout` (its latency is the timeout).
    pub fn timed_out(timeout: Duration) -> Self {
        Self::down(format!("timed out after {timeout:?}"), timeout)
    }

    /// Adds a requested weight (keepalived `misc_dynamic`).
    #[must_use]
    pub fn with_weight(mut self, weight: Weight) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Whether the probe passed.
    pub fn is_up(&self) -> bool {
        self.health == Health::Up
    }
}

/// A probe the caller must start now, returned by [`HealthTracker::poll_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    /// How long the probe may take (the configured `timeout`).
    pub timeout: Duration,
    /// 0 for a check's first attempt, `n` for its `n`-th keepalived retry.
    pub attempt: u32,
}

/// A change the caller must apply: the backend's health flipped, or (while up) the weight a
/// `misc_dynamic` probe asks for changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Health before.
    pub old: Health,
    /// Health after (equal to `old` for a weight-only change).
    pub new: Health,
    /// The weight the probe asks for, if it asks (`misc_dynamic`); `None` keeps the configured
    /// weight.
    pub weight: Option<Weight>,
    /// The reason of the outcome that caused the change.
    pub reason: Reason,
    /// The latency of that outcome.
    pub latency: Duration,
}

impl Transition {
    /// Whether the health changed (as opposed to only the weight).
    pub fn is_health_change(&self) -> bool {
        self.old != self.new
    }

    /// The event subscribers see, naming the backend.
    pub fn into_event(self, backend: BackendId) -> HealthEvent {
        HealthEvent {
            backend,
            old: self.old,
            new: self.new,
            weight: self.weight,
            reason: self.reason,
            latency: self.latency,
        }
    }
}

/// A typed health event, as the driver publishes it to every subscriber (the pool, VRRP
/// priority tracking, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The backend.
    pub backend: BackendId,
    /// Health before.
    pub old: Health,
    /// Health after (equal to `old` for a weight-only change).
    pub new: Health,
    /// The weight a `misc_dynamic` probe asks for, if any.
    pub weight: Option<Weight>,
    /// Why (the reason of the deciding probe).
    pub reason: Reason,
    /// The deciding probe's latency.
    pub latency: Duration,
}

/// The current state of one backend's check: what a subscriber that applied every
/// [`HealthEvent`] so far would know (the last event's `new` and `weight`). A subscriber
/// that missed events resynchronises from these (see
/// [`PoolApplier::resync`](crate::PoolApplier::resync)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    /// The current verdict.
    pub health: Health,
    /// The weight the last `misc_dynamic` outcome asks for, if any (`None`: the configured
    /// weight).
    pub weight: Option<Weight>,
    /// `false` while a fresh [`StartState::Up`] has had no check result: its verdict is the
    /// start state's, not a check's (carry it over as a fresh start, not as
    /// [`StartState::Established`]).
    pub established: bool,
    /// When a probe last passed (set by [`HealthDriver`](crate::HealthDriver)), whatever the
    /// verdict: a passive ejection may end at the next pass (Envoy's
    /// `successful_active_health_check_uneject_host`). `None`: none since the start.
    pub last_pass: Option<Instant>,
    /// Why the last probe failed, while no probe has passed since (set by
    /// [`HealthDriver`](crate::HealthDriver)): what a backend that stays down fails with
    /// now, which may differ from the reason of its transition (HAProxy updates
    /// `check_desc` at every check), and the reason of a backend that started down and
    /// never came up, which has had no transition.
    pub last_failure: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the next attempt, due at this instant.
    Idle { due: Instant },
    /// An attempt started at `started` is running; it fails if no result arrives by
    /// `deadline`.
    InFlight { started: Instant, deadline: Instant },
}

/// The health of one backend, decided from probe outcomes. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct HealthTracker {
    backend: BackendId,
    config: HealthCheckConfig,
    health: Health,
    /// Consecutive passed checks while down (towards `rise`).
    successes: u32,
    /// Consecutive failed checks while up (towards `fall`).
    failures: u32,
    /// Retries used in the current check (keepalived `retry_it`).
    attempt: u32,
    /// A fresh [`StartState::Up`] before its first check result: one failure is enough, with
    /// no retries (keepalived starts `retry_it` at `retry`: "one failure is enough
    /// initially"; HAProxy: "up, but will fall down at first failure").
    fresh: bool,
    /// The last weight a probe asked for.
    weight: Option<Weight>,
    /// The weight last reported in a transition.
    reported_weight: Option<Weight>,
    phase: Phase,
    /// [`HealthTracker::handle_timeout`] failed the running probe, and no probe started
    /// since: that probe's own late result is ignored, not counted a second time.
    timed_out: bool,
    /// Completed checks, the jitter's sequence number.
    checks: u64,
}

impl HealthTracker {
    /// A tracker in the configured start state whose first probe is due at `now`, or at a
    /// deterministic point in `[now, now + warmup)` when `warmup` is set. From
    /// [`StartState::Up`] the first failed check takes the backend down; a passed one
    /// makes it established (`fall` failures needed from then on).
    pub fn new(backend: BackendId, config: HealthCheckConfig, now: Instant) -> Self {
        // A fresh start up is one failure away from down (HAProxy `check.health =
        // check.rise`); an established one needs `fall`.
        let fresh = matches!(config.start(), StartState::Up);
        let (health, failures) = match config.start() {
            StartState::Up => (Health::Up, config.thresholds().fall.saturating_sub(1)),
            StartState::Established => (Health::Up, 0),
            StartState::Down => (Health::Down, 0),
        };
        let first = match config.warmup() {
            Some(w) if !w.is_zero() => {
                let h = mix(config.seed() ^ u64::from(backend.0));
                later(
                    now,
                    Duration::from_nanos(h % (w.as_nanos().min(u128::from(u64::MAX)) as u64)),
                )
            }
            _ => now,
        };
        Self {
            backend,
            config,
            health,
            successes: 0,
            failures,
            attempt: 0,
            fresh,
            timed_out: false,
            weight: None,
            reported_weight: None,
            phase: Phase::Idle { due: first },
            checks: 0,
        }
    }

    /// The backend this tracker decides for.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &HealthCheckConfig {
        &self.config
    }

    /// The current verdict.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The weight the last passing outcome asked for (`misc_dynamic`), if any: `None`
    /// for the configured weight.
    pub fn weight(&self) -> Option<Weight> {
        self.weight
    }

    /// The current health and dynamic weight together.
    pub fn state(&self) -> CheckState {
        CheckState {
            health: self.health,
            weight: self.weight,
            established: !self.fresh,
            last_pass: None,
            last_failure: None,
        }
    }

    /// Whether a probe is in flight.
    pub fn is_probing(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. })
    }

    /// When to call back: the next probe's due time, or the running probe's deadline. A
    /// configured duration too large for an [`Instant`] (up to [`Duration::MAX`]) puts it
    /// [`FAR_FUTURE`] ahead instead.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.phase {
            Phase::Idle { due } => due,
            Phase::InFlight { deadline, .. } => deadline,
        })
    }

    /// Starts a probe if one is due at `now`: the caller runs it and reports with
    /// [`handle_result`](Self::handle_result). Returns `None` when nothing is due or a probe is
    /// already running.
    #[must_use]
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeRequest> {
        match self.phase {
            Phase::Idle { due } if now >= due => {
                self.timed_out = false;
                self.phase = Phase::InFlight {
                    started: now,
                    deadline: later(now, self.config.timeout()),
                };
                Some(ProbeRequest {
                    timeout: self.config.timeout(),
                    attempt: self.attempt,
                })
            }
            _ => None,
        }
    }

    /// Fails the running probe if its deadline has passed (as
    /// [`ProbeOutcome::timed_out`]). Idempotent: a spurious or early call does nothing.
    /// The probe's own result, should it still arrive before the next
    /// [`poll_probe`](Self::poll_probe), is then ignored (HAProxy reports a check once).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Transition> {
        match self.phase {
            Phase::InFlight { deadline, .. } if now >= deadline => {
                let t = self.handle_result(now, ProbeOutcome::timed_out(self.config.timeout()));
                self.timed_out = true;
                t
            }
            _ => None,
        }
    }

    /// Applies one probe outcome received at `now`, and schedules the next probe.
    ///
    /// While the backend is up, a failed attempt with retries left (keepalived `retry`)
    /// schedules a retry after `delay_before_retry` and counts nothing; a backend that is
    /// down is not retried but probed again at its normal cadence (keepalived check_tcp.c,
    /// check_misc.c: `} else if (checker->is_up) { delay = delay_before_retry; ++retry_it; }`).
    /// Otherwise the check's result counts towards
    /// `rise` or `fall`; the next check is due `inter`, `fastinter` or `downinter`
    /// (± `spread_checks`) after this one ended (`now`), as HAProxy reschedules a check
    /// when it completes (`tick_add(now_ms, srv_getinter())`) and keepalived's checkers
    /// wait `delay_loop` after theirs (`tcp_epilog`): a probe that runs into its timeout is
    /// followed by a pause, not by the next probe at once. So without retries or spread a
    /// backend that dies is down within `fall × (timeout + interval)` at worst (with
    /// `fastinter`, `interval + (fall − 1) × fastinter + fall × timeout`). Outcomes are accepted even
    /// without a preceding [`poll_probe`](Self::poll_probe), so callers may drive probes on
    /// their own schedule; but the first one after [`handle_timeout`](Self::handle_timeout)
    /// failed a probe, before the next `poll_probe`, is taken for that probe's late result
    /// and ignored (returns `None`). So a caller that uses `handle_timeout` should cancel
    /// the timed-out probe and start the next one with `poll_probe`: a result it reports
    /// without one is dropped, and a late result reported after the next `poll_probe`
    /// counts for the new probe. ([`crate::driver`] enforces its own timeout and reports
    /// the timed-out outcome here instead.)
    pub fn handle_result(&mut self, now: Instant, outcome: ProbeOutcome) -> Option<Transition> {
        if std::mem::take(&mut self.timed_out) {
            return None;
        }
        if !outcome.is_up()
            && self.health == Health::Up
            && !self.fresh
            && self.attempt < self.config.retries()
        {
            self.attempt += 1;
            self.phase = Phase::Idle {
                due: later(now, self.config.delay_before_retry()),
            };
            return None;
        }
        self.attempt = 0;
        self.fresh = false;
        self.checks = self.checks.wrapping_add(1);
        let old = self.health;
        let th = self.config.thresholds();
        if outcome.is_up() {
            // Each passing result says the weight to use: `misc_dynamic`'s exit 2..=255
            // a weight, anything else (exit 0, every other probe) the configured one
            // (keepalived's `misc_check_child_thread` sets `cur_weight = 0` on exit 0).
            // A weight given once used to stay until another was given.
            self.weight = outcome.weight;
            self.failures = 0;
            if self.health == Health::Down {
                self.successes += 1;
                if self.successes >= th.rise {
                    self.health = Health::Up;
                    self.successes = 0;
                }
            }
        } else {
            self.successes = 0;
            if self.health == Health::Up {
                self.failures += 1;
                if self.failures >= th.fall {
                    self.health = Health::Down;
                    self.failures = 0;
                }
            }
        }
        let steady_up = self.health == Health::Up && self.failures == 0;
        let steady_down = self.health == Health::Down && self.successes == 0;
        let period = self.jittered(self.config.period(steady_up, steady_down));
        self.phase = Phase::Idle {
            due: later(now, period),
        };

        let weight_changed = self.health == Health::Up && self.weight != self.reported_weight;
        if old != self.health || weight_changed {
            if self.health == Health::Up {
                self.reported_weight = self.weight;
            }
            Some(Transition {
                old,
                new: self.health,
                weight: self.weight,
                reason: outcome.reason,
                latency: outcome.latency,
            })
        } else {
            None
        }
    }

    /// Forces the verdict (HAProxy `set server <b>/<s> health up|down`). The runs towards
    /// `rise`/`fall` restart, and if no probe is running the next one is due one period of the
    /// new state after `now`. Returns the transition when the health changes.
    pub fn set_health(&mut self, now: Instant, health: Health) -> Option<Transition> {
        let old = self.health;
        self.health = health;
        self.successes = 0;
        self.failures = 0;
        self.attempt = 0;
        self.fresh = false;
        if let Phase::Idle { .. } = self.phase {
            let period = self
                .config
                .period(health == Health::Up, health == Health::Down);
            self.phase = Phase::Idle {
                due: later(now, self.jittered(period)),
            };
        }
        (old != health).then(|| {
            if health == Health::Up {
                self.reported_weight = self.weight;
            }
            Transition {
                old,
                new: health,
                weight: self.weight,
                reason: Cow::Borrowed("set by operator"),
                latency: Duration::ZERO,
            }
        })
    }

    /// `period` spread by a deterministic ± `spread_checks` percent, keyed by the seed, the
    /// backend and the check number.
    fn jittered(&self, period: Duration) -> Duration {
        jitter(
            period,
            self.config.spread_percent(),
            self.config.seed(),
            self.backend,
            self.checks,
        )
    }
}

/// The longest delay the tracker and the outlier detector schedule: about a century. A
/// longer configured duration (up to [`Duration::MAX`], which an [`Instant`] cannot hold)
/// waits this long instead of overflowing.
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `at + d`, with `d` capped at [`FAR_FUTURE`]; `at` itself in the (unreachable on the
/// supported platforms) case that even that is not representable. Never panics.
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR_FUTURE)).unwrap_or(at)
}

/// `period` moved by a deterministic offset within ± `percent`% of it.
pub(crate) fn jitter(
    period: Duration,
    percent: u8,
    seed: u64,
    backend: BackendId,
    n: u64,
) -> Duration {
    if percent == 0 {
        return period;
    }
    let span = period.as_nanos() * u128::from(percent) / 100; // ≤ period / 2
    let h = mix(seed ^ (u64::from(backend.0) << 32) ^ n.rotate_left(17));
    let offset = u128::from(h) % (2 * span + 1); // 0..=2·span
    let nanos = period.as_nanos() + offset - span;
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

/// splitmix64's finaliser: a fixed, well-spread hash (no `RandomState`, STYLE §4).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn jitter_stays_within_bound_and_spreads() {
        let p = Duration::from_secs(10);
        let mut seen = std::collections::HashSet::new();
        for id in 0..200 {
            for n in 0..50 {
                let j = jitter(p, 20, 1, BackendId(id), n);
                assert!(
                    j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                    "{j:?}"
                );
                seen.insert(j.as_millis() / 100);
            }
        }
        assert!(seen.len() > 30, "spread over the window: {}", seen.len());
        assert_eq!(jitter(p, 0, 1, BackendId(1), 1), p);
    }

    /// `misc_dynamic`: exit 7 asks for weight 5, then exit 0 for the configured weight
    /// again (keepalived `cur_weight = 0`), which is reported; a later weight, then a fall
    /// and a rise on exit 0, end at the configured weight too. Weight 5 stayed for good
    /// before: an outcome without a weight kept the last one.
    #[test]
    fn a_pass_without_a_weight_puts_the_configured_weight_back() {
        let now = t0();
        let c = HealthCheckConfig::builder()
            .fall(1)
            .rise(1)
            .build()
            .unwrap();
        let mut t = HealthTracker::new(BackendId(1), c, now);
        let w5 = Weight::new(5).unwrap();
        let up = |w: Option<Weight>| {
            let o = ProbeOutcome::up("exit", Duration::ZERO);
            match w {
                Some(w) => o.with_weight(w),
                None => o,
            }
        };
        let tr = t.handle_result(now, up(Some(w5))).unwrap();
        assert_eq!((tr.new, tr.weight), (Health::Up, Some(w5)));
        let tr = t
            .handle_result(now, up(None))
            .expect("weight back to configured");
        assert_eq!((tr.new, tr.weight), (Health::Up, None));
        assert_eq!(t.weight(), None);
        assert!(t.handle_result(now, up(None)).is_none(), "no change");
        let _ = t.handle_result(now, up(Some(w5))).unwrap();
        let tr = t
            .handle_result(now, ProbeOutcome::down("exit 1", Duration::ZERO))
            .unwrap();
        assert_eq!(tr.new, Health::Down);
        let tr = t.handle_result(now, up(None)).unwrap();
        assert_eq!((tr.new, tr.weight), (Health::Up, None));
    }

    #[test]
    fn handle_timeout_is_idempotent_and_fails_the_probe() {
        let now = t0();
        let c = HealthCheckConfig::builder()
            .fall(1)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let mut t = HealthTracker::new(BackendId(1), c, now);
        assert!(t.handle_timeout(now).is_none());
        let _ = t.poll_probe(now).unwrap();
        assert!(t.poll_probe(now).is_none(), "one probe at a time");
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(1)));
        assert!(t.handle_timeout(now + Duration::from_millis(999)).is_none());
        let tr = t.handle_timeout(now + Duration::from_secs(1)).unwrap();
        assert_eq!(tr.new, Health::Down);
        assert!(tr.reason.contains("timed out"));
        assert!(t.handle_timeout(now + Duration::from_secs(1)).is_none());
    }

    /// A probe failed by its timeout counts once: its late result is ignored (with `fall
    /// 2` one hung probe does not take the backend down), and the next probe counts again.
    #[test]
    fn a_timed_out_probes_late_result_is_ignored() {
        let now = t0();
        let s = Duration::from_secs;
        let c = HealthCheckConfig::builder()
            .fall(2)
            .start(StartState::Established)
            .timeout(s(1))
            .build()
            .unwrap();
        let mut t = HealthTracker::new(BackendId(1), c, now);
        let _ = t.poll_probe(now).unwrap();
        assert!(t.handle_timeout(now + s(1)).is_none(), "first failure");
        let late = t.handle_result(
            now + Duration::from_millis(1500),
            ProbeOutcome::down("connection refused", Duration::from_millis(1500)),
        );
        assert!(late.is_none(), "the same probe, not a second failure");
        assert_eq!(t.health(), Health::Up);
        let due = t.poll_timeout().unwrap();
        let _ = t.poll_probe(due).unwrap();
        let tr = t.handle_result(due, ProbeOutcome::down("connection refused", s(0)));
        assert_eq!(
            tr.map(|tr| tr.new),
            Some(Health::Down),
            "the second probe counts"
        );
    }

    #[test]
    fn operator_forces_health_and_runs_restart() {
        let now = t0();
        let c = HealthCheckConfig::builder()
            .rise(2)
            .fall(2)
            .start(StartState::Established)
            .downinter(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut t = HealthTracker::new(BackendId(1), c, now);
        let down = || ProbeOutcome::down("x", Duration::ZERO);
        assert!(t.handle_result(now, down()).is_none());
        let tr = t.set_health(now, Health::Down).unwrap();
        assert_eq!(
            (tr.old, tr.new, tr.reason.as_ref()),
            (Health::Up, Health::Down, "set by operator")
        );
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(30)));
        assert!(t.set_health(now, Health::Down).is_none());
        assert!(t.set_health(now, Health::Up).is_some());
        // The earlier failure no longer counts: one more is not enough.
        assert!(t.handle_result(now, down()).is_none());
        assert_eq!(t.handle_result(now, down()).unwrap().new, Health::Down);
    }

    /// Every configured duration at `Duration::MAX` (reachable through the public builder):
    /// the tracker schedules at most `FAR_FUTURE` ahead instead of panicking on
    /// `Instant + Duration` overflow (probe deadline, retry, period, operator command,
    /// warm-up).
    #[test]
    fn duration_max_schedules_far_ahead_without_panicking() {
        let now = t0();
        let max = Duration::MAX;
        let c = HealthCheckConfig::builder()
            .fall(2)
            .start(StartState::Established)
            .interval(max)
            .downinter(max)
            .timeout(max)
            .retry(1)
            .delay_before_retry(max)
            .build()
            .unwrap();
        let far = now + FAR_FUTURE;
        let mut t = HealthTracker::new(BackendId(1), c.clone(), now);
        let req = t.poll_probe(now).unwrap();
        assert_eq!(req.timeout, max);
        assert_eq!(t.poll_timeout(), Some(far), "probe deadline");
        let down = || ProbeOutcome::down("x", Duration::ZERO);
        assert!(t.handle_result(now, down()).is_none());
        assert_eq!(t.poll_timeout(), Some(far), "retry");
        let _ = t.poll_probe(far).unwrap();
        assert!(t.handle_result(far, down()).is_none());
        assert_eq!(t.poll_timeout(), Some(far + FAR_FUTURE), "period");
        assert!(t.set_health(now, Health::Down).is_some());
        assert_eq!(t.poll_timeout(), Some(far), "operator command");
        let c = HealthCheckConfig::builder().warmup(max).build().unwrap();
        let due = HealthTracker::new(BackendId(1), c, now)
            .poll_timeout()
            .unwrap();
        assert!(due >= now && due <= far, "warm-up");
    }

    /// HAProxy starts a server up "but will fall down at first failure": from a fresh
    /// `StartState::Up` one failed check is enough whatever `fall`; after a passed check,
    /// or from `StartState::Established` (a carried-over verdict), `fall` are needed.
    #[test]
    fn a_fresh_start_up_falls_at_the_first_failure() {
        let now = t0();
        let down = || ProbeOutcome::down("x", Duration::ZERO);
        let up = || ProbeOutcome::up("ok", Duration::ZERO);
        let fall3 = |start| {
            let c = HealthCheckConfig::builder()
                .fall(3)
                .start(start)
                .build()
                .unwrap();
            HealthTracker::new(BackendId(1), c, now)
        };
        let mut fresh = fall3(StartState::Up);
        assert_eq!(fresh.health(), Health::Up);
        let t = fresh
            .handle_result(now, down())
            .expect("down at the first failure");
        assert_eq!((t.old, t.new), (Health::Up, Health::Down));

        let mut passed = fall3(StartState::Up);
        assert!(passed.handle_result(now, up()).is_none());
        assert!(passed.handle_result(now, down()).is_none());
        assert!(passed.handle_result(now, down()).is_none());
        assert_eq!(passed.handle_result(now, down()).unwrap().new, Health::Down);

        let mut carried = fall3(StartState::Established);
        assert_eq!(carried.health(), Health::Up);
        assert!(carried.handle_result(now, down()).is_none());
        assert!(carried.handle_result(now, down()).is_none());
        assert_eq!(
            carried.handle_result(now, down()).unwrap().new,
            Health::Down
        );
    }

    #[test]
    fn warmup_spreads_first_probe() {
        let now = t0();
        let c = HealthCheckConfig::builder()
            .warmup(Duration::from_secs(1))
            .build()
            .unwrap();
        let firsts: std::collections::HashSet<_> = (0..100)
            .map(|i| {
                let t = HealthTracker::new(BackendId(i), c.clone(), now);
                let due = t.poll_timeout().unwrap();
                assert!(due >= now && due < now + Duration::from_secs(1));
                due
            })
            .collect();
        assert!(firsts.len() > 90);
    }
}
