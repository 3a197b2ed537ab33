//! The lb data path: L4 TCP/UDP forwarding with zero-copy `splice(2)`, PROXY protocol
//! and (later) an HTTP mode, choosing backends with `lb-core` schedulers.
//!
//! Nothing is implemented yet; this crate is laid down so the workspace has its final shape.
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]
