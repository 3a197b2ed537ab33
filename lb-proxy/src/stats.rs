//! Counters of a running proxy, updated with relaxed atomics on the data path.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::stats::ProxyStats;
//!
//! let stats = ProxyStats::default();
//! let snap = stats.snapshot();
//! assert_eq!(snap.accepted, 0);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters of one proxy (one virtual server). Read them with
        /// [`ProxyStats::snapshot`].
        #[derive(Debug, Default)]
        pub struct ProxyStats {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
        }

        /// A point-in-time copy of [`ProxyStats`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[non_exhaustive]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ProxyStats {
            /// Copies every counter (each read is atomic; the set is not a consistent cut).
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }

            /// Adds the totals of `old` (every counter but `active`, a gauge): the
            /// counters of the proxy this one replaces go on instead of restarting from
            /// zero (a reload restarting a virtual server), as IPVS keeps a kept service's.
            pub fn carry_totals(&self, old: &StatsSnapshot) {
                $(
                    if stringify!($name) != "active" {
                        self.$name.fetch_add(old.$name, Ordering::Relaxed);
                    }
                )*
            }
        }
    };
}

counters! {
    /// Client connections (TCP) or sessions (UDP) accepted.
    accepted,
    /// Connections or sessions open now.
    active,
    /// Connections that reached a backend.
    connected,
    /// Backend connect attempts that failed (refused, timed out); each was retried when
    /// retries remained.
    connect_failures,
    /// Connect attempts made after a failure (HAProxy `retries`).
    retries,
    /// Backend connections (UDP: session sockets) that could not be set up on this host (its
    /// descriptors, `source` address or ephemeral ports ran out: EMFILE, EADDRNOTAVAIL,
    /// ...). Not the backend's fault: not in `connect_failures`, not retried, not told to
    /// passive health; the client connection (datagram) is dropped and counted in `failed`.
    local_errors,
    /// Client connections closed because no backend could be reached: the client-visible
    /// failures.
    failed,
    /// Connections that waited in the queue because every backend was at `maxconn`.
    queued,
    /// Connections refused because the queue was full or its timeout expired.
    queue_refused,
    /// Connections closed for a missing, late or malformed PROXY header.
    proxy_header_errors,
    /// Connections (or UDP sessions) closed by the idle timeout.
    idle_timeouts,
    /// Connections closed by the proxy at the drain deadline or stop.
    shutdown_closed,
    /// `accept(2)` failures (EMFILE, ENFILE, ENOBUFS, ...), each followed by a back-off.
    accept_errors,
    /// UDP datagrams dropped because the session table was full.
    sessions_refused,
    /// UDP datagrams dropped, either way, for being longer than `max_datagram` (never
    /// forwarded cut short).
    datagrams_too_long,
    /// Payload bytes client → backend. TCP: counted as they are written, while the
    /// connection lasts (HAProxy's `bin`).
    bytes_to_backend,
    /// Payload bytes backend → client (TCP: as they are written; HAProxy's `bout`).
    bytes_to_client,
    /// Of those, bytes moved by `splice(2)` (TCP, both directions).
    bytes_spliced,
}

impl ProxyStats {
    #[inline]
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod carry_tests {
    use super::*;

    /// Totals carry over; `active`, a gauge of the old proxy's open connections, does not.
    #[test]
    fn carry_totals_adds_every_counter_but_active() {
        let old = ProxyStats::default();
        ProxyStats::add(&old.accepted, 5);
        ProxyStats::add(&old.active, 2);
        ProxyStats::add(&old.bytes_spliced, 7);
        let new = ProxyStats::default();
        ProxyStats::inc(&new.accepted);
        new.carry_totals(&old.snapshot());
        let s = new.snapshot();
        assert_eq!((s.accepted, s.active, s.bytes_spliced), (6, 0, 7));
    }
}
