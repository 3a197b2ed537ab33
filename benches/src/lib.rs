//! Cross-crate benchmarks and comparison scripts for lb. Per-crate criterion benches live in
//! each crate's `benches/` directory (for example `cargo bench -p lb-core`).
#![forbid(unsafe_code)]
