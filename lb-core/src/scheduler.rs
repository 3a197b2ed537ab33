//! The scheduler traits: a sync, object-safe [`Scheduler`] for the hot path over an immutable
//! snapshot, and [`BuildScheduler`] that rebuilds one off the data path.
//!
//! A scheduler is built over the *candidates* a [`Pool`](crate::Pool) gives it: backends that
//! are ready, healthy and of effective weight above 0 (or, in panic mode, the set the panic
//! policy allows). It never adds a backend of its own. An algorithm that asks for them
//! ([`BuildScheduler::keeps_parked`]) also gets the parked backends (weight 0 or drained), to
//! keep their place in its table, never to return them. At pick time the caller may still
//! refuse a candidate through `accept` (a backend already tried by a retry, one at its
//! `maxconn`); the scheduler then moves on to the next choice its algorithm defines, and returns `None`
//! only when `accept` refused every candidate.
//!
//! # Examples
//!
//! ```
//! use lb_core::{Algorithm, Backend, BackendId, BuildScheduler, Scheduler, SelectContext};
//!
//! let backends: Vec<Backend> = (1..=3)
//!     .map(|i| Backend::new(BackendId(i), format!("127.0.0.1:{}", 8000 + i).parse().unwrap()))
//!     .collect();
//! let rr = Algorithm::RoundRobin.build(&backends, None).unwrap();
//! let picks: Vec<u32> = (0..4)
//!     .map(|_| rr.select(&SelectContext::default(), &mut |_| true).unwrap().id().0)
//!     .collect();
//! assert_eq!(picks, [1, 2, 3, 1]);
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::algo::hashing::{DestinationHash, SourceHash};
use crate::algo::least::{
    LeastConnections, NeverQueue, ShortestExpectedDelay, WeightedLeastConnections,
};
use crate::algo::maglev::Maglev;
use crate::algo::random::{PeakEwma, PowerOfTwoChoices, Random};
use crate::algo::ring::RingHash;
use crate::algo::round_robin::{
    RoundRobin, SmoothWeightedRoundRobin, WeightedFailover, WeightedRoundRobin,
};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// What a pick may key on. All fields are optional; hash schedulers fall back from
/// `hash_key` to the client address (and `dh` to the destination address).
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectContext<'a> {
    /// The client's address (already masked by the pool's persistence granularity).
    pub client: Option<SocketAddr>,
    /// The address the client connected to (the VIP and port), for `dh`.
    pub destination: Option<SocketAddr>,
    /// A caller-supplied key: an HTTP header, a URI, a cookie. Takes precedence over the
    /// client address for `sh`, `mh` and ring hash.
    pub hash_key: Option<&'a [u8]>,
}

impl<'a> SelectContext<'a> {
    /// A context keyed on the client address.
    pub fn client(addr: SocketAddr) -> Self {
        Self {
            client: Some(addr),
            ..Self::default()
        }
    }

    /// A context keyed on caller-supplied bytes.
    pub fn key(key: &'a [u8]) -> Self {
        Self {
            hash_key: Some(key),
            ..Self::default()
        }
    }
}

/// Hot-path backend selection over an immutable snapshot.
///
/// Implementations must not allocate or take a lock per pick, must return only candidates
/// they were built with for which `accept` returned `true`, and must return `None` only when
/// `accept` refused every candidate (or there are none).
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// Picks a backend for one new connection or request.
    fn select(
        &self,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend>;

    /// Like [`select`](Self::select), at time `now`, for algorithms whose choice depends
    /// on time: `peak_ewma` decays each latency estimate to `now` before comparing costs
    /// (Finagle/tower `PeakEwma`). [`Pool::select`](crate::Pool::select) calls this. The
    /// default ignores `now`.
    #[inline]
    fn select_at(
        &self,
        now: Instant,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        let _ = now;
        self.select(ctx, accept)
    }

    /// The candidates this scheduler was built over.
    fn backends(&self) -> &[Backend];
}

/// Builds a [`Scheduler`] off the data path, when membership, weights, health or admin state
/// change.
///
/// `previous` is the scheduler being replaced, so a rebuild keeps what users would otherwise
/// lose (the round-robin position when the candidates are unchanged). Counters live in
/// [`BackendStats`](crate::BackendStats) and survive any rebuild.
pub trait BuildScheduler: Send + Sync + fmt::Debug {
    /// The scheduler this builds.
    type Scheduler: Scheduler;

    /// Builds over `candidates` (possibly empty). A candidate of effective weight 0 is never
    /// picked (every built-in algorithm leaves it out, or, for a parked one, keeps only its
    /// place: [`keeps_parked`](Self::keeps_parked)).
    ///
    /// # Errors
    /// Algorithm-specific configuration errors (for example a Maglev table size that is not
    /// prime). An empty or all-zero candidate list is not an error: the scheduler returns
    /// `None`.
    fn build(
        &self,
        candidates: &[Backend],
        previous: Option<&Self::Scheduler>,
    ) -> Result<Self::Scheduler>;

    /// Whether a [`Pool`](crate::Pool)'s slow start ramps the effective weights this
    /// algorithm is built with ([`PoolConfig::slow_start`](crate::PoolConfig::slow_start)).
    /// HAProxy ramps only its dynamic algorithms (`BE_LB_PROP_DYN` in
    /// `server_recalc_eweight`); static ones, such as hash tables, are built from
    /// configured weights. The default is `true`.
    fn slow_start(&self) -> bool {
        true
    }

    /// Whether `build` also wants the *parked* backends among its candidates: up and not
    /// in maintenance, but of weight 0 (keepalived `inhibit_on_failure`) or drained. A
    /// [`Pool`](crate::Pool) then passes them in configuration order with the others, and
    /// the scheduler must keep them in its structure without ever returning them (nor
    /// listing them in [`Scheduler::backends`]): a hash table keeps their place so no other
    /// backend's keys move, as IPVS `mh` keeps a weight-0 destination's `last_weight`
    /// slots. IPVS `sh` and `dh` keep a weight-0 destination in their tables too, with one
    /// bucket per turn, and fail a lookup landing on it (`sh` falls back only with its
    /// `sh-fallback` flag); ours keep a parked backend's last-weight share and always fall
    /// back. The default is `false`: only candidates that take new connections.
    fn keeps_parked(&self) -> bool {
        false
    }
}

/// Every built-in algorithm, named as IPVS/keepalived (`lb_algo`), HAProxy and Envoy users know
/// them. The [`FromStr`] names are keepalived's where one exists.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Algorithm {
    /// `rr`: round robin, ignoring weights except 0 (IPVS `ip_vs_rr`).
    RoundRobin,
    /// `wrr`: IPVS interleaved weighted round robin (`ip_vs_wrr`).
    WeightedRoundRobin,
    /// `swrr`: nginx's smooth weighted round robin.
    SmoothWeightedRoundRobin,
    /// `lc`: least connections (IPVS `ip_vs_lc`).
    LeastConnections,
    /// `wlc`: weighted least connections (IPVS `ip_vs_wlc`).
    WeightedLeastConnections,
    /// `sed`: shortest expected delay (IPVS `ip_vs_sed`).
    ShortestExpectedDelay,
    /// `nq`: never queue (IPVS `ip_vs_nq`).
    NeverQueue,
    /// `sh`: source hashing (IPVS `ip_vs_sh`).
    SourceHash,
    /// `dh`: destination hashing (IPVS `ip_vs_dh`).
    DestinationHash,
    /// `mh`: Maglev hashing (IPVS `ip_vs_mh`; Eisenbud et al., NSDI'16).
    Maglev {
        /// Lookup table size M, a prime (default 65 537).
        table_size: u32,
    },
    /// `ring_hash`: consistent hashing on a ring (Ketama; Envoy `RING_HASH`).
    RingHash {
        /// Points per unit of weight (default 160, Ketama's per-server count).
        points_per_weight: u32,
        /// Upper bound on the ring's total points (default 1 048 576); above it points are
        /// scaled down.
        max_ring_size: u32,
    },
    /// `random`: weighted random (Envoy `RANDOM`).
    Random {
        /// Seed of the random stream.
        seed: u64,
    },
    /// `p2c`: power of two choices, the less loaded of two random picks (Mitzenmacher 2001;
    /// Envoy `LEAST_REQUEST`, tower `p2c`).
    PowerOfTwoChoices {
        /// Seed of the random stream.
        seed: u64,
    },
    /// `peak_ewma`: power of two choices on peak-EWMA latency × load (Finagle, tower).
    PeakEwma {
        /// Seed of the random stream.
        seed: u64,
        /// The latency assumed for a backend with no sample yet.
        default_rtt: Duration,
    },
    /// `fo`: weighted failover: the available backend of highest weight (IPVS `ip_vs_fo`).
    WeightedFailover,
}

impl Algorithm {
    /// Maglev with the default table size 65 537.
    pub const MAGLEV: Self = Self::Maglev {
        table_size: crate::algo::maglev::DEFAULT_TABLE_SIZE,
    };
    /// Ring hash with the defaults (160 points per weight, at most 1 048 576 points).
    pub const RING_HASH: Self = Self::RingHash {
        points_per_weight: 160,
        max_ring_size: 1 << 20,
    };

    /// This algorithm with the random stream `seed` (`random`, `p2c`, `peak_ewma`; the
    /// others have none and are returned as they are). Names parse with [`DEFAULT_SEED`], so
    /// that a pool is reproducible in tests; give each pool of a running process a seed of
    /// its own (lb-node mixes a per-process random value with the virtual server's name),
    /// or pools and nodes sharing the seed make the same choices in the same order.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        match self {
            Self::Random { .. } => Self::Random { seed },
            Self::PowerOfTwoChoices { .. } => Self::PowerOfTwoChoices { seed },
            Self::PeakEwma { default_rtt, .. } => Self::PeakEwma { seed, default_rtt },
            other => other,
        }
    }

    /// The keepalived/IPVS name (`rr`, `wlc`, `mh`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "rr",
            Self::WeightedRoundRobin => "wrr",
            Self::SmoothWeightedRoundRobin => "swrr",
            Self::LeastConnections => "lc",
            Self::WeightedLeastConnections => "wlc",
            Self::ShortestExpectedDelay => "sed",
            Self::NeverQueue => "nq",
            Self::SourceHash => "sh",
            Self::DestinationHash => "dh",
            Self::Maglev { .. } => "mh",
            Self::RingHash { .. } => "ring_hash",
            Self::Random { .. } => "random",
            Self::PowerOfTwoChoices { .. } => "p2c",
            Self::PeakEwma { .. } => "peak_ewma",
            Self::WeightedFailover => "fo",
        }
    }

    /// Every algorithm with its defaults, for tests and documentation.
    pub fn all() -> Vec<Self> {
        [
            "rr",
            "wrr",
            "swrr",
            "lc",
            "wlc",
            "sed",
            "nq",
            "sh",
            "dh",
            "mh",
            "ring_hash",
            "random",
            "p2c",
            "peak_ewma",
            "fo",
        ]
        .iter()
        .map(|n| n.parse().expect("built-in names parse"))
        .collect()
    }
}

/// Parses keepalived `lb_algo` names and their common aliases: `rr`, `wrr`, `swrr`
/// (`smooth_wrr`, and HAProxy's `roundrobin` / Envoy's `round_robin`, which are weighted
/// and interleaved), `lc`, `wlc` (and HAProxy's `leastconn`, weighted: connections per
/// weight), `sed`, `nq`, `sh` (`source`), `dh`, `mh` (`maglev`), `ring_hash` (`ketama`,
/// `chash`), `random`, `p2c` (`least_request`, IPVS's `twos`), `peak_ewma`, `fo`. IPVS's `rr` and `lc`
/// ignore weights (other than 0), as in IPVS.
///
/// # Errors
/// [`Error::UnknownAlgorithm`] for any other name (IPVS's `lblc`, `lblcr` and `ovf` are not
/// provided: they need the kernel's connection table).
impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "rr" => Self::RoundRobin,
            "wrr" => Self::WeightedRoundRobin,
            // HAProxy's `roundrobin` (fwrr) and Envoy's `ROUND_ROBIN` honour weights and
            // spread each backend's turns over the cycle.
            "swrr" | "smooth_wrr" | "roundrobin" | "round_robin" => Self::SmoothWeightedRoundRobin,
            "lc" => Self::LeastConnections,
            // HAProxy's `leastconn` orders servers by connections over weight.
            "wlc" | "leastconn" => Self::WeightedLeastConnections,
            "sed" => Self::ShortestExpectedDelay,
            "nq" => Self::NeverQueue,
            "sh" | "source" => Self::SourceHash,
            "dh" => Self::DestinationHash,
            "mh" | "maglev" => Self::MAGLEV,
            "ring_hash" | "ketama" | "chash" => Self::RING_HASH,
            "random" => Self::Random { seed: DEFAULT_SEED },
            // IPVS's `twos` (Linux 6.2, weighted random twos choice): two draws by
            // weight, the lower connections per weight wins.
            "p2c" | "least_request" | "twos" => Self::PowerOfTwoChoices { seed: DEFAULT_SEED },
            "peak_ewma" => Self::PeakEwma {
                seed: DEFAULT_SEED,
                default_rtt: Duration::from_millis(5),
            },
            "fo" => Self::WeightedFailover,
            _ => return Err(Error::UnknownAlgorithm(s.to_owned())),
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Default seed of the random algorithms.
pub const DEFAULT_SEED: u64 = 0x6c62_2d63_6f72_6521;

/// A built scheduler of any built-in [`Algorithm`], dispatched with a `match` (no vtable).
#[derive(Debug)]
#[allow(missing_docs)] // variants are named after the algorithm they hold
pub enum AnyScheduler {
    RoundRobin(RoundRobin),
    WeightedRoundRobin(WeightedRoundRobin),
    SmoothWeightedRoundRobin(SmoothWeightedRoundRobin),
    LeastConnections(LeastConnections),
    WeightedLeastConnections(WeightedLeastConnections),
    ShortestExpectedDelay(ShortestExpectedDelay),
    NeverQueue(NeverQueue),
    SourceHash(SourceHash),
    DestinationHash(DestinationHash),
    Maglev(Maglev),
    RingHash(RingHash),
    Random(Random),
    PowerOfTwoChoices(PowerOfTwoChoices),
    PeakEwma(PeakEwma),
    WeightedFailover(WeightedFailover),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyScheduler::RoundRobin($s) => $e,
            AnyScheduler::WeightedRoundRobin($s) => $e,
            AnyScheduler::SmoothWeightedRoundRobin($s) => $e,
            AnyScheduler::LeastConnections($s) => $e,
            AnyScheduler::WeightedLeastConnections($s) => $e,
            AnyScheduler::ShortestExpectedDelay($s) => $e,
            AnyScheduler::NeverQueue($s) => $e,
            AnyScheduler::SourceHash($s) => $e,
            AnyScheduler::DestinationHash($s) => $e,
            AnyScheduler::Maglev($s) => $e,
            AnyScheduler::RingHash($s) => $e,
            AnyScheduler::Random($s) => $e,
            AnyScheduler::PowerOfTwoChoices($s) => $e,
            AnyScheduler::PeakEwma($s) => $e,
            AnyScheduler::WeightedFailover($s) => $e,
        }
    };
}

impl Scheduler for AnyScheduler {
    #[inline]
    fn select(
        &self,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        dispatch!(self, s => s.select(ctx, accept))
    }

    #[inline]
    fn select_at(
        &self,
        now: Instant,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        dispatch!(self, s => s.select_at(now, ctx, accept))
    }

    fn backends(&self) -> &[Backend] {
        dispatch!(self, s => s.backends())
    }
}

impl BuildScheduler for Algorithm {
    type Scheduler = AnyScheduler;

    /// `true` for `sh`, `dh` and `mh`, whose tables would otherwise be rebuilt without a
    /// parked backend and remap other backends' clients (all of them for `sh` and `dh`).
    fn keeps_parked(&self) -> bool {
        matches!(
            self,
            Self::SourceHash | Self::DestinationHash | Self::Maglev { .. }
        )
    }

    /// `false` for `rr` and `lc` (weights matter only as 0 or not), for `fo` (the highest
    /// weight takes everything: a ramp would not share load but keep a returning backend
    /// out until its ramped weight passed the next one's — IPVS `fo` and HAProxy `first`
    /// have no slow start) and for the hash tables `sh`, `dh`, `mh` and `ring_hash` (each
    /// step of a ramp would rebuild them and remap clients of every backend); `true` for
    /// the others.
    fn slow_start(&self) -> bool {
        !matches!(
            self,
            Self::RoundRobin
                | Self::LeastConnections
                | Self::WeightedFailover
                | Self::SourceHash
                | Self::DestinationHash
                | Self::Maglev { .. }
                | Self::RingHash { .. }
        )
    }

    fn build(&self, c: &[Backend], previous: Option<&AnyScheduler>) -> Result<AnyScheduler> {
        Ok(match self {
            Self::RoundRobin => AnyScheduler::RoundRobin(RoundRobin::new(
                c,
                match previous {
                    Some(AnyScheduler::RoundRobin(p)) => Some(p),
                    _ => None,
                },
            )),
            Self::WeightedRoundRobin => AnyScheduler::WeightedRoundRobin(WeightedRoundRobin::new(
                c,
                match previous {
                    Some(AnyScheduler::WeightedRoundRobin(p)) => Some(p),
                    _ => None,
                },
            )),
            Self::SmoothWeightedRoundRobin => {
                AnyScheduler::SmoothWeightedRoundRobin(SmoothWeightedRoundRobin::new(
                    c,
                    match previous {
                        Some(AnyScheduler::SmoothWeightedRoundRobin(p)) => Some(p),
                        _ => None,
                    },
                ))
            }
            // A rebuild goes on with the previous tie order (`algo::least`).
            Self::LeastConnections => AnyScheduler::LeastConnections(LeastConnections::rebuilt(
                c,
                match previous {
                    Some(AnyScheduler::LeastConnections(p)) => Some(p),
                    _ => None,
                },
            )),
            Self::WeightedLeastConnections => {
                AnyScheduler::WeightedLeastConnections(WeightedLeastConnections::rebuilt(
                    c,
                    match previous {
                        Some(AnyScheduler::WeightedLeastConnections(p)) => Some(p),
                        _ => None,
                    },
                ))
            }
            Self::ShortestExpectedDelay => {
                AnyScheduler::ShortestExpectedDelay(ShortestExpectedDelay::new(c))
            }
            Self::NeverQueue => AnyScheduler::NeverQueue(NeverQueue::new(c)),
            Self::SourceHash => AnyScheduler::SourceHash(SourceHash::new(c)),
            Self::DestinationHash => AnyScheduler::DestinationHash(DestinationHash::new(c)),
            Self::Maglev { table_size } => AnyScheduler::Maglev(Maglev::new(c, *table_size)?),
            Self::RingHash {
                points_per_weight,
                max_ring_size,
            } => AnyScheduler::RingHash(RingHash::new(c, *points_per_weight, *max_ring_size)?),
            // A rebuild goes on with the previous random stream: restarting it from the seed
            // at every health or weight change would replay the same draws.
            Self::Random { seed } => AnyScheduler::Random(Random::new(
                c,
                match previous {
                    Some(AnyScheduler::Random(p)) => p.stream(),
                    _ => *seed,
                },
            )),
            Self::PowerOfTwoChoices { seed } => {
                AnyScheduler::PowerOfTwoChoices(PowerOfTwoChoices::new(
                    c,
                    match previous {
                        Some(AnyScheduler::PowerOfTwoChoices(p)) => p.stream(),
                        _ => *seed,
                    },
                ))
            }
            Self::PeakEwma { seed, default_rtt } => AnyScheduler::PeakEwma(PeakEwma::new(
                c,
                match previous {
                    Some(AnyScheduler::PeakEwma(p)) => p.stream(),
                    _ => *seed,
                },
                *default_rtt,
            )),
            Self::WeightedFailover => AnyScheduler::WeightedFailover(WeightedFailover::new(c)),
        })
    }
}

/// A client-address mask applied before hashing and persistence (keepalived
/// `persistence_granularity`): clients in one prefix share a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granularity {
    /// IPv4 prefix length kept, 0..=32 (default 32: each address on its own).
    pub v4_prefix: u8,
    /// IPv6 prefix length kept, 0..=128 (default 128).
    pub v6_prefix: u8,
}

impl Default for Granularity {
    fn default() -> Self {
        Self {
            v4_prefix: 32,
            v6_prefix: 128,
        }
    }
}

impl Granularity {
    /// From keepalived's netmask form (`persistence_granularity 255.255.255.0`) or a prefix
    /// length (`24`, applied to IPv4; IPv6 keeps /128 unless given as `/64` after a comma:
    /// `24,64`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a non-contiguous netmask or an out-of-range prefix.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidConfig {
            setting: "persistence_granularity",
            reason,
        };
        let mut g = Self::default();
        let (v4, v6) = match s.split_once(',') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        if let Ok(mask) = v4.parse::<std::net::Ipv4Addr>() {
            let m = u32::from(mask);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(bad(format!("{v4} is not a contiguous netmask")));
            }
            g.v4_prefix = m.leading_ones() as u8;
        } else {
            let p: u8 = v4
                .trim_start_matches('/')
                .parse()
                .map_err(|_| bad(format!("{v4:?} is neither a netmask nor a prefix length")))?;
            if p > 32 {
                return Err(bad(format!("IPv4 prefix /{p} is longer than 32")));
            }
            g.v4_prefix = p;
        }
        if let Some(v6) = v6 {
            let p: u8 = v6
                .trim_start_matches('/')
                .parse()
                .map_err(|_| bad(format!("{v6:?} is not an IPv6 prefix length")))?;
            if p > 128 {
                return Err(bad(format!("IPv6 prefix /{p} is longer than 128")));
            }
            g.v6_prefix = p;
        }
        Ok(g)
    }

    /// Masks an address to the prefix (the port is cleared: persistence is per client host).
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, an IPv4 client of a dual-stack `[::]`
    /// listener) is the IPv4 client it maps, and gets the IPv4 prefix.
    pub fn mask(&self, addr: SocketAddr) -> SocketAddr {
        let ip = match addr.ip().to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let m = if self.v4_prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.v4_prefix.min(32)))
                };
                IpAddr::V4((bits & m).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let m = if self.v6_prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.v6_prefix.min(128)))
                };
                IpAddr::V6((bits & m).into())
            }
        };
        SocketAddr::new(ip, 0)
    }
}

/// Whether two candidate lists are the same for a scheduler: the same ids in the same order
/// with the same effective weights (a rebuild over them may keep its position).
pub(crate) fn same_candidates(a: &[Backend], b: &[Backend]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id() == y.id() && x.effective_weight() == y.effective_weight())
}

/// Returns the first candidate `accept` takes, in order: the last resort of every algorithm
/// after its own choices were refused, so `None` means every candidate was refused.
#[inline]
pub(crate) fn first_accepted<'a>(
    backends: &'a [Backend],
    accept: &mut dyn FnMut(&Backend) -> bool,
) -> Option<&'a Backend> {
    backends.iter().find(|b| accept(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `build` promised `None` for an all-zero candidate list, but rr, lc, wlc, sed, nq,
    /// random, p2c, peak_ewma and fo returned a weight-0 backend (random after computing
    /// NaN shares, p2c comparing 0/0). Weight-0 candidates are now left out everywhere.
    #[test]
    fn weight_zero_candidates_are_never_picked() {
        let ctx = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        for a in Algorithm::all() {
            let all_zero = a.build(&crate::algo::weighted(&[0, 0]), None).unwrap();
            assert!(all_zero.select(&ctx, &mut |_| true).is_none(), "{a}");
            assert!(all_zero.backends().is_empty(), "{a}");
            let one = a.build(&crate::algo::weighted(&[0, 3, 0]), None).unwrap();
            for _ in 0..20 {
                let b = one.select(&ctx, &mut |_| true).unwrap();
                assert_eq!(b.id(), crate::BackendId(1), "{a}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::all() {
            assert_eq!(a.name().parse::<Algorithm>().unwrap().name(), a.name());
        }
        assert!(matches!(
            "lblc".parse::<Algorithm>(),
            Err(Error::UnknownAlgorithm(_))
        ));
        // HAProxy's and Envoy's names are their weighted algorithms.
        for (alias, name) in [
            ("roundrobin", "swrr"),
            ("round_robin", "swrr"),
            ("leastconn", "wlc"),
            ("source", "sh"),
            ("twos", "p2c"),
            ("least_request", "p2c"),
        ] {
            assert_eq!(alias.parse::<Algorithm>().unwrap().name(), name, "{alias}");
        }
    }

    #[test]
    fn granularity_masks() {
        let g = Granularity::parse("255.255.255.0").unwrap();
        assert_eq!(g.v4_prefix, 24);
        assert_eq!(
            g.mask("198.18.0.77:5555".parse().unwrap()),
            "198.18.0.0:0".parse::<SocketAddr>().unwrap()
        );
        let g = Granularity::parse("24,64").unwrap();
        assert_eq!(
            g.mask("[fd00:18::1:2:3:4]:1".parse().unwrap()),
            "[fd00:18::]:0".parse::<SocketAddr>().unwrap()
        );
        // An IPv4 client of a dual-stack listener is masked as the IPv4 client it is.
        let g = Granularity::parse("255.255.255.0").unwrap();
        assert_eq!(
            g.mask("[::ffff:198.18.0.77]:5555".parse().unwrap()),
            "198.18.0.0:0".parse::<SocketAddr>().unwrap()
        );
        assert!(Granularity::parse("255.0.255.0").is_err());
        assert!(Granularity::parse("33").is_err());
        assert!(Granularity::parse("banana").is_err());
    }
}
