//! Passive health: outlier detection from the outcomes of real connections, as Envoy's
//! [outlier detection] does it (`consecutive_gateway_failure`, `consecutive_5xx`,
//! `base_ejection_time`, `max_ejection_time`, `max_ejection_percent`). Sans-IO: the proxy
//! reports each connection's outcome with the time, and the detector returns ejections and
//! un-ejections as [`OutlierEvent`]s.
//!
//! - `consecutive_failures` failures in a row (connect failures, resets, timeouts, and any
//!   5xx — Envoy's enforced default, [`FailureClass::Any5xx`] — or only the gateway errors
//!   502/503/504 with [`FailureClass::Gateway`]) eject a backend.
//! - The `n`-th ejection lasts `base_ejection_time × n`, capped at `max_ejection_time`
//!   (Envoy). The multiplier `n` decays by one for each `interval` (10 s by default) the
//!   backend then spends un-ejected, as Envoy's interval timer decrements it.
//! - Every `interval`, the outcomes of that interval are judged across the backends (Envoy's
//!   `success_rate` and `failure_percentage` ejection; any 5xx and every connection failure
//!   counts against the success rate, whatever [`FailureClass`] says):
//!   - **success rate**: among the backends with at least `success_rate_request_volume`
//!     outcomes (100), if there are `success_rate_minimum_hosts` (5) or more, one whose
//!     success rate is below `mean − success_rate_stdev_factor / 1000 × stdev` (1900: 1.9
//!     standard deviations, population) is ejected, with probability
//!     `enforcing_success_rate` % (100);
//!   - **failure percentage**: among the backends with at least
//!     `failure_percentage_request_volume` outcomes (50), if there are
//!     `failure_percentage_minimum_hosts` (5) or more, one whose failures reach
//!     `failure_percentage_threshold` % (85) is ejected, with probability
//!     `enforcing_failure_percentage` % (0: off, as in Envoy).
//!
//!   Ejected backends are not judged. Without outcomes no interval runs (no timer while
//!   idle); the first outcome starts one.
//! - An ejection that would put more than `max_ejection_percent` of the backends out is
//!   refused. (Envoy also ejects one host when the percentage rounds to zero; here the
//!   percentage is a hard ceiling, as the issue asks. Use 100 to disable the ceiling.)
//! - Nor is the last backend that serves ejected: one that takes new connections apart
//!   from any ejection (up by its checks, admin ready, weight above 0, a primary: the
//!   driver says which with [`OutlierDetector::set_serving`]; every backend serves until
//!   told otherwise), when no other does. The ceiling counts every backend, as Envoy's;
//!   with one backend down by its checks and another drained, a failing third would
//!   otherwise leave the virtual server with nothing. For the same reason, once the
//!   others stop serving, [`OutlierDetector::keep_one_serving`] takes back the ejected
//!   backend whose ejection ends first. (Envoy routes to every host when
//!   fewer than `healthy_panic_threshold`, 50 % by default, are healthy; keepalived's and
//!   lb's default has no panic mode.)
//!
//! [outlier detection]: https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::BackendId;
//! use lb_health::outlier::{
//!     ConnectionOutcome, EjectionReason, OutlierConfig, OutlierDetector, OutlierEvent,
//! };
//!
//! let config = OutlierConfig::builder()
//!     .consecutive_failures(3)
//!     .base_ejection_time(Duration::from_secs(30))
//!     .max_ejection_percent(50)
//!     .enforcing_success_rate(0) // consecutive failures only
//!     .build()?;
//! let mut detector = OutlierDetector::new(config, (1..=4).map(BackendId));
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! for _ in 0..3 {
//!     detector.handle_outcome(now, BackendId(2), ConnectionOutcome::ConnectFailure);
//! }
//! assert_eq!(
//!     detector.poll_event(),
//!     Some(OutlierEvent::Ejected {
//!         backend: BackendId(2),
//!         until: now + Duration::from_secs(30),
//!         ejections: 1,
//!         reason: EjectionReason::ConsecutiveFailures,
//!     })
//! );
//! assert_eq!(detector.poll_timeout(), Some(now + Duration::from_secs(30)));
//! detector.handle_timeout(now + Duration::from_secs(30));
//! assert_eq!(detector.poll_event(), Some(OutlierEvent::Unejected { backend: BackendId(2) }));
//! # Ok::<(), lb_health::Error>(())
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use lb_core::BackendId;

use crate::error::{Error, Result};

/// Which HTTP statuses count as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailureClass {
    /// 502, 503 and 504 (Envoy `consecutive_gateway_failure`).
    Gateway,
    /// Every 5xx (Envoy `consecutive_5xx`), the default: Envoy enforces
    /// `consecutive_5xx` by default (`enforcing_consecutive_5xx` 100 %) and only detects
    /// gateway failures (`enforcing_consecutive_gateway_failure` 0 %).
    #[default]
    Any5xx,
}

/// What happened to one connection or request the proxy sent to a backend.
///
/// A connection gives two reports, as in Envoy (`LocalOriginConnectSuccess`, then the final
/// result): [`Connected`](Self::Connected) when it is established, which neither counts as
/// a failure nor ends a run of failures, and at its end [`Success`](Self::Success) (a clean
/// close, a complete response) or a failure ([`Reset`](Self::Reset), …). A backend that
/// accepts every connection and then breaks it is thus ejected after
/// `consecutive_failures` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionOutcome {
    /// The connection (or request) completed: a clean close, a complete response. Ends a
    /// run of failures.
    Success,
    /// The connection was established (or a response head arrived); its final outcome
    /// follows. Neither a failure nor a success: a run of failures goes on (Envoy's
    /// `LocalOriginConnectSuccess`, which is not `LocalOriginConnectSuccessFinal`).
    Connected,
    /// The TCP connect failed (refused, unreachable).
    ConnectFailure,
    /// The backend reset the connection.
    Reset,
    /// Connecting or the first response byte timed out.
    Timeout,
    /// An HTTP response with this status (HTTP mode).
    HttpStatus(u16),
}

/// Outlier-detection settings, validated by [`OutlierConfigBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    consecutive_failures: u32,
    failure_class: FailureClass,
    base_ejection_time: Duration,
    max_ejection_time: Duration,
    max_ejection_percent: u8,
    interval: Duration,
    success_rate_minimum_hosts: u32,
    success_rate_request_volume: u32,
    success_rate_stdev_factor: u32,
    enforcing_success_rate: u8,
    failure_percentage_threshold: u8,
    failure_percentage_minimum_hosts: u32,
    failure_percentage_request_volume: u32,
    enforcing_failure_percentage: u8,
}

impl Default for OutlierConfig {
    /// Envoy's defaults (see [`OutlierConfig::builder`]).
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_class: FailureClass::Any5xx,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            interval: Duration::from_secs(10),
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 100,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
        }
    }
}

impl OutlierConfig {
    /// A builder with Envoy's defaults:
    ///
    /// - `consecutive_failures 5`, every 5xx counting (Envoy `consecutive_5xx`, the one
    ///   Envoy enforces by default);
    /// - `base_ejection_time 30s`, `max_ejection_time 300s` (or `base_ejection_time` when
    ///   that is longer and `max_ejection_time` is not set, as Envoy);
    /// - `max_ejection_percent 10`;
    /// - `interval 10s`;
    /// - success rate: `success_rate_minimum_hosts 5`, `success_rate_request_volume 100`,
    ///   `success_rate_stdev_factor 1900`, `enforcing_success_rate 100`;
    /// - failure percentage: `failure_percentage_threshold 85`,
    ///   `failure_percentage_minimum_hosts 5`, `failure_percentage_request_volume 50`,
    ///   `enforcing_failure_percentage 0`.
    pub fn builder() -> OutlierConfigBuilder {
        OutlierConfigBuilder {
            config: Self::default(),
            max_set: false,
        }
    }

    /// Failures in a row that eject.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Which HTTP statuses count as failures.
    pub fn failure_class(&self) -> FailureClass {
        self.failure_class
    }

    /// Duration of a first ejection.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time
    }

    /// Longest ejection.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
    }

    /// Most backends ejected at once, in percent of the pool.
    pub fn max_ejection_percent(&self) -> u8 {
        self.max_ejection_percent
    }

    /// Time un-ejected that takes one off a backend's ejection multiplier, and the length of
    /// the windows the success rate and failure percentage are judged over.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Backends with enough outcomes needed for a success-rate judgement.
    pub fn success_rate_minimum_hosts(&self) -> u32 {
        self.success_rate_minimum_hosts
    }

    /// Outcomes in an interval a backend needs to be judged by success rate.
    pub fn success_rate_request_volume(&self) -> u32 {
        self.success_rate_request_volume
    }

    /// Standard deviations below the mean success rate that eject, in thousandths.
    pub fn success_rate_stdev_factor(&self) -> u32 {
        self.success_rate_stdev_factor
    }

    /// Chance, in percent, that a success-rate outlier is ejected (0: never judged).
    pub fn enforcing_success_rate(&self) -> u8 {
        self.enforcing_success_rate
    }

    /// Failures in an interval, in percent of a backend's outcomes, that eject it.
    pub fn failure_percentage_threshold(&self) -> u8 {
        self.failure_percentage_threshold
    }

    /// Backends with enough outcomes needed for a failure-percentage judgement.
    pub fn failure_percentage_minimum_hosts(&self) -> u32 {
        self.failure_percentage_minimum_hosts
    }

    /// Outcomes in an interval a backend needs to be judged by failure percentage.
    pub fn failure_percentage_request_volume(&self) -> u32 {
        self.failure_percentage_request_volume
    }

    /// Chance, in percent, that a failure-percentage outlier is ejected (0: never judged).
    pub fn enforcing_failure_percentage(&self) -> u8 {
        self.enforcing_failure_percentage
    }

    /// Whether outcomes are counted per interval at all (either judgement can eject).
    fn judges_intervals(&self) -> bool {
        self.enforcing_success_rate > 0 || self.enforcing_failure_percentage > 0
    }

    /// The most a backend's ejection count grows to: Envoy's `ejectHost` increments it
    /// only while `count × base_ejection_time < max_ejection_time + base_ejection_time`.
    fn max_backoff(&self) -> u32 {
        let base = self.base_ejection_time.as_nanos().max(1);
        let limit = (self.max_ejection_time.as_nanos() + base).div_ceil(base);
        u32::try_from(limit).unwrap_or(u32::MAX)
    }

    /// `Some(true)` for a failure, `Some(false)` for a success that ends a run of
    /// failures, `None` for an outcome that does neither ([`ConnectionOutcome::Connected`]).
    fn is_failure(&self, outcome: ConnectionOutcome) -> Option<bool> {
        match outcome {
            ConnectionOutcome::Connected => None,
            ConnectionOutcome::Success => Some(false),
            ConnectionOutcome::ConnectFailure
            | ConnectionOutcome::Reset
            | ConnectionOutcome::Timeout => Some(true),
            ConnectionOutcome::HttpStatus(s) => Some(match self.failure_class {
                FailureClass::Gateway => matches!(s, 502..=504),
                FailureClass::Any5xx => (500..=599).contains(&s),
            }),
        }
    }
}

/// Builds an [`OutlierConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct OutlierConfigBuilder {
    config: OutlierConfig,
    /// `max_ejection_time` was given: otherwise it is 300 s or `base_ejection_time`,
    /// whichever is longer.
    max_set: bool,
}

impl OutlierConfigBuilder {
    /// Failures in a row that eject (≥ 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// Which HTTP statuses count as failures.
    pub fn failure_class(mut self, class: FailureClass) -> Self {
        self.config.failure_class = class;
        self
    }

    /// Duration of a first ejection (> 0); the `n`-th lasts `n` times as long.
    pub fn base_ejection_time(mut self, d: Duration) -> Self {
        self.config.base_ejection_time = d;
        self
    }

    /// Longest ejection (at least `base_ejection_time`). Unset: 300 s or
    /// `base_ejection_time`, whichever is longer (Envoy's `max_ejection_time`).
    pub fn max_ejection_time(mut self, d: Duration) -> Self {
        self.config.max_ejection_time = d;
        self.max_set = true;
        self
    }

    /// Most backends ejected at once, percent of the pool (0..=100).
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.config.max_ejection_percent = percent;
        self
    }

    /// Envoy's `interval` (> 0; default 10 s): each one a backend spends un-ejected takes
    /// one off its ejection multiplier, so the next ejection is shorter. (Envoy also ends
    /// ejections on this tick; here they end at their own time.)
    pub fn interval(mut self, d: Duration) -> Self {
        self.config.interval = d;
        self
    }

    /// Envoy's `success_rate_minimum_hosts` (default 5): backends with at least
    /// `success_rate_request_volume` outcomes in an interval needed to judge any by
    /// success rate.
    pub fn success_rate_minimum_hosts(mut self, n: u32) -> Self {
        self.config.success_rate_minimum_hosts = n;
        self
    }

    /// Envoy's `success_rate_request_volume` (default 100): outcomes in an interval a
    /// backend needs to be judged by success rate.
    pub fn success_rate_request_volume(mut self, n: u32) -> Self {
        self.config.success_rate_request_volume = n;
        self
    }

    /// Envoy's `success_rate_stdev_factor` (default 1900): a backend whose success rate is
    /// below the mean by more than this many thousandths of a standard deviation is an
    /// outlier.
    pub fn success_rate_stdev_factor(mut self, factor: u32) -> Self {
        self.config.success_rate_stdev_factor = factor;
        self
    }

    /// Envoy's `enforcing_success_rate` (0..=100, default 100): the chance, in percent,
    /// that a success-rate outlier is ejected; 0 turns the judgement off.
    pub fn enforcing_success_rate(mut self, percent: u8) -> Self {
        self.config.enforcing_success_rate = percent;
        self
    }

    /// Envoy's `failure_percentage_threshold` (0..=100, default 85): failures in an
    /// interval, in percent of a backend's outcomes, that make it an outlier.
    pub fn failure_percentage_threshold(mut self, percent: u8) -> Self {
        self.config.failure_percentage_threshold = percent;
        self
    }

    /// Envoy's `failure_percentage_minimum_hosts` (default 5).
    pub fn failure_percentage_minimum_hosts(mut self, n: u32) -> Self {
        self.config.failure_percentage_minimum_hosts = n;
        self
    }

    /// Envoy's `failure_percentage_request_volume` (default 50).
    pub fn failure_percentage_request_volume(mut self, n: u32) -> Self {
        self.config.failure_percentage_request_volume = n;
        self
    }

    /// Envoy's `enforcing_failure_percentage` (0..=100, default 0, off): the chance, in
    /// percent, that a failure-percentage outlier is ejected.
    pub fn enforcing_failure_percentage(mut self, percent: u8) -> Self {
        self.config.enforcing_failure_percentage = percent;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`Error::InvalidThreshold`] for `consecutive_failures` 0, [`Error::ZeroInterval`] for a
    /// zero `base_ejection_time` or `interval`, [`Error::InvalidConfig`] for a percentage
    /// above 100 (`max_ejection_percent`, `enforcing_success_rate`,
    /// `failure_percentage_threshold`, `enforcing_failure_percentage`) or a
    /// `max_ejection_time` below `base_ejection_time`.
    pub fn build(self) -> Result<OutlierConfig> {
        let mut c = self.config;
        if !self.max_set {
            c.max_ejection_time = c.max_ejection_time.max(c.base_ejection_time);
        }
        if c.consecutive_failures == 0 {
            return Err(Error::InvalidThreshold {
                setting: "consecutive_failures",
                value: 0,
            });
        }
        if c.base_ejection_time.is_zero() {
            return Err(Error::ZeroInterval {
                setting: "base_ejection_time",
                value: c.base_ejection_time,
            });
        }
        if c.interval.is_zero() {
            return Err(Error::ZeroInterval {
                setting: "interval",
                value: c.interval,
            });
        }
        if c.max_ejection_time < c.base_ejection_time {
            return Err(Error::InvalidConfig {
                setting: "max_ejection_time",
                reason: format!(
                    "{:?} is below base_ejection_time {:?}",
                    c.max_ejection_time, c.base_ejection_time
                ),
            });
        }
        for (setting, value) in [
            ("max_ejection_percent", c.max_ejection_percent),
            ("enforcing_success_rate", c.enforcing_success_rate),
            (
                "failure_percentage_threshold",
                c.failure_percentage_threshold,
            ),
            (
                "enforcing_failure_percentage",
                c.enforcing_failure_percentage,
            ),
        ] {
            if value > 100 {
                return Err(Error::InvalidConfig {
                    setting,
                    reason: format!("{value}% is above 100%"),
                });
            }
        }
        Ok(c)
    }
}

/// An output of the detector: apply it to the pool (see [`PoolApplier`](crate::PoolApplier)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierEvent {
    /// The backend is out until `until`.
    Ejected {
        /// The backend.
        backend: BackendId,
        /// When it returns.
        until: Instant,
        /// The ejection multiplier now in force (1 for a first ejection).
        ejections: u32,
        /// Why.
        reason: EjectionReason,
    },
    /// The backend's ejection time is over; it takes traffic again.
    Unejected {
        /// The backend.
        backend: BackendId,
    },
}

/// Why a backend was ejected ([`OutlierEvent::Ejected`]). Rates are in thousandths
/// (per mille) of its outcomes in the interval judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// Its success rate was below the threshold the backends' rates gave (Envoy
    /// `SUCCESS_RATE`).
    SuccessRate {
        /// Its success rate, ‰.
        success_rate: u32,
        /// The mean success rate of the backends judged, ‰.
        mean: u32,
        /// `mean − factor × stdev`, ‰ (rounded up).
        threshold: u32,
    },
    /// Its failures reached `failure_percentage_threshold` (Envoy `FAILURE_PERCENTAGE`).
    FailurePercentage {
        /// Its failures, ‰ of its outcomes.
        failure_rate: u32,
    },
    /// An ejection in force carried from an earlier detector ([`OutlierDetector::restore`])
    /// whose state did not say why.
    Carried,
}

impl fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |permille: u32| format!("{}.{}%", permille / 10, permille % 10);
        match self {
            Self::ConsecutiveFailures => f.write_str("consecutive failed connections or requests"),
            Self::SuccessRate {
                success_rate,
                mean,
                threshold,
            } => write!(
                f,
                "success rate {} below the threshold {} (mean {})",
                pct(*success_rate),
                pct(*threshold),
                pct(*mean)
            ),
            Self::FailurePercentage { failure_rate } => {
                write!(f, "{} of its requests failed", pct(*failure_rate))
            }
            Self::Carried => f.write_str("ejection carried over from the previous configuration"),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct HostState {
    consecutive: u32,
    /// Final outcomes in the current interval, and how many of them succeeded.
    volume: u32,
    successes: u32,
    ejected_until: Option<Instant>,
    /// When the current ejection began.
    ejected_at: Option<Instant>,
    ejections: u32,
    unejected_at: Option<Instant>,
    /// Why the ejection in force was made.
    reason: Option<EjectionReason>,
    /// Does not take new connections, ejection aside ([`OutlierDetector::set_serving`]).
    not_serving: bool,
}

/// What a detector remembers of one backend's ejections: whether it is ejected and until
/// when, its ejection multiplier, and when it last came back (from which the multiplier
/// decays). Read with [`OutlierDetector::host_state`] and given to a new detector with
/// [`OutlierDetector::restore`], so that a backend that stays in a cluster whose
/// configuration changed keeps its ejection (Envoy keeps a host's outlier state across
/// cluster updates). A run of consecutive failures in progress is not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutlierHostState {
    ejected_until: Option<Instant>,
    ejections: u32,
    unejected_at: Option<Instant>,
    reason: Option<EjectionReason>,
}

impl OutlierHostState {
    /// When the ejection in force ends; `None` when the backend is not ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// The ejection multiplier (how many ejections in a row, decaying while healthy).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Why the ejection in force was made; `None` when the backend is not ejected.
    pub fn reason(&self) -> Option<EjectionReason> {
        self.ejected_until.and(self.reason)
    }
}

/// Ejects backends whose real traffic keeps failing. See the [module docs](self).
///
/// Methods follow `STYLE.md` §2: handlers [`handle_outcome`](Self::handle_outcome) and
/// [`handle_timeout`](Self::handle_timeout); outputs [`poll_event`](Self::poll_event) and
/// [`poll_timeout`](Self::poll_timeout); commands [`add_backend`](Self::add_backend) and
/// [`remove_backend`](Self::remove_backend).
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    hosts: BTreeMap<BackendId, HostState>,
    events: VecDeque<OutlierEvent>,
    /// How many of `hosts` are ejected (`ejected_until` set), kept up to date on every
    /// ejection, return, restore and removal so that no outcome scans the hosts.
    ejected: usize,
    /// When the interval whose outcomes are being counted ends (success rate, failure
    /// percentage); `None` while no outcome has come since the last one ended.
    window_ends: Option<Instant>,
    /// The enforcement draws' generator state (splitmix64).
    rng: u64,
}

/// The default seed of the enforcement draws ([`OutlierDetector::with_seed`]).
const DEFAULT_SEED: u64 = 0x6c62_6f75_746c_6965;

impl OutlierDetector {
    /// A detector over these backends, none ejected.
    pub fn new(config: OutlierConfig, backends: impl IntoIterator<Item = BackendId>) -> Self {
        Self {
            config,
            hosts: backends
                .into_iter()
                .map(|b| (b, HostState::default()))
                .collect(),
            events: VecDeque::new(),
            ejected: 0,
            window_ends: None,
            rng: DEFAULT_SEED,
        }
    }

    /// Seeds the draws that decide whether an outlier is ejected when an `enforcing_*`
    /// percentage is between 0 and 100 (Envoy draws from its runtime's random source).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed;
        self
    }

    /// Whether a draw falls within `percent` %: always for 100, never for 0.
    fn enforce(&mut self, percent: u8) -> bool {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % 100 < u64::from(percent)
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Whether the backend is ejected now.
    pub fn is_ejected(&self, backend: BackendId) -> bool {
        self.hosts
            .get(&backend)
            .is_some_and(|h| h.ejected_until.is_some())
    }

    /// How many backends are ejected (a counter: no scan of the backends).
    pub fn ejected_count(&self) -> usize {
        self.ejected
    }

    /// Says whether `backend` takes new connections apart from any ejection here: up by
    /// its active checks, admin state ready, effective weight above 0, and a primary (not
    /// a `backup`/sorry server). For an ejected backend: whether it would, were it not
    /// ejected. Every backend serves until told otherwise. The detector does not eject the
    /// last serving backend (see the [module docs](self)); once the driver has said what
    /// changed, [`Self::keep_one_serving`] ends an ejection if nothing else serves. Unknown
    /// backends are ignored.
    pub fn set_serving(&mut self, backend: BackendId, serving: bool) {
        if let Some(h) = self.hosts.get_mut(&backend) {
            h.not_serving = !serving;
        }
    }

    /// When no serving backend ([`Self::set_serving`]) is in, ends the ejection of the
    /// serving one whose ejection ends first (an [`OutlierEvent::Unejected`] is queued) and
    /// returns it; `None` when something serves or no ejected backend would. Ejecting
    /// spares the last serving backend, but the others can stop serving later (their
    /// checks fail, an operator drains them): then the ejected backend is all that is
    /// left, and taking it back is better than refusing every client, as Envoy's panic
    /// mode routes to ejected hosts when too few are healthy. Its ejection still counts for
    /// the next one's length. Call it after a round of [`Self::set_serving`]; constant work
    /// while nothing is ejected.
    pub fn keep_one_serving(&mut self, now: Instant) -> Option<BackendId> {
        if self.ejected == 0
            || self
                .hosts
                .values()
                .any(|h| !h.not_serving && h.ejected_until.is_none())
        {
            return None;
        }
        let backend = self
            .hosts
            .iter()
            .filter(|(_, h)| !h.not_serving)
            .filter_map(|(&id, h)| Some((h.ejected_until?, id)))
            .min()?
            .1;
        self.end_ejection(now, backend);
        Some(backend)
    }

    /// Ends `backend`'s ejection at `now` (known and ejected) and queues the event.
    fn end_ejection(&mut self, now: Instant, backend: BackendId) {
        if let Some(host) = self.hosts.get_mut(&backend) {
            if host.ejected_until.is_some() {
                host.ejected_until = None;
                host.ejected_at = None;
                host.unejected_at = Some(now);
                self.ejected -= 1;
                self.events.push_back(OutlierEvent::Unejected { backend });
            }
        }
    }

    /// Whether ejecting `backend` would leave no serving backend: it serves and no other
    /// serving one is in.
    fn is_last_serving(&self, backend: BackendId) -> bool {
        self.hosts.get(&backend).is_some_and(|h| !h.not_serving)
            && !self
                .hosts
                .iter()
                .any(|(&id, h)| id != backend && !h.not_serving && h.ejected_until.is_none())
    }

    /// Adds a backend (membership change).
    ///
    /// # Errors
    /// [`Error::DuplicateBackend`] if it is already known.
    pub fn add_backend(&mut self, backend: BackendId) -> Result<()> {
        if self.hosts.contains_key(&backend) {
            return Err(Error::DuplicateBackend(backend));
        }
        self.hosts.insert(backend, HostState::default());
        Ok(())
    }

    /// The ejection state of `backend`, to carry to a new detector; `None` if unknown.
    pub fn host_state(&self, backend: BackendId) -> Option<OutlierHostState> {
        self.hosts.get(&backend).map(|h| OutlierHostState {
            ejected_until: h.ejected_until,
            ejections: h.ejections,
            unejected_at: h.unejected_at,
            reason: h.ejected_until.and(h.reason),
        })
    }

    /// Gives `backend` the ejection state an earlier detector had ([`Self::host_state`]),
    /// under this detector's configuration. Returns whether `backend` is ejected now.
    ///
    /// - An ejection still in force at `now` goes on, until the same instant but no later
    ///   than `max_ejection_time` from `now`, and an [`OutlierEvent::Ejected`] is queued
    ///   for the pool, unless the ceiling (`max_ejection_percent` of the backends, counting
    ///   those already ejected here) forbids it, or it is the last serving backend
    ///   ([`Self::set_serving`]): then the backend is back in at `now`.
    /// - One already over counts as ended when it was due: no event.
    /// - Whenever `backend` was ejected here and is not after the restore, an
    ///   [`OutlierEvent::Unejected`] is queued (the pool was told of that ejection).
    /// - The ejection multiplier and the time of the last return carry over either way; a
    ///   run of consecutive failures does not.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`] if the detector does not know `backend`.
    pub fn restore(
        &mut self,
        now: Instant,
        backend: BackendId,
        state: OutlierHostState,
    ) -> Result<bool> {
        let total = self.hosts.len();
        let ejected = self.ejected;
        let max_time = self.config.max_ejection_time;
        let pct = usize::from(self.config.max_ejection_percent);
        let last_serving = self.is_last_serving(backend);
        let host = self
            .hosts
            .get_mut(&backend)
            .ok_or(Error::UnknownBackend(backend))?;
        let was_ejected = host.ejected_until.is_some();
        host.ejections = state.ejections.min(self.config.max_backoff());
        host.unejected_at = state.unejected_at;
        host.consecutive = 0;
        host.ejected_until = None;
        host.ejected_at = None;
        if was_ejected {
            self.ejected -= 1;
        }
        match state.ejected_until {
            Some(until) if until <= now => host.unejected_at = Some(until),
            Some(until) => {
                let others = ejected - usize::from(was_ejected);
                if (others + 1) * 100 > total * pct || last_serving {
                    host.unejected_at = Some(now);
                } else {
                    let until = now
                        .checked_add(max_time)
                        .map_or(until, |cap| until.min(cap));
                    host.ejected_until = Some(until);
                    // Its start is not carried: a pass after the restore ends it.
                    host.ejected_at = Some(now);
                    // Why it was made goes on (a state without one: `Carried`).
                    let reason = state.reason.unwrap_or(EjectionReason::Carried);
                    host.reason = Some(reason);
                    self.ejected += 1;
                    self.events.push_back(OutlierEvent::Ejected {
                        backend,
                        until,
                        ejections: host.ejections,
                        reason,
                    });
                }
            }
            None => {}
        }
        let now_ejected = host.ejected_until.is_some();
        if was_ejected && !now_ejected {
            // The pool was told of the ejection: tell it of the end, or it stays out.
            self.events.push_back(OutlierEvent::Unejected { backend });
        }
        Ok(now_ejected)
    }

    /// Forgets a backend (membership change); returns whether it was known. An ejected one
    /// gets an [`OutlierEvent::Unejected`], so that whatever applied the ejection (a
    /// [`PoolApplier`](crate::PoolApplier)) does not keep it out when it comes back.
    pub fn remove_backend(&mut self, backend: BackendId) -> bool {
        match self.hosts.remove(&backend) {
            Some(host) => {
                if host.ejected_until.is_some() {
                    self.ejected -= 1;
                    self.events.push_back(OutlierEvent::Unejected { backend });
                }
                true
            }
            None => false,
        }
    }

    /// Records one connection outcome. Unknown backends and outcomes for already-ejected
    /// backends (connections still draining) are ignored. A success ends the backend's run
    /// of failures; [`ConnectionOutcome::Connected`] leaves it as it is. Every other outcome
    /// also counts in the current interval's success rate and failure percentage (when
    /// either is enforced), and the first of an interval starts it.
    ///
    /// Constant work per outcome (a map lookup), whatever the number of backends.
    pub fn handle_outcome(&mut self, now: Instant, backend: BackendId, outcome: ConnectionOutcome) {
        let Some(is_failure) = self.config.is_failure(outcome) else {
            return;
        };
        let config = &self.config;
        let Some(host) = self.hosts.get_mut(&backend) else {
            return;
        };
        if host.ejected_until.is_some() {
            return;
        }
        if config.judges_intervals() {
            host.volume = host.volume.saturating_add(1);
            // Envoy's success rate: any 5xx and every local failure is a failure, whatever
            // the consecutive judgement's class.
            let success = match outcome {
                ConnectionOutcome::Success => true,
                ConnectionOutcome::HttpStatus(s) => !(500..=599).contains(&s),
                _ => false,
            };
            if success {
                host.successes = host.successes.saturating_add(1);
            }
            if self.window_ends.is_none() {
                self.window_ends = Some(crate::tracker::later(now, config.interval));
            }
        }
        if !is_failure {
            host.consecutive = 0;
            return;
        }
        host.consecutive = host.consecutive.saturating_add(1);
        if host.consecutive < config.consecutive_failures {
            return;
        }
        // The run ends whether or not the ceiling lets the ejection happen, as Envoy's
        // (it resets the counter either way): the backend needs a whole new run once there
        // is room.
        host.consecutive = 0;
        self.try_eject(now, backend, EjectionReason::ConsecutiveFailures);
    }

    /// Ejects `backend` (known, not ejected) unless the ceiling forbids it: (ejected + 1) /
    /// total must not exceed `max_ejection_percent`, and another backend must serve.
    /// Returns whether it ejected.
    fn try_eject(&mut self, now: Instant, backend: BackendId, reason: EjectionReason) -> bool {
        let total = self.hosts.len();
        if (self.ejected + 1) * 100 > total * usize::from(self.config.max_ejection_percent)
            || self.is_last_serving(backend)
        {
            return false;
        }
        let config = &self.config;
        let Some(host) = self.hosts.get_mut(&backend) else {
            return false;
        };
        if host.ejected_until.is_some() {
            return false;
        }
        let base = config.base_ejection_time;
        if let Some(back) = host.unejected_at {
            let healthy = now.saturating_duration_since(back);
            let decay =
                (healthy.as_nanos() / config.interval.as_nanos()).min(u128::from(u32::MAX)) as u32;
            host.ejections = host.ejections.saturating_sub(decay);
        }
        // Envoy's backoff stops growing once the ejection time passes the longest one
        // (`ejectHost`): a backend that flapped many times is not held to long ejections
        // for longer than that cap implies.
        host.ejections = host.ejections.saturating_add(1).min(config.max_backoff());
        let time = base
            .saturating_mul(host.ejections)
            .min(config.max_ejection_time);
        let until = crate::tracker::later(now, time);
        host.ejected_until = Some(until);
        host.ejected_at = Some(now);
        host.consecutive = 0;
        host.reason = Some(reason);
        self.ejected += 1;
        self.events.push_back(OutlierEvent::Ejected {
            backend,
            until,
            ejections: host.ejections,
            reason,
        });
        true
    }

    /// Judges the interval that just ended (Envoy's `processSuccessRateEjections`) and
    /// starts counting the next.
    fn judge_interval(&mut self, now: Instant) {
        // (backend, volume, success rate in percent) of each backend not ejected with
        // outcomes; every count starts again.
        let mut judged: Vec<(BackendId, u32, f64)> = Vec::new();
        for (&id, host) in &mut self.hosts {
            let (volume, successes) = (host.volume, host.successes);
            host.volume = 0;
            host.successes = 0;
            if host.ejected_until.is_none() && volume > 0 {
                judged.push((id, volume, f64::from(successes) * 100.0 / f64::from(volume)));
            }
        }
        let c = self.config.clone();
        let total = self.hosts.len();
        let permille = |pct: f64| (pct * 10.0).round().clamp(0.0, 1000.0) as u32;
        if c.enforcing_success_rate > 0 && total >= c.success_rate_minimum_hosts as usize {
            let valid: Vec<(BackendId, f64)> = judged
                .iter()
                .filter(|(_, v, _)| *v >= c.success_rate_request_volume)
                .map(|&(id, _, r)| (id, r))
                .collect();
            if !valid.is_empty() && valid.len() >= c.success_rate_minimum_hosts as usize {
                let n = valid.len() as f64;
                let mean = valid.iter().map(|(_, r)| r).sum::<f64>() / n;
                let variance = valid.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
                let threshold =
                    mean - f64::from(c.success_rate_stdev_factor) / 1000.0 * variance.sqrt();
                for &(id, rate) in &valid {
                    if rate < threshold && self.enforce(c.enforcing_success_rate) {
                        let reason = EjectionReason::SuccessRate {
                            success_rate: permille(rate),
                            mean: permille(mean),
                            threshold: (threshold * 10.0).ceil().clamp(0.0, 1000.0) as u32,
                        };
                        self.try_eject(now, id, reason);
                    }
                }
            }
        }
        if c.enforcing_failure_percentage > 0
            && total >= c.failure_percentage_minimum_hosts as usize
        {
            let valid: Vec<(BackendId, f64)> = judged
                .iter()
                .filter(|(_, v, _)| *v >= c.failure_percentage_request_volume)
                .map(|&(id, _, r)| (id, r))
                .collect();
            if !valid.is_empty() && valid.len() >= c.failure_percentage_minimum_hosts as usize {
                for &(id, rate) in &valid {
                    let failed = 100.0 - rate;
                    if failed >= f64::from(c.failure_percentage_threshold)
                        && !self.is_ejected(id)
                        && self.enforce(c.enforcing_failure_percentage)
                    {
                        let reason = EjectionReason::FailurePercentage {
                            failure_rate: permille(failed),
                        };
                        self.try_eject(now, id, reason);
                    }
                }
            }
        }
    }

    /// Ends `backend`'s ejection now if an active check passed after it began (`passed`:
    /// when a probe last passed), as Envoy's `successful_active_health_check_uneject_host`
    /// (its default) does; the ejection still counts for the next one's length. Returns
    /// whether it ended.
    pub fn uneject_if_passed(&mut self, now: Instant, backend: BackendId, passed: Instant) -> bool {
        let Some(host) = self.hosts.get(&backend) else {
            return false;
        };
        match (host.ejected_until, host.ejected_at) {
            (Some(_), Some(at)) if passed > at => {
                self.end_ejection(now, backend);
                true
            }
            _ => false,
        }
    }

    /// The ejected backends.
    pub fn ejected(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.hosts
            .iter()
            .filter(|(_, h)| h.ejected_until.is_some())
            .map(|(&b, _)| b)
    }

    /// Un-ejects every backend whose time is over at `now`, then, if the interval being
    /// counted has ended, judges it (success rate, failure percentage); the next interval
    /// starts at the next outcome. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        let over: Vec<BackendId> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.ejected_until.is_some_and(|u| u <= now))
            .map(|(&b, _)| b)
            .collect();
        for backend in over {
            self.end_ejection(now, backend);
        }
        if self.window_ends.is_some_and(|end| end <= now) {
            self.window_ends = None;
            self.judge_interval(now);
        }
    }

    /// The next ejection or un-ejection to apply.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<OutlierEvent> {
        self.events.pop_front()
    }

    /// When the earliest ejection ends, or the interval being counted does, whichever
    /// comes first.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Nothing to scan while nothing is ejected: the common case costs no walk over
        // the backends (this is asked after every outcome).
        if self.ejected == 0 {
            return self.window_ends;
        }
        let ejection = self.hosts.values().filter_map(|h| h.ejected_until).min();
        match (ejection, self.window_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn detector(n: u32, pct: u8) -> OutlierDetector {
        let c = OutlierConfig::builder()
            .consecutive_failures(3)
            .base_ejection_time(Duration::from_secs(10))
            .max_ejection_time(Duration::from_secs(25))
            .max_ejection_percent(pct)
            // The interval judgements have tests of their own.
            .enforcing_success_rate(0)
            .build()
            .unwrap();
        OutlierDetector::new(c, (0..n).map(BackendId))
    }

    fn fail(d: &mut OutlierDetector, t: Instant, id: u32, n: usize) {
        for _ in 0..n {
            d.handle_outcome(t, BackendId(id), ConnectionOutcome::Reset);
        }
    }

    /// Envoy's successful_active_health_check_uneject_host: an active check that passes
    /// after the ejection began ends it; one from before does not. The ejection still
    /// counts for the next one's length.
    #[test]
    fn a_pass_after_the_ejection_ends_it() {
        let t = now();
        let mut d = detector(4, 100);
        fail(&mut d, t, 0, 3);
        assert!(d.is_ejected(BackendId(0)));
        assert!(matches!(d.poll_event(), Some(OutlierEvent::Ejected { .. })));
        assert_eq!(d.ejected().collect::<Vec<_>>(), [BackendId(0)]);
        let before = t - Duration::from_millis(1);
        assert!(!d.uneject_if_passed(t, BackendId(0), before));
        assert!(
            !d.uneject_if_passed(t, BackendId(0), t),
            "a pass at the same instant"
        );
        let later = t + Duration::from_secs(1);
        assert!(d.uneject_if_passed(later, BackendId(0), later));
        assert!(!d.is_ejected(BackendId(0)));
        assert_eq!(d.ejected_count(), 0);
        assert_eq!(
            d.poll_event(),
            Some(OutlierEvent::Unejected {
                backend: BackendId(0)
            })
        );
        assert!(!d.uneject_if_passed(later, BackendId(0), later), "once");
        assert_eq!(d.host_state(BackendId(0)).unwrap().ejections, 1);
    }

    /// The last serving backend is not ejected: with backend 1 down by its checks and 2
    /// drained, backend 0's failures eject nothing (the ceiling, 100 %, would allow it),
    /// and its run starts again; once 1 serves again, they eject 0. Without a word from
    /// the driver every backend serves, and a lone backend is never ejected.
    #[test]
    fn the_last_serving_backend_is_not_ejected() {
        let t = now();
        let mut d = detector(3, 100);
        d.set_serving(BackendId(1), false);
        d.set_serving(BackendId(2), false);
        fail(&mut d, t, 0, 3);
        assert!(!d.is_ejected(BackendId(0)));
        assert_eq!(d.poll_event(), None);
        d.set_serving(BackendId(1), true);
        fail(&mut d, t, 0, 2);
        assert!(!d.is_ejected(BackendId(0)), "a new run of 3 is needed");
        fail(&mut d, t, 0, 1);
        assert!(d.is_ejected(BackendId(0)));
        // Now 1 is the last one serving: not ejected.
        fail(&mut d, t, 1, 3);
        assert!(!d.is_ejected(BackendId(1)));
        // A backend that does not serve may go (it takes no new connection anyway).
        fail(&mut d, t, 2, 3);
        assert!(d.is_ejected(BackendId(2)));
        // A restore follows the same rule.
        let mut e = detector(2, 100);
        e.set_serving(BackendId(1), false);
        let carried = d.host_state(BackendId(0)).unwrap();
        assert!(!e.restore(t, BackendId(0), carried).unwrap());
        let mut lone = detector(1, 100);
        fail(&mut lone, t, 0, 3);
        assert!(!lone.is_ejected(BackendId(0)));
    }

    /// Backends 0 and 1 ejected while 2 served; then 2 stops serving (its checks fail):
    /// the ejection that ends first (0's) ends now, and only that one. Nothing happens
    /// while something serves, nor when no ejected backend would serve.
    #[test]
    fn an_ejection_ends_when_nothing_else_serves() {
        let t = now();
        let mut d = detector(3, 100);
        fail(&mut d, t, 0, 3);
        fail(&mut d, t + Duration::from_secs(1), 1, 3);
        while d.poll_event().is_some() {}
        assert_eq!(d.keep_one_serving(t), None, "2 serves");
        d.set_serving(BackendId(2), false);
        let later = t + Duration::from_secs(2);
        assert_eq!(d.keep_one_serving(later), Some(BackendId(0)));
        assert_eq!(
            d.poll_event(),
            Some(OutlierEvent::Unejected {
                backend: BackendId(0)
            })
        );
        assert!(d.is_ejected(BackendId(1)));
        assert_eq!(d.ejected_count(), 1);
        assert_eq!(d.keep_one_serving(later), None, "0 serves now");
        // 0 would not serve either (drained): nothing to take back but 1.
        d.set_serving(BackendId(0), false);
        d.set_serving(BackendId(1), false);
        assert_eq!(d.keep_one_serving(later), None);
        d.set_serving(BackendId(1), true);
        assert_eq!(d.keep_one_serving(later), Some(BackendId(1)));
        assert_eq!(d.ejected_count(), 0);
        assert_eq!(d.keep_one_serving(later), None, "nothing ejected");
    }

    /// Envoy: without `max_ejection_time`, "the default value (300s) or
    /// base_ejection_time value is applied, whatever is larger"; set below the base, it is
    /// an error.
    #[test]
    fn max_ejection_time_unset_follows_a_longer_base() {
        let long = Duration::from_secs(600);
        let c = OutlierConfig::builder()
            .base_ejection_time(long)
            .build()
            .unwrap();
        assert_eq!(c.max_ejection_time(), long);
        let c = OutlierConfig::builder().build().unwrap();
        assert_eq!(c.max_ejection_time(), Duration::from_secs(300));
        assert!(OutlierConfig::builder()
            .base_ejection_time(long)
            .max_ejection_time(Duration::from_secs(300))
            .build()
            .is_err());
    }

    #[test]
    fn success_resets_the_run() {
        let t = now();
        let mut d = detector(4, 100);
        fail(&mut d, t, 0, 2);
        d.handle_outcome(t, BackendId(0), ConnectionOutcome::Success);
        fail(&mut d, t, 0, 2);
        assert_eq!(d.poll_event(), None);
        d.handle_outcome(t, BackendId(0), ConnectionOutcome::HttpStatus(503));
        assert!(matches!(d.poll_event(), Some(OutlierEvent::Ejected { .. })));
    }

    /// A backend that accepts every connection and then resets it: each connection reports
    /// `Connected`, then `Reset`. The connects do not end the run, so the third reset (the
    /// threshold) ejects, and not before. A clean end (`Success`) still ends a run.
    #[test]
    fn connected_then_reset_ejects_at_the_threshold() {
        let t = now();
        let mut d = detector(4, 100);
        for i in 1..=3 {
            d.handle_outcome(t, BackendId(0), ConnectionOutcome::Connected);
            assert!(
                !d.is_ejected(BackendId(0)),
                "ejected after {} resets",
                i - 1
            );
            d.handle_outcome(t, BackendId(0), ConnectionOutcome::Reset);
        }
        assert!(matches!(
            d.poll_event(),
            Some(OutlierEvent::Ejected {
                backend: BackendId(0),
                ejections: 1,
                ..
            })
        ));
        assert_eq!(d.ejected_count(), 1);

        // Connected, Reset, Connected, Success (a clean close), …: never three in a row.
        for _ in 0..10 {
            d.handle_outcome(t, BackendId(1), ConnectionOutcome::Connected);
            d.handle_outcome(t, BackendId(1), ConnectionOutcome::Reset);
            d.handle_outcome(t, BackendId(1), ConnectionOutcome::Connected);
            d.handle_outcome(t, BackendId(1), ConnectionOutcome::Success);
        }
        assert!(!d.is_ejected(BackendId(1)));
        assert_eq!(d.poll_event(), None);
    }

    /// The ejected counter against a scan of the hosts, after any sequence of outcomes,
    /// time passing (returns), restores, removals and additions.
    mod ejected_counter {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy)]
        enum Op {
            Fail(u32),
            Succeed(u32),
            Advance(u64),
            Restore { from: u32, to: u32 },
            Remove(u32),
            Add(u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..6u32).prop_map(Op::Fail),
                1 => (0..6u32).prop_map(Op::Succeed),
                2 => (0..40u64).prop_map(Op::Advance),
                2 => (0..6u32, 0..6u32).prop_map(|(from, to)| Op::Restore { from, to }),
                1 => (0..6u32).prop_map(Op::Remove),
                1 => (0..6u32).prop_map(Op::Add),
            ]
        }

        fn scan(d: &OutlierDetector) -> usize {
            d.hosts
                .values()
                .filter(|h| h.ejected_until.is_some())
                .count()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn matches_a_scan(pct in 0..=100u8, ops in proptest::collection::vec(op(), 0..80)) {
                let start = now();
                let mut t = start;
                let mut d = detector(5, pct);
                // A second detector whose states are restored into `d`.
                let mut other = detector(6, 100);
                for id in 0..6 {
                    fail(&mut other, t, id, 3);
                }
                for op in ops {
                    match op {
                        Op::Fail(id) => fail(&mut d, t, id, 1),
                        Op::Succeed(id) => d.handle_outcome(t, BackendId(id), ConnectionOutcome::Success),
                        Op::Advance(s) => {
                            t += Duration::from_secs(s);
                            d.handle_timeout(t);
                        }
                        Op::Restore { from, to } => {
                            let state = other.host_state(BackendId(from)).unwrap();
                            let _ = d.restore(t, BackendId(to), state);
                        }
                        Op::Remove(id) => {
                            d.remove_backend(BackendId(id));
                        }
                        Op::Add(id) => {
                            let _ = d.add_backend(BackendId(id));
                        }
                    }
                    prop_assert_eq!(d.ejected_count(), scan(&d), "after {:?}", op);
                }
                while d.poll_event().is_some() {}
            }
        }
    }

    /// The default class is Envoy's enforced one, every 5xx: five 500s eject. The gateway
    /// class ignores them.
    #[test]
    fn default_class_counts_500_and_gateway_class_ignores_it() {
        let t = now();
        // 10 backends: the default 10 % ceiling lets one go.
        let mut d = OutlierDetector::new(OutlierConfig::default(), (0..10).map(BackendId));
        for _ in 0..5 {
            d.handle_outcome(t, BackendId(0), ConnectionOutcome::HttpStatus(500));
        }
        assert!(d.is_ejected(BackendId(0)));
        let c = OutlierConfig::builder()
            .consecutive_failures(3)
            .failure_class(FailureClass::Gateway)
            .max_ejection_percent(100)
            .build()
            .unwrap();
        let mut d = OutlierDetector::new(c, (0..2).map(BackendId));
        for _ in 0..10 {
            d.handle_outcome(t, BackendId(0), ConnectionOutcome::HttpStatus(500));
        }
        assert!(!d.is_ejected(BackendId(0)));
        fail(&mut d, t, 0, 3);
        assert!(d.is_ejected(BackendId(0)));
    }

    /// An ejection the ceiling refuses ends the run, as Envoy's: once there is room, the
    /// backend needs `consecutive_failures` new failures, not one.
    #[test]
    fn a_refused_ejection_ends_the_run() {
        let t = now();
        let mut d = detector(4, 25);
        fail(&mut d, t, 0, 3);
        assert!(d.is_ejected(BackendId(0)));
        fail(&mut d, t, 1, 3);
        assert!(!d.is_ejected(BackendId(1)), "25 % of 4: one at a time");
        d.handle_timeout(t + Duration::from_secs(10));
        assert!(!d.is_ejected(BackendId(0)));
        fail(&mut d, t + Duration::from_secs(10), 1, 1);
        assert!(!d.is_ejected(BackendId(1)), "one failure after the refusal");
        fail(&mut d, t + Duration::from_secs(10), 1, 2);
        assert!(d.is_ejected(BackendId(1)), "a whole new run");
    }

    /// Envoy's backoff stops growing at the cap (`ejectHost`): after 50 ejections, 100 s
    /// of health bring the next one back to the base time (base 10 s, max 25 s: the count
    /// stops at 4, and decays by 10 in 100 s).
    #[test]
    fn backoff_stops_growing_at_the_cap() {
        let mut t = now();
        let mut d = detector(2, 100);
        for _ in 0..50 {
            fail(&mut d, t, 0, 3);
            t += Duration::from_secs(25);
            d.handle_timeout(t);
            while d.poll_event().is_some() {}
        }
        t += Duration::from_secs(100);
        fail(&mut d, t, 0, 3);
        match d.poll_event() {
            Some(OutlierEvent::Ejected {
                until, ejections, ..
            }) => {
                assert_eq!(ejections, 1);
                assert_eq!(until - t, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let mut t = now();
        let mut d = detector(2, 100);
        let mut times = Vec::new();
        for _ in 0..4 {
            fail(&mut d, t, 0, 3);
            match d.poll_event() {
                Some(OutlierEvent::Ejected { until, .. }) => {
                    times.push(until - t);
                    t = until;
                }
                other => panic!("{other:?}"),
            }
            d.handle_timeout(t);
            assert_eq!(
                d.poll_event(),
                Some(OutlierEvent::Unejected {
                    backend: BackendId(0)
                })
            );
        }
        let s = |x| Duration::from_secs(x);
        assert_eq!(times, [s(10), s(20), s(25), s(25)]);
        // Healthy for 3 base periods: the multiplier decays from 4 to 1, then 2.
        fail(&mut d, t + s(30), 0, 3);
        assert!(matches!(
            d.poll_event(),
            Some(OutlierEvent::Ejected { ejections: 2, .. })
        ));
    }

    /// `base_ejection_time` and `max_ejection_time` at `Duration::MAX` (the builder accepts
    /// them): the ejection lasts `FAR_FUTURE` instead of panicking on `Instant + Duration`.
    #[test]
    fn duration_max_ejection_does_not_overflow() {
        let t = now();
        let config = OutlierConfig::builder()
            .consecutive_failures(3)
            .base_ejection_time(Duration::MAX)
            .max_ejection_time(Duration::MAX)
            .max_ejection_percent(100)
            .enforcing_success_rate(0)
            .build()
            .unwrap();
        // Two: a lone backend is never ejected (the last serving one).
        let mut d = OutlierDetector::new(config, [BackendId(0), BackendId(1)]);
        fail(&mut d, t, 0, 3);
        let far = t + crate::tracker::FAR_FUTURE;
        assert!(matches!(
            d.poll_event(),
            Some(OutlierEvent::Ejected { until, .. }) if until == far
        ));
        assert_eq!(d.poll_timeout(), Some(far));
    }

    #[test]
    fn max_ejection_percent_is_a_ceiling() {
        let t = now();
        let mut d = detector(10, 20);
        for id in 0..10 {
            fail(&mut d, t, id, 3);
        }
        assert_eq!(d.ejected_count(), 2);
        let mut d = detector(3, 10);
        fail(&mut d, t, 0, 3);
        assert_eq!(d.ejected_count(), 0, "10% of 3 rounds to no host");
    }

    #[test]
    fn bad_config_is_typed() {
        assert!(matches!(
            OutlierConfig::builder().consecutive_failures(0).build(),
            Err(Error::InvalidThreshold { .. })
        ));
        assert!(matches!(
            OutlierConfig::builder()
                .base_ejection_time(Duration::ZERO)
                .build(),
            Err(Error::ZeroInterval { .. })
        ));
        assert!(matches!(
            OutlierConfig::builder().max_ejection_percent(101).build(),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn host_state_carries_an_ejection_to_a_new_detector() {
        let t = now();
        let mut old = detector(4, 100);
        fail(&mut old, t, 1, 3);
        let ejected = old.poll_event();
        let Some(OutlierEvent::Ejected { until, .. }) = ejected else {
            panic!("{ejected:?}")
        };
        let state = old.host_state(BackendId(1)).unwrap();
        assert_eq!(state.ejected_until(), Some(until));
        assert_eq!(state.ejections(), 1);
        assert_eq!(old.host_state(BackendId(9)), None);

        let mut new = detector(4, 100);
        assert!(new.restore(t, BackendId(1), state).unwrap());
        assert!(new.is_ejected(BackendId(1)));
        assert_eq!(
            new.poll_event(),
            Some(OutlierEvent::Ejected {
                backend: BackendId(1),
                until,
                ejections: 1,
                reason: EjectionReason::ConsecutiveFailures,
            }),
            "the pool is told, with why the ejection was made"
        );
        assert_eq!(new.poll_timeout(), Some(until), "until the same instant");
        new.handle_timeout(until);
        assert_eq!(
            new.poll_event(),
            Some(OutlierEvent::Unejected {
                backend: BackendId(1)
            })
        );
        // The multiplier came along: a second ejection right away lasts twice as long.
        fail(&mut new, until, 1, 3);
        assert!(matches!(
            new.poll_event(),
            Some(OutlierEvent::Ejected { ejections: 2, .. })
        ));
        // A backend that is not ejected restores quietly.
        let mut other = detector(4, 100);
        assert!(!other
            .restore(t, BackendId(2), old.host_state(BackendId(2)).unwrap())
            .unwrap());
        assert_eq!(other.poll_event(), None);
        assert!(matches!(
            other.restore(t, BackendId(7), state),
            Err(Error::UnknownBackend(BackendId(7)))
        ));
    }

    /// A restored ejection obeys the new detector: one already over is not applied, the
    /// new `max_ejection_time` caps it, and the ceiling may refuse it.
    #[test]
    fn restore_follows_the_new_configuration() {
        let t = now();
        let mut old = detector(4, 100);
        fail(&mut old, t, 0, 3);
        fail(&mut old, t, 1, 3);
        let (s0, s1) = (
            old.host_state(BackendId(0)).unwrap(),
            old.host_state(BackendId(1)).unwrap(),
        );
        let until = s0.ejected_until().unwrap(); // t + 10 s

        // Over by the time it is restored: back in, no event, multiplier kept.
        let mut late = detector(4, 100);
        assert!(!late.restore(until, BackendId(0), s0).unwrap());
        assert_eq!(late.poll_event(), None);
        assert_eq!(late.host_state(BackendId(0)).unwrap().ejections(), 1);

        // A shorter max_ejection_time caps the carried one.
        let short = OutlierConfig::builder()
            .consecutive_failures(3)
            .base_ejection_time(Duration::from_secs(1))
            .max_ejection_time(Duration::from_secs(2))
            .max_ejection_percent(100)
            .build()
            .unwrap();
        let mut capped = OutlierDetector::new(short, (0..4).map(BackendId));
        assert!(capped.restore(t, BackendId(0), s0).unwrap());
        assert_eq!(capped.poll_timeout(), Some(t + Duration::from_secs(2)));

        // Two backends instead of four, at most 50 % ejected: the second is refused.
        let mut two = detector(2, 50);
        assert!(two.restore(t, BackendId(0), s0).unwrap());
        assert!(!two.restore(t, BackendId(1), s1).unwrap());
        assert_eq!(two.ejected_count(), 1);
        // Restoring the ejected one again does not count it twice.
        assert!(two.restore(t, BackendId(0), s0).unwrap());
    }

    /// A detector over `n` backends judging intervals of 10 s only (consecutive failures
    /// never eject), failure percentage enforced at `fp` %.
    fn judging(n: u32, max_pct: u8, fp: u8) -> OutlierDetector {
        let c = OutlierConfig::builder()
            .consecutive_failures(u32::MAX)
            .max_ejection_percent(max_pct)
            .enforcing_failure_percentage(fp)
            .build()
            .unwrap();
        OutlierDetector::new(c, (0..n).map(BackendId))
    }

    /// `ok` successes then `bad` failures (5xx) from backend `id`.
    fn feed(d: &mut OutlierDetector, t: Instant, id: u32, ok: u32, bad: u32) {
        for _ in 0..ok {
            d.handle_outcome(t, BackendId(id), ConnectionOutcome::HttpStatus(200));
        }
        for _ in 0..bad {
            d.handle_outcome(t, BackendId(id), ConnectionOutcome::HttpStatus(500));
        }
    }

    fn ejections(d: &mut OutlierDetector) -> Vec<(BackendId, EjectionReason)> {
        std::iter::from_fn(|| d.poll_event())
            .filter_map(|e| match e {
                OutlierEvent::Ejected {
                    backend, reason, ..
                } => Some((backend, reason)),
                OutlierEvent::Unejected { .. } => None,
            })
            .collect()
    }

    /// Envoy's worked example (`successRateEjectionThreshold`): rates {50, 100, 100, 100,
    /// 100} give mean 90, stdev 20 and threshold 90 − 1.9 × 20 = 52: the 50 % backend is
    /// ejected at the end of the interval, no earlier.
    #[test]
    fn a_success_rate_outlier_is_ejected_at_the_end_of_the_interval() {
        let t = now();
        let mut d = judging(5, 100, 0);
        assert_eq!(d.poll_timeout(), None, "no interval runs before an outcome");
        feed(&mut d, t, 0, 50, 50);
        for id in 1..5 {
            feed(&mut d, t, id, 100, 0);
        }
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_secs(10)));
        d.handle_timeout(t + Duration::from_secs(9));
        assert!(ejections(&mut d).is_empty());
        d.handle_timeout(t + Duration::from_secs(10));
        assert_eq!(
            ejections(&mut d),
            [(
                BackendId(0),
                EjectionReason::SuccessRate {
                    success_rate: 500,
                    mean: 900,
                    threshold: 520
                }
            )]
        );
        assert_eq!(
            EjectionReason::SuccessRate {
                success_rate: 500,
                mean: 900,
                threshold: 520
            }
            .to_string(),
            "success rate 50.0% below the threshold 52.0% (mean 90.0%)"
        );
        // Idle: the ejection's end is the only timer; no interval runs.
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_secs(40)));
    }

    /// Fewer than `success_rate_minimum_hosts` backends with `success_rate_request_volume`
    /// outcomes: nobody is judged. Counts do not add up across intervals.
    #[test]
    fn success_rate_needs_the_volume_and_the_hosts_in_one_interval() {
        let t = now();
        let mut d = judging(5, 100, 0);
        feed(&mut d, t, 0, 50, 50);
        for id in 1..4 {
            feed(&mut d, t, id, 100, 0);
        }
        feed(&mut d, t, 4, 99, 0); // one short of the volume: four hosts judged
        d.handle_timeout(t + Duration::from_secs(10));
        assert!(ejections(&mut d).is_empty());
        assert_eq!(
            d.poll_timeout(),
            None,
            "the next interval waits for an outcome"
        );
        // Next interval: backend 0 fails half of 60 (below the volume) and the others
        // succeed; the previous interval's 100 do not count.
        let t2 = t + Duration::from_secs(15);
        feed(&mut d, t2, 0, 30, 30);
        for id in 1..5 {
            feed(&mut d, t2, id, 100, 0);
        }
        assert_eq!(d.poll_timeout(), Some(t2 + Duration::from_secs(10)));
        d.handle_timeout(t2 + Duration::from_secs(10));
        assert!(ejections(&mut d).is_empty());
    }

    /// Failure percentage: off by default (Envoy's `enforcing_failure_percentage` 0); on,
    /// a backend whose failures reach the threshold (85 %) is ejected even when the
    /// success-rate judgement has too little volume to run. Connection failures count.
    #[test]
    fn failure_percentage_ejects_when_enforced() {
        let t = now();
        for (fp, want) in [(0, false), (100, true)] {
            let mut d = judging(5, 100, fp);
            // 9 of 60 succeed: 85 % failed.
            feed(&mut d, t, 0, 9, 30);
            for _ in 0..21 {
                d.handle_outcome(t, BackendId(0), ConnectionOutcome::ConnectFailure);
            }
            for id in 1..5 {
                feed(&mut d, t, id, 60, 0);
            }
            d.handle_timeout(t + Duration::from_secs(10));
            let got = ejections(&mut d);
            if want {
                assert_eq!(
                    got,
                    [(
                        BackendId(0),
                        EjectionReason::FailurePercentage { failure_rate: 850 }
                    )]
                );
            } else {
                assert!(got.is_empty(), "{got:?}");
            }
        }
    }

    /// The ceiling holds for interval ejections too: two outliers of ten, at most 10 %.
    #[test]
    fn interval_ejections_respect_the_ceiling() {
        let t = now();
        let mut d = judging(10, 10, 0);
        feed(&mut d, t, 0, 50, 50);
        feed(&mut d, t, 1, 50, 50);
        for id in 2..10 {
            feed(&mut d, t, id, 100, 0);
        }
        d.handle_timeout(t + Duration::from_secs(10));
        let got = ejections(&mut d);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(d.ejected_count(), 1);
    }

    /// Every backend at 100 %: the deviation is 0, the threshold the mean, nobody below.
    /// A 5xx with `FailureClass::Gateway` still counts against the success rate (Envoy
    /// counts every 5xx there).
    #[test]
    fn success_rate_counts_every_5xx() {
        let t = now();
        let c = OutlierConfig::builder()
            .consecutive_failures(u32::MAX)
            .failure_class(FailureClass::Gateway)
            .max_ejection_percent(100)
            .build()
            .unwrap();
        let mut d = OutlierDetector::new(c, (0..5).map(BackendId));
        for id in 0..5 {
            feed(&mut d, t, id, 100, 0);
        }
        d.handle_timeout(t + Duration::from_secs(10));
        assert!(ejections(&mut d).is_empty());
        let t2 = t + Duration::from_secs(20);
        feed(&mut d, t2, 0, 50, 50); // 500s: not gateway errors
        for id in 1..5 {
            feed(&mut d, t2, id, 100, 0);
        }
        d.handle_timeout(t2 + Duration::from_secs(10));
        assert_eq!(ejections(&mut d).len(), 1);
    }

    /// `enforcing_success_rate` 50: about half of the outliers are ejected, as drawn from
    /// the detector's seed.
    #[test]
    fn enforcement_is_a_chance() {
        let t = now();
        let c = OutlierConfig::builder()
            .consecutive_failures(u32::MAX)
            .max_ejection_percent(100)
            .enforcing_success_rate(50)
            .build()
            .unwrap();
        let mut ejected = 0;
        for seed in 0..200 {
            let mut d = OutlierDetector::new(c.clone(), (0..5).map(BackendId)).with_seed(seed);
            feed(&mut d, t, 0, 50, 50);
            for id in 1..5 {
                feed(&mut d, t, id, 100, 0);
            }
            d.handle_timeout(t + Duration::from_secs(10));
            ejected += ejections(&mut d).len();
        }
        assert!((70..=130).contains(&ejected), "{ejected} of 200");
    }
}
