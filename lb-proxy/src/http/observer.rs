//! How passive health hears about backend behaviour: the proxy reports the outcome of every
//! request it sends to a backend to an [`OutcomeObserver`]. A passive health tracker (Envoy
//! outlier detection, HAProxy `observe layer7`) counts consecutive failures and marks the
//! backend down in the shared [`lb_core::Pool`], which this mode then stops selecting.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Instant;
//! use lb_core::Backend;
//! use lb_proxy::http::{BackendOutcome, OutcomeObserver};
//!
//! /// Counts consecutive failures per process (a real tracker keys on the backend id).
//! #[derive(Debug, Default)]
//! struct Consecutive(AtomicU32);
//!
//! impl OutcomeObserver for Consecutive {
//!     fn on_outcome(&self, _pool: &str, _backend: &Backend, outcome: BackendOutcome, _now: Instant) {
//!         if outcome.is_failure() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         } else {
//!             self.0.store(0, Ordering::Relaxed);
//!         }
//!     }
//! }
//! let o = Consecutive::default();
//! let b = Backend::new(lb_core::BackendId(1), "127.0.0.1:80".parse().unwrap());
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! o.on_outcome("web", &b, BackendOutcome::ConnectFailure, now);
//! assert_eq!(o.0.load(Ordering::Relaxed), 1);
//! ```

use std::fmt;
use std::time::Instant;

use http::StatusCode;
use lb_core::Backend;

/// What happened to one request sent to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendOutcome {
    /// A response head arrived (any status below 500, or 5xx when
    /// [`PassiveHealth::count_5xx`](super::PassiveHealth::count_5xx) is off).
    Success(StatusCode),
    /// A 5xx response, reported as a failure because `count_5xx` is on (Envoy
    /// `consecutive_5xx`).
    ServerError(StatusCode),
    /// The TCP connect (or HTTP handshake) failed or timed out.
    ConnectFailure,
    /// No response head within the backend response timeout.
    Timeout,
    /// The connection broke before a response head arrived.
    Broken,
}

impl BackendOutcome {
    /// Whether passive health should count this against the backend.
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Success(_))
    }
}

/// Receives the outcome of every request sent to a backend. Called on the data path: must
/// not block (record and return; act elsewhere).
pub trait OutcomeObserver: Send + Sync + fmt::Debug {
    /// One request to `backend` of pool `pool` ended as `outcome` at `now`.
    fn on_outcome(&self, pool: &str, backend: &Backend, outcome: BackendOutcome, now: Instant);
}
