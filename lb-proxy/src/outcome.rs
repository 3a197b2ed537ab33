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
///
/// A connection or request that got through gives two reports: [`Connected`](Self::Connected)
/// when it is established (the connect, a UDP session opened, a response head), then its
/// final result, a success ([`Success`](Self::Success), or [`Closed`](Self::Closed) without
/// `backend_error`) or a failure. Only the final result ends a run of failures for passive
/// health: a backend that accepts connections and then breaks them is a failing backend
/// (Envoy keeps `LocalOriginConnectSuccess` apart from `LocalOriginConnectSuccessFinal`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A connection (or request) was established and is under way; its final result
    /// follows: [`Closed`](Self::Closed) (L4), [`Success`](Self::Success) or a failure
    /// (HTTP), or for UDP [`Closed`](Self::Closed) or [`ConnectRefused`](Self::ConnectRefused)
    /// at the session's end. Not a failure, and not a success that ends a run of failures.
    Connected {
        /// Connect time (L4; zero for a UDP session), or the time to the response head (HTTP).
        latency: Duration,
    },
    /// A request completed (HTTP: the whole response arrived, or a protocol upgrade was
    /// accepted). `latency` is the time to the response head.
    Success {
        /// Time to the response head.
        latency: Duration,
    },
    /// The backend actively refused (RST to SYN, ECONNREFUSED).
    ConnectRefused,
    /// No answer within the connect timeout.
    ConnectTimeout,
    /// Connecting failed otherwise (unreachable, reset, local error).
    ConnectError(io::ErrorKind),
    /// An established connection (L4) or UDP session ended: bytes moved (zero for UDP), and
    /// whether the backend broke it. Without `backend_error` it is a success.
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
            Self::Connected { .. } | Self::Success { .. } => false,
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
