//! Examples for lb live in `examples/examples/`; run one with
//! `cargo run -p lb-examples --example NAME`.
#![forbid(unsafe_code)]
