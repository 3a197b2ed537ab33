//! The lb data path: L4 TCP/UDP forwarding with zero-copy `splice(2)`, the PROXY protocol
//! and an HTTP mode, choosing backends with `lb-core` pools.
//!
//! This crate owns sockets and bytes: listeners on virtual addresses ([`listener`],
//! [`sockopt`]), TCP forwarding with retries, queueing and graceful drain ([`tcp`]), UDP
//! sessions ([`udp`]), the PROXY protocol codec ([`proxy_protocol`]) and the HTTP mode
//! (`http`). It does not decide backend health (it reports [`outcome::Outcome`]s for
//! `lb-health` to judge), own VIPs (`lb-vrrp`) or parse configuration (`bins`).
//!
//! | the daemon wants to… | call |
//! |---|---|
//! | run a TCP virtual server | [`tcp::TcpProxy::start_with_observer`]`(`[`tcp::TcpProxyConfig`]`, Arc<Pool>, observer)` → [`tcp::ProxyHandle`] |
//! | run a UDP virtual server | [`udp::UdpProxy::start_with_observer`] → [`udp::UdpHandle`] |
//! | drain / stop it | [`tcp::ProxyHandle::drain`]`(None)` (configured deadline), [`tcp::ProxyHandle::stop`] |
//! | drain one backend | `handle.pool().set_admin(id, AdminState::Drain, now)` (existing connections continue) |
//! | feed passive health | implement [`outcome::OutcomeObserver`] (connect refused / timed out, closed, 5xx) |
//! | read counters | [`tcp::ProxyHandle::stats`] → [`stats::StatsSnapshot`]; [`tcp::spliced_bytes`] |
//! | busy-poll while connections are open (HAProxy `busy-polling`) | one [`busy_poll::BusyPolling`] in every proxy's `busy_polling` |
//! | bind a VIP before holding it | [`listener::bind_tcp`] with [`listener::ListenOptions`] (`freebind` on by default) |
//!
//! # Platform support
//! Linux is the target: `splice(2)`, `IP_FREEBIND` and `SO_REUSEPORT` are used there. Without
//! the `splice` feature (or off Linux) TCP forwarding copies through user space.
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod busy_poll;
pub mod error;
pub mod listener;
pub mod log;
pub mod outcome;
pub mod proxy_protocol;
pub mod sockopt;
pub mod stats;
pub mod tcp;
pub mod udp;

#[cfg(feature = "http")]
pub mod http;

pub use error::{Error, ErrorSource, Result};

/// Ends a backend connection's count now: a guard holding a client's persistence entry
/// (`persistence_timeout`) starts the entry's timeout at this instant (a plain drop would
/// stamp it with the pool's last clock reading, which on an idle pool lies in the past).
/// The clock is read only then.
pub(crate) fn end_connection(guard: lb_core::ConnectionGuard) {
    if guard.holds_persistence() {
        guard.finish(tokio::time::Instant::now().into_std());
    }
}

/// [`end_connection`] for a request guard (HTTP mode).
#[cfg(feature = "http")]
pub(crate) fn end_request(guard: lb_core::RequestGuard) {
    if guard.holds_persistence() {
        guard.finish(tokio::time::Instant::now().into_std());
    }
}
