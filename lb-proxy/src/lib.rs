//! The lb data path: L4 TCP/UDP forwarding with zero-copy `splice(2)`, PROXY protocol
//! and an HTTP mode, choosing backends with `lb-core` pools.
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]

#[cfg(feature = "http")]
pub mod http;
