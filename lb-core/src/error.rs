//! The one error type of `lb-core`.

use crate::backend::BackendId;

/// Errors from building backend sets and schedulers.
///
/// Picks never fail with an error: a pick with no eligible backend returns `None`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A weight above [`Weight::MAX`](crate::Weight::MAX) (IPVS and keepalived accept 0..=65535).
    #[error("weight {0} is out of range 0..=65535")]
    WeightOutOfRange(u64),
    /// Two backends of one set share an id.
    #[error("duplicate backend id {0}")]
    DuplicateBackend(BackendId),
    /// Two backends of one set share an address (keepalived refuses duplicate real servers too).
    #[error("duplicate backend address {0}")]
    DuplicateAddress(std::net::SocketAddr),
    /// An operation named a backend the set does not contain.
    #[error("no backend with id {0}")]
    UnknownBackend(BackendId),
    /// A Maglev lookup table size that is not prime (the permutation needs a prime, NSDI'16 §3.4).
    #[error("maglev table size {0} is not prime")]
    TableSizeNotPrime(u64),
    /// A table or ring size outside the supported range.
    #[error("table size {size} is out of range {min}..={max}")]
    TableSizeOutOfRange {
        /// The size that was asked for.
        size: u64,
        /// The smallest supported size.
        min: u64,
        /// The largest supported size.
        max: u64,
    },
    /// A scheduler name that no algorithm answers to.
    #[error("unknown scheduler algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// A configuration value outside its domain (the message names the setting).
    #[error("invalid {setting}: {reason}")]
    InvalidConfig {
        /// The setting, with the name operators use (`persistence_timeout`, `slowstart`, ...).
        setting: &'static str,
        /// Why the value was refused, including the value.
        reason: String,
    },
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
