//! `lb-core`: what a backend is, and every way of choosing one.
//!
//! This crate owns the backend model ([`Backend`], [`BackendSet`], [`Weight`], admin and
//! health state, lock-free [`BackendStats`]), the scheduler traits ([`Scheduler`] for the hot
//! path, [`BuildScheduler`] for rebuilds), every algorithm operators know from IPVS/keepalived
//! (`rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `sh`, `dh`, `mh`, `fo`), nginx (smooth `wrr`),
//! Envoy and Finagle (ring hash, `random`, power of two choices, peak EWMA), and a [`Pool`]
//! that adds backups, a panic threshold, persistence and slow start around a scheduler.
//!
//! It contains no networking code, spawns nothing and reads no clock: time comes in as
//! `now` arguments. Health checking lives in `lb-health`, forwarding in `lb-proxy`.
//!
//! | keepalived `lb_algo` | type | pick cost |
//! |---|---|---|
//! | `rr` | [`algo::round_robin::RoundRobin`] | O(1) |
//! | `wrr` | [`algo::round_robin::WeightedRoundRobin`] | O(log n) |
//! | `swrr` | [`algo::round_robin::SmoothWeightedRoundRobin`] | O(1) |
//! | `lc`, `wlc`, `sed`, `nq` | [`algo::least`] | O(1) (O(log n) per connection open/close) |
//! | `sh`, `dh` | [`algo::hashing`] | O(1) |
//! | `mh` | [`algo::maglev::Maglev`] | O(1) |
//! | `ring_hash` | [`algo::ring::RingHash`] | O(1) expected |
//! | `random`, `p2c`, `peak_ewma` | [`algo::random`] | O(1) |
//! | `fo` | [`algo::round_robin::WeightedFailover`] | O(1) |
//!
//! # Testing your own scheduler
//!
//! The `testing` feature (off by default; the only thing that makes proptest a dependency)
//! adds the `lb_core::testing` module: proptest strategies for backend sets and pick
//! sequences, and `testing::check_scheduler`, which runs every invariant an algorithm's
//! claims select — the same suite every built-in algorithm passes in `cargo test` — and
//! returns the first counterexample, shrunk:
//!
//! ```toml
//! [dev-dependencies]
//! lb-core = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```text
//! lb_core::testing::check_scheduler(&MyBuilder, lb_core::testing::Claims::WEIGHTED, 64)?;
//! ```
//!
//! (a sketch: `testing`'s own example runs it on a built-in algorithm)
//!
//! # Examples
//!
//! ```
//! use std::time::Instant;
//! use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig, SelectContext, Weight};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! // keepalived: virtual_server … { lb_algo wrr; real_server … 82 { weight 3 } real_server … 83 { weight 1 } }
//! let set = BackendSet::new(vec![
//!     Backend::new(BackendId(1), "192.0.2.151:82".parse()?).with_weight(Weight::new(3)?),
//!     Backend::new(BackendId(2), "192.0.2.153:83".parse()?).with_weight(Weight::new(1)?),
//! ])?;
//! let pool = Pool::new("wrr".parse::<Algorithm>()?, set, PoolConfig::default())?;
//! let picks: Vec<u32> = (0..4)
//!     .map(|_| pool.select(now, &SelectContext::default(), &mut |_| true).unwrap().id().0)
//!     .collect();
//! assert_eq!(picks, [1, 1, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod algo;
pub mod backend;
pub mod error;
pub mod persistence;
pub mod pool;
pub mod scheduler;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{
    AdminState, Backend, BackendId, BackendSet, BackendStats, ConnectionGuard, Health,
    RequestGuard, Weight,
};
pub use error::{Error, Result};
pub use pool::{PanicMode, PersistedClient, Pool, PoolConfig, Snapshot};
pub use scheduler::{
    Algorithm, AnyScheduler, BuildScheduler, Granularity, Scheduler, SelectContext, DEFAULT_SEED,
};
