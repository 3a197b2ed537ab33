//! Client → backend persistence with a timeout (keepalived/IPVS `persistence_timeout`,
//! HAProxy `stick-table`), in bounded memory.
//!
//! An entry lives `timeout` after its last use (a pick that went to it) and, like an IPVS
//! persistence template, never expires while it controls a live connection: connections
//! counted with [`hold`](PersistenceTable::hold) (which [`Backend::connection`] and
//! [`Backend::request`] call for a backend a [`Pool`](crate::Pool) picked) keep it, and
//! its timeout then counts from the end of its last connection (IPVS `ip_vs_conn_expire`
//! re-arms a template's timer while `n_control` is not 0). A connection's end is stamped
//! with the table's clock, the latest `now` it was given (drops have no clock; see
//! [`ConnectionGuard::finish`](crate::ConnectionGuard::finish) for an exact time).
//!
//! The table is split into 16 shards, each a `Mutex<HashMap>` preallocated to its share of
//! `max_entries`, so lookups do not allocate. When a shard is full, a new client evicts by
//! CLOCK (second chance, an approximation of least recently used at O(1) amortised; see
//! [`PersistenceTable::new`]): the clock passes the entries in the order they were
//! recorded, evicting the first that has expired, or that nobody used since the clock last
//! passed it and that holds no connection.
//!
//! With persistence on, a [`Pool`](crate::Pool) pick locks the client's shard once to look
//! the client up and, when it records a new or moved entry, a second time to record it
//! (briefly each, never both at once); the [`Backend`](crate::Backend) it returns carries
//! the entry's location in one boxed allocation. [`Backend::connection`] and
//! [`Backend::request`] then lock the shard once more to hold the entry (and box the hold),
//! and dropping or finishing the guard once more to release it. Without persistence a pick
//! takes no lock and allocates nothing.
//!
//! [`Backend::connection`]: crate::Backend::connection
//! [`Backend::request`]: crate::Backend::request
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use lb_core::persistence::PersistenceTable;
//! use lb_core::BackendId;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let t = Arc::new(PersistenceTable::new(Duration::from_secs(300), 1024).unwrap());
//! let client = "198.51.100.7".parse().unwrap();
//! t.insert(client, BackendId(2), now);
//! assert_eq!(t.get(client, now + Duration::from_secs(299)), Some(BackendId(2)));
//! assert_eq!(t.get(client, now + Duration::from_secs(700)), None);
//!
//! // A connection held open keeps the entry past its timeout.
//! let now = now + Duration::from_secs(700);
//! t.insert(client, BackendId(3), now);
//! let hold = t.hold(client).unwrap();
//! assert_eq!(t.get(client, now + Duration::from_secs(3600)), Some(BackendId(3)));
//! drop(hold); // ends at the table's clock, now + 3600 s: the entry lives 300 s more
//! assert_eq!(t.get(client, now + Duration::from_secs(3899)), Some(BackendId(3)));
//! ```

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::backend::BackendId;
use crate::error::{Error, Result};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    backend: BackendId,
    /// The backend's address when the entry was recorded by a pool: ids are renumbered by
    /// [`Pool::replace`](crate::Pool::replace), so a pick resolving the id in a snapshot
    /// of another numbering must not take the backend of that id for this one.
    addr: Option<SocketAddr>,
    /// `timeout` after the last use or the end of the last connection, whichever is later;
    /// `None`: never (a deadline too large for `Instant`).
    expires: Option<Instant>,
    /// Live connections holding the entry (IPVS `n_control`).
    live: u32,
    /// Tells this entry from an earlier one of the same client, so a hold on a replaced
    /// entry does not count against its successor.
    generation: u64,
    /// Used since the eviction clock last passed it (CLOCK's reference bit): a full
    /// shard gives it a second chance.
    referenced: bool,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.live > 0 || self.expires.is_none_or(|e| e > now)
    }
}

/// `now + timeout`, or `None` (never) when that is past what `Instant` can hold.
fn deadline(now: Instant, timeout: Duration) -> Option<Instant> {
    now.checked_add(timeout)
}

/// The later of two deadlines, `None` (never) being the latest.
fn later(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    Some(a?.max(b?))
}

/// One shard: its entries and the generation its next new entry takes (counted under the
/// shard's lock, so new clients share no counter across shards).
#[derive(Debug)]
struct Shard {
    map: HashMap<IpAddr, Entry>,
    next_generation: u64,
    /// The eviction clock: the entries in the order they were recorded, as (client,
    /// generation); a pair whose entry was replaced or removed since is stale and skipped.
    ring: VecDeque<(IpAddr, u64)>,
}

impl Shard {
    /// Frees one place by CLOCK (second chance; Corbató 1968), an approximation of least
    /// recently used at O(1) amortised per insertion: the oldest recorded entry goes
    /// unless it was used since the clock last passed it or holds live connections, in
    /// which case it goes round again; an expired one goes at once. Two turns at most: the
    /// first may only clear the reference bits of the entries holding nothing, so that the
    /// second reaches one of them before any held entry goes; when every entry holds
    /// connections, the oldest goes after those two turns.
    fn evict_one(&mut self, now: Instant) {
        let mut turn = self.ring.len().saturating_mul(2);
        while let Some((client, generation)) = self.ring.pop_front() {
            let Some(e) = self
                .map
                .get_mut(&client)
                .filter(|e| e.generation == generation)
            else {
                continue;
            };
            let second_chance = (e.referenced || e.live > 0) && e.is_live(now);
            if second_chance && turn > 0 {
                turn -= 1;
                e.referenced = false;
                self.ring.push_back((client, generation));
                continue;
            }
            self.map.remove(&client);
            return;
        }
    }

    /// Rebuilds the clock from the entries when stale pairs make up most of it (replaced
    /// and removed entries leave theirs behind): amortised O(1) per insertion, and the
    /// clock stays within twice the entries.
    fn compact(&mut self) {
        if self.ring.len() <= 2 * self.map.len() + 16 {
            return;
        }
        let mut live: Vec<(u64, IpAddr)> =
            self.map.iter().map(|(c, e)| (e.generation, *c)).collect();
        live.sort_unstable();
        self.ring = live.into_iter().map(|(g, c)| (c, g)).collect();
    }
}

impl std::ops::Deref for Shard {
    type Target = HashMap<IpAddr, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Shard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// How far a `now` must be past the table's clock for [`PersistenceTable::observe`] to
/// write it: a pick reads the shared clock and writes it at most once a millisecond, not
/// every time (a contended cache line per pick otherwise).
const CLOCK_GRAIN_NS: u64 = 1_000_000;

/// One live entry of a [`PersistenceTable`], as [`PersistenceTable::export`] copies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportedEntry {
    /// The client, as the table keys it (masked by the pool's granularity).
    pub client: IpAddr,
    /// Its backend.
    pub backend: BackendId,
    /// The backend's address, when the entry was recorded by a pool.
    pub addr: Option<SocketAddr>,
    /// Time left before it expires; `None`: it never does.
    pub remaining: Option<Duration>,
}

/// A bounded, expiring client → backend table.
#[derive(Debug)]
pub struct PersistenceTable {
    timeout: Duration,
    per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    /// The table's clock: the latest `now` it was given, in nanoseconds since `origin`
    /// (the first `now` it was given). It stamps the end of a held connection.
    origin: OnceLock<Instant>,
    clock_ns: AtomicU64,
}

impl PersistenceTable {
    /// A table whose entries live `timeout` after their last use or the end of their last
    /// held connection, holding at most `max_entries` (rounded up to a multiple of 16, in
    /// 16 shards by client). A new client in a full shard evicts by CLOCK, an approximation
    /// of least recently used at O(1) amortised: an expired entry, else the oldest one not
    /// used since the clock last passed it and holding no connection. (IPVS has no cap on
    /// its persistence templates; this one bounds memory against a flood of clients.) A
    /// timeout that takes a deadline past what [`Instant`] can hold means the entries never
    /// expire (no panic).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero timeout or `max_entries` of 0 or above 2²⁴.
    pub fn new(timeout: Duration, max_entries: usize) -> Result<Self> {
        if timeout.is_zero() {
            return Err(Error::InvalidConfig {
                setting: "persistence_timeout",
                reason: "must be above 0 s (omit it to turn persistence off)".into(),
            });
        }
        if max_entries == 0 || max_entries > 1 << 24 {
            return Err(Error::InvalidConfig {
                setting: "persistence_max_entries",
                reason: format!("{max_entries} is outside 1..=16777216"),
            });
        }
        let per_shard = max_entries.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_capacity(per_shard),
                    next_generation: 0,
                    ring: VecDeque::new(),
                })
            })
            .collect();
        Ok(Self {
            timeout,
            per_shard,
            shards,
            origin: OnceLock::new(),
            clock_ns: AtomicU64::new(0),
        })
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn shard(&self, client: IpAddr) -> &Mutex<Shard> {
        let h = super::algo::hashing::hash_ip(client, 0x7065_7273);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Advances the table's clock to `now` (never backwards) when `now` is at least 1 ms
    /// past it, so the clock lags the latest `now` by under 1 ms. Every method taking `now`
    /// does this; a pool also calls it from every other call given a `now`. It only reads
    /// the shared clock unless it moves it.
    pub fn observe(&self, now: Instant) {
        let ns = self.nanos(now);
        if ns
            >= self
                .clock_ns
                .load(Ordering::Relaxed)
                .saturating_add(CLOCK_GRAIN_NS)
        {
            self.clock_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Advances the table's clock to exactly `now` (never backwards): the end of a held
    /// connection ([`PersistenceHold::finish`]).
    fn observe_exact(&self, now: Instant) {
        let ns = self.nanos(now);
        if ns > self.clock_ns.load(Ordering::Relaxed) {
            self.clock_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// `now` in nanoseconds since the table's origin (the first `now` it was given).
    fn nanos(&self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_init(|| now);
        u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The table's clock: the latest `now` it was given (`None` before the first).
    fn clock(&self) -> Option<Instant> {
        let origin = *self.origin.get()?;
        let ns = self.clock_ns.load(Ordering::Relaxed);
        Some(
            origin
                .checked_add(Duration::from_nanos(ns))
                .unwrap_or(origin),
        )
    }

    fn lock(&self, client: IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        self.shard(client)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The client's backend if its entry has not expired; refreshes the entry's timeout to
    /// `now + timeout`, never shortening it (a `now` earlier than a previous one leaves the
    /// entry's deadline where it was).
    pub fn get(&self, client: IpAddr, now: Instant) -> Option<BackendId> {
        self.lookup(client, now).map(|(id, _, _)| id)
    }

    /// As [`get`](Self::get), with the backend's address as recorded and the entry's
    /// generation.
    pub(crate) fn lookup(
        &self,
        client: IpAddr,
        now: Instant,
    ) -> Option<(BackendId, Option<SocketAddr>, u64)> {
        self.observe(now);
        let mut map = self.lock(client);
        match map.get_mut(&client) {
            Some(e) if e.is_live(now) => {
                e.expires = later(e.expires, deadline(now, self.timeout));
                e.referenced = true;
                Some((e.backend, e.addr, e.generation))
            }
            Some(_) => {
                map.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Records the client's backend: refreshes its entry when it already names `backend`
    /// (keeping its live connections), replaces it otherwise.
    pub fn insert(&self, client: IpAddr, backend: BackendId, now: Instant) {
        self.record(client, backend, None, now);
    }

    /// As [`insert`](Self::insert), with the backend's address (an entry naming the same id
    /// at another address is replaced), returning the entry's generation.
    pub(crate) fn record(
        &self,
        client: IpAddr,
        backend: BackendId,
        addr: Option<SocketAddr>,
        now: Instant,
    ) -> u64 {
        self.observe(now);
        let mut map = self.lock(client);
        if let Some(e) = map.get_mut(&client) {
            if e.backend == backend && e.addr == addr && e.is_live(now) {
                e.expires = later(e.expires, deadline(now, self.timeout));
                e.referenced = true;
                return e.generation;
            }
        }
        self.insert_new(
            &mut map,
            client,
            backend,
            addr,
            deadline(now, self.timeout),
            now,
        )
    }

    /// Puts a new entry for `client` into its shard `map` (evicting one when the shard is
    /// full) and returns its generation.
    fn insert_new(
        &self,
        map: &mut Shard,
        client: IpAddr,
        backend: BackendId,
        addr: Option<SocketAddr>,
        expires: Option<Instant>,
        now: Instant,
    ) -> u64 {
        if map.len() >= self.per_shard && !map.contains_key(&client) {
            map.evict_one(now);
        }
        // Unique within the shard, which is all a hold compares it against (one client's
        // entries are all in one shard).
        let generation = map.next_generation;
        map.next_generation += 1;
        map.insert(
            client,
            Entry {
                backend,
                addr,
                expires,
                live: 0,
                generation,
                referenced: false,
            },
        );
        map.ring.push_back((client, generation));
        map.compact();
        generation
    }

    /// Counts one live connection against the client's entry until the returned hold is
    /// dropped: the entry does not expire meanwhile, and its timeout restarts when its last
    /// connection ends (at the table's clock, the latest `now` it was given). `None` when the
    /// client has no live entry: one expired at the table's clock (not yet swept) is not
    /// revived.
    pub fn hold(self: &Arc<Self>, client: IpAddr) -> Option<PersistenceHold> {
        let generation = self.lock(client).get(&client)?.generation;
        self.hold_generation(client, generation)
    }

    /// Holds the client's entry if it is still the one of `generation` and live at the
    /// table's clock.
    pub(crate) fn hold_generation(
        self: &Arc<Self>,
        client: IpAddr,
        generation: u64,
    ) -> Option<PersistenceHold> {
        let clock = self.clock();
        let mut map = self.lock(client);
        let e = map
            .get_mut(&client)
            .filter(|e| e.generation == generation && clock.is_none_or(|now| e.is_live(now)))?;
        e.live = e.live.saturating_add(1);
        Some(PersistenceHold {
            table: Arc::clone(self),
            client,
            generation,
        })
    }

    fn release(&self, client: IpAddr, generation: u64) {
        let end = self.clock();
        let mut map = self.lock(client);
        if let Some(e) = map.get_mut(&client).filter(|e| e.generation == generation) {
            e.live = e.live.saturating_sub(1);
            // A connection that just ended is a use: the clock gives the entry its second
            // chance (before expired entries further round it go).
            e.referenced = true;
            if e.live == 0 {
                if let Some(end) = end {
                    e.expires = later(e.expires, deadline(end, self.timeout));
                }
            }
        }
    }

    /// Drops the client's entry.
    pub fn remove(&self, client: IpAddr) {
        self.lock(client).remove(&client);
    }

    /// Keeps only entries whose backend satisfies `keep` (used on rebuild to drop entries to
    /// backends that went down, drained or left).
    pub fn retain_backends(&self, mut keep: impl FnMut(BackendId) -> bool) {
        for s in self.shards.iter() {
            s.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, e| keep(e.backend));
        }
    }

    /// Re-keys every entry to `map(backend)`, dropping those it maps to `None` (used when
    /// a membership change renumbers backends). Live connections stay counted; the
    /// recorded address is kept (the renumbering keeps addresses), so a pick on a snapshot
    /// of the old numbering sees the new id name another address and takes it as a miss.
    pub fn remap_backends(&self, mut map: impl FnMut(BackendId) -> Option<BackendId>) {
        for s in self.shards.iter() {
            s.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, e| match map(e.backend) {
                    Some(id) => {
                        e.backend = id;
                        true
                    }
                    None => false,
                });
        }
    }

    /// Every live entry at `now`, for [`restore`](Self::restore) into another table (a
    /// reload's replacement of the virtual server). An entry holding connections counts as
    /// used at `now`.
    pub fn export(&self, now: Instant) -> Vec<ExportedEntry> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let map = s.lock().unwrap_or_else(PoisonError::into_inner);
            for (client, e) in map.iter().filter(|(_, e)| e.is_live(now)) {
                let remaining = if e.live > 0 {
                    Some(self.timeout)
                } else {
                    e.expires.map(|x| x.saturating_duration_since(now))
                };
                out.push(ExportedEntry {
                    client: *client,
                    backend: e.backend,
                    addr: e.addr,
                    remaining,
                });
            }
        }
        out
    }

    /// Records `client` → `backend` (at `addr`) to expire `remaining` after `now`, no later
    /// than this table's timeout (`None`: this table's timeout), unless the client already
    /// has a live entry here, which wins. Returns whether it was recorded.
    pub fn restore(
        &self,
        client: IpAddr,
        backend: BackendId,
        addr: Option<SocketAddr>,
        remaining: Option<Duration>,
        now: Instant,
    ) -> bool {
        self.observe(now);
        let mut map = self.lock(client);
        if map.get(&client).is_some_and(|e| e.is_live(now)) {
            return false;
        }
        let left = remaining.map_or(self.timeout, |r| r.min(self.timeout));
        self.insert_new(&mut map, client, backend, addr, deadline(now, left), now);
        true
    }

    /// The number of entries, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

/// One live connection counted against a client's persistence entry (IPVS `n_control`),
/// from [`PersistenceTable::hold`] or inside a [`ConnectionGuard`](crate::ConnectionGuard)
/// / [`RequestGuard`](crate::RequestGuard); dropping it ends the connection.
pub struct PersistenceHold {
    table: Arc<PersistenceTable>,
    client: IpAddr,
    generation: u64,
}

impl PersistenceHold {
    /// Ends the connection at `now` (advancing the table's clock to it first), so the
    /// entry's timeout counts from `now` exactly rather than from the table's clock.
    pub fn finish(self, now: Instant) {
        self.table.observe_exact(now);
    }
}

impl Drop for PersistenceHold {
    fn drop(&mut self) {
        self.table.release(self.client, self.generation);
    }
}

impl fmt::Debug for PersistenceHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistenceHold")
            .field("client", &self.client)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Where a picked backend's persistence entry is: carried by the [`Backend`](crate::Backend)
/// a pool returns, so its connection and request guards can hold the entry.
#[derive(Clone)]
pub(crate) struct Sticky {
    pub(crate) table: Arc<PersistenceTable>,
    pub(crate) client: IpAddr,
    pub(crate) generation: u64,
}

impl Sticky {
    pub(crate) fn hold(&self) -> Option<PersistenceHold> {
        self.table.hold_generation(self.client, self.generation)
    }
}

impl fmt::Debug for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sticky")
            .field("client", &self.client)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn bounded_memory_with_eviction() {
        let t = PersistenceTable::new(Duration::from_secs(60), 32).unwrap();
        let now = t0();
        for i in 0..1000u32 {
            t.insert(IpAddr::from(i.to_be_bytes()), BackendId(i), now);
        }
        assert!(t.len() <= t.capacity());
        assert_eq!(t.capacity(), 32);
    }

    /// A full table evicts the entries nobody used since, not the recent ones: the clients
    /// looked up and the newest clients stay, and inserting into a full table costs no
    /// sweep of it (the sweep made each new client cost ~16 µs at 65 536 entries).
    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let t = PersistenceTable::new(Duration::from_secs(300), 1024).unwrap();
        let now = t0();
        let ip = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        for i in 0..1024 {
            t.insert(ip(i), BackendId(1), now);
        }
        let touched: Vec<u32> = (0..1024)
            .filter(|&i| t.get(ip(i), now + Duration::from_secs(100)).is_some())
            .take(64)
            .collect();
        assert_eq!(touched.len(), 64);
        let later = now + Duration::from_secs(200);
        for i in 10_000..10_256 {
            t.insert(ip(i), BackendId(2), later);
        }
        let lost_new = (10_000..10_256)
            .filter(|&i| t.get(ip(i), later).is_none())
            .count();
        let lost_touched = touched
            .iter()
            .filter(|&&i| t.get(ip(i), later).is_none())
            .count();
        assert_eq!((lost_new, lost_touched), (0, 0));
        assert!(t.len() <= t.capacity());
        // Expired entries go before anything else.
        let much_later = now + Duration::from_secs(1000);
        for i in 20_000..20_512 {
            t.insert(ip(i), BackendId(3), much_later);
        }
        assert!((20_000..20_512).all(|i| t.get(ip(i), much_later).is_some()));
    }

    /// A client whose connection just ended keeps its entry over an expired one: the end
    /// of a connection counts as a use for the eviction clock.
    #[test]
    fn an_entry_whose_connection_just_ended_outlives_an_expired_one() {
        // Two entries per shard.
        let t = Arc::new(PersistenceTable::new(Duration::from_secs(60), 32).unwrap());
        let now = t0();
        let ip = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        let shard_of = |i: u32| std::ptr::from_ref(t.shard(ip(i)));
        // Three clients of one shard.
        let (a, b) = (
            0,
            (1..10_000).find(|&i| shard_of(i) == shard_of(0)).unwrap(),
        );
        let c = (b + 1..20_000)
            .find(|&i| shard_of(i) == shard_of(0))
            .unwrap();
        t.insert(ip(a), BackendId(1), now);
        let hold = t.hold(ip(a)).unwrap();
        t.insert(ip(b), BackendId(2), now + Duration::from_secs(1));
        t.observe(now + Duration::from_secs(70));
        hold.finish(now + Duration::from_secs(70));
        let later = now + Duration::from_secs(80);
        t.insert(ip(c), BackendId(3), later);
        assert_eq!(t.get(ip(a), later), Some(BackendId(1)), "a is valid");
        assert_eq!(t.get(ip(b), later), None, "b had expired");
        assert_eq!(t.get(ip(c), later), Some(BackendId(3)));
    }

    /// A full shard evicts an entry holding no connection before one that holds a
    /// connection, even when the clock must first take the former's second chance. The
    /// clock used to give the held entry (the oldest) a pass, clear the other's reference
    /// bit, and then, its one turn spent, evict the held entry.
    #[test]
    fn a_held_entry_outlives_a_used_one_that_holds_nothing() {
        // Two entries per shard.
        let t = Arc::new(PersistenceTable::new(Duration::from_secs(60), 32).unwrap());
        let now = t0();
        let ip = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        let shard_of = |i: u32| std::ptr::from_ref(t.shard(ip(i)));
        let same: Vec<u32> = (0..100_000)
            .filter(|&i| shard_of(i) == shard_of(0))
            .take(3)
            .collect();
        let (a, b, c) = (same[0], same[1], same[2]);
        t.insert(ip(a), BackendId(1), now);
        let hold = t.hold(ip(a)).unwrap();
        t.insert(ip(b), BackendId(2), now);
        assert_eq!(t.get(ip(b), now), Some(BackendId(2)), "b is used");
        t.insert(ip(c), BackendId(3), now);
        assert_eq!(
            t.get(ip(a), now),
            Some(BackendId(1)),
            "a holds a connection"
        );
        assert_eq!(t.get(ip(b), now), None, "b held nothing");
        assert_eq!(t.get(ip(c), now), Some(BackendId(3)));
        drop(hold);
    }

    #[test]
    fn retain_drops_dead_backends() {
        let t = PersistenceTable::new(Duration::from_secs(60), 64).unwrap();
        let now = t0();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        t.insert(a, BackendId(1), now);
        t.insert(b, BackendId(2), now);
        t.retain_backends(|id| id != BackendId(1));
        assert_eq!(t.get(a, now), None);
        assert_eq!(t.get(b, now), Some(BackendId(2)));
    }

    /// A timeout past what `Instant` can hold used to panic ("overflow when adding duration
    /// to instant") on the first insert; now the entry never expires.
    #[test]
    fn huge_timeout_never_expires_and_does_not_panic() {
        let t = PersistenceTable::new(Duration::MAX, 64).unwrap();
        let now = t0();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(a, BackendId(1), now);
        assert_eq!(t.get(a, now), Some(BackendId(1)));
        assert_eq!(
            t.get(a, now + Duration::from_secs(1 << 40)),
            Some(BackendId(1))
        );
    }

    /// A `now` earlier than the last one (a caller's clock going backwards) must not pull
    /// the deadline in: the entry stays until `timeout` after the latest use.
    #[test]
    fn earlier_now_does_not_shorten_an_entry() {
        let t = PersistenceTable::new(Duration::from_secs(300), 64).unwrap();
        let now = t0() + Duration::from_secs(1000);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(a, BackendId(1), now);
        assert_eq!(t.get(a, now - Duration::from_secs(200)), Some(BackendId(1)));
        assert_eq!(
            t.get(a, now + Duration::from_secs(250)),
            Some(BackendId(1)),
            "alive until now + 300 s, not (now - 200 s) + 300 s"
        );
    }

    /// IPVS keeps a persistence template while it controls a connection
    /// (`ip_vs_conn_expire`: `if (atomic_read(&cp->n_control)) goto expire_later`). The entry
    /// used to expire `timeout` after the last pick whatever was open.
    #[test]
    fn held_entry_outlives_its_timeout_and_restarts_it_at_the_end() {
        let t = Arc::new(PersistenceTable::new(Duration::from_secs(300), 64).unwrap());
        let now = t0();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(a, BackendId(1), now);
        let h1 = t.hold(a).unwrap();
        let h2 = t.hold(a).unwrap();
        let at = |s| now + Duration::from_secs(s);
        assert_eq!(t.get(a, at(1000)), Some(BackendId(1)), "held: no expiry");
        // Unrelated traffic moves the table's clock on.
        t.insert("192.0.2.9".parse().unwrap(), BackendId(2), at(2000));
        drop(h1);
        assert_eq!(t.get(a, at(2100)), Some(BackendId(1)), "one still open");
        h2.finish(at(2500));
        assert_eq!(
            t.get(a, at(2799)),
            Some(BackendId(1)),
            "300 s after the end"
        );
        assert_eq!(t.get(a, at(3100)), None);
    }

    /// A hold on an entry that was replaced (the client moved to another backend) does not
    /// count against the new entry.
    #[test]
    fn hold_on_a_replaced_entry_is_inert() {
        let t = Arc::new(PersistenceTable::new(Duration::from_secs(300), 64).unwrap());
        let now = t0();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(a, BackendId(1), now);
        let old = t.hold(a).unwrap();
        t.insert(a, BackendId(2), now);
        let later = now + Duration::from_secs(301);
        assert_eq!(t.get(a, later), None, "the new entry holds nothing");
        drop(old);
        // Refreshing an entry that names the same backend keeps its holds.
        t.insert(a, BackendId(3), later);
        let h = t.hold(a).unwrap();
        t.insert(a, BackendId(3), later);
        assert_eq!(
            t.get(a, later + Duration::from_secs(1000)),
            Some(BackendId(3))
        );
        drop(h);
    }

    /// A hold used to revive an entry that had expired but was not swept yet (a Backend
    /// kept past the timeout, then `connection()`): the entry then lived on.
    #[test]
    fn expired_entry_cannot_be_held() {
        let t = Arc::new(PersistenceTable::new(Duration::from_secs(300), 64).unwrap());
        let now = t0();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let generation = t.record(a, BackendId(1), None, now);
        // Other traffic moves the table's clock past the entry's deadline.
        t.insert(
            "192.0.2.9".parse().unwrap(),
            BackendId(2),
            now + Duration::from_secs(301),
        );
        assert!(t.hold(a).is_none());
        assert!(t.hold_generation(a, generation).is_none());
        assert_eq!(t.get(a, now + Duration::from_secs(302)), None);
    }

    /// `observe` did a `fetch_max` on the shared clock on every pick; it now writes only a
    /// `now` at least 1 ms past the clock (a held connection's `finish` stays exact).
    #[test]
    fn clock_moves_in_steps_of_a_millisecond() {
        let t = PersistenceTable::new(Duration::from_secs(300), 64).unwrap();
        let now = t0();
        t.observe(now);
        t.observe(now + Duration::from_micros(500));
        assert_eq!(t.clock(), Some(now), "under 1 ms: not written");
        t.observe(now + Duration::from_millis(2));
        assert_eq!(t.clock(), Some(now + Duration::from_millis(2)));
        t.observe_exact(now + Duration::from_micros(2100));
        assert_eq!(t.clock(), Some(now + Duration::from_micros(2100)));
    }

    /// The sequence the test above cannot tell: a hold on a replaced entry, dropped while
    /// the new entry is held, must not release the new entry's hold (`release` checks the
    /// generation).
    #[test]
    fn dropping_a_hold_on_a_replaced_entry_keeps_the_new_one_held() {
        let t = Arc::new(PersistenceTable::new(Duration::from_secs(300), 64).unwrap());
        let now = t0();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(a, BackendId(1), now);
        let old = t.hold(a).unwrap();
        t.insert(a, BackendId(2), now);
        let new = t.hold(a).unwrap();
        drop(old);
        assert_eq!(
            t.get(a, now + Duration::from_secs(1000)),
            Some(BackendId(2)),
            "still held by `new`"
        );
        drop(new);
    }

    #[test]
    fn bad_config() {
        assert!(PersistenceTable::new(Duration::ZERO, 10).is_err());
        assert!(PersistenceTable::new(Duration::from_secs(1), 0).is_err());
    }

    /// Model-based tests: random sequences of the table's operations against a plain
    /// model of what its docs promise (IPVS template semantics, the table's clock).
    mod model {
        use super::*;
        use proptest::prelude::*;

        const TIMEOUT: Duration = Duration::from_secs(60);

        #[derive(Debug, Clone)]
        enum Op {
            Get {
                c: u8,
                t: u16,
            },
            Insert {
                c: u8,
                b: u32,
                t: u16,
            },
            Hold {
                c: u8,
            },
            Drop {
                i: usize,
            },
            Finish {
                i: usize,
                t: u16,
            },
            Remove {
                c: u8,
            },
            Retain {
                keep: u8,
            },
            Export {
                t: u16,
            },
            Restore {
                c: u8,
                b: u32,
                left: Option<u16>,
                t: u16,
            },
        }

        fn ops(clients: u8) -> impl Strategy<Value = Vec<Op>> {
            let c = 0..clients;
            let t = 0u16..400;
            let b = 0u32..4;
            let op = prop_oneof![
                4 => (c.clone(), t.clone()).prop_map(|(c, t)| Op::Get { c, t }),
                4 => (c.clone(), b.clone(), t.clone()).prop_map(|(c, b, t)| Op::Insert { c, b, t }),
                3 => c.clone().prop_map(|c| Op::Hold { c }),
                2 => any::<usize>().prop_map(|i| Op::Drop { i }),
                1 => (any::<usize>(), t.clone()).prop_map(|(i, t)| Op::Finish { i, t }),
                1 => c.clone().prop_map(|c| Op::Remove { c }),
                1 => any::<u8>().prop_map(|keep| Op::Retain { keep }),
                1 => t.clone().prop_map(|t| Op::Export { t }),
                1 => (c, b, proptest::option::of(0u16..120), t)
                    .prop_map(|(c, b, left, t)| Op::Restore { c, b, left, t }),
            ];
            proptest::collection::vec(op, 1..120)
        }

        /// The model's entry: `id` plays the generation's part (unique per entry).
        #[derive(Debug, Clone, Copy)]
        struct M {
            backend: BackendId,
            expires: Instant,
            live: u32,
            id: u64,
        }

        impl M {
            fn is_live(&self, now: Instant) -> bool {
                self.live > 0 || self.expires > now
            }
        }

        struct Model {
            entries: HashMap<IpAddr, M>,
            /// The table's clock: the latest `now` given (times are whole seconds, past
            /// the 1 ms grain).
            clock: Option<Instant>,
            next_id: u64,
        }

        impl Model {
            fn observe(&mut self, now: Instant) {
                self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
            }

            fn new_entry(&mut self, c: IpAddr, backend: BackendId, expires: Instant) {
                self.next_id += 1;
                let id = self.next_id;
                self.entries.insert(
                    c,
                    M {
                        backend,
                        expires,
                        live: 0,
                        id,
                    },
                );
            }
        }

        /// `n` clients, all in two shards of `table` when `crowded`.
        fn clients(table: &PersistenceTable, n: usize, crowded: bool) -> Vec<IpAddr> {
            let ip = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let (first, second) = (table.shard(ip(0)), table.shard(ip(1)));
            (0..100_000)
                .map(ip)
                .filter(|c| {
                    !crowded
                        || std::ptr::eq(table.shard(*c), first)
                        || std::ptr::eq(table.shard(*c), second)
                })
                .take(n)
                .collect()
        }

        /// Runs `ops` on a table of `max_entries` and the model side by side. Entries the
        /// table evicted (only an insertion into a full shard may) are dropped from the
        /// model after checking the eviction was one the docs allow.
        fn run(ops: Vec<Op>, max_entries: usize, crowded: bool) -> Result<(), TestCaseError> {
            let table = Arc::new(PersistenceTable::new(TIMEOUT, max_entries).unwrap());
            let ips = clients(&table, 8, crowded);
            let client = |c: u8| ips[usize::from(c) % ips.len()];
            let base = t0() + Duration::from_secs(10_000);
            let at = |t: u16| base + Duration::from_secs(u64::from(t));
            let mut m = Model {
                entries: HashMap::new(),
                clock: None,
                next_id: 0,
            };
            // Holds: (client, model id, the table's hold).
            let mut holds: Vec<(IpAddr, u64, PersistenceHold)> = Vec::new();
            for op in ops {
                // Each shard's entries before the op, for judging an eviction.
                let before: Vec<(IpAddr, M)> = m.entries.iter().map(|(c, e)| (*c, *e)).collect();
                let mut inserted = None;
                match op {
                    Op::Get { c, t } => {
                        let (c, now) = (client(c), at(t));
                        m.observe(now);
                        let want = match m.entries.get_mut(&c) {
                            Some(e) if e.is_live(now) => {
                                e.expires = e.expires.max(now + TIMEOUT);
                                Some(e.backend)
                            }
                            Some(_) => {
                                m.entries.remove(&c);
                                None
                            }
                            None => None,
                        };
                        prop_assert_eq!(table.get(c, now), want, "get {} at {}", c, t);
                    }
                    Op::Insert { c, b, t } => {
                        let (c, b, now) = (client(c), BackendId(b), at(t));
                        m.observe(now);
                        match m.entries.get_mut(&c) {
                            Some(e) if e.backend == b && e.is_live(now) => {
                                e.expires = e.expires.max(now + TIMEOUT);
                            }
                            _ => {
                                m.new_entry(c, b, now + TIMEOUT);
                                inserted = Some(c);
                            }
                        }
                        table.insert(c, b, now);
                    }
                    Op::Hold { c } => {
                        let c = client(c);
                        let want = m
                            .entries
                            .get_mut(&c)
                            .filter(|e| m.clock.is_none_or(|now| e.is_live(now)));
                        let got = table.hold(c);
                        prop_assert_eq!(got.is_some(), want.is_some(), "hold {}", c);
                        if let (Some(e), Some(h)) = (want, got) {
                            e.live += 1;
                            holds.push((c, e.id, h));
                        }
                    }
                    Op::Drop { i } | Op::Finish { i, .. } if holds.is_empty() => {
                        let _ = i;
                    }
                    Op::Drop { i } => {
                        let (c, id, h) = holds.swap_remove(i % holds.len());
                        release(&mut m, c, id);
                        drop(h);
                    }
                    Op::Finish { i, t } => {
                        let (c, id, h) = holds.swap_remove(i % holds.len());
                        m.observe(at(t));
                        release(&mut m, c, id);
                        h.finish(at(t));
                    }
                    Op::Remove { c } => {
                        m.entries.remove(&client(c));
                        table.remove(client(c));
                    }
                    Op::Retain { keep } => {
                        let kept = |id: BackendId| keep & (1 << id.0) != 0;
                        m.entries.retain(|_, e| kept(e.backend));
                        table.retain_backends(kept);
                    }
                    Op::Export { t } => {
                        let now = at(t);
                        let mut want: Vec<_> = m
                            .entries
                            .iter()
                            .filter(|(_, e)| e.is_live(now))
                            .map(|(c, e)| {
                                let left = if e.live > 0 {
                                    TIMEOUT
                                } else {
                                    e.expires.saturating_duration_since(now)
                                };
                                (*c, e.backend, Some(left))
                            })
                            .collect();
                        let mut got: Vec<_> = table
                            .export(now)
                            .into_iter()
                            .map(|e| (e.client, e.backend, e.remaining))
                            .collect();
                        want.sort();
                        got.sort();
                        prop_assert_eq!(got, want, "export at {}", t);
                    }
                    Op::Restore { c, b, left, t } => {
                        let (c, b, now) = (client(c), BackendId(b), at(t));
                        let left = left.map(|s| Duration::from_secs(u64::from(s)));
                        m.observe(now);
                        let want = !m.entries.get(&c).is_some_and(|e| e.is_live(now));
                        if want {
                            m.new_entry(c, b, now + left.map_or(TIMEOUT, |l| l.min(TIMEOUT)));
                            inserted = Some(c);
                        }
                        prop_assert_eq!(
                            table.restore(c, b, None, left, now),
                            want,
                            "restore {}",
                            c
                        );
                    }
                }
                // What the table evicted: only on an insertion, one entry of the new
                // entry's shard, and one holding a connection only when all held one.
                let gone: Vec<IpAddr> = m
                    .entries
                    .keys()
                    .filter(|c| !table.lock(**c).contains_key(*c))
                    .copied()
                    .collect();
                if let Some(new) = inserted {
                    prop_assert!(!gone.contains(&new), "the new entry {} is kept", new);
                }
                prop_assert!(
                    gone.len() <= usize::from(inserted.is_some()),
                    "evicted {:?}",
                    gone
                );
                for c in gone {
                    let new = inserted.unwrap();
                    prop_assert!(
                        std::ptr::eq(table.shard(c), table.shard(new)),
                        "{} evicted for {} of another shard",
                        c,
                        new
                    );
                    let e = m.entries.remove(&c).unwrap();
                    let shard_mates = before.iter().filter(|(o, _)| {
                        *o != new && std::ptr::eq(table.shard(*o), table.shard(new))
                    });
                    prop_assert!(
                        e.live == 0 || shard_mates.clone().all(|(_, o)| o.live > 0),
                        "{} held a connection, evicted before one holding none",
                        c
                    );
                }
                for s in table.shards.iter() {
                    prop_assert!(s.lock().unwrap().len() <= table.per_shard);
                }
                let held: u32 = m.entries.values().map(|e| e.live).sum();
                let in_table: u32 = table
                    .shards
                    .iter()
                    .map(|s| s.lock().unwrap().values().map(|e| e.live).sum::<u32>())
                    .sum();
                prop_assert_eq!(in_table, held, "live connections counted");
            }
            Ok(())
        }

        fn release(m: &mut Model, c: IpAddr, id: u64) {
            let clock = m.clock;
            if let Some(e) = m.entries.get_mut(&c).filter(|e| e.id == id) {
                e.live -= 1;
                if e.live == 0 {
                    if let Some(end) = clock {
                        e.expires = e.expires.max(end + TIMEOUT);
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Room for every client: the table must do exactly what the model does.
            #[test]
            fn matches_the_model(ops in ops(8)) {
                run(ops, 1024, false)?;
            }

            /// Eight clients in two shards of two entries each: evictions happen, and each
            /// must be one the docs allow.
            #[test]
            fn evicts_only_as_documented(ops in ops(8)) {
                run(ops, 32, true)?;
            }
        }
    }
}
