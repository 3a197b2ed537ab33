//! Backends (IPVS/keepalived *real servers*, HAProxy *servers*), their configured state, and
//! the live counters the data path updates without locks.
//!
//! # Examples
//!
//! ```
//! use lb_core::{AdminState, Backend, BackendId, BackendSet, Weight};
//!
//! let set = BackendSet::new(vec![
//!     Backend::new(BackendId(1), "192.0.2.151:82".parse().unwrap()).with_weight(Weight::new(3).unwrap()),
//!     Backend::new(BackendId(2), "192.0.2.153:83".parse().unwrap()).with_weight(Weight::new(3).unwrap()),
//! ])
//! .unwrap();
//! assert_eq!(set.len(), 2);
//! assert!(set.get(BackendId(1)).unwrap().is_eligible());
//! let drained = set.get(BackendId(2)).unwrap().clone().with_admin(AdminState::Drain);
//! assert!(!drained.is_eligible());
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::error::{Error, Result};
use crate::persistence::{PersistenceHold, Sticky};

/// A backend's identity inside one virtual server, chosen by the caller (a config index, a
/// discovery id). Stable across weight, health and admin changes; rebuilds match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u32);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A configured weight, `0..=65535` as in IPVS and keepalived (`weight`).
///
/// `Weight(0)` means *drain*: existing connections continue, no new connection selects the
/// backend (IPVS/keepalived `inhibit_on_failure`). Unweighted algorithms (`rr`, `lc`, ...) use
/// the weight only to tell 0 from non-zero, as IPVS does. The hash tables `sh`, `dh` and `mh`
/// keep a backend set to 0 in its place, sized by its [`last_weight`](Backend::last_weight),
/// so the other backends' clients stay where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u32);

impl Weight {
    /// The largest weight, 65535 (keepalived's and IPVS's limit).
    pub const MAX: Self = Self(65_535);
    /// Weight 0: the backend takes no new connections.
    pub const ZERO: Self = Self(0);
    /// Weight 1, the default of IPVS and keepalived.
    pub const DEFAULT: Self = Self(1);

    /// A weight from an integer.
    ///
    /// # Errors
    /// [`Error::WeightOutOfRange`] above [`Weight::MAX`].
    pub fn new(weight: u64) -> Result<Self> {
        if weight > u64::from(Self::MAX.0) {
            return Err(Error::WeightOutOfRange(weight));
        }
        // Checked above: fits in u32.
        Ok(Self(weight as u32))
    }

    /// The weight as an integer.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether the weight is 0 (drain).
    #[inline]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The operator's wish for a backend (HAProxy `set server state ready|drain|maint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AdminState {
    /// Takes new connections when healthy.
    #[default]
    Ready,
    /// Takes no new client; existing connections continue, and clients whose persistence
    /// entry names the backend keep reaching it (HAProxy's drain; see
    /// [`PoolConfig::expire_quiescent_template`](crate::PoolConfig::expire_quiescent_template)).
    Drain,
    /// Out of service: no new connections; health checks may be paused by the caller.
    Maint,
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        })
    }
}

/// What health checking last concluded about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// Passing checks (or not checked).
    #[default]
    Up,
    /// Failing checks, or ejected by outlier detection.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// Live per-backend counters, shared by every snapshot a backend appears in and updated by
/// the data path with relaxed atomics (no locks).
///
/// They survive scheduler rebuilds: a rebuilt `lc` scheduler sees the same active-connection
/// counts as the one it replaces. Opening or closing a connection (or, in HTTP mode, a
/// request) also updates the tournament tree of every live `lc`/`wlc`/`sed`/`nq` scheduler
/// built over these counters (O(log n) each), which is what makes those picks O(1).
#[derive(Debug)]
pub struct BackendStats {
    epoch: Instant,
    active: AtomicU64,
    in_flight: AtomicU64,
    total: AtomicU64,
    failures: AtomicU64,
    bytes_to_backend: AtomicU64,
    bytes_to_client: AtomicU64,
    /// Peak EWMA of latency, nanoseconds as `f64` bits; 0 = no sample yet.
    ewma_bits: AtomicU64,
    /// Time of the last EWMA sample, nanoseconds since `epoch`.
    ewma_stamp_ns: AtomicU64,
    /// The decay period given with the last EWMA sample, nanoseconds (reads decay with it).
    ewma_decay_ns: AtomicU64,
    /// The least-load indexes (`lc`/`wlc`/`sed`/`nq`) this backend's connection count
    /// feeds: every live one built over these counters (a pool and its replacement built
    /// over the same counters, as a reload builds it, each keep theirs current).
    load_hooks: ArcSwap<Vec<LoadHook>>,
}

/// Where a backend's connection count changes are reported: a leaf of a least-load
/// scheduler built over it (weak, so no reference cycle keeps a tree alive).
#[derive(Debug, Clone)]
pub(crate) struct LoadHook {
    pub(crate) tree: Weak<crate::algo::least::LoadTree>,
    pub(crate) leaf: u32,
}

impl BackendStats {
    /// Fresh counters. `epoch` anchors the EWMA's timestamps; any instant at or before the first
    /// sample works.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            active: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            bytes_to_backend: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            ewma_bits: AtomicU64::new(0),
            ewma_stamp_ns: AtomicU64::new(0),
            ewma_decay_ns: AtomicU64::new(1),
            load_hooks: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Adds `hook`, dropping those whose tree is gone (a rebuilt scheduler's).
    pub(crate) fn add_load_hook(&self, hook: LoadHook) {
        self.load_hooks.rcu(|hooks| {
            let mut live: Vec<LoadHook> = hooks
                .iter()
                .filter(|h| h.tree.strong_count() > 0)
                .cloned()
                .collect();
            live.push(hook.clone());
            live
        });
    }

    #[inline]
    fn notify_load(&self) {
        for hook in self.load_hooks.load().iter() {
            if let Some(tree) = hook.tree.upgrade() {
                tree.update(hook.leaf);
            }
        }
    }

    /// Active connections (IPVS `ActiveConn`).
    #[inline]
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// In-flight requests (HTTP mode; equals active connections in L4 mode when unused).
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Connections (or requests) ever sent to this backend.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Failures reported with [`BackendStats::record_failure`].
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Bytes forwarded client → backend.
    pub fn bytes_to_backend(&self) -> u64 {
        self.bytes_to_backend.load(Ordering::Relaxed)
    }

    /// Bytes forwarded backend → client.
    pub fn bytes_to_client(&self) -> u64 {
        self.bytes_to_client.load(Ordering::Relaxed)
    }

    /// Counts a new connection; the returned guard counts it closed when dropped. It holds
    /// no persistence entry: for a backend a [`Pool`](crate::Pool) picked, prefer
    /// [`Backend::connection`].
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.notify_load();
        ConnectionGuard {
            stats: Arc::clone(self),
            hold: None,
        }
    }

    /// Counts a connection that was counted already — in [`total`](Self::total), by
    /// [`connection`](Self::connection) — and goes on here: one a reload's replacement
    /// takes over from the proxy it replaces (a UDP session, socket and all). Active while
    /// the returned guard lives; `total` unchanged.
    pub fn continued_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.notify_load();
        ConnectionGuard {
            stats: Arc::clone(self),
            hold: None,
        }
    }

    /// Counts a request in flight; the returned guard ends it when dropped. It holds no
    /// persistence entry: for a backend a [`Pool`](crate::Pool) picked, prefer
    /// [`Backend::request`].
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.notify_load();
        RequestGuard {
            stats: Arc::clone(self),
            hold: None,
        }
    }

    /// Adds forwarded bytes, in each direction (a direction given 0 is not touched).
    #[inline]
    pub fn add_bytes(&self, to_backend: u64, to_client: u64) {
        if to_backend != 0 {
            self.bytes_to_backend
                .fetch_add(to_backend, Ordering::Relaxed);
        }
        if to_client != 0 {
            self.bytes_to_client.fetch_add(to_client, Ordering::Relaxed);
        }
    }

    /// Adds the running totals of `old`, the counters of the backend this one replaces (a
    /// reload restarting its virtual server), so that they go on instead of restarting
    /// from zero, as IPVS keeps a kept service's: connections, failures and bytes each way.
    /// Open connections, requests in flight and the latency estimate are not carried.
    pub fn carry_totals(&self, old: &Self) {
        for (mine, theirs) in [
            (&self.total, &old.total),
            (&self.failures, &old.failures),
            (&self.bytes_to_backend, &old.bytes_to_backend),
            (&self.bytes_to_client, &old.bytes_to_client),
        ] {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Counts a failed connection or request to this backend.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a latency sample into the peak EWMA (Finagle/tower `PeakEwma`): the first
    /// sample, or one above the value recorded last (not decayed to `now`), replaces it at
    /// once; otherwise the value moves towards the sample, `old × w + sample × (1 − w)` with
    /// `w = exp(-elapsed / decay)`, `elapsed` being the time since the latest sample.
    ///
    /// `now` must not be before the `epoch` given to [`BackendStats::new`]; an earlier `now`
    /// is treated as the epoch. A sample at or before the latest one's time (a clock
    /// stepping back, samples recorded out of order) has `elapsed` 0: if lower it leaves the
    /// value as it is, if higher it replaces it; the latest time stays.
    ///
    /// Reads do not change the estimate. Finagle and tower store the decayed value and its
    /// time on every read, so there the next sample is compared with, and averaged into, an
    /// estimate that depends on how often it was read; here it depends only on the samples
    /// and their times (as those would with no read in between).
    ///
    /// `decay` is also remembered for reads: [`latency_ewma_at`](Self::latency_ewma_at)
    /// decays the value with the last sample's `decay`.
    pub fn record_latency(&self, rtt: Duration, now: Instant, decay: Duration) {
        let stamp = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let sample = rtt.as_nanos() as f64;
        let decay_ns = decay.as_nanos().clamp(1, u128::from(u64::MAX)) as u64;
        self.ewma_decay_ns.store(decay_ns, Ordering::Relaxed);
        let decay_ns = decay_ns as f64;
        let mut current = self.ewma_bits.load(Ordering::Relaxed);
        loop {
            let old = f64::from_bits(current);
            let prev_stamp = self.ewma_stamp_ns.load(Ordering::Relaxed);
            let next = if old == 0.0 || sample > old {
                sample
            } else {
                let elapsed = stamp.saturating_sub(prev_stamp) as f64;
                let w = (-elapsed / decay_ns).exp();
                old * w + sample * (1.0 - w)
            };
            match self.ewma_bits.compare_exchange_weak(
                current,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.ewma_stamp_ns.fetch_max(stamp, Ordering::Relaxed);
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// The peak EWMA of latency as of the last sample, or `None` before the first sample.
    pub fn latency_ewma(&self) -> Option<Duration> {
        let v = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        (v > 0.0).then(|| Duration::from_nanos(v as u64))
    }

    /// The peak EWMA of latency decayed to `now`, or `None` before the first sample: the
    /// last value × `exp(-elapsed / decay)`, `elapsed` being the time since the last sample
    /// and `decay` the one given with it (Finagle's and tower's `PeakEwma` decay the
    /// estimate towards 0 whenever they read it). So a backend that got one slow response,
    /// and no request since, looks faster as time passes and is eventually tried again.
    /// A `now` before the last sample reads the undecayed value.
    ///
    /// An estimate decayed below 1 ns (the resolution of a sample; after about 18 decay
    /// periods from 100 ms, and `exp` underflows to 0 after about 745) is `None` again, as
    /// before any sample: so small a value says nothing about the backend, and as a cost
    /// factor it would cancel the load (`peak_ewma` then uses its `default_rtt`, where
    /// Finagle adds a penalty for a backend with no estimate and requests pending).
    pub fn latency_ewma_at(&self, now: Instant) -> Option<Duration> {
        self.ewma_ns_at(now).map(|v| Duration::from_nanos(v as u64))
    }

    #[inline]
    pub(crate) fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_bits.load(Ordering::Relaxed))
    }

    /// The EWMA in nanoseconds decayed to `now` (see [`Self::latency_ewma_at`]); `None`
    /// before the first sample or once decayed below 1 ns.
    #[inline]
    pub(crate) fn ewma_ns_at(&self, now: Instant) -> Option<f64> {
        let v = self.ewma_ns();
        if v < 1.0 {
            return None;
        }
        let at = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let elapsed = at.saturating_sub(self.ewma_stamp_ns.load(Ordering::Relaxed)) as f64;
        let decay = self.ewma_decay_ns.load(Ordering::Relaxed).max(1) as f64;
        let decayed = v * (-elapsed / decay).exp();
        (decayed >= 1.0).then_some(decayed)
    }
}

/// Counts one active connection until dropped (see [`Backend::connection`] and
/// [`BackendStats::connection`]), and holds the client's persistence entry meanwhile when
/// it came from [`Backend::connection`] on a backend a pool with persistence picked.
#[derive(Debug)]
pub struct ConnectionGuard {
    stats: Arc<BackendStats>,
    // Boxed: a guard without persistence (the common case) stays two words.
    hold: Option<Box<PersistenceHold>>,
}

impl ConnectionGuard {
    /// Whether the guard holds a client's persistence entry: only then does
    /// [`ConnectionGuard::finish`] do more than a drop (a driver can skip reading the
    /// clock otherwise).
    pub fn holds_persistence(&self) -> bool {
        self.hold.is_some()
    }

    /// Ends the connection at `now`: the client's persistence entry, if held, times out
    /// `persistence_timeout` after `now` (a plain drop stamps the end with the latest `now`
    /// the pool was given, which may be earlier).
    pub fn finish(mut self, now: Instant) {
        if let Some(h) = self.hold.take() {
            h.finish(now);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.stats.notify_load();
    }
}

/// Counts one in-flight request until dropped (see [`Backend::request`] and
/// [`BackendStats::request`]), holding the client's persistence entry as
/// [`ConnectionGuard`] does.
#[derive(Debug)]
pub struct RequestGuard {
    stats: Arc<BackendStats>,
    // Boxed: a guard without persistence (the common case) stays two words.
    hold: Option<Box<PersistenceHold>>,
}

impl RequestGuard {
    /// Whether the guard holds a client's persistence entry (see
    /// [`ConnectionGuard::holds_persistence`]).
    pub fn holds_persistence(&self) -> bool {
        self.hold.is_some()
    }

    /// Ends the request at `now` (see [`ConnectionGuard::finish`]).
    pub fn finish(mut self, now: Instant) {
        if let Some(h) = self.hold.take() {
            h.finish(now);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.notify_load();
    }
}

/// One backend: where to connect, how much traffic it should get, and its state.
///
/// Cloning is cheap (one `Arc` increment, two with persistence); clones share
/// [`BackendStats`].
#[derive(Debug, Clone)]
pub struct Backend {
    id: BackendId,
    addr: SocketAddr,
    weight: Weight,
    effective_weight: Weight,
    /// The last non-zero configured weight (IPVS `last_weight`).
    last_weight: Weight,
    admin: AdminState,
    health: Health,
    backup: bool,
    stats: Arc<BackendStats>,
    /// The client's persistence entry, on a backend [`Pool::select`](crate::Pool::select)
    /// returned with persistence on.
    sticky: Option<Box<Sticky>>,
}

impl Backend {
    /// A ready, healthy primary backend with weight 1 and fresh counters.
    pub fn new(id: BackendId, addr: SocketAddr) -> Self {
        Self::with_stats(id, addr, Arc::new(BackendStats::new(epoch())))
    }

    /// Like [`Backend::new`] but sharing existing counters.
    pub fn with_stats(id: BackendId, addr: SocketAddr, stats: Arc<BackendStats>) -> Self {
        Self {
            id,
            addr,
            weight: Weight::DEFAULT,
            effective_weight: Weight::DEFAULT,
            last_weight: Weight::DEFAULT,
            admin: AdminState::Ready,
            health: Health::Up,
            backup: false,
            stats,
            sticky: None,
        }
    }

    /// Sets the configured weight (and the effective and last weights to the same value:
    /// a backend configured with weight 0 has no last weight, as an IPVS destination added
    /// with weight 0 has none).
    #[must_use]
    pub fn with_weight(mut self, weight: Weight) -> Self {
        self.weight = weight;
        self.effective_weight = weight;
        self.last_weight = weight;
        self
    }

    /// Sets the admin state.
    #[must_use]
    pub fn with_admin(mut self, admin: AdminState) -> Self {
        self.admin = admin;
        self
    }

    /// Sets the health.
    #[must_use]
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Marks the backend as a backup (HAProxy `backup`, keepalived `sorry_server`): chosen only
    /// when no primary is available.
    #[must_use]
    pub fn with_backup(mut self, backup: bool) -> Self {
        self.backup = backup;
        self
    }

    /// The id.
    #[inline]
    pub fn id(&self) -> BackendId {
        self.id
    }

    /// The address the proxy connects to.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured weight.
    #[inline]
    pub fn weight(&self) -> Weight {
        self.weight
    }

    /// The last non-zero configured weight (IPVS `last_weight`): the configured weight,
    /// unless a change set it to 0 since (keepalived `inhibit_on_failure`). The hash tables
    /// `sh`, `dh` and `mh` size a backend parked at weight 0 with it, so it keeps its place
    /// and no other backend's clients move. 0 only for a backend configured with weight 0.
    #[inline]
    pub fn last_weight(&self) -> Weight {
        self.last_weight
    }

    /// The weight schedulers use: the configured weight, reduced during slow start.
    #[inline]
    pub fn effective_weight(&self) -> Weight {
        self.effective_weight
    }

    /// The admin state.
    #[inline]
    pub fn admin(&self) -> AdminState {
        self.admin
    }

    /// The health.
    #[inline]
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether this is a backup backend.
    #[inline]
    pub fn is_backup(&self) -> bool {
        self.backup
    }

    /// The live counters.
    #[inline]
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// Counts a new connection to this backend ([`BackendStats::connection`]) and, when
    /// this backend is what [`Pool::select`](crate::Pool::select) returned with persistence
    /// on, holds the client's persistence entry while the connection lives: the entry does
    /// not expire while it has a connection open, and its timeout counts from the end of
    /// the last one, as an IPVS persistence template does while it controls connections.
    pub fn connection(&self) -> ConnectionGuard {
        let mut g = self.stats.connection();
        g.hold = self.sticky.as_ref().and_then(|s| s.hold()).map(Box::new);
        g
    }

    /// Counts a request in flight ([`BackendStats::request`]), holding the client's
    /// persistence entry as [`connection`](Self::connection) does.
    pub fn request(&self) -> RequestGuard {
        let mut g = self.stats.request();
        g.hold = self.sticky.as_ref().and_then(|s| s.hold()).map(Box::new);
        g
    }

    pub(crate) fn set_sticky(&mut self, sticky: Sticky) {
        self.sticky = Some(Box::new(sticky));
    }

    /// Whether a new connection may go here: ready, up, and effective weight above 0.
    #[inline]
    pub fn is_eligible(&self) -> bool {
        self.admin == AdminState::Ready
            && self.health == Health::Up
            && !self.effective_weight.is_zero()
    }

    pub(crate) fn set_effective_weight(&mut self, w: Weight) {
        self.effective_weight = w;
    }

    /// A weight change: weight 0 keeps the last non-zero weight.
    pub(crate) fn set_weight(&mut self, w: Weight) {
        self.weight = w;
        self.effective_weight = w;
        if !w.is_zero() {
            self.last_weight = w;
        }
    }

    pub(crate) fn set_admin(&mut self, a: AdminState) {
        self.admin = a;
    }

    pub(crate) fn set_health(&mut self, h: Health) {
        self.health = h;
    }
}

/// One process-wide epoch for counters created without a caller-supplied instant.
fn epoch() -> Instant {
    use std::sync::OnceLock;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // The only clock read in lb-core: a fixed origin for EWMA timestamps, not a scheduling
    // decision. Callers that need determinism use `BackendStats::new(epoch)`.
    #[allow(clippy::disallowed_methods)]
    *EPOCH.get_or_init(Instant::now)
}

/// The backends of one virtual server, in configuration order, with unique ids and addresses.
#[derive(Debug, Clone, Default)]
pub struct BackendSet {
    backends: Vec<Backend>,
}

impl BackendSet {
    /// A set from a list.
    ///
    /// # Errors
    /// [`Error::DuplicateBackend`] or [`Error::DuplicateAddress`] when two backends share an id
    /// or an address.
    /// A [`Backend`] a pool's pick returned carries its client's persistence entry; the
    /// set drops it, so a pool built from the set never hands one client's entry to another.
    pub fn new(mut backends: Vec<Backend>) -> Result<Self> {
        for b in &mut backends {
            b.sticky = None;
        }
        for (i, b) in backends.iter().enumerate() {
            for other in &backends[..i] {
                if other.id == b.id {
                    return Err(Error::DuplicateBackend(b.id));
                }
                if other.addr == b.addr {
                    return Err(Error::DuplicateAddress(b.addr));
                }
            }
        }
        Ok(Self { backends })
    }

    /// The number of backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backends in configuration order.
    pub fn iter(&self) -> std::slice::Iter<'_, Backend> {
        self.backends.iter()
    }

    /// The backends as a slice.
    pub fn as_slice(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend with this id.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.iter().find(|b| b.id == id)
    }

    pub(crate) fn get_mut(&mut self, id: BackendId) -> Result<&mut Backend> {
        self.backends
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or(Error::UnknownBackend(id))
    }
}

impl<'a> IntoIterator for &'a BackendSet {
    type Item = &'a Backend;
    type IntoIter = std::slice::Iter<'a, Backend>;
    fn into_iter(self) -> Self::IntoIter {
        self.backends.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_bounds() {
        assert_eq!(Weight::new(65_535).unwrap().get(), 65_535);
        assert_eq!(Weight::new(65_536), Err(Error::WeightOutOfRange(65_536)));
        assert!(Weight::new(0).unwrap().is_zero());
    }

    #[test]
    fn duplicates_are_refused() {
        let a = Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap());
        let b = Backend::new(BackendId(1), "127.0.0.1:2".parse().unwrap());
        assert_eq!(
            BackendSet::new(vec![a.clone(), b]).unwrap_err(),
            Error::DuplicateBackend(BackendId(1))
        );
        let c = Backend::new(BackendId(2), "127.0.0.1:1".parse().unwrap());
        assert!(matches!(
            BackendSet::new(vec![a, c]),
            Err(Error::DuplicateAddress(_))
        ));
    }

    #[test]
    fn carried_totals_add_up_and_leave_live_counts() {
        #[allow(clippy::disallowed_methods)]
        let t = Instant::now();
        let old = Arc::new(BackendStats::new(t));
        let _open = old.connection();
        old.add_bytes(10, 20);
        old.record_failure();
        let new = Arc::new(BackendStats::new(t));
        drop(new.connection());
        new.carry_totals(&old);
        assert_eq!(
            (
                new.total(),
                new.failures(),
                new.bytes_to_backend(),
                new.bytes_to_client()
            ),
            (2, 1, 10, 20)
        );
        assert_eq!(new.active(), 0, "open connections stay the old backend's");
    }

    #[test]
    fn guards_count_and_uncount() {
        let b = Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap());
        let g1 = b.stats().connection();
        let g2 = b.stats().connection();
        assert_eq!(b.stats().active(), 2);
        drop(g1);
        assert_eq!(b.stats().active(), 1);
        drop(g2);
        assert_eq!(b.stats().active(), 0);
        assert_eq!(b.stats().total(), 2);
    }

    /// `exp` underflows after about 745 decay periods; the estimate then read Some(0) and
    /// `peak_ewma`'s cost `rtt × (load + 1)` was 0 whatever the load. Below 1 ns it is no
    /// estimate.
    #[test]
    fn peak_ewma_decayed_to_nothing_is_no_estimate() {
        let t0 = epoch();
        let s = BackendStats::new(t0);
        let decay = Duration::from_secs(1);
        s.record_latency(Duration::from_millis(100), t0, decay);
        assert!(s.latency_ewma_at(t0 + Duration::from_secs(10)).is_some());
        assert_eq!(s.latency_ewma_at(t0 + Duration::from_secs(60)), None);
        assert_eq!(s.latency_ewma_at(t0 + Duration::from_secs(800)), None);
        assert_eq!(s.latency_ewma(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let t0 = epoch();
        let s = BackendStats::new(t0);
        let decay = Duration::from_secs(10);
        s.record_latency(Duration::from_millis(10), t0, decay);
        s.record_latency(
            Duration::from_millis(50),
            t0 + Duration::from_millis(1),
            decay,
        );
        assert_eq!(s.latency_ewma(), Some(Duration::from_millis(50)));
        s.record_latency(
            Duration::from_millis(10),
            t0 + Duration::from_secs(10),
            decay,
        );
        let v = s.latency_ewma().unwrap().as_secs_f64() * 1000.0;
        // 50·e^-1 + 10·(1-e^-1) ≈ 24.7 ms
        assert!((v - 24.7).abs() < 0.2, "{v}");
    }

    #[test]
    fn peak_ewma_decays_when_read() {
        let t0 = epoch();
        let s = BackendStats::new(t0);
        assert_eq!(s.latency_ewma_at(t0), None);
        let decay = Duration::from_secs(10);
        let t1 = t0 + Duration::from_secs(1);
        s.record_latency(Duration::from_millis(100), t1, decay);
        assert_eq!(s.latency_ewma_at(t1), Some(Duration::from_millis(100)));
        assert_eq!(s.latency_ewma_at(t0), Some(Duration::from_millis(100)));
        let v = s
            .latency_ewma_at(t1 + Duration::from_secs(10))
            .unwrap()
            .as_secs_f64()
            * 1000.0;
        // 100·e^-1 ≈ 36.8 ms
        assert!((v - 36.79).abs() < 0.1, "{v}");
        // Reading does not change the recorded value.
        assert_eq!(s.latency_ewma(), Some(Duration::from_millis(100)));
    }
}
