//! Outlier ejections and the pool applier across membership changes: an ejection that a
//! restore or a removal ends reaches the pool as an un-ejection, an applier entry follows
//! its backend's address when the pool renumbers, and the ejection multiplier decays per
//! Envoy `interval` of healthy time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use lb_core::{Backend, BackendId, BackendSet, Health, Pool, PoolConfig, Weight};
use lb_health::{
    ConnectionOutcome, HealthEvent, OnFailure, OutlierConfig, OutlierDetector, OutlierEvent,
    PoolApplier,
};

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn pool(ws: &[(u32, u16, u64)]) -> Pool {
    let set = BackendSet::new(
        ws.iter()
            .map(|&(id, port, w)| {
                Backend::new(BackendId(id), format!("127.0.0.1:{port}").parse().unwrap())
                    .with_weight(Weight::new(w).unwrap())
            })
            .collect(),
    )
    .unwrap();
    Pool::new("wrr".parse().unwrap(), set, PoolConfig::default()).unwrap()
}

/// An active check's event for backend `id`: now `new` (from up).
fn check(id: u32, new: Health) -> HealthEvent {
    HealthEvent {
        backend: BackendId(id),
        old: Health::Up,
        new,
        weight: None,
        reason: "check".into(),
        latency: Duration::ZERO,
    }
}

fn drain(
    d: &mut OutlierDetector,
    a: &mut PoolApplier,
    p: &Pool,
    now: Instant,
) -> Vec<OutlierEvent> {
    let mut v = Vec::new();
    while let Some(ev) = d.poll_event() {
        a.apply_outlier(p, &ev, now).unwrap();
        v.push(ev);
    }
    v
}

fn health(p: &Pool, id: u32) -> Health {
    p.backends().get(BackendId(id)).unwrap().health()
}

fn cfg() -> OutlierConfig {
    OutlierConfig::builder()
        .consecutive_failures(1)
        .base_ejection_time(s(10))
        .max_ejection_time(s(100))
        .max_ejection_percent(100)
        // Consecutive failures only: no interval timer.
        .enforcing_success_rate(0)
        .build()
        .unwrap()
}

/// F1: `restore` over a backend that is ejected right now, with a state that is not
/// (or no longer) ejected, clears the ejection inside the detector but queues no
/// `Unejected`: the pool, which was told `Ejected`, keeps the backend out for good.
/// `restore` over an ejection in force, with a state saying "not ejected", ended it in
/// the detector only: the pool, told of the ejection, kept the backend out for good.
#[test]
fn a_restore_that_ends_a_live_ejection_unejects_the_pool() {
    let t = Instant::now();
    let p = pool(&[(1, 1, 1), (2, 2, 1)]);
    let mut a = PoolApplier::new(&p, OnFailure::Remove);
    let mut d = OutlierDetector::new(cfg(), [BackendId(1), BackendId(2)]);
    d.handle_outcome(t, BackendId(1), ConnectionOutcome::Reset);
    drain(&mut d, &mut a, &p, t);
    assert_eq!(health(&p, 1), Health::Down, "ejected");
    // A carried-over state that says "not ejected" (here: backend 2's, never ejected).
    let clean = d.host_state(BackendId(2)).unwrap();
    assert!(!d.restore(t, BackendId(1), clean).unwrap());
    assert!(!d.is_ejected(BackendId(1)), "detector: back in");
    let evs = drain(&mut d, &mut a, &p, t);
    d.handle_timeout(t + s(3600));
    let later = drain(&mut d, &mut a, &p, t + s(3600));
    assert_eq!(
        health(&p, 1),
        Health::Up,
        "pool still has backend 1 ejected an hour later; events {evs:?} {later:?}"
    );
}

/// F2: `remove_backend` of an ejected backend queues no `Unejected`; the backend added
/// back (same id, a membership flap) is clean in the detector but still ejected in the
/// pool applier, and nothing will ever uneject it.
/// An ejected backend removed from the detector and added back stayed ejected in the
/// applier (no event ended it) and so out of the pool for good.
#[test]
fn removing_an_ejected_backend_unejects_it() {
    let t = Instant::now();
    let p = pool(&[(1, 1, 1), (2, 2, 1)]);
    let mut a = PoolApplier::new(&p, OnFailure::Remove);
    let mut d = OutlierDetector::new(cfg(), [BackendId(1), BackendId(2)]);
    d.handle_outcome(t, BackendId(1), ConnectionOutcome::Reset);
    drain(&mut d, &mut a, &p, t);
    assert_eq!(health(&p, 1), Health::Down);
    assert!(d.remove_backend(BackendId(1)));
    d.add_backend(BackendId(1)).unwrap();
    drain(&mut d, &mut a, &p, t);
    assert_eq!(
        d.poll_timeout(),
        None,
        "the detector has nothing left to time out"
    );
    // Its active check says up: still out, since the applier remembers the ejection.
    a.apply_event(&p, &check(1, Health::Up), t + s(3600))
        .unwrap();
    d.handle_timeout(t + s(3600));
    drain(&mut d, &mut a, &p, t + s(3600));
    assert_eq!(
        health(&p, 1),
        Health::Up,
        "backend 1 stays ejected for good"
    );
}

/// F3: `Pool::replace` renumbers backends by address (documented); `PoolApplier` keys its
/// memory (configured weight, active_down, ejected) by id and has no way to follow, so
/// the removed backend's state is applied to the backend that inherits its id.
/// After `Pool::replace` renumbered C to the id B had, the applier gave C B's failed
/// check and B's weight.
#[test]
fn applier_entries_follow_the_address_when_the_pool_renumbers() {
    let t = Instant::now();
    // A(1, w1), B(2, w5), C(3, w1)
    let p = pool(&[(1, 1, 1), (2, 2, 5), (3, 3, 1)]);
    let mut a = PoolApplier::new(&p, OnFailure::Remove);
    a.apply_event(&p, &check(2, Health::Down), t).unwrap();
    // B leaves: C (healthy, weight 1) is now id 2.
    let next = BackendSet::new(vec![
        Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap()),
        Backend::new(BackendId(2), "127.0.0.1:3".parse().unwrap()),
    ])
    .unwrap();
    p.replace(next, t).unwrap();
    assert_eq!(health(&p, 2), Health::Up, "C kept its own health");
    // C gets a short ejection and comes back.
    let b2 = BackendId(2);
    a.apply_outlier(
        &p,
        &OutlierEvent::Ejected {
            backend: b2,
            until: t + s(1),
            ejections: 1,
            reason: lb_health::outlier::EjectionReason::ConsecutiveFailures,
        },
        t,
    )
    .unwrap();
    a.apply_outlier(&p, &OutlierEvent::Unejected { backend: b2 }, t + s(1))
        .unwrap();
    let c = p.backends().get(b2).unwrap().clone();
    assert_eq!(
        (c.addr().port(), c.health(), c.weight().get()),
        (3, Health::Up, 1),
        "C got B's down verdict and/or B's weight"
    );
}

/// F4: the ejection multiplier decays one step per `base_ejection_time` of health here;
/// Envoy decrements it once per `interval` (10 s default) while the host is not ejected
/// (checkHostForUneject). Base 30 s (Envoy's default), two ejections, then 20 s healthy:
/// Envoy's multiplier is back to 0 or 1 (next ejection 30-60 s); here it is still 2 and
/// the third ejection lasts 90 s.
/// Envoy takes one off the multiplier per `interval` (10 s) un-ejected; it decayed per
/// `base_ejection_time` (30 s), so a third ejection 20 s after the second lasted 90 s.
#[test]
fn the_ejection_multiplier_decays_per_interval() {
    let c = OutlierConfig::builder()
        .consecutive_failures(1)
        .base_ejection_time(s(30))
        .max_ejection_time(s(300))
        .max_ejection_percent(100)
        .build()
        .unwrap();
    let mut d = OutlierDetector::new(c, [BackendId(1), BackendId(2)]);
    let mut t = Instant::now();
    for _ in 0..2 {
        d.handle_outcome(t, BackendId(1), ConnectionOutcome::Reset);
        let Some(OutlierEvent::Ejected { until, .. }) = d.poll_event() else {
            panic!()
        };
        t = until;
        d.handle_timeout(t);
        assert!(matches!(
            d.poll_event(),
            Some(OutlierEvent::Unejected { .. })
        ));
    }
    t += s(20); // two Envoy intervals healthy
    d.handle_outcome(t, BackendId(1), ConnectionOutcome::Reset);
    let Some(OutlierEvent::Ejected { until, .. }) = d.poll_event() else {
        panic!()
    };
    assert!(until - t <= s(60), "third ejection lasts {:?}", until - t);
}

/// Two backends swapping ids (`Pool::replace` renumbering by address): the entry moved to
/// the new id overwrote the one already there, so a backend failing its checks came back in
/// service.
#[test]
fn a_swap_of_ids_keeps_each_backends_state() {
    let t = Instant::now();
    let p = pool(&[(1, 1, 10), (2, 2, 10)]);
    let mut a = PoolApplier::new(&p, OnFailure::Inhibit);
    a.apply_event(&p, &check(1, Health::Down), t).unwrap();
    let weight_of = |port: u16| {
        p.backends()
            .iter()
            .find(|b| b.addr().port() == port)
            .unwrap()
            .effective_weight()
            .get()
    };
    assert_eq!(weight_of(1), 0);
    let swapped = BackendSet::new(vec![
        Backend::new(BackendId(1), "127.0.0.1:2".parse().unwrap())
            .with_weight(Weight::new(10).unwrap()),
        Backend::new(BackendId(2), "127.0.0.1:1".parse().unwrap())
            .with_weight(Weight::new(10).unwrap()),
    ])
    .unwrap();
    p.replace(swapped, t).unwrap();
    a.set_configured_weight(&p, BackendId(1), Weight::new(5).unwrap(), t)
        .unwrap();
    a.set_configured_weight(&p, BackendId(2), Weight::new(10).unwrap(), t)
        .unwrap();
    assert!(
        a.is_failed_by_checks(BackendId(2)),
        "its failed check was forgotten"
    );
    assert!(!a.is_failed_by_checks(BackendId(1)));
    assert_eq!((weight_of(1), weight_of(2)), (0, 5));
}
