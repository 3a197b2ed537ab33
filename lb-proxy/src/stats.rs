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
use std::sync::{Arc, Mutex, PoisonError};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters of one proxy (one virtual server). Read them with
        /// [`ProxyStats::snapshot`].
        #[derive(Debug, Default)]
        pub struct ProxyStats {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
            /// The counters of the versions this one replaced ([`ProxyStats::carry_from`]),
            /// still counting what they drain.
            carried: Mutex<Vec<Arc<ProxyStats>>>,
        }

        /// A point-in-time copy of [`ProxyStats`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[non_exhaustive]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ProxyStats {
            /// This proxy's own counters, without those it carries.
            fn own_snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }

            /// Adds `other`'s totals but `active` (a gauge of this version's own).
            fn add_totals(to: &mut StatsSnapshot, other: &StatsSnapshot) {
                $(
                    if stringify!($name) != "active" {
                        to.$name += other.$name;
                    }
                )*
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

impl ProxyStats {
    /// Copies every counter (each read is atomic; the set is not a consistent cut), with
    /// those of the versions this one replaced ([`ProxyStats::carry_from`]) added: their
    /// totals, and in `active` the connections (sessions) they still drain, which are this
    /// virtual server's as much as IPVS's kept connections are its service's.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.own_snapshot();
        let mut carried = self.carried.lock().unwrap_or_else(PoisonError::into_inner);
        carried.retain(|old| {
            let o = old.snapshot();
            Self::add_totals(&mut s, &o);
            s.active += o.active;
            // Nothing but this list holds it: the old version is gone and its totals are
            // final. Kept in this one's own counters instead (a long-running node reloaded
            // often keeps no chain).
            if Arc::strong_count(old) > 1 {
                return true;
            }
            self.carry_totals(&o);
            false
        });
        s
    }

    /// Makes this proxy's counters go on from `old`'s, including what `old` still counts
    /// while it drains the connections it had when it stopped accepting (a reload's
    /// restarted virtual server: as IPVS keeps a kept service's counters). Every counter
    /// but `active`.
    pub fn carry_from(&self, old: &Arc<Self>) {
        self.carried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(old));
    }
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
    /// UDP datagrams to a backend dropped because its session socket's send buffer was
    /// full (the path to that backend is congested; Envoy's `sess_tx_errors`): the proxy
    /// never waits for one backend while others' clients are sending.
    send_drops,
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

    /// Totals carry over; `active`, a gauge of the old proxy's open connections, does not
    /// (once folded, the old version is gone and has none).
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

    /// What the replaced version counts after the carry (the connections it drains) shows
    /// in the replacement's totals; once the old version is gone its totals are folded in.
    #[test]
    fn carry_from_follows_the_draining_version() {
        let old = Arc::new(ProxyStats::default());
        ProxyStats::add(&old.accepted, 5);
        ProxyStats::add(&old.active, 2);
        let new = ProxyStats::default();
        ProxyStats::inc(&new.accepted);
        new.carry_from(&old);
        assert_eq!(new.snapshot().accepted, 6);
        ProxyStats::add(&old.bytes_to_client, 100);
        ProxyStats::add(&old.idle_timeouts, 1);
        let s = new.snapshot();
        assert_eq!(
            (s.accepted, s.active, s.bytes_to_client, s.idle_timeouts),
            (6, 2, 100, 1),
            "the two connections the old version drains are open"
        );
        ProxyStats::dec(&old.active);
        ProxyStats::dec(&old.active);
        assert_eq!(new.snapshot().active, 0);
        // A chain: a third version replacing the second sees the first's too.
        let newer = ProxyStats::default();
        let new = Arc::new(new);
        newer.carry_from(&new);
        assert_eq!(newer.snapshot().bytes_to_client, 100);
        drop(old);
        drop(new);
        let s = newer.snapshot();
        assert_eq!((s.accepted, s.bytes_to_client), (6, 100));
        assert!(newer.carried.lock().unwrap().is_empty(), "not folded");
        assert_eq!(newer.snapshot().accepted, 6);
    }
}
