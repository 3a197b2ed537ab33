//! What the data path learns about backends, reported to an [`OutcomeObserver`].
//!
//! The daemon wires the observer to `lb-health`'s passive outlier detection (consecutive
//! connect failures eject a backend); `lb-proxy` does not depend on `lb-health`. Every
//! outcome is also counted in the backend's `lb_core::BackendStats`.
//!
//! Observers are called on the data path: they must not block (no locks held across IO, no
//! IO). Push into a channel or update atomics.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use lb_core::{Backend, BackendId};
//! use lb_proxy::outcome::{Outcome, OutcomeObserver};
//!
//! #[derive(Debug, Default)]
//! struct CountFailures(AtomicU64);
//! impl OutcomeObserver for CountFailures {
//!     fn observe(&self, _backend: &Backend, outcome: &Outcome) {
//!         if outcome.is_failure() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//! let obs = CountFailures::default();
//! let b = Backend::new(BackendId(1), "192.0.2.151:82".parse().unwrap());
//! obs.observe(&b, &Outcome::ConnectRefused);
//! assert_eq!(obs.0.load(Ordering::Relaxed), 1);
//! ```

use std::fmt;
use std::io;
use std::time::Duration;

use lb_core::Backend;

use crate::tcp::ForwardStats;

/// One thing that happened with a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A connection (or request) succeeded; `latency` is the connect time (L4) or the time
    /// to response headers (HTTP).
    Success {
        /// Connect time / time to first byte.
        latency: Duration,
    },
    /// The backend actively refused (RST to SYN, ECONNREFUSED).
    ConnectRefused,
    /// No answer within the connect timeout.
    ConnectTimeout,
    /// Connecting failed otherwise (unreachable, reset, local error).
    ConnectError(io::ErrorKind),
    /// An established connection ended (L4): bytes moved and how long it lived.
    Closed {
        /// Bytes in each direction.
        stats: ForwardStats,
        /// Whether the backend broke it (reset, write error) rather than closing cleanly.
        backend_error: bool,
    },
    /// An HTTP response with a server-error status (5xx), for HTTP mode's outlier detection.
    HttpServerError {
        /// The status code.
        status: u16,
    },
}

impl Outcome {
    /// Whether this counts against the backend for passive health (connect failures, broken
    /// connections, 5xx).
    pub fn is_failure(&self) -> bool {
        match self {
            Self::Success { .. } => false,
            Self::Closed { backend_error, .. } => *backend_error,
            _ => true,
        }
    }
}

/// Receives [`Outcome`]s from the data path (see the [module docs](self)).
pub trait OutcomeObserver: Send + Sync + fmt::Debug {
    /// Called once per outcome, on the data path; must not block.
    fn observe(&self, backend: &Backend, outcome: &Outcome);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl OutcomeObserver for NoopObserver {
    fn observe(&self, _backend: &Backend, _outcome: &Outcome) {}
}
