//! The lb data path: L4 TCP/UDP forwarding with zero-copy `splice(2)`, the PROXY protocol
//! and an HTTP mode, choosing backends with `lb-core` pools.
//!
//! This crate owns sockets and bytes: listeners on virtual addresses ([`listener`],
//! [`sockopt`]), TCP forwarding with retries, queueing and graceful drain ([`tcp`]), UDP
//! sessions ([`udp`]), the PROXY protocol codec ([`proxy_protocol`]) and the HTTP mode
//! (`http`). It does not decide backend health (it reports [`outcome::Outcome`]s for
//! `lb-health` to judge), own VIPs (`lb-vrrp`) or parse configuration (`bins`).
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod error;
pub mod listener;
pub mod outcome;
pub mod proxy_protocol;
pub mod sockopt;
pub mod stats;
pub mod tcp;
pub mod udp;

#[cfg(feature = "http")]
pub mod http;

pub use error::{Error, ErrorSource, Result};
