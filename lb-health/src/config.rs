//! How often to probe, how long to wait, and how much evidence flips a backend: every setting
//! of keepalived, HAProxy and AWS target groups, with the meaning each source gives it.
//!
//! | concept | keepalived | HAProxy | AWS target group | here |
//! |---|---|---|---|---|
//! | period between checks | `delay_loop` | `inter` | `HealthCheckIntervalSeconds` | [`interval`](HealthCheckConfigBuilder::interval) |
//! | period while changing state | — | `fastinter` | — | [`fastinter`](HealthCheckConfigBuilder::fastinter) |
//! | period while down | — | `downinter` | — | [`downinter`](HealthCheckConfigBuilder::downinter) |
//! | probe timeout | `connect_timeout`, `misc_timeout` | `timeout check` | `HealthCheckTimeoutSeconds` | [`timeout`](HealthCheckConfigBuilder::timeout) |
//! | successes to go up | (1) | `rise` | `HealthyThresholdCount` | [`rise`](HealthCheckConfigBuilder::rise) |
//! | failures to go down | (1) | `fall` | `UnhealthyThresholdCount` | [`fall`](HealthCheckConfigBuilder::fall) |
//! | retries inside one check | `retry` / `nb_get_retry` | — | — | [`retry`](HealthCheckConfigBuilder::retry) |
//! | pause before a retry | `delay_before_retry` | — | — | [`delay_before_retry`](HealthCheckConfigBuilder::delay_before_retry) |
//! | start down until proven up | `alpha` | (`init-state down`) | (`initial`) | [`alpha`](HealthCheckConfigBuilder::alpha) |
//! | randomise the period | — | `spread-checks` | — | [`spread_checks`](HealthCheckConfigBuilder::spread_checks) |
//! | delay the first check | `warmup` | (spread over `inter`) | — | [`warmup`](HealthCheckConfigBuilder::warmup) |
//!
//! Thresholds count *consecutive* check results, as pingora's `consecutive_success` /
//! `consecutive_failure` and AWS's thresholds do. (HAProxy's single health counter lets a
//! success undo one earlier failure instead of resetting the run; with strictly alternating
//! results both never flip.)
//!
//! # Examples
//!
//! The keepalived `TCP_CHECK` our users run (`delay_loop 6`, `connect_timeout 3`,
//! `nb_get_retry 3`, `delay_before_retry 3`):
//!
//! ```
//! use std::time::Duration;
//! use lb_health::HealthCheckConfig;
//!
//! let config = HealthCheckConfig::keepalived()
//!     .delay_loop(Duration::from_secs(6))
//!     .connect_timeout(Duration::from_secs(3))
//!     .nb_get_retry(3)
//!     .delay_before_retry(Duration::from_secs(3))
//!     .build()?;
//! assert_eq!(config.interval(), Duration::from_secs(6));
//! assert_eq!(config.retries(), 3);
//! assert_eq!((config.thresholds().rise, config.thresholds().fall), (1, 1));
//!
//! // Bad input is a typed error at construction.
//! assert!(HealthCheckConfig::haproxy().rise(0).build().is_err());
//! assert!(HealthCheckConfig::haproxy().inter(Duration::ZERO).build().is_err());
//! # Ok::<(), lb_health::Error>(())
//! ```

use std::time::Duration;

use crate::error::{Error, Result};

/// How many consecutive check results flip a backend (HAProxy `rise`/`fall`, pingora
/// `consecutive_success`/`consecutive_failure`, AWS healthy/unhealthy threshold counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thresholds {
    /// Consecutive successful checks that bring a down backend up (≥ 1).
    pub rise: u32,
    /// Consecutive failed checks that bring an up backend down (≥ 1).
    pub fall: u32,
}

impl Thresholds {
    /// Validated thresholds.
    ///
    /// # Errors
    /// [`Error::InvalidThreshold`] when `rise` or `fall` is 0.
    pub fn new(rise: u32, fall: u32) -> Result<Self> {
        if rise == 0 {
            return Err(Error::InvalidThreshold {
                setting: "rise",
                value: rise,
            });
        }
        if fall == 0 {
            return Err(Error::InvalidThreshold {
                setting: "fall",
                value: fall,
            });
        }
        Ok(Self { rise, fall })
    }
}

impl Default for Thresholds {
    /// HAProxy's defaults: `rise 2`, `fall 3`.
    fn default() -> Self {
        Self { rise: 2, fall: 3 }
    }
}

/// The health a backend has before its first check completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartState {
    /// A fresh start: serve traffic at once, but until a check passes one failed check
    /// takes the backend down, whatever `fall` (HAProxy's default: a server starts up "but
    /// will fall down at first failure", `check.health = check.rise`; keepalived without
    /// `alpha`, which has no `fall`, is the same). Once a check passed, `fall` consecutive
    /// failures are needed.
    #[default]
    Up,
    /// Take no traffic until `rise` consecutive successes (keepalived `alpha`, HAProxy
    /// `init-state down`, AWS targets in the `initial` state).
    Down,
    /// Up with a verdict known from before (a check that a reload replaced had found the
    /// backend up): `fall` consecutive failures take it down, as for any backend whose
    /// checks pass.
    Established,
}

/// A validated health-check configuration (see the [module docs](self) for the mapping of
/// every keepalived, HAProxy and AWS setting). Build it with [`HealthCheckConfig::builder`]
/// or one of the presets [`keepalived`](Self::keepalived), [`haproxy`](Self::haproxy),
/// [`aws`](Self::aws).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    thresholds: Thresholds,
    interval: Duration,
    fastinter: Option<Duration>,
    downinter: Option<Duration>,
    timeout: Duration,
    retries: u32,
    delay_before_retry: Duration,
    start: StartState,
    spread_percent: u8,
    warmup: Option<Duration>,
    seed: u64,
}

impl Default for HealthCheckConfig {
    /// The same as `HealthCheckConfig::builder().build()`: HAProxy's defaults.
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            interval: Duration::from_secs(2),
            fastinter: None,
            downinter: None,
            timeout: Duration::from_secs(2),
            retries: 0,
            delay_before_retry: Duration::from_secs(1),
            start: StartState::Up,
            spread_percent: 0,
            warmup: None,
            seed: DEFAULT_SEED,
        }
    }
}

/// The fixed seed of the probe jitter, so every node spreads the same backends the same way.
pub const DEFAULT_SEED: u64 = 0x6c62_2d68_6561_6c74; // "lb-healt"

impl HealthCheckConfig {
    /// A builder with HAProxy's defaults:
    ///
    /// - `rise 2`, `fall 3`;
    /// - `inter 2s`, no `fastinter`/`downinter` (both fall back to `inter`);
    /// - `timeout 2s` (HAProxy uses `inter` when `timeout check` is unset);
    /// - no retries inside a check, `delay_before_retry 1s` (unused without retries);
    /// - start up, no spread, no warm-up, seed [`DEFAULT_SEED`].
    pub fn builder() -> HealthCheckConfigBuilder {
        HealthCheckConfigBuilder {
            config: Self::default(),
        }
    }

    /// A builder with HAProxy's defaults; the same as [`builder`](Self::builder).
    pub fn haproxy() -> HealthCheckConfigBuilder {
        Self::builder()
    }

    /// A builder with keepalived's defaults for `TCP_CHECK`/`HTTP_GET`/`MISC_CHECK`:
    ///
    /// - one check result flips the state (keepalived has no rise/fall: `rise 1`, `fall 1`);
    /// - `delay_loop 60s`, `connect_timeout 5s`;
    /// - `retry 1` (alias `nb_get_retry`), `delay_before_retry 1s`;
    /// - start up (no `alpha`).
    pub fn keepalived() -> HealthCheckConfigBuilder {
        let mut b = Self::builder();
        b.config.thresholds = Thresholds { rise: 1, fall: 1 };
        b.config.interval = Duration::from_secs(60);
        b.config.timeout = Duration::from_secs(5);
        b.config.retries = 1;
        b.config.delay_before_retry = Duration::from_secs(1);
        b
    }

    /// A builder with the AWS target-group settings the issue names:
    ///
    /// - `HealthCheckIntervalSeconds 5`, `HealthCheckTimeoutSeconds 2`;
    /// - `HealthyThresholdCount 2`, `UnhealthyThresholdCount 2`;
    /// - new targets start down (`initial`) until they pass.
    pub fn aws() -> HealthCheckConfigBuilder {
        let mut b = Self::builder();
        b.config.thresholds = Thresholds { rise: 2, fall: 2 };
        b.config.interval = Duration::from_secs(5);
        b.config.timeout = Duration::from_secs(2);
        b.config.start = StartState::Down;
        b
    }

    /// Consecutive results needed to flip.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Period between checks while the backend is steady (HAProxy `inter`, keepalived
    /// `delay_loop`, AWS interval).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Period while the backend is changing state (HAProxy `fastinter`); `None` uses
    /// [`interval`](Self::interval).
    pub fn fastinter(&self) -> Option<Duration> {
        self.fastinter
    }

    /// Period while the backend is down (HAProxy `downinter`); `None` uses
    /// [`interval`](Self::interval).
    pub fn downinter(&self) -> Option<Duration> {
        self.downinter
    }

    /// How long one probe may take before it counts as failed (keepalived
    /// `connect_timeout`, HAProxy `timeout check`, AWS timeout).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Extra attempts inside one check before it counts as failed (keepalived `retry`,
    /// formerly `nb_get_retry`), taken only while the backend is up: a down backend is
    /// probed once per period, as keepalived does.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Pause before each retry inside a check (keepalived `delay_before_retry`).
    pub fn delay_before_retry(&self) -> Duration {
        self.delay_before_retry
    }

    /// The health before the first result.
    pub fn start(&self) -> StartState {
        self.start
    }

    /// Bound of the random spread of each period, in percent of the period, 0..=50
    /// (HAProxy `spread-checks`).
    pub fn spread_percent(&self) -> u8 {
        self.spread_percent
    }

    /// Upper bound of the delay before the first check (keepalived `warmup`); `None` probes at
    /// once.
    pub fn warmup(&self) -> Option<Duration> {
        self.warmup
    }

    /// Seed of the deterministic jitter.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The period after a completed check, by state: `inter` when steady, `fastinter` while
    /// changing state, `downinter` while down (HAProxy `srv_getinter`).
    pub(crate) fn period(&self, steady_up: bool, steady_down: bool) -> Duration {
        if steady_up {
            self.interval
        } else if steady_down {
            self.downinter.unwrap_or(self.interval)
        } else {
            self.fastinter.unwrap_or(self.interval)
        }
    }
}

/// Builds a [`HealthCheckConfig`]; settings are named as operators know them, with aliases
/// for each source. Nothing is checked until [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct HealthCheckConfigBuilder {
    config: HealthCheckConfig,
}

impl HealthCheckConfigBuilder {
    /// Consecutive successes to go up (HAProxy `rise`).
    pub fn rise(mut self, rise: u32) -> Self {
        self.config.thresholds.rise = rise;
        self
    }

    /// Consecutive failures to go down (HAProxy `fall`).
    pub fn fall(mut self, fall: u32) -> Self {
        self.config.thresholds.fall = fall;
        self
    }

    /// Both thresholds (unchecked until `build`).
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.config.thresholds = thresholds;
        self
    }

    /// AWS `HealthyThresholdCount`: the same as [`rise`](Self::rise).
    pub fn healthy_threshold(self, count: u32) -> Self {
        self.rise(count)
    }

    /// AWS `UnhealthyThresholdCount`: the same as [`fall`](Self::fall).
    pub fn unhealthy_threshold(self, count: u32) -> Self {
        self.fall(count)
    }

    /// Period between checks, > 0.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// HAProxy `inter`: the same as [`interval`](Self::interval).
    pub fn inter(self, inter: Duration) -> Self {
        self.interval(inter)
    }

    /// keepalived `delay_loop`: the same as [`interval`](Self::interval).
    pub fn delay_loop(self, delay_loop: Duration) -> Self {
        self.interval(delay_loop)
    }

    /// HAProxy `fastinter`: the period while a backend is changing state, > 0.
    pub fn fastinter(mut self, fastinter: Duration) -> Self {
        self.config.fastinter = Some(fastinter);
        self
    }

    /// HAProxy `downinter`: the period while a backend is down, > 0.
    pub fn downinter(mut self, downinter: Duration) -> Self {
        self.config.downinter = Some(downinter);
        self
    }

    /// Per-probe timeout, > 0.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// keepalived `connect_timeout`: the same as [`timeout`](Self::timeout).
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.timeout(timeout)
    }

    /// keepalived `misc_timeout` (`MISC_CHECK`): the same as [`timeout`](Self::timeout).
    pub fn misc_timeout(self, timeout: Duration) -> Self {
        self.timeout(timeout)
    }

    /// keepalived `retry`: extra attempts inside one check before it fails, while the
    /// backend is up (a down backend is not retried); 0 for none.
    pub fn retry(mut self, retries: u32) -> Self {
        self.config.retries = retries;
        self
    }

    /// keepalived `nb_get_retry` (the pre-2.0 name of `retry`).
    pub fn nb_get_retry(self, retries: u32) -> Self {
        self.retry(retries)
    }

    /// keepalived `delay_before_retry`: pause before each retry (zero allowed).
    pub fn delay_before_retry(mut self, delay: Duration) -> Self {
        self.config.delay_before_retry = delay;
        self
    }

    /// The health before the first result.
    pub fn start(mut self, start: StartState) -> Self {
        self.config.start = start;
        self
    }

    /// keepalived `alpha`: `true` starts the backend down until proven up, `false` starts
    /// it [`StartState::Up`].
    pub fn alpha(self, alpha: bool) -> Self {
        self.start(if alpha {
            StartState::Down
        } else {
            StartState::Up
        })
    }

    /// HAProxy `spread-checks`: each period is spread by up to ± this percentage (0..=50).
    pub fn spread_checks(mut self, percent: u8) -> Self {
        self.config.spread_percent = percent;
        self
    }

    /// keepalived `warmup`: the first check waits a deterministic delay in `[0, warmup)`,
    /// spreading many backends' first checks.
    pub fn warmup(mut self, warmup: Duration) -> Self {
        self.config.warmup = Some(warmup);
        self
    }

    /// Seed of the jitter (default [`DEFAULT_SEED`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// - [`Error::InvalidThreshold`]: `rise` or `fall` is 0;
    /// - [`Error::ZeroInterval`]: `interval`, `fastinter`, `downinter` or `timeout` is zero;
    /// - [`Error::InvalidConfig`]: `spread_checks` above 50.
    pub fn build(self) -> Result<HealthCheckConfig> {
        let c = self.config;
        Thresholds::new(c.thresholds.rise, c.thresholds.fall)?;
        nonzero("interval", c.interval)?;
        if let Some(d) = c.fastinter {
            nonzero("fastinter", d)?;
        }
        if let Some(d) = c.downinter {
            nonzero("downinter", d)?;
        }
        nonzero("timeout", c.timeout)?;
        if c.spread_percent > 50 {
            return Err(Error::InvalidConfig {
                setting: "spread_checks",
                reason: format!("{}% is above 50%", c.spread_percent),
            });
        }
        Ok(c)
    }
}

fn nonzero(setting: &'static str, value: Duration) -> Result<()> {
    if value.is_zero() {
        Err(Error::ZeroInterval { setting, value })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors() {
        assert_eq!(
            HealthCheckConfig::builder().rise(0).build(),
            Err(Error::InvalidThreshold {
                setting: "rise",
                value: 0
            })
        );
        assert_eq!(
            HealthCheckConfig::builder().fall(0).build(),
            Err(Error::InvalidThreshold {
                setting: "fall",
                value: 0
            })
        );
        assert_eq!(
            HealthCheckConfig::builder()
                .fastinter(Duration::ZERO)
                .build(),
            Err(Error::ZeroInterval {
                setting: "fastinter",
                value: Duration::ZERO
            })
        );
        assert!(matches!(
            HealthCheckConfig::builder().timeout(Duration::ZERO).build(),
            Err(Error::ZeroInterval {
                setting: "timeout",
                ..
            })
        ));
        assert!(matches!(
            HealthCheckConfig::builder().spread_checks(51).build(),
            Err(Error::InvalidConfig { .. })
        ));
        let msg = Thresholds::new(2, 0).unwrap_err().to_string();
        assert_eq!(msg, "fall must be at least 1, got 0");
    }

    #[test]
    fn presets() {
        let aws = HealthCheckConfig::aws().build().unwrap();
        assert_eq!(aws.interval(), Duration::from_secs(5));
        assert_eq!(aws.timeout(), Duration::from_secs(2));
        assert_eq!(aws.thresholds(), Thresholds { rise: 2, fall: 2 });
        assert_eq!(aws.start(), StartState::Down);
        let k = HealthCheckConfig::keepalived().alpha(true).build().unwrap();
        assert_eq!(k.start(), StartState::Down);
        assert_eq!(k.retries(), 1);
    }

    #[test]
    fn period_by_state() {
        let c = HealthCheckConfig::builder()
            .inter(Duration::from_secs(2))
            .fastinter(Duration::from_millis(500))
            .downinter(Duration::from_secs(10))
            .build()
            .unwrap();
        assert_eq!(c.period(true, false), Duration::from_secs(2));
        assert_eq!(c.period(false, true), Duration::from_secs(10));
        assert_eq!(c.period(false, false), Duration::from_millis(500));
        let plain = HealthCheckConfig::default();
        assert_eq!(plain.period(false, false), plain.interval());
        assert_eq!(plain.period(false, true), plain.interval());
    }
}
