//! Round-robin family: `rr`, `wrr` (IPVS interleaved), `swrr` (nginx smooth) and `fo`.
//!
//! # Examples
//!
//! ```
//! use lb_core::algo::round_robin::SmoothWeightedRoundRobin;
//! use lb_core::{Backend, BackendId, Scheduler, SelectContext, Weight};
//!
//! let b = |id, w| Backend::new(BackendId(id), format!("127.0.0.1:{id}").parse().unwrap())
//!     .with_weight(Weight::new(w).unwrap());
//! let s = SmoothWeightedRoundRobin::new(&[b(1, 5), b(2, 1), b(3, 1)], None);
//! let seq: Vec<u32> = (0..7)
//!     .map(|_| s.select(&SelectContext::default(), &mut |_| true).unwrap().id().0)
//!     .collect();
//! // nginx gives a a b a c a a, whose repetition runs a four times across the cycle
//! // boundary; spreading the heavy backend over the two gaps caps every run at ⌈5/2⌉ = 3.
//! assert_eq!(seq, [1, 1, 2, 1, 1, 1, 3]);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{reduced_weights, weighted_only};
use crate::backend::{Backend, BackendId};
use crate::scheduler::{first_accepted, same_candidates, Scheduler, SelectContext};

/// Carries `rr`'s cursor across a rebuild: kept when the candidates are unchanged; else
/// the next pick goes to the backend the old list would have served next, or to the first
/// one after it that is still a candidate (IPVS `ip_vs_rr` keeps its place in the list;
/// restarting at the first backend would send every pick after a flap anywhere to it).
fn carried_cursor(new: &[Backend], old: Option<(&[Backend], u64)>) -> u64 {
    let Some((old, cursor)) = old else {
        return 0;
    };
    if same_candidates(old, new) {
        return cursor;
    }
    if old.is_empty() || new.is_empty() {
        return 0;
    }
    let index: std::collections::HashMap<BackendId, usize> =
        new.iter().enumerate().map(|(i, b)| (b.id(), i)).collect();
    let start = (cursor % old.len() as u64) as usize;
    (0..old.len())
        .find_map(|k| index.get(&old[(start + k) % old.len()].id()))
        .map_or(0, |&i| i as u64)
}

/// Carries a weighted cycle's position (`wrr`, `swrr`) across a rebuild: kept when the
/// candidates are unchanged; else the same fraction of the new cycle. Restarting the cycle
/// would serve the heaviest backends first after every change (and, with slow start's
/// frequent steps, starve the ramping backend of its share). IPVS's
/// `ip_vs_wrr_dest_changed` does it differently: it keeps its current weight threshold
/// `cw` (clamped to the new maximum, realigned to the new gcd) and restarts its walk at the
/// head of the list, so the picks right after a change differ from IPVS's; the long-run
/// shares are the same.
fn carried_fraction(new: &[Backend], new_cycle: u64, old: Option<(&[Backend], u64, u64)>) -> u64 {
    match old {
        Some((old, cursor, _)) if same_candidates(old, new) => cursor,
        Some((_, cursor, old_cycle)) if old_cycle > 0 => {
            let at = u128::from(cursor % old_cycle);
            (at * u128::from(new_cycle) / u128::from(old_cycle)) as u64
        }
        _ => 0,
    }
}

/// `rr`: each candidate in turn, weights ignored (IPVS `ip_vs_rr`). O(1) per pick.
#[derive(Debug)]
pub struct RoundRobin {
    backends: Vec<Backend>,
    cursor: AtomicU64,
}

impl RoundRobin {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out); keeps
    /// `previous`'s place: its position when they are unchanged, else the backend it would
    /// have served next (see `carried_cursor`).
    pub fn new(candidates: &[Backend], previous: Option<&Self>) -> Self {
        let candidates = &weighted_only(candidates)[..];
        let cursor = carried_cursor(
            candidates,
            previous.map(|p| (&p.backends[..], p.cursor.load(Ordering::Relaxed))),
        );
        Self {
            backends: candidates.to_vec(),
            cursor: AtomicU64::new(cursor),
        }
    }

    /// The position of the next pick: a count of picks, modulo the candidates, carried over
    /// a rebuild to the backend that would have been served next (`carried_cursor`).
    pub fn position(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }
}

impl Scheduler for RoundRobin {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        let n = self.backends.len() as u64;
        if n == 0 {
            return None;
        }
        for _ in 0..n {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            let b = &self.backends[i as usize];
            if accept(b) {
                return Some(b);
            }
        }
        None
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

/// `wrr`: IPVS's interleaved weighted round robin (`ip_vs_wrr`), in IPVS's order.
///
/// IPVS walks the list with a current weight `cw` that starts at the largest weight and drops
/// by the weights' GCD each time the list wraps; a backend is picked when its weight is at
/// least `cw`. One cycle therefore has `max/gcd` rounds, and round `r` visits, in list
/// (configuration) order, every backend whose weight is at least `max - r·gcd`: weights
/// A = 1, B = 3 give B B A B. Over a cycle of `Σw/gcd` picks each backend gets exactly
/// `w/gcd` of them.
///
/// This implementation precomputes the rounds as segments (runs of rounds with the same
/// members: the backends down to one weight level) and maps a pick counter to its backend
/// without a lock: a binary search finds the segment, and a wavelet matrix over the
/// candidates in decreasing weight order finds the `k`-th member of the round in list
/// order — O(log n) per pick, O(n log n) memory.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    backends: Vec<Backend>,
    /// Candidate indices sorted by weight, descending, as a wavelet matrix: the members of
    /// a round are a prefix of this order, and a round visits them in index order.
    members: WaveletMatrix,
    /// Segments: (first pick position, number of backends in each round of the segment).
    segments: Vec<(u64, u32)>,
    cycle: u64,
    cursor: AtomicU64,
}

impl WeightedRoundRobin {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out); keeps
    /// `previous`'s place: its position when they are unchanged, else the same fraction of
    /// the new cycle.
    pub fn new(candidates: &[Backend], previous: Option<&Self>) -> Self {
        let candidates = &weighted_only(candidates)[..];
        let w = reduced_weights(candidates);
        let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(w[i as usize]));
        let mut segments = Vec::new();
        let mut start = 0u64;
        let mut i = 0;
        while i < order.len() {
            let wi = w[order[i] as usize];
            // Count backends with weight >= wi (all of order[..=j] where weight equals wi).
            let mut j = i;
            while j + 1 < order.len() && w[order[j + 1] as usize] == wi {
                j += 1;
            }
            let count = (j + 1) as u64;
            let next_w = order.get(j + 1).map_or(0, |&k| w[k as usize]);
            let rounds = wi - next_w;
            if rounds > 0 {
                segments.push((start, count as u32));
                start += rounds * count;
            }
            i = j + 1;
        }
        let cursor = carried_fraction(
            candidates,
            start,
            previous.map(|p| (&p.backends[..], p.cursor.load(Ordering::Relaxed), p.cycle)),
        );
        Self {
            backends: candidates.to_vec(),
            members: WaveletMatrix::new(&order),
            segments,
            cycle: start,
            cursor: AtomicU64::new(cursor),
        }
    }

    /// Picks in one full cycle (Σ weight / gcd).
    pub fn cycle_len(&self) -> u64 {
        self.cycle
    }

    #[inline]
    fn at(&self, pos: u64) -> &Backend {
        let p = pos % self.cycle;
        let seg = self.segments.partition_point(|&(s, _)| s <= p) - 1;
        let (start, count) = self.segments[seg];
        let k = (p - start) % u64::from(count);
        // The k-th of the round's members (the `count` heaviest) in list order.
        let idx = self.members.kth_smallest(count as usize, k as usize);
        &self.backends[idx as usize]
    }
}

/// A wavelet matrix over a sequence of `u32`s (Claude, Navarro and Ordóñez, *The wavelet
/// matrix*, SPIRE 2012), answering "the `k`-th smallest of the first `len` values" in
/// O(log σ) with one rank array per bit level.
#[derive(Debug)]
struct WaveletMatrix {
    /// Per level, from the top bit down: zeros among the first `i` values, for each `i`,
    /// and the total number of zeros.
    levels: Vec<(Vec<u32>, u32)>,
}

impl WaveletMatrix {
    fn new(values: &[u32]) -> Self {
        let max = values.iter().copied().max().unwrap_or(0);
        let bits = u32::BITS - max.leading_zeros();
        let mut cur = values.to_vec();
        let mut levels = Vec::with_capacity(bits as usize);
        for level in (0..bits).rev() {
            let mut rank0 = Vec::with_capacity(cur.len() + 1);
            rank0.push(0u32);
            let (mut zeros, mut ones) = (Vec::new(), Vec::new());
            for &v in &cur {
                let zero = (v >> level) & 1 == 0;
                rank0.push(rank0[rank0.len() - 1] + u32::from(zero));
                if zero {
                    zeros.push(v);
                } else {
                    ones.push(v);
                }
            }
            let z = zeros.len() as u32;
            zeros.extend(ones);
            cur = zeros;
            levels.push((rank0, z));
        }
        Self { levels }
    }

    /// The `k`-th smallest (from 0) of the first `len` values; `k < len`.
    #[inline]
    fn kth_smallest(&self, len: usize, mut k: usize) -> u32 {
        let bits = self.levels.len();
        let (mut lo, mut hi) = (0usize, len);
        let mut v = 0u32;
        for (i, (rank0, z)) in self.levels.iter().enumerate() {
            let (lo0, hi0) = (rank0[lo] as usize, rank0[hi] as usize);
            let zeros = hi0 - lo0;
            if k < zeros {
                lo = lo0;
                hi = hi0;
            } else {
                k -= zeros;
                lo = *z as usize + (lo - lo0);
                hi = *z as usize + (hi - hi0);
                v |= 1 << (bits - 1 - i);
            }
        }
        v
    }
}

impl Scheduler for WeightedRoundRobin {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        if self.cycle == 0 {
            return None;
        }
        let tries = self.backends.len().min(64);
        for _ in 0..tries {
            let b = self.at(self.cursor.fetch_add(1, Ordering::Relaxed));
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

/// Largest precomputed smooth-WRR cycle, in picks (4 MiB of indices).
const SWRR_MAX_CYCLE: u64 = 1 << 20;
/// Largest `cycle × candidates` work spent precomputing one cycle.
const SWRR_MAX_WORK: u64 = 1 << 22;

/// `swrr`: nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`).
///
/// Every pick adds each backend's weight to its current value, takes the largest, and
/// subtracts the total from it, so heavy backends are spread through the cycle instead of
/// picked in runs. Two refinements over nginx: where nginx would repeat the previous pick
/// although the weights do not force it (nginx gives {8, 6, 6, 1} a run `a a`), the next
/// largest current value is taken instead; and a backend with more than half the weight has
/// its picks spread evenly between the others' ({5, 1, 1}: a a b a a a c, runs ≤ ⌈5/2⌉ even
/// across cycles, where nginx's a a b a c a a repeats into a run of four). A backend is
/// picked twice in a row only when its weight forces it.
///
/// The cycle (Σ weight / gcd picks) is computed once at build time, so a pick is one atomic
/// increment and an index: O(1), no lock. The build costs O(cycle × n). When the cycle
/// would exceed 2²⁰ picks or 2²² steps of precomputation (for instance 1 000 backends of
/// weights 3 and 1), nothing is precomputed: each pick runs nginx's step itself, under a
/// lock, in O(n), as nginx does for every pick — exact shares, without the refinements
/// above. (Scaling the weights down to fit, as before, rounded small ones up to 1 and lost
/// the ratios.)
#[derive(Debug)]
pub struct SmoothWeightedRoundRobin {
    backends: Vec<Backend>,
    sequence: Vec<u32>,
    cursor: AtomicU64,
    /// nginx's running state, when the cycle is too long to precompute.
    online: Option<Mutex<OnlineSmooth>>,
}

/// nginx's smooth weighted round robin, run pick by pick: each backend's reduced weight and
/// current value.
#[derive(Debug)]
struct OnlineSmooth {
    weights: Vec<i64>,
    current: Vec<i64>,
}

impl OnlineSmooth {
    /// One nginx step over the backends `accept` takes: each current value grows by its
    /// weight, the largest is picked and loses the total of the weights stepped.
    fn pick(
        &mut self,
        backends: &[Backend],
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !accept(b) {
                continue;
            }
            self.current[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|j| self.current[i] > self.current[j]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }
}

impl SmoothWeightedRoundRobin {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out); keeps
    /// `previous`'s place: its position when they are unchanged, else the same fraction of
    /// the new cycle.
    pub fn new(candidates: &[Backend], previous: Option<&Self>) -> Self {
        let candidates = &weighted_only(candidates)[..];
        let w = reduced_weights(candidates);
        let n = w.len() as u64;
        let total: u64 = w.iter().sum();
        let limit = SWRR_MAX_CYCLE.min(SWRR_MAX_WORK / n.max(1)).max(n);
        if total > limit {
            // nginx's current values go on from the previous build's, by address (a
            // rebuild at every health or weight change would otherwise start the round
            // over and replay its first picks); new backends start at 0.
            let carried: std::collections::HashMap<std::net::SocketAddr, i64> = previous
                .and_then(|p| p.online.as_ref().map(|o| (p, o)))
                .map(|(p, o)| {
                    let st = o.lock().unwrap_or_else(PoisonError::into_inner);
                    p.backends
                        .iter()
                        .zip(&st.current)
                        .map(|(b, &c)| (b.addr(), c))
                        .collect()
                })
                .unwrap_or_default();
            return Self {
                backends: candidates.to_vec(),
                sequence: Vec::new(),
                cursor: AtomicU64::new(0),
                online: Some(Mutex::new(OnlineSmooth {
                    // Reduced weights are at most u32::MAX: no overflow in i64 sums of
                    // fewer than 2³¹ of them.
                    weights: w
                        .iter()
                        .map(|&x| i64::try_from(x).unwrap_or(i64::MAX >> 32))
                        .collect(),
                    current: candidates
                        .iter()
                        .map(|b| carried.get(&b.addr()).copied().unwrap_or(0))
                        .collect(),
                })),
            };
        }
        let sequence = smooth_cycle(&w);
        let cursor = carried_fraction(
            candidates,
            sequence.len() as u64,
            previous.map(|p| {
                (
                    &p.backends[..],
                    p.cursor.load(Ordering::Relaxed),
                    p.sequence.len() as u64,
                )
            }),
        );
        Self {
            backends: candidates.to_vec(),
            sequence,
            cursor: AtomicU64::new(cursor),
            online: None,
        }
    }

    /// The precomputed cycle, as candidate ids (empty when picks are computed one by one,
    /// past the precomputation limits).
    pub fn cycle_ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.sequence
            .iter()
            .map(|&i| self.backends[i as usize].id())
    }
}

impl Scheduler for SmoothWeightedRoundRobin {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        if let Some(online) = &self.online {
            let mut st = online.lock().unwrap_or_else(PoisonError::into_inner);
            return st.pick(&self.backends, accept).map(|i| &self.backends[i]);
        }
        let len = self.sequence.len() as u64;
        if len == 0 {
            return None;
        }
        let tries = self.backends.len().min(64);
        for _ in 0..tries {
            let pos = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
            let b = &self.backends[self.sequence[pos as usize] as usize];
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

/// One cycle of nginx's smooth weighted round robin over `w` (each entry picked exactly
/// `w[i]` times), with one refinement: when nginx would pick the previous pick again while
/// another choice keeps the rest of the cycle — and its wrap to the next cycle's first
/// pick — free of repeats, that other choice (the next largest current value) is taken;
/// and a backend holding more than half the weight has its picks spread evenly between the
/// others'. Repeats then occur only when the weights force them. O(n) per slot, so
/// O(cycle × n) in all.
fn smooth_cycle(w: &[u64]) -> Vec<u32> {
    let n = w.len();
    let total: u64 = w.iter().sum();
    // A backend holding more than half the weight must repeat: spread its picks evenly over
    // the gaps between the others' (smooth) picks, so each run is ⌈w / (Σw − w)⌉ at most.
    if let Some(d) = (0..n).find(|&i| 2 * w[i] > total && w[i] < total) {
        let others: Vec<u64> = w
            .iter()
            .enumerate()
            .map(|(i, &x)| if i == d { 0 } else { x })
            .collect();
        let rest = smooth_cycle(&others);
        let m = rest.len() as u64;
        let mut sequence = Vec::with_capacity(total as usize);
        for (k, &o) in rest.iter().enumerate() {
            let k = k as u64;
            let runs = (k + 1) * w[d] / m - k * w[d] / m;
            sequence.extend(std::iter::repeat_n(d as u32, runs as usize));
            sequence.push(o);
        }
        return sequence;
    }
    let mut current = vec![0i64; n];
    let mut remaining: Vec<u64> = w.to_vec();
    let mut sequence = Vec::with_capacity(total as usize);
    let mut last: Option<usize> = None;
    let mut first: Option<usize> = None;
    for slots_left in (1..=total).rev() {
        for i in 0..n {
            current[i] += w[i] as i64;
        }
        // Top three remaining counts, to test feasibility in O(1) per candidate.
        let mut top = [(0u64, usize::MAX); 3];
        for (i, &r) in remaining.iter().enumerate() {
            if r > top[2].0 {
                top[2] = (r, i);
                top.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
            }
        }
        // After picking `i`, `rest` slots remain, between `i` and the cycle's first pick `f`
        // (the cycle repeats). In a run of `m` free slots a backend fits ⌈m/2⌉ times without
        // two adjacent; a slot next to `i` or to `f` is not free for that backend. So after
        // the pick no one else may have more than ⌈rest/2⌉ left, `i` and `f` one slot fewer
        // each (both: two), and the last slot must not be `f` itself.
        let rest = slots_left - 1;
        let fits = |j: usize, count: u64, i: usize, f: usize| {
            let blocked = u64::from(j == i) + u64::from(j == f);
            count <= rest.saturating_sub(blocked).div_ceil(2)
        };
        let feasible = |i: usize| {
            let f = first.unwrap_or(i);
            let others_max = top
                .iter()
                .find(|&&(_, j)| j != i && j != f)
                .map_or(0, |&(r, _)| r);
            others_max <= rest.div_ceil(2)
                && fits(i, remaining[i] - 1, i, f)
                && (f == i || fits(f, remaining[f], i, f))
                && (rest > 0 || first != Some(i))
        };
        // The largest current value (lower index on ties) among feasible candidates other
        // than the previous pick; else, when the weights force a repeat, the largest of all.
        let better = |a: usize, b: Option<usize>| {
            b.is_none_or(|b| {
                (current[a], std::cmp::Reverse(a)) > (current[b], std::cmp::Reverse(b))
            })
        };
        let mut best: Option<usize> = None;
        let mut fallback: Option<usize> = None;
        for i in (0..n).filter(|&i| remaining[i] > 0) {
            if better(i, fallback) {
                fallback = Some(i);
            }
            if Some(i) != last && better(i, best) && feasible(i) {
                best = Some(i);
            }
        }
        let Some(pick) = best.or(fallback) else { break };
        current[pick] -= total as i64;
        remaining[pick] -= 1;
        sequence.push(pick as u32);
        last = Some(pick);
        first.get_or_insert(pick);
    }
    sequence
}

/// `fo`: weighted failover (IPVS `ip_vs_fo`): always the available backend with the highest
/// weight, configuration order breaking ties. O(1) per pick unless the first choice is refused.
#[derive(Debug)]
pub struct WeightedFailover {
    backends: Vec<Backend>,
}

impl WeightedFailover {
    /// Builds over `candidates` of weight above 0 (weight-0 ones are left out).
    pub fn new(candidates: &[Backend]) -> Self {
        let mut backends = weighted_only(candidates);
        backends.sort_by_key(|b| std::cmp::Reverse(b.effective_weight()));
        Self { backends }
    }
}

impl Scheduler for WeightedFailover {
    #[inline]
    fn select(
        &self,
        _: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        first_accepted(&self.backends, accept)
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Weight;

    fn b(id: u32, w: u64) -> Backend {
        Backend::new(BackendId(id), format!("127.0.0.1:{id}").parse().unwrap())
            .with_weight(Weight::new(w).unwrap())
    }

    fn picks(s: &dyn Scheduler, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                s.select(&SelectContext::default(), &mut |_| true)
                    .unwrap()
                    .id()
                    .0
            })
            .collect()
    }

    #[test]
    fn wrr_matches_ipvs_rounds() {
        // IPVS with weights A=4 B=3 C=2 (gcd 1): cw=4: A; 3: A B; 2: A B C; 1: A B C.
        let s = WeightedRoundRobin::new(&[b(1, 4), b(2, 3), b(3, 2)], None);
        assert_eq!(s.cycle_len(), 9);
        assert_eq!(picks(&s, 9), [1, 1, 2, 1, 2, 3, 1, 2, 3]);
    }

    /// IPVS visits a round's members in list order (`ip_vs_wrr_schedule` walks
    /// `svc->destinations`): A = 1, B = 3 gives cw 3: B; 2: B; 1: A B. Rounds used to visit
    /// them heaviest first (B B B A).
    #[test]
    fn wrr_visits_each_round_in_list_order() {
        let s = WeightedRoundRobin::new(&[b(1, 1), b(2, 3)], None);
        assert_eq!(picks(&s, 8), [2, 2, 1, 2, 2, 2, 1, 2]);
        // A = 2, B = 5, C = 3, D = 5: cw 5: B D; 4: B D; 3: B C D; 2: A B C D; 1: A B C D.
        let s = WeightedRoundRobin::new(&[b(1, 2), b(2, 5), b(3, 3), b(4, 5)], None);
        assert_eq!(picks(&s, 15), [2, 4, 2, 4, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
    }

    /// The wavelet matrix against a sort, over prefixes of a shuffled sequence.
    #[test]
    fn wavelet_kth_smallest_matches_sorting() {
        let values: Vec<u32> = (0..37u32).map(|i| (i * 23 + 5) % 37).collect();
        let wm = WaveletMatrix::new(&values);
        for len in 1..=values.len() {
            let mut prefix = values[..len].to_vec();
            prefix.sort_unstable();
            for (k, &want) in prefix.iter().enumerate() {
                assert_eq!(wm.kth_smallest(len, k), want, "len {len} k {k}");
            }
        }
        assert_eq!(WaveletMatrix::new(&[0]).kth_smallest(1, 0), 0);
    }

    #[test]
    fn wrr_reduces_by_gcd() {
        let s = WeightedRoundRobin::new(&[b(1, 300), b(2, 100)], None);
        assert_eq!(s.cycle_len(), 4);
        assert_eq!(picks(&s, 4), [1, 1, 1, 2]);
    }

    #[test]
    fn rr_keeps_its_place_across_rebuilds() {
        let set = [b(1, 1), b(2, 1), b(3, 1)];
        let s = RoundRobin::new(&set, None);
        assert_eq!(picks(&s, 2), [1, 2]);
        // Unchanged: the position is kept.
        let s2 = RoundRobin::new(&set, Some(&s));
        assert_eq!(picks(&s2, 1), [3]);
        // 1 is next; gone at a rebuild, the first after it that is still there (2) is
        // next.
        let s3 = RoundRobin::new(&[b(2, 1), b(3, 1)], Some(&s2));
        assert_eq!(picks(&s3, 2), [2, 3]);
        // Back: the one the old list would have served next (2) comes first, not 1.
        let s4 = RoundRobin::new(&set, Some(&s3));
        assert_eq!(picks(&s4, 3), [2, 3, 1]);
    }

    #[test]
    fn fo_prefers_heaviest_then_fails_over() {
        let s = WeightedFailover::new(&[b(1, 2), b(2, 5), b(3, 5)]);
        assert_eq!(picks(&s, 2), [2, 2]);
        let got = s.select(&SelectContext::default(), &mut |b| b.id() != BackendId(2));
        assert_eq!(got.unwrap().id(), BackendId(3));
    }

    /// Past the precomputation limits the weights still hold: 2 048 backends of weights 3
    /// and 1 got one pick each a cycle (their scaled weights, both rounded to 1), and 500
    /// of weight 7 with 500 of weight 2 got 6:1. Each pick now runs nginx's step, exact
    /// over a cycle of Σw picks; a backend `accept` refuses is skipped.
    #[test]
    fn swrr_keeps_weights_past_the_precomputation_limits() {
        for (n, heavy, light) in [(2048u32, 3u64, 1u64), (1000, 7, 2)] {
            let set: Vec<Backend> = (0..n)
                .map(|i| b(i, if i % 2 == 0 { heavy } else { light }))
                .collect();
            let s = SmoothWeightedRoundRobin::new(&set, None);
            assert_eq!(s.cycle_ids().count(), 0, "n={n}: computed pick by pick");
            let total = u64::from(n / 2) * (heavy + light);
            let mut counts = vec![0u64; n as usize];
            for _ in 0..total {
                let got = s.select(&SelectContext::default(), &mut |_| true).unwrap();
                counts[got.id().0 as usize] += 1;
            }
            for (i, c) in counts.iter().enumerate() {
                let want = if i % 2 == 0 { heavy } else { light };
                assert_eq!(*c, want, "n={n} backend {i}");
            }
            let refused = s
                .select(&SelectContext::default(), &mut |b| b.id() != BackendId(0))
                .unwrap();
            assert_ne!(refused.id(), BackendId(0));
            assert!(s
                .select(&SelectContext::default(), &mut |_| false)
                .is_none());
        }
        // A rebuild (a health or weight change elsewhere) keeps the place: 400 picks with
        // a rebuild before each spread over 400 backends (they all went to the first one).
        let set: Vec<Backend> = (0..2048u32)
            .map(|i| b(i, if i % 2 == 0 { 3 } else { 1 }))
            .collect();
        let mut s = SmoothWeightedRoundRobin::new(&set, None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            s = SmoothWeightedRoundRobin::new(&set, Some(&s));
            let got = s.select(&SelectContext::default(), &mut |_| true).unwrap();
            seen.insert(got.id());
        }
        assert_eq!(seen.len(), 400);
    }

    #[test]
    fn empty_sets_give_none() {
        let none: &[Backend] = &[];
        let ctx = SelectContext::default();
        assert!(RoundRobin::new(none, None)
            .select(&ctx, &mut |_| true)
            .is_none());
        assert!(WeightedRoundRobin::new(none, None)
            .select(&ctx, &mut |_| true)
            .is_none());
        assert!(SmoothWeightedRoundRobin::new(none, None)
            .select(&ctx, &mut |_| true)
            .is_none());
        assert!(WeightedFailover::new(none)
            .select(&ctx, &mut |_| true)
            .is_none());
    }
}
