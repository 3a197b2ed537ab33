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

use super::reduced_weights;
use crate::backend::Backend;
use crate::scheduler::{first_accepted, Scheduler, SelectContext};

/// Seed for hashing request keys (client addresses, caller keys).
pub const KEY_SEED: u64 = 0x6c62_6b65_795f_7631; // "lbkey_v1"

/// Hashes an IP address's octets.
#[inline]
pub fn hash_ip(ip: IpAddr, seed: u64) -> u64 {
    match ip {
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

/// A bucket table as IPVS `sh`/`dh` build it: buckets are handed out to candidates in turn,
/// each candidate taking `weight / gcd` consecutive buckets per turn, until the table is full.
/// The table has at least 256 buckets (IPVS's default) and at least 8 per candidate, and
/// holds a whole number of turns (up to 2²⁰ buckets), so bucket shares equal weight shares
/// exactly; keys are spread over it with a multiply-shift range reduction.
#[derive(Debug)]
struct BucketTable {
    backends: Vec<Backend>,
    buckets: Vec<u32>,
}

impl BucketTable {
    fn new(candidates: &[Backend]) -> Self {
        let n = candidates.len();
        if n == 0 {
            return Self {
                backends: Vec::new(),
                buckets: Vec::new(),
            };
        }
        let w = reduced_weights(candidates);
        let turn: u64 = w.iter().sum();
        let want = (8 * n as u64).max(256);
        let size = (turn * want.div_ceil(turn)).min(1 << 20) as usize;
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
            backends: candidates.to_vec(),
            buckets,
        }
    }

    /// The bucket's backend; when refused, the following buckets in turn (IPVS
    /// `sh-fallback`), then any accepted candidate.
    #[inline]
    fn select(&self, hash: u64, accept: &mut dyn FnMut(&Backend) -> bool) -> Option<&Backend> {
        let len = self.buckets.len();
        if len == 0 {
            return None;
        }
        let start = ((u128::from(hash) * len as u128) >> 64) as usize;
        let probes = len.min(64);
        for off in 0..probes {
            let b = &self.backends[self.buckets[(start + off) % len] as usize];
            if accept(b) {
                return Some(b);
            }
        }
        first_accepted(&self.backends, accept)
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
            /// Builds over `candidates`.
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

    #[test]
    fn hash_is_stable_across_builds() {
        // Fixed seeds: this value must never change between releases, or two nodes of
        // different versions would disagree.
        assert_eq!(
            hash_ip("198.18.0.1".parse().unwrap(), KEY_SEED),
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
