//! The built-in scheduling algorithms. Each type is a built, immutable scheduler; build them
//! through [`Algorithm`](crate::Algorithm) or their own `new`.

pub mod hashing;
pub mod least;
pub mod maglev;
pub mod random;
pub mod ring;
pub mod round_robin;

/// Greatest common divisor (Euclid).
pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The effective weights of `backends` divided by their common divisor (IPVS `ip_vs_wrr_gcd_weight`).
pub(crate) fn reduced_weights(backends: &[crate::Backend]) -> Vec<u64> {
    reduce(
        backends
            .iter()
            .map(|b| u64::from(b.effective_weight().get()))
            .collect(),
    )
}

/// The candidates of effective weight above 0: [`BuildScheduler::build`]'s contract
/// (a weight-0 candidate is never picked; all weight 0 means no pick) kept by every
/// algorithm's constructor, whoever calls it.
///
/// [`BuildScheduler::build`]: crate::BuildScheduler::build
pub(crate) fn weighted_only(candidates: &[crate::Backend]) -> Vec<crate::Backend> {
    candidates
        .iter()
        .filter(|b| !b.effective_weight().is_zero())
        .cloned()
        .collect()
}

/// `weights` divided by their common divisor.
pub(crate) fn reduce(mut weights: Vec<u64>) -> Vec<u64> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    for w in &mut weights {
        *w /= g;
    }
    weights
}

/// The weight a hash table (`sh`, `dh`, `mh`) sizes a candidate's share with: its
/// configured weight — hash tables do not slow start — or, for a backend parked at weight
/// 0, its last non-zero weight (IPVS `ip_vs_mh` uses `last_weight`; `ip_vs_sh` keeps a
/// weight-0 destination's buckets), so that it keeps its place. 0 only for a backend
/// configured with weight 0, which takes no place.
pub(crate) fn table_weight(b: &crate::Backend) -> u64 {
    let w = if b.weight().is_zero() {
        b.last_weight()
    } else {
        b.weight()
    };
    u64::from(w.get())
}

/// Whether a hash-table member takes new connections; a parked one (weight 0 or drained)
/// keeps its place but lookups landing on it fall back (IPVS `is_unavailable`).
pub(crate) fn takes_new(b: &crate::Backend) -> bool {
    b.admin() == crate::AdminState::Ready && !b.effective_weight().is_zero()
}

/// Fresh hashes a hash table (`sh`, `dh`, `mh`) tries for a key whose member is parked or
/// refused, each derived from the last, before [`accepted_from`]. Every probe lands
/// anywhere in the table, so the key's clients spread over the other members by their
/// share of it; with a share `p` parked, a key gets this far with probability `p¹²⁸`.
pub(crate) const FALLBACK_PROBES: usize = 128;

/// The last resort of a hash table's fallback: the first backend `accept` takes, scanning
/// from a position derived from `hash` (not from the first: the keys that get here spread
/// over the accepted backends rather than all going to one).
#[inline]
pub(crate) fn accepted_from<'a>(
    backends: &'a [crate::Backend],
    hash: u64,
    accept: &mut dyn FnMut(&crate::Backend) -> bool,
) -> Option<&'a crate::Backend> {
    let n = backends.len();
    let start = ((u128::from(hash) * n as u128) >> 64) as usize;
    (0..n)
        .map(|i| &backends[(start + i) % n])
        .find(|b| accept(b))
}

/// Backends 0, 1, … with these weights at distinct addresses, for the algorithms' unit
/// tests.
#[cfg(test)]
pub(crate) fn weighted(weights: &[u64]) -> Vec<crate::Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            crate::Backend::new(
                crate::BackendId(i as u32),
                std::net::SocketAddr::new([10, 0, (i >> 8) as u8, i as u8].into(), 80),
            )
            .with_weight(crate::Weight::new(w).unwrap())
        })
        .collect()
}
