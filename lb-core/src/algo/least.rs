//! Least-load family from IPVS: `lc`, `wlc`, `sed`, `nq`.
//!
//! Ties: `sed` and `nq` go to the earlier candidate, as IPVS does. `lc` and `wlc` share
//! ties in proportion to weight (`lc`: equally): IPVS spreads sequential short connections
//! that way by counting the closed ones still in its table (`inactconns`, below), and
//! HAProxy's `leastconn` round-robins within a group of equal load. Each candidate keeps a
//! virtual finish time, and among those of equal load the earliest wins (then the earlier
//! candidate). Every pick of a candidate, tied or not and by the fallback scan too, moves
//! its finish time on to `max(finish, vtime) + ⌊2²⁰ / weight⌋` (`lc`: weight 1) and the
//! virtual time `vtime` to `max(finish, vtime)` (start-time fair queuing); all start at 0.
//! Without it, connections opened and closed one after another (every backend idle at each
//! pick) would all go to the first backend. The shares follow the step `⌊2²⁰ / weight⌋`,
//! so weight to within its rounding: 1 in 256 for weights up to 4096, 1 in 16 near 65 535.
//!
//! A rebuild ([`BuildScheduler::build`](crate::BuildScheduler::build) with `previous`, as
//! a [`Pool`](crate::Pool) rebuilds on every health, admin or weight change) goes on with
//! the tie order: the virtual time and the finish time of every candidate the previous
//! scheduler had are kept, and a candidate new to it (one coming back) finishes one step
//! after the virtual time, as if picked then, so it takes its turn after those already
//! due. Restarting them at 0 sent the ties after each rebuild to the first backend again.
//! A scheduler built without `previous` (another pool over the same counters) starts at 0.
//!
//! IPVS scans every destination per connection (O(n)). Here each scheduler keeps a
//! tournament tree over its candidates' live active-connection counts, as HAProxy's
//! `leastconn` keeps an ebtree: opening or closing a connection (a
//! [`ConnectionGuard`](crate::ConnectionGuard) created or dropped) replays the O(log n) path
//! from that backend's leaf, and a pick reads the root — O(1), no lock. Concurrent updates
//! may briefly leave an inner node stale; the next update on that path repairs it. When the
//! root's backend is refused by `accept`, the pick falls back to a scan.
//!
//! A backend's counts feed every live least-load scheduler built over its counters: a
//! [`Pool`](crate::Pool)'s current one, and another pool's over the same counters
//! ([`Backend::with_stats`](crate::Backend::with_stats), as a reload builds a restarted
//! virtual server's) — each stays current, whichever of them serves.
//!
//! IPVS counts an *overhead* of `activeconns · 256 + inactconns`; a full proxy has no
//! inactive (TIME_WAIT) connections in its table, so the load here is the active connection
//! count plus in-flight requests ([`BackendStats::in_flight`](crate::BackendStats::in_flight),
//! which only HTTP mode uses) — in HTTP mode a least-connections pick follows requests, as
//! HAProxy's `leastconn` follows a server's current requests.
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::least::WeightedLeastConnections;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext, Weight};
//!
//! let a = Backend::new(BackendId(1), "127.0.0.1:1".parse().unwrap()).with_weight(Weight::new(1).unwrap());
//! let b = Backend::new(BackendId(2), "127.0.0.1:2".parse().unwrap()).with_weight(Weight::new(3).unwrap());
//! let s = WeightedLeastConnections::new(&[a.clone(), b.clone()]);
//! let _c1 = b.stats().connection(); // b: 1/3
//! let _c2 = b.stats().connection(); // b: 2/3 — still below a's 1/1 once a has one
//! let _c3 = a.stats().connection(); // a: 1/1
//! assert_eq!(s.select(&SelectContext::default(), &mut |_| true).unwrap().id(), BackendId(2));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::weighted_only;
use crate::backend::{Backend, BackendId, BackendStats, LoadHook};
use crate::scheduler::{Scheduler, SelectContext};

/// (load, weight): load/weight compared by cross-multiplication, as IPVS does, in u128.
#[inline]
fn ratio_less(a: (u64, u64), b: (u64, u64)) -> bool {
    u128::from(a.0) * u128::from(b.1) < u128::from(b.0) * u128::from(a.1)
}

/// Which IPVS formula a tree minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Formula {
    /// active
    Lc,
    /// active / weight
    Wlc,
    /// (active + 1) / weight
    Sed,
    /// idle first, then (active + 1) / weight
    Nq,
}

impl Formula {
    /// Whether a candidate with `a = (active, weight)` is strictly better than `b`.
    #[inline]
    fn better(self, a: (u64, u64), b: (u64, u64)) -> bool {
        match self {
            Self::Lc => a.0 < b.0,
            Self::Wlc => ratio_less(a, b),
            Self::Sed => ratio_less((a.0 + 1, a.1), (b.0 + 1, b.1)),
            Self::Nq => match (a.0 == 0, b.0 == 0) {
                (true, false) => true,
                (false, true) | (true, true) => false,
                (false, false) => ratio_less((a.0 + 1, a.1), (b.0 + 1, b.1)),
            },
        }
    }
}

const NONE: u32 = u32::MAX;

/// One pick of a weight-1 candidate, in virtual time: 2²⁰, so a weight of 65 535 still moves
/// it by 16, and 2⁴⁴ picks pass before a finish time could overflow.
const FAIR_SCALE: u64 = 1 << 20;

/// A tournament tree over candidates' live loads: leaf `j` is candidate `j`, every inner
/// node holds the index of the better of its children's winners.
#[derive(Debug)]
pub struct LoadTree {
    formula: Formula,
    /// Ties go to the earlier virtual finish time (`lc`, `wlc`) rather than to the earlier
    /// leaf.
    fair_ties: bool,
    /// Per leaf, its virtual finish time: where its last pick ended, in units of
    /// [`FAIR_SCALE`] / weight.
    finish: Vec<AtomicU64>,
    /// The virtual time: the start of the last pick.
    vtime: AtomicU64,
    stats: Vec<(Arc<BackendStats>, u64)>,
    /// Leaves start here (a power of two ≥ n).
    base: usize,
    /// 1-based heap layout; `nodes[0]` unused.
    nodes: Vec<AtomicU32>,
}

impl LoadTree {
    fn new(formula: Formula, fair_ties: bool, candidates: &[Backend]) -> Arc<Self> {
        let base = candidates.len().next_power_of_two().max(1);
        let nodes = (0..2 * base)
            .map(|i| {
                let leaf = i.wrapping_sub(base);
                AtomicU32::new(if i >= base && leaf < candidates.len() {
                    leaf as u32
                } else {
                    NONE
                })
            })
            .collect();
        let tree = Arc::new(Self {
            formula,
            fair_ties,
            finish: candidates.iter().map(|_| AtomicU64::new(0)).collect(),
            vtime: AtomicU64::new(0),
            stats: candidates
                .iter()
                .map(|b| {
                    (
                        Arc::clone(b.stats()),
                        u64::from(b.effective_weight().get()).max(1),
                    )
                })
                .collect(),
            base,
            nodes,
        });
        for (j, (s, _)) in tree.stats.iter().enumerate() {
            s.add_load_hook(LoadHook {
                tree: Arc::downgrade(&tree),
                leaf: j as u32,
            });
        }
        // Computed after the hooks are in place, so no change in between is lost.
        for i in (1..base).rev() {
            tree.recompute(i);
        }
        tree
    }

    /// Goes on from `prev`, the tree this one replaces (`backends` are this tree's leaves,
    /// `prev_backends` `prev`'s): takes its virtual time and, for each candidate it had,
    /// its virtual finish time; a candidate new to it finishes one step after the virtual
    /// time, as if picked then. Then recomputes every inner node.
    fn carry_ties(&self, backends: &[Backend], prev: &Self, prev_backends: &[Backend]) {
        if !self.fair_ties {
            return;
        }
        let vtime = prev.vtime.load(Ordering::Relaxed);
        self.vtime.store(vtime, Ordering::Relaxed);
        // By id, so that a rebuild of thousands of backends stays linear.
        let before: HashMap<BackendId, usize> = prev_backends
            .iter()
            .enumerate()
            .map(|(k, p)| (p.id(), k))
            .collect();
        for (j, b) in backends.iter().enumerate() {
            let finish = match before.get(&b.id()) {
                Some(&k) => prev.finish[k].load(Ordering::Relaxed),
                None => vtime + self.step(j),
            };
            self.finish[j].store(finish, Ordering::Relaxed);
        }
        for i in (1..self.base).rev() {
            self.recompute(i);
        }
    }

    #[inline]
    fn key(&self, j: u32) -> (u64, u64) {
        let (s, w) = &self.stats[j as usize];
        (s.active() + s.in_flight(), *w)
    }

    #[inline]
    fn recompute(&self, i: usize) {
        let l = self.nodes[2 * i].load(Ordering::Relaxed);
        let r = self.nodes[2 * i + 1].load(Ordering::Relaxed);
        let w = match (l, r) {
            (NONE, x) | (x, NONE) => x,
            (l, r) => {
                if self.better(r, l) {
                    r
                } else {
                    l
                }
            }
        };
        self.nodes[i].store(w, Ordering::Relaxed);
    }

    /// Whether leaf `a` beats leaf `b`: a smaller load by the formula, or, with
    /// `fair_ties`, an equal one with an earlier virtual finish time.
    #[inline]
    fn better(&self, a: u32, b: u32) -> bool {
        let (ka, kb) = (self.key(a), self.key(b));
        if self.formula.better(ka, kb) {
            return true;
        }
        self.fair_ties
            && !self.formula.better(kb, ka)
            && self.finish[a as usize].load(Ordering::Relaxed)
                < self.finish[b as usize].load(Ordering::Relaxed)
    }

    /// Records that leaf `leaf` was picked: with `fair_ties`, its virtual finish time moves
    /// on by `FAIR_SCALE / weight` from the later of its own and the virtual time (`lc`
    /// counts every weight as 1), so that ties are shared in proportion to weight. O(log n).
    #[inline]
    fn picked(&self, leaf: usize) {
        if self.fair_ties {
            let start = self.finish[leaf]
                .load(Ordering::Relaxed)
                .max(self.vtime.load(Ordering::Relaxed));
            self.vtime.store(start, Ordering::Relaxed);
            self.finish[leaf].store(start + self.step(leaf), Ordering::Relaxed);
            self.update(leaf as u32);
        }
    }

    /// How far a pick of leaf `leaf` moves its virtual finish time: ⌊[`FAIR_SCALE`] /
    /// weight⌋, every weight counting as 1 for `lc`.
    #[inline]
    fn step(&self, leaf: usize) -> u64 {
        let weight = match self.formula {
            Formula::Lc => 1,
            _ => self.stats[leaf].1.max(1),
        };
        FAIR_SCALE / weight
    }

    /// Replays the path from leaf `leaf` to the root after its load changed. O(log n).
    pub(crate) fn update(&self, leaf: u32) {
        let mut i = (self.base + leaf as usize) / 2;
        while i >= 1 {
            self.recompute(i);
            i /= 2;
        }
    }

    #[inline]
    fn winner(&self) -> Option<usize> {
        match self.nodes.get(1).map(|n| n.load(Ordering::Relaxed)) {
            Some(NONE) | None => None,
            Some(w) => Some(w as usize),
        }
    }
}

/// The best candidate `accept` takes, by a scan in the tree's order (the fallback when the
/// tree's winner is refused); `backends[j]` is the tree's leaf `j`.
fn scan<'a>(
    tree: &LoadTree,
    backends: &'a [Backend],
    accept: &mut dyn FnMut(&Backend) -> bool,
) -> Option<(usize, &'a Backend)> {
    let mut best: Option<(usize, &Backend)> = None;
    for (j, b) in backends.iter().enumerate() {
        if best.is_none_or(|(cur, _)| tree.better(j as u32, cur as u32)) && accept(b) {
            best = Some((j, b));
        }
    }
    best
}

macro_rules! least_scheduler {
    ($(#[$doc:meta])* $name:ident, $formula:expr, $fair_ties:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            backends: Vec<Backend>,
            tree: Arc<LoadTree>,
        }

        impl $name {
            /// Builds over `candidates` of weight above 0 (weight-0 ones are left out) and
            /// becomes the scheduler their connection counts feed.
            pub fn new(candidates: &[Backend]) -> Self {
                Self::rebuilt(candidates, None)
            }

            /// Builds as [`new`](Self::new) does, going on from `previous`, the scheduler
            /// this one replaces: each candidate it had keeps its place in the tie order
            /// (its virtual finish time, matched by [`BackendId`](crate::BackendId)), the
            /// virtual time goes on, and a candidate new to it finishes one step after the
            /// virtual time (see the module docs). `sed` and `nq` keep no tie order:
            /// `previous` changes nothing for them.
            pub fn rebuilt(candidates: &[Backend], previous: Option<&Self>) -> Self {
                let backends = weighted_only(candidates);
                let tree = LoadTree::new($formula, $fair_ties, &backends);
                if let Some(p) = previous {
                    tree.carry_ties(&backends, &p.tree, &p.backends);
                }
                Self { backends, tree }
            }
        }

        impl Scheduler for $name {
            #[inline]
            fn select(&self, _: &SelectContext<'_>, accept: &mut dyn FnMut(&Backend) -> bool) -> Option<&Backend> {
                let w = self.tree.winner()?;
                let b = &self.backends[w];
                if accept(b) {
                    self.tree.picked(w);
                    return Some(b);
                }
                let (j, b) = scan(&self.tree, &self.backends, accept)?;
                self.tree.picked(j);
                Some(b)
            }

            fn backends(&self) -> &[Backend] {
                &self.backends
            }
        }
    };
}

least_scheduler!(
    /// `lc`: the fewest active connections (IPVS `ip_vs_lc`); weights ignored except 0.
    /// Ties are shared equally: they go to the earliest virtual finish time (see the
    /// module docs).
    LeastConnections,
    Formula::Lc,
    true
);

least_scheduler!(
    /// `wlc`: the smallest active connections / weight (IPVS `ip_vs_wlc`; HAProxy's
    /// `leastconn`). Ties are shared in proportion to weight: they go to the earliest
    /// virtual finish time (see the module docs).
    WeightedLeastConnections,
    Formula::Wlc,
    true
);

least_scheduler!(
    /// `sed`: the smallest (active connections + 1) / weight — the expected delay if this
    /// connection is added (IPVS `ip_vs_sed`). Ties go to the earlier candidate.
    ShortestExpectedDelay,
    Formula::Sed,
    false
);

least_scheduler!(
    /// `nq`: never queue (IPVS `ip_vs_nq`): an idle candidate (0 active connections) if
    /// there is one, otherwise as `sed`. Ties go to the earlier candidate.
    NeverQueue,
    Formula::Nq,
    false
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendId, Weight};

    fn b(id: u32, w: u64) -> Backend {
        Backend::new(BackendId(id), format!("127.0.0.1:{id}").parse().unwrap())
            .with_weight(Weight::new(w).unwrap())
    }

    #[test]
    fn tree_tracks_opens_and_closes() {
        let set: Vec<Backend> = (1..=5).map(|i| b(i, 1)).collect();
        let s = LeastConnections::new(&set);
        let ctx = SelectContext::default();
        let g: Vec<_> = (0..4).map(|i| set[i].stats().connection()).collect();
        assert_eq!(s.select(&ctx, &mut |_| true).unwrap().id(), BackendId(5));
        let _g5 = set[4].stats().connection();
        let _g5b = set[4].stats().connection();
        drop(g);
        assert_eq!(s.select(&ctx, &mut |_| true).unwrap().id(), BackendId(1));
    }

    #[test]
    fn lc_follows_in_flight_requests_too() {
        // HTTP mode counts requests, not connections.
        let set: Vec<Backend> = (1..=3).map(|i| b(i, 1)).collect();
        let s = LeastConnections::new(&set);
        let ctx = SelectContext::default();
        let r1 = set[0].stats().request();
        let _r2 = set[1].stats().request();
        assert_eq!(s.select(&ctx, &mut |_| true).unwrap().id(), BackendId(3));
        drop(r1);
        assert_eq!(s.select(&ctx, &mut |_| true).unwrap().id(), BackendId(1));
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
    fn lc_and_wlc_spread_sequential_short_connections_sed_and_nq_keep_the_first() {
        // Every backend idle at each pick: a connection opened and closed before the next.
        let set = [b(1, 1), b(2, 1), b(3, 1)];
        let ctx = SelectContext::default();
        let run = |s: &dyn Scheduler| -> Vec<u32> {
            (0..6)
                .map(|_| {
                    let p = s.select(&ctx, &mut |_| true).unwrap();
                    drop(p.stats().connection());
                    p.id().0
                })
                .collect()
        };
        assert_eq!(run(&LeastConnections::new(&set)), [1, 2, 3, 1, 2, 3]);
        assert_eq!(
            run(&WeightedLeastConnections::new(&set)),
            [1, 2, 3, 1, 2, 3]
        );
        assert_eq!(run(&ShortestExpectedDelay::new(&set)), [1; 6]);
        assert_eq!(run(&NeverQueue::new(&set)), [1; 6]);
        // A refused winner: the scan's pick is stamped too.
        let s = LeastConnections::new(&set);
        let got: Vec<u32> = (0..4)
            .map(|_| {
                s.select(&ctx, &mut |b| b.id() != BackendId(1))
                    .unwrap()
                    .id()
                    .0
            })
            .collect();
        assert_eq!(got, [2, 3, 2, 3]);
        // wlc shares ties by weight (IPVS's inactconns do): 1 and 9 give 1:9, where a
        // plain least-recently-picked order gave 1:1.
        let weighted = [b(1, 1), b(2, 9)];
        let shares = |s: &dyn Scheduler| {
            let mut n = [0u32; 2];
            for _ in 0..1000 {
                let p = s.select(&ctx, &mut |_| true).unwrap();
                drop(p.stats().connection());
                n[p.id().0 as usize - 1] += 1;
            }
            n
        };
        assert_eq!(
            shares(&WeightedLeastConnections::new(&weighted)),
            [100, 900]
        );
        // lc ignores weights: 1:1.
        assert_eq!(shares(&LeastConnections::new(&weighted)), [500, 500]);
        // A lower load still wins over a tie's order.
        let _g = set[1].stats().connection();
        let _h = set[2].stats().connection();
        assert_eq!(run(&WeightedLeastConnections::new(&set)), [1; 6]);
    }

    /// A rebuild goes on with the previous scheduler's tie order: with a rebuild between
    /// picks (a pool's backend flapping) and every backend idle, `lc` and `wlc` still
    /// take turns. Each rebuild restarted the finish times at 0, and every pick went to
    /// the first backend.
    #[test]
    fn lc_and_wlc_rebuilds_keep_the_tie_order() {
        let set = [b(1, 1), b(2, 1), b(3, 1)];
        let ctx = SelectContext::default();
        let mut lc = LeastConnections::new(&set);
        let mut wlc = WeightedLeastConnections::new(&set);
        let mut seen = (Vec::new(), Vec::new());
        for _ in 0..6 {
            seen.0.push(lc.select(&ctx, &mut |_| true).unwrap().id().0);
            seen.1.push(wlc.select(&ctx, &mut |_| true).unwrap().id().0);
            lc = LeastConnections::rebuilt(&set, Some(&lc));
            wlc = WeightedLeastConnections::rebuilt(&set, Some(&wlc));
        }
        assert_eq!(seen.0, [1, 2, 3, 1, 2, 3]);
        assert_eq!(seen.1, [1, 2, 3, 1, 2, 3]);
        // A candidate new to the rebuild (one coming back) joins at the back of the
        // round, as if picked at the virtual time, rather than jumping ahead of those due.
        let wlc = WeightedLeastConnections::rebuilt(&[b(2, 1), b(3, 1), b(4, 1)], Some(&wlc));
        let got: Vec<u32> = (0..6)
            .map(|_| wlc.select(&ctx, &mut |_| true).unwrap().id().0)
            .collect();
        assert_eq!(got, [2, 3, 4, 2, 3, 4]);
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
