//! Applying health to an [`lb_core::Pool`]: active-check events and outlier ejections, with
//! keepalived's `inhibit_on_failure` choice between keeping a failed backend at weight 0 and
//! taking it out of the set.
//!
//! A backend counts as failed while either source says so (an active check is down, or
//! outlier detection ejected it). A `misc_dynamic` weight replaces the configured weight while
//! the backend is up; the configured weight comes back when a probe stops asking.
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

use std::collections::HashMap;
use std::time::Instant;

use lb_core::{BackendId, BuildScheduler, Health, Pool, Weight};

use crate::error::Result;
use crate::outlier::OutlierEvent;
use crate::tracker::HealthEvent;

/// What happens to a failed backend (keepalived `inhibit_on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnFailure {
    /// keepalived's default: the backend leaves the set ([`Health::Down`]).
    #[default]
    Remove,
    /// keepalived `inhibit_on_failure`: the backend stays with weight 0, so existing
    /// connections drain and no new one selects it.
    Inhibit,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    configured: Weight,
    dynamic: Option<Weight>,
    active_down: bool,
    ejected: bool,
}

/// Applies [`HealthEvent`]s and [`OutlierEvent`]s to a pool. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PoolApplier {
    on_failure: OnFailure,
    entries: HashMap<BackendId, Entry>,
}

impl PoolApplier {
    /// An applier that remembers each backend's configured weight and current health in
    /// `pool` (a backend already down counts as failed by its active check).
    pub fn new<B: BuildScheduler>(pool: &Pool<B>, on_failure: OnFailure) -> Self {
        let entries = pool
            .backends()
            .iter()
            .map(|b| {
                (
                    b.id(),
                    Entry {
                        configured: b.weight(),
                        dynamic: None,
                        active_down: b.health() == Health::Down,
                        ejected: false,
                    },
                )
            })
            .collect();
        Self {
            on_failure,
            entries,
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
    /// configuration reload) and applies it at once unless the backend is failed (then
    /// it applies when the backend comes back) or a `misc_dynamic` weight replaces it.
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

    fn entry<B: BuildScheduler>(&mut self, pool: &Pool<B>, id: BackendId) -> Result<&mut Entry> {
        match self.entries.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                // A backend added to the pool after this applier was made.
                let b = pool
                    .backends()
                    .get(id)
                    .cloned()
                    .ok_or(lb_core::Error::UnknownBackend(id))?;
                Ok(v.insert(Entry {
                    configured: b.weight(),
                    dynamic: None,
                    active_down: b.health() == Health::Down,
                    ejected: false,
                }))
            }
        }
    }

    fn sync<B: BuildScheduler>(&self, pool: &Pool<B>, id: BackendId, now: Instant) -> Result<()> {
        let e = self.entries[&id];
        let failed = e.active_down || e.ejected;
        let weight = e.dynamic.unwrap_or(e.configured);
        match self.on_failure {
            OnFailure::Inhibit => {
                pool.set_health(id, Health::Up, now)?;
                pool.set_weight(id, if failed { Weight::ZERO } else { weight })?;
            }
            OnFailure::Remove => {
                pool.set_weight(id, weight)?;
                let h = if failed { Health::Down } else { Health::Up };
                pool.set_health(id, h, now)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    fn state(p: &Pool, id: u32) -> (Health, u32) {
        let b = p.backends().get(BackendId(id)).unwrap().clone();
        (b.health(), b.weight().get())
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
        let ej = OutlierEvent::Ejected {
            backend: BackendId(1),
            until: now,
            ejections: 1,
        };
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

    #[test]
    fn remove_marks_down_and_both_sources_must_clear() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let p = pool();
        let mut a = PoolApplier::new(&p, OnFailure::Remove);
        a.apply_event(&p, &ev(2, Health::Up, Health::Down, None), now)
            .unwrap();
        assert_eq!(state(&p, 2), (Health::Down, 1));
        let ej = OutlierEvent::Ejected {
            backend: BackendId(2),
            until: now,
            ejections: 1,
        };
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
