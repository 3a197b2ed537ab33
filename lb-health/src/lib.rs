//! Health checking for lb: which backends are alive, decided the way keepalived, HAProxy and
//! cloud load balancers decide it, and reported to `lb-core`.
//!
//! This crate owns:
//!
//! * [`config`]: [`HealthCheckConfig`], every keepalived (`delay_loop`, `connect_timeout`,
//!   `retry`/`nb_get_retry`, `delay_before_retry`, `alpha`, `warmup`), HAProxy (`inter`,
//!   `fastinter`, `downinter`, `rise`, `fall`, `spread-checks`) and AWS (interval, timeout,
//!   healthy/unhealthy thresholds) setting with its meaning, validated at construction;
//! * [`tracker`]: the sans-IO [`HealthTracker`], one per backend: fed [`ProbeOutcome`]s and
//!   the time, it returns [`Transition`]s and the next deadline;
//! * [`outlier`]: passive health, the sans-IO [`OutlierDetector`] (Envoy outlier detection);
//! * [`pool`]: [`PoolApplier`], which applies both to an [`lb_core::Pool`] with keepalived's
//!   `inhibit_on_failure` choice;
//! * `probe` (feature `tokio`): the async [`Probe`] trait and its TCP, UDP, ICMP echo
//!   (`PING_CHECK`), exec (`MISC_CHECK`) and, with feature `http`, HTTP/HTTPS
//!   (`HTTP_GET`/`SSL_GET`) and gRPC health (`grpc.health.v1`) probes, and
//!   `AllOf` (several probes that must all pass as one check: an `HTTP_GET`'s urls; several
//!   checks of one backend on their own schedules are `HealthDriver::add_checks`);
//! * [`bfd`]: BFD (RFC 5880/5881, keepalived's `bfd_instance`): the packet codec and the
//!   sans-IO [`bfd::Session`] always, and with feature `tokio` the
//!   `BfdSpeaker` that drives every session over UDP;
//! * `driver` (feature `tokio`): [`HealthDriver`], which runs thousands of checks as tokio
//!   tasks and publishes typed [`HealthEvent`]s to any number of subscribers.
//!
//! It does not parse keepalived.conf or haproxy.cfg (the daemon maps them onto
//! [`HealthCheckConfig`]), and it does not forward traffic: the proxy reports connection
//! outcomes to the [`OutlierDetector`]. Without the `tokio` feature it does no IO and reads
//! no clock: time comes in as `now` arguments.
//!
//! # Features
//!
//! * `tokio` (default): probes and the driver.
//! * `http` (default, implies `tokio`): the HTTP, HTTPS and gRPC probes (hyper 1.x,
//!   rustls/ring).
//!
//! # Examples
//!
//! A sans-IO round trip (see `examples/checker_load.rs` and the `driver` module for the
//! tokio side):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::{BackendId, Health};
//! use lb_health::{HealthCheckConfig, HealthTracker, ProbeOutcome};
//!
//! // AWS: start down, 2 passes to go up.
//! let config = HealthCheckConfig::aws().build()?;
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now();
//! let mut tracker = HealthTracker::new(BackendId(7), config, t0);
//! assert_eq!(tracker.health(), Health::Down);
//! let ok = || ProbeOutcome::up("connected", Duration::from_micros(90));
//! assert!(tracker.handle_result(t0, ok()).is_none());
//! assert_eq!(tracker.handle_result(t0 + Duration::from_secs(5), ok()).unwrap().new, Health::Up);
//! # Ok::<(), lb_health::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod bfd;
pub mod config;
pub mod error;
pub mod outlier;
pub mod pool;
pub mod status;
pub mod tracker;

#[cfg(feature = "tokio")]
pub mod driver;
#[cfg(feature = "tokio")]
pub mod probe;

pub use config::{HealthCheckConfig, HealthCheckConfigBuilder, StartState, Thresholds};
pub use error::{Error, Result};
pub use outlier::{
    ConnectionOutcome, OutlierConfig, OutlierDetector, OutlierEvent, OutlierHostState,
};
pub use pool::{OnFailure, PoolApplier};
pub use status::StatusSet;
pub use tracker::{
    CheckState, HealthEvent, HealthTracker, ProbeOutcome, ProbeRequest, Reason, Transition,
};

#[cfg(feature = "tokio")]
pub use driver::{CheckStates, HealthDriver};
#[cfg(feature = "tokio")]
pub use probe::Probe;
