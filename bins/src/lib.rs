//! Wiring for the `lb-node` daemon and the `lbctl` tool: configuration parsing and the
//! composition of `lb-core`, `lb-health`, `lb-vrrp` and `lb-proxy`. No protocol logic lives here.
//!
//! Nothing is implemented yet; the binaries arrive with their issue.
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]
