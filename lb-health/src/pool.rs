//! Applying health to an [`lb_core::Pool`]: active-check events and outlier ejections, with
//! keepalived's `inhibit_on_failure` choice between keeping a failed backend at weight 0 and
//! taking it out of the set.
//!
//! A backend counts as failed while any source says so: an active check is down, outlier
//! detection ejected it, or an adjustment ([`PoolApplier::set_adjustment`]) fails it. A
//! failed backend is down in the pool ([`OnFailure::Remove`]; it keeps the weight it would
//! have) or up at weight 0 ([`OnFailure::Inhibit`]). A backend not failed is up at its
//! weight in use: the weight the last check event asked for (`misc_dynamic`, any weight, 0
//! and above the configured one included), else its configured weight; the configured
//! weight comes back when a probe stops asking. An adjustment's offset is added to either.
//! Admin states are the pool's own: the applier leaves them as they are.
//!
//! Each change reaches the pool as one [`Pool::set_state`] (health and weight in one
//! rebuild), so no half-updated pool is ever published. A failed backend that recovers
//! comes up in either mode — in inhibit mode its weight goes from 0 back to its weight —
//! and so starts the pool's slow start (HAProxy `slowstart`) at the event's `now`, if that
//! brings it into service (its admin state ready, its weight above 0; otherwise when
//! something else does, as the pool says).
//!
//! # Membership
//!
//! The applier knows backends by address. [`Pool::replace`] may renumber them, add some
//! and take others out: the applier follows at its next call given the pool. From then on
//! each id names the backend the pool numbers with it, a backend added is learnt from the
//! pool when an event first names it (as one down counts as failed by its check), and what
//! was known of a backend that left the pool is dropped, so the same address added back
//! later starts afresh, as the pool takes it. A backend that leaves and comes back between
//! two calls is taken as having stayed. [`PoolApplier::is_failed_by_checks`] and
//! [`PoolApplier::forget`], which are not given the pool, take ids as the pool numbered
//! them at that last call.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::{Backend, BackendId, BackendSet, Health, Pool, PoolConfig, Weight};
//! use lb_health::{HealthEvent, OnFailure, PoolApplier};
//!
//! let set = BackendSet::new(vec![
//!     Backend::new(BackendId(1), "192.0.2.151:82".parse()?).with_weight(Weight::new(3)?),
//! ])?;
//! let pool = Pool::new("wrr".parse::<lb_core::Algorithm>()?, set, PoolConfig::default())?;
//! let mut applier = PoolApplier::new(&pool, OnFailure::Inhibit);
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let down = HealthEvent {
//!     backend: BackendId(1), old: Health::Up, new: Health::Down, weight: None,
//!     reason: "connection refused".into(), latency: Duration::from_micros(50),
//! };
//! applier.apply_event(&pool, &down, now)?;
//! let b = pool.backends().get(BackendId(1)).unwrap().clone();
//! assert_eq!((b.health(), b.weight()), (Health::Up, Weight::ZERO)); // inhibited, not removed
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use lb_core::{BackendId, BuildScheduler, Health, Pool, Weight};

use crate::error::Result;
use crate::outlier::OutlierEvent;
use crate::tracker::{CheckState, HealthEvent};

/// What happens to a failed backend (keepalived `inhibit_on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnFailure {
    /// keepalived's default: the backend leaves the set ([`Health::Down`]).
    #[default]
    Remove,
    /// keepalived `inhibit_on_failure`: the backend stays with weight 0, so existing
    /// connections drain and no new one selects it. Its clients' persistence entries are
    /// dropped ([`Pool::expire_persistence`]), so they move on their next connection, as
    /// IPVS moves them with `expire_quiescent_template` set (without it IPVS keeps sending
    /// them to the failed real server until their template expires).
    Inhibit,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    configured: Weight,
    dynamic: Option<Weight>,
    active_down: bool,
    ejected: bool,
    /// [`PoolApplier::set_adjustment`]: failed by something other than its checks.
    adjust_down: bool,
    /// [`PoolApplier::set_adjustment`]: added to the weight in use.
    offset: i64,
}

impl Entry {
    /// A backend as the pool has it: a backend already down counts as failed by its check.
    fn of(b: &lb_core::Backend) -> Self {
        Self {
            configured: b.weight(),
            dynamic: None,
            active_down: b.health() == Health::Down,
            ejected: false,
            adjust_down: false,
            offset: 0,
        }
    }
}

impl Entry {
    /// The weight while not failed: the `misc_dynamic` weight, else the configured one,
    /// plus the adjustment's offset, within `0..=`[`Weight::MAX`].
    fn weight_in_use(&self) -> Weight {
        let base = self.dynamic.unwrap_or(self.configured);
        if self.offset == 0 {
            return base;
        }
        let w = (i128::from(base.get()) + i128::from(self.offset))
            .clamp(0, i128::from(Weight::MAX.get()));
        // In range by the clamp.
        Weight::new(w as u64).unwrap_or(Weight::MAX)
    }
}

/// Applies [`HealthEvent`]s and [`OutlierEvent`]s to a pool. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PoolApplier {
    on_failure: OnFailure,
    /// By address: [`Pool::replace`] renumbers backends by address, so an id may name
    /// another backend later.
    entries: HashMap<SocketAddr, Entry>,
    /// The address each id names in the pool's snapshot of generation `generation`.
    ids: HashMap<BackendId, SocketAddr>,
    /// The generation of the pool's snapshot `ids` follows ([`follow`](Self::follow)).
    generation: u64,
}

impl PoolApplier {
    /// An applier that remembers each backend's configured weight and current health in
    /// `pool` (a backend already down counts as failed by its active check).
    pub fn new<B: BuildScheduler>(pool: &Pool<B>, on_failure: OnFailure) -> Self {
        let backends = pool.backends();
        Self {
            on_failure,
            entries: backends.iter().map(|b| (b.addr(), Entry::of(b))).collect(),
            ids: backends.iter().map(|b| (b.id(), b.addr())).collect(),
            generation: pool.snapshot().generation(),
        }
    }

    /// The failure policy.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// Applies an active-check event at `now` (slow start begins at `now` when a backend
    /// comes back).
    ///
    /// # Errors
    /// [`Error::Core`](crate::Error::Core) with `UnknownBackend` when the pool does not know
    /// the backend.
    pub fn apply_event<B: BuildScheduler>(
        &mut self,
        pool: &Pool<B>,
        event: &HealthEvent,
        now: Instant,
    ) -> Result<()> {
        let e = self.entry(pool, event.backend)?;
        e.active_down = event.new == Health::Down;
        e.dynamic = event.weight;
        self.sync(pool, event.backend, now)
    }

    /// Changes `backend`'s configured weight (an operator's new weight, e.g. from a
    /// configuration reload) and applies it at once unless the backend is failed or a
    /// `misc_dynamic` weight replaces it. A failed backend takes it when it comes back: in
    /// inhibit mode it stays at weight 0 until then; in remove mode it is down with the new
    /// weight.
    /// Setting the pool's weight directly instead would be undone by the next event,
    /// which restores the weight this applier remembers.
    ///
    /// # Errors
    /// As [`apply_event`](Self::apply_event).
    pub fn set_configured_weight<B: BuildScheduler>(
        &mut self,
        pool: &Pool<B>,
        backend: BackendId,
        weight: Weight,
        now: Instant,
    ) -> Result<()> {
        self.entry(pool, backend)?.configured = weight;
        self.sync(pool, backend, now)
    }

    /// Sets what a source other than the checks says of `backend` (keepalived's tracked
    /// files, `FILE_CHECK`): `down` fails it as a failed check does (whatever its checks
    /// say), and `weight_offset` is added to the weight in use — the `misc_dynamic` weight,
    /// else the configured one — the sum limited to `0..=`[`Weight::MAX`] (0 takes no new
    /// connection but stays up). `(false, 0)` clears it. Applied at once, at `now`.
    ///
    /// # Errors
    /// As [`apply_event`](Self::apply_event).
    pub fn set_adjustment<B: BuildScheduler>(
        &mut self,
        pool: &Pool<B>,
        backend: BackendId,
        down: bool,
        weight_offset: i64,
        now: Instant,
    ) -> Result<()> {
        let e = self.entry(pool, backend)?;
        e.adjust_down = down;
        e.offset = weight_offset;
        self.sync(pool, backend, now)
    }

    /// Whether `backend` is failed by its checks or an adjustment, ejections aside: the
    /// state keepalived's real-server notify scripts follow (passive health has no
    /// counterpart there). `false` for a backend it does not know yet. `backend` is
    /// numbered as the pool numbered it at this applier's last call given the pool
    /// ([module docs](self#membership)).
    pub fn is_failed_by_checks(&self, backend: BackendId) -> bool {
        self.ids
            .get(&backend)
            .and_then(|a| self.entries.get(a))
            .is_some_and(|e| e.active_down || e.adjust_down)
    }

    /// Whether `backend` (as a snapshot of the pool shows it) would take new connections
    /// but for an outlier ejection applied here: for one not ejected, whether it does
    /// ([`lb_core::Backend::is_eligible`]); for an ejected one, whether its admin state is
    /// ready, its checks and adjustments let it be up, and the weight it would have is
    /// above 0. What [`OutlierDetector::set_serving`](crate::outlier::OutlierDetector::set_serving)
    /// wants to hear (a `backup` backend aside, which the caller knows).
    pub fn is_serving_apart_from_ejection(&self, backend: &lb_core::Backend) -> bool {
        match self.entries.get(&backend.addr()) {
            Some(e) if e.ejected => {
                backend.admin() == lb_core::AdminState::Ready
                    && !e.active_down
                    && !e.adjust_down
                    && !e.weight_in_use().is_zero()
            }
            _ => backend.is_eligible(),
        }
    }

    /// Applies an outlier-detection event at `now`.
    ///
    /// # Errors
    /// As [`apply_event`](Self::apply_event).
    pub fn apply_outlier<B: BuildScheduler>(
        &mut self,
        pool: &Pool<B>,
        event: &OutlierEvent,
        now: Instant,
    ) -> Result<()> {
        let (backend, ejected) = match *event {
            OutlierEvent::Ejected { backend, .. } => (backend, true),
            OutlierEvent::Unejected { backend } => (backend, false),
        };
        self.entry(pool, backend)?.ejected = ejected;
        self.sync(pool, backend, now)
    }

    /// Resynchronises `pool` with the current state of every check in `states` (for
    /// example [`CheckStates::snapshot`](crate::CheckStates::snapshot)), as if each
    /// backend's latest event had just been applied: the way to recover after missing
    /// events (a broadcast subscriber that got `RecvError::Lagged`). Trackers publish only
    /// changes, so a missed down → up would otherwise leave the backend out for good.
    /// Backends the pool does not know are skipped (a driver may check other pools' too);
    /// backends not in `states` keep their state. Outlier ejections are kept.
    ///
    /// # Errors
    /// The first error of the pool's scheduler build; the other backends are still applied.
    pub fn resync<B: BuildScheduler>(
        &mut self,
        pool: &Pool<B>,
        states: impl IntoIterator<Item = (BackendId, CheckState)>,
        now: Instant,
    ) -> Result<()> {
        self.follow(pool);
        let mut first_err = None;
        for (id, state) in states {
            let e = match self.entry(pool, id) {
                Ok(e) => e,
                Err(crate::Error::Core(lb_core::Error::UnknownBackend(_))) => continue,
                Err(err) => {
                    first_err.get_or_insert(err);
                    continue;
                }
            };
            e.active_down = state.health == Health::Down;
            e.dynamic = state.weight;
            match self.sync(pool, id, now) {
                Ok(()) | Err(crate::Error::Core(lb_core::Error::UnknownBackend(_))) => {}
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Forgets what this applier knows of `backend` (its check verdict, ejection, weights),
    /// for a backend whose checks were removed; one that left the pool is forgotten without
    /// it ([module docs](self#membership)). `backend` is numbered as the pool numbered it at
    /// this applier's last call given the pool. The next event for it starts from the
    /// pool's state, as for a backend added after this applier was made (see
    /// [`new`](Self::new)); in inhibit mode a failed backend is up at weight 0 there, so 0
    /// becomes its configured weight until [`set_configured_weight`](Self::set_configured_weight)
    /// gives another.
    pub fn forget(&mut self, backend: BackendId) {
        if let Some(addr) = self.ids.get(&backend) {
            self.entries.remove(addr);
        }
    }

    /// Follows the membership of `pool`'s current snapshot, if it is not the one last
    /// followed: each id names the address the pool numbers with it now ([`Pool::replace`]
    /// renumbers by address), and what was known of an address no longer in the pool is
    /// dropped. One look at each backend when the pool has been rebuilt since, which a
    /// change to it costs anyway; a rebuild of the maps only when the membership changed.
    fn follow<B: BuildScheduler>(&mut self, pool: &Pool<B>) {
        let snap = pool.snapshot();
        if snap.generation() == self.generation {
            return;
        }
        self.generation = snap.generation();
        let backends = snap.backends();
        if backends.len() == self.ids.len()
            && backends
                .iter()
                .all(|b| self.ids.get(&b.id()) == Some(&b.addr()))
        {
            return;
        }
        self.ids = backends.iter().map(|b| (b.id(), b.addr())).collect();
        let present: HashSet<SocketAddr> = self.ids.values().copied().collect();
        self.entries.retain(|a, _| present.contains(a));
    }

    /// The entry of the backend the pool now numbers `id`, found by its address (the pool
    /// may have renumbered its backends, [`Pool::replace`]); a fresh one from the pool for a
    /// backend added after this applier was made.
    fn entry<B: BuildScheduler>(&mut self, pool: &Pool<B>, id: BackendId) -> Result<&mut Entry> {
        self.follow(pool);
        // The published snapshot: a cheap look-up, where the whole set would be copied.
        let addr = pool
            .snapshot()
            .backends()
            .get(id)
            .map(lb_core::Backend::addr)
            .ok_or(lb_core::Error::UnknownBackend(id))?;
        self.ids.insert(id, addr);
        Ok(match self.entries.entry(addr) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let b = pool
                    .backends()
                    .get(id)
                    .cloned()
                    .ok_or(lb_core::Error::UnknownBackend(id))?;
                v.insert(Entry::of(&b))
            }
        })
    }

    /// Applies `id`'s entry (made by [`entry`](Self::entry) just before) to the pool.
    fn sync<B: BuildScheduler>(&self, pool: &Pool<B>, id: BackendId, now: Instant) -> Result<()> {
        let e = self.entries[&self.ids[&id]];
        let failed = e.active_down || e.ejected || e.adjust_down;
        let weight = e.weight_in_use();
        // One rebuild for both, so no half-updated snapshot is published; a failed →
        // not-failed change (also an inhibited backend's weight coming back from 0) starts
        // slow start at `now`.
        let (health, weight) = match self.on_failure {
            OnFailure::Inhibit => (Health::Up, if failed { Weight::ZERO } else { weight }),
            OnFailure::Remove => (if failed { Health::Down } else { Health::Up }, weight),
        };
        pool.set_state(id, health, weight, now)?;
        if failed && self.on_failure == OnFailure::Inhibit {
            // Kept up at weight 0, the backend is parked, and a parked backend keeps its
            // persistent clients (HAProxy's drain): not one that failed. IPVS would keep
            // sending them until `expire_quiescent_template`; keepalived users set it.
            pool.expire_persistence(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lb_core::{Backend, BackendSet, PoolConfig};

    use super::*;

    fn pool() -> Pool {
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap())
                .with_weight(Weight::new(3).unwrap()),
            Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()),
        ])
        .unwrap();
        Pool::new("wrr".parse().unwrap(), set, PoolConfig::default()).unwrap()
    }

    fn ev(id: u32, old: Health, new: Health, weight: Option<u64>) -> HealthEvent {
        HealthEvent {
            backend: BackendId(id),
            old,
            new,
            weight: weight.map(|w| Weight::new(w).unwrap()),
            reason: "test".into(),
            latency: Duration::ZERO,
        }
    }

    /// Backend `id` ejected at `now` (its first ejection, for consecutive failures).
    fn ejected(id: u32, now: Instant) -> OutlierEvent {
        OutlierEvent::Ejected {
            backend: BackendId(id),
            until: now,
            ejections: 1,
            reason: crate::outlier::EjectionReason::ConsecutiveFailures,
        }
    }

    fn state(p: &Pool, id: u32) -> (Health, u32) {
        let b = p.backends().get(BackendId(id)).unwrap().clone();
        (b.health(), b.weight().get())
    }

    /// keepalived's tracked files: a fault fails the backend whatever its checks say; an
    /// offset adds to the configured or dynamic weight, within 0..=65535; cleared, the
    /// weight comes back.
    #[test]
    fn adjustments_fail_and_offset_the_weight() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = pool();
        let mut a = PoolApplier::new(&p, OnFailure::Remove);
        a.set_adjustment(&p, BackendId(1), false, 4, now).unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 7));
        a.apply_event(&p, &ev(1, Health::Up, Health::Up, Some(10)), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 14), "dynamic 10 + 4");
        a.set_adjustment(&p, BackendId(1), false, -100, now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 0), "limited at 0, still up");
        a.set_adjustment(&p, BackendId(1), false, i64::MAX, now)
            .unwrap();
        assert_eq!(state(&p, 1).1, 65_535);
        a.set_adjustment(&p, BackendId(1), true, 0, now).unwrap();
        assert_eq!(state(&p, 1).0, Health::Down, "down whatever the checks say");
        a.apply_event(&p, &ev(1, Health::Up, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 1).0, Health::Down);
        a.set_adjustment(&p, BackendId(1), false, 0, now).unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 3));
    }

    /// Whether an ejected backend would serve: its checks, adjustments, weight and admin
    /// state decide, in either failure mode; one not ejected serves when eligible.
    #[test]
    fn serving_apart_from_ejection() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        for mode in [OnFailure::Remove, OnFailure::Inhibit] {
            let p = pool();
            let mut a = PoolApplier::new(&p, mode);
            let serves = |a: &PoolApplier, id| {
                let b = p.snapshot().backends().get(BackendId(id)).unwrap().clone();
                a.is_serving_apart_from_ejection(&b)
            };
            let ej = ejected(1, now);
            a.apply_outlier(&p, &ej, now).unwrap();
            assert!(!p
                .snapshot()
                .backends()
                .get(BackendId(1))
                .unwrap()
                .is_eligible());
            assert!(serves(&a, 1), "{mode:?}: ejected only");
            assert!(serves(&a, 2));
            a.set_adjustment(&p, BackendId(1), false, -3, now).unwrap();
            assert!(!serves(&a, 1), "{mode:?}: weight 0 once back");
            a.set_adjustment(&p, BackendId(1), false, 0, now).unwrap();
            a.apply_event(&p, &ev(1, Health::Up, Health::Down, None), now)
                .unwrap();
            assert!(!serves(&a, 1), "{mode:?}: its check fails");
            a.apply_event(&p, &ev(1, Health::Down, Health::Up, None), now)
                .unwrap();
            assert!(serves(&a, 1));
            p.set_admin(BackendId(1), lb_core::AdminState::Drain, now)
                .unwrap();
            assert!(!serves(&a, 1), "{mode:?}: drained");
            a.apply_event(&p, &ev(2, Health::Up, Health::Down, None), now)
                .unwrap();
            assert!(!serves(&a, 2), "{mode:?}: not ejected, down");
        }
    }

    #[test]
    fn inhibit_keeps_the_backend_at_weight_zero_then_restores() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = pool();
        let mut a = PoolApplier::new(&p, OnFailure::Inhibit);
        a.apply_event(&p, &ev(1, Health::Up, Health::Down, None), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 0));
        a.apply_event(&p, &ev(1, Health::Down, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 3));
        // misc_dynamic weight, then outlier ejection on top.
        a.apply_event(&p, &ev(1, Health::Up, Health::Up, Some(5)), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 5));
        let ej = ejected(1, now);
        a.apply_outlier(&p, &ej, now).unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 0));
        a.apply_outlier(
            &p,
            &OutlierEvent::Unejected {
                backend: BackendId(1),
            },
            now,
        )
        .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 5));
    }

    /// A failed backend kept at weight 0 (`inhibit_on_failure`) loses its persistent
    /// clients: they move on their next connection. A parked backend keeps them (a drain,
    /// or `misc_dynamic` asking for weight 0 while the check passes), and so would an
    /// inhibited one without `expire_persistence`, sending clients to a failed server.
    #[test]
    fn an_inhibited_backend_loses_its_persistent_clients() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap()),
            Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()),
        ])
        .unwrap();
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let p = Pool::new("rr".parse().unwrap(), set, cfg).unwrap();
        let c = lb_core::SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let pick = |p: &Pool| p.select(now, &c, &mut |_| true).unwrap().id();
        assert_eq!(pick(&p), BackendId(1));
        let mut a = PoolApplier::new(&p, OnFailure::Inhibit);
        // misc_dynamic weight 0 with the check passing: parked, the client stays.
        a.apply_event(&p, &ev(1, Health::Up, Health::Up, Some(0)), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 0));
        assert_eq!(pick(&p), BackendId(1));
        // The check fails: inhibited at weight 0, the client moves.
        a.apply_event(&p, &ev(1, Health::Up, Health::Down, None), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 0));
        assert_eq!(pick(&p), BackendId(2));
    }

    /// A new configured weight survives later events, and a failed inhibited backend stays
    /// at weight 0 until it comes back with the new weight.
    #[test]
    fn a_new_configured_weight_outlives_events_and_waits_for_a_failed_backend() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = pool();
        let mut remove = PoolApplier::new(&p, OnFailure::Remove);
        remove
            .set_configured_weight(&p, BackendId(2), Weight::new(7).unwrap(), now)
            .unwrap();
        assert_eq!(state(&p, 2), (Health::Up, 7));
        remove
            .apply_event(&p, &ev(2, Health::Up, Health::Down, None), now)
            .unwrap();
        remove
            .apply_event(&p, &ev(2, Health::Down, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 2), (Health::Up, 7), "not the start-up weight 1");

        let mut inhibit = PoolApplier::new(&p, OnFailure::Inhibit);
        inhibit
            .apply_event(&p, &ev(1, Health::Up, Health::Down, None), now)
            .unwrap();
        inhibit
            .set_configured_weight(&p, BackendId(1), Weight::new(5).unwrap(), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 0), "failed: stays inhibited");
        inhibit
            .apply_event(&p, &ev(1, Health::Down, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 5));
    }

    /// Every candidate list built, as (id, effective weight).
    type Builds = Arc<Mutex<Vec<Vec<(BackendId, u32)>>>>;

    /// A scheduler builder that records every candidate list it is given.
    #[derive(Debug, Default)]
    struct Recording {
        built: Builds,
    }

    impl BuildScheduler for Recording {
        type Scheduler = lb_core::AnyScheduler;

        fn build(
            &self,
            candidates: &[Backend],
            _previous: Option<&Self::Scheduler>,
        ) -> lb_core::Result<Self::Scheduler> {
            self.built.lock().unwrap().push(
                candidates
                    .iter()
                    .map(|b| (b.id(), b.effective_weight().get()))
                    .collect(),
            );
            lb_core::Algorithm::WeightedRoundRobin.build(candidates, None)
        }
    }

    /// An inhibited failed backend (down in the pool, configured weight 5) is never
    /// published as a candidate while the applier moves it to up at weight 0.
    #[test]
    fn inhibit_never_publishes_a_failed_backend_as_a_candidate() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap())
                .with_weight(Weight::new(5).unwrap())
                .with_health(Health::Down),
            Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()),
        ])
        .unwrap();
        let recording = Recording::default();
        let built = Arc::clone(&recording.built);
        let p = Pool::new(recording, set, PoolConfig::default()).unwrap();
        let mut a = PoolApplier::new(&p, OnFailure::Inhibit);
        // Any event for it syncs the pool; it is still failed by its active check.
        let unejected = OutlierEvent::Unejected {
            backend: BackendId(1),
        };
        a.apply_outlier(&p, &unejected, now).unwrap();
        let b = p.backends().get(BackendId(1)).unwrap().clone();
        assert_eq!((b.health(), b.weight()), (Health::Up, Weight::ZERO));
        let built = built.lock().unwrap();
        assert!(built.len() > 2, "the initial build and the applier's");
        for (i, candidates) in built.iter().enumerate() {
            assert!(
                candidates.iter().all(|&(id, _)| id != BackendId(1)),
                "build {i} published failed backend 1: {candidates:?}"
            );
        }
    }

    /// Inhibit mode does not bypass slow start: the recovering backend's weight goes from 0
    /// back to its weight through the ramp.
    #[test]
    fn inhibit_recovery_goes_through_slow_start() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap())
                .with_weight(Weight::new(10).unwrap()),
            Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()),
        ])
        .unwrap();
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(10)),
            ..PoolConfig::default()
        };
        let p = Pool::new("wrr".parse().unwrap(), set, cfg).unwrap();
        let mut a = PoolApplier::new(&p, OnFailure::Inhibit);
        let effective = |p: &Pool| {
            p.snapshot()
                .backends()
                .get(BackendId(1))
                .unwrap()
                .effective_weight()
                .get()
        };
        a.apply_event(&p, &ev(1, Health::Up, Health::Down, None), now)
            .unwrap();
        assert_eq!(effective(&p), 0);
        a.apply_event(&p, &ev(1, Health::Down, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 10));
        assert_eq!(effective(&p), 1, "starts the ramp, not at full weight");
        p.handle_timeout(now + Duration::from_secs(5)).unwrap();
        assert_eq!(effective(&p), 5);
        p.handle_timeout(now + Duration::from_secs(10)).unwrap();
        assert_eq!(effective(&p), 10);
    }

    /// After missed events, resync restores health and dynamic weight from the checks'
    /// current state, keeps outlier ejections, and skips backends the pool does not know.
    #[test]
    fn resync_applies_the_current_state_of_every_check() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = pool();
        let mut a = PoolApplier::new(&p, OnFailure::Remove);
        a.apply_event(&p, &ev(1, Health::Up, Health::Down, None), now)
            .unwrap();
        let ej = ejected(2, now);
        a.apply_outlier(&p, &ej, now).unwrap();
        // Missed: 1 came back asking for weight 6; 2's check went down and up again.
        let up = |w: Option<u64>| CheckState {
            health: Health::Up,
            weight: w.map(|w| Weight::new(w).unwrap()),
            established: true,
            last_pass: None,
            last_failure: None,
        };
        a.resync(
            &p,
            [
                (BackendId(1), up(Some(6))),
                (BackendId(2), up(None)),
                (BackendId(9), up(None)),
            ],
            now,
        )
        .unwrap();
        assert_eq!(state(&p, 1), (Health::Up, 6));
        assert_eq!(state(&p, 2), (Health::Down, 1), "still ejected");
    }

    /// Backends 1, 2, 3 of weight 3, 5, 1 (addresses :1, :2, :3), behind one applier.
    fn three() -> Pool {
        let set = BackendSet::new(
            [(1, 3), (2, 5), (3, 1)]
                .into_iter()
                .map(|(port, w)| {
                    Backend::new(
                        BackendId(port),
                        format!("127.0.0.1:{port}").parse().unwrap(),
                    )
                    .with_weight(Weight::new(w).unwrap())
                })
                .collect(),
        )
        .unwrap();
        Pool::new("wrr".parse().unwrap(), set, PoolConfig::default()).unwrap()
    }

    /// The backends at these ports, numbered from 1, with their weights in `p`.
    fn renumbered(p: &Pool, ports: &[u16]) -> BackendSet {
        let now = p.backends();
        BackendSet::new(
            ports
                .iter()
                .zip(1..)
                .map(|(&port, id)| {
                    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                    let w = now.iter().find(|b| b.addr() == addr).unwrap().weight();
                    Backend::new(BackendId(id), addr).with_weight(w)
                })
                .collect(),
        )
        .unwrap()
    }

    /// After `Pool::replace` renumbered :2 and :3 (now 3 and 2), `forget` and
    /// `is_failed_by_checks` take ids as the pool numbers them once the applier has been
    /// given the pool again. They went by the address each id had when the applier last
    /// used that id: `is_failed_by_checks(2)` answered for :2, and `forget(2)`, meant for :3
    /// (whose checks were removed), forgot :2, failed and inhibited, which then came back
    /// at weight 0 (its weight as the pool showed it).
    #[test]
    fn forget_and_is_failed_by_checks_follow_a_renumbering() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = three();
        let mut a = PoolApplier::new(&p, OnFailure::Inhibit);
        a.apply_event(&p, &ev(2, Health::Up, Health::Down, None), now)
            .unwrap();
        p.replace(renumbered(&p, &[1, 3, 2]), now).unwrap();
        // Any call given the pool: here :1's weight.
        a.set_configured_weight(&p, BackendId(1), Weight::new(4).unwrap(), now)
            .unwrap();
        assert!(!a.is_failed_by_checks(BackendId(2)), ":3 is up");
        assert!(a.is_failed_by_checks(BackendId(3)), ":2 is down");
        a.forget(BackendId(2));
        a.apply_event(&p, &ev(3, Health::Down, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 3), (Health::Up, 5), ":2 back at its weight");
    }

    /// What the applier knew of a backend that left the pool goes with it: the same address
    /// added back later is a new backend, as the pool takes it. It stayed until `forget`
    /// (which, going by ids, could name another backend after a renumbering), so an
    /// ejection it had took the new one out at its first event, for good (its detector,
    /// told of the removal, has no ejection left to end).
    #[test]
    fn a_backend_that_left_the_pool_is_forgotten() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = three();
        let mut a = PoolApplier::new(&p, OnFailure::Remove);
        a.apply_outlier(&p, &ejected(3, now), now).unwrap();
        p.replace(renumbered(&p, &[1, 2]), now).unwrap();
        a.apply_event(&p, &ev(1, Health::Up, Health::Up, None), now)
            .unwrap();
        // Back, and its check passes.
        let mut back: Vec<Backend> = p.backends().iter().cloned().collect();
        back.push(Backend::new(BackendId(3), "127.0.0.1:3".parse().unwrap()));
        p.replace(BackendSet::new(back).unwrap(), now).unwrap();
        a.apply_event(&p, &ev(3, Health::Up, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 3), (Health::Up, 1));
    }

    #[test]
    fn remove_marks_down_and_both_sources_must_clear() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = pool();
        let mut a = PoolApplier::new(&p, OnFailure::Remove);
        a.apply_event(&p, &ev(2, Health::Up, Health::Down, None), now)
            .unwrap();
        assert_eq!(state(&p, 2), (Health::Down, 1));
        let ej = ejected(2, now);
        a.apply_outlier(&p, &ej, now).unwrap();
        a.apply_event(&p, &ev(2, Health::Down, Health::Up, None), now)
            .unwrap();
        assert_eq!(state(&p, 2), (Health::Down, 1), "still ejected");
        a.apply_outlier(
            &p,
            &OutlierEvent::Unejected {
                backend: BackendId(2),
            },
            now,
        )
        .unwrap();
        assert_eq!(state(&p, 2), (Health::Up, 1));
        assert!(a
            .apply_event(&p, &ev(9, Health::Up, Health::Down, None), now)
            .is_err());
    }
}
