//! Randomised algorithms: weighted `random`, power of two choices (`p2c`) and peak EWMA.
//!
//! Randomness is a SplitMix64 stream advanced with one atomic add per draw: lock-free,
//! seeded (`from the seed in the Algorithm`), and reproducible in a single-threaded test.
//! A rebuild from the scheduler it replaces ([`Algorithm::build`] with `previous` of the
//! same algorithm) goes on with its stream, so it does not replay the draws since the seed;
//! one built without it starts from the seed. Counts and latency estimates live in
//! [`BackendStats`](crate::BackendStats) and survive any rebuild.
//!
//! [`Algorithm::build`]: crate::BuildScheduler::build
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::random::PowerOfTwoChoices;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext};
//!
//! let set: Vec<Backend> = (1..=2)
//!     .map(|i| Backend::new(BackendId(i), format!("127.0.0.1:{i}").parse().unwrap()))
//!     .collect();
//! let _busy: Vec<_> = (0..5).map(|_| set[0].stats().connection()).collect();
//! let p2c = PowerOfTwoChoices::new(&set, 7);
//! // With two candidates both are always sampled: the idle one wins.
//! assert_eq!(p2c.select(&SelectContext::default(), &mut |_| true).unwrap().id(), BackendId(2));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::maglev::remix;
use super::weighted_only;
use crate::backend::Backend;
use crate::scheduler::{first_accepted, Scheduler, SelectContext};

/// A lock-free SplitMix64 stream.
#[derive(Debug)]
struct Rng(AtomicU64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    #[inline]
    fn next(&self) -> u64 {
        remix(self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
    }

    /// Uniform in `0..n` (Lemire's multiply-shift), `n > 0`.
    #[inline]
    fn below(&self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Vose's alias method: a draw in proportion to weight in O(1).
#[derive(Debug)]
struct Alias {
    /// Acceptance threshold of each column, scaled to 2³².
    prob: Vec<u64>,
    alias: Vec<u32>,
}

impl Alias {
    /// Over the effective weights of `candidates` (all above 0).
    fn new(candidates: &[Backend]) -> Self {
        let n = candidates.len();
        let total: f64 = candidates
            .iter()
            .map(|b| f64::from(b.effective_weight().get()))
            .sum();
        let mut scaled: Vec<f64> = candidates
            .iter()
            .map(|b| f64::from(b.effective_weight().get()) * n as f64 / total)
            .collect();
        let mut prob = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (scaled[s] * (1u64 << 32) as f64) as u64;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Self { prob, alias }
    }

    /// The candidate index a random `r` draws (`n > 0` columns).
    #[inline]
    fn draw(&self, r: u64) -> usize {
        let n = self.prob.len();
        let col = ((u128::from(r >> 32) * n as u128) >> 32) as usize;
        if (r & 0xffff_ffff) < self.prob[col] {
            col
        } else {
            self.alias[col] as usize
        }
    }
}

/// `random`: weighted random choice with Vose's alias method (O(1) per pick).
///
/// A candidate `accept` refuses costs a fresh draw, up to `min(n, 16)` draws for `n`
/// candidates; after that the first candidate `accept` takes, in order. So with most of
/// the weight refused, the accepted candidates do not always get shares in proportion to
/// their weights: the fallback favours the earliest.
#[derive(Debug)]
pub struct Random {
    backends: Vec<Backend>,
    alias: Alias,
    rng: Rng,
}

impl Random {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out) with the
    /// random stream `seed`.
    pub fn new(candidates: &[Backend], seed: u64) -> Self {
        let candidates = &weighted_only(candidates)[..];
        Self {
            backends: candidates.to_vec(),
            alias: Alias::new(candidates),
            rng: Rng::new(seed),
        }
    }
}

impl Random {
    /// Where the random stream is now: a seed that goes on with it (a rebuild passes it to
    /// the new scheduler, see [`crate::scheduler::BuildScheduler::build`]).
    pub fn stream(&self) -> u64 {
        self.rng.0.load(Ordering::Relaxed)
    }
}

impl Scheduler for Random {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        for _ in 0..n.min(16) {
            let b = &self.backends[self.alias.draw(self.rng.next())];
            if accept(b) {
                return Some(b);
            }
        }
        first_accepted(&self.backends, accept)
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

/// Two distinct random candidates, drawn uniformly or, with `weights`, in proportion to
/// weight; the cheaper by `cost` is tried first, a tie going to the first draw. Falls back
/// to a scan when neither is accepted within a few draws.
///
/// Exactly: one candidate is returned without a draw if `accept` takes it. Otherwise up to
/// 4 rounds: the first candidate by one draw (uniform: [`Rng::below`]; weighted:
/// [`Alias::draw`]); the second, uniform, among the others, or weighted, by up to 4 more
/// draws until one differs from the first, then uniform among the others. The cheaper is
/// offered to `accept`, then the other. After 4 rounds, the first candidate `accept`
/// takes, in order.
#[inline]
fn two_choices<'a, K: PartialOrd>(
    backends: &'a [Backend],
    rng: &Rng,
    weights: Option<&Alias>,
    accept: &mut dyn FnMut(&Backend) -> bool,
    cost: impl Fn(&Backend) -> K,
) -> Option<&'a Backend> {
    let n = backends.len();
    match n {
        0 => return None,
        1 => return first_accepted(backends, accept),
        _ => {}
    }
    for _ in 0..4 {
        let (a, b) = match weights {
            None => {
                let a = rng.below(n);
                let mut b = rng.below(n - 1);
                if b >= a {
                    b += 1;
                }
                (a, b)
            }
            Some(w) => {
                let a = w.draw(rng.next());
                // A second weighted draw distinct from the first; after a few equal draws
                // (one backend holding most of the weight) any other one.
                let mut b = a;
                for _ in 0..4 {
                    b = w.draw(rng.next());
                    if b != a {
                        break;
                    }
                }
                if b == a {
                    b = rng.below(n - 1);
                    if b >= a {
                        b += 1;
                    }
                }
                (a, b)
            }
        };
        let (ba, bb) = (&backends[a], &backends[b]);
        // The cheaper first; a tie goes to the first draw.
        let (first, second) = if cost(bb) < cost(ba) {
            (bb, ba)
        } else {
            (ba, bb)
        };
        if accept(first) {
            return Some(first);
        }
        if accept(second) {
            return Some(second);
        }
    }
    first_accepted(backends, accept)
}

/// `p2c`: power of two choices (Mitzenmacher, *The Power of Two Choices in Randomized Load
/// Balancing*, 2001; Envoy `LEAST_REQUEST`): two distinct random candidates, drawn in
/// proportion to weight; the one with less `(active connections + in-flight requests) /
/// weight` wins, a tie going to the first draw. O(1) per pick. The second draw repeats
/// until it differs from the first, up to 4 times, then is uniform among the others (one
/// backend holding most of the weight); refusals are as in `two_choices`: up to 4 pairs,
/// then the first candidate `accept` takes.
///
/// With equal weights this is Envoy's `LEAST_REQUEST` (two uniform choices, the fewer
/// active requests). With unequal weights Envoy schedules hosts in proportion to
/// `weight / (active_requests + 1)` (`active_request_bias` 1.0): idle hosts get their weight
/// shares. Comparing load per weight alone would make idle backends tie and split evenly
/// whatever their weights; drawing the choices by weight and breaking ties to the first
/// draw gives idle backends their weight shares, and under load the per-weight comparison
/// keeps connections in proportion to weight, as `wlc` does.
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    backends: Vec<Backend>,
    weights: Alias,
    rng: Rng,
}

impl PowerOfTwoChoices {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out) with the
    /// random stream `seed`.
    pub fn new(candidates: &[Backend], seed: u64) -> Self {
        let candidates = &weighted_only(candidates)[..];
        Self {
            backends: candidates.to_vec(),
            weights: Alias::new(candidates),
            rng: Rng::new(seed),
        }
    }
}

impl PowerOfTwoChoices {
    /// Where the random stream is now: a seed that goes on with it (a rebuild passes it to
    /// the new scheduler, see [`crate::scheduler::BuildScheduler::build`]).
    pub fn stream(&self) -> u64 {
        self.rng.0.load(Ordering::Relaxed)
    }
}

impl Scheduler for PowerOfTwoChoices {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        two_choices(
            &self.backends,
            &self.rng,
            Some(&self.weights),
            accept,
            |b| {
                let load = (b.stats().active() + b.stats().in_flight()) as f64;
                load / f64::from(b.effective_weight().get())
            },
        )
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

/// `peak_ewma`: power of two choices on a latency-aware cost (Finagle's and tower's
/// `PeakEwma`): `ewma_rtt × (active + in_flight + 1) / weight`, where `ewma_rtt` is the peak
/// EWMA recorded with [`BackendStats::record_latency`](crate::BackendStats::record_latency),
/// or `default_rtt` before the first sample and once the estimate has decayed below 1 ns
/// ([`BackendStats::latency_ewma_at`](crate::BackendStats::latency_ewma_at)), so the load
/// always counts (a `default_rtt` below 1 ns counts as 1 ns: 0 would cancel the load).
///
/// Unlike `p2c`, the two candidates are drawn uniformly, not by weight: the weight only
/// divides the cost (as tower's `Weighted` wrapper divides a load), so among idle backends
/// with the same estimate the heavier of the two drawn always wins.
///
/// Two departures from tower's `PeakEwma`, whose estimate starts at `default_rtt` and
/// decays like a measured one: here `default_rtt` is a constant that stands in for a
/// backend with no estimate, and the first sample replaces it whatever its value. Finagle
/// instead charges a backend with no estimate and requests pending a large penalty.
#[derive(Debug)]
pub struct PeakEwma {
    backends: Vec<Backend>,
    rng: Rng,
    default_rtt_ns: f64,
}

impl PeakEwma {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out) with the
    /// random stream `seed`.
    pub fn new(candidates: &[Backend], seed: u64, default_rtt: Duration) -> Self {
        let candidates = &weighted_only(candidates)[..];
        Self {
            backends: candidates.to_vec(),
            rng: Rng::new(seed),
            // At least 1 ns, the floor of a measured estimate: 0 would cancel the load.
            default_rtt_ns: (default_rtt.as_nanos() as f64).max(1.0),
        }
    }
}

impl PeakEwma {
    /// `rtt × (active + in_flight + 1) / weight`.
    #[inline]
    fn cost(&self, b: &Backend, rtt: Option<f64>) -> f64 {
        let s = b.stats();
        let rtt = rtt.unwrap_or(self.default_rtt_ns);
        rtt * (s.active() + s.in_flight() + 1) as f64 / f64::from(b.effective_weight().get())
    }
}

impl PeakEwma {
    /// Where the random stream is now: a seed that goes on with it (a rebuild passes it to
    /// the new scheduler, see [`crate::scheduler::BuildScheduler::build`]).
    pub fn stream(&self) -> u64 {
        self.rng.0.load(Ordering::Relaxed)
    }
}

impl Scheduler for PeakEwma {
    /// Without a clock: each estimate as of its last sample (no decay). Prefer
    /// [`select_at`](Scheduler::select_at), which [`Pool`](crate::Pool) uses.
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        two_choices(&self.backends, &self.rng, None, accept, |b| {
            let v = b.stats().ewma_ns();
            self.cost(b, (v >= 1.0).then_some(v))
        })
    }

    /// Each estimate decayed to `now` first
    /// ([`BackendStats::latency_ewma_at`](crate::BackendStats::latency_ewma_at)), so a
    /// backend that answered slowly once is not shunned forever: with no new sample its
    /// estimate falls towards 0 until it is picked again and measured.
    #[inline]
    fn select_at(
        &self,
        now: Instant,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        two_choices(&self.backends, &self.rng, None, accept, |b| {
            self.cost(b, b.stats().ewma_ns_at(now))
        })
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendId, Weight};
    use std::time::Instant;

    #[test]
    fn alias_shares_follow_weights() {
        let set: Vec<Backend> = [1u64, 2, 7]
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Backend::new(
                    BackendId(i as u32),
                    format!("127.0.0.1:{i}").parse().unwrap(),
                )
                .with_weight(Weight::new(w).unwrap())
            })
            .collect();
        let r = Random::new(&set, 1);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[r
                .select(&SelectContext::default(), &mut |_| true)
                .unwrap()
                .id()
                .0 as usize] += 1;
        }
        for (i, w) in [0.1, 0.2, 0.7].iter().enumerate() {
            let got = f64::from(counts[i]) / 100_000.0;
            assert!((got - w).abs() < 0.01, "{i}: {got}");
        }
    }

    /// p2c compared load / weight only, so idle backends (load 0) tied and the first draw,
    /// uniform, won: weights 1 and 9 split 0.5 / 0.5. Envoy gives idle hosts their weight
    /// shares; under load the split follows weight too.
    #[test]
    fn p2c_follows_weights_idle_and_loaded() {
        let set = crate::algo::weighted(&[1, 9]);
        let s = PowerOfTwoChoices::new(&set, 11);
        let ctx = SelectContext::default();
        let heavy = (0..10_000)
            .filter(|_| s.select(&ctx, &mut |_| true).unwrap().id() == BackendId(1))
            .count();
        let share = heavy as f64 / 10_000.0;
        assert!((share - 0.9).abs() < 0.02, "idle: weight-9 share {share}");
        // Connections that stay open: loads end up in proportion to weight.
        let open: Vec<_> = (0..1000)
            .map(|_| s.select(&ctx, &mut |_| true).unwrap().stats().connection())
            .collect();
        let on_heavy = set[1].stats().active();
        assert!(
            (890..=910).contains(&on_heavy),
            "loaded: {on_heavy} of 1000"
        );
        drop(open);
        // Equal weights: still the less loaded of two.
        let set = crate::algo::weighted(&[5, 5, 5]);
        let _busy: Vec<_> = (0..3).map(|_| set[0].stats().connection()).collect();
        let _one = set[1].stats().connection();
        let s = PowerOfTwoChoices::new(&set, 3);
        for _ in 0..50 {
            assert_ne!(s.select(&ctx, &mut |_| true).unwrap().id(), BackendId(0));
        }
    }

    /// One slow response must not starve a backend: its estimate decays while it gets no
    /// traffic, until it is cheaper than a backend that keeps answering in 1 ms.
    #[test]
    fn peak_ewma_slow_backend_recovers_as_its_estimate_decays() {
        #[allow(clippy::disallowed_methods)] // a test's arbitrary origin
        let t0 = Instant::now();
        let decay = Duration::from_secs(10);
        let set: Vec<Backend> = (0..2)
            .map(|i| Backend::new(BackendId(i), format!("127.0.0.1:{i}").parse().unwrap()))
            .collect();
        set[0]
            .stats()
            .record_latency(Duration::from_millis(100), t0, decay);
        set[1]
            .stats()
            .record_latency(Duration::from_millis(1), t0, decay);
        let s = PeakEwma::new(&set, 3, Duration::from_millis(5));
        let pick = |now| {
            s.select_at(now, &SelectContext::default(), &mut |_| true)
                .unwrap()
                .id()
        };
        assert_eq!(pick(t0), BackendId(1), "just after the slow response");
        // A minute later backend 1 has kept answering in 1 ms; backend 0 had no traffic:
        // 100 ms · e^-6 ≈ 0.25 ms < 1 ms.
        let later = t0 + Duration::from_secs(60);
        set[1]
            .stats()
            .record_latency(Duration::from_millis(1), later, decay);
        for _ in 0..10 {
            assert_eq!(pick(later), BackendId(0));
        }
    }

    /// After a long time without samples the busy backend's estimate decayed to (almost)
    /// 0, so its cost ignored its 1 000 requests in flight and it beat an idle backend with
    /// no sample (the review's r11, at 800 s; already at 60 s the estimate is 1e-18 ns).
    #[test]
    fn peak_ewma_load_counts_once_the_estimate_has_decayed() {
        #[allow(clippy::disallowed_methods)] // a test's arbitrary origin
        let t0 = Instant::now();
        let set = crate::algo::weighted(&[1, 1]);
        set[0]
            .stats()
            .record_latency(Duration::from_millis(100), t0, Duration::from_secs(1));
        let _busy: Vec<_> = (0..1000).map(|_| set[0].stats().request()).collect();
        let s = PeakEwma::new(&set, 1, Duration::from_millis(5));
        for secs in [60, 800] {
            let later = t0 + Duration::from_secs(secs);
            let got = s.select_at(later, &SelectContext::default(), &mut |_| true);
            assert_eq!(got.unwrap().id(), BackendId(1), "at +{secs} s");
        }
    }

    /// A `default_rtt` of 0 made every backend without a sample cost 0 whatever its
    /// load, so a backend with 1 000 requests in flight tied with an idle one and won
    /// whenever it was drawn first (about half the picks).
    #[test]
    fn peak_ewma_load_counts_with_a_zero_default_rtt() {
        #[allow(clippy::disallowed_methods)] // a test's arbitrary origin
        let now = Instant::now();
        let set = crate::algo::weighted(&[1, 1]);
        let _busy: Vec<_> = (0..1000).map(|_| set[0].stats().request()).collect();
        let s = PeakEwma::new(&set, 5, Duration::ZERO);
        let ctx = SelectContext::default();
        for _ in 0..50 {
            let at = s.select_at(now, &ctx, &mut |_| true).unwrap().id();
            assert_eq!(at, BackendId(1), "select_at");
            assert_eq!(
                s.select(&ctx, &mut |_| true).unwrap().id(),
                BackendId(1),
                "select"
            );
        }
    }

    #[test]
    fn peak_ewma_avoids_slow_backend() {
        #[allow(clippy::disallowed_methods)] // a test's arbitrary origin
        let now = Instant::now();
        let set: Vec<Backend> = (0..2)
            .map(|i| Backend::new(BackendId(i), format!("127.0.0.1:{i}").parse().unwrap()))
            .collect();
        set[0]
            .stats()
            .record_latency(Duration::from_millis(100), now, Duration::from_secs(10));
        set[1]
            .stats()
            .record_latency(Duration::from_millis(1), now, Duration::from_secs(10));
        let s = PeakEwma::new(&set, 3, Duration::from_millis(5));
        for _ in 0..10 {
            assert_eq!(
                s.select(&SelectContext::default(), &mut |_| true)
                    .unwrap()
                    .id(),
                BackendId(1)
            );
        }
    }
}
