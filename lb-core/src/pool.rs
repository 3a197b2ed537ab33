//! A [`Pool`]: the backends of one virtual server, its scheduler, and everything around a
//! pick that operators expect — backups (HAProxy `backup`, keepalived `sorry_server`), a panic
//! threshold (Envoy `healthy_panic_threshold`), persistence (keepalived `persistence_timeout`)
//! and slow start (HAProxy `slowstart`).
//!
//! The hot path ([`Pool::select`]) reads an immutable [`Snapshot`] through `ArcSwap`: no lock
//! (unless persistence is on) and no allocation. Changes ([`Pool::set_health`],
//! [`Pool::set_admin`], [`Pool::set_weight`], [`Pool::set_state`], [`Pool::replace`]) rebuild the snapshot off
//! the data path and publish it atomically. A rebuild keeps active-connection counts (shared
//! [`BackendStats`](crate::BackendStats)), the round-robin position while the candidates are
//! unchanged, slow-start clocks, and persistence entries to backends that are still
//! candidates or parked (drained or of weight 0, still up; see
//! [`PoolConfig::expire_quiescent_template`]), entries to a backup only while no primary
//! is a candidate.
//!
//! The pool reads no clock: time comes in as `now`. During slow start,
//! [`Pool::poll_timeout`] says when effective weights next change and
//! [`Pool::handle_timeout`] applies the change.
//!
//! # Examples
//!
//! ```
//! use std::time::Instant;
//! use lb_core::{Algorithm, Backend, BackendId, BackendSet, Health, Pool, PoolConfig, SelectContext};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let set = BackendSet::new(vec![
//!     Backend::new(BackendId(1), "192.0.2.151:82".parse().unwrap()),
//!     Backend::new(BackendId(2), "192.0.2.153:83".parse().unwrap()),
//!     Backend::new(BackendId(9), "192.0.2.200:80".parse().unwrap()).with_backup(true),
//! ]).unwrap();
//! let pool = Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap();
//! let ctx = SelectContext::default();
//! assert_eq!(pool.select(now, &ctx, &mut |_| true).unwrap().id(), BackendId(1));
//! assert_eq!(pool.select(now, &ctx, &mut |_| true).unwrap().id(), BackendId(2));
//! pool.set_health(BackendId(1), Health::Down, now).unwrap();
//! pool.set_health(BackendId(2), Health::Down, now).unwrap();
//! assert_eq!(pool.select(now, &ctx, &mut |_| true).unwrap().id(), BackendId(9)); // sorry server
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::backend::{AdminState, Backend, BackendId, BackendSet, Health, Weight};
use crate::error::{Error, Result};
use crate::persistence::{PersistenceTable, Sticky};
use crate::scheduler::{Algorithm, BuildScheduler, Granularity, Scheduler, SelectContext};

/// What to do when too few primaries are healthy (see [`PoolConfig::panic_threshold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicMode {
    /// Envoy's panic routing: spread over every ready primary, healthy or not, rather than
    /// overload the few healthy ones. While a backup backend is eligible, the healthy
    /// primaries and the backups share the traffic instead, as Envoy spills to its next
    /// priority level before routing to unhealthy hosts: no connection goes to a down
    /// primary.
    #[default]
    FailOpen,
    /// Send everything to the backup backends (when there are any; otherwise keep using the
    /// healthy primaries).
    Backups,
}

/// A client's persistence entry carried between pools ([`Pool::persistence_entries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistedClient {
    /// The client, masked by the granularity of the pool it comes from.
    pub client: IpAddr,
    /// The address of its backend.
    pub backend: SocketAddr,
    /// Time left before the entry expires; `None`: never.
    pub remaining: Option<Duration>,
}

/// Settings of a [`Pool`]. `Default` gives keepalived's behaviour: no persistence, no slow
/// start, no panic threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// keepalived `persistence_timeout`: how long a client stays on its backend after its
    /// last connection. `None` (default) turns persistence off.
    ///
    /// An entry lives this long after the client's last pick and, as an IPVS persistence
    /// template that controls connections (`ip_vs_conn_expire`), never expires while a
    /// connection or request counted with [`Backend::connection`] / [`Backend::request`] on
    /// the backend [`Pool::select`] returned is open; its timeout then counts from the end
    /// of the last one. The end is the `now` given to
    /// [`ConnectionGuard::finish`](crate::ConnectionGuard::finish), or for a guard simply
    /// dropped the latest `now` the pool was given by any call taking one but the read
    /// [`Pool::persistence_entries`] (picks with a client or not, state changes even when
    /// they change nothing, [`Pool::handle_timeout`] even without slow start), which lags
    /// the real end on a pool that sees no traffic. Too large for [`Instant`]: never
    /// expires.
    pub persistence_timeout: Option<Duration>,
    /// keepalived `persistence_granularity`: the client prefix that persistence and the
    /// hash schedulers key on (default /32 and /128).
    pub persistence_granularity: Granularity,
    /// IPVS's `net.ipv4.vs.expire_quiescent_template` sysctl. `false` (default, as IPVS
    /// and HAProxy): a parked backend (up, but drained or of weight 0) takes no new
    /// client, while clients whose entry names it go on reaching it until the entry
    /// expires (HAProxy: a drained or weight-0 server "still accepts persistent
    /// connections"). `true`: parking a backend drops its clients' entries, so their next
    /// connection is scheduled afresh. Either way a backend that is down or in
    /// maintenance loses its entries, and [`Pool::expire_persistence`] drops one
    /// backend's on demand (`lb-health` does so for a backend it keeps at weight 0 for
    /// keepalived's `inhibit_on_failure`: a failed backend gets no client).
    pub expire_quiescent_template: bool,
    /// The most persistence entries kept (default 65 536); beyond it an expired entry, else
    /// the least recently used one goes (CLOCK's approximation, see
    /// [`PersistenceTable::new`](crate::persistence::PersistenceTable::new)).
    pub persistence_max_entries: usize,
    /// HAProxy `slowstart`: a backend that comes back up ramps its effective weight from 1
    /// to its weight over this window (default `None`: full weight at once). Coming up is
    /// any change from out of service (down, in maintenance, drained or weight 0) to in
    /// service (up, ready, weight above 0) — [`Pool::set_health`], [`Pool::set_admin`],
    /// [`Pool::set_weight`] or [`Pool::set_state`] — and the window starts at the `now`
    /// given to it.
    ///
    /// As in HAProxy, which ramps only the dynamic algorithms (`server_recalc_eweight`
    /// scales the weight only under `BE_LB_PROP_DYN`), it applies to the algorithms whose
    /// [`BuildScheduler::slow_start`] says so: `wrr`, `swrr`, `wlc`, `sed`, `nq`, `random`,
    /// `p2c` and `peak_ewma`. Not to `rr` and `lc`, which use weights only as 0 or not
    /// (nothing to ramp); not to `fo`, where the highest weight takes everything (a ramp
    /// would keep a returning backend out, then hand it all at once); nor to the hash
    /// algorithms `sh`, `dh`, `mh` and `ring_hash`: their tables are built from configured
    /// weights, since every step of a ramp would rebuild them and move clients between the
    /// other backends too. A backend added by [`Pool::replace`] ramps too.
    ///
    /// The ramp moves in whole units of weight: a backend of weight `w` passes through at
    /// most `w` levels, so one of weight 1 (keepalived's default) is at full weight at once
    /// and one of weight 2 jumps to full at half the window. HAProxy ramps in sixteenths of
    /// a weight (its weights are scaled by `BE_WEIGHT_SCALE`, 16); for a comparable ramp,
    /// give the backends weights of 16 or more (only their ratios matter).
    pub slow_start: Option<Duration>,
    /// Envoy `healthy_panic_threshold`, percent 0..=100: when fewer than this share of the
    /// non-maintenance primaries is healthy, the pool panics as [`PoolConfig::panic_mode`] says.
    /// 0 (default) disables it.
    pub panic_threshold: u8,
    /// What panic means.
    pub panic_mode: PanicMode,
    /// keepalived `quorum`: the least total weight of the primaries able to take
    /// connections (ready, up, weight above 0) for the pool to have quorum (default 1, the
    /// least; at least 1). Without quorum and with backups, every new connection goes to
    /// the backups, the primaries still up included (keepalived's sorry server takes over);
    /// without backups the primaries go on serving. [`Pool::has_quorum`] tells which.
    pub quorum: u64,
    /// keepalived `hysteresis`: quorum is lost below `quorum - hysteresis` and regained at
    /// `quorum + hysteresis`, so a weight sum near the quorum does not flap (default 0). A
    /// pool starts without quorum, as keepalived's virtual servers do: it needs
    /// `quorum + hysteresis` at start too.
    pub hysteresis: u64,
    /// HAProxy `option allbackups`: while the backups serve, spread over every eligible
    /// one. `false` (default, HAProxy's default): everything goes to the first eligible
    /// backup in set order, the next one taking over when it fails (keepalived has a
    /// single `sorry_server`).
    pub all_backups: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            persistence_timeout: None,
            persistence_granularity: Granularity::default(),
            expire_quiescent_template: false,
            persistence_max_entries: 65_536,
            slow_start: None,
            panic_threshold: 0,
            panic_mode: PanicMode::FailOpen,
            quorum: 1,
            hysteresis: 0,
            all_backups: false,
        }
    }
}

impl PoolConfig {
    fn validate(&self) -> Result<()> {
        if self.quorum == 0 {
            return Err(Error::InvalidConfig {
                setting: "quorum",
                reason: "must be at least 1".into(),
            });
        }
        if self.panic_threshold > 100 {
            return Err(Error::InvalidConfig {
                setting: "panic_threshold",
                reason: format!("{} % is above 100 %", self.panic_threshold),
            });
        }
        if let Some(s) = self.slow_start {
            if s.is_zero() {
                return Err(Error::InvalidConfig {
                    setting: "slowstart",
                    reason: "must be above 0 s (omit it to turn slow start off)".into(),
                });
            }
        }
        Ok(())
    }
}

/// One immutable view of a pool: its backends and the schedulers built over them.
#[derive(Debug)]
pub struct Snapshot<S> {
    backends: BackendSet,
    primary: S,
    backup: S,
    panic: bool,
    quorum: bool,
    generation: u64,
    /// (id, 0 = primary / 1 = backup / 2 = `parked`, index in that list), sorted by id.
    index: Vec<(BackendId, u8, u32)>,
    /// Parked backends (up, not in maintenance, drained or of weight 0) that neither
    /// scheduler keeps a place for: persistence may still send their clients to them.
    parked: Vec<Backend>,
    /// Whether the primary scheduler has a backend it may pick (not only parked ones).
    primary_live: bool,
    /// Whether the primaries were set aside for the backups (quorum lost, or panic with
    /// [`PanicMode::Backups`]): a parked primary then keeps no client either.
    primaries_cleared: bool,
}

impl<S: Scheduler> Snapshot<S> {
    /// Every backend, with the state and effective weight this snapshot was built with.
    pub fn backends(&self) -> &BackendSet {
        &self.backends
    }

    /// The scheduler over primary candidates.
    pub fn primary(&self) -> &S {
        &self.primary
    }

    /// The scheduler over backup candidates.
    pub fn backup(&self) -> &S {
        &self.backup
    }

    /// Whether the panic threshold was crossed when this snapshot was built.
    pub fn in_panic(&self) -> bool {
        self.panic
    }

    /// Whether the primaries had quorum ([`PoolConfig::quorum`]) when this snapshot was
    /// built.
    pub fn has_quorum(&self) -> bool {
        self.quorum
    }

    /// Incremented by every rebuild.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether any backend can take a new connection (ignoring `accept`).
    pub fn has_candidates(&self) -> bool {
        !self.primary.backends().is_empty() || !self.backup.backends().is_empty()
    }

    /// The candidate or parked backend `id`.
    fn candidate_slot(&self, id: BackendId) -> Option<&Backend> {
        let i = self.index.binary_search_by_key(&id, |e| e.0).ok()?;
        let (_, which, idx) = self.index[i];
        let list = match which {
            0 => self.primary.backends(),
            1 => self.backup.backends(),
            _ => &self.parked,
        };
        list.get(idx as usize)
    }

    /// Whether a client whose persistence entry names `b` (a [`candidate_slot`]) may go
    /// back to it: a primary candidate always; a parked primary unless the primaries were
    /// set aside for the backups or `expire_quiescent` ([`PoolConfig::expire_quiescent_template`]);
    /// a backup (parked or not, as for a primary) only while no primary may be picked — a
    /// backup is chosen only when no primary is available, so once primaries return,
    /// clients pinned to a backup go back to them.
    ///
    /// [`candidate_slot`]: Self::candidate_slot
    fn honours(&self, b: &Backend, expire_quiescent: bool) -> bool {
        let parked = is_parked(b);
        if parked && expire_quiescent {
            return false;
        }
        if b.is_backup() {
            !self.primary_live
        } else {
            !(parked && self.primaries_cleared)
        }
    }

    /// Whether a persistence entry to `id` may stay after a rebuild ([`honours`](Self::honours)).
    fn keeps_sticky(&self, id: BackendId, expire_quiescent: bool) -> bool {
        self.candidate_slot(id)
            .is_some_and(|b| self.honours(b, expire_quiescent))
    }

    /// Picks without persistence: primaries first, backups when no primary is accepted.
    /// Time-dependent algorithms (`peak_ewma`) read their state as of the last update; see
    /// [`select_at`](Self::select_at).
    pub fn select(
        &self,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        self.primary
            .select(ctx, accept)
            .or_else(|| self.backup.select(ctx, accept))
    }

    /// As [`select`](Self::select), at time `now` ([`Scheduler::select_at`]: `peak_ewma`
    /// decays its latency estimates to `now`).
    pub fn select_at(
        &self,
        now: Instant,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        self.primary
            .select_at(now, ctx, accept)
            .or_else(|| self.backup.select_at(now, ctx, accept))
    }
}

#[derive(Debug)]
struct PoolState {
    backends: BackendSet,
    /// Slow-start clocks: when each backend last came up.
    up_since: HashMap<BackendId, Instant>,
    /// The `now` of the last rebuild that computed slow-start weights.
    ramp_evaluated: Option<Instant>,
    generation: u64,
    /// The quorum state the next rebuild continues from instead of the current snapshot's
    /// ([`Pool::continue_quorum`]).
    quorum_seed: Option<bool>,
}

/// The live backends of one virtual server and its scheduler. See the [module docs](self).
#[derive(Debug)]
pub struct Pool<B: BuildScheduler = Algorithm> {
    builder: B,
    config: PoolConfig,
    state: Mutex<PoolState>,
    current: ArcSwap<Snapshot<B::Scheduler>>,
    persistence: Option<Arc<PersistenceTable>>,
    /// The slow-start window when it applies to the algorithm
    /// ([`BuildScheduler::slow_start`]).
    ramp: Option<Duration>,
}

impl<B: BuildScheduler> Pool<B> {
    /// A pool over `backends`, scheduled by `builder`.
    ///
    /// # Errors
    /// Configuration errors of `config` or of the algorithm ([`Error::InvalidConfig`],
    /// [`Error::TableSizeNotPrime`], ...). An empty set is not an error: picks return `None`.
    pub fn new(builder: B, backends: BackendSet, config: PoolConfig) -> Result<Self> {
        config.validate()?;
        let persistence = match config.persistence_timeout {
            Some(t) => Some(Arc::new(PersistenceTable::new(
                t,
                config.persistence_max_entries,
            )?)),
            None => None,
        };
        let state = PoolState {
            backends,
            up_since: HashMap::new(),
            ramp_evaluated: None,
            generation: 0,
            quorum_seed: None,
        };
        let ramp = config.slow_start.filter(|_| builder.slow_start());
        let snapshot = build_snapshot(&builder, &config, ramp, &state, None, None, None)?;
        Ok(Self {
            builder,
            config,
            ramp,
            state: Mutex::new(state),
            current: ArcSwap::from_pointee(snapshot),
            persistence,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The current snapshot (cheap; holds it alive while the guard lives).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot<B::Scheduler>>> {
        self.current.load()
    }

    /// Whether the primaries have quorum now ([`PoolConfig::quorum`], keepalived
    /// `quorum`/`hysteresis`): keepalived runs `quorum_up`/`quorum_down` when this changes.
    pub fn has_quorum(&self) -> bool {
        self.current.load().quorum
    }

    /// Continues the quorum state of the pool this one replaces, as keepalived keeps a
    /// virtual server's quorum across a reload: with `had_quorum`, quorum is kept down to
    /// `quorum - hysteresis`; without, it needs `quorum + hysteresis` (which is also where a
    /// new pool starts). Call it before the pool serves.
    ///
    /// # Errors
    /// Those of rebuilding the schedulers ([`Error::InvalidConfig`], …), none for a pool
    /// that was built.
    pub fn continue_quorum(&self, had_quorum: bool) -> Result<()> {
        let mut st = self.lock();
        st.quorum_seed = Some(had_quorum);
        self.rebuild(&mut st, None)
    }

    /// Picks a backend for a new connection or request.
    ///
    /// The client address in `ctx` is masked by `persistence_granularity` first. With
    /// persistence, a client whose entry is live and whose backend is still a candidate
    /// (and accepted) goes back to it — unless that backend is a backup and a primary
    /// accepts the connection: backups serve only while no primary is available, so the
    /// client then moves to the primary (HAProxy `backup`, keepalived `sorry_server`). A
    /// parked backend (drained or of weight 0, still up) keeps its clients this way,
    /// though the scheduler gives it no new one, as HAProxy's drain and IPVS's quiescent
    /// real servers do ([`PoolConfig::expire_quiescent_template`]).
    /// Otherwise the scheduler picks among primaries, then
    /// backups, and the choice is recorded. Returns `None` only when no candidate is
    /// accepted. No allocation; no lock unless persistence is on.
    ///
    /// With persistence, the backend returned carries the client's entry: count the
    /// connection (or request) with [`Backend::connection`] (or [`Backend::request`]) so
    /// the entry stays while it is open ([`PoolConfig::persistence_timeout`]).
    pub fn select(
        &self,
        now: Instant,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<Backend> {
        self.select_in(&self.current.load(), now, ctx, accept)
    }

    /// The backend the client's persistence entry sends it to now, if the entry is live and
    /// names a primary backend that [`select`](Self::select) would send it back to with an
    /// `accept` that takes everything: a candidate, or a parked one (drained or of weight
    /// 0, still up), which takes no new client but keeps its own
    /// ([`PoolConfig::expire_quiescent_template`]). No pick is made and nothing
    /// is recorded; the entry's timeout is refreshed as by a pick. `None` without
    /// persistence or a client. For a caller whose `accept` refuses a backend only for a
    /// while (at its `maxconn`): HAProxy queues such a client for its server rather than
    /// send it — and its persistence entry — elsewhere.
    pub fn persistent_backend(&self, now: Instant, ctx: &SelectContext<'_>) -> Option<BackendId> {
        let table = self.persistence.as_ref()?;
        let Some(client) = ctx.client else {
            table.observe(now);
            return None;
        };
        let key = self.config.persistence_granularity.mask(client).ip();
        let (id, addr, _) = table.lookup(key, now)?;
        let snap = self.current.load();
        let b = snap.candidate_slot(id)?;
        (addr.is_none_or(|a| a == b.addr())
            && !b.is_backup()
            && snap.honours(b, self.config.expire_quiescent_template))
        .then_some(id)
    }

    /// [`select`](Self::select) on `snap`, which may be older than the current snapshot
    /// (a pick that loaded it just before a rebuild): persistence entries name a backend by
    /// id and address, and an entry whose id names another address in `snap` (it was
    /// recorded or renumbered under another snapshot's numbering) is a miss.
    fn select_in(
        &self,
        snap: &Snapshot<B::Scheduler>,
        now: Instant,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<Backend> {
        let mut ctx = *ctx;
        ctx.client = ctx
            .client
            .map(|c| self.config.persistence_granularity.mask(c));
        let sticky_key = match (&self.persistence, ctx.client) {
            (Some(_), Some(c)) => Some(c.ip()),
            _ => None,
        };
        if sticky_key.is_none() {
            // A pick with a client moves the clock in its look-up; this one does so here.
            self.observe(now);
        }
        // The backend returned carries the client's entry, so the guards the caller takes
        // with `Backend::connection`/`request` hold it while they live.
        let sticky = |table: &Arc<PersistenceTable>, key, b: &Backend, generation| {
            let mut b = b.clone();
            b.set_sticky(Sticky {
                table: Arc::clone(table),
                client: key,
                generation,
            });
            b
        };
        if let (Some(table), Some(key)) = (&self.persistence, sticky_key) {
            if let Some((id, addr, generation)) = table.lookup(key, now) {
                let expire_quiescent = self.config.expire_quiescent_template;
                match snap.candidate_slot(id) {
                    // Recorded under another numbering (a `replace` in between): a miss.
                    // The fresh pick below records the client again.
                    Some(b) if addr.is_some_and(|a| a != b.addr()) => {}
                    Some(b) if !b.is_backup() => {
                        if snap.honours(b, expire_quiescent) && accept(b) {
                            return Some(sticky(table, key, b, generation));
                        }
                    }
                    Some(b) => {
                        // A backup is honoured only while no primary takes the connection
                        // (HAProxy `backup`, keepalived `sorry_server`): once a primary is
                        // back, the client moves to it and its entry with it.
                        let honoured = !(expire_quiescent && is_parked(b));
                        let picked = match snap.primary.select_at(now, &ctx, accept) {
                            Some(p) => p,
                            None if honoured && accept(b) => b,
                            None => snap.backup.select_at(now, &ctx, accept)?,
                        };
                        let generation = table.record(key, picked.id(), Some(picked.addr()), now);
                        return Some(sticky(table, key, picked, generation));
                    }
                    None => table.remove(key),
                }
            }
        }
        let picked = snap.select_at(now, &ctx, accept)?;
        if let (Some(table), Some(key)) = (&self.persistence, sticky_key) {
            let generation = table.record(key, picked.id(), Some(picked.addr()), now);
            return Some(sticky(table, key, picked, generation));
        }
        Some(picked.clone())
    }

    /// Moves the persistence table's clock, which stamps the end of a dropped connection,
    /// to `now`: every call given a `now` does ([`PoolConfig::persistence_timeout`]).
    fn observe(&self, now: Instant) {
        if let Some(table) = &self.persistence {
            table.observe(now);
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rebuild(&self, state: &mut PoolState, now: Option<Instant>) -> Result<()> {
        self.publish(state, now, None)
    }

    /// Builds and publishes a snapshot; `renumber` (old id → new id, from
    /// [`replace`](Self::replace)) re-keys persistence entries first, dropping those whose
    /// id is not in it. Nothing changes when the build fails. Picks still on the previous
    /// snapshot may see entries renumbered before the new snapshot is stored (or record
    /// old ids after): entries carry the backend's address, and a pick takes an entry whose
    /// id names another address in its snapshot as a miss ([`select_in`](Self::select_in)).
    fn publish(
        &self,
        state: &mut PoolState,
        now: Option<Instant>,
        renumber: Option<&HashMap<BackendId, BackendId>>,
    ) -> Result<()> {
        state.generation += 1;
        if let Some(now) = now {
            state.ramp_evaluated = Some(now);
            self.observe(now);
        }
        let prev = self.current.load_full();
        let prev_quorum = state.quorum_seed.take().unwrap_or(prev.quorum);
        let snap = build_snapshot(
            &self.builder,
            &self.config,
            self.ramp,
            state,
            Some(&prev),
            Some(prev_quorum),
            now,
        )?;
        if let Some(table) = &self.persistence {
            if let Some(renumber) = renumber {
                table.remap_backends(|id| renumber.get(&id).copied());
            }
            let expire_quiescent = self.config.expire_quiescent_template;
            table.retain_backends(|id| snap.keeps_sticky(id, expire_quiescent));
        }
        self.current.store(Arc::new(snap));
        Ok(())
    }

    /// Applies a health verdict. A backend coming up starts its slow-start window at `now`
    /// ([`PoolConfig::slow_start`]).
    ///
    /// # Errors
    /// [`Error::UnknownBackend`]; errors of the scheduler build.
    pub fn set_health(&self, id: BackendId, health: Health, now: Instant) -> Result<()> {
        self.change(id, now, |b| b.set_health(health))
    }

    /// Changes a backend's admin state (`lbctl backend drain|ready|maint`). A backend
    /// leaving maintenance or drain comes up: its slow-start window starts at `now`, as
    /// HAProxy starts a server's slowstart when it leaves maintenance.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`]; errors of the scheduler build.
    pub fn set_admin(&self, id: BackendId, admin: AdminState, now: Instant) -> Result<()> {
        self.change(id, now, |b| b.set_admin(admin))
    }

    /// Changes a backend's configured weight (0 = inhibit: keep it, send it nothing new).
    /// A weight going from 0 to above 0 brings the backend up: its slow-start window starts
    /// at `now`. During a ramp, the ramp goes on with the new weight (HAProxy
    /// `server_recalc_eweight`).
    ///
    /// # Errors
    /// [`Error::UnknownBackend`]; errors of the scheduler build.
    pub fn set_weight(&self, id: BackendId, weight: Weight, now: Instant) -> Result<()> {
        self.change(id, now, |b| b.set_weight(weight))
    }

    /// Sets a backend's health and configured weight together, in one rebuild: no snapshot
    /// ever shows the new health with the old weight or the reverse (for example, keepalived
    /// `inhibit_on_failure` keeping a failed backend up at weight 0 never publishes it up at
    /// its old weight in between). Health checkers should prefer this to separate
    /// [`set_health`](Self::set_health) and [`set_weight`](Self::set_weight) calls.
    ///
    /// A check passing again, or an inhibited backend getting its weight back, brings the
    /// backend up and starts its slow-start window at `now` ([`PoolConfig::slow_start`]).
    /// Effective weights are evaluated at `now`.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`]; errors of the scheduler build.
    pub fn set_state(
        &self,
        id: BackendId,
        health: Health,
        weight: Weight,
        now: Instant,
    ) -> Result<()> {
        self.change(id, now, |b| {
            b.set_health(health);
            b.set_weight(weight);
        })
    }

    /// Applies `f` to backend `id` and rebuilds at `now` if anything changed. A backend
    /// *comes up* when it goes from out of service to in service (up, ready, weight above
    /// 0): that starts its slow-start clock, and leaving service stops it. A backend that
    /// cannot take connections (weight 0, say) gets no clock: nothing would ramp.
    fn change(&self, id: BackendId, now: Instant, f: impl FnOnce(&mut Backend)) -> Result<()> {
        // Given `now` even when nothing changes (a health checker's every verdict).
        self.observe(now);
        let mut st = self.lock();
        let b = st.backends.get_mut(id)?;
        let before = (b.health(), b.admin(), b.weight());
        let was = in_service(b);
        f(b);
        if (b.health(), b.admin(), b.weight()) == before {
            return Ok(());
        }
        let is = in_service(b);
        if !is {
            st.up_since.remove(&id);
        } else if !was && self.ramp.is_some() {
            st.up_since.insert(id, now);
        }
        self.rebuild(&mut st, Some(now))
    }

    /// Replaces the membership at `now`. Backends are matched by address, not id (ids are
    /// whatever the caller numbers them by — a configuration index shifts when an earlier
    /// backend is removed): a backend whose address was already in the pool keeps its
    /// counters, health, slow-start clock and its clients' persistence entries, under its
    /// new id if it has one; the weight, admin state and backup flag are the new set's, and
    /// apply as [`set_weight`](Self::set_weight) / [`set_admin`](Self::set_admin) would: a
    /// weight of 0 keeps the last non-zero weight (a parked backend keeps its place in the
    /// hash tables), and a backend the new settings bring into service (weight 0 → above 0,
    /// maintenance or drain → ready) starts its slow-start window at `now`. Entries to an
    /// address that left are dropped. New addresses take the state they were given, and one
    /// in service starts its slow-start window at `now`, as Envoy ramps newly added
    /// endpoints (a `wlc` pool would otherwise send it every new connection until it caught
    /// up). A pool's first membership, given to [`new`](Self::new), does not ramp (HAProxy:
    /// slow start never applies when it starts).
    ///
    /// # Errors
    /// Errors of the scheduler build; the old membership then stays.
    pub fn replace(&self, backends: BackendSet, now: Instant) -> Result<()> {
        let mut st = self.lock();
        let mut merged = Vec::with_capacity(backends.len());
        // Old id → new id of the same address.
        let mut renumber: HashMap<BackendId, BackendId> = HashMap::new();
        let mut up_since: HashMap<BackendId, Instant> = HashMap::new();
        for b in backends.iter() {
            match st.backends.iter().find(|o| o.addr() == b.addr()) {
                Some(old) => {
                    renumber.insert(old.id(), b.id());
                    let mut kept = Backend::with_stats(b.id(), b.addr(), Arc::clone(old.stats()))
                        .with_weight(old.last_weight())
                        .with_admin(b.admin())
                        .with_health(old.health())
                        .with_backup(b.is_backup());
                    // As a weight change: weight 0 keeps the last non-zero weight.
                    kept.set_weight(b.weight());
                    if in_service(&kept) {
                        if let Some(&since) = st.up_since.get(&old.id()) {
                            up_since.insert(b.id(), since);
                        } else if !in_service(old) && self.ramp.is_some() {
                            up_since.insert(b.id(), now);
                        }
                    }
                    merged.push(kept);
                }
                None => {
                    if in_service(b) && self.ramp.is_some() {
                        up_since.insert(b.id(), now);
                    }
                    merged.push(b.clone());
                }
            }
        }
        let old = std::mem::replace(&mut st.backends, BackendSet::new(merged)?);
        let old_up = std::mem::replace(&mut st.up_since, up_since);
        let old_evaluated = st.ramp_evaluated;
        if let Err(e) = self.publish(&mut st, Some(now), Some(&renumber)) {
            st.backends = old;
            st.up_since = old_up;
            st.ramp_evaluated = old_evaluated;
            return Err(e);
        }
        Ok(())
    }

    /// Drops the persistence entries that name backend `id`, so its clients are scheduled
    /// afresh on their next connection (connections open on it go on). IPVS's
    /// `expire_quiescent_template` for one backend: for one kept up at weight 0 because it
    /// failed (keepalived `inhibit_on_failure`), where a client's entry would otherwise
    /// keep sending it there ([`PoolConfig::expire_quiescent_template`]). Without
    /// persistence, or for an unknown id, nothing happens.
    pub fn expire_persistence(&self, id: BackendId) {
        if let Some(table) = &self.persistence {
            table.retain_backends(|b| b != id);
        }
    }

    /// Its persistence entries live at `now`, each naming its backend by address, for
    /// [`Pool::restore_persistence`] on another pool (a reload's replacement of the virtual
    /// server, as IPVS keeps a kept service's persistence templates through a keepalived
    /// reload). Empty without persistence.
    pub fn persistence_entries(&self, now: Instant) -> Vec<PersistedClient> {
        let Some(table) = &self.persistence else {
            return Vec::new();
        };
        let backends = self.backends();
        table
            .export(now)
            .into_iter()
            .filter_map(|e| {
                let backend = e
                    .addr
                    .or_else(|| backends.get(e.backend).map(Backend::addr))?;
                Some(PersistedClient {
                    client: e.client,
                    backend,
                    remaining: e.remaining,
                })
            })
            .collect()
    }

    /// Takes over `entries` from another pool ([`Pool::persistence_entries`]): each client
    /// whose backend (by address) is in this pool and who has no live entry here is sent
    /// there until its entry expires — the time it had left, at most this pool's
    /// `persistence_timeout`. Entries keyed with another `persistence_granularity` are
    /// taken as they are: carry them only between pools of the same granularity. Returns
    /// how many were taken; 0 without persistence.
    pub fn restore_persistence(&self, entries: &[PersistedClient], now: Instant) -> usize {
        let Some(table) = &self.persistence else {
            return 0;
        };
        table.observe(now);
        let backends = self.backends();
        entries
            .iter()
            .filter(|e| {
                backends
                    .iter()
                    .find(|b| b.addr() == e.backend)
                    .is_some_and(|b| {
                        table.restore(e.client, b.id(), Some(b.addr()), e.remaining, now)
                    })
            })
            .count()
    }

    /// Every backend as the pool sees it now.
    pub fn backends(&self) -> BackendSet {
        self.lock().backends.clone()
    }

    /// When slow-start weights next change, if any backend is ramping.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let window = self.ramp?;
        let step = slow_start_step(window);
        let st = self.lock();
        let evaluated = st.ramp_evaluated?;
        // Checked arithmetic: a window too long for `Instant` ends "never" (no wake-up)
        // rather than panicking.
        st.up_since
            .values()
            .filter_map(|&since| {
                let end = since.checked_add(window)?;
                let reached =
                    evaluated.saturating_duration_since(since).as_nanos() / step.as_nanos();
                let next = u32::try_from(reached + 1)
                    .ok()
                    .and_then(|n| step.checked_mul(n))
                    .and_then(|d| since.checked_add(d))
                    .map_or(end, |next| next.min(end));
                Some(next)
            })
            .min()
    }

    /// Recomputes slow-start weights at `now` (idempotent; spurious calls are harmless).
    ///
    /// # Errors
    /// Errors of the scheduler build.
    pub fn handle_timeout(&self, now: Instant) -> Result<()> {
        self.observe(now);
        let Some(window) = self.ramp else {
            return Ok(());
        };
        let mut st = self.lock();
        st.up_since
            .retain(|_, since| now.saturating_duration_since(*since) < window);
        self.rebuild(&mut st, Some(now))
    }
}

/// Slow start moves in steps of a twentieth of the window, at least 1 s apart: HAProxy's
/// warmup task runs every `MAX(1000, slowstart / 20)` ms.
fn slow_start_step(window: Duration) -> Duration {
    (window / 20).max(Duration::from_secs(1))
}

/// Effective weight during slow start: `weight × elapsed / window`, `elapsed` counted in
/// whole steps, rounded up, at least 1 (HAProxy `server_recalc_eweight` computes
/// `(uweight × w + wmult − 1) / wmult`, rounding up).
fn ramped(weight: Weight, since: Instant, now: Instant, window: Duration) -> Weight {
    let step = slow_start_step(window).as_nanos();
    let elapsed = now.saturating_duration_since(since);
    if elapsed >= window || weight.is_zero() {
        return weight;
    }
    let reached = elapsed.as_nanos() / step * step;
    // `reached < window`, so this is below `weight`.
    let w = (u128::from(weight.get()) * reached).div_ceil(window.as_nanos());
    Weight::new(u64::try_from(w).unwrap_or(u64::MAX).max(1)).unwrap_or(weight)
}

/// In service: up, ready and a configured weight above 0 (what slow start ramps from).
fn in_service(b: &Backend) -> bool {
    b.health() == Health::Up && b.admin() == AdminState::Ready && !b.weight().is_zero()
}

/// Up and not in maintenance, but taking no new connection: weight 0 (keepalived
/// `inhibit_on_failure`) or drained, with a weight (or last weight) to keep a place with.
fn is_parked(b: &Backend) -> bool {
    b.health() == Health::Up
        && b.admin() != AdminState::Maint
        && !b.is_eligible()
        && !(b.weight().is_zero() && b.last_weight().is_zero())
}

/// `prev_quorum`: the quorum state to continue from (`None` at start: no quorum yet).
fn build_snapshot<B: BuildScheduler>(
    builder: &B,
    config: &PoolConfig,
    window: Option<Duration>,
    state: &PoolState,
    prev: Option<&Snapshot<B::Scheduler>>,
    prev_quorum: Option<bool>,
    now: Option<Instant>,
) -> Result<Snapshot<B::Scheduler>> {
    // Effective weights (slow start), from each ramping backend's clock at `now`, or, for
    // a change that brings no time (`continue_quorum`), at the last time the ramp was evaluated:
    // the ramp follows the backend (its clock is keyed by its current id) and its current
    // weight, never a stale snapshot's value.
    let mut all: Vec<Backend> = state.backends.iter().cloned().collect();
    if let (Some(window), Some(at)) = (window, now.or(state.ramp_evaluated)) {
        for b in &mut all {
            if let Some(&since) = state.up_since.get(&b.id()) {
                b.set_effective_weight(ramped(b.weight(), since, at, window));
            }
        }
    }
    let primaries: Vec<&Backend> = all.iter().filter(|b| !b.is_backup()).collect();
    // Parked backends (up, not in maintenance, but weight 0 or drained) keep their place in
    // the tables of algorithms that ask for them ([`BuildScheduler::keeps_parked`]), in
    // configuration order among the candidates; they are never picked.
    let keeps_parked = builder.keeps_parked();
    let parked = |b: &Backend| keeps_parked && is_parked(b);
    let primary_eligible = primaries.iter().filter(|b| b.is_eligible()).count();
    let mut primary: Vec<Backend> = primaries
        .iter()
        .filter(|b| b.is_eligible() || parked(b))
        .map(|b| (*b).clone())
        .collect();
    let backup_eligible = all
        .iter()
        .filter(|b| b.is_backup() && b.is_eligible())
        .count();
    // HAProxy without `allbackups`: the first eligible backup only.
    let first_backup = all
        .iter()
        .find(|b| b.is_backup() && b.is_eligible())
        .map(|b| b.id());
    let mut backup: Vec<Backend> = all
        .iter()
        .filter(|b| {
            b.is_backup()
                && ((b.is_eligible() && (config.all_backups || Some(b.id()) == first_backup))
                    || parked(b))
        })
        .cloned()
        .collect();
    let in_service = primaries
        .iter()
        .filter(|b| b.admin() != AdminState::Maint)
        .count();
    // keepalived's quorum: the configured weights of the primaries that can take
    // connections, against `quorum`, with `hysteresis` around it. A pool starts without
    // quorum and gains it at `quorum + hysteresis`, as keepalived's virtual servers do
    // (`set_quorum_states` before the real servers are alive, then `update_quorum_state`
    // at init): a weight between `quorum` and `quorum + hysteresis` at start is no quorum.
    let online: u64 = primaries
        .iter()
        .filter(|b| b.admin() == AdminState::Ready && b.health() == Health::Up)
        .map(|b| u64::from(b.weight().get()))
        .sum();
    let quorum = match prev_quorum {
        Some(true) => online > 0 && online >= config.quorum.saturating_sub(config.hysteresis),
        Some(false) | None => {
            online > 0 && online >= config.quorum.saturating_add(config.hysteresis)
        }
    };

    let mut primaries_cleared = false;
    let panic = config.panic_threshold > 0
        && in_service > 0
        && primary_eligible * 100 < usize::from(config.panic_threshold) * in_service;
    if panic {
        match config.panic_mode {
            // Healthy backups are the spare capacity Envoy spills to (its next priority
            // level) before routing to unhealthy hosts: they share the traffic with the
            // healthy primaries, and no connection goes to a down one. (Without quorum
            // the backups take everything, below.)
            PanicMode::FailOpen if backup_eligible > 0 && quorum => {
                primary.append(&mut backup);
            }
            PanicMode::FailOpen => {
                primary = primaries
                    .iter()
                    .filter(|b| {
                        (b.admin() == AdminState::Ready && !b.effective_weight().is_zero())
                            || parked(b)
                    })
                    .map(|b| (*b).clone())
                    .collect();
            }
            PanicMode::Backups if backup_eligible > 0 => {
                primary.clear();
                primaries_cleared = true;
            }
            PanicMode::Backups => {}
        }
    }
    if !quorum && backup_eligible > 0 {
        // keepalived: the sorry server takes over and the primaries still up are removed.
        primary.clear();
        primaries_cleared = true;
    }
    let primary_s = builder.build(&primary, prev.map(|p| &p.primary))?;
    let backup_s = builder.build(&backup, prev.map(|p| &p.backup))?;
    let mut index: Vec<(BackendId, u8, u32)> = primary_s
        .backends()
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id(), 0, i as u32))
        .chain(
            backup_s
                .backends()
                .iter()
                .enumerate()
                .map(|(i, b)| (b.id(), 1, i as u32)),
        )
        .collect();
    // Parked backends no scheduler keeps: persistence may still send clients there.
    index.sort_unstable_by_key(|e| e.0);
    let parked: Vec<Backend> = all
        .iter()
        .filter(|b| is_parked(b) && index.binary_search_by_key(&b.id(), |e| e.0).is_err())
        .cloned()
        .collect();
    if !parked.is_empty() {
        index.extend(
            parked
                .iter()
                .enumerate()
                .map(|(i, b)| (b.id(), 2, i as u32)),
        );
        index.sort_unstable_by_key(|e| e.0);
    }
    let primary_live = primary_s.backends().iter().any(|b| !is_parked(b));
    Ok(Snapshot {
        backends: BackendSet::new(all)?,
        primary: primary_s,
        backup: backup_s,
        panic,
        quorum,
        generation: state.generation,
        index,
        parked,
        primary_live,
        primaries_cleared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn set(n: u32) -> BackendSet {
        BackendSet::new(
            (1..=n)
                .map(|i| {
                    Backend::new(BackendId(i), format!("127.0.0.{i}:80").parse().unwrap())
                        .with_weight(Weight::new(10).unwrap())
                })
                .collect(),
        )
        .unwrap()
    }

    fn pick(p: &Pool, now: Instant, ctx: &SelectContext<'_>) -> u32 {
        p.select(now, ctx, &mut |_| true).unwrap().id().0
    }

    /// The backends `n` spread-out clients (one source address each, 10.0.0.0/8) get.
    fn client_picks(p: &Pool, now: Instant, n: u32) -> Vec<u32> {
        (0..n)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i * 7919);
                let c = SelectContext {
                    client: Some(SocketAddr::new(ip.into(), 1)),
                    destination: Some(SocketAddr::new(ip.into(), 80)),
                    hash_key: None,
                };
                pick(p, now, &c)
            })
            .collect()
    }

    /// Round robin over `primaries` and a sorry server, backup 9, with keepalived `quorum`
    /// and `hysteresis`.
    fn with_sorry(primaries: Vec<Backend>, quorum: u64, hysteresis: u64) -> Pool {
        let mut backends = primaries;
        backends
            .push(Backend::new(BackendId(9), "127.0.0.9:80".parse().unwrap()).with_backup(true));
        Pool::new(
            Algorithm::RoundRobin,
            BackendSet::new(backends).unwrap(),
            PoolConfig {
                quorum,
                hysteresis,
                ..PoolConfig::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn persistence_sticks_and_drops_on_down() {
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::RoundRobin, set(3), cfg).unwrap();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let first = pick(&p, now, &c);
        for _ in 0..5 {
            assert_eq!(pick(&p, now, &c), first);
        }
        p.set_health(BackendId(first), Health::Down, now).unwrap();
        let second = pick(&p, now, &c);
        assert_ne!(second, first);
        p.set_health(BackendId(first), Health::Up, now).unwrap();
        assert_eq!(
            pick(&p, now, &c),
            second,
            "entry to a surviving backend is kept"
        );
        // After the timeout the client is scheduled afresh.
        let later = now + Duration::from_secs(301);
        let _ = pick(&p, later, &c);
    }

    /// A pool that replaces another (a reload adding a backend renumbers them) takes its
    /// persistence entries over by address, with the time they had left: each client stays
    /// on its backend, as IPVS's templates outlive a keepalived reload; a client with an
    /// entry of its own here keeps it, and one whose backend is gone is scheduled afresh.
    #[test]
    fn persistence_entries_carry_to_a_replacing_pool_by_address() {
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let old = Pool::new(Algorithm::RoundRobin, set(3), cfg.clone()).unwrap();
        let now = t0();
        let clients: Vec<SelectContext<'_>> = (1..=30)
            .map(|i| SelectContext::client(SocketAddr::new([198, 51, 100, i].into(), 1000)))
            .collect();
        let before: Vec<u32> = clients.iter().map(|c| pick(&old, now, c)).collect();
        // The replacement: a new backend first, so every old one is renumbered (+1).
        let mut backends = vec![Backend::new(BackendId(1), "127.0.0.9:80".parse().unwrap())
            .with_weight(Weight::new(10).unwrap())];
        backends.extend(set(3).iter().map(|b| {
            Backend::new(BackendId(b.id().0 + 1), b.addr()).with_weight(Weight::new(10).unwrap())
        }));
        let new = Pool::new(
            Algorithm::RoundRobin,
            BackendSet::new(backends).unwrap(),
            cfg,
        )
        .unwrap();
        let later = now + Duration::from_secs(100);
        let entries = old.persistence_entries(later);
        assert_eq!(entries.len(), 30);
        assert!(entries
            .iter()
            .all(|e| e.remaining == Some(Duration::from_secs(200))));
        assert_eq!(new.restore_persistence(&entries, later), 30);
        let after: Vec<u32> = clients.iter().map(|c| pick(&new, later, c) - 1).collect();
        assert_eq!(after, before, "every client on its backend");
        // Taken again: nothing new (each client has its live entry).
        assert_eq!(new.restore_persistence(&entries, later), 0);
        // A carried entry lasts the time it had left (5 s here), no fresh timeout.
        let fresh = SelectContext::client("203.0.113.1:1".parse().unwrap());
        assert_eq!(
            new.restore_persistence(
                &[PersistedClient {
                    client: "203.0.113.1".parse().unwrap(),
                    backend: "127.0.0.2:80".parse().unwrap(),
                    remaining: Some(Duration::from_secs(5)),
                }],
                later
            ),
            1
        );
        assert_eq!(pick(&new, later + Duration::from_secs(4), &fresh), 3);
        // A backend the new pool lacks: not taken.
        assert_eq!(
            new.restore_persistence(
                &[PersistedClient {
                    client: "203.0.113.2".parse().unwrap(),
                    backend: "127.0.0.77:80".parse().unwrap(),
                    remaining: None,
                }],
                later
            ),
            0
        );
    }

    /// A drained or weight-0 backend (parked, still up) keeps the clients whose entry names
    /// it and gets no new one (HAProxy's drain and `weight 0`: "still accepts persistent
    /// connections"; IPVS's quiescent real server with `expire_quiescent_template` 0), for
    /// algorithms with and without a table place for parked backends. Entries used to be
    /// dropped on drain for `rr`, `wrr`, ... and kept for `sh`, `dh`, `mh`.
    #[test]
    fn a_parked_backend_keeps_its_persistent_clients() {
        for algo in ["rr", "wlc", "mh"] {
            for park in ["drain", "weight 0"] {
                let cfg = PoolConfig {
                    persistence_timeout: Some(Duration::from_secs(300)),
                    ..PoolConfig::default()
                };
                let p = Pool::new(algo.parse::<Algorithm>().unwrap(), set(3), cfg).unwrap();
                let now = t0();
                let clients: Vec<SelectContext<'_>> = (0..30u8)
                    .map(|i| SelectContext::client(SocketAddr::new([198, 51, 100, i].into(), 1)))
                    .collect();
                let first: Vec<u32> = clients.iter().map(|c| pick(&p, now, c)).collect();
                let parked = first[0];
                let on_parked = first.iter().filter(|&&b| b == parked).count();
                match park {
                    "drain" => p
                        .set_admin(BackendId(parked), AdminState::Drain, now)
                        .unwrap(),
                    _ => p.set_weight(BackendId(parked), Weight::ZERO, now).unwrap(),
                }
                let again: Vec<u32> = clients.iter().map(|c| pick(&p, now, c)).collect();
                assert_eq!(again, first, "{algo} {park}: every client stays");
                for i in 0..30u8 {
                    let new = SelectContext::client(SocketAddr::new([203, 0, 113, i].into(), 1));
                    assert_ne!(pick(&p, now, &new), parked, "{algo} {park}: no new client");
                }
                assert!(on_parked >= 1);
                // Maintenance drops them: they move.
                p.set_admin(BackendId(parked), AdminState::Maint, now)
                    .unwrap();
                assert!(
                    clients.iter().all(|c| pick(&p, now, c) != parked),
                    "{algo} {park}"
                );
            }
        }
    }

    /// `expire_quiescent_template` (IPVS's sysctl): parking a backend moves its clients.
    /// `Pool::expire_persistence` does so for one backend whatever the setting.
    #[test]
    fn expire_quiescent_template_moves_a_parked_backends_clients() {
        for expire in [true, false] {
            let cfg = PoolConfig {
                persistence_timeout: Some(Duration::from_secs(300)),
                expire_quiescent_template: expire,
                ..PoolConfig::default()
            };
            let p = Pool::new(Algorithm::RoundRobin, set(3), cfg).unwrap();
            let now = t0();
            let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
            let first = pick(&p, now, &c);
            p.set_weight(BackendId(first), Weight::ZERO, now).unwrap();
            if expire {
                assert_ne!(pick(&p, now, &c), first);
            } else {
                assert_eq!(pick(&p, now, &c), first);
                p.expire_persistence(BackendId(first));
                let moved = pick(&p, now, &c);
                assert_ne!(moved, first, "entry dropped");
                // The new entry is kept: only the named backend's entries went.
                p.expire_persistence(BackendId(first));
                assert_eq!(pick(&p, now, &c), moved);
            }
        }
    }

    /// A parked primary keeps no client while the sorry server has taken over (quorum
    /// lost): its clients go to the backups as everyone else's.
    #[test]
    fn a_parked_primary_keeps_no_client_without_quorum() {
        let mut backends: Vec<Backend> = set(3).iter().cloned().collect();
        backends
            .push(Backend::new(BackendId(9), "127.0.0.9:80".parse().unwrap()).with_backup(true));
        let p = Pool::new(
            Algorithm::RoundRobin,
            BackendSet::new(backends).unwrap(),
            PoolConfig {
                quorum: 15,
                persistence_timeout: Some(Duration::from_secs(300)),
                ..PoolConfig::default()
            },
        )
        .unwrap();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let first = pick(&p, now, &c);
        assert_ne!(first, 9);
        p.set_admin(BackendId(first), AdminState::Drain, now)
            .unwrap();
        assert!(p.has_quorum(), "20 ≥ 15");
        assert_eq!(pick(&p, now, &c), first, "drained, the client stays");
        let other = if first == 1 { 2 } else { 1 };
        p.set_health(BackendId(other), Health::Down, now).unwrap();
        assert!(!p.has_quorum());
        assert_eq!(pick(&p, now, &c), 9, "sorry server, not the parked primary");
    }

    /// An entry does not expire while the client has a connection open on its backend (IPVS
    /// keeps a persistence template while `n_control` is not 0, `ip_vs_conn_expire`), and
    /// its timeout counts from that connection's end. It used to expire 300 s after the
    /// pick, moving a client with a long-lived connection (FTP control, websocket).
    #[test]
    fn persistence_holds_while_a_connection_is_open() {
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::RoundRobin, set(2), cfg).unwrap();
        let t0 = t0();
        let at = |s| t0 + Duration::from_secs(s);
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let first = p.select(t0, &c, &mut |_| true).unwrap();
        let conn = first.connection();
        // Other clients move round robin on.
        for i in 0..3 {
            let other = SelectContext::client(SocketAddr::new([203, 0, 113, i].into(), 1));
            let _ = pick(&p, t0, &other);
        }
        assert_eq!(pick(&p, at(301), &c), first.id().0, "open: kept past 300 s");
        assert_eq!(pick(&p, at(2000), &c), first.id().0);
        // Other traffic at 2500 s, then the connection ends: 300 s from there.
        let _ = pick(
            &p,
            at(2500),
            &SelectContext::client("203.0.113.9:1".parse().unwrap()),
        );
        drop(conn);
        assert_eq!(
            pick(&p, at(2799), &c),
            first.id().0,
            "within 300 s of the end"
        );
        // A guard finished at a known time counts from it.
        let again = p.select(at(2799), &c, &mut |_| true).unwrap();
        again.request().finish(at(4000));
        assert_eq!(pick(&p, at(4299), &c), first.id().0);
    }

    /// A dropped connection ends at the latest `now` the pool was given, whichever call
    /// gave it. Three calls took `now` without moving the clock that stamps the end: a
    /// `handle_timeout` without slow start, a state change that changed nothing (a health
    /// checker's every verdict), and a pick without a client. A client whose connection
    /// lasted 100 s then lost its entry 60 s after its pick rather than 60 s after the
    /// connection's end (found by `tests/pool_model.rs`).
    #[test]
    fn a_dropped_connection_ends_at_the_latest_now_given() {
        /// Gives the pool `at(100)` with `give` while a connection is open, then drops it.
        fn check(name: &str, give: impl Fn(&Pool, Instant)) {
            let cfg = PoolConfig {
                persistence_timeout: Some(Duration::from_secs(60)),
                ..PoolConfig::default()
            };
            let p = Pool::new(Algorithm::RoundRobin, set(2), cfg).unwrap();
            let t0 = t0();
            let at = |s| t0 + Duration::from_secs(s);
            let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
            let conn = p.select(t0, &c, &mut |_| true).unwrap().connection();
            give(&p, at(100));
            drop(conn);
            let entries = p.persistence_entries(at(150));
            assert_eq!(entries.len(), 1, "{name}: ended at 100 s, kept until 160 s");
            assert_eq!(
                entries[0].remaining,
                Some(Duration::from_secs(10)),
                "{name}"
            );
        }
        check("handle_timeout", |p, now| p.handle_timeout(now).unwrap());
        check("unchanged health", |p, now| {
            p.set_health(BackendId(2), Health::Up, now).unwrap();
        });
        check("a pick without a client", |p, now| {
            p.select(now, &SelectContext::default(), &mut |_| true)
                .unwrap();
        });
    }

    /// keepalived `quorum` 25 with `hysteresis` 5 over three primaries of weight 10 and a
    /// sorry server: quorum is lost below 20 and regained at 30; without quorum the sorry
    /// server takes every connection although a primary is still up.
    #[test]
    fn quorum_with_hysteresis_hands_over_to_the_sorry_server() {
        let p = with_sorry(set(3).iter().cloned().collect(), 25, 5);
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        assert!(p.has_quorum(), "30 >= 25 at start");
        p.set_health(BackendId(1), Health::Down, now).unwrap();
        assert!(p.has_quorum(), "20 is not below 25 - 5");
        assert_ne!(pick(&p, now, &c), 9);
        p.set_health(BackendId(2), Health::Down, now).unwrap();
        assert!(!p.has_quorum(), "10 < 20");
        for _ in 0..4 {
            assert_eq!(pick(&p, now, &c), 9, "the sorry server takes over");
        }
        p.set_health(BackendId(2), Health::Up, now).unwrap();
        assert!(!p.has_quorum(), "20 is below 25 + 5: still no quorum");
        assert_eq!(pick(&p, now, &c), 9);
        p.set_health(BackendId(1), Health::Up, now).unwrap();
        assert!(p.has_quorum(), "30 >= 30");
        for _ in 0..4 {
            assert_ne!(pick(&p, now, &c), 9);
        }
        // Without a sorry server, losing quorum changes nothing for the traffic.
        let p = Pool::new(
            Algorithm::RoundRobin,
            set(3),
            PoolConfig {
                quorum: 25,
                ..PoolConfig::default()
            },
        )
        .unwrap();
        p.set_health(BackendId(1), Health::Down, now).unwrap();
        p.set_health(BackendId(2), Health::Down, now).unwrap();
        assert!(!p.has_quorum());
        assert_eq!(pick(&p, now, &c), 3);
        // At start, below the quorum: no quorum; a zero quorum is refused.
        let p = Pool::new(
            Algorithm::RoundRobin,
            set(1),
            PoolConfig {
                quorum: 11,
                ..PoolConfig::default()
            },
        )
        .unwrap();
        assert!(!p.has_quorum());
        assert!(Pool::new(
            Algorithm::RoundRobin,
            set(1),
            PoolConfig {
                quorum: 0,
                ..PoolConfig::default()
            }
        )
        .is_err());
    }

    /// keepalived starts a virtual server without quorum and gains it at `quorum +
    /// hysteresis`: two primaries of weight 10 with quorum 20 and hysteresis 5 (20 is
    /// between 15 and 25) start with the sorry server serving, and gain quorum only when a
    /// third primary brings 30. It used to start with quorum (`20 >= 20`), which keepalived
    /// would only keep, not reach.
    #[test]
    fn quorum_at_start_needs_quorum_plus_hysteresis() {
        let p = with_sorry(set(3).iter().cloned().collect(), 20, 5);
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        assert!(p.has_quorum(), "30 >= 25 at start");
        p.set_health(BackendId(3), Health::Down, now).unwrap();
        assert!(p.has_quorum(), "20 is not below 15: kept");

        let backends: Vec<Backend> = set(3)
            .iter()
            .map(|b| {
                let down = b.id() == BackendId(3);
                b.clone()
                    .with_health(if down { Health::Down } else { Health::Up })
            })
            .collect();
        let p = with_sorry(backends, 20, 5);
        assert!(!p.has_quorum(), "20 < 25 at start: no quorum");
        assert_eq!(pick(&p, now, &c), 9, "the sorry server serves");
        p.set_health(BackendId(3), Health::Up, now).unwrap();
        assert!(p.has_quorum(), "30 >= 25");
        assert_ne!(pick(&p, now, &c), 9);
    }

    /// A pool replacing another (a reload) continues its quorum state: two primaries of
    /// weight 10 (20) with quorum 20 and hysteresis 5 keep quorum when the old pool had it,
    /// and stay without when it had not, where a new pool starts without.
    #[test]
    fn continued_quorum_keeps_the_replaced_pools_state() {
        let pool = || with_sorry(set(2).iter().cloned().collect(), 20, 5);
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let fresh = pool();
        assert!(!fresh.has_quorum(), "20 < 25 at start");
        let kept = pool();
        kept.continue_quorum(true).unwrap();
        assert!(kept.has_quorum(), "20 >= 15 once held");
        assert_ne!(pick(&kept, now, &c), 9);
        // The continued state goes on like any other: below 15 it is lost.
        kept.set_health(BackendId(1), Health::Down, now).unwrap();
        assert!(!kept.has_quorum());
        let lost = pool();
        lost.continue_quorum(false).unwrap();
        assert!(!lost.has_quorum());
        assert_eq!(pick(&lost, now, &c), 9);
    }

    /// Primaries 1 and 2, backup 9, with persistence.
    /// With several backups, HAProxy sends everything to the first eligible one (the next
    /// taking over when it fails) unless `option allbackups` spreads over all; the pool
    /// always spread.
    #[test]
    fn first_backup_unless_all_backups() {
        let now = t0();
        let mk = |all_backups: bool| {
            let mut backends: Vec<Backend> = set(1).iter().cloned().collect();
            for id in [8, 9] {
                backends.push(
                    Backend::new(BackendId(id), format!("127.0.0.{id}:80").parse().unwrap())
                        .with_backup(true),
                );
            }
            let cfg = PoolConfig {
                all_backups,
                ..PoolConfig::default()
            };
            let p = Pool::new(
                Algorithm::RoundRobin,
                BackendSet::new(backends).unwrap(),
                cfg,
            )
            .unwrap();
            p.set_health(BackendId(1), Health::Down, now).unwrap();
            p
        };
        let picks = |p: &Pool| -> Vec<u32> {
            (0..4)
                .map(|_| pick(p, now, &SelectContext::default()))
                .collect()
        };
        let first = mk(false);
        assert_eq!(picks(&first), [8, 8, 8, 8]);
        first.set_health(BackendId(8), Health::Down, now).unwrap();
        assert_eq!(picks(&first), [9, 9, 9, 9]);
        let all = mk(true);
        let mut got = picks(&all);
        got.sort_unstable();
        assert_eq!(got, [8, 8, 9, 9]);
    }

    fn sticky_pool_with_backup() -> Pool {
        let mut backends: Vec<Backend> = set(2).iter().cloned().collect();
        backends.push(
            Backend::new(BackendId(9), "127.0.0.9:80".parse().unwrap())
                .with_weight(Weight::new(10).unwrap())
                .with_backup(true),
        );
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        Pool::new(
            Algorithm::RoundRobin,
            BackendSet::new(backends).unwrap(),
            cfg,
        )
        .unwrap()
    }

    /// A client pinned to the backup while the primaries were down goes back to a primary
    /// as soon as one returns, even though its entry is refreshed by every connection.
    #[test]
    fn persistence_leaves_the_backup_when_a_primary_returns() {
        let p = sticky_pool_with_backup();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        p.set_health(BackendId(1), Health::Down, now).unwrap();
        p.set_health(BackendId(2), Health::Down, now).unwrap();
        assert_eq!(pick(&p, now, &c), 9);
        assert_eq!(pick(&p, now, &c), 9, "sticks to the backup while needed");
        p.set_health(BackendId(2), Health::Up, now).unwrap();
        for i in 0..5 {
            let later = now + Duration::from_secs(i);
            assert_eq!(pick(&p, later, &c), 2, "pick {i}: back on the primary");
        }
    }

    /// The same when the entry survives the rebuild (the primary was refused by `accept`
    /// rather than down): the sticky backup is honoured only while no primary accepts.
    #[test]
    fn sticky_backup_is_used_only_while_no_primary_accepts() {
        let p = sticky_pool_with_backup();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let mut only_backup = |b: &Backend| b.is_backup();
        assert_eq!(p.select(now, &c, &mut only_backup).unwrap().id().0, 9);
        assert_eq!(p.select(now, &c, &mut only_backup).unwrap().id().0, 9);
        let first = pick(&p, now, &c);
        assert_ne!(
            first, 9,
            "a primary accepts: the backup entry is not honoured"
        );
        assert_eq!(pick(&p, now, &c), first, "and the client now sticks to it");
    }

    #[test]
    fn granularity_groups_clients() {
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            persistence_granularity: Granularity::parse("255.255.255.0").unwrap(),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::RoundRobin, set(3), cfg).unwrap();
        let now = t0();
        let a = pick(
            &p,
            now,
            &SelectContext::client("198.51.100.1:1".parse().unwrap()),
        );
        let b = pick(
            &p,
            now,
            &SelectContext::client("198.51.100.200:2".parse().unwrap()),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn slow_start_ramps_weight() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(10)),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg).unwrap();
        let now = t0();
        p.set_health(BackendId(1), Health::Down, now).unwrap();
        p.set_health(BackendId(1), Health::Up, now).unwrap();
        let w = |p: &Pool| effective(p, 1);
        assert_eq!(w(&p), 1);
        let next = p.poll_timeout().unwrap();
        assert!(next > now && next <= now + Duration::from_secs(1));
        p.handle_timeout(now + Duration::from_secs(5)).unwrap();
        assert_eq!(w(&p), 5);
        p.handle_timeout(now + Duration::from_secs(10)).unwrap();
        assert_eq!(w(&p), 10);
        assert!(p.poll_timeout().is_none());
    }

    /// A slow-start window too long for `Instant` used to panic in `poll_timeout` ("overflow
    /// when adding duration to instant"); now the backend ramps (at weight 1 for ever, in
    /// practice) and no wake-up is asked for past what `Instant` can hold. A persistence
    /// timeout that large keeps entries for ever instead of panicking in `select`.
    #[test]
    fn huge_durations_do_not_panic() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::MAX),
            persistence_timeout: Some(Duration::MAX),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg).unwrap();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let first = pick(&p, now, &c);
        let other = 3 - first;
        p.set_health(BackendId(other), Health::Down, now).unwrap();
        p.set_health(BackendId(other), Health::Up, now).unwrap();
        let next = p.poll_timeout();
        assert!(next.is_none_or(|t| t > now));
        p.handle_timeout(now + Duration::from_secs(3600)).unwrap();
        assert_eq!(effective(&p, other), 1);
        assert_eq!(pick(&p, now + Duration::from_secs(1 << 40), &c), first);
    }

    /// Slow start rebuilt the hash tables at each of its steps with new effective weights,
    /// remapping clients of every backend each time (`sh` over four backends of weight 10
    /// with a 20 s window: 65 176 moves of 10 000 clients over one ramp). HAProxy ramps only
    /// dynamic algorithms (`BE_LB_PROP_DYN`); the hash tables now take the configured
    /// weight at once and ask for no wake-up, so after the return nobody moves.
    #[test]
    fn slow_start_leaves_hash_tables_alone() {
        for name in ["sh", "dh", "mh", "ring_hash", "rr", "lc", "fo"] {
            let cfg = PoolConfig {
                slow_start: Some(Duration::from_secs(20)),
                ..PoolConfig::default()
            };
            let p = Pool::new(name.parse::<Algorithm>().unwrap(), set(4), cfg).unwrap();
            let now = t0();
            let picks = |p: &Pool| client_picks(p, now, 2000);
            p.set_health(BackendId(1), Health::Down, now).unwrap();
            p.set_health(BackendId(1), Health::Up, now).unwrap();
            assert_eq!(effective(&p, 1), 10, "{name}: configured weight at once");
            assert_eq!(p.poll_timeout(), None, "{name}: nothing to wake up for");
            if ["rr", "lc", "fo"].contains(&name) {
                continue;
            }
            let before = picks(&p);
            for s in 1..=20 {
                p.handle_timeout(now + Duration::from_secs(s)).unwrap();
            }
            assert_eq!(picks(&p), before, "{name}: no client moved");
        }
    }

    /// keepalived `inhibit_on_failure` sets a failed backend's weight to 0 and keeps it.
    /// `sh`/`dh`/`mh` used to rebuild their table without it, so `sh` moved about two thirds
    /// of the other backends' clients (4 997 of 7 501 in the review) and `mh` a few. IPVS
    /// `ip_vs_mh` builds from `last_weight` and, with `mh-fallback`, re-hashes a lookup
    /// landing on a weight-0 destination; IPVS `sh`/`dh` keep a weight-0 destination in
    /// the table with one bucket per turn and fail such a lookup (`sh` falls back only with
    /// `sh-fallback`). Ours keeps a parked backend's last-weight share and always falls
    /// back, a deliberate choice (see `SourceHash`). A drained backend is parked the
    /// same way. Now no client of another backend moves, the parked backend's clients
    /// spread over the others, and all come back when it does.
    #[test]
    fn parked_backends_keep_their_place_in_hash_tables() {
        for name in ["sh", "dh", "mh"] {
            for park in ["inhibit", "drain"] {
                let p = Pool::new(
                    name.parse::<Algorithm>().unwrap(),
                    set(4),
                    PoolConfig::default(),
                )
                .unwrap();
                let now = t0();
                let picks = |p: &Pool| client_picks(p, now, 4000);
                let before = picks(&p);
                match park {
                    "inhibit" => p
                        .set_state(BackendId(2), Health::Up, Weight::ZERO, now)
                        .unwrap(),
                    _ => p.set_admin(BackendId(2), AdminState::Drain, now).unwrap(),
                }
                let after = picks(&p);
                let moved = before
                    .iter()
                    .zip(&after)
                    .filter(|(x, y)| **x != 2 && x != y)
                    .count();
                assert_eq!(moved, 0, "{name} {park}: clients of other backends moved");
                assert!(!after.contains(&2), "{name} {park}: parked backend picked");
                let heirs: std::collections::HashSet<u32> = before
                    .iter()
                    .zip(&after)
                    .filter(|(x, _)| **x == 2)
                    .map(|(_, y)| *y)
                    .collect();
                assert_eq!(
                    heirs.len(),
                    3,
                    "{name} {park}: its clients spread over the others"
                );
                match park {
                    "inhibit" => p
                        .set_state(BackendId(2), Health::Up, Weight::new(10).unwrap(), now)
                        .unwrap(),
                    _ => p.set_admin(BackendId(2), AdminState::Ready, now).unwrap(),
                }
                assert_eq!(picks(&p), before, "{name} {park}: back where they were");
            }
        }
    }

    /// HAProxy's `server_recalc_eweight` keeps a starting server's ramp on a weight
    /// change. `set_weight` during the ramp used to publish the new weight in full until the
    /// next `handle_timeout`.
    #[test]
    fn set_weight_during_slow_start_keeps_ramping() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(100)),
            ..PoolConfig::default()
        };
        let backends = (1..=2)
            .map(|i| {
                Backend::new(BackendId(i), format!("127.0.0.{i}:80").parse().unwrap())
                    .with_weight(Weight::new(100).unwrap())
            })
            .collect();
        let p = Pool::new(
            Algorithm::WeightedRoundRobin,
            BackendSet::new(backends).unwrap(),
            cfg,
        )
        .unwrap();
        let now = t0();
        p.set_health(BackendId(1), Health::Down, now).unwrap();
        p.set_health(BackendId(1), Health::Up, now).unwrap();
        assert_eq!(effective(&p, 1), 1);
        p.handle_timeout(now + Duration::from_secs(50)).unwrap();
        assert_eq!(effective(&p, 1), 50);
        p.set_weight(
            BackendId(1),
            Weight::new(200).unwrap(),
            now + Duration::from_secs(50),
        )
        .unwrap();
        assert_eq!(effective(&p, 1), 100, "half way through: half of 200");
    }

    /// HAProxy starts slowstart when a server leaves maintenance, and keepalived's weight
    /// coming back from 0 is a backend coming up. `set_weight` 0 → 10 and `set_admin`
    /// maint → ready used to give the full weight at once (only `set_health` and
    /// `set_state` started the window). And `set_health(Up)` on a weight-0 backend started
    /// a clock that only made `poll_timeout` wake up for nothing.
    #[test]
    fn every_way_of_coming_up_starts_slow_start() {
        let cfg = || PoolConfig {
            slow_start: Some(Duration::from_secs(10)),
            ..PoolConfig::default()
        };
        let now = t0();
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg()).unwrap();
        p.set_state(BackendId(1), Health::Up, Weight::ZERO, now)
            .unwrap();
        p.set_weight(BackendId(1), Weight::new(10).unwrap(), now)
            .unwrap();
        assert_eq!(effective(&p, 1), 1, "weight 0 → 10");
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg()).unwrap();
        p.set_admin(BackendId(1), AdminState::Maint, now).unwrap();
        p.set_admin(BackendId(1), AdminState::Ready, now).unwrap();
        assert_eq!(effective(&p, 1), 1, "maint → ready");
        assert!(p.poll_timeout().is_some());
        // Down → up at weight 0: nothing to ramp, nothing to wake up for.
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg()).unwrap();
        p.set_state(BackendId(1), Health::Down, Weight::ZERO, now)
            .unwrap();
        p.set_health(BackendId(1), Health::Up, now).unwrap();
        assert_eq!(p.poll_timeout(), None);
        // A weight change of a serving backend is no coming up.
        p.set_weight(BackendId(2), Weight::new(20).unwrap(), now)
            .unwrap();
        assert_eq!(effective(&p, 2), 20);
    }

    /// HAProxy steps a ramp every `MAX(1000 ms, slowstart / 20)` and rounds the weight up;
    /// the steps were at least 100 ms apart and the weight was rounded down (weight 10, a
    /// 20 s window, 3 s in: 1 instead of 2), against the doc's "rounded up".
    #[test]
    fn slow_start_steps_and_rounds_as_haproxy() {
        let p = |window| {
            let cfg = PoolConfig {
                slow_start: Some(Duration::from_secs(window)),
                ..PoolConfig::default()
            };
            Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg).unwrap()
        };
        let now = t0();
        let p20 = p(20);
        p20.set_health(BackendId(1), Health::Down, now).unwrap();
        p20.set_health(BackendId(1), Health::Up, now).unwrap();
        p20.handle_timeout(now + Duration::from_secs(3)).unwrap();
        assert_eq!(effective(&p20, 1), 2, "10 × 3 / 20 = 1.5, rounded up");
        let p4 = p(4);
        p4.set_health(BackendId(1), Health::Down, now).unwrap();
        p4.set_health(BackendId(1), Health::Up, now).unwrap();
        assert_eq!(
            p4.poll_timeout(),
            Some(now + Duration::from_secs(1)),
            "steps ≥ 1 s"
        );
        p4.handle_timeout(now + Duration::from_millis(900)).unwrap();
        assert_eq!(effective(&p4, 1), 1);
        p4.handle_timeout(now + Duration::from_millis(1500))
            .unwrap();
        assert_eq!(effective(&p4, 1), 3, "10 × 1 s / 4 s = 2.5, rounded up");
    }

    fn effective(p: &Pool, id: u32) -> u32 {
        p.snapshot()
            .backends()
            .get(BackendId(id))
            .unwrap()
            .effective_weight()
            .get()
    }

    /// A rebuild keeps the schedulers' place: `rr` with a backend flapping between picks
    /// still serves the others in turn (it restarted at the first backend after every
    /// rebuild), `lc` and `wlc` with every backend idle share their ties in turn (every
    /// pick went to the first backend), and the random algorithms go on with their stream
    /// instead of replaying it from the seed.
    #[test]
    fn rebuilds_keep_the_schedulers_place() {
        let now = t0();
        for name in [
            "rr",
            "wrr",
            "swrr",
            "random",
            "p2c",
            "peak_ewma",
            "lc",
            "wlc",
        ] {
            let p = Pool::new(
                name.parse::<Algorithm>().unwrap(),
                set(4),
                PoolConfig::default(),
            )
            .unwrap();
            let mut counts = [0u32; 5];
            for i in 0..400 {
                let h = if i % 2 == 0 { Health::Down } else { Health::Up };
                p.set_health(BackendId(4), h, now).unwrap();
                let b = p
                    .select(now, &SelectContext::default(), &mut |_| true)
                    .unwrap();
                counts[b.id().0 as usize] += 1;
            }
            for id in 1..=3 {
                assert!(
                    counts[id] >= 80,
                    "{name}: backend {id} served in turn: {counts:?}"
                );
            }
        }
    }

    /// `with_seed` gives a random pool a stream of its own; names parse with the default.
    #[test]
    fn with_seed_sets_the_random_stream() {
        let now = t0();
        let picks = |a: Algorithm| {
            let p = Pool::new(a, set(8), PoolConfig::default()).unwrap();
            (0..64)
                .map(|_| {
                    p.select(now, &SelectContext::default(), &mut |_| true)
                        .unwrap()
                        .id()
                        .0
                })
                .collect::<Vec<u32>>()
        };
        let random = "random".parse::<Algorithm>().unwrap();
        assert_eq!(picks(random.clone()), picks(random.clone()));
        assert_ne!(picks(random.clone()), picks(random.with_seed(7)));
        assert_eq!(
            Algorithm::WeightedLeastConnections.with_seed(7),
            Algorithm::WeightedLeastConnections
        );
    }

    /// `wrr` under slow start: each ramp step rebuilds with a new weight, and the cycle
    /// goes on from the same fraction instead of restarting with the heavy backends, so
    /// the ramping backend gets about its ramped share.
    #[test]
    fn wrr_ramping_backend_gets_its_share() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(20)),
            ..PoolConfig::default()
        };
        let set = BackendSet::new(
            (1..=3)
                .map(|i| {
                    Backend::new(BackendId(i), format!("127.0.0.{i}:80").parse().unwrap())
                        .with_weight(Weight::new(100).unwrap())
                })
                .collect(),
        )
        .unwrap();
        let p = Pool::new(Algorithm::WeightedRoundRobin, set, cfg).unwrap();
        let now = t0();
        p.set_health(BackendId(3), Health::Down, now).unwrap();
        p.set_health(BackendId(3), Health::Up, now).unwrap();
        let (mut got, mut share) = (0u32, 0f64);
        for step in 0..400u64 {
            let t = now + Duration::from_millis(50 * step);
            p.handle_timeout(t).unwrap();
            let w = f64::from(effective(&p, 3));
            share += w / (w + 200.0);
            let b = p
                .select(t, &SelectContext::default(), &mut |_| true)
                .unwrap();
            got += u32::from(b.id().0 == 3);
        }
        assert!(
            f64::from(got) >= share * 0.85,
            "ramping backend: {got} picks of 400, its effective weights give {share:.0}"
        );
    }

    #[test]
    fn set_state_applies_health_and_weight_in_one_rebuild() {
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), PoolConfig::default()).unwrap();
        let now = t0();
        let g = p.snapshot().generation();
        p.set_state(BackendId(1), Health::Down, Weight::new(4).unwrap(), now)
            .unwrap();
        let snap = p.snapshot();
        assert_eq!(snap.generation(), g + 1, "one snapshot published");
        let b = snap.backends().get(BackendId(1)).unwrap();
        assert_eq!((b.health(), b.weight().get()), (Health::Down, 4));
        assert!(snap
            .primary()
            .backends()
            .iter()
            .all(|b| b.id() != BackendId(1)));
        // Unchanged state: nothing rebuilt.
        p.set_state(BackendId(1), Health::Down, Weight::new(4).unwrap(), now)
            .unwrap();
        assert_eq!(p.snapshot().generation(), g + 1);
        assert_eq!(
            p.set_state(BackendId(7), Health::Up, Weight::DEFAULT, now),
            Err(Error::UnknownBackend(BackendId(7)))
        );
    }

    /// keepalived `inhibit_on_failure`: health stays up, the weight goes 0 → w when the
    /// backend recovers; that is coming up, so slow start applies.
    #[test]
    fn set_state_weight_back_from_zero_starts_slow_start() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(10)),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::WeightedRoundRobin, set(2), cfg).unwrap();
        let now = t0();
        p.set_state(BackendId(1), Health::Up, Weight::ZERO, now)
            .unwrap();
        assert_eq!(effective(&p, 1), 0);
        p.set_state(BackendId(1), Health::Up, Weight::new(10).unwrap(), now)
            .unwrap();
        assert_eq!(effective(&p, 1), 1, "ramps from 1");
        assert!(p.poll_timeout().is_some());
        p.handle_timeout(now + Duration::from_secs(5)).unwrap();
        assert_eq!(effective(&p, 1), 5);
        // A weight change of a serving backend is not coming up: no new window.
        p.set_state(BackendId(2), Health::Up, Weight::new(20).unwrap(), now)
            .unwrap();
        assert_eq!(effective(&p, 2), 20);
    }

    /// `Pool::select` gives `peak_ewma` its `now`: a backend with one slow response and no
    /// traffic since is tried again once its estimate has decayed.
    #[test]
    fn pool_select_decays_peak_ewma_to_now() {
        let p = Pool::new(
            "peak_ewma".parse::<Algorithm>().unwrap(),
            set(2),
            PoolConfig::default(),
        )
        .unwrap();
        let now = t0();
        let decay = Duration::from_secs(10);
        let stats = |id| Arc::clone(p.backends().get(BackendId(id)).unwrap().stats());
        stats(1).record_latency(Duration::from_millis(100), now, decay);
        stats(2).record_latency(Duration::from_millis(1), now, decay);
        assert_eq!(pick(&p, now, &SelectContext::default()), 2);
        let later = now + Duration::from_secs(60);
        stats(2).record_latency(Duration::from_millis(1), later, decay);
        assert_eq!(pick(&p, later, &SelectContext::default()), 1);
    }

    #[test]
    fn panic_threshold_fails_open() {
        let cfg = PoolConfig {
            panic_threshold: 50,
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::RoundRobin, set(4), cfg.clone()).unwrap();
        let now = t0();
        for i in 1..=3 {
            p.set_health(BackendId(i), Health::Down, now).unwrap();
        }
        assert!(p.snapshot().in_panic());
        let seen: std::collections::HashSet<u32> = (0..8)
            .map(|_| pick(&p, now, &SelectContext::default()))
            .collect();
        assert_eq!(seen.len(), 4, "fail open spreads over all ready primaries");

        // With a healthy backup, the healthy primary and the backup share the traffic and
        // none goes to the down primaries (four picks in six went to down ones while the
        // backup sat idle).
        let mut backends: Vec<Backend> = set(3).iter().cloned().collect();
        backends.push(
            Backend::new(BackendId(9), SocketAddr::new([192, 0, 2, 9].into(), 80))
                .with_backup(true),
        );
        let p = Pool::new(
            Algorithm::RoundRobin,
            BackendSet::new(backends).unwrap(),
            cfg,
        )
        .unwrap();
        for i in 2..=3 {
            p.set_health(BackendId(i), Health::Down, now).unwrap();
        }
        assert!(p.snapshot().in_panic());
        let picks: Vec<u32> = (0..6)
            .map(|_| pick(&p, now, &SelectContext::default()))
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 3, "{picks:?}");
        assert_eq!(picks.iter().filter(|&&i| i == 9).count(), 3, "{picks:?}");
    }

    /// Ids are configuration indices, so removing the first real server renumbers the
    /// others. `replace` used to keep a persistence entry (and a slow-start clock) by id
    /// alone: a client pinned to 192.0.2.2 (id 2) went to 192.0.2.3 (now id 2) although
    /// 192.0.2.2 was still configured (as id 1).
    #[test]
    fn replace_follows_addresses_not_ids() {
        let b = |id, last: u8| {
            Backend::new(BackendId(id), SocketAddr::new([192, 0, 2, last].into(), 80))
                .with_weight(Weight::new(10).unwrap())
        };
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            slow_start: Some(Duration::from_secs(100)),
            ..PoolConfig::default()
        };
        let p = Pool::new(
            Algorithm::WeightedRoundRobin,
            BackendSet::new(vec![b(1, 1), b(2, 2), b(3, 3)]).unwrap(),
            cfg,
        )
        .unwrap();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        // Pin the client to .2; .3 comes back up and starts ramping.
        let pinned = p.select(now, &c, &mut |b| b.id() == BackendId(2)).unwrap();
        let _conn = pinned.connection();
        p.set_health(BackendId(3), Health::Down, now).unwrap();
        p.set_health(BackendId(3), Health::Up, now).unwrap();
        assert_eq!(effective(&p, 3), 1);
        // Reload without .1: .2 is now id 1, .3 id 2.
        p.replace(BackendSet::new(vec![b(1, 2), b(2, 3)]).unwrap(), now)
            .unwrap();
        let later = now + Duration::from_secs(1);
        let after = p.select(later, &c, &mut |_| true).unwrap();
        assert_eq!(after.addr(), pinned.addr(), "the client stays on 192.0.2.2");
        assert_eq!(after.id(), BackendId(1));
        assert_eq!(after.stats().active(), 1, "its counters came along");
        assert_eq!(effective(&p, 1), 10, ".2 was not ramping");
        assert_eq!(effective(&p, 2), 1, ".3 still ramps, under its new id");
        // An entry to an address that left is dropped.
        p.replace(BackendSet::new(vec![b(2, 3)]).unwrap(), now)
            .unwrap();
        assert_eq!(pick(&p, later, &c), 2);
    }

    /// A pick that loaded the snapshot just before a `replace` renumbered the backends
    /// resolves persistence ids in the old numbering. Entries used to hold ids only, so
    /// (a) an entry already renumbered sent the client to whatever the new id named in the
    /// old snapshot, and (b) an entry recorded under the old numbering after the renumbering
    /// named another backend in the new one, and was refreshed there for good. Entries now
    /// carry the address, and an id naming another address is a miss.
    #[test]
    fn persistence_survives_a_pick_racing_a_renumbering() {
        // .1 twice the weight of .2, so some `sh` buckets are .1's in both orders.
        let b = |id, last: u8| {
            Backend::new(BackendId(id), SocketAddr::new([192, 0, 2, last].into(), 80))
                .with_weight(Weight::new(u64::from(3 - last)).unwrap())
        };
        let a_addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let b_addr: SocketAddr = "192.0.2.2:80".parse().unwrap();
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let old_set = BackendSet::new(vec![b(1, 1), b(2, 2)]).unwrap();
        let new_set = BackendSet::new(vec![b(1, 2), b(2, 1)]).unwrap();
        // A client that `sh` sends to .1 in both numberings, so a fresh pick is .1.
        let probes = [&old_set, &new_set]
            .map(|s| Pool::new(Algorithm::SourceHash, s.clone(), PoolConfig::default()).unwrap());
        let c = (0..=255u8)
            .map(|i| SelectContext::client(SocketAddr::new([198, 51, 100, i].into(), 1)))
            .find(|c| {
                probes
                    .iter()
                    .all(|p| p.snapshot().select(c, &mut |_| true).unwrap().addr() == a_addr)
            })
            .unwrap();
        let p = Pool::new(Algorithm::SourceHash, old_set, cfg).unwrap();
        let now = t0();
        assert_eq!(p.select(now, &c, &mut |_| true).unwrap().addr(), a_addr);
        let old = p.snapshot().clone();
        // The reload swaps the ids: .1 is now 2, .2 is 1.
        p.replace(new_set, now).unwrap();
        assert_eq!(p.select(now, &c, &mut |_| true).unwrap().addr(), a_addr);
        // (a) The entry says 2 (renumbered); in the old snapshot 2 is .2.
        let got = p.select_in(&old, now, &c, &mut |_| true).unwrap();
        assert_eq!(
            got.addr(),
            a_addr,
            "an old-snapshot pick keeps the client on .1"
        );
        // (b) An old-snapshot pick that records .1 as 1, its old id.
        let got = p
            .select_in(&old, now, &c, &mut |b| b.addr() != b_addr)
            .unwrap();
        assert_eq!(got.addr(), a_addr);
        for _ in 0..3 {
            let got = p.select(now, &c, &mut |_| true).unwrap();
            assert_eq!(got.addr(), a_addr, "1 names .2 now: the entry is a miss");
        }
    }

    /// `replace` rebuilt a kept backend with its old weight as its last weight, so a
    /// parked one (weight 0, last weight 10) still at weight 0 in the new set lost its last
    /// weight, stopped being parked and left the `sh` table: clients of the others moved.
    #[test]
    fn replace_keeps_a_parked_backend_parked() {
        let p = Pool::new(Algorithm::SourceHash, set(3), PoolConfig::default()).unwrap();
        let now = t0();
        p.set_weight(BackendId(2), Weight::ZERO, now).unwrap();
        let clients: Vec<SelectContext<'_>> = (0..500u32)
            .map(|i| SelectContext::client(SocketAddr::new(i.to_be_bytes().into(), 1)))
            .collect();
        let before: Vec<u32> = clients.iter().map(|c| pick(&p, now, c)).collect();
        let mut again: Vec<Backend> = set(3).iter().cloned().collect();
        again[1] = again[1].clone().with_weight(Weight::ZERO);
        p.replace(BackendSet::new(again).unwrap(), now).unwrap();
        assert_eq!(
            p.backends().get(BackendId(2)).unwrap().last_weight().get(),
            10
        );
        let after: Vec<u32> = clients.iter().map(|c| pick(&p, now, c)).collect();
        assert_eq!(before, after, "no client of .1 or .3 moves");
    }

    /// A `replace` bringing a backend into service (weight 0 → 10, maintenance → ready)
    /// started no slow start, unlike `set_weight` and `set_admin`.
    #[test]
    fn replace_bringing_a_backend_up_starts_slow_start() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(100)),
            ..PoolConfig::default()
        };
        let mut first: Vec<Backend> = set(3).iter().cloned().collect();
        first[1] = first[1].clone().with_weight(Weight::ZERO);
        first[2] = first[2].clone().with_admin(AdminState::Maint);
        let p = Pool::new(
            Algorithm::WeightedRoundRobin,
            BackendSet::new(first).unwrap(),
            cfg,
        )
        .unwrap();
        let now = t0();
        p.replace(set(3), now).unwrap();
        assert_eq!(effective(&p, 1), 10, "in service all along");
        assert_eq!(effective(&p, 2), 1, "weight 0 → 10 ramps");
        assert_eq!(effective(&p, 3), 1, "maintenance → ready ramps");
        assert_eq!(
            p.poll_timeout(),
            Some(now + Duration::from_secs(5)),
            "the ramp steps from `now`"
        );
    }

    /// A backend added by `replace` took full weight at once: under `wlc` it had every new
    /// connection until its count caught up (Envoy ramps newly added endpoints).
    #[test]
    fn replace_adding_a_backend_slow_starts_it() {
        let cfg = PoolConfig {
            slow_start: Some(Duration::from_secs(60)),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::WeightedLeastConnections, set(2), cfg).unwrap();
        assert_eq!(effective(&p, 1), 10, "the first membership does not ramp");
        let at = t0() + Duration::from_secs(100);
        let mut grown: Vec<Backend> = set(4).iter().cloned().collect();
        grown[3] = grown[3].clone().with_admin(AdminState::Maint);
        p.replace(BackendSet::new(grown).unwrap(), at).unwrap();
        assert_eq!(effective(&p, 1), 10);
        assert_eq!(
            effective(&p, 3),
            1,
            "a new backend in service ramps from `now`"
        );
        p.handle_timeout(at + Duration::from_secs(30)).unwrap();
        assert_eq!(effective(&p, 3), 5);
        p.handle_timeout(at + Duration::from_secs(60)).unwrap();
        assert_eq!(effective(&p, 3), 10);
        // One added in maintenance ramps when it is made ready.
        let later = at + Duration::from_secs(100);
        p.set_admin(BackendId(4), AdminState::Ready, later).unwrap();
        assert_eq!(effective(&p, 4), 1);
    }

    /// A Backend returned by a pick with persistence carries its client's entry; put back
    /// into a set for a pool, it kept it, and that pool's picks (without persistence
    /// lookups) returned it, so every client's guards held the first client's entry.
    #[test]
    fn a_picked_backend_put_in_a_set_carries_no_entry() {
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let p = Pool::new(Algorithm::RoundRobin, set(1), cfg).unwrap();
        let now = t0();
        let c = SelectContext::client("198.51.100.1:1000".parse().unwrap());
        let picked = p.select(now, &c, &mut |_| true).unwrap();
        assert!(picked.connection().holds_persistence());
        let set = || BackendSet::new(vec![picked.clone()]).unwrap();
        let q = Pool::new(Algorithm::RoundRobin, set(), PoolConfig::default()).unwrap();
        let other = SelectContext::client("198.51.100.2:1000".parse().unwrap());
        let b = q.select(now, &other, &mut |_| true).unwrap();
        assert!(!b.connection().holds_persistence());
        let r = Pool::new(Algorithm::RoundRobin, self::set(2), PoolConfig::default()).unwrap();
        r.replace(set(), now).unwrap();
        let b = r.select(now, &other, &mut |_| true).unwrap();
        assert!(!b.connection().holds_persistence(), "through replace");
    }

    #[test]
    fn replace_keeps_counters() {
        let p = Pool::new(Algorithm::LeastConnections, set(2), PoolConfig::default()).unwrap();
        let g = p.backends().get(BackendId(1)).unwrap().stats().connection();
        p.replace(set(3), t0()).unwrap();
        assert_eq!(p.backends().get(BackendId(1)).unwrap().stats().active(), 1);
        drop(g);
    }

    #[test]
    fn drained_backend_gets_nothing_new() {
        let p = Pool::new(Algorithm::RoundRobin, set(2), PoolConfig::default()).unwrap();
        let now = t0();
        p.set_admin(BackendId(1), AdminState::Drain, now).unwrap();
        for _ in 0..4 {
            assert_eq!(pick(&p, now, &SelectContext::default()), 2);
        }
        assert_eq!(
            p.set_admin(BackendId(7), AdminState::Drain, now),
            Err(Error::UnknownBackend(BackendId(7)))
        );
    }
}
