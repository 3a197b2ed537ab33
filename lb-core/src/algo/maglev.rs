//! `mh`: Maglev consistent hashing (Eisenbud et al., *Maglev: A Fast and Reliable Software
//! Network Load Balancer*, NSDI'16, §3.4; IPVS `ip_vs_mh`).
//!
//! Each candidate has a permutation of the `M` table slots given by an `offset` and a `skip`
//! derived from two hashes of its address (`offset = h1 mod M`, `skip = h2 mod (M−1) + 1`,
//! `M` prime so every `skip` generates the whole table). Candidates take turns claiming their
//! next preferred free slot until the table is full. A key's hash picks a slot in O(1).
//!
//! Weights are honoured as IPVS does: in each turn a candidate claims `weight / gcd` slots,
//! so slot shares follow weight shares (within one turn's worth of slots). When the reduced
//! weights add up to more than `M / 64` (or the candidate count, if larger), each round
//! hands out that many claims in proportion to weight, a candidate's rounding remainder
//! carried to the next round, so shares stay proportional for any number of candidates
//! (as Envoy's weighted Maglev fills by fractional targets). Weights are the configured ones (`mh` does not
//! slow start). A candidate configured with weight 0 takes no slot; a *parked* one (set to
//! weight 0 after the fact, or drained) keeps the slots of its last non-zero weight, as
//! IPVS `ip_vs_mh` builds from `last_weight`, and is never returned: a key landing on it
//! falls back (IPVS `mh-fallback`), so no key of another backend moves.
//!
//! Removing one of `n` candidates moves about `1/n` of keys (the slots it held plus a small
//! reshuffle); adding one moves keys mostly to the new candidate (the paper's Figure 11).
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::maglev::Maglev;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext};
//!
//! let set: Vec<Backend> = (1..=5)
//!     .map(|i| Backend::new(BackendId(i), format!("192.0.2.{i}:80").parse().unwrap()))
//!     .collect();
//! let mh = Maglev::new(&set, 65_537).unwrap();
//! let ctx = SelectContext::key(b"session-42");
//! let first = mh.select(&ctx, &mut |_| true).unwrap().id();
//! assert_eq!(mh.select(&ctx, &mut |_| true).unwrap().id(), first);
//! assert!(Maglev::new(&set, 65_536).is_err()); // not prime
//! ```

use super::hashing::{hash_addr, source_key};
use super::{accepted_from, reduce, table_weight, takes_new, FALLBACK_PROBES};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::scheduler::{Scheduler, SelectContext};

/// The default table size, 65 537: a prime, the smaller of the two table sizes the Maglev
/// paper evaluates (65 537 and 655 373). IPVS `ip_vs_mh` is smaller by default: 4 093
/// slots (`CONFIG_IP_VS_MH_TAB_INDEX` 12 picks `primes[4]`), at most 131 071. A larger
/// table spreads weights more finely and reshuffles fewer keys on a change, for 256 KiB of
/// slots.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// The smallest table size accepted.
pub const MIN_TABLE_SIZE: u32 = 7;
/// The largest table size accepted (≈ 2²⁴; 64 MiB of slots).
pub const MAX_TABLE_SIZE: u32 = 16_777_259;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_5f6f; // "maglev_o"
const SKIP_SEED: u64 = 0x6d61_676c_6576_5f73; // "maglev_s"

/// Whether `n` is prime (trial division; table sizes are ≤ 2²⁴, so ≤ 4096 divisions).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// A built Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    /// Candidates holding slots, parked ones included.
    members: Vec<Backend>,
    /// Whether each member takes new connections.
    usable: Vec<bool>,
    /// The members that take new connections.
    backends: Vec<Backend>,
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table of `table_size` slots over `candidates`, from their configured
    /// weights. Candidates configured with weight 0 take no slot; parked ones (weight 0 with
    /// a last weight, or drained) hold the slots of their last weight but are never picked;
    /// neither is among [`backends`](Scheduler::backends). With no candidate taking new
    /// connections the table is empty and picks return `None`.
    ///
    /// # Errors
    /// [`Error::TableSizeNotPrime`] or [`Error::TableSizeOutOfRange`]
    /// (`7..=16 777 259`).
    pub fn new(candidates: &[Backend], table_size: u32) -> Result<Self> {
        if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&table_size) {
            return Err(Error::TableSizeOutOfRange {
                size: table_size.into(),
                min: MIN_TABLE_SIZE.into(),
                max: MAX_TABLE_SIZE.into(),
            });
        }
        if !is_prime(table_size.into()) {
            return Err(Error::TableSizeNotPrime(table_size.into()));
        }
        let m = u64::from(table_size);
        // Configured weight 0 takes no slot; parked candidates keep theirs. With no candidate
        // taking new connections the table is empty (picks return None).
        let candidates: Vec<Backend> = candidates
            .iter()
            .filter(|b| table_weight(b) > 0)
            .cloned()
            .collect();
        let usable: Vec<bool> = candidates.iter().map(takes_new).collect();
        let backends: Vec<Backend> = candidates
            .iter()
            .filter(|b| takes_new(b))
            .cloned()
            .collect();
        let n = candidates.len();
        if backends.is_empty() {
            return Ok(Self {
                members: candidates,
                usable,
                backends,
                table: Vec::new(),
            });
        }
        let weights = reduce(candidates.iter().map(table_weight).collect());
        let total: u64 = weights.iter().sum();
        let budget = (m / 64).max(n as u64);
        // Claims per round: the reduced weights when they fit the budget; else `budget`
        // claims a round shared in proportion to weight, each candidate carrying its
        // rounding remainder to the next round (so shares stay exact over the rounds, where
        // scaling each weight down and rounding it up to 1 gave every candidate one turn
        // once there were about `M / 64` of them, whatever its weight).
        let scaled = total > budget;
        let mut turns = if scaled { vec![0; n] } else { weights.clone() };
        // Remainders start at one half: each round's claims are rounded to nearest.
        let mut credit = vec![total / 2; n];
        // Current permutation position of each candidate: starts at offset, steps by skip.
        let mut pos = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        for b in &candidates {
            pos.push(hash_addr(b.addr(), OFFSET_SEED) % m);
            skip.push(hash_addr(b.addr(), SKIP_SEED) % (m - 1) + 1);
        }
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; table_size as usize];
        let mut filled = 0u64;
        'fill: loop {
            if scaled {
                for i in 0..n {
                    // weight < 2³², budget < 2²⁴ or the candidate count: no overflow.
                    credit[i] += weights[i] * budget;
                    turns[i] = credit[i] / total;
                    credit[i] %= total;
                }
            }
            for i in 0..n {
                for _ in 0..turns[i] {
                    // Next preferred slot that is still free.
                    let mut c = pos[i];
                    while table[c as usize] != EMPTY {
                        c += skip[i];
                        if c >= m {
                            c -= m;
                        }
                    }
                    table[c as usize] = i as u32;
                    c += skip[i];
                    if c >= m {
                        c -= m;
                    }
                    pos[i] = c;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Ok(Self {
            members: candidates,
            usable,
            backends,
            table,
        })
    }

    /// The table size M.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// How many slots each candidate holds, in candidate order (among those holding slots:
    /// all but the ones configured with weight 0; parked ones included).
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members.len()];
        for &i in &self.table {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The slot's member, if it takes new connections and `accept` takes it.
    #[inline]
    fn slot(&self, hash: u64, accept: &mut dyn FnMut(&Backend) -> bool) -> Option<&Backend> {
        // Lemire's multiply-shift range reduction: uniform, no division.
        let idx = ((u128::from(hash) * self.table.len() as u128) >> 64) as usize;
        let m = self.table[idx] as usize;
        let b = &self.members[m];
        (self.usable[m] && accept(b)).then_some(b)
    }
}

/// SplitMix64's finaliser: a fresh hash for a fallback probe.
#[inline]
pub(crate) fn remix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Scheduler for Maglev {
    /// The key's slot; when parked or refused, up to
    /// 128 re-hashed slots (IPVS `mh-fallback`
    /// re-hashes the key with a new offset per probe, up to the table size), then the
    /// accepted candidates from a position derived from the key. It used to stop after 8
    /// probes and send the rest to the first accepted candidate: with most of the table
    /// parked, a fifth of the keys or more.
    #[inline]
    fn select(
        &self,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        if self.table.is_empty() {
            return None;
        }
        let mut h = source_key(ctx);
        for _ in 0..=FALLBACK_PROBES {
            if let Some(b) = self.slot(h, accept) {
                return Some(b);
            }
            h = remix(h);
        }
        accepted_from(&self.backends, h, accept)
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::weighted;
    use crate::{BackendId, Weight};
    use std::net::SocketAddr;

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(MAX_TABLE_SIZE.into()));
        assert!(!is_prime(65_535));
        assert!(!is_prime(1));
        assert!(Maglev::new(&[], 4).is_err());
        assert!(matches!(
            Maglev::new(&[], 20_000_000),
            Err(Error::TableSizeOutOfRange { .. })
        ));
    }

    /// All-zero weights used to loop forever; now the table is empty.
    #[test]
    fn all_zero_weights_build_an_empty_table() {
        let mh = Maglev::new(&weighted(&[0, 0, 0]), 251).unwrap();
        assert_eq!(mh.table_size(), 0);
        assert!(mh
            .select(&SelectContext::key(b"k"), &mut |_| true)
            .is_none());
    }

    /// Scaling down (reduced weights above M/64) must not round a weight-0 candidate up to
    /// one slot per turn.
    #[test]
    fn zero_weight_gets_no_slot_when_weights_are_scaled() {
        let mh = Maglev::new(&weighted(&[0, 65_535, 65_534]), 65_537).unwrap();
        assert!(mh.backends().iter().all(|b| b.id() != BackendId(0)));
        assert_eq!(mh.slot_counts().iter().sum::<usize>(), 65_537);
        for key in 0..2000u32 {
            let bytes = key.to_be_bytes();
            let ctx = SelectContext::key(&bytes);
            let b = mh.select(&ctx, &mut |_| true).unwrap();
            assert_ne!(b.id(), BackendId(0));
        }
    }

    #[test]
    fn weighted_slot_shares_within_one_percent() {
        let set: Vec<Backend> = (1..=10u32)
            .map(|i| {
                Backend::new(BackendId(i), format!("10.0.0.{i}:80").parse().unwrap())
                    .with_weight(Weight::new(u64::from(i)).unwrap())
            })
            .collect();
        let mh = Maglev::new(&set, DEFAULT_TABLE_SIZE).unwrap();
        let counts = mh.slot_counts();
        let total_w: f64 = (1..=10).sum::<u32>() as f64;
        for (i, c) in counts.iter().enumerate() {
            let want = (i + 1) as f64 / total_w;
            let got = *c as f64 / f64::from(DEFAULT_TABLE_SIZE);
            assert!(
                (got - want).abs() / want < 0.01,
                "backend {i}: {got} vs {want}"
            );
        }
    }

    /// Weights hold with many candidates: once the reduced weights passed the budget of
    /// claims per round (`M / 64` = 1 024 here), each was scaled down and rounded up to 1,
    /// so at 1 000 candidates of weights 7 and 2 every one got one turn a round (the light
    /// half's share 0.496 instead of 2/9).
    #[test]
    fn weighted_shares_hold_with_many_candidates() {
        for n in [100u32, 300, 1000, 3000] {
            let set: Vec<Backend> = (0..n)
                .map(|i| {
                    let addr =
                        SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 80);
                    Backend::new(BackendId(i), addr)
                        .with_weight(Weight::new(if i % 2 == 0 { 7 } else { 2 }).unwrap())
                })
                .collect();
            let mh = Maglev::new(&set, DEFAULT_TABLE_SIZE).unwrap();
            let counts = mh.slot_counts();
            let light: usize = counts.iter().skip(1).step_by(2).sum();
            let share = light as f64 / f64::from(DEFAULT_TABLE_SIZE);
            assert!(
                (share - 2.0 / 9.0).abs() < 0.01,
                "n={n}: light share {share}"
            );
        }
    }

    /// With most of the table parked, 8 probes used to leave `p⁸` of the parked members'
    /// keys (10 of 12 parked: 23 %) to the first accepted member; they now spread evenly.
    #[test]
    fn mostly_parked_table_spreads_evenly() {
        let mut set = weighted(&[1; 12]);
        for b in &mut set[..10] {
            b.set_weight(Weight::ZERO);
        }
        let mh = Maglev::new(&set, DEFAULT_TABLE_SIZE).unwrap();
        let mut counts = [0u32; 12];
        for key in 0..100_000u32 {
            let bytes = key.to_be_bytes();
            let ctx = SelectContext::key(&bytes);
            counts[mh.select(&ctx, &mut |_| true).unwrap().id().0 as usize] += 1;
        }
        for c in &counts[10..] {
            let share = f64::from(*c) / 100_000.0;
            assert!((share - 0.5).abs() < 0.05, "{counts:?}");
        }
    }
}
