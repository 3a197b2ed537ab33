//! Hash keys and the IPVS table hashes `sh` (source) and `dh` (destination).
//!
//! Keys hash with XXH3-64 under fixed seeds — never a per-process random seed — so two LB
//! nodes with the same candidates send the same key to the same backend, and a node restart
//! changes nothing. Backends are identified by their address (IP octets and port), never
//! their label.
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::hashing::SourceHash;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext};
//!
//! let set: Vec<Backend> = (1..=4)
//!     .map(|i| Backend::new(BackendId(i), format!("192.0.2.{i}:80").parse().unwrap()))
//!     .collect();
//! let a = SourceHash::new(&set);
//! let b = SourceHash::new(&set); // another node, same set
//! let ctx = SelectContext::client("198.51.100.7:40000".parse().unwrap());
//! assert_eq!(
//!     a.select(&ctx, &mut |_| true).unwrap().id(),
//!     b.select(&ctx, &mut |_| true).unwrap().id()
//! );
//! ```

use std::net::{IpAddr, SocketAddr};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::maglev::remix;
use super::{accepted_from, reduce, table_weight, takes_new, FALLBACK_PROBES};
use crate::backend::Backend;
use crate::scheduler::{Scheduler, SelectContext};

/// Seed for hashing request keys (client addresses, caller keys).
pub const KEY_SEED: u64 = 0x6c62_6b65_795f_7631; // "lbkey_v1"

/// Hashes an IP address's octets. An IPv4-mapped IPv6 address hashes as the IPv4 address
/// it maps, so a client keys alike through an IPv4 and a dual-stack listener.
#[inline]
pub fn hash_ip(ip: IpAddr, seed: u64) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => xxh3_64_with_seed(&v4.octets(), seed),
        IpAddr::V6(v6) => xxh3_64_with_seed(&v6.octets(), seed),
    }
}

/// Hashes a socket address (IP octets then the port, big-endian): a backend's identity.
#[inline]
pub fn hash_addr(addr: SocketAddr, seed: u64) -> u64 {
    let mut buf = [0u8; 18];
    let len = match addr.ip() {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    buf[len..len + 2].copy_from_slice(&addr.port().to_be_bytes());
    xxh3_64_with_seed(&buf[..len + 2], seed)
}

/// The hash of a request's key: the caller's `hash_key` if given, else the client's IP
/// address, else 0 (every keyless request maps to one place).
#[inline]
pub fn source_key(ctx: &SelectContext<'_>) -> u64 {
    if let Some(k) = ctx.hash_key {
        xxh3_64_with_seed(k, KEY_SEED)
    } else if let Some(c) = ctx.client {
        hash_ip(c.ip(), KEY_SEED)
    } else {
        0
    }
}

/// The hash of a request's destination: the destination IP address if given, else as
/// [`source_key`].
#[inline]
pub fn destination_key(ctx: &SelectContext<'_>) -> u64 {
    match ctx.destination {
        Some(d) => hash_ip(d.ip(), KEY_SEED),
        None => source_key(ctx),
    }
}

/// The most buckets a `sh`/`dh` table holds, 2²⁰.
const MAX_BUCKETS: u64 = 1 << 20;

/// A bucket table as IPVS `sh`/`dh` build it: buckets are handed out to candidates in turn,
/// each candidate taking `weight / gcd` consecutive buckets per turn, until the table is full.
/// The table has at least 256 buckets (IPVS's default) and at least 8 per candidate where
/// that fits, and always holds a whole number of turns (at most 2²⁰ buckets), so bucket
/// shares equal weight shares exactly. When one turn alone would exceed 2²⁰ buckets, the
/// weights are first scaled down proportionally to fit (each stays ≥ 1, as `swrr` and `mh`
/// do), so shares then match weights within about `n / 2²⁰`. Keys are spread over it with a
/// multiply-shift range reduction.
///
/// Weights are the configured ones (hash tables do not slow start). A *parked* candidate
/// (weight 0 with a last non-zero weight, or drained) keeps the buckets of its last weight
/// and is never returned: a key landing on it falls back as below, so no key of another
/// backend moves. Candidates configured with weight 0 take no bucket; with no candidate
/// taking new connections, picks return `None`.
///
/// Where IPVS differs (Linux `net/netfilter/ipvs/ip_vs_sh.c`, `ip_vs_dh.c`):
/// `ip_vs_sh_reassign` hands every destination, weight 0 included, `weight` consecutive
/// buckets per turn, moving on once `++d_count >= weight`, so a weight-0 destination keeps
/// one bucket per turn (a weight-1 share), not its last weight's; `ip_vs_dh_reassign` gives
/// each destination one bucket per turn whatever its weight. A lookup landing on a weight-0
/// destination fails (no destination, the connection is not scheduled) for `dh` always and
/// for `sh` unless the service has the `sh-fallback` flag, in which case
/// `ip_vs_sh_get_fallback` tries consecutive buckets (its offset is added after hashing).
/// Ours deliberately keeps the parked candidate's last-weight share (so nothing else moves
/// when it parks or returns, whatever its weight), always falls back, and re-hashes on each
/// probe so its clients spread over the others by weight.
#[derive(Debug)]
struct BucketTable {
    /// Candidates holding buckets, parked ones included.
    members: Vec<Backend>,
    /// Whether each member takes new connections.
    usable: Vec<bool>,
    /// The members that take new connections.
    backends: Vec<Backend>,
    buckets: Vec<u32>,
}

impl BucketTable {
    fn new(candidates: &[Backend]) -> Self {
        let members: Vec<Backend> = candidates
            .iter()
            .filter(|b| table_weight(b) > 0)
            .cloned()
            .collect();
        let usable: Vec<bool> = members.iter().map(takes_new).collect();
        let backends: Vec<Backend> = members.iter().filter(|b| takes_new(b)).cloned().collect();
        let n = members.len();
        if backends.is_empty() {
            return Self {
                members,
                usable,
                backends,
                buckets: Vec::new(),
            };
        }
        let mut w = reduce(members.iter().map(table_weight).collect());
        let mut turn: u64 = w.iter().sum();
        if turn > MAX_BUCKETS {
            // Leave room for the rounding up to 1, so the scaled turn still fits.
            let budget = MAX_BUCKETS.saturating_sub(n as u64).max(n as u64);
            for x in &mut w {
                *x = (*x * budget / turn).max(1);
            }
            turn = w.iter().sum();
        }
        let want = (8 * n as u64).max(256);
        let turns = want.div_ceil(turn).min(MAX_BUCKETS / turn).max(1);
        let size = (turn * turns) as usize;
        let mut buckets = Vec::with_capacity(size);
        let (mut i, mut taken) = (0usize, 0u64);
        while buckets.len() < size {
            buckets.push(i as u32);
            taken += 1;
            if taken >= w[i] {
                i = (i + 1) % n;
                taken = 0;
            }
        }
        Self {
            members,
            usable,
            backends,
            buckets,
        }
    }

    /// The usable, accepted member of bucket `i`, if it is one.
    #[inline]
    fn at(&self, i: usize, accept: &mut dyn FnMut(&Backend) -> bool) -> Option<&Backend> {
        let m = self.buckets[i] as usize;
        let b = &self.members[m];
        (self.usable[m] && accept(b)).then_some(b)
    }

    /// The key's bucket. When its backend is parked or refused, up to
    /// [`FALLBACK_PROBES`] buckets at fresh hashes of the key, each derived from the last,
    /// then the accepted candidates from a position derived from the key. Buckets lie in
    /// runs per member, so a probe must land anywhere, not on the next bucket: a walk from
    /// inside a parked run always reaches the same next member, which then took most of
    /// the parked member's clients.
    #[inline]
    fn select(&self, hash: u64, accept: &mut dyn FnMut(&Backend) -> bool) -> Option<&Backend> {
        let len = self.buckets.len();
        if len == 0 {
            return None;
        }
        let slot = |h: u64| ((u128::from(h) * len as u128) >> 64) as usize;
        let mut h = hash;
        for _ in 0..=FALLBACK_PROBES {
            if let Some(b) = self.at(slot(h), accept) {
                return Some(b);
            }
            h = remix(h);
        }
        accepted_from(&self.backends, h, accept)
    }
}

macro_rules! bucket_scheduler {
    ($(#[$doc:meta])* $name:ident, $key:path) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            table: BucketTable,
        }

        impl $name {
            /// Builds over `candidates` from their configured weights; parked ones (weight 0
            /// with a last weight, or drained) keep their buckets and are never returned;
            /// those configured with weight 0 take no bucket.
            pub fn new(candidates: &[Backend]) -> Self {
                Self {
                    table: BucketTable::new(candidates),
                }
            }
        }

        impl Scheduler for $name {
            #[inline]
            fn select(
                &self,
                ctx: &SelectContext<'_>,
                accept: &mut dyn FnMut(&Backend) -> bool,
            ) -> Option<&Backend> {
                self.table.select($key(ctx), accept)
            }

            fn backends(&self) -> &[Backend] {
                &self.table.backends
            }
        }
    };
}

bucket_scheduler!(
    /// `sh`: source hashing (IPVS `ip_vs_sh`): the client address (or caller key) indexes a
    /// bucket table; one client always reaches one backend while the candidates are unchanged.
    SourceHash,
    source_key
);

bucket_scheduler!(
    /// `dh`: destination hashing (IPVS `ip_vs_dh`): as `sh`, keyed on the destination address
    /// (useful for caches: one destination, one backend).
    DestinationHash,
    destination_key
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::weighted;
    use crate::{BackendId, Weight};

    #[test]
    fn buckets_follow_weights() {
        let set = [
            Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap())
                .with_weight(Weight::new(3).unwrap()),
            Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap())
                .with_weight(Weight::new(1).unwrap()),
        ];
        let t = BucketTable::new(&set);
        assert_eq!(t.buckets.len(), 256);
        assert_eq!(t.buckets.iter().filter(|&&i| i == 0).count(), 192);
    }

    /// Each candidate's share of buckets, in candidate order.
    fn shares(t: &BucketTable) -> Vec<f64> {
        let mut counts = vec![0usize; t.members.len()];
        for &b in &t.buckets {
            counts[b as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / t.buckets.len() as f64)
            .collect()
    }

    /// The review's case: one turn is 16·65535 + 65534 buckets, above the 2²⁰ cap; the last
    /// candidate must still get its 1/17, not a truncated few buckets.
    #[test]
    fn large_weights_are_scaled_not_truncated() {
        let mut w = vec![65_535; 16];
        w.push(65_534);
        let t = BucketTable::new(&weighted(&w));
        assert!(t.buckets.len() as u64 <= MAX_BUCKETS);
        let s = shares(&t);
        assert!((s[16] - 1.0 / 17.0).abs() < 1e-3, "last share {}", s[16]);
    }

    #[test]
    fn zero_weights_take_no_bucket() {
        let t = BucketTable::new(&weighted(&[0, 3]));
        assert_eq!(t.backends.len(), 1);
        assert_eq!(t.backends[0].id(), BackendId(1));
        assert!(t.buckets.iter().all(|&b| b == 0));
        let all_zero = SourceHash::new(&weighted(&[0, 0]));
        let ctx = SelectContext::client("192.0.2.1:1".parse().unwrap());
        assert!(all_zero.select(&ctx, &mut |_| true).is_none());
        assert!(all_zero.backends().is_empty());
    }

    /// A parked candidate (set to weight 0, or drained) holds its buckets but is never
    /// returned; with only parked candidates a pick is `None`.
    #[test]
    fn parked_candidates_hold_buckets_but_are_never_picked() {
        let mut set = weighted(&[2, 2, 2]);
        set[1].set_weight(Weight::ZERO);
        set[2] = set[2].clone().with_admin(crate::AdminState::Drain);
        let s = SourceHash::new(&set);
        assert_eq!(s.table.members.len(), 3);
        assert_eq!(s.backends().len(), 1);
        for i in 0..500u32 {
            let ctx = SelectContext::client(SocketAddr::new(i.to_be_bytes().into(), 1));
            assert_eq!(s.select(&ctx, &mut |_| true).unwrap().id(), BackendId(0));
        }
        let only_parked = SourceHash::new(&set[1..]);
        let ctx = SelectContext::client("192.0.2.1:1".parse().unwrap());
        assert!(only_parked.select(&ctx, &mut |_| true).is_none());
    }

    /// Where the clients of a parked member go, as shares of them per member.
    fn fallback_shares(s: &SourceHash, parked: BackendId, n: usize) -> Vec<f64> {
        let full = SourceHash::new(
            &s.table
                .members
                .iter()
                .map(|b| {
                    let mut b = b.clone();
                    if b.id() == parked {
                        b.set_weight(b.last_weight());
                        b = b.with_admin(crate::AdminState::Ready);
                    }
                    b
                })
                .collect::<Vec<_>>(),
        );
        let mut counts = vec![0usize; n];
        let mut total = 0;
        for i in 0..200_000u32 {
            let ctx = SelectContext::client(SocketAddr::new(i.to_be_bytes().into(), 1));
            if full.select(&ctx, &mut |_| true).unwrap().id() != parked {
                continue;
            }
            total += 1;
            counts[s.select(&ctx, &mut |_| true).unwrap().id().0 as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / f64::from(total))
            .collect()
    }

    /// A key on a parked member used to fall back to a walk of consecutive buckets; as a
    /// member's buckets lie in one run, the walk from inside a parked run nearly always
    /// reached the same next member (4 equal weights, one parked: the next got about half
    /// its clients; weights 100, 1, 1 with the first parked: the second got them all).
    /// Every probe is now a fresh hash: the clients spread by weight.
    #[test]
    fn a_parked_members_clients_spread_by_weight() {
        let mut set = weighted(&[10, 10, 10, 10]);
        set[1].set_weight(Weight::ZERO);
        let shares = fallback_shares(&SourceHash::new(&set), BackendId(1), 4);
        for i in [0, 2, 3] {
            let fair = 1.0 / 3.0;
            assert!((shares[i] - fair).abs() < 0.2 * fair, "{i}: {shares:?}");
        }
        let mut set = weighted(&[100, 1, 1]);
        set[0] = set[0].clone().with_admin(crate::AdminState::Drain);
        let shares = fallback_shares(&SourceHash::new(&set), BackendId(0), 3);
        for i in [1, 2] {
            assert!((shares[i] - 0.5).abs() < 0.1, "{i}: {shares:?}");
        }
    }

    proptest::proptest! {
        /// Bucket shares follow weight shares (within 0.1 percentage point), whatever the
        /// weights; weight-0 candidates get nothing.
        #[test]
        fn bucket_shares_match_weights(
            weights in proptest::collection::vec(
                proptest::prop_oneof![1 => proptest::strategy::Just(0u64), 4 => 1u64..=65_535, 2 => 1u64..=8],
                1..40,
            )
        ) {
            let t = BucketTable::new(&weighted(&weights));
            let total: u64 = weights.iter().sum();
            proptest::prop_assert!(t.buckets.len() as u64 <= MAX_BUCKETS);
            if total == 0 {
                proptest::prop_assert!(t.buckets.is_empty());
                return Ok(());
            }
            let s = shares(&t);
            let nonzero: Vec<u64> = weights.iter().copied().filter(|&w| w > 0).collect();
            proptest::prop_assert_eq!(s.len(), nonzero.len());
            for (i, (&got, &w)) in s.iter().zip(&nonzero).enumerate() {
                let want = w as f64 / total as f64;
                proptest::prop_assert!((got - want).abs() < 1e-3, "{}: {} vs {}", i, got, want);
            }
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Fixed seeds: this value must never change between releases, or two nodes of
        // different versions would disagree.
        assert_eq!(
            hash_ip("198.18.0.1".parse().unwrap(), KEY_SEED),
            0x9138_F9FD_213F_0816
        );
        // An IPv4 client seen through a dual-stack listener keys as itself.
        assert_eq!(
            hash_ip("::ffff:198.18.0.1".parse().unwrap(), KEY_SEED),
            hash_ip("198.18.0.1".parse().unwrap(), KEY_SEED)
        );
        assert_ne!(
            hash_addr("198.18.0.1:80".parse().unwrap(), KEY_SEED),
            hash_addr("198.18.0.1:81".parse().unwrap(), KEY_SEED)
        );
    }

    #[test]
    fn dh_keys_on_destination() {
        let set: Vec<Backend> = (1..=8)
            .map(|i| Backend::new(BackendId(i), format!("127.0.0.1:{i}").parse().unwrap()))
            .collect();
        let s = DestinationHash::new(&set);
        let d: SocketAddr = "203.0.113.9:80".parse().unwrap();
        let first = s
            .select(
                &SelectContext {
                    destination: Some(d),
                    client: Some("192.0.2.1:1".parse().unwrap()),
                    hash_key: None,
                },
                &mut |_| true,
            )
            .unwrap()
            .id();
        for c in 2..50u8 {
            let ctx = SelectContext {
                destination: Some(d),
                client: Some(SocketAddr::new([192, 0, 2, c].into(), 1)),
                hash_key: None,
            };
            assert_eq!(s.select(&ctx, &mut |_| true).unwrap().id(), first);
        }
    }
}
