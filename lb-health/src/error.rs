//! The error type of `lb-health`: configuration refused at construction.
//!
//! Probe failures are never errors: a backend that refuses, hangs or answers garbage yields a
//! [`ProbeOutcome`](crate::ProbeOutcome) with [`Health::Down`](lb_core::Health::Down) and a
//! reason. Errors are only for settings an operator got wrong, so they surface when the
//! configuration is built, before any probe runs.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_health::{Error, HealthCheckConfig, StatusSet};
//!
//! let err = HealthCheckConfig::haproxy().inter(Duration::ZERO).build().unwrap_err();
//! assert_eq!(err, Error::ZeroInterval { setting: "interval", value: Duration::ZERO });
//! assert_eq!(err.to_string(), "interval must be greater than zero, got 0ns");
//! assert!(matches!("500-200".parse::<StatusSet>(), Err(Error::InvalidStatusRange(_))));
//! ```

use std::time::Duration;

/// Errors from building health-check configurations, probes and detectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `rise` or `fall` (HAProxy), `healthy_threshold`/`unhealthy_threshold` (AWS) of 0:
    /// a backend could then never change state, or would change on no evidence.
    #[error("{setting} must be at least 1, got {value}")]
    InvalidThreshold {
        /// The setting as operators name it (`rise`, `fall`).
        setting: &'static str,
        /// The refused value.
        value: u32,
    },
    /// A zero duration where a period is required (`inter`, `delay_loop`, `fastinter`,
    /// `downinter`, `timeout`, `connect_timeout`, `base_ejection_time`).
    #[error("{setting} must be greater than zero, got {value:?}")]
    ZeroInterval {
        /// The setting as operators name it.
        setting: &'static str,
        /// The refused value (always zero; kept for the message).
        value: Duration,
    },
    /// An expected-status list that does not parse (`"200-299,302"` is valid; `"299-200"`,
    /// `"abc"`, `"99"` and `""` are not).
    #[error("invalid HTTP status list {0:?}: expected codes or ranges in 100..=599 like \"200-299,302\"")]
    InvalidStatusRange(String),
    /// A keepalived `digest` that is not 32 hexadecimal digits (an MD5 sum).
    #[error("invalid MD5 digest {0:?}: expected 32 hexadecimal digits")]
    InvalidDigest(String),
    /// A keepalived hex string (`UDP_CHECK` `payload` or `require_reply`) that does not
    /// parse: a character other than a hex digit, space or tab (or `x`/`X` where wildcards
    /// are allowed), or no octet at all (keepalived lib/utils.c `read_hex_str`).
    #[error("invalid hex string {value:?}: {reason}")]
    InvalidHex {
        /// The refused string.
        value: String,
        /// What is wrong, naming the offending character and its byte offset.
        reason: String,
    },
    /// Any other setting outside its domain (the message names the setting and the value).
    #[error("invalid {setting}: {reason}")]
    InvalidConfig {
        /// The setting, with the name operators use (`spread_checks`, `max_ejection_percent`, ...).
        setting: &'static str,
        /// Why the value was refused, including the value.
        reason: String,
    },
    /// A backend was registered twice with one driver or detector.
    #[error("backend {0} is already registered")]
    DuplicateBackend(lb_core::BackendId),
    /// A backend the detector was not given.
    #[error("backend {0} is not registered")]
    UnknownBackend(lb_core::BackendId),
    /// A `bfd_instance` refused: its settings, or a socket it needs (the message names the
    /// instance, then what is wrong).
    #[error("bfd_instance {instance}: {source}")]
    BfdInstance {
        /// The instance name.
        instance: String,
        /// What is wrong with it.
        source: Box<Self>,
    },
    /// Two `bfd_instance`s with one name, or with one neighbor and source address
    /// (keepalived refuses both).
    #[error("duplicate bfd_instance {0}")]
    DuplicateBfdInstance(String),
    /// A request to a BFD speaker that is not running: `reconfigure` before `run` has
    /// started, or after it returned or began shutting down.
    #[error("the BFD speaker is not running")]
    BfdSpeakerNotRunning,
    /// A socket operation failed (bind, setsockopt, send, receive); `what` says which and
    /// on what address.
    #[error("{what}: {reason}")]
    Socket {
        /// The operation and address, e.g. `bind 198.18.0.1:3784`.
        what: String,
        /// The operating system's error.
        reason: String,
    },
    /// An error from `lb-core` while applying health to a pool (an unknown backend id).
    #[error(transparent)]
    Core(#[from] lb_core::Error),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
