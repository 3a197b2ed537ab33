//! Least-load family from IPVS: `lc`, `wlc`, `sed`, `nq`. Each scans the candidates' live
//! active-connection counts ([`BackendStats::active`](crate::BackendStats::active)): O(n) per
//! pick, relaxed atomic loads, no lock. Ties go to the earlier candidate, as in IPVS.
//!
//! IPVS counts an *overhead* of `activeconns · 256 + inactconns`; a full proxy has no
//! inactive (TIME_WAIT) connections in its table, so the overhead here is the active count.
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::least::WeightedLeastConnections;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext, Weight};
//!
//! let a = Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap()).with_weight(Weight::new(1).unwrap());
//! let b = Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()).with_weight(Weight::new(3).unwrap());
//! let _conns: Vec<_> = (0..2).map(|_| b.stats().connection()).collect(); // b: 2/3 < a: would be 1/1 after one
//! let s = WeightedLeastConnections::new(&[a, b]);
//! assert_eq!(s.select(&SelectContext::default(), &mut |_| true).unwrap().id(), BackendId(1));
//! ```

use crate::backend::Backend;
use crate::scheduler::{Scheduler, SelectContext};

/// Picks the candidate minimising `cost` (compared with `better(a, b)` = a strictly better),
/// among those `accept` takes. Tries the global minimum first so `accept` usually runs once.
#[inline]
fn min_by<'a, K: Copy>(
    backends: &'a [Backend],
    accept: &mut dyn FnMut(&Backend) -> bool,
    key: impl Fn(&Backend) -> K,
    better: impl Fn(K, K) -> bool,
) -> Option<&'a Backend> {
    let mut best: Option<(usize, K)> = None;
    for (i, b) in backends.iter().enumerate() {
        let k = key(b);
        if best.is_none_or(|(_, bk)| better(k, bk)) {
            best = Some((i, k));
        }
    }
    let (i, _) = best?;
    if accept(&backends[i]) {
        return Some(&backends[i]);
    }
    // The minimum was refused: scan again among the accepted ones.
    let mut best: Option<(usize, K)> = None;
    for (i, b) in backends.iter().enumerate() {
        let k = key(b);
        if best.is_none_or(|(_, bk)| better(k, bk)) && accept(b) {
            best = Some((i, k));
        }
    }
    best.map(|(i, _)| &backends[i])
}

/// (load, weight): load/weight compared by cross-multiplication, as IPVS does, in u128.
#[inline]
fn ratio_less(a: (u64, u64), b: (u64, u64)) -> bool {
    u128::from(a.0) * u128::from(b.1) < u128::from(b.0) * u128::from(a.1)
}

macro_rules! least_scheduler {
    ($(#[$doc:meta])* $name:ident, $key:expr, $better:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            backends: Vec<Backend>,
        }

        impl $name {
            /// Builds over `candidates`.
            pub fn new(candidates: &[Backend]) -> Self {
                Self { backends: candidates.to_vec() }
            }
        }

        impl Scheduler for $name {
            #[inline]
            fn select(&self, _: &SelectContext<'_>, accept: &mut dyn FnMut(&Backend) -> bool) -> Option<&Backend> {
                min_by(&self.backends, accept, $key, $better)
            }

            fn backends(&self) -> &[Backend] {
                &self.backends
            }
        }
    };
}

least_scheduler!(
    /// `lc`: the fewest active connections (IPVS `ip_vs_lc`); weights ignored except 0.
    LeastConnections,
    |b: &Backend| b.stats().active(),
    |a: u64, b: u64| a < b
);

least_scheduler!(
    /// `wlc`: the smallest active connections / weight (IPVS `ip_vs_wlc`).
    WeightedLeastConnections,
    |b: &Backend| (b.stats().active(), u64::from(b.effective_weight().get())),
    ratio_less
);

least_scheduler!(
    /// `sed`: the smallest (active connections + 1) / weight — the expected delay if this
    /// connection is added (IPVS `ip_vs_sed`).
    ShortestExpectedDelay,
    |b: &Backend| (b.stats().active() + 1, u64::from(b.effective_weight().get())),
    ratio_less
);

/// `nq`: never queue (IPVS `ip_vs_nq`): an idle candidate (0 active connections) if there is
/// one, the first in order; otherwise as `sed`.
#[derive(Debug)]
pub struct NeverQueue {
    backends: Vec<Backend>,
}

impl NeverQueue {
    /// Builds over `candidates`.
    pub fn new(candidates: &[Backend]) -> Self {
        Self {
            backends: candidates.to_vec(),
        }
    }
}

impl Scheduler for NeverQueue {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        // (idle?, sed ratio): idle beats busy; among idle the first; among busy the least sed.
        min_by(
            &self.backends,
            accept,
            |b| {
                let active = b.stats().active();
                (
                    active == 0,
                    (active + 1, u64::from(b.effective_weight().get())),
                )
            },
            |a, b| match (a.0, b.0) {
                (true, false) => true,
                (false, true) | (true, true) => false,
                (false, false) => ratio_less(a.1, b.1),
            },
        )
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendId, Weight};

    fn b(id: u32, w: u64) -> Backend {
        Backend::new(BackendId(id), format!("127.0.0.1:{id}").parse().unwrap())
            .with_weight(Weight::new(w).unwrap())
    }

    #[test]
    fn lc_follows_connections() {
        let set = [b(1, 1), b(2, 1), b(3, 1)];
        let s = LeastConnections::new(&set);
        let ctx = SelectContext::default();
        let mut guards = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let p = s.select(&ctx, &mut |_| true).unwrap();
            seen.push(p.id().0);
            guards.push(p.stats().connection());
        }
        assert_eq!(seen, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn sed_and_nq_differ_on_idle() {
        // a: w=1, idle. b: w=10, 1 active. sed: a=(0+1)/1=1, b=(1+1)/10=0.2 → b. nq → a (idle).
        let set = [b(1, 1), b(2, 10)];
        let _g = set[1].stats().connection();
        let ctx = SelectContext::default();
        assert_eq!(
            ShortestExpectedDelay::new(&set)
                .select(&ctx, &mut |_| true)
                .unwrap()
                .id(),
            BackendId(2)
        );
        assert_eq!(
            NeverQueue::new(&set)
                .select(&ctx, &mut |_| true)
                .unwrap()
                .id(),
            BackendId(1)
        );
    }

    #[test]
    fn refused_minimum_moves_to_next_minimum() {
        let set = [b(1, 1), b(2, 1), b(3, 1)];
        let _g = set[2].stats().connection();
        let s = LeastConnections::new(&set);
        let got = s.select(&SelectContext::default(), &mut |b| b.id() != BackendId(1));
        assert_eq!(got.unwrap().id(), BackendId(2));
        assert!(s
            .select(&SelectContext::default(), &mut |_| false)
            .is_none());
    }
}
