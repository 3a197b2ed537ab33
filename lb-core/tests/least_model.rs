//! Model-based tests of the least-load schedulers `lc`, `wlc`, `sed` and `nq`: random
//! sequences of connections and requests opened and closed, picks (some refusing
//! backends), rebuilds and a second scheduler over the same counters, applied to the real
//! schedulers and to a plain model of what `algo::least`'s docs promise, compared after
//! every step.
//!
//! The model scans every candidate (weight above 0) that `accept` takes, as IPVS does, for
//! the least cost by IPVS's formula: `lc` the load, `wlc` load / weight, `sed`
//! (load + 1) / weight, `nq` an idle candidate first, else as `sed`; the load is open
//! connections plus requests in flight. Among equal costs `sed` and `nq` take the earliest
//! candidate. `lc` and `wlc` take the earliest virtual finish time (then the earliest
//! candidate): every pick of a candidate moves its finish time on to
//! `max(finish, vtime) + ⌊2²⁰ / weight⌋` (`lc`: weight 1) and the virtual time to
//! `max(finish, vtime)`. A rebuild from the scheduler it replaces keeps the virtual time
//! and the finish time of each candidate it had, and a candidate new to it finishes a step
//! after the virtual time; a scheduler built on its own (another pool over the same
//! counters) starts from 0.

mod model_config;

use lb_core::{
    Algorithm, AnyScheduler, Backend, BackendId, BuildScheduler, ConnectionGuard, RequestGuard,
    Scheduler, SelectContext, Weight,
};
use proptest::prelude::*;

/// One pick of a weight-1 candidate in virtual time (`algo::least`'s documented scale).
const SCALE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Lc,
    Wlc,
    Sed,
    Nq,
}

impl Algo {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Lc => Algorithm::LeastConnections,
            Self::Wlc => Algorithm::WeightedLeastConnections,
            Self::Sed => Algorithm::ShortestExpectedDelay,
            Self::Nq => Algorithm::NeverQueue,
        }
    }

    /// The weight a pick's step divides by: `lc` counts every weight as 1.
    fn step_weight(self, weight: u64) -> u64 {
        if self == Self::Lc {
            1
        } else {
            weight
        }
    }

    fn fair_ties(self) -> bool {
        matches!(self, Self::Lc | Self::Wlc)
    }

    /// The cost of a candidate with `load` and `weight`, as (class, numerator,
    /// denominator): lower class first, then the smaller fraction.
    fn cost(self, load: u64, weight: u64) -> (u8, u64, u64) {
        match self {
            Self::Lc => (0, load, 1),
            Self::Wlc => (0, load, weight),
            Self::Sed => (0, load + 1, weight),
            Self::Nq if load == 0 => (0, 0, 1),
            Self::Nq => (1, load + 1, weight),
        }
    }
}

/// `a` cheaper than `b`, `Less`; fractions compared by cross-multiplication.
fn cmp_cost(a: (u8, u64, u64), b: (u8, u64, u64)) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then((u128::from(a.1) * u128::from(b.2)).cmp(&(u128::from(b.1) * u128::from(a.2))))
}

#[derive(Debug, Clone)]
struct Setup {
    algo: Algo,
    /// The first scheduler's weights, one per backend.
    weights: Vec<u32>,
    /// The second scheduler's (a reload that changed them), one per backend.
    second: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A connection to backend `b`, held.
    Open { b: usize },
    /// A request in flight to backend `b`, held.
    Request { b: usize },
    /// Drops the `i`-th held guard (modulo how many).
    Close { i: usize },
    /// A pick by scheduler `s` with `accept` refusing the backends whose bit is set in
    /// `refuse`; the picked backend gets a held connection, a short one (opened and closed
    /// at once) or none.
    Pick { s: usize, refuse: u8, then: Then },
    /// `n` picks by scheduler `s` in a row, each a short connection.
    Burst { s: usize, n: u8, refuse: u8 },
    /// Rebuilds scheduler `s` over the same counters (as its pool does), after setting
    /// backend `b`'s weight to `w` when given.
    Rebuild {
        s: usize,
        reweight: Option<(usize, u32)>,
    },
    /// Drops scheduler 1 (another pool over the same counters).
    DropSecond,
}

#[derive(Debug, Clone, Copy)]
enum Then {
    Hold,
    Short,
    Nothing,
}

fn weight() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => Just(0u32),
        4 => 1u32..=4,
        1 => Just(7),
        1 => Just(65_535),
        1 => 40_000u32..=65_535,
        1 => 1u32..=65_535,
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![
            Just(Algo::Lc),
            Just(Algo::Wlc),
            Just(Algo::Sed),
            Just(Algo::Nq)
        ],
        (1usize..=8).prop_flat_map(|n| {
            (
                prop::collection::vec(weight(), n),
                prop::collection::vec(weight(), n),
            )
        }),
    )
        .prop_map(|(algo, (weights, second))| Setup {
            algo,
            weights,
            second,
        })
}

fn refuse() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => any::<u8>()]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0usize..8).prop_map(|b| Op::Open { b }),
        2 => (0usize..8).prop_map(|b| Op::Request { b }),
        5 => any::<usize>().prop_map(|i| Op::Close { i }),
        8 => (
            prop_oneof![3 => Just(0usize), 1 => Just(1)],
            refuse(),
            prop_oneof![Just(Then::Hold), Just(Then::Short), Just(Then::Nothing)]
        )
            .prop_map(|(s, refuse, then)| Op::Pick { s, refuse, then }),
        2 => (0usize..2, 1u8..=40, refuse()).prop_map(|(s, n, refuse)| Op::Burst { s, n, refuse }),
        2 => (0usize..2, prop::option::weighted(0.5, (0usize..8, weight())))
            .prop_map(|(s, reweight)| Op::Rebuild { s, reweight }),
        1 => Just(Op::DropSecond),
    ];
    prop::collection::vec(op, 1..80)
}

/// The model of one scheduler: its candidates' weights and virtual finish times, by
/// backend (weight 0: not a candidate).
#[derive(Debug, Clone)]
struct ModelScheduler {
    weights: Vec<u64>,
    finish: Vec<u64>,
    vtime: u64,
}

impl ModelScheduler {
    fn fresh(weights: &[u32]) -> Self {
        Self {
            weights: weights.iter().map(|&w| u64::from(w)).collect(),
            finish: vec![0; weights.len()],
            vtime: 0,
        }
    }
}

#[derive(Debug)]
struct Model {
    algo: Algo,
    active: Vec<u64>,
    in_flight: Vec<u64>,
    scheds: [Option<ModelScheduler>; 2],
}

impl Model {
    /// What scheduler `s` picks with `accept` refusing `refuse`, and the pick recorded.
    fn pick(&mut self, s: usize, refuse: u8) -> Option<usize> {
        let algo = self.algo;
        let (active, in_flight) = (&self.active, &self.in_flight);
        let m = self.scheds[s].as_mut()?;
        let mut best: Option<usize> = None;
        for j in 0..m.weights.len() {
            if m.weights[j] == 0 || refuse & (1 << j) != 0 {
                continue;
            }
            let Some(cur) = best else {
                best = Some(j);
                continue;
            };
            let cost = |i: usize| algo.cost(active[i] + in_flight[i], m.weights[i]);
            let order = cmp_cost(cost(j), cost(cur)).then(if algo.fair_ties() {
                m.finish[j].cmp(&m.finish[cur])
            } else {
                std::cmp::Ordering::Equal
            });
            if order.is_lt() {
                best = Some(j);
            }
        }
        let j = best?;
        if algo.fair_ties() {
            let start = m.finish[j].max(m.vtime);
            m.vtime = start;
            m.finish[j] = start + SCALE / algo.step_weight(m.weights[j]);
        }
        Some(j)
    }
}

enum Guard {
    Connection(#[allow(dead_code)] ConnectionGuard),
    Request(#[allow(dead_code)] RequestGuard),
}

struct Real {
    algo: Algorithm,
    /// Each scheduler's backends (the second's share the first's counters).
    backends: [Vec<Backend>; 2],
    scheds: [Option<AnyScheduler>; 2],
    guards: Vec<(usize, Guard)>,
}

fn backend(i: usize, w: u32) -> Backend {
    Backend::new(
        BackendId(i as u32),
        format!("192.0.2.{}:80", i + 1).parse().unwrap(),
    )
    .with_weight(Weight::new(u64::from(w)).unwrap())
}

fn pick(s: &AnyScheduler, refuse: u8) -> Option<usize> {
    s.select(&SelectContext::default(), &mut |b| {
        refuse & (1 << b.id().0) == 0
    })
    .map(|b| b.id().0 as usize)
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let n = setup.weights.len();
    let algo = setup.algo.algorithm();
    let first: Vec<Backend> = (0..n).map(|i| backend(i, setup.weights[i])).collect();
    let second: Vec<Backend> = first
        .iter()
        .zip(&setup.second)
        .map(|(b, &w)| {
            Backend::with_stats(b.id(), b.addr(), std::sync::Arc::clone(b.stats()))
                .with_weight(Weight::new(u64::from(w)).unwrap())
        })
        .collect();
    let mut real = Real {
        scheds: [
            Some(algo.build(&first, None).unwrap()),
            Some(algo.build(&second, None).unwrap()),
        ],
        backends: [first, second],
        algo,
        guards: Vec::new(),
    };
    let mut model = Model {
        algo: setup.algo,
        active: vec![0; n],
        in_flight: vec![0; n],
        scheds: [
            Some(ModelScheduler::fresh(&setup.weights)),
            Some(ModelScheduler::fresh(&setup.second)),
        ],
    };
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Open { b } => {
                let b = b % n;
                let g = real.backends[0][b].stats().connection();
                real.guards.push((b, Guard::Connection(g)));
                model.active[b] += 1;
            }
            Op::Request { b } => {
                let b = b % n;
                let g = real.backends[0][b].stats().request();
                real.guards.push((b, Guard::Request(g)));
                model.in_flight[b] += 1;
            }
            Op::Close { i } => {
                if !real.guards.is_empty() {
                    let (b, g) = real.guards.swap_remove(i % real.guards.len());
                    match g {
                        Guard::Connection(_) => model.active[b] -= 1,
                        Guard::Request(_) => model.in_flight[b] -= 1,
                    }
                }
            }
            Op::Pick { s, refuse, then } => {
                let got = real.scheds[s].as_ref().and_then(|x| pick(x, refuse));
                let want = model.pick(s, refuse);
                prop_assert_eq!(
                    got,
                    want,
                    "step {}: scheduler {} refusing {:#010b}",
                    step,
                    s,
                    refuse
                );
                if let Some(b) = got {
                    match then {
                        Then::Hold => {
                            let g = real.backends[s][b].connection();
                            real.guards.push((b, Guard::Connection(g)));
                            model.active[b] += 1;
                        }
                        Then::Short => drop(real.backends[s][b].connection()),
                        Then::Nothing => {}
                    }
                }
            }
            Op::Burst {
                s,
                n: count,
                refuse,
            } => {
                for k in 0..count {
                    let got = real.scheds[s].as_ref().and_then(|x| pick(x, refuse));
                    let want = model.pick(s, refuse);
                    prop_assert_eq!(
                        got,
                        want,
                        "step {} pick {}: scheduler {} refusing {:#010b}",
                        step,
                        k,
                        s,
                        refuse
                    );
                    if let Some(b) = got {
                        drop(real.backends[s][b].connection());
                    }
                }
            }
            Op::Rebuild { s, reweight } => {
                let had: Vec<bool> = model.scheds[s]
                    .as_ref()
                    .map(|m| m.weights.iter().map(|&w| w > 0).collect())
                    .unwrap_or_default();
                if let Some((b, w)) = reweight {
                    let b = b % n;
                    real.backends[s][b] = real.backends[s][b]
                        .clone()
                        .with_weight(Weight::new(u64::from(w)).unwrap());
                }
                let weights: Vec<u32> = real.backends[s].iter().map(|b| b.weight().get()).collect();
                let built = real
                    .algo
                    .build(&real.backends[s], real.scheds[s].as_ref())
                    .unwrap();
                real.scheds[s] = Some(built);
                // A rebuild keeps the virtual time and the finish times of the candidates
                // it had; one new to it finishes a step after the virtual time. A scheduler
                // built anew (no previous) starts from 0.
                model.scheds[s] = Some(match model.scheds[s].take() {
                    Some(mut m) => {
                        m.weights = weights.iter().map(|&w| u64::from(w)).collect();
                        for (b, &had) in had.iter().enumerate() {
                            if m.weights[b] > 0 && !had {
                                m.finish[b] =
                                    m.vtime + SCALE / model.algo.step_weight(m.weights[b]);
                            }
                        }
                        m
                    }
                    None => ModelScheduler::fresh(&weights),
                });
            }
            Op::DropSecond => {
                real.scheds[1] = None;
                model.scheds[1] = None;
            }
        }
        for b in 0..n {
            let stats = real.backends[0][b].stats();
            prop_assert_eq!(
                stats.active(),
                model.active[b],
                "step {}: active of {}",
                step,
                b
            );
            prop_assert_eq!(
                stats.in_flight(),
                model.in_flight[b],
                "step {}: in flight of {}",
                step,
                b
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(model_config::with_cases(512))]

    /// Opens, closes, requests, picks (some refusing backends, some in long runs of short
    /// connections), rebuilds with and without a weight change, and a second scheduler
    /// over the same counters: every pick is the model's.
    #[test]
    fn least_schedulers_match_the_model(setup in setup(), ops in ops()) {
        run(setup, ops)?;
    }
}

proptest! {
    #![proptest_config(model_config::with_cases(128))]

    /// Ties over a long run: with every backend idle at each pick (short connections one
    /// after another), `wlc` gives each backend a share in proportion to its weight and
    /// `lc` equal shares: each within n picks (n backends) of the exact share by its step
    /// of ⌊2²⁰ / weight⌋, and so of its weight's share to within 1/16 more (1/256 for
    /// weights up to 4096); `sed` gives every pick to the earliest of the heaviest and `nq` to the first.
    #[test]
    fn tied_shares_follow_weight(weights in prop::collection::vec(prop_oneof![4 => 1u32..=16, 1 => 1u32..=65_535], 1..=8), picks in 500u32..2000) {
        let set: Vec<Backend> = weights.iter().enumerate().map(|(i, &w)| backend(i, w)).collect();
        for algo in [Algo::Lc, Algo::Wlc, Algo::Sed, Algo::Nq] {
            let s = algo.algorithm().build(&set, None).unwrap();
            let mut counts = vec![0u32; set.len()];
            for _ in 0..picks {
                let b = pick(&s, 0).unwrap();
                drop(set[b].connection());
                counts[b] += 1;
            }
            // Every backend's first pick comes at the start (all finish times 0), so each
            // may be up to a pick ahead of its share and the others behind by as many.
            let tolerance = weights.len() as f64;
            let step = |w: u32| SCALE / if algo == Algo::Lc { 1 } else { u64::from(w) };
            match algo {
                Algo::Lc | Algo::Wlc => {
                    let rate: Vec<f64> = weights.iter().map(|&w| 1.0 / step(w) as f64).collect();
                    let total: f64 = rate.iter().sum();
                    let wsum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
                    for (j, &c) in counts.iter().enumerate() {
                        let want = f64::from(picks) * rate[j] / total;
                        prop_assert!((f64::from(c) - want).abs() <= tolerance, "{:?}: backend {} got {} of {}, want {:.2} ({:?}: {:?})", algo, j, c, picks, want, weights, counts);
                        if algo == Algo::Wlc {
                            let exact = f64::from(picks) * f64::from(weights[j]) / wsum;
                            let bound = if weights.iter().all(|&w| w <= 4096) { 1.0 / 256.0 } else { 1.0 / 16.0 };
                            prop_assert!((f64::from(c) - exact).abs() <= tolerance + bound * exact, "wlc: backend {} got {}, weight's share {:.2} ({:?})", j, c, exact, weights);
                        }
                    }
                }
                Algo::Sed => {
                    let max = *weights.iter().max().unwrap();
                    let first = weights.iter().position(|&w| w == max).unwrap();
                    prop_assert_eq!(counts[first], picks, "sed: {:?}: {:?}", weights, counts);
                }
                Algo::Nq => prop_assert_eq!(counts[0], picks, "nq: {:?}: {:?}", weights, counts),
            }
        }
    }
}
