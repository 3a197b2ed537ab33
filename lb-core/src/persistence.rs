//! Client → backend persistence with a timeout (keepalived/IPVS `persistence_timeout`,
//! HAProxy `stick-table`), in bounded memory.
//!
//! The table is split into 16 shards, each a `Mutex<HashMap>` preallocated to its share of
//! `max_entries`, so lookups and inserts do not allocate. When a shard is full, expired
//! entries are swept; if none expired, the entry closest to expiry among a few is evicted.
//! With persistence on, a pick takes one shard lock; without it, none.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::persistence::PersistenceTable;
//! use lb_core::BackendId;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let t = PersistenceTable::new(Duration::from_secs(300), 1024).unwrap();
//! let client = "198.51.100.7".parse().unwrap();
//! t.insert(client, BackendId(2), now);
//! assert_eq!(t.get(client, now + Duration::from_secs(299)), Some(BackendId(2)));
//! assert_eq!(t.get(client, now + Duration::from_secs(700)), None);
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::backend::BackendId;
use crate::error::{Error, Result};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    backend: BackendId,
    /// When the entry expires; `None`: never (a timeout too large for `Instant`).
    expires: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
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

/// A bounded, expiring client → backend table.
#[derive(Debug)]
pub struct PersistenceTable {
    timeout: Duration,
    per_shard: usize,
    shards: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
}

impl PersistenceTable {
    /// A table whose entries live `timeout` after their last use, holding at most
    /// `max_entries` (rounded up to a multiple of 16). A timeout that takes a deadline past
    /// what [`Instant`] can hold means the entries never expire (no panic).
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
            .map(|_| Mutex::new(HashMap::with_capacity(per_shard)))
            .collect();
        Ok(Self {
            timeout,
            per_shard,
            shards,
        })
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, Entry>> {
        let h = super::algo::hashing::hash_ip(client, 0x7065_7273);
        &self.shards[(h as usize) % SHARDS]
    }

    /// The client's backend if its entry has not expired; refreshes the entry's timeout to
    /// `now + timeout`, never shortening it (a `now` earlier than a previous one leaves the
    /// entry's deadline where it was).
    pub fn get(&self, client: IpAddr, now: Instant) -> Option<BackendId> {
        let mut map = self
            .shard(client)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(&client) {
            Some(e) if e.is_live(now) => {
                e.expires = later(e.expires, deadline(now, self.timeout));
                Some(e.backend)
            }
            Some(_) => {
                map.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Records (or replaces) the client's backend.
    pub fn insert(&self, client: IpAddr, backend: BackendId, now: Instant) {
        let mut map = self
            .shard(client)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&client) {
            map.retain(|_, e| e.is_live(now));
            if map.len() >= self.per_shard {
                // `None` (never) sorts last.
                let victim = map
                    .iter()
                    .take(8)
                    .min_by_key(|(_, e)| (e.expires.is_none(), e.expires))
                    .map(|(k, _)| *k);
                if let Some(v) = victim {
                    map.remove(&v);
                }
            }
        }
        map.insert(
            client,
            Entry {
                backend,
                expires: deadline(now, self.timeout),
            },
        );
    }

    /// Drops the client's entry.
    pub fn remove(&self, client: IpAddr) {
        self.shard(client)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client);
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

    #[test]
    fn bad_config() {
        assert!(PersistenceTable::new(Duration::ZERO, 10).is_err());
        assert!(PersistenceTable::new(Duration::from_secs(1), 0).is_err());
    }
}
