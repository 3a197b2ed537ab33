//! A property-based conformance kit for schedulers: the proptest strategies and invariants
//! that every built-in algorithm passes, public so users can hold their own schedulers to
//! the same standard. Enabled by the `testing` feature (off by default; it is the only thing
//! that makes proptest a dependency).
//!
//! Invariants are grouped by what an algorithm claims ([`Claims`]):
//!
//! * **any scheduler** — never returns an ineligible backend (down, drained, in maintenance
//!   or weight 0) nor one `accept` refused; returns `None` only when no candidate is
//!   eligible and accepted; never panics, across rebuilds with membership, health, admin and
//!   weight changes in between picks;
//! * **weighted** — over many picks on an unchanging set, each backend's share converges to
//!   its weight share;
//! * **consistent** — the same key goes to the same backend across rebuilds of the same set;
//!   removing one of `n` backends moves only about `1/n` of keys; adding one moves keys
//!   only (or, for [`Consistency::Bounded`], almost only) to the new backend.
//!
//! [`check_scheduler`] runs every invariant that applies and returns the first
//! counterexample, shrunk by proptest, as a [`Failure`] whose `Display` prints it.
//!
//! # Examples
//!
//! ```
//! use lb_core::testing::{check_scheduler, Claims};
//! use lb_core::Algorithm;
//!
//! check_scheduler(&Algorithm::RoundRobin, Claims::ANY, 32).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::backend::{AdminState, Backend, BackendId, BackendSet, Health, Weight};
use crate::scheduler::{same_candidates, BuildScheduler, Scheduler, SelectContext};

/// How strictly a consistent-hash scheduler keeps keys in place when a backend is added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Consistency {
    /// Adding a backend moves keys only to it (ring hash).
    Strict,
    /// Adding a backend may also move up to this fraction of all keys between existing
    /// backends (Maglev's small reshuffle, NSDI'16 §5.3).
    Bounded {
        /// Fraction of keys, 0.0..=1.0.
        max_reshuffle: f64,
    },
}

/// What an algorithm claims, selecting the invariants [`check_scheduler`] runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claims {
    /// Shares converge to weight shares.
    pub weighted: bool,
    /// Consistent hashing, and how strictly.
    pub consistent: Option<Consistency>,
}

impl Claims {
    /// Only the invariants every scheduler must keep.
    pub const ANY: Self = Self {
        weighted: false,
        consistent: None,
    };
    /// Any + weighted shares.
    pub const WEIGHTED: Self = Self {
        weighted: true,
        consistent: None,
    };
}

/// The first counterexample found, shrunk.
#[derive(Debug)]
pub struct Failure {
    /// The invariant broken.
    pub invariant: &'static str,
    /// What went wrong and the minimal input, as proptest reports it.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {:?} broken: {}", self.invariant, self.message)
    }
}

impl std::error::Error for Failure {}

/// A backend's description in a generated case (kept small and printable for shrinking).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Weight, 0..=20.
    pub weight: u32,
    /// Admin state.
    pub admin: AdminState,
    /// Health.
    pub health: Health,
    /// Backup flag.
    pub backup: bool,
}

impl BackendSpec {
    /// Whether a backend like this may take new connections.
    pub fn eligible(&self) -> bool {
        self.weight > 0 && self.admin == AdminState::Ready && self.health == Health::Up
    }
}

/// Strategy for one backend's description: mostly eligible, sometimes not.
pub fn backend_spec() -> impl Strategy<Value = BackendSpec> {
    (
        prop_oneof![3 => 1u32..=20, 1 => Just(0u32)],
        prop_oneof![
            6 => Just(AdminState::Ready),
            1 => Just(AdminState::Drain),
            1 => Just(AdminState::Maint)
        ],
        prop_oneof![5 => Just(Health::Up), 1 => Just(Health::Down)],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(weight, admin, health, backup)| BackendSpec {
            weight,
            admin,
            health,
            backup,
        })
}

/// The address of the `i`-th generated backend (stable, distinct).
pub fn backend_addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        [198, 18, (i >> 8) as u8, i as u8].into(),
        8000 + (i % 1000) as u16,
    )
}

/// Ready, healthy, non-backup backends with these weights, ids `0..weights.len()` (via
/// [`backends_from`]).
pub fn ready_backends(weights: &[u32]) -> Vec<Backend> {
    let specs: Vec<BackendSpec> = weights
        .iter()
        .map(|&weight| BackendSpec {
            weight,
            admin: AdminState::Ready,
            health: Health::Up,
            backup: false,
        })
        .collect();
    backends_from(&specs)
}

/// Builds backends from descriptions; ids are indices, addresses from [`backend_addr`].
pub fn backends_from(specs: &[BackendSpec]) -> Vec<Backend> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Backend::new(BackendId(i as u32), backend_addr(i as u32))
                .with_weight(Weight::new(u64::from(s.weight)).unwrap_or(Weight::MAX))
                .with_admin(s.admin)
                .with_health(s.health)
                .with_backup(s.backup)
        })
        .collect()
}

/// Strategy for backend sets of 0..=`max` backends.
pub fn backend_set(max: usize) -> impl Strategy<Value = BackendSet> {
    prop::collection::vec(backend_spec(), 0..=max)
        .prop_map(|specs| BackendSet::new(backends_from(&specs)).unwrap_or_default())
}

/// One step of a pick sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Pick with this key, refusing backends whose id is in `refuse`.
    Pick {
        /// The key bytes.
        key: u16,
        /// Ids that `accept` refuses.
        refuse: Vec<u32>,
    },
    /// Replace backend `index` (modulo the set size) with a new description.
    Change {
        /// Which backend.
        index: usize,
        /// Its new description.
        spec: BackendSpec,
    },
    /// Remove backend `index` (modulo the set size).
    Remove {
        /// Which backend.
        index: usize,
    },
    /// Add a backend.
    Add(BackendSpec),
}

/// Strategy for pick sequences with membership changes in between.
pub fn steps(max_len: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (any::<u16>(), prop::collection::vec(0u32..12, 0..3))
            .prop_map(|(key, refuse)| Step::Pick { key, refuse }),
        1 => (any::<usize>(), backend_spec()).prop_map(|(index, spec)| Step::Change { index, spec }),
        1 => any::<usize>().prop_map(|index| Step::Remove { index }),
        1 => backend_spec().prop_map(Step::Add),
    ];
    prop::collection::vec(step, 1..=max_len)
}

fn run<T: fmt::Debug>(
    invariant: &'static str,
    cases: u32,
    strategy: impl Strategy<Value = T>,
    test: impl Fn(T) -> Result<(), TestCaseError>,
) -> Result<(), Failure> {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |v| {
            match catch_unwind(AssertUnwindSafe(|| test(v))) {
                Ok(r) => r,
                Err(p) => {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(TestCaseError::fail(format!("panicked: {msg}")))
                }
            }
        })
        .map_err(|e| Failure {
            invariant,
            message: match e {
                TestError::Fail(why, input) => format!("{why}\nminimal input: {input:#?}"),
                TestError::Abort(why) => format!("aborted: {why}"),
            },
        })
}

/// The candidates a pool would give a scheduler: eligible primaries, else eligible backups.
fn candidates(specs: &[BackendSpec]) -> Vec<Backend> {
    let all = backends_from(specs);
    let primaries: Vec<Backend> = all
        .iter()
        .filter(|b| !b.is_backup() && b.is_eligible())
        .cloned()
        .collect();
    if primaries.is_empty() {
        all.into_iter()
            .filter(|b| b.is_backup() && b.is_eligible())
            .collect()
    } else {
        primaries
    }
}

/// Invariants every scheduler keeps, over a sequence of picks and rebuilds.
fn check_any<B: BuildScheduler>(builder: &B, cases: u32) -> Result<(), Failure> {
    run(
        "any: only eligible, accepted backends; None only when none is",
        cases,
        (prop::collection::vec(backend_spec(), 0..12), steps(40)),
        |(mut specs, steps)| {
            let mut cands = candidates(&specs);
            let mut sched = builder
                .build(&cands, None)
                .map_err(|e| TestCaseError::fail(format!("build failed: {e}")))?;
            for step in steps {
                match step {
                    Step::Pick { key, refuse } => {
                        let kb = key.to_be_bytes();
                        let ctx = SelectContext {
                            client: Some(SocketAddr::new(
                                [203, 0, (key >> 8) as u8, key as u8].into(),
                                1024,
                            )),
                            destination: None,
                            hash_key: (key % 3 == 0).then_some(&kb[..]),
                        };
                        let mut accept = |b: &Backend| !refuse.contains(&b.id().0);
                        let got = sched.select(&ctx, &mut accept).cloned();
                        let any_ok = cands.iter().any(|b| !refuse.contains(&b.id().0));
                        match got {
                            Some(b) => {
                                prop_assert!(b.is_eligible(), "picked ineligible backend {:?}", b);
                                prop_assert!(
                                    !refuse.contains(&b.id().0),
                                    "picked refused backend {}",
                                    b.id()
                                );
                                prop_assert!(
                                    cands.iter().any(|c| c.id() == b.id()),
                                    "picked {} which is not a candidate",
                                    b.id()
                                );
                            }
                            None => prop_assert!(
                                !any_ok,
                                "returned None while an eligible accepted backend exists"
                            ),
                        }
                    }
                    Step::Change { index, spec } => {
                        if !specs.is_empty() {
                            let i = index % specs.len();
                            specs[i] = spec;
                        }
                    }
                    Step::Remove { index } => {
                        if !specs.is_empty() {
                            let i = index % specs.len();
                            specs.remove(i);
                        }
                    }
                    Step::Add(spec) => specs.push(spec),
                }
                let now = candidates(&specs);
                if !same_candidates(&now, &cands) {
                    cands = now;
                    sched = builder
                        .build(&cands, Some(&sched))
                        .map_err(|e| TestCaseError::fail(format!("rebuild failed: {e}")))?;
                }
            }
            Ok(())
        },
    )
}

/// Weighted shares converge: over `500 × Σw` picks each share is within 3 % (absolute) of
/// its weight share, or within 5 standard deviations of a binomial draw with that share
/// (`5 × sqrt(p (1 − p) / picks)`) when that is wider. Hash-based schedulers (sh, dh, random)
/// spread keys like a random draw: a fixed 3 % at `200 × Σw` picks once failed dh here
/// (share 0.468 for 0.5 at 2 400 picks, 3.1σ), while a fair hash breaks 5σ in a given check
/// with probability about 6 × 10⁻⁷.
fn check_weighted<B: BuildScheduler>(builder: &B, cases: u32) -> Result<(), Failure> {
    run(
        "weighted: shares converge to weight shares",
        cases,
        prop::collection::vec(1u32..=10, 1..8),
        |weights| {
            let cands = ready_backends(&weights);
            let sched = builder
                .build(&cands, None)
                .map_err(|e| TestCaseError::fail(format!("build failed: {e}")))?;
            let total: u32 = weights.iter().sum();
            let picks = 500 * total;
            let mut counts = HashMap::new();
            for i in 0..picks {
                let key = i.to_be_bytes();
                let ctx = SelectContext {
                    client: Some(SocketAddr::new(i.to_be_bytes().into(), 1)),
                    destination: None,
                    hash_key: Some(&key),
                };
                let b = sched
                    .select(&ctx, &mut |_| true)
                    .ok_or_else(|| TestCaseError::fail("None with eligible backends"))?;
                *counts.entry(b.id().0).or_insert(0u32) += 1;
            }
            for (i, &w) in weights.iter().enumerate() {
                let got = f64::from(*counts.get(&(i as u32)).unwrap_or(&0)) / f64::from(picks);
                let want = f64::from(w) / f64::from(total);
                let tolerance = (5.0 * (want * (1.0 - want) / f64::from(picks)).sqrt()).max(0.03);
                prop_assert!(
                    (got - want).abs() <= tolerance,
                    "backend {} got share {:.4}, weight share {:.4} (weights {:?})",
                    i,
                    got,
                    want,
                    weights
                );
            }
            Ok(())
        },
    )
}

fn key_ctx(k: u32, buf: &mut [u8; 4]) -> SelectContext<'_> {
    *buf = k.to_be_bytes();
    SelectContext::key(&buf[..])
}

fn mapping<S: Scheduler>(s: &S, keys: u32) -> Vec<BackendId> {
    let mut buf = [0u8; 4];
    (0..keys)
        .map(|k| {
            s.select(&key_ctx(k, &mut buf), &mut |_| true)
                .map_or(BackendId(u32::MAX), Backend::id)
        })
        .collect()
}

/// Consistency: stable across rebuilds; bounded disruption on removal and addition.
fn check_consistent<B: BuildScheduler>(
    builder: &B,
    how: Consistency,
    cases: u32,
) -> Result<(), Failure> {
    const KEYS: u32 = 4000;
    run(
        "consistent: same key same backend; ~1/n moved on removal; additions move keys to the new backend",
        cases,
        (prop::collection::vec(1u32..=4, 3..12), any::<prop::sample::Index>()),
        |(weights, victim)| {
            let all = ready_backends(&weights);
            let build = |c: &[Backend]| {
                builder
                    .build(c, None)
                    .map_err(|e| TestCaseError::fail(format!("build failed: {e}")))
            };
            let a = build(&all)?;
            let b = build(&all)?;
            let base = mapping(&a, KEYS);
            prop_assert_eq!(&base, &mapping(&b, KEYS), "two builds of one set disagree");

            // Removal.
            let v = victim.index(all.len());
            let removed_id = all[v].id();
            let fewer: Vec<Backend> = all.iter().filter(|b| b.id() != removed_id).cloned().collect();
            let after = mapping(&build(&fewer)?, KEYS);
            let moved = base.iter().zip(&after).filter(|(x, y)| x != y).count();
            let on_victim = base.iter().filter(|&&x| x == removed_id).count();
            let extra = moved - on_victim.min(moved);
            let total_w: u32 = weights.iter().sum();
            let victim_share = f64::from(weights[v]) / f64::from(total_w);
            let bound = match how {
                Consistency::Strict => 0.0,
                Consistency::Bounded { max_reshuffle } => max_reshuffle,
            };
            prop_assert!(
                f64::from(moved as u32) / f64::from(KEYS) <= victim_share + bound + 0.05,
                "removing {} (share {:.3}) moved {} of {} keys",
                removed_id,
                victim_share,
                moved,
                KEYS
            );
            prop_assert!(
                f64::from(extra as u32) / f64::from(KEYS) <= bound,
                "removing {} moved {} keys that were not on it",
                removed_id,
                extra
            );

            // Addition: back from `fewer` to `all` — keys move only to the re-added backend.
            let before = &after;
            let moved_elsewhere = before
                .iter()
                .zip(&base)
                .filter(|(x, y)| x != y && **y != removed_id)
                .count();
            prop_assert!(
                f64::from(moved_elsewhere as u32) / f64::from(KEYS) <= bound,
                "adding {} moved {} keys between other backends",
                removed_id,
                moved_elsewhere
            );
            Ok(())
        },
    )
}

/// Runs every invariant `claims` selects against schedulers from `builder`, `cases` cases
/// each (64 is a good default), and returns the first shrunk counterexample.
///
/// # Errors
/// The first [`Failure`].
pub fn check_scheduler<B: BuildScheduler>(
    builder: &B,
    claims: Claims,
    cases: u32,
) -> Result<(), Failure> {
    check_any(builder, cases)?;
    if claims.weighted {
        check_weighted(builder, cases.div_ceil(4))?;
    }
    if let Some(how) = claims.consistent {
        check_consistent(builder, how, cases.div_ceil(4))?;
    }
    Ok(())
}
