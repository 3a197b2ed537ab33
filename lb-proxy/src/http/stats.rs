//! Counters of an HTTP virtual server and its backends, and the snapshots `lbctl status`
//! shows. The data path updates relaxed atomics; a snapshot is a plain copy.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::http::StatusClasses;
//!
//! let mut c = StatusClasses::default();
//! c.count(http::StatusCode::BAD_GATEWAY);
//! c.count(http::StatusCode::OK);
//! assert_eq!((c.c2xx, c.c5xx), (1, 1));
//! assert_eq!(c.total(), 2);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::StatusCode;
use lb_core::BackendId;

/// Responses counted by status class (`1xx` … `5xx`), as HAProxy's `hrsp_1xx` … `hrsp_5xx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusClasses {
    /// Informational (101 Switching Protocols for upgrades).
    pub c1xx: u64,
    /// Success.
    pub c2xx: u64,
    /// Redirection.
    pub c3xx: u64,
    /// Client error.
    pub c4xx: u64,
    /// Server error (including the proxy's own 502/503/504).
    pub c5xx: u64,
}

impl StatusClasses {
    /// Counts one response.
    pub fn count(&mut self, status: StatusCode) {
        match status.as_u16() / 100 {
            1 => self.c1xx += 1,
            2 => self.c2xx += 1,
            3 => self.c3xx += 1,
            4 => self.c4xx += 1,
            _ => self.c5xx += 1,
        }
    }

    /// Every response counted.
    pub fn total(&self) -> u64 {
        self.c1xx + self.c2xx + self.c3xx + self.c4xx + self.c5xx
    }
}

#[derive(Debug, Default)]
pub(crate) struct AtomicClasses([AtomicU64; 5]);

impl AtomicClasses {
    pub(crate) fn count(&self, status: StatusCode) {
        let i = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn add_from(&self, old: &Self) {
        for (mine, theirs) in self.0.iter().zip(&old.0) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> StatusClasses {
        let g = |i: usize| self.0[i].load(Ordering::Relaxed);
        StatusClasses {
            c1xx: g(0),
            c2xx: g(1),
            c3xx: g(2),
            c4xx: g(3),
            c5xx: g(4),
        }
    }
}

/// The virtual server's counters, as of one [`HttpProxy::stats`](super::HttpProxy::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtualServerStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Client connections open now.
    pub active_connections: u64,
    /// Requests received (complete heads).
    pub requests: u64,
    /// Responses sent to clients, by class, including the proxy's own error responses.
    pub responses: StatusClasses,
    /// 503s for want of a route or a live backend.
    pub no_backend: u64,
    /// 502s: backend connect failures (after retries) and broken backend connections.
    pub bad_gateway: u64,
    /// 504s: backend response timeouts.
    pub gateway_timeout: u64,
    /// Client connections closed on a malformed request (hyper answers 400, or 431 for an
    /// oversized head).
    pub bad_requests: u64,
    /// Client connections cut off by the header-read timeout (slowloris).
    pub header_timeouts: u64,
    /// Client connections closed by the idle keep-alive timeout.
    pub idle_timeouts: u64,
    /// Client connections closed by the client timeout: an upload that stalled (the client
    /// got 408) or a client that read nothing of its response or tunnel.
    pub client_timeouts: u64,
    /// Client connections closed for a missing, late or malformed PROXY header.
    pub proxy_header_errors: u64,
    /// Client connections of an HTTPS listener closed for a failed TLS handshake, or one
    /// not done within the header-read timeout.
    pub tls_handshake_errors: u64,
    /// Requests sent to another backend after a failure.
    pub retries: u64,
    /// Protocol switches (WebSocket) passed through.
    pub upgrades: u64,
    /// Client connections served in HTTP/2 (of `connections`;
    /// [`HttpProxyConfig::http2`](super::HttpProxyConfig::http2)).
    pub http2_connections: u64,
}

/// One backend's counters, as of one [`HttpProxy::stats`](super::HttpProxy::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendHttpStats {
    /// The pool's name.
    pub pool: String,
    /// The backend's id in its pool.
    pub id: BackendId,
    /// The backend's address.
    pub addr: SocketAddr,
    /// Requests sent to it (attempts, including ones that failed to connect).
    pub requests: u64,
    /// Requests in flight now (from lb-core's shared counters).
    pub in_flight: u64,
    /// Its responses by class (only responses it sent; the proxy's own errors are not
    /// counted here).
    pub responses: StatusClasses,
    /// Connect failures and connect timeouts.
    pub connect_failures: u64,
    /// Response timeouts (the client got 504).
    pub timeouts: u64,
    /// Failures counted for passive health (lb-core's shared counter: connect failures,
    /// timeouts, broken connections and, as configured, 5xx).
    pub failures: u64,
    /// Peak-EWMA latency to the response head, if sampled.
    pub latency_ewma: Option<Duration>,
}

/// Everything [`HttpProxy::stats`](super::HttpProxy::stats) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpStatsSnapshot {
    /// The virtual server's name.
    pub name: String,
    /// Its totals.
    pub virtual_server: VirtualServerStats,
    /// One entry per backend of every pool, in pool then configuration order.
    pub backends: Vec<BackendHttpStats>,
}

impl fmt::Display for StatusClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "1xx {} 2xx {} 3xx {} 4xx {} 5xx {}",
            self.c1xx, self.c2xx, self.c3xx, self.c4xx, self.c5xx
        )
    }
}

/// One line for the virtual server, then one per backend, as `lbctl status` prints them:
///
/// ```text
/// http web: 3 connections (1 active), 30 requests; 1xx 0 2xx 29 3xx 0 4xx 0 5xx 1; 503 no backend 0, 502 1, 504 0, bad requests 0, header timeouts 0, idle timeouts 0, client timeouts 0, retries 1, upgrades 0
///   www #1 127.0.0.1:8081: 16 requests (0 in flight); 1xx 0 2xx 15 3xx 0 4xx 0 5xx 0; connect failures 1, timeouts 0, failures 1, latency 0.4 ms
/// ```
impl fmt::Display for HttpStatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.virtual_server;
        writeln!(
            f,
            "http {}: {} connections ({} active), {} requests; {}; 503 no backend {}, 502 {}, \
             504 {}, bad requests {}, header timeouts {}, idle timeouts {}, client timeouts {}, \
             retries {}, upgrades {}",
            self.name,
            v.connections,
            v.active_connections,
            v.requests,
            v.responses,
            v.no_backend,
            v.bad_gateway,
            v.gateway_timeout,
            v.bad_requests,
            v.header_timeouts,
            v.idle_timeouts,
            v.client_timeouts,
            v.retries,
            v.upgrades
        )?;
        for b in &self.backends {
            write!(
                f,
                "  {} {} {}: {} requests ({} in flight); {}; connect failures {}, timeouts {}, \
                 failures {}",
                b.pool,
                b.id,
                b.addr,
                b.requests,
                b.in_flight,
                b.responses,
                b.connect_failures,
                b.timeouts,
                b.failures
            )?;
            match b.latency_ewma {
                Some(l) => writeln!(f, ", latency {:.1} ms", l.as_secs_f64() * 1e3)?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub(crate) struct VsCounters {
    pub(crate) connections: AtomicU64,
    pub(crate) active_connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) responses: AtomicClasses,
    pub(crate) no_backend: AtomicU64,
    pub(crate) bad_gateway: AtomicU64,
    pub(crate) gateway_timeout: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) header_timeouts: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) client_timeouts: AtomicU64,
    pub(crate) proxy_header_errors: AtomicU64,
    pub(crate) tls_handshake_errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) upgrades: AtomicU64,
    pub(crate) http2_connections: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds what `old` counted to `mine`.
fn add(mine: &AtomicU64, old: &AtomicU64) {
    mine.fetch_add(old.load(Ordering::Relaxed), Ordering::Relaxed);
}

impl VsCounters {
    /// Adds the totals of `old` (every counter but the open connections).
    pub(crate) fn add_from(&self, old: &Self) {
        for (mine, theirs) in [
            (&self.connections, &old.connections),
            (&self.requests, &old.requests),
            (&self.no_backend, &old.no_backend),
            (&self.bad_gateway, &old.bad_gateway),
            (&self.gateway_timeout, &old.gateway_timeout),
            (&self.bad_requests, &old.bad_requests),
            (&self.header_timeouts, &old.header_timeouts),
            (&self.idle_timeouts, &old.idle_timeouts),
            (&self.client_timeouts, &old.client_timeouts),
            (&self.proxy_header_errors, &old.proxy_header_errors),
            (&self.tls_handshake_errors, &old.tls_handshake_errors),
            (&self.retries, &old.retries),
            (&self.upgrades, &old.upgrades),
            (&self.http2_connections, &old.http2_connections),
        ] {
            add(mine, theirs);
        }
        self.responses.add_from(&old.responses);
    }

    pub(crate) fn snapshot(&self) -> VirtualServerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VirtualServerStats {
            connections: g(&self.connections),
            active_connections: g(&self.active_connections),
            requests: g(&self.requests),
            responses: self.responses.snapshot(),
            no_backend: g(&self.no_backend),
            bad_gateway: g(&self.bad_gateway),
            gateway_timeout: g(&self.gateway_timeout),
            bad_requests: g(&self.bad_requests),
            header_timeouts: g(&self.header_timeouts),
            idle_timeouts: g(&self.idle_timeouts),
            client_timeouts: g(&self.client_timeouts),
            proxy_header_errors: g(&self.proxy_header_errors),
            tls_handshake_errors: g(&self.tls_handshake_errors),
            retries: g(&self.retries),
            upgrades: g(&self.upgrades),
            http2_connections: g(&self.http2_connections),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct BackendCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) responses: AtomicClasses,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
}

impl BackendCounters {
    /// Adds what `old` counted.
    pub(crate) fn add_from(&self, old: &Self) {
        add(&self.requests, &old.requests);
        add(&self.connect_failures, &old.connect_failures);
        add(&self.timeouts, &old.timeouts);
        self.responses.add_from(&old.responses);
    }
}

/// Per-backend HTTP counters keyed by (pool index, backend id); created on first use, so
/// membership changes need no bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct BackendCounterMap {
    /// foldhash: the keys come from configuration, not from clients.
    map: RwLock<HashMap<(usize, BackendId), Arc<BackendCounters>, foldhash::fast::RandomState>>,
}

impl BackendCounterMap {
    pub(crate) fn get(&self, pool: usize, id: BackendId) -> Arc<BackendCounters> {
        if let Some(c) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(pool, id))
        {
            return Arc::clone(c);
        }
        Arc::clone(
            self.map
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((pool, id))
                .or_default(),
        )
    }

    pub(crate) fn snapshot(
        &self,
        pool: usize,
        pool_name: &str,
        backend: &lb_core::Backend,
    ) -> BackendHttpStats {
        let c = self.get(pool, backend.id());
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = backend.stats();
        BackendHttpStats {
            pool: pool_name.to_owned(),
            id: backend.id(),
            addr: backend.addr(),
            requests: g(&c.requests),
            in_flight: s.in_flight(),
            responses: c.responses.snapshot(),
            connect_failures: g(&c.connect_failures),
            timeouts: g(&c.timeouts),
            failures: s.failures(),
            latency_ewma: s.latency_ewma(),
        }
    }
}
