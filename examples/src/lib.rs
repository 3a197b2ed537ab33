//! Examples for lb live in `examples/examples/`; run one with
//! `cargo run -p lb-examples --example NAME`.
//!
//! The main one, `cargo run -p lb-examples --example lab` (as root), runs the seed's
//! two-node keepalived setup with two `lb-node`s in network namespaces: client traffic,
//! `kill -9` of the master, the backup taking over, and clean-up.
#![forbid(unsafe_code)]
