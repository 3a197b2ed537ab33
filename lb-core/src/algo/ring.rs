//! `ring_hash`: consistent hashing on a ring (Karger et al. 1997; the Ketama layout used by
//! memcached clients and Envoy's `RING_HASH`).
//!
//! Each candidate places `weight × points_per_weight` points on a 64-bit ring, at hashes of
//! its address and the point's index. A key goes to the first point at or after its hash.
//! A candidate's points depend only on its own address and weight, so adding a candidate
//! moves keys only to it, and removing one moves only its keys (about `1/n`). When the total
//! would exceed `max_ring_size`, points are scaled down proportionally (each candidate ≥ 1);
//! that scaling depends on the whole set and weakens the guarantee, so size the ring for it.
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::ring::RingHash;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext};
//!
//! let set: Vec<Backend> = (1..=3)
//!     .map(|i| Backend::new(BackendId(i), format!("192.0.2.{i}:80").parse().unwrap()))
//!     .collect();
//! let ring = RingHash::new(&set, 160, 1 << 20).unwrap();
//! assert_eq!(ring.ring_len(), 480);
//! let ctx = SelectContext::key(b"/index.html");
//! let _b = ring.select(&ctx, &mut |_| true).unwrap();
//! ```

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::hashing::source_key;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::scheduler::{first_accepted, Scheduler, SelectContext};

const RING_SEED: u64 = 0x6c62_5f72_696e_675f; // "lb_ring_"

/// The largest ring accepted, 2²⁴ points.
pub const MAX_RING_SIZE: u32 = 1 << 24;

const INDEX_SHIFT: u32 = 48;
const INDEX_BUCKETS: usize = 1 << (64 - INDEX_SHIFT);

/// A built hash ring.
#[derive(Debug)]
pub struct RingHash {
    backends: Vec<Backend>,
    /// (point hash, candidate index), sorted.
    ring: Vec<(u64, u32)>,
    /// `index[b]` is the first ring position whose hash has top 16 bits ≥ `b` (2¹⁶ + 1
    /// entries), so a lookup searches only one bucket instead of the whole ring.
    index: Vec<u32>,
}

impl RingHash {
    /// Builds a ring with `points_per_weight` points per unit of effective weight, at most
    /// `max_ring_size` points in all. Candidates of effective weight 0 place no point (and
    /// are not among [`backends`](Scheduler::backends)), even when points are scaled down;
    /// with none above 0 the ring is empty and picks return `None`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `points_per_weight` is 0, and
    /// [`Error::TableSizeOutOfRange`] when `max_ring_size` is outside `1..=2²⁴`.
    pub fn new(candidates: &[Backend], points_per_weight: u32, max_ring_size: u32) -> Result<Self> {
        if points_per_weight == 0 {
            return Err(Error::InvalidConfig {
                setting: "points_per_weight",
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=MAX_RING_SIZE).contains(&max_ring_size) {
            return Err(Error::TableSizeOutOfRange {
                size: max_ring_size.into(),
                min: 1,
                max: MAX_RING_SIZE.into(),
            });
        }
        // Weight 0 places no point; with none above 0 the ring is empty (picks return None).
        let candidates: Vec<Backend> = candidates
            .iter()
            .filter(|b| !b.effective_weight().is_zero())
            .cloned()
            .collect();
        // In u128: weight × points_per_weight × max_ring_size can pass 2⁶⁴.
        let wanted: Vec<u128> = candidates
            .iter()
            .map(|b| u128::from(b.effective_weight().get()) * u128::from(points_per_weight))
            .collect();
        let total: u128 = wanted.iter().sum();
        let size = u128::from(max_ring_size);
        // Each at most `max_ring_size` (≤ 2²⁴) after scaling, so the casts are exact.
        let points: Vec<u64> = wanted
            .iter()
            .map(|&p| {
                if total > size {
                    (p * size / total).max(1) as u64
                } else {
                    p as u64
                }
            })
            .collect();
        let mut ring = Vec::with_capacity(points.iter().sum::<u64>() as usize);
        let mut key = [0u8; 22];
        for (i, b) in candidates.iter().enumerate() {
            let addr = b.addr();
            let len = match addr.ip() {
                std::net::IpAddr::V4(v4) => {
                    key[..4].copy_from_slice(&v4.octets());
                    4
                }
                std::net::IpAddr::V6(v6) => {
                    key[..16].copy_from_slice(&v6.octets());
                    16
                }
            };
            key[len..len + 2].copy_from_slice(&addr.port().to_be_bytes());
            for p in 0..points[i] as u32 {
                key[len + 2..len + 6].copy_from_slice(&p.to_be_bytes());
                ring.push((xxh3_64_with_seed(&key[..len + 6], RING_SEED), i as u32));
            }
        }
        ring.sort_unstable();
        let mut index = Vec::with_capacity(INDEX_BUCKETS + 1);
        let mut pos = 0usize;
        for b in 0..=INDEX_BUCKETS as u64 {
            while pos < ring.len() && (ring[pos].0 >> INDEX_SHIFT) < b {
                pos += 1;
            }
            index.push(pos as u32);
        }
        Ok(Self {
            backends: candidates,
            ring,
            index,
        })
    }

    /// The number of points on the ring.
    pub fn ring_len(&self) -> usize {
        self.ring.len()
    }
}

impl Scheduler for RingHash {
    /// The first point at or after the key's hash (wrapping); when refused, the following
    /// points' candidates in ring order, then any accepted candidate. A 2¹⁶-bucket index on
    /// the hashes' top bits narrows the search to one bucket: O(1) expected.
    #[inline]
    fn select(
        &self,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        let len = self.ring.len();
        if len == 0 {
            return None;
        }
        let h = source_key(ctx);
        let bucket = (h >> INDEX_SHIFT) as usize;
        let (lo, hi) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        let start = lo + self.ring[lo..hi].partition_point(|&(p, _)| p < h);
        let probes = len.min(64);
        for off in 0..probes {
            let (_, i) = self.ring[(start + off) % len];
            let b = &self.backends[i as usize];
            if accept(b) {
                return Some(b);
            }
        }
        first_accepted(&self.backends, accept)
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::weighted;
    use crate::BackendId;

    /// Scaling points down to `max_ring_size` must not round a weight-0 candidate up to one
    /// point.
    #[test]
    fn zero_weight_places_no_point_when_scaled() {
        let ring = RingHash::new(&weighted(&[0, 3, 5]), 160, 64).unwrap();
        assert!(ring
            .ring
            .iter()
            .all(|&(_, i)| ring.backends[i as usize].id() != BackendId(0)));
        assert!(ring.backends().iter().all(|b| b.id() != BackendId(0)));
        assert!(ring.ring_len() <= 64 + 2);
    }

    /// weight × points_per_weight × max_ring_size passed 2⁶⁴ when scaling down: a panic in
    /// debug builds, a wrapped point count in release.
    #[test]
    fn scaling_large_weights_does_not_overflow() {
        let ring = RingHash::new(&weighted(&[65_535, 1]), u32::MAX, 1 << 17).unwrap();
        assert!(ring.ring_len() <= (1 << 17) + 2);
        let big = ring.ring.iter().filter(|&&(_, i)| i == 0).count();
        assert!(big > (1 << 17) - 10, "{big}");
    }
}
