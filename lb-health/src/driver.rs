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
        self.add_checks(backend, addr, vec![(probe, config)])
    }

    /// Starts checking `backend` at `addr` with several checks, each its probe on its own
    /// schedule (`retry`, rise/fall, interval, timeout), as keepalived runs each checker of
    /// a real server on its own: the backend is down while any check is down and up once
    /// every one is (keepalived's `update_svr_checker_state`). Its events are the changes of
    /// that combined verdict; their reasons name the check (`tcp: connect to …`) when there
    /// are several. The `misc_dynamic` weight is the first asking check's.
    ///
    /// # Errors
    /// [`Error::DuplicateBackend`] if the backend is already checked;
    /// [`Error::InvalidConfig`] (setting `checks`) for an empty list.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn add_checks(
        &mut self,
        backend: BackendId,
        addr: SocketAddr,
        checks: Vec<(Box<dyn Probe + Send + Sync>, HealthCheckConfig)>,
    ) -> Result<()> {
        if self.checks.contains_key(&backend) {
            return Err(Error::DuplicateBackend(backend));
        }
        if checks.is_empty() {
            return Err(Error::InvalidConfig {
                setting: "checks",
                reason: format!("no check for backend {backend}"),
            });
        }
        // Forget tasks that ended (removed checks), so churn does not accumulate them.
        while self.tasks.try_join_next().is_some() {}
        let t0 = now();
        let (probes, checks): (Vec<_>, Vec<_>) = checks
            .into_iter()
            .map(|(probe, config)| {
                let check = Check {
                    kind: probe.kind(),
                    tracker: HealthTracker::new(backend, config, t0),
                    last_pass: None,
                    last_failure: None,
                };
                (probe, check)
            })
            .unzip();
        let (health, weight, established, _) = combined(&checks);
        let generation = self.next_generation;
        self.next_generation += 1;
        lock(&self.health).insert(
            backend,
            (
                generation,
                CheckState {
                    health,
                    weight,
                    established,
                    last_pass: None,
                    last_failure: None,
                },
            ),
        );
        let events = self.events.clone();
        let health = self.health.clone();
        let run = std::panic::AssertUnwindSafe(run_check(
            addr, backend, probes, checks, events, health, generation,
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
                tracing::error!(%backend, address = %addr, panic = %message, "health check task panicked: the check has stopped and the backend keeps its last verdict");
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

/// One check of a backend: its tracker (schedule, retries, rise/fall) and what its probe
/// last said.
struct Check {
    /// Its probe's [`Probe::kind`].
    kind: &'static str,
    tracker: HealthTracker,
    /// When its probe last passed.
    last_pass: Option<Instant>,
    /// Why its last probe failed, until one passes.
    last_failure: Option<Arc<str>>,
}

/// The verdict of a backend's checks together, as keepalived's `update_svr_checker_state`
/// decides it: down while any check is down, up when every one is; the `misc_dynamic`
/// weight of the first check that asks for one; established once every check is; passed
/// when every check has passed (since the earliest of their last passes).
fn combined(checks: &[Check]) -> (Health, Option<lb_core::Weight>, bool, Option<Instant>) {
    let health = if checks.iter().any(|c| c.tracker.health() == Health::Down) {
        Health::Down
    } else {
        Health::Up
    };
    let weight = checks.iter().find_map(|c| c.tracker.weight());
    let established = checks.iter().all(|c| c.tracker.state().established);
    let passed = checks
        .iter()
        .map(|c| c.last_pass)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().min());
    (health, weight, established, passed)
}

/// Why check `i` of `checks` says what it says: its kind first when the backend has several.
fn tell(checks: &[Check], i: usize, reason: &str) -> Arc<str> {
    if checks.len() > 1 {
        format!("{}: {reason}", checks[i].kind).into()
    } else {
        reason.into()
    }
}

/// One backend's check loop: sleeps until a check is due, runs each check's probe with its
/// timeout (several checks concurrently, each on its own schedule), feeds each check's
/// tracker, and publishes the changes of their combined verdict ([`combined`]).
async fn run_check(
    addr: SocketAddr,
    backend: BackendId,
    probes: Vec<Box<dyn Probe + Send + Sync>>,
    mut checks: Vec<Check>,
    events: broadcast::Sender<HealthEvent>,
    health: CheckStates,
    generation: u64,
) {
    use futures::stream::{FuturesUnordered, StreamExt};

    let mut running = FuturesUnordered::new();
    let (mut verdict, mut weight, _, _) = combined(&checks);
    loop {
        let now_ = now();
        for (i, c) in checks.iter_mut().enumerate() {
            if let Some(req) = c.tracker.poll_probe(now_) {
                let probe = &probes[i];
                let timeout = probe.timeout().unwrap_or(req.timeout);
                // Probes enforce their timeout themselves (and clean up, e.g. terminate and
                // reap a program, for up to their cleanup grace); the driver's own
                // deadline, a little later, only stops one that doesn't.
                let bound = probe.max_duration(timeout).saturating_add(BACKSTOP_GRACE);
                running.push(async move {
                    let outcome = tokio::time::timeout(bound, probe.probe(addr, timeout))
                        .await
                        .unwrap_or_else(|_| ProbeOutcome::timed_out(timeout));
                    (i, outcome)
                });
            }
        }
        // The next probe due among the checks not running one.
        let due = checks
            .iter()
            .filter(|c| !c.tracker.is_probing())
            .filter_map(|c| c.tracker.poll_timeout())
            .min();
        let (i, outcome) = tokio::select! {
            Some(done) = running.next(), if !running.is_empty() => done,
            () = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            }, if due.is_some() => continue,
            else => return,
        };
        let now_ = now();
        tracing::trace!(%backend, address = %addr, kind = probes[i].kind(), up = outcome.is_up(), reason = %outcome.reason, "probe");
        let failure = (!outcome.is_up()).then(|| tell(&checks, i, &outcome.reason));
        let (reason, latency) = (outcome.reason.clone(), outcome.latency);
        let c = &mut checks[i];
        if outcome.is_up() {
            c.last_pass = Some(now_);
        }
        let transition = c.tracker.handle_result(now_, outcome);
        if failure != c.last_failure {
            // A failure that says something new is logged (a backend that started down
            // gets its first reason, as keepalived logs an alpha checker's first failure;
            // one that stays down shows what it fails with now); a repeat is not.
            if let (Some(f), None) = (&failure, &transition) {
                tracing::info!(%backend, address = %addr, health = %c.tracker.health(), reason = %f, "check failed");
            }
            c.last_failure = failure;
        }
        if let Some(t) = &transition {
            if checks.len() > 1 && t.is_health_change() {
                tracing::info!(%backend, address = %addr, check = probes[i].kind(), old = %t.old, new = %t.new, reason = %t.reason, "check changed");
            }
        }
        let (new, new_weight, established, passed) = combined(&checks);
        // What a check that has the backend down fails with now (none while that check
        // has passed since, rising: the transition's reason stands then); another check's
        // passing retry is not why.
        let last_failure = checks
            .iter()
            .find(|c| c.tracker.health() == Health::Down && c.last_failure.is_some())
            .and_then(|c| c.last_failure.clone());
        // Only while still registered: a removed check may finish one last probe, whose
        // verdict must neither be written nor published (the backend may be checked again
        // by a new check already).
        let mut states = lock(&health);
        let Some(h) = own(&mut states, backend, generation) else {
            continue;
        };
        h.established = established;
        h.last_pass = passed;
        h.last_failure = last_failure;
        let weight_changed = new == Health::Up && new_weight != weight;
        if new != verdict || weight_changed {
            let event = HealthEvent {
                backend,
                old: verdict,
                new,
                weight: new_weight,
                reason: tell(&checks, i, &reason).to_string().into(),
                latency,
            };
            tracing::info!(%backend, address = %addr, old = %event.old, new = %event.new, reason = %event.reason, latency = ?event.latency, "health transition");
            h.health = new;
            h.weight = new_weight;
            verdict = new;
            if new == Health::Up {
                weight = new_weight;
            }
            drop(states);
            // No subscriber is not an error.
            let _ = events.send(event);
        }
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
