//! The tokio driver: one lightweight task per backend runs its [`Probe`] on the schedule of
//! its [`HealthTracker`], and every transition is published as a [`HealthEvent`] on a
//! broadcast channel that any number of subscribers read (the pool, VRRP priority tracking,
//! metrics).
//!
//! Probes are async IO on the runtime's reactor: thousands of TCP/HTTP checks need no thread
//! and no fork each (only [`ExecProbe`](crate::probe::ExecProbe) starts a process, as
//! keepalived's `MISC_CHECK` does). This module is the only one that reads the clock, via
//! `tokio::time::Instant::now().into_std()`, so paused-clock tests drive it.
//!
//! Subscribers that fall more than the channel's capacity behind get
//! [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged) and miss events;
//! size the capacity for bursts (one event per backend covers a whole-pool flip). Trackers
//! publish changes only, so a subscriber that lagged must resynchronise from the current
//! state, [`HealthDriver::states`] (a handle it can keep), e.g. with
//! [`PoolApplier::resync`]; [`HealthDriver::apply_to_pool`] does.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_core::{BackendId, Health};
//! use lb_health::probe::TcpProbe;
//! use lb_health::{HealthCheckConfig, HealthDriver};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lb_health::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let config = HealthCheckConfig::haproxy()
//!     .inter(Duration::from_millis(50))
//!     .fall(2)
//!     .build()?;
//! let mut driver = HealthDriver::new(64);
//! let mut events = driver.subscribe();
//! driver.add(BackendId(1), addr, Box::new(TcpProbe::new()), config)?;
//! drop(listener); // the backend dies
//! let event = events.recv().await.unwrap();
//! assert_eq!((event.backend, event.new), (BackendId(1), Health::Down));
//! driver.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use lb_core::{BackendId, BuildScheduler, Health, Pool};

use tokio::sync::broadcast;
use tokio::task::{AbortHandle, JoinSet};

use crate::config::HealthCheckConfig;
use crate::error::{Error, Result};
use crate::pool::PoolApplier;
use crate::probe::Probe;
use crate::tracker::{CheckState, HealthEvent, HealthTracker, ProbeOutcome};

/// How long after its longest run ([`Probe::max_duration`]: its timeout and its
/// [`cleanup_grace`](Probe::cleanup_grace)) the driver drops a probe that has not returned
/// by itself.
pub const BACKSTOP_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// The driver's clock: tokio's, so paused-clock tests control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs health checks as tokio tasks and publishes their transitions. See the
/// [module docs](self).
///
/// Dropping the driver aborts every check (and kills running exec probes);
/// [`shutdown`](Self::shutdown) also waits for them to finish.
#[derive(Debug)]
pub struct HealthDriver {
    events: broadcast::Sender<HealthEvent>,
    tasks: JoinSet<()>,
    checks: HashMap<BackendId, AbortHandle>,
    /// The current state of every check, updated on transitions (before they are
    /// published).
    health: CheckStates,
    /// The generation the next added check takes.
    next_generation: u64,
}

/// Each check's state, with the generation of the check that owns the entry: a task of a
/// check removed and added again (its abort not yet effective) finds another generation
/// and writes and publishes nothing.
type StateMap = HashMap<BackendId, (u64, CheckState)>;

fn lock(map: &CheckStates) -> std::sync::MutexGuard<'_, StateMap> {
    map.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A shared, read-only view of the current state (health and `misc_dynamic` weight) of every
/// check of a [`HealthDriver`], from [`HealthDriver::states`]. Cheap to clone and `Send`, so
/// a subscriber task keeps one to resynchronise after missing events (`RecvError::Lagged`):
/// the driver updates a check's state before publishing its event, so the view is never
/// older than the events a subscriber has received. After the driver drops it stays frozen.
#[derive(Debug, Clone, Default)]
pub struct CheckStates(Arc<Mutex<StateMap>>);

impl CheckStates {
    /// The current state of `backend`'s check, or `None` if it is not checked.
    pub fn get(&self, backend: BackendId) -> Option<CheckState> {
        lock(self).get(&backend).map(|(_, s)| s.clone())
    }

    /// The current state of every check (a copy).
    pub fn snapshot(&self) -> HashMap<BackendId, CheckState> {
        lock(self)
            .iter()
            .map(|(id, (_, s))| (*id, s.clone()))
            .collect()
    }
}

impl HealthDriver {
    /// A driver whose event channel buffers `event_capacity` events per subscriber (at least
    /// 1).
    pub fn new(event_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(event_capacity.max(1));
        Self {
            events,
            tasks: JoinSet::new(),
            checks: HashMap::new(),
            health: CheckStates::default(),
            next_generation: 0,
        }
    }

    /// The current verdict for `backend` (its start state until the first transition), or
    /// `None` if it is not checked. A subscriber that joins late reads this first, then
    /// follows events.
    pub fn health(&self, backend: BackendId) -> Option<Health> {
        lock(&self.health).get(&backend).map(|(_, s)| s.health)
    }

    /// The current verdict of every checked backend (see [`states`](Self::states) for the
    /// dynamic weights too).
    pub fn snapshot(&self) -> HashMap<BackendId, Health> {
        lock(&self.health)
            .iter()
            .map(|(id, (_, s))| (*id, s.health))
            .collect()
    }

    /// A shared view of the current state (health and dynamic weight) of every check, for
    /// subscribers to resynchronise from after missing events (see [`CheckStates`]).
    pub fn states(&self) -> CheckStates {
        self.health.clone()
    }

    /// A new subscriber; it sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    /// The number of running checks.
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    /// Whether no check is running.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Starts checking `backend` at `addr` with `probe` on the schedule of `config`. The
    /// first probe runs at once (or within `warmup`).
    ///
    /// # Errors
    /// [`Error::DuplicateBackend`] if the backend is already checked.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn add(
        &mut self,
        backend: BackendId,
        addr: SocketAddr,
        probe: Box<dyn Probe + Send + Sync>,
        config: HealthCheckConfig,
    ) -> Result<()> {
        if self.checks.contains_key(&backend) {
            return Err(Error::DuplicateBackend(backend));
        }
        // Forget tasks that ended (removed checks), so churn does not accumulate them.
        while self.tasks.try_join_next().is_some() {}
        let tracker = HealthTracker::new(backend, config, now());
        let generation = self.next_generation;
        self.next_generation += 1;
        lock(&self.health).insert(backend, (generation, tracker.state()));
        let events = self.events.clone();
        let health = self.health.clone();
        let run = std::panic::AssertUnwindSafe(run_check(
            addr, probe, tracker, events, health, generation,
        ));
        let handle = self.tasks.spawn(async move {
            // A panic (a bug in a probe) ends this check for good: said loudly, since the
            // backend then keeps its last verdict. Nothing else would tell.
            if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%backend, panic = %message, "health check task panicked: the check has stopped and the backend keeps its last verdict");
            }
        });
        self.checks.insert(backend, handle);
        Ok(())
    }

    /// Stops checking `backend` (a running probe is dropped); returns whether it was checked.
    pub fn remove(&mut self, backend: BackendId) -> bool {
        match self.checks.remove(&backend) {
            Some(h) => {
                h.abort();
                lock(&self.health).remove(&backend);
                true
            }
            None => false,
        }
    }

    /// Spawns a subscriber that applies every event to `pool` through `applier` (keepalived's
    /// checkers updating IPVS). It stops with the driver. On lagging (more than the
    /// channel's capacity of events queued, so some were missed) it logs and resynchronises
    /// the pool from the current state of every check ([`PoolApplier::resync`] with
    /// [`states`](Self::states)).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn apply_to_pool<B>(&mut self, pool: Arc<Pool<B>>, mut applier: PoolApplier)
    where
        B: BuildScheduler + Send + Sync + 'static,
        B::Scheduler: Send + Sync + 'static,
    {
        let mut rx = self.events.subscribe();
        let states = self.states();
        self.tasks.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        if let Err(e) = applier.apply_event(&pool, &event, now()) {
                            tracing::warn!(backend = %event.backend, error = %e, "health event not applied");
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "pool updater lagged behind health events; resynchronising");
                        if let Err(e) = applier.resync(&pool, states.snapshot(), now()) {
                            tracing::warn!(error = %e, "pool resynchronisation incomplete");
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Stops every check and subscriber task and waits until they are gone. Running exec
    /// probes' process groups are killed.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the remaining tasks are aborted when the driver
    /// (moved into the future) drops.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.checks.clear();
    }
}

/// The state of `backend`'s check of `generation` in `m`: `None` once that check was
/// removed, also when the backend is checked again by a newer one.
fn own(m: &mut StateMap, backend: BackendId, generation: u64) -> Option<&mut CheckState> {
    m.get_mut(&backend)
        .filter(|(g, _)| *g == generation)
        .map(|(_, s)| s)
}

/// One backend's check loop: sleep until due, probe with the timeout, feed the tracker,
/// publish transitions.
async fn run_check(
    addr: SocketAddr,
    probe: Box<dyn Probe + Send + Sync>,
    mut tracker: HealthTracker,
    events: broadcast::Sender<HealthEvent>,
    health: CheckStates,
    generation: u64,
) {
    let backend = tracker.backend();
    loop {
        if let Some(req) = tracker.poll_probe(now()) {
            let timeout = probe.timeout().unwrap_or(req.timeout);
            // Probes enforce their timeout themselves (and clean up, e.g. terminate and reap
            // a program, for up to their cleanup grace); the driver's own deadline, a little
            // later, only stops one that doesn't.
            let outcome = tokio::time::timeout(
                probe.max_duration(timeout).saturating_add(BACKSTOP_GRACE),
                probe.probe(addr, timeout),
            )
            .await
            .unwrap_or_else(|_| ProbeOutcome::timed_out(timeout));
            tracing::trace!(%backend, kind = probe.kind(), up = outcome.is_up(), reason = %outcome.reason, "probe");
            let passed = outcome.is_up().then(now);
            let failure: Option<Arc<str>> =
                (!outcome.is_up()).then(|| outcome.reason.to_string().into());
            let transition = tracker.handle_result(now(), outcome);
            let established = tracker.state().established;
            if let Some(h) = own(&mut lock(&health), backend, generation) {
                if passed.is_some() {
                    h.last_pass = passed;
                }
                // A failure that says something new is logged (a backend that started
                // down gets its first reason, as keepalived logs an alpha checker's first
                // failure; one that stays down shows what it fails with now); a repeat is
                // not.
                if failure != h.last_failure {
                    if let (Some(f), None) = (&failure, &transition) {
                        tracing::info!(%backend, health = %h.health, reason = %f, "check failed");
                    }
                    h.last_failure = failure;
                }
            }
            if let Some(t) = transition {
                tracing::info!(%backend, old = %t.old, new = %t.new, reason = %t.reason, latency = ?t.latency, "health transition");
                // Only while still registered: a removed check may finish one last probe,
                // whose verdict must neither be written nor published (the backend may be
                // checked again by a new check already).
                let mut states = lock(&health);
                if let Some(h) = own(&mut states, backend, generation) {
                    *h = CheckState {
                        health: t.new,
                        weight: t.weight,
                        established,
                        last_pass: h.last_pass,
                        last_failure: h.last_failure.clone(),
                    };
                    // No subscriber is not an error.
                    let _ = events.send(t.into_event(backend));
                }
            } else if established {
                // A fresh start's first result that changed nothing: its verdict is a
                // check's from now on.
                if let Some(h) =
                    own(&mut lock(&health), backend, generation).filter(|h| !h.established)
                {
                    h.established = true;
                }
            }
            continue;
        }
        let Some(at) = tracker.poll_timeout() else {
            return;
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lb_core::{Backend, BackendSet, PoolConfig, Weight};

    use super::*;
    use crate::pool::OnFailure;

    fn event(id: u32, old: Health, new: Health) -> HealthEvent {
        HealthEvent {
            backend: BackendId(id),
            old,
            new,
            weight: None,
            reason: "test".into(),
            latency: Duration::ZERO,
        }
    }

    /// A probe whose poll blocks its worker thread for 300 ms, then says down: the window
    /// in which an aborted task still finishes its probe.
    #[derive(Debug)]
    struct BlockingDown;

    #[async_trait::async_trait]
    impl Probe for BlockingDown {
        async fn probe(&self, _: SocketAddr, _: Duration) -> ProbeOutcome {
            // Blocking on purpose: the worker must be inside this poll while the test
            // removes and re-adds the check.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(300));
            ProbeOutcome::down("blocked", Duration::ZERO)
        }
        fn kind(&self) -> &'static str {
            "test"
        }
    }

    /// A check removed while its probe runs on another worker, and the backend added
    /// again at once: the old task's last verdict is neither written over the new check's
    /// state nor published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_checks_last_probe_does_not_reach_its_successor() {
        let mut driver = HealthDriver::new(16);
        let mut rx = driver.subscribe();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let config = || {
            HealthCheckConfig::builder()
                .start(crate::config::StartState::Established)
                .fall(1)
                .interval(Duration::from_secs(3600))
                .build()
                .unwrap()
        };
        driver
            .add(BackendId(1), addr, Box::new(BlockingDown), config())
            .unwrap();
        // The old probe is now blocking its worker.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(driver.remove(BackendId(1)));
        driver
            .add(
                BackendId(1),
                addr,
                Box::new(crate::probe::ExecProbe::shell("sleep 5")),
                config(),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(driver.health(BackendId(1)), Some(Health::Up));
        assert!(rx.try_recv().is_err(), "no event of the removed check");
        driver.shutdown().await;
    }

    /// The pool updater misses a down → up (the channel overflowed) and resynchronises from
    /// the checks' current state instead of leaving the backend out for good.
    #[tokio::test(flavor = "current_thread")]
    async fn apply_to_pool_resyncs_after_lagging() {
        let set = BackendSet::new(
            (1..=3)
                .map(|i| {
                    Backend::new(BackendId(i), format!("127.0.0.1:{i}").parse().unwrap())
                        .with_weight(Weight::new(2).unwrap())
                })
                .collect(),
        )
        .unwrap();
        let algo: lb_core::Algorithm = "wrr".parse().unwrap();
        let pool = Arc::new(Pool::new(algo, set, PoolConfig::default()).unwrap());
        pool.set_health(BackendId(1), Health::Down, now()).unwrap();
        let applier = PoolApplier::new(&pool, OnFailure::Remove);
        let mut driver = HealthDriver::new(1);
        driver.apply_to_pool(Arc::clone(&pool), applier);
        // Three transitions, published as run_check does (state first), before the updater
        // task runs: with room for one, it misses the first two.
        let transitions = [
            (1, Health::Down, Health::Up),
            (2, Health::Up, Health::Down),
            (3, Health::Up, Health::Down),
        ];
        for (id, old, new) in transitions {
            lock(&driver.health).insert(
                BackendId(id),
                (
                    0,
                    CheckState {
                        health: new,
                        weight: None,
                        established: true,
                        last_pass: None,
                        last_failure: None,
                    },
                ),
            );
            let _ = driver.events.send(event(id, old, new));
        }
        // Let the updater run until it has applied the one event it received.
        for _ in 0..1000 {
            if pool.backends().get(BackendId(3)).unwrap().health() == Health::Down {
                break;
            }
            tokio::task::yield_now().await;
        }
        let health = |id| pool.backends().get(BackendId(id)).unwrap().health();
        assert_eq!(health(3), Health::Down, "the event it received");
        assert_eq!(
            health(1),
            Health::Up,
            "missed down → up, recovered by resync"
        );
        assert_eq!(
            health(2),
            Health::Down,
            "missed up → down, recovered by resync"
        );
        driver.shutdown().await;
    }
}
