//! Model-based test of [`PoolApplier`] on a [`Pool`]: random sequences of active-check
//! events (with and without `misc_dynamic` weights), outlier ejections, configured-weight
//! changes, adjustments (tracked files), `lbctl` admin changes, resyncs, `forget`s,
//! reloads (`Pool::replace`), picks and time steps, applied to a pool with two appliers (one
//! per `inhibit_on_failure` choice, routed by backend as lb-node routes them) and to a plain
//! model of what the docs promise, compared after each step.
//!
//! The model keeps what each applier knows of a backend (by address) and derives the pool's
//! state from it: a backend is failed while its check is down, it is ejected or an
//! adjustment fails it; failed, it is down with its weight in use ([`OnFailure::Remove`])
//! or up at weight 0 ([`OnFailure::Inhibit`], its clients' persistence entries dropped);
//! otherwise it is up at its weight in use: the `misc_dynamic` weight if the last check
//! event asked for one, else the configured weight, plus the adjustment's offset within
//! `0..=65535`. Each change reaches the pool as one state change at the step's `now`, so a
//! backend coming into service starts its slow start then. An applier learns a backend it
//! does not know from the pool (down: failed by its check; its weight as configured); at
//! each call given the pool it takes the pool's numbering and drops what it knew of
//! backends that left; `forget` and `is_failed_by_checks` go by that numbering.
//!
//! Around that it models the pool's side as the pool's docs describe it: admin states,
//! slow-start weights and wake-ups, which persistence entries a rebuild keeps and where a
//! pick may go. After each step every backend's health, weight, admin state, effective
//! weight, the pool's next wake-up, every live persistence entry with its time left, and
//! both appliers' `is_failed_by_checks` and `is_serving_apart_from_ejection` must be the
//! model's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_core::{
    AdminState, Algorithm, Backend, BackendId, BackendSet, BuildScheduler, Health, Pool,
    PoolConfig, SelectContext, Weight,
};
use lb_health::outlier::EjectionReason;
use lb_health::{CheckState, HealthEvent, OnFailure, OutlierEvent, PoolApplier};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const TIMEOUT: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(20);
/// Slow start moves in twentieths of the window, at least 1 s apart.
const STEP: Duration = Duration::from_secs(1);
/// Addresses backends may have: four in the first set, a fifth that only a reload brings.
const ADDRS: u8 = 5;
const CLIENTS: u8 = 4;
/// An id no backend has.
const UNKNOWN: BackendId = BackendId(99);

#[allow(clippy::disallowed_methods)] // tests pick an arbitrary origin
fn t0() -> Instant {
    Instant::now()
}

fn addr(a: u8) -> SocketAddr {
    SocketAddr::new([192, 0, 2, a + 1].into(), 80)
}

fn client(c: u8) -> SocketAddr {
    SocketAddr::new([198, 51, 100, c + 1].into(), 1000)
}

fn weight(w: u32) -> Weight {
    Weight::new(u64::from(w)).unwrap()
}

/// A backend as a configuration gives it.
#[derive(Debug, Clone, Copy)]
struct Member {
    weight: u32,
    admin: AdminState,
    backup: bool,
    up: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// Moves the clock by `dt` seconds.
    Advance { dt: u8 },
    /// A pick for client `c`.
    Pick { c: u8 },
    /// An active-check event for the backend at address `a` (an unknown id when it is not
    /// in the pool): now up or down, with a `misc_dynamic` weight or not.
    Check {
        a: u8,
        up: bool,
        weight: Option<u32>,
    },
    /// An outlier ejection or its end.
    Outlier { a: u8, ejected: bool },
    /// `set_configured_weight` (lbctl, a reload's new weight).
    Configured { a: u8, w: u32 },
    /// `set_adjustment` (tracked files).
    Adjust { a: u8, down: bool, offset: i64 },
    /// `Pool::set_admin`, as lbctl makes it: the appliers are not told.
    Admin { a: u8, admin: AdminState },
    /// `resync` with these checks' states (up, weight), split between the appliers.
    Resync {
        states: Vec<(u8, bool, Option<u32>)>,
    },
    /// `forget` of the backend at `a` (checks removed).
    Forget { a: u8 },
    /// `Pool::replace` with these addresses in this order, numbered from 1: an address
    /// already there keeps its weight, admin state and backup flag (a reload that renumbers
    /// only), a new one comes as `fresh[a]` says. (lb-node reloads with a new pool and new
    /// appliers instead; the applier's docs say how it follows a replace.)
    Replace { order: Vec<u8>, fresh: Vec<Member> },
    /// `Pool::handle_timeout(now)`.
    Timeout,
}

fn admin() -> impl Strategy<Value = AdminState> {
    prop_oneof![
        4 => Just(AdminState::Ready),
        1 => Just(AdminState::Drain),
        1 => Just(AdminState::Maint),
    ]
}

fn configured() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 1 => Just(1), 2 => Just(3), 3 => Just(10)]
}

/// A `misc_dynamic` weight: none, 0, below, at and above the configured weights.
fn dynamic() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(0u32)),
        1 => Just(Some(2)),
        1 => Just(Some(10)),
        1 => Just(Some(253)),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (
        configured(),
        admin(),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(weight, admin, backup, up)| Member {
            weight,
            admin,
            backup,
            up,
        })
}

/// The pool's settings, each address's `inhibit_on_failure` choice and the first set (four
/// backends, the last maybe a backup).
#[derive(Debug, Clone)]
struct Setup {
    algo: Algorithm,
    slow_start: bool,
    expire_quiescent: bool,
    inhibit: Vec<bool>,
    first: Vec<Member>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        // Maglev keeps parked backends in its table; a small one keeps the test fast.
        prop::sample::select(vec![
            Algorithm::WeightedRoundRobin,
            Algorithm::RoundRobin,
            Algorithm::Maglev { table_size: 101 },
            Algorithm::WeightedLeastConnections,
        ]),
        prop::bool::weighted(0.6),
        prop::bool::weighted(0.2),
        // All remove, all inhibit, or mixed (lb-node's two appliers).
        prop_oneof![
            Just(vec![false; usize::from(ADDRS)]),
            Just(vec![true; usize::from(ADDRS)]),
            prop::collection::vec(any::<bool>(), usize::from(ADDRS)),
        ],
        prop::collection::vec(member(), 4),
        prop::bool::weighted(0.4),
    )
        .prop_map(
            |(algo, slow_start, expire_quiescent, inhibit, mut first, backup)| {
                for (i, m) in first.iter_mut().enumerate() {
                    m.backup = backup && i == 3;
                }
                Setup {
                    algo,
                    slow_start,
                    expire_quiescent,
                    inhibit,
                    first,
                }
            },
        )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let a = 0..ADDRS;
    let op = prop_oneof![
        4 => prop_oneof![6 => 0u8..=5, 1 => 15u8..=70].prop_map(|dt| Op::Advance { dt }),
        5 => (0..CLIENTS).prop_map(|c| Op::Pick { c }),
        8 => (a.clone(), prop::bool::weighted(0.55), dynamic())
            .prop_map(|(a, up, weight)| Op::Check { a, up, weight }),
        3 => (a.clone(), any::<bool>()).prop_map(|(a, ejected)| Op::Outlier { a, ejected }),
        2 => (a.clone(), prop_oneof![Just(0u32), Just(1), Just(5), Just(20)])
            .prop_map(|(a, w)| Op::Configured { a, w }),
        2 => (
            a.clone(),
            prop::bool::weighted(0.3),
            prop_oneof![
                4 => Just(0i64),
                1 => Just(-300),
                1 => Just(-2),
                1 => Just(4),
                1 => Just(70_000),
            ],
        )
            .prop_map(|(a, down, offset)| Op::Adjust { a, down, offset }),
        2 => (a.clone(), admin()).prop_map(|(a, admin)| Op::Admin { a, admin }),
        1 => prop::collection::vec((a.clone(), any::<bool>(), dynamic()), 0..=5)
            .prop_map(|states| Op::Resync { states }),
        1 => a.clone().prop_map(|a| Op::Forget { a }),
        1 => (
            prop::sample::subsequence((0..ADDRS).collect::<Vec<u8>>(), 1..=usize::from(ADDRS))
                .prop_shuffle(),
            prop::collection::vec(member(), usize::from(ADDRS)),
        )
            .prop_map(|(order, fresh)| Op::Replace { order, fresh }),
        1 => Just(Op::Timeout),
    ];
    prop::collection::vec(op, 1..60)
}

/// What an applier knows of one backend.
#[derive(Debug, Clone, Copy)]
struct Know {
    configured: u32,
    dynamic: Option<u32>,
    check_down: bool,
    ejected: bool,
    adjust_down: bool,
    offset: i64,
}

impl Know {
    /// Learnt from the pool (`PoolApplier::new`, or a backend it meets later): a backend
    /// down counts as failed by its check, its weight as configured.
    fn of(b: &MBackend) -> Self {
        Self {
            configured: b.weight,
            dynamic: None,
            check_down: !b.up,
            ejected: false,
            adjust_down: false,
            offset: 0,
        }
    }

    fn failed(&self) -> bool {
        self.check_down || self.ejected || self.adjust_down
    }

    /// The `misc_dynamic` weight, else the configured one, plus the offset, in 0..=65535.
    fn weight_in_use(&self) -> u32 {
        let base = i64::from(self.dynamic.unwrap_or(self.configured));
        u32::try_from((base + self.offset).clamp(0, 65_535)).unwrap()
    }
}

/// The pool's backend, known by its address.
#[derive(Debug, Clone)]
struct MBackend {
    a: u8,
    id: BackendId,
    up: bool,
    admin: AdminState,
    weight: u32,
    backup: bool,
}

impl MBackend {
    /// Up, ready and of weight above 0: slow start ramps from out of it to in it.
    fn in_service(&self) -> bool {
        self.up && self.admin == AdminState::Ready && self.weight > 0
    }

    /// Takes new clients (during slow start too: the ramp starts at 1).
    fn eligible(&self) -> bool {
        self.in_service()
    }

    /// Up and not in maintenance, but drained or of weight 0.
    fn parked(&self) -> bool {
        self.up && self.admin != AdminState::Maint && !self.eligible()
    }
}

#[derive(Debug, Clone, Copy)]
struct MEntry {
    a: u8,
    expires: Instant,
}

#[derive(Debug)]
struct Model {
    inhibit: Vec<bool>,
    ramps: bool,
    expire_quiescent: bool,
    backends: Vec<MBackend>,
    /// What each applier (0 remove, 1 inhibit) knows, by address.
    know: [HashMap<u8, Know>; 2],
    /// How the pool numbered its backends at each applier's last call given it.
    numbering: [HashMap<BackendId, u8>; 2],
    /// Slow-start clocks by address, and when weights were last evaluated.
    up_since: HashMap<u8, Instant>,
    evaluated: Option<Instant>,
    /// Persistence entries by client.
    entries: HashMap<u8, MEntry>,
}

/// What a pick may return.
#[derive(Debug)]
enum Want {
    /// The client's backend, by its live entry.
    Stay(u8),
    /// Any of these candidates (none: no pick), recorded as the client's new entry.
    Fresh(Vec<u8>),
}

impl Model {
    fn backend(&self, a: u8) -> Option<&MBackend> {
        self.backends.iter().find(|b| b.a == a)
    }

    fn id_of(&self, a: u8) -> BackendId {
        self.backend(a).map_or(UNKNOWN, |b| b.id)
    }

    /// Index of the applier for address `a`: 0 remove, 1 inhibit.
    fn applier(&self, a: u8) -> usize {
        usize::from(self.inhibit[usize::from(a)])
    }

    fn primaries(&self) -> Vec<u8> {
        self.backends
            .iter()
            .filter(|b| !b.backup && b.eligible())
            .map(|b| b.a)
            .collect()
    }

    /// The first eligible backup (no `all_backups`).
    fn backups(&self) -> Vec<u8> {
        self.backends
            .iter()
            .filter(|b| b.backup && b.eligible())
            .take(1)
            .map(|b| b.a)
            .collect()
    }

    /// Whether the backups have taken over: quorum 1 is lost when no primary is eligible.
    fn set_aside(&self) -> bool {
        self.primaries().is_empty() && !self.backups().is_empty()
    }

    /// Whether an entry to `a` survives a rebuild (lb-core's module docs).
    fn keeps(&self, a: u8) -> bool {
        let Some(b) = self.backend(a) else {
            return false;
        };
        let primary_candidate = !self.primaries().is_empty();
        if b.backup && primary_candidate {
            return false;
        }
        if b.eligible() {
            return if b.backup {
                self.backups().contains(&a)
            } else {
                !self.set_aside()
            };
        }
        b.parked() && !self.expire_quiescent && (b.backup || !self.set_aside())
    }

    fn rebuild(&mut self, now: Instant) {
        self.evaluated = Some(now);
        let keep: Vec<u8> = (0..ADDRS).filter(|&a| self.keeps(a)).collect();
        self.entries.retain(|_, e| keep.contains(&e.a));
    }

    /// A change to the backend at `a` made at `now`: a rebuild if it changed anything, and
    /// the slow-start clock starts when it comes into service, stops when it leaves.
    fn change(&mut self, a: u8, now: Instant, f: impl FnOnce(&mut MBackend)) {
        let ramps = self.ramps;
        let Some(b) = self.backends.iter_mut().find(|b| b.a == a) else {
            return;
        };
        let before = (b.up, b.admin, b.weight);
        let was = b.in_service();
        f(b);
        if (b.up, b.admin, b.weight) == before {
            return;
        }
        if !b.in_service() {
            self.up_since.remove(&a);
        } else if !was && ramps {
            self.up_since.insert(a, now);
        }
        self.rebuild(now);
    }

    /// A call to applier `i` given the pool: it follows the pool's membership (module
    /// docs, Membership): the pool's numbering, and nothing known of a backend that left.
    fn follow(&mut self, i: usize) {
        self.numbering[i] = self.backends.iter().map(|b| (b.id, b.a)).collect();
        let present: Vec<u8> = self.backends.iter().map(|b| b.a).collect();
        self.know[i].retain(|a, _| present.contains(a));
    }

    /// What its applier knows of `a`, learnt from the pool if it knows nothing yet.
    fn know_mut(&mut self, a: u8) -> &mut Know {
        let b = self.backend(a).expect("in the pool").clone();
        let i = self.applier(a);
        self.know[i].entry(a).or_insert_with(|| Know::of(&b))
    }

    /// What its applier knows of `a`.
    fn known(&self, a: u8) -> Option<&Know> {
        self.know[self.applier(a)].get(&a)
    }

    /// The applier's sync: the rules of the module docs.
    fn sync(&mut self, a: u8, now: Instant) {
        let k = self.know[self.applier(a)][&a];
        let inhibit = self.inhibit[usize::from(a)];
        let (up, w) = match (k.failed(), inhibit) {
            (true, false) => (false, k.weight_in_use()),
            (true, true) => (true, 0),
            (false, _) => (true, k.weight_in_use()),
        };
        self.change(a, now, |b| {
            b.up = up;
            b.weight = w;
        });
        if k.failed() && inhibit {
            self.entries.retain(|_, e| e.a != a);
        }
    }

    fn lookup(&mut self, c: u8, now: Instant) -> Option<MEntry> {
        let e = self.entries.get_mut(&c)?;
        if e.expires > now {
            e.expires = e.expires.max(now + TIMEOUT);
            Some(*e)
        } else {
            self.entries.remove(&c);
            None
        }
    }

    fn want_pick(&mut self, c: u8, now: Instant) -> Want {
        let fresh = |m: &Self| {
            let p = m.primaries();
            Want::Fresh(if p.is_empty() { m.backups() } else { p })
        };
        let Some(e) = self.lookup(c, now) else {
            return fresh(self);
        };
        let b = self
            .backend(e.a)
            .expect("entries name backends in the pool");
        if b.backup && !self.primaries().is_empty() {
            return fresh(self);
        }
        Want::Stay(e.a)
    }

    /// The effective weight the last rebuild gave `b`.
    fn effective(&self, b: &MBackend) -> u32 {
        let (Some(&since), Some(at)) = (self.up_since.get(&b.a), self.evaluated) else {
            return b.weight;
        };
        let elapsed = at.saturating_duration_since(since);
        if elapsed >= WINDOW {
            return b.weight;
        }
        let reached = elapsed.as_nanos() / STEP.as_nanos() * STEP.as_nanos();
        let w = (u128::from(b.weight) * reached).div_ceil(WINDOW.as_nanos());
        u32::try_from(w).unwrap().max(1)
    }

    /// When slow-start weights next change.
    fn poll_timeout(&self) -> Option<Instant> {
        let at = self.evaluated?;
        self.up_since
            .values()
            .map(|&since| {
                let reached = at.saturating_duration_since(since).as_nanos() / STEP.as_nanos();
                let next = since + STEP * (u32::try_from(reached).unwrap() + 1);
                next.min(since + WINDOW)
            })
            .min()
    }

    /// Whether the backend would take new connections but for an ejection.
    fn serving_apart_from_ejection(&self, b: &MBackend) -> bool {
        match self.known(b.a) {
            Some(k) if k.ejected => {
                b.admin == AdminState::Ready
                    && !k.check_down
                    && !k.adjust_down
                    && k.weight_in_use() > 0
            }
            _ => b.eligible(),
        }
    }
}

fn set_of(members: &[(u8, Member)]) -> BackendSet {
    BackendSet::new(
        members
            .iter()
            .zip(1..)
            .map(|(&(a, m), id)| {
                Backend::new(BackendId(id), addr(a))
                    .with_weight(weight(m.weight))
                    .with_admin(m.admin)
                    .with_health(if m.up { Health::Up } else { Health::Down })
                    .with_backup(m.backup)
            })
            .collect(),
    )
    .unwrap()
}

fn check_event(id: BackendId, old: bool, up: bool, w: Option<u32>) -> HealthEvent {
    let h = |up| if up { Health::Up } else { Health::Down };
    HealthEvent {
        backend: id,
        old: h(old),
        new: h(up),
        weight: w.map(weight),
        reason: "model".into(),
        latency: Duration::ZERO,
    }
}

fn check_state(up: bool, w: Option<u32>) -> CheckState {
    CheckState {
        health: if up { Health::Up } else { Health::Down },
        weight: w.map(weight),
        established: true,
        last_pass: None,
        last_failure: None,
    }
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let algo = setup.algo.clone();
    let cfg = PoolConfig {
        persistence_timeout: Some(TIMEOUT),
        expire_quiescent_template: setup.expire_quiescent,
        slow_start: setup.slow_start.then_some(WINDOW),
        ..PoolConfig::default()
    };
    let ramps = setup.slow_start && algo.slow_start();
    let first: Vec<(u8, Member)> = (0..).zip(setup.first.iter().copied()).collect();
    let pool = Pool::new(algo, set_of(&first), cfg).unwrap();
    let mut appliers = [
        PoolApplier::new(&pool, OnFailure::Remove),
        PoolApplier::new(&pool, OnFailure::Inhibit),
    ];
    let mut m = Model {
        inhibit: setup.inhibit.clone(),
        ramps,
        expire_quiescent: setup.expire_quiescent,
        backends: first
            .iter()
            .zip(1..)
            .map(|(&(a, mb), id)| MBackend {
                a,
                id: BackendId(id),
                up: mb.up,
                admin: mb.admin,
                weight: mb.weight,
                backup: mb.backup,
            })
            .collect(),
        know: [HashMap::new(), HashMap::new()],
        numbering: [HashMap::new(), HashMap::new()],
        up_since: HashMap::new(),
        evaluated: None,
        entries: HashMap::new(),
    };
    // Each applier learns every backend from the pool.
    for i in 0..2 {
        m.know[i] = m.backends.iter().map(|b| (b.a, Know::of(b))).collect();
        m.follow(i);
    }
    let origin = t0();
    let mut t: u64 = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let now = origin + Duration::from_secs(t);
        match op {
            Op::Advance { dt } => t += u64::from(dt),
            Op::Pick { c } => {
                let want = m.want_pick(c, now);
                let got = pool.select(now, &SelectContext::client(client(c)), &mut |_| true);
                let got_a = got
                    .as_ref()
                    .map(|b| (0..ADDRS).find(|&a| addr(a) == b.addr()).unwrap());
                match (&want, got_a) {
                    (Want::Fresh(allowed), None) if allowed.is_empty() => {}
                    (Want::Stay(stay), Some(a)) if a == *stay => {}
                    (Want::Fresh(allowed), Some(a)) if allowed.contains(&a) => {
                        m.entries.insert(
                            c,
                            MEntry {
                                a,
                                expires: now + TIMEOUT,
                            },
                        );
                    }
                    _ => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: client {c} got address {got_a:?}, the model wants \
                             {want:?}"
                        )))
                    }
                }
            }
            Op::Check { a, up, weight: w } => {
                let id = m.id_of(a);
                let i = m.applier(a);
                let old = m.known(a).is_none_or(|k| !k.check_down);
                let r = appliers[i].apply_event(&pool, &check_event(id, old, up, w), now);
                m.follow(i);
                prop_assert_eq!(r.is_ok(), id != UNKNOWN, "step {}: {:?}", step, r);
                if id != UNKNOWN {
                    let k = m.know_mut(a);
                    k.check_down = !up;
                    k.dynamic = w;
                    m.sync(a, now);
                }
            }
            Op::Outlier { a, ejected } => {
                let id = m.id_of(a);
                let ev = if ejected {
                    OutlierEvent::Ejected {
                        backend: id,
                        until: now + Duration::from_secs(30),
                        ejections: 1,
                        reason: EjectionReason::ConsecutiveFailures,
                    }
                } else {
                    OutlierEvent::Unejected { backend: id }
                };
                let r = appliers[m.applier(a)].apply_outlier(&pool, &ev, now);
                m.follow(m.applier(a));
                prop_assert_eq!(r.is_ok(), id != UNKNOWN, "step {}: {:?}", step, r);
                if id != UNKNOWN {
                    m.know_mut(a).ejected = ejected;
                    m.sync(a, now);
                }
            }
            Op::Configured { a, w } => {
                let id = m.id_of(a);
                let r = appliers[m.applier(a)].set_configured_weight(&pool, id, weight(w), now);
                m.follow(m.applier(a));
                prop_assert_eq!(r.is_ok(), id != UNKNOWN, "step {}: {:?}", step, r);
                if id != UNKNOWN {
                    m.know_mut(a).configured = w;
                    m.sync(a, now);
                }
            }
            Op::Adjust { a, down, offset } => {
                let id = m.id_of(a);
                let r = appliers[m.applier(a)].set_adjustment(&pool, id, down, offset, now);
                m.follow(m.applier(a));
                prop_assert_eq!(r.is_ok(), id != UNKNOWN, "step {}: {:?}", step, r);
                if id != UNKNOWN {
                    let k = m.know_mut(a);
                    k.adjust_down = down;
                    k.offset = offset;
                    m.sync(a, now);
                }
            }
            Op::Admin { a, admin } => {
                let r = pool.set_admin(m.id_of(a), admin, now);
                prop_assert_eq!(r.is_ok(), m.backend(a).is_some(), "step {}", step);
                m.change(a, now, |b| b.admin = admin);
            }
            Op::Resync { states } => {
                // As lb-node splits a snapshot of the checks' states between its appliers.
                let mut parts: [Vec<(BackendId, CheckState)>; 2] = [Vec::new(), Vec::new()];
                for &(a, up, w) in &states {
                    parts[m.applier(a)].push((m.id_of(a), check_state(up, w)));
                }
                for (applier, part) in appliers.iter_mut().zip(parts) {
                    let r = applier.resync(&pool, part, now);
                    prop_assert!(r.is_ok(), "step {}: {:?}", step, r);
                }
                for i in 0..2 {
                    m.follow(i);
                    for &(a, up, w) in &states {
                        if m.applier(a) != i || m.backend(a).is_none() {
                            continue;
                        }
                        let k = m.know_mut(a);
                        k.check_down = !up;
                        k.dynamic = w;
                        m.sync(a, now);
                    }
                }
            }
            Op::Forget { a } => {
                // By the pool's numbering at the applier's last call given it.
                let (i, id) = (m.applier(a), m.id_of(a));
                appliers[i].forget(id);
                if let Some(was) = m.numbering[i].get(&id) {
                    m.know[i].remove(was);
                }
            }
            Op::Replace { order, fresh } => {
                let members: Vec<(u8, Member)> = order
                    .iter()
                    .map(|&a| {
                        let member = m.backend(a).map_or(fresh[usize::from(a)], |b| Member {
                            weight: b.weight,
                            admin: b.admin,
                            backup: b.backup,
                            up: b.up,
                        });
                        (a, member)
                    })
                    .collect();
                let gone: Vec<MBackend> = m
                    .backends
                    .iter()
                    .filter(|b| !order.contains(&b.a))
                    .cloned()
                    .collect();
                pool.replace(set_of(&members), now).unwrap();
                let old = std::mem::take(&mut m.backends);
                for (&(a, mb), id) in members.iter().zip(1..) {
                    let kept = old.iter().find(|o| o.a == a);
                    let b = MBackend {
                        a,
                        id: BackendId(id),
                        up: mb.up,
                        admin: mb.admin,
                        weight: mb.weight,
                        backup: mb.backup,
                    };
                    // A new backend in service ramps from now; a kept one keeps its clock.
                    if kept.is_none() && ramps && b.in_service() {
                        m.up_since.insert(a, now);
                    }
                    m.backends.push(b);
                }
                for b in &gone {
                    m.up_since.remove(&b.a);
                }
                m.rebuild(now);
            }
            Op::Timeout => {
                pool.handle_timeout(now).unwrap();
                if ramps {
                    m.up_since
                        .retain(|_, since| now.saturating_duration_since(*since) < WINDOW);
                    m.rebuild(now);
                }
            }
        }
        let now = origin + Duration::from_secs(t);
        check(&pool, &appliers, &m, now, step)?;
    }
    Ok(())
}

/// The pool's backends, slow start and persistence entries, and what the appliers say,
/// against the model.
fn check(
    pool: &Pool,
    appliers: &[PoolApplier; 2],
    m: &Model,
    now: Instant,
    step: usize,
) -> Result<(), TestCaseError> {
    let set = pool.backends();
    prop_assert_eq!(set.len(), m.backends.len(), "step {}", step);
    let snap = pool.snapshot();
    for (b, mb) in set.iter().zip(&m.backends) {
        prop_assert_eq!((b.addr(), b.id()), (addr(mb.a), mb.id), "step {}", step);
        let health = if mb.up { Health::Up } else { Health::Down };
        prop_assert_eq!(
            (b.health(), b.weight().get(), b.admin(), b.is_backup()),
            (health, mb.weight, mb.admin, mb.backup),
            "step {}: {} (applier knows {:?})",
            step,
            b.addr(),
            m.known(mb.a)
        );
        let s = snap.backends().get(mb.id).unwrap();
        prop_assert_eq!(
            s.effective_weight().get(),
            m.effective(mb),
            "step {}: effective weight of {} (up since {:?})",
            step,
            b.addr(),
            m.up_since.get(&mb.a).map(|&s| m.evaluated.unwrap() - s)
        );
        let i = m.applier(mb.a);
        let applier = &appliers[i];
        let know = m.known(mb.a);
        // Whichever backend the id named at the applier's last call given the pool.
        let failed = m.numbering[i]
            .get(&mb.id)
            .and_then(|a| m.know[i].get(a))
            .is_some_and(|k| k.check_down || k.adjust_down);
        prop_assert_eq!(
            applier.is_failed_by_checks(mb.id),
            failed,
            "step {}: is_failed_by_checks({}) of {} (knows {:?})",
            step,
            mb.id,
            b.addr(),
            know
        );
        prop_assert_eq!(
            applier.is_serving_apart_from_ejection(s),
            m.serving_apart_from_ejection(mb),
            "step {}: is_serving_apart_from_ejection of {} (knows {:?})",
            step,
            b.addr(),
            know
        );
    }
    prop_assert_eq!(pool.poll_timeout(), m.poll_timeout(), "step {}", step);
    let mut want: Vec<(IpAddr, SocketAddr, Option<Duration>)> = m
        .entries
        .iter()
        .filter(|(_, e)| e.expires > now)
        .map(|(&c, e)| (client(c).ip(), addr(e.a), Some(e.expires - now)))
        .collect();
    let mut got: Vec<_> = pool
        .persistence_entries(now)
        .into_iter()
        .map(|e| (e.client, e.backend, e.remaining))
        .collect();
    want.sort();
    got.sort();
    prop_assert_eq!(got, want, "step {}: persistence entries", step);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Check events, ejections, weights, adjustments, admin changes, resyncs, forgets,
    /// reloads, picks and time steps: every backend's state, slow-start weight and wake-up,
    /// persistence entry and the appliers' answers as the docs say.
    #[test]
    fn the_applier_matches_the_model(setup in setup(), ops in ops()) {
        run(setup, ops)?;
    }
}
