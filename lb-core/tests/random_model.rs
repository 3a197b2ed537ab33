//! Model-based tests of the randomised schedulers `random`, `p2c` and `peak_ewma`: random
//! sequences of connections and requests opened and closed, latency samples at random
//! times (forward, backwards, after huge gaps), picks with and without a clock and with
//! `accept` refusing some backends, and rebuilds with and without the scheduler they
//! replace, applied to the real schedulers and to a plain model of what `algo::random`'s
//! and `BackendStats`' docs promise, compared pick by pick.
//!
//! The random stream is SplitMix64 from the seed, so the model reproduces every draw:
//!
//! - A weighted draw is Vose's alias method over the candidates' weights: the high 32 bits
//!   of a draw pick a column (multiply-shift), the low 32 bits keep it below the column's
//!   threshold (scaled to 2³²) or take its alias. A uniform draw below `n` is the high 64
//!   bits of `draw × n`.
//! - `random`: up to `min(n, 16)` weighted draws until `accept` takes one, then the first
//!   candidate `accept` takes, in order.
//! - `p2c` and `peak_ewma`: one candidate is taken without a draw if `accept` takes it.
//!   Otherwise up to 4 rounds of two distinct candidates; `p2c` draws the first by weight
//!   and the second by weight up to 4 times until it differs, then uniformly among the
//!   others; `peak_ewma` draws both uniformly. The cheaper is offered to `accept` first,
//!   a tie going to the first draw, then the other. After 4 rounds the first candidate
//!   `accept` takes, in order.
//! - `p2c`'s cost is `(active + in_flight) / weight`; `peak_ewma`'s is
//!   `rtt × (active + in_flight + 1) / weight` with `rtt` the peak EWMA (decayed to `now`
//!   by `select_at`, as of its last sample by `select`), or `default_rtt` (at least 1 ns)
//!   with no sample or an estimate below 1 ns.
//! - The peak EWMA: the first sample, or one above the value recorded last, replaces it;
//!   a lower one gives `old × w + sample × (1 − w)`, `w = exp(−elapsed / decay)`, elapsed
//!   since the latest sample time (0 for a sample at or before it, which keeps the latest
//!   time); times before the epoch count as the epoch; a read decays by the time since the
//!   latest sample with the last sample's decay, not at all when `now` is before it.
//! - A rebuild with the scheduler it replaces goes on with its random stream; one without
//!   restarts from the seed. Latency estimates and counts live in the counters and
//!   survive both.

mod model_config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::{
    Algorithm, AnyScheduler, Backend, BackendId, BackendStats, BuildScheduler, ConnectionGuard,
    RequestGuard, Scheduler, SelectContext, Weight,
};
use proptest::prelude::*;

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Where the tests' clock starts, ahead of the counters' epoch by this much (so that
/// times before the epoch are reachable without subtracting from an `Instant`).
const EPOCH_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Random,
    P2c,
    PeakEwma,
}

#[derive(Debug, Clone)]
struct Setup {
    algo: Algo,
    seed: u64,
    weights: Vec<u32>,
    default_rtt_ns: u64,
}

impl Setup {
    fn algorithm(&self) -> Algorithm {
        match self.algo {
            Algo::Random => Algorithm::Random { seed: self.seed },
            Algo::P2c => Algorithm::PowerOfTwoChoices { seed: self.seed },
            Algo::PeakEwma => Algorithm::PeakEwma {
                seed: self.seed,
                default_rtt: Duration::from_nanos(self.default_rtt_ns),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Then {
    Hold,
    Short,
    Nothing,
}

#[derive(Debug, Clone)]
enum Op {
    /// A connection to backend `b`, held.
    Open { b: usize },
    /// A request in flight to backend `b`, held.
    Request { b: usize },
    /// Drops the `i`-th held guard (modulo how many).
    Close { i: usize },
    /// A latency sample of `rtt_ns` for backend `b` at the current time, with `decay_ns`.
    Sample {
        b: usize,
        rtt_ns: u64,
        decay_ns: u64,
    },
    /// Moves the clock forward by `ns`.
    Forward { ns: u64 },
    /// Moves the clock back by `ns` (not below the tests' origin, which is before the
    /// counters' epoch).
    Back { ns: u64 },
    /// A pick, `select_at(now)` when `clock`, else `select`, with `accept` refusing the
    /// backends whose bit is set in `refuse`.
    Pick { refuse: u8, clock: bool, then: Then },
    /// `n` picks in a row at the current time, each a short connection.
    Burst { n: u8, refuse: u8 },
    /// Rebuilds the scheduler (from the one it replaces when `previous`), after setting
    /// backend `b`'s weight to `w` when given.
    Rebuild {
        previous: bool,
        reweight: Option<(usize, u32)>,
    },
}

fn weight() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => Just(0u32),
        6 => 1u32..=4,
        1 => Just(7),
        1 => Just(65_535),
        1 => 1u32..=65_535,
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(Algo::Random), Just(Algo::P2c), Just(Algo::PeakEwma)],
        any::<u64>(),
        prop::collection::vec(weight(), 1..=8),
        prop_oneof![Just(5_000_000u64), Just(0), 1u64..=1_000_000_000],
    )
        .prop_map(|(algo, seed, weights, default_rtt_ns)| Setup {
            algo,
            seed,
            weights,
            default_rtt_ns,
        })
}

fn refuse() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 2 => any::<u8>(), 1 => Just(0xff)]
}

fn rtt_ns() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1_000_000u64..=100_000_000,
        1 => Just(0),
        1 => 0u64..=3,
        1 => Just(5_000_000),
        1 => any::<u64>(),
    ]
}

fn decay_ns() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(10_000_000_000u64),
        2 => 1_000_000u64..=60_000_000_000,
        1 => Just(0),
        1 => Just(1),
        1 => any::<u64>(),
    ]
}

fn gap_ns() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..=2_000_000_000,
        2 => 1_000_000_000u64..=300_000_000_000,
        1 => 1_000_000_000_000u64..=100_000_000_000_000,
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0usize..8).prop_map(|b| Op::Open { b }),
        2 => (0usize..8).prop_map(|b| Op::Request { b }),
        4 => any::<usize>().prop_map(|i| Op::Close { i }),
        5 => (0usize..8, rtt_ns(), decay_ns())
            .prop_map(|(b, rtt_ns, decay_ns)| Op::Sample { b, rtt_ns, decay_ns }),
        3 => gap_ns().prop_map(|ns| Op::Forward { ns }),
        1 => (0u64..=20_000_000_000).prop_map(|ns| Op::Back { ns }),
        8 => (
            refuse(),
            prop_oneof![3 => Just(true), 1 => Just(false)],
            prop_oneof![Just(Then::Hold), Just(Then::Short), Just(Then::Nothing)]
        )
            .prop_map(|(refuse, clock, then)| Op::Pick { refuse, clock, then }),
        2 => (1u8..=30, refuse()).prop_map(|(n, refuse)| Op::Burst { n, refuse }),
        2 => (any::<bool>(), prop::option::weighted(0.5, (0usize..8, weight())))
            .prop_map(|(previous, reweight)| Op::Rebuild { previous, reweight }),
    ];
    prop::collection::vec(op, 1..80)
}

/// SplitMix64, as the docs name it: the state moves on by the golden gamma, then mixes.
#[derive(Debug, Clone, Copy)]
struct ModelRng(u64);

impl ModelRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`: the high 64 bits of `draw × n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Vose's alias table over weights above 0.
#[derive(Debug, Clone)]
struct ModelAlias {
    /// Each column's threshold, scaled to 2³².
    prob: Vec<u64>,
    alias: Vec<usize>,
}

impl ModelAlias {
    fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|&w| f64::from(w) * n as f64 / total)
            .collect();
        let mut prob = vec![1u64 << 32; n];
        let mut alias: Vec<usize> = (0..n).collect();
        let mut small: Vec<usize> = (0..n).filter(|&i| scaled[i] < 1.0).collect();
        let mut large: Vec<usize> = (0..n).filter(|&i| scaled[i] >= 1.0).collect();
        // Each small column is filled up from the last large one, which turns small when
        // it drops below 1; columns left at the end keep threshold 1 (rounding).
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (scaled[s] * 4_294_967_296.0) as u64;
            alias[s] = l;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Self { prob, alias }
    }

    fn draw(&self, r: u64) -> usize {
        let n = self.prob.len() as u128;
        let col = ((u128::from(r >> 32) * n) >> 32) as usize;
        if (r & 0xffff_ffff) < self.prob[col] {
            col
        } else {
            self.alias[col]
        }
    }

    /// The exact probability of each index over all 2⁶⁴ draws.
    fn shares(&self) -> Vec<f64> {
        let n = self.prob.len();
        let mut p = vec![0.0; n];
        for col in 0..n {
            // High halves mapping to `col`: ⌈(col+1)·2³²/n⌉ − ⌈col·2³²/n⌉.
            let lo = ((col as u128) << 32).div_ceil(n as u128);
            let hi = (((col + 1) as u128) << 32).div_ceil(n as u128);
            let pcol = (hi - lo) as f64 / 4_294_967_296.0;
            let keep = self.prob[col].min(1 << 32) as f64 / 4_294_967_296.0;
            p[col] += pcol * keep;
            p[self.alias[col]] += pcol * (1.0 - keep);
        }
        p
    }
}

/// One backend's peak EWMA as `BackendStats` documents it.
#[derive(Debug, Clone, Copy, Default)]
struct ModelEwma {
    /// Nanoseconds; 0 before the first sample.
    value: f64,
    /// The latest sample time, nanoseconds since the epoch.
    stamp: u64,
    /// The last sample's decay, nanoseconds (at least 1).
    decay: u64,
}

impl ModelEwma {
    fn record(&mut self, rtt_ns: u64, at: u64, decay_ns: u64) {
        let sample = rtt_ns as f64;
        self.decay = decay_ns.max(1);
        if self.value == 0.0 || sample > self.value {
            self.value = sample;
        } else {
            let elapsed = at.saturating_sub(self.stamp) as f64;
            let w = (-elapsed / self.decay as f64).exp();
            self.value = self.value * w + sample * (1.0 - w);
        }
        self.stamp = self.stamp.max(at);
    }

    /// As of the last sample (`select`), `None` below 1 ns.
    fn undecayed(&self) -> Option<f64> {
        (self.value >= 1.0).then_some(self.value)
    }

    /// Decayed to `at` (`select_at`), `None` below 1 ns.
    fn at(&self, at: u64) -> Option<f64> {
        if self.value < 1.0 {
            return None;
        }
        let elapsed = at.saturating_sub(self.stamp) as f64;
        let v = self.value * (-elapsed / self.decay as f64).exp();
        (v >= 1.0).then_some(v)
    }
}

#[derive(Debug)]
struct Model {
    algo: Algo,
    seed: u64,
    default_rtt_ns: f64,
    active: Vec<u64>,
    in_flight: Vec<u64>,
    ewma: Vec<ModelEwma>,
    /// The candidates (weight above 0), in order, and their weights.
    cands: Vec<usize>,
    cand_weights: Vec<u32>,
    alias: ModelAlias,
    rng: ModelRng,
}

impl Model {
    fn build(&mut self, weights: &[u32], previous: bool) {
        self.cands = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        self.cand_weights = self.cands.iter().map(|&i| weights[i]).collect();
        self.alias = ModelAlias::new(&self.cand_weights);
        if !previous {
            self.rng = ModelRng(self.seed);
        }
    }

    fn cost(&self, k: usize, rtt_at: Option<u64>) -> f64 {
        let b = self.cands[k];
        let load = self.active[b] + self.in_flight[b];
        let w = f64::from(self.cand_weights[k]);
        match self.algo {
            Algo::Random => 0.0,
            Algo::P2c => load as f64 / w,
            Algo::PeakEwma => {
                let e = &self.ewma[b];
                let rtt = match rtt_at {
                    Some(at) => e.at(at),
                    None => e.undecayed(),
                }
                .unwrap_or(self.default_rtt_ns);
                rtt * (load + 1) as f64 / w
            }
        }
    }

    /// The backend picked with `accept` refusing `refuse`, reading the estimates at
    /// `rtt_at` (`None`: as of their last samples).
    fn pick(&mut self, refuse: u8, rtt_at: Option<u64>) -> Option<usize> {
        let n = self.cands.len();
        let cands = self.cands.clone();
        let ok = |k: usize| refuse & (1 << cands[k]) == 0;
        let scan = |ok: &dyn Fn(usize) -> bool| (0..n).find(|&k| ok(k));
        let k = match (self.algo, n) {
            (_, 0) => None,
            (Algo::Random, _) => {
                let mut got = None;
                for _ in 0..n.min(16) {
                    let k = self.alias.draw(self.rng.next());
                    if ok(k) {
                        got = Some(k);
                        break;
                    }
                }
                got.or_else(|| scan(&ok))
            }
            (_, 1) => scan(&ok),
            _ => {
                let mut got = None;
                for _ in 0..4 {
                    let (a, b) = if self.algo == Algo::P2c {
                        let a = self.alias.draw(self.rng.next());
                        let mut b = a;
                        for _ in 0..4 {
                            b = self.alias.draw(self.rng.next());
                            if b != a {
                                break;
                            }
                        }
                        if b == a {
                            b = self.other(a);
                        }
                        (a, b)
                    } else {
                        let a = self.rng.below(n);
                        (a, self.other(a))
                    };
                    let (first, second) = if self.cost(b, rtt_at) < self.cost(a, rtt_at) {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    if ok(first) {
                        got = Some(first);
                        break;
                    }
                    if ok(second) {
                        got = Some(second);
                        break;
                    }
                }
                got.or_else(|| scan(&ok))
            }
        };
        k.map(|k| self.cands[k])
    }

    /// A uniform draw among the candidates other than `a`.
    fn other(&mut self, a: usize) -> usize {
        let b = self.rng.below(self.cands.len() - 1);
        if b >= a {
            b + 1
        } else {
            b
        }
    }
}

enum Guard {
    Connection(#[allow(dead_code)] ConnectionGuard),
    Request(#[allow(dead_code)] RequestGuard),
}

fn backend(i: usize, w: u32, stats: Arc<BackendStats>) -> Backend {
    Backend::with_stats(
        BackendId(i as u32),
        format!("192.0.2.{}:80", i + 1).parse().unwrap(),
        stats,
    )
    .with_weight(Weight::new(u64::from(w)).unwrap())
}

fn real_pick(s: &AnyScheduler, refuse: u8, now: Option<Instant>) -> Option<usize> {
    let ctx = SelectContext::default();
    let mut accept = |b: &Backend| refuse & (1 << b.id().0) == 0;
    match now {
        Some(now) => s.select_at(now, &ctx, &mut accept),
        None => s.select(&ctx, &mut accept),
    }
    .map(|b| b.id().0 as usize)
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    #[allow(clippy::disallowed_methods)] // the tests' arbitrary origin
    let origin = Instant::now();
    let epoch = origin + Duration::from_nanos(EPOCH_NS);
    let n = setup.weights.len();
    let algo = setup.algorithm();
    let mut backends: Vec<Backend> = (0..n)
        .map(|i| backend(i, setup.weights[i], Arc::new(BackendStats::new(epoch))))
        .collect();
    let mut sched = algo.build(&backends, None).unwrap();
    let mut guards: Vec<(usize, Guard)> = Vec::new();
    let mut weights = setup.weights.clone();
    let mut model = Model {
        algo: setup.algo,
        seed: setup.seed,
        default_rtt_ns: (setup.default_rtt_ns as f64).max(1.0),
        active: vec![0; n],
        in_flight: vec![0; n],
        ewma: vec![ModelEwma::default(); n],
        cands: Vec::new(),
        cand_weights: Vec::new(),
        alias: ModelAlias::new(&[]),
        rng: ModelRng(setup.seed),
    };
    model.build(&weights, false);
    // Nanoseconds since `origin`.
    let mut now_ns: u64 = EPOCH_NS + 1_000_000_000;
    let since_epoch = |t: u64| t.saturating_sub(EPOCH_NS);
    for (step, op) in ops.into_iter().enumerate() {
        let now = origin + Duration::from_nanos(now_ns);
        match op {
            Op::Open { b } => {
                let b = b % n;
                guards.push((b, Guard::Connection(backends[b].connection())));
                model.active[b] += 1;
            }
            Op::Request { b } => {
                let b = b % n;
                guards.push((b, Guard::Request(backends[b].request())));
                model.in_flight[b] += 1;
            }
            Op::Close { i } => {
                if !guards.is_empty() {
                    let (b, g) = guards.swap_remove(i % guards.len());
                    match g {
                        Guard::Connection(_) => model.active[b] -= 1,
                        Guard::Request(_) => model.in_flight[b] -= 1,
                    }
                }
            }
            Op::Sample {
                b,
                rtt_ns,
                decay_ns,
            } => {
                let b = b % n;
                backends[b].stats().record_latency(
                    Duration::from_nanos(rtt_ns),
                    now,
                    Duration::from_nanos(decay_ns),
                );
                model.ewma[b].record(rtt_ns, since_epoch(now_ns), decay_ns);
            }
            Op::Forward { ns } => now_ns += ns,
            Op::Back { ns } => now_ns = now_ns.saturating_sub(ns),
            Op::Pick {
                refuse,
                clock,
                then,
            } => {
                let got = real_pick(&sched, refuse, clock.then_some(now));
                let want = model.pick(refuse, clock.then(|| since_epoch(now_ns)));
                prop_assert_eq!(
                    got,
                    want,
                    "step {}: refusing {:#010b}, clock {}",
                    step,
                    refuse,
                    clock
                );
                if let Some(b) = got {
                    match then {
                        Then::Hold => {
                            guards.push((b, Guard::Connection(backends[b].connection())));
                            model.active[b] += 1;
                        }
                        Then::Short => drop(backends[b].connection()),
                        Then::Nothing => {}
                    }
                }
            }
            Op::Burst { n: count, refuse } => {
                for k in 0..count {
                    let got = real_pick(&sched, refuse, Some(now));
                    let want = model.pick(refuse, Some(since_epoch(now_ns)));
                    prop_assert_eq!(
                        got,
                        want,
                        "step {} pick {}: refusing {:#010b}",
                        step,
                        k,
                        refuse
                    );
                    if let Some(b) = got {
                        drop(backends[b].connection());
                    }
                }
            }
            Op::Rebuild { previous, reweight } => {
                if let Some((b, w)) = reweight {
                    let b = b % n;
                    weights[b] = w;
                    backends[b] = backends[b]
                        .clone()
                        .with_weight(Weight::new(u64::from(w)).unwrap());
                }
                sched = algo.build(&backends, previous.then_some(&sched)).unwrap();
                model.build(&weights, previous);
            }
        }
        let now = origin + Duration::from_nanos(now_ns);
        let read = |v: Option<f64>| v.map(|v| Duration::from_nanos(v as u64));
        for (b, backend) in backends.iter().enumerate() {
            let stats = backend.stats();
            prop_assert_eq!(stats.active(), model.active[b], "step {}: active", step);
            prop_assert_eq!(stats.in_flight(), model.in_flight[b], "step {}", step);
            // The estimate as read, to the nanosecond: decayed to now, and as recorded.
            let e = &model.ewma[b];
            prop_assert_eq!(
                stats.latency_ewma_at(now),
                read(e.at(since_epoch(now_ns))),
                "step {}: estimate of {}",
                step,
                b
            );
            prop_assert_eq!(
                stats.latency_ewma(),
                read((e.value > 0.0).then_some(e.value)),
                "step {}: recorded estimate of {}",
                step,
                b
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(model_config::with_cases(512))]

    /// Opens, closes, requests, latency samples at times moving forward (sometimes by
    /// days) and back, picks with and without a clock and refusing some or all backends,
    /// rebuilds with and without the previous scheduler and with weight changes: every
    /// pick, count and estimate is the model's.
    #[test]
    fn random_schedulers_match_the_model(setup in setup(), ops in ops()) {
        run(setup, ops)?;
    }
}

proptest! {
    #![proptest_config(model_config::with_cases(64))]

    /// Over many picks: `random`'s shares, and idle `p2c`'s (a tie goes to the first draw,
    /// which is by weight), follow the weights within five standard deviations; the alias
    /// table's exact shares are the weights' to 1e-6; and `p2c` and `peak_ewma`, with two
    /// or more candidates and `accept` taking all, never pick the one that costs strictly
    /// more than every other (it loses to whichever other candidate it is drawn with).
    #[test]
    fn shares_follow_weights_and_the_costliest_loses(
        weights in prop::collection::vec(prop_oneof![4 => 1u32..=10, 1 => 1u32..=65_535], 1..=8),
        loads in prop::collection::vec(0u64..4, 8),
        seed in any::<u64>(),
    ) {
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let exact = ModelAlias::new(&weights).shares();
        for (j, &w) in weights.iter().enumerate() {
            prop_assert!((exact[j] - f64::from(w) / total).abs() < 1e-6, "alias {}: {} ({:?})", j, exact[j], weights);
        }
        let picks = 20_000u32;
        for algo in [Algorithm::Random { seed }, Algorithm::PowerOfTwoChoices { seed }] {
            let set: Vec<Backend> = weights.iter().enumerate().map(|(i, &w)| backend(i, w, Arc::new(BackendStats::new(t0())))).collect();
            let s = algo.build(&set, None).unwrap();
            let mut counts = vec![0u32; set.len()];
            for _ in 0..picks {
                counts[real_pick(&s, 0, None).unwrap()] += 1;
            }
            for (j, &w) in weights.iter().enumerate() {
                let p = f64::from(w) / total;
                let want = f64::from(picks) * p;
                let sd = (want * (1.0 - p)).sqrt();
                prop_assert!((f64::from(counts[j]) - want).abs() <= 5.0 * sd + 1.0, "{}: backend {} got {}, want {:.1} ({:?})", algo, j, counts[j], want, weights);
            }
        }
        // Loaded: the strictly costliest candidate is never picked.
        let n = weights.len();
        prop_assume!(n >= 2);
        let origin = t0();
        let set: Vec<Backend> = weights.iter().enumerate().map(|(i, &w)| backend(i, w, Arc::new(BackendStats::new(origin)))).collect();
        let _held: Vec<RequestGuard> = (0..n).flat_map(|i| (0..loads[i]).map(|_| set[i].request()).collect::<Vec<_>>()).collect();
        for (i, b) in set.iter().enumerate() {
            b.stats().record_latency(Duration::from_millis(1 + i as u64), origin, Duration::from_secs(10));
        }
        for (algo, cost) in [
            (Algorithm::PowerOfTwoChoices { seed }, Box::new(|i: usize| loads[i] as f64 / f64::from(weights[i])) as Box<dyn Fn(usize) -> f64>),
            (Algorithm::PeakEwma { seed, default_rtt: Duration::from_millis(5) }, Box::new(|i: usize| (1 + i) as f64 * 1e6 * (loads[i] + 1) as f64 / f64::from(weights[i]))),
        ] {
            let costs: Vec<f64> = (0..n).map(&cost).collect();
            let max = costs.iter().copied().fold(f64::MIN, f64::max);
            let worst: Vec<usize> = (0..n).filter(|&i| costs[i] == max).collect();
            let s = algo.build(&set, None).unwrap();
            for _ in 0..2000 {
                let got = real_pick(&s, 0, Some(origin)).unwrap();
                prop_assert!(worst.len() > 1 || got != worst[0], "{}: picked the costliest {} ({:?})", algo, got, costs);
            }
        }
    }
}

#[allow(clippy::disallowed_methods)] // the tests' arbitrary origin
fn t0() -> Instant {
    Instant::now()
}
