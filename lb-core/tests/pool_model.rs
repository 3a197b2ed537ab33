//! Model-based tests of [`Pool`]'s persistence and backend state: random sequences of picks,
//! state changes, reloads, connections and time steps applied to a pool and to a plain
//! model of what its docs promise, compared after each step.
//!
//! The model holds the backends by address and the clients' entries, and says what a pick
//! may return: a live entry's backend while it may keep its clients (a candidate; a parked
//! one unless `expire_quiescent_template` or the backups have taken over; a backup only
//! while no primary is a candidate; never one down or in maintenance), otherwise any
//! candidate, primaries first. Entries live `persistence_timeout` after their last pick or
//! the end of their last held connection (a dropped one ends at the latest `now` the pool
//! was given); `expire_persistence` and a reload without the address drop them. After each
//! step the pool's backends, quorum, connection and request counts and every live entry
//! with its time left must be the model's.

mod model_config;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_core::{
    AdminState, Algorithm, Backend, BackendId, BackendSet, BuildScheduler, ConnectionGuard,
    Granularity, Health, Pool, PoolConfig, RequestGuard, SelectContext, Weight,
};
use proptest::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Addresses backends may have: four in the first set, a fifth that only a reload brings.
const ADDRS: u8 = 5;
const CLIENTS: u8 = 6;

#[allow(clippy::disallowed_methods)] // tests pick an arbitrary origin
fn t0() -> Instant {
    Instant::now()
}

fn addr(a: u8) -> SocketAddr {
    SocketAddr::new([192, 0, 2, a + 1].into(), 80)
}

fn client(c: u8) -> SocketAddr {
    SocketAddr::new([198, 51, 100, c + 1].into(), 1000 + u16::from(c))
}

/// The address persistence keys on, by its last byte: the client's, or its /30's.
fn key(c: u8, by_30: bool) -> u8 {
    if by_30 {
        (c + 1) & !3
    } else {
        c + 1
    }
}

/// One backend of a set as configured (a `replace` keeps the health of an address already
/// in the pool and takes the rest from here).
#[derive(Debug, Clone)]
struct Member {
    a: u8,
    weight: u32,
    admin: AdminState,
    backup: bool,
    up: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// Moves the clock by `dt` seconds (sometimes backwards).
    Advance { dt: i16 },
    /// A pick for client `c` (none: no client), with `accept` refusing address `refuse`.
    Select { c: Option<u8>, refuse: Option<u8> },
    /// `Pool::persistent_backend` for client `c` (none: no client).
    Persistent { c: Option<u8> },
    /// `set_health` of the backend at address `a` (an unknown id when it has left).
    Health { a: u8, up: bool },
    /// `set_admin`.
    Admin { a: u8, admin: AdminState },
    /// `set_weight`.
    SetWeight { a: u8, w: u32 },
    /// `set_state`: health and weight in one change.
    State { a: u8, up: bool, w: u32 },
    /// `expire_persistence`.
    Expire { a: u8 },
    /// A reload: these addresses, in this order, numbered from 1.
    Replace { members: Vec<Member> },
    /// A connection (or request) on one of the last four backends picked.
    Connect { i: usize, request: bool },
    /// Ends an open connection or request by dropping its guard.
    Drop { i: usize },
    /// Ends one with `finish(now)`.
    Finish { i: usize },
    /// `handle_timeout(now)`.
    Timeout,
}

fn weight() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 1 => Just(1), 3 => Just(10)]
}

fn admin() -> impl Strategy<Value = AdminState> {
    prop_oneof![
        3 => Just(AdminState::Ready),
        1 => Just(AdminState::Drain),
        1 => Just(AdminState::Maint),
    ]
}

fn member_props() -> impl Strategy<Value = (u32, AdminState, bool, bool)> {
    (
        weight(),
        admin(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.85),
    )
}

fn members() -> impl Strategy<Value = Vec<Member>> {
    (
        prop::sample::subsequence((0..ADDRS).collect::<Vec<u8>>(), 1..=usize::from(ADDRS))
            .prop_shuffle(),
        prop::collection::vec(member_props(), usize::from(ADDRS)),
    )
        .prop_map(|(addrs, props)| {
            addrs
                .into_iter()
                .zip(props)
                .map(|(a, (weight, admin, backup, up))| Member {
                    a,
                    weight,
                    admin,
                    backup,
                    up,
                })
                .collect()
        })
}

/// The pool's settings and first set: four backends, the last one or two of them backups
/// (sorry servers) at times.
#[derive(Debug, Clone)]
struct Setup {
    algo: &'static str,
    expire_quiescent: bool,
    all_backups: bool,
    slow_start: bool,
    quorum: u64,
    hysteresis: u64,
    /// `persistence_granularity` /30 rather than /32: clients 0–2 and 3–5 share entries.
    by_30: bool,
    first: Vec<Member>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(vec!["rr", "wrr", "wlc", "sh", "mh", "random", "fo"]),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        (
            prop_oneof![3 => Just(1u64), 1 => Just(11), 1 => Just(20)],
            prop_oneof![Just(0u64), Just(5)],
        ),
        (
            prop_oneof![1 => Just(0u8), 2 => Just(1), 1 => Just(2)],
            prop::bool::weighted(0.2),
        ),
        prop::collection::vec((prop_oneof![1 => Just(0u32), 4 => Just(10)], admin()), 4),
    )
        .prop_map(
            |(
                algo,
                expire_quiescent,
                all_backups,
                slow_start,
                (quorum, hysteresis),
                (backups, by_30),
                props,
            )| Setup {
                algo,
                expire_quiescent,
                all_backups,
                slow_start,
                quorum,
                hysteresis,
                by_30,
                first: props
                    .into_iter()
                    .zip(0..)
                    .map(|((weight, admin), a)| Member {
                        a,
                        weight,
                        admin,
                        backup: a >= 4 - backups,
                        up: true,
                    })
                    .collect(),
            },
        )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let c = 0..CLIENTS;
    let a = 0..ADDRS;
    let op = prop_oneof![
        4 => prop_oneof![5 => 0i16..=70, 1 => -40i16..0].prop_map(|dt| Op::Advance { dt }),
        8 => (
            prop::option::weighted(0.95, c.clone()),
            prop::option::weighted(0.2, a.clone()),
        )
            .prop_map(|(c, refuse)| Op::Select { c, refuse }),
        1 => prop::option::weighted(0.9, c.clone()).prop_map(|c| Op::Persistent { c }),
        2 => (a.clone(), any::<bool>()).prop_map(|(a, up)| Op::Health { a, up }),
        2 => (a.clone(), admin()).prop_map(|(a, admin)| Op::Admin { a, admin }),
        2 => (a.clone(), weight()).prop_map(|(a, w)| Op::SetWeight { a, w }),
        1 => (a.clone(), any::<bool>(), weight()).prop_map(|(a, up, w)| Op::State { a, up, w }),
        1 => a.prop_map(|a| Op::Expire { a }),
        1 => members().prop_map(|members| Op::Replace { members }),
        4 => (any::<usize>(), prop::bool::weighted(0.25))
            .prop_map(|(i, request)| Op::Connect { i, request }),
        2 => any::<usize>().prop_map(|i| Op::Drop { i }),
        1 => any::<usize>().prop_map(|i| Op::Finish { i }),
        1 => Just(Op::Timeout),
    ];
    prop::collection::vec(op, 1..80)
}

fn set_of(members: &[Member]) -> BackendSet {
    BackendSet::new(
        members
            .iter()
            .zip(1..)
            .map(|(m, id)| {
                Backend::new(BackendId(id), addr(m.a))
                    .with_weight(Weight::new(u64::from(m.weight)).unwrap())
                    .with_admin(m.admin)
                    .with_health(if m.up { Health::Up } else { Health::Down })
                    .with_backup(m.backup)
            })
            .collect(),
    )
    .unwrap()
}

/// The model's backend, known by its address.
#[derive(Debug, Clone)]
struct MBackend {
    a: u8,
    id: BackendId,
    up: bool,
    admin: AdminState,
    weight: u32,
    backup: bool,
    /// Which counters the address has: new ones each time it joins the pool.
    stats: u32,
}

impl MBackend {
    /// Takes new connections: up, ready, weight above 0.
    fn eligible(&self) -> bool {
        self.up && self.admin == AdminState::Ready && self.weight > 0
    }

    /// Up and not in maintenance, but drained or of weight 0.
    fn parked(&self) -> bool {
        self.up && self.admin != AdminState::Maint && !self.eligible()
    }
}

/// A client's persistence entry; `id` tells it from an earlier one of the same client.
#[derive(Debug, Clone, Copy)]
struct MEntry {
    a: u8,
    expires: Instant,
    live: u32,
    id: u64,
}

impl MEntry {
    fn is_live(&self, now: Instant) -> bool {
        self.live > 0 || self.expires > now
    }
}

#[derive(Debug)]
struct Model {
    expire_quiescent: bool,
    all_backups: bool,
    quorum_at: u64,
    hysteresis: u64,
    /// Whether the primaries have quorum (keepalived `quorum`, `hysteresis`).
    quorum: bool,
    backends: Vec<MBackend>,
    /// By the last byte of the address persistence keys on ([`key`]).
    entries: HashMap<u8, MEntry>,
    /// The latest `now` the pool was given: it stamps the end of a dropped connection.
    clock: Option<Instant>,
    next_entry: u64,
    next_stats: u32,
    /// Open connections and requests by (address, counters).
    active: HashMap<(u8, u32), u64>,
    in_flight: HashMap<(u8, u32), u64>,
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

    fn observe(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    /// Whether the backups have taken over: no quorum, and a backup to take over.
    fn set_aside(&self) -> bool {
        !self.quorum && self.backends.iter().any(|b| b.backup && b.eligible())
    }

    fn primaries(&self, accept: &dyn Fn(u8) -> bool) -> Vec<u8> {
        if self.set_aside() {
            return Vec::new();
        }
        self.backends
            .iter()
            .filter(|b| !b.backup && b.eligible() && accept(b.a))
            .map(|b| b.a)
            .collect()
    }

    /// The backup candidates: every eligible backup with `all_backups`, else the first.
    fn backups(&self, accept: &dyn Fn(u8) -> bool) -> Vec<u8> {
        self.backends
            .iter()
            .filter(|b| b.backup && b.eligible())
            .take(if self.all_backups { usize::MAX } else { 1 })
            .filter(|b| accept(b.a))
            .map(|b| b.a)
            .collect()
    }

    /// Whether an entry to `a` survives a rebuild (module doc, `expire_quiescent_template`,
    /// `quorum`): a candidate's does; a parked backend's unless `expire_quiescent` or, for a
    /// primary, the backups have taken over; a backup's only while no primary is a
    /// candidate; a down or maintenance backend's never, nor a primary's while the backups
    /// have taken over.
    fn keeps(&self, a: u8) -> bool {
        let Some(b) = self.backend(a) else {
            return false;
        };
        let primary_candidate = !self.primaries(&|_| true).is_empty();
        if b.backup && primary_candidate {
            return false;
        }
        if b.eligible() {
            return if b.backup {
                self.backups(&|_| true).contains(&a)
            } else {
                !self.set_aside()
            };
        }
        b.parked() && !self.expire_quiescent && (b.backup || !self.set_aside())
    }

    /// The configured weights of the primaries able to take connections.
    fn online(&self) -> u64 {
        self.backends
            .iter()
            .filter(|b| !b.backup && b.up && b.admin == AdminState::Ready)
            .map(|b| u64::from(b.weight))
            .sum()
    }

    /// A rebuild: quorum is lost below `quorum - hysteresis`, gained at `quorum +
    /// hysteresis`; entries whose backend may no longer keep them go.
    fn rebuild(&mut self) {
        let online = self.online();
        self.quorum = online > 0
            && if self.quorum {
                online >= self.quorum_at.saturating_sub(self.hysteresis)
            } else {
                online >= self.quorum_at + self.hysteresis
            };
        let keep: Vec<u8> = (0..ADDRS).filter(|&a| self.keeps(a)).collect();
        self.entries.retain(|_, e| keep.contains(&e.a));
    }

    /// The client's entry if live at `now`, refreshed; an expired one goes.
    fn lookup(&mut self, c: u8, now: Instant) -> Option<MEntry> {
        let e = self.entries.get_mut(&c)?;
        if e.is_live(now) {
            e.expires = e.expires.max(now + TIMEOUT);
            Some(*e)
        } else {
            self.entries.remove(&c);
            None
        }
    }

    fn record(&mut self, c: u8, a: u8, now: Instant) {
        match self.entries.get_mut(&c) {
            Some(e) if e.a == a && e.is_live(now) => e.expires = e.expires.max(now + TIMEOUT),
            _ => {
                self.next_entry += 1;
                self.entries.insert(
                    c,
                    MEntry {
                        a,
                        expires: now + TIMEOUT,
                        live: 0,
                        id: self.next_entry,
                    },
                );
            }
        }
    }

    /// `Pool::select`'s doc: a live entry whose backend is kept (and accepted) keeps the
    /// client, unless it is a backup and a primary accepts; otherwise primaries, then
    /// backups.
    fn want_pick(&mut self, c: Option<u8>, now: Instant, accept: &dyn Fn(u8) -> bool) -> Want {
        self.observe(now);
        let fresh = |m: &Self| {
            let p = m.primaries(accept);
            Want::Fresh(if p.is_empty() { m.backups(accept) } else { p })
        };
        let Some(e) = c.and_then(|c| self.lookup(c, now)) else {
            return fresh(self);
        };
        let b = self
            .backend(e.a)
            .expect("entries name backends in the pool");
        if b.backup && !self.primaries(accept).is_empty() {
            return fresh(self);
        }
        if accept(e.a) {
            Want::Stay(e.a)
        } else {
            fresh(self)
        }
    }

    /// Ends a connection that held entry `id` of client `c`.
    fn release(&mut self, c: u8, id: u64) {
        let clock = self.clock;
        if let Some(e) = self.entries.get_mut(&c).filter(|e| e.id == id) {
            e.live -= 1;
            if e.live == 0 {
                if let Some(end) = clock {
                    e.expires = e.expires.max(end + TIMEOUT);
                }
            }
        }
    }

    /// Applies `f` to the backend at `a`; a rebuild if it changed anything.
    fn change(&mut self, a: u8, f: impl FnOnce(&mut MBackend)) {
        let Some(b) = self.backends.iter_mut().find(|b| b.a == a) else {
            return;
        };
        let before = (b.up, b.admin, b.weight);
        f(b);
        if (b.up, b.admin, b.weight) != before {
            self.rebuild();
        }
    }
}

/// A backend a pick returned, with what the model knows of it.
struct Picked {
    backend: Backend,
    a: u8,
    stats: u32,
    /// The client and its entry the pick went by.
    entry: Option<(u8, u64)>,
}

enum Guard {
    Connection(ConnectionGuard),
    Request(RequestGuard),
}

struct Open {
    guard: Guard,
    counters: (u8, u32),
    request: bool,
    /// The entry it holds.
    holds: Option<(u8, u64)>,
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let algo: Algorithm = setup.algo.parse().unwrap();
    let ramps = setup.slow_start && algo.slow_start();
    let cfg = PoolConfig {
        persistence_timeout: Some(TIMEOUT),
        expire_quiescent_template: setup.expire_quiescent,
        all_backups: setup.all_backups,
        slow_start: setup.slow_start.then_some(Duration::from_secs(20)),
        quorum: setup.quorum,
        hysteresis: setup.hysteresis,
        persistence_granularity: Granularity::parse(if setup.by_30 { "30" } else { "32" }).unwrap(),
        ..PoolConfig::default()
    };
    let pool = Pool::new(algo, set_of(&setup.first), cfg).unwrap();
    let mut m = Model {
        expire_quiescent: setup.expire_quiescent,
        all_backups: setup.all_backups,
        quorum_at: setup.quorum,
        hysteresis: setup.hysteresis,
        quorum: false,
        backends: Vec::new(),
        entries: HashMap::new(),
        clock: None,
        next_entry: 0,
        next_stats: 0,
        active: HashMap::new(),
        in_flight: HashMap::new(),
    };
    for (mb, id) in setup.first.iter().zip(1..) {
        m.next_stats += 1;
        m.backends.push(MBackend {
            a: mb.a,
            id: BackendId(id),
            up: mb.up,
            admin: mb.admin,
            weight: mb.weight,
            backup: mb.backup,
            stats: m.next_stats,
        });
    }
    // A pool starts without quorum.
    m.rebuild();
    // Seconds since `origin`, which leaves room to go back.
    let origin = t0();
    let mut t: u64 = 100_000;
    let mut picks: Vec<Picked> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    // An id for an address not in the pool.
    let id_of = |m: &Model, a: u8| m.backend(a).map_or(BackendId(99), |b| b.id);
    for (step, op) in ops.into_iter().enumerate() {
        let now = origin + Duration::from_secs(t);
        'op: {
            match op {
                Op::Advance { dt } => t = t.saturating_add_signed(i64::from(dt)),
                Op::Select { c, refuse } => {
                    let accept = |a: u8| Some(a) != refuse;
                    let k = c.map(|c| key(c, setup.by_30));
                    let want = m.want_pick(k, now, &accept);
                    let ctx =
                        c.map_or_else(SelectContext::default, |c| SelectContext::client(client(c)));
                    let got = pool.select(now, &ctx, &mut |b| Some(b.addr()) != refuse.map(addr));
                    let got_a = got
                        .as_ref()
                        .map(|b| (0..ADDRS).find(|&a| addr(a) == b.addr()).unwrap());
                    let (Some(b), Some(a)) = (got, got_a) else {
                        prop_assert!(
                            matches!(&want, Want::Fresh(allowed) if allowed.is_empty()),
                            "step {}: client {:?} got no backend, the model wants {:?}",
                            step,
                            c,
                            want
                        );
                        break 'op;
                    };
                    match &want {
                        Want::Stay(stay) if a == *stay => {}
                        Want::Fresh(allowed) if allowed.contains(&a) => {
                            if let Some(k) = k {
                                m.record(k, a, now);
                            }
                        }
                        _ => {
                            let entry = k.and_then(|k| m.entries.get(&k));
                            return Err(TestCaseError::fail(format!(
                                "step {step}: client {c:?} got address {a}, the model wants \
                                 {want:?} (entry {entry:?})"
                            )));
                        }
                    }
                    let mb = m.backend(a).unwrap();
                    prop_assert_eq!(b.id(), mb.id, "step {}: id of {}", step, b.addr());
                    prop_assert!(mb.up && mb.admin != AdminState::Maint, "step {}", step);
                    if matches!(want, Want::Fresh(_)) {
                        prop_assert!(mb.eligible(), "step {}: a new client on {:?}", step, mb);
                    }
                    picks.push(Picked {
                        backend: b,
                        a,
                        stats: mb.stats,
                        entry: k.map(|k| (k, m.entries[&k].id)),
                    });
                }
                Op::Persistent { c } => {
                    m.observe(now);
                    // As `select` would honour the entry (with an `accept` taking all), for a
                    // primary.
                    let want = c
                        .and_then(|c| m.lookup(key(c, setup.by_30), now))
                        .and_then(|e| m.backend(e.a))
                        .filter(|b| !b.backup)
                        .map(|b| b.id);
                    let ctx =
                        c.map_or_else(SelectContext::default, |c| SelectContext::client(client(c)));
                    let got = pool.persistent_backend(now, &ctx);
                    prop_assert_eq!(got, want, "step {}: persistent_backend({:?})", step, c);
                }
                Op::Health { a, up } => {
                    m.observe(now);
                    let h = if up { Health::Up } else { Health::Down };
                    let r = pool.set_health(id_of(&m, a), h, now);
                    prop_assert_eq!(r.is_ok(), m.backend(a).is_some(), "step {}", step);
                    m.change(a, |b| b.up = up);
                }
                Op::Admin { a, admin } => {
                    m.observe(now);
                    let r = pool.set_admin(id_of(&m, a), admin, now);
                    prop_assert_eq!(r.is_ok(), m.backend(a).is_some(), "step {}", step);
                    m.change(a, |b| b.admin = admin);
                }
                Op::SetWeight { a, w } => {
                    m.observe(now);
                    let weight = Weight::new(u64::from(w)).unwrap();
                    let r = pool.set_weight(id_of(&m, a), weight, now);
                    prop_assert_eq!(r.is_ok(), m.backend(a).is_some(), "step {}", step);
                    m.change(a, |b| b.weight = w);
                }
                Op::State { a, up, w } => {
                    m.observe(now);
                    let h = if up { Health::Up } else { Health::Down };
                    let weight = Weight::new(u64::from(w)).unwrap();
                    let r = pool.set_state(id_of(&m, a), h, weight, now);
                    prop_assert_eq!(r.is_ok(), m.backend(a).is_some(), "step {}", step);
                    m.change(a, |b| {
                        b.up = up;
                        b.weight = w;
                    });
                }
                Op::Expire { a } => {
                    pool.expire_persistence(id_of(&m, a));
                    m.entries.retain(|_, e| e.a != a);
                }
                Op::Replace { members } => {
                    m.observe(now);
                    pool.replace(set_of(&members), now).unwrap();
                    let old = std::mem::take(&mut m.backends);
                    for (mb, id) in members.iter().zip(1..) {
                        let kept = old.iter().find(|o| o.a == mb.a);
                        let stats = kept.map_or_else(
                            || {
                                m.next_stats += 1;
                                m.next_stats
                            },
                            |o| o.stats,
                        );
                        m.backends.push(MBackend {
                            a: mb.a,
                            id: BackendId(id),
                            up: kept.map_or(mb.up, |o| o.up),
                            admin: mb.admin,
                            weight: mb.weight,
                            backup: mb.backup,
                            stats,
                        });
                    }
                    m.rebuild();
                }
                Op::Connect { i, request } => {
                    if picks.is_empty() {
                        break 'op;
                    }
                    // One of the last four picks: a connection follows its pick closely.
                    let p = &picks[picks.len() - 1 - i % picks.len().min(4)];
                    let clock = m.clock;
                    let holds = p.entry.filter(|(c, id)| {
                        m.entries
                            .get(c)
                            .is_some_and(|e| e.id == *id && clock.is_none_or(|now| e.is_live(now)))
                    });
                    let guard = if request {
                        Guard::Request(p.backend.request())
                    } else {
                        Guard::Connection(p.backend.connection())
                    };
                    let got = match &guard {
                        Guard::Connection(g) => g.holds_persistence(),
                        Guard::Request(g) => g.holds_persistence(),
                    };
                    prop_assert_eq!(got, holds.is_some(), "step {}: holds {:?}", step, p.entry);
                    if let Some((c, _)) = holds {
                        m.entries.get_mut(&c).unwrap().live += 1;
                    }
                    let counters = (p.a, p.stats);
                    let count = if request {
                        &mut m.in_flight
                    } else {
                        &mut m.active
                    };
                    *count.entry(counters).or_default() += 1;
                    open.push(Open {
                        guard,
                        counters,
                        request,
                        holds,
                    });
                }
                Op::Drop { i } | Op::Finish { i } => {
                    if open.is_empty() {
                        break 'op;
                    }
                    let o = open.swap_remove(i % open.len());
                    let finish = matches!(op, Op::Finish { .. });
                    if let Some((c, id)) = o.holds {
                        if finish {
                            m.observe(now);
                        }
                        m.release(c, id);
                    }
                    let count = if o.request {
                        &mut m.in_flight
                    } else {
                        &mut m.active
                    };
                    *count.get_mut(&o.counters).unwrap() -= 1;
                    match (o.guard, finish) {
                        (Guard::Connection(g), true) => g.finish(now),
                        (Guard::Request(g), true) => g.finish(now),
                        (g, false) => drop(g),
                    }
                }
                Op::Timeout => {
                    m.observe(now);
                    pool.handle_timeout(now).unwrap();
                    if ramps {
                        m.rebuild();
                    }
                }
            }
        }
        check(&pool, &m, now, step)?;
    }
    // Every guard dropped: every count is back to zero, in the pool and on backends that
    // left it.
    drop(open);
    for p in &picks {
        prop_assert_eq!(p.backend.stats().active(), 0, "{}", p.backend.addr());
        prop_assert_eq!(p.backend.stats().in_flight(), 0, "{}", p.backend.addr());
    }
    for b in &pool.backends() {
        prop_assert_eq!(b.stats().active(), 0, "{}", b.addr());
        prop_assert_eq!(b.stats().in_flight(), 0, "{}", b.addr());
    }
    Ok(())
}

/// The pool's backends, counters and persistence entries against the model's.
fn check(pool: &Pool, m: &Model, now: Instant, step: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(pool.has_quorum(), m.quorum, "step {}: quorum", step);
    let set = pool.backends();
    prop_assert_eq!(set.len(), m.backends.len(), "step {}", step);
    for (b, mb) in set.iter().zip(&m.backends) {
        prop_assert_eq!(b.addr(), addr(mb.a), "step {}", step);
        prop_assert_eq!(b.id(), mb.id, "step {}", step);
        let health = if mb.up { Health::Up } else { Health::Down };
        prop_assert_eq!(
            (b.health(), b.admin(), b.weight().get(), b.is_backup()),
            (health, mb.admin, mb.weight, mb.backup),
            "step {}: {}",
            step,
            b.addr()
        );
        let counters = (mb.a, mb.stats);
        let active = m.active.get(&counters).copied().unwrap_or(0);
        let in_flight = m.in_flight.get(&counters).copied().unwrap_or(0);
        prop_assert_eq!(
            (b.stats().active(), b.stats().in_flight()),
            (active, in_flight),
            "step {}: counters of {}",
            step,
            b.addr()
        );
    }
    let mut want: Vec<(IpAddr, SocketAddr, Option<Duration>)> = m
        .entries
        .iter()
        .filter(|(_, e)| e.is_live(now))
        .map(|(k, e)| {
            let left = if e.live > 0 {
                TIMEOUT
            } else {
                e.expires.saturating_duration_since(now)
            };
            (IpAddr::from([198, 51, 100, *k]), addr(e.a), Some(left))
        })
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
    #![proptest_config(model_config::with_cases(384))]

    /// Picks, state changes, reloads, connections and time steps, forward and back: every
    /// pick, persistence entry, backend state and counter as the docs say.
    #[test]
    fn pool_matches_the_model(setup in setup(), ops in ops()) {
        run(setup, ops)?;
    }
}
