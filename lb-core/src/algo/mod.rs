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
    let g = backends
        .iter()
        .map(|b| u64::from(b.effective_weight().get()))
        .fold(0, gcd)
        .max(1);
    backends
        .iter()
        .map(|b| u64::from(b.effective_weight().get()) / g)
        .collect()
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
