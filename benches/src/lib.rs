//! Cross-crate benchmarks and comparison scripts for lb. Per-crate criterion benches live in
//! each crate's `benches/` directory (for example `cargo bench -p lb-core`).
#![forbid(unsafe_code)]

/// The value of command-line option `name` (`--rounds 5`) as a number, else `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
