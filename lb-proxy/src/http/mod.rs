//! HTTP mode: per-request balancing on hyper (HAProxy `mode http`, nginx `proxy_pass`, the
//! HTTP listeners of cloud load balancers), HTTP/1.1 and, with [`HttpProxyConfig::http2`],
//! HTTP/2 to clients; HTTP/1.1 and, with [`HttpPool::http2`], HTTP/2 to backends.
//!
//! Every request on a client connection is routed and scheduled on its own: [`Router`]
//! picks a pool by `Host` (exact or `*.example.com`) and path prefix, falling back to a
//! default pool; the pool's scheduler picks a backend ([`lb_core::Pool::select`], with a
//! [hash key](HashKeySource) taken from a header, a cookie or the URI when configured);
//! the request goes out on a pooled keep-alive connection to that backend. The client is
//! named to the backend in `X-Forwarded-For` (appended), `X-Forwarded-Proto`,
//! `X-Forwarded-Port` and RFC 7239 `Forwarded`, each switchable ([`ForwardedHeaders`]).
//!
//! | what happens | the client gets | counted in |
//! |---|---|---|
//! | no route, or no live backend in the pool | 503 | `no_backend` |
//! | backend connect fails, or its TLS handshake ([`HttpPool::tls`]: a certificate that does not verify) | a retry on another backend (any method: nothing was sent), 502 when none is left | `bad_gateway`, backend `connect_failures` |
//! | backend sends no response head in time | 504 | `gateway_timeout`, backend `timeouts` |
//! | backend breaks the connection | a retry for bodiless idempotent requests, else 502 | `bad_gateway` |
//! | malformed request / head too large | 400 / 431 from hyper, connection closed | `bad_requests` |
//! | HTTP/1.1 request without `Host`, or with two (RFC 9112 §3.2) | 400, connection closed | `bad_requests` |
//! | `CONNECT` (a tunnel request, not a resource) | 501, connection closed | `bad_requests` |
//! | backend closes or breaks mid-body | the response ends short, connection closed | backend `failures` (passive health) |
//! | client goes away during its request body | 400 (to nobody); the backend is not blamed (HAProxy `CD`) | `bad_requests` |
//! | request head not complete in time (slowloris), or no request at all | connection closed | `header_timeouts` |
//! | keep-alive connection idle past `client_idle` | connection closed | `idle_timeouts` |
//! | client sends nothing more of its request body for `client` | 408, connection closed; the backend is not blamed | `client_timeouts` |
//! | client reads nothing of its response (or tunnel) for `client` | connection closed | `client_timeouts` |
//! | [`maxconn`](HttpProxyConfig::maxconn) client connections (tunnels included) already open | not accepted until one closes: waits in the kernel's accept queue | — |
//!
//! Backend failures (and 5xx responses, as [`PassiveHealth`] says) are counted in lb-core's
//! shared [`BackendStats`](lb_core::BackendStats) and reported to each pool's
//! [`OutcomeObserver`](crate::outcome::OutcomeObserver) (the one L4 mode uses), so passive
//! health can mark a backend down in the same [`Pool`](lb_core::Pool) active health checks
//! use. The same counters take the bytes that cross each backend's connections, heads and
//! bodies and upgraded tunnels alike (`bytes_to_backend`, `bytes_to_client`; HAProxy's
//! per-server `bin`/`bout`). With [`HttpProxyConfig::accept_proxy`] the client address comes from a PROXY
//! protocol header ([`crate::proxy_protocol::read_header`]). `Connection: upgrade` requests (WebSocket) are passed through: on a
//! backend's `101` both connections are taken over from hyper and copied both ways.
//!
//! With [`HttpProxyConfig::tls`] the listener is HTTPS ([`TlsTermination`]): the TLS
//! handshake (after the PROXY header, if any) and the first request head must end within
//! one header-read timeout, a failed or late handshake closes the connection and is
//! counted (`tls_handshake_errors`), and
//! the backends get `X-Forwarded-Proto: https`.
//!
//! With [`HttpPool::tls`] a pool's backends are spoken to over TLS ([`BackendTls`], HAProxy
//! `server … ssl`): its connections are pooled and kept alive as plain ones, the handshake
//! has the connect timeout, and a failed one is a failed connect (above), logged at WARN
//! once a minute per virtual server with rustls's reason.
//!
//! With [`HttpProxyConfig::http2`] clients may speak HTTP/2 (RFC 9113): over TLS by ALPN
//! `h2`, on a plain listener by prior knowledge (the connection's first bytes are the
//! HTTP/2 preface). Each stream is a request as above, balanced, forwarded to the backends
//! in HTTP/1.1 and logged on its own; a failure (504, 431 for more header fields than
//! `max_headers`, 501 for `CONNECT`) ends its stream, not the connection. The connection
//! is closed when its first request does not come within `header_read`
//! (`header_timeouts`), and gets GOAWAY after `client_idle` without a stream
//! (`idle_timeouts`) or on a stop; a stream whose response waits for the client's
//! flow-control window for `client`, while no response data is written to the connection,
//! is reset
//! (`client_timeouts`); `http2_connections` counts the connections.
//!
//! With [`HttpPool::http2`] a pool's backends are spoken to in HTTP/2 (HAProxy `server …
//! proto h2`; gRPC servers): h2c with prior knowledge, or ALPN `h2` over [`HttpPool::tls`].
//! A backend's requests share its connection as streams; another is made when each open
//! one has as many streams as the backend allows (`SETTINGS_MAX_CONCURRENT_STREAMS`, up to
//! 16 connections; past them requests wait in the least busy one for a stream). A
//! connection is made by the first request that needs it while the others wait for it (a
//! failed connect answers them all), and let go after `backend_idle` without a stream. One
//! that fails a request at the connection's level (not a stream's reset), gets GOAWAY or
//! answers no stream while a request waits `backend_response` for its response takes no
//! more requests; its other streams finish on it. A request that times out while the
//! connection answers others gets 504 and only its stream is reset (HAProxy, Envoy). No PINGs are sent (gRPC servers take frequent ones as abuse). A stream the
//! backend refused unprocessed (RFC 9113 §8.7: REFUSED_STREAM, or left out by a graceful
//! GOAWAY) goes out again, up to 4 times past `retries`, to another backend once this one
//! refused it twice, and counts against the backend only when the request ends refused. It
//! goes out again whatever its method, but left out by GOAWAY only with a body or when
//! idempotent: hyper may report a bodiless stream it had just sent as left out (a backend
//! acting on a request before its body arrived could, within that race, see one twice);
//! such a request gets 502 but is not held against the backend. For that, a body of known length up to 64 KiB is read whole before the request goes out
//! (HAProxy's `option http-buffer-request`; `client` bounds each gap), and one of unknown
//! length is held when the client has already sent it whole (a gRPC call's message). A
//! request hyper dropped unsent while it waited for a stream goes out again too. A client's
//! upload that
//! stalls or breaks is the client's fault (408, `CD`), as towards HTTP/1.1 backends.
//! Clients that do not read their responses hold their streams' 2 MiB windows; a
//! connection's window is 16 MiB.
//!
//! Both directions carry the proxy's own HTTP version (RFC 9110 §6.2; hyper still answers
//! an HTTP/1.0 client in 1.0): 1.1, or 2 towards HTTP/2 backends. HTTP/1.1 messages carry
//! the trailer fields a message declares in `Trailer`.
//!
//! On tokio's current-thread scheduler (lb-node's `nbthread = 1`) the small writes (up to
//! 4 KiB: a request or response head, a small body) to plain TCP clients and backends are
//! queued and sent together once the tasks the event loop woke in that turn have run, as
//! HAProxy's loop sends what its streams produced: the backends and clients wake up
//! less often (nginx and wrk about 30 % less per request), which costs the proxy's CPU
//! less. Order, back-pressure and errors
//! stay those of each connection's own writes. On a multi-thread runtime every write goes
//! out at once.
//!
//! The sans-IO parts ([`config`], [`route`], [`forwarded`], [`stats`]) read no clock and do no
//! IO; the driver is [`HttpProxy`].
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
//! use lb_proxy::http::{HttpPool, HttpProxy, HttpProxyConfig, Route};
//!
//! let pool = |port: u16| -> Result<Arc<Pool>, lb_core::Error> {
//!     let set = BackendSet::new(vec![Backend::new(BackendId(1), ([127, 0, 0, 1], port).into())])?;
//!     Ok(Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default())?))
//! };
//! let mut config = HttpProxyConfig::new("web");
//! config.routes.push(Route::new("api").path_prefix("/api/"));
//! config.default_pool = Some("www".into());
//! let proxy = HttpProxy::bind(
//!     "127.0.0.1:0".parse()?,
//!     config,
//!     vec![HttpPool::new("www", pool(1)?), HttpPool::new("api", pool(2)?)],
//! )
//! .await?;
//! assert_eq!(proxy.stats().backends.len(), 2);
//! proxy.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

pub mod access_log;
mod backend_tls;
mod batch;
mod body;
mod client;
pub mod config;
pub mod error;
pub mod forwarded;
mod io;
mod proxy;
pub mod route;
pub mod stats;
mod tls;

pub use access_log::{AccessEntry, AccessLog, AccessLogSink, RequestLine, Termination, Timings};
pub use backend_tls::{BackendTls, Verify};
pub use config::{
    ForwardedHeaders, HashKeySource, HostMatch, HttpProxyConfig, Limits, PassiveHealth, Route,
    Timeouts,
};
pub use error::{Error, ErrorSource, ForwardError, Result};
pub use forwarded::{add_forwarded, is_upgrade_request, strip_hop_by_hop, ClientIdentity};
pub use proxy::{HttpPool, HttpProxy};
pub use route::{hash_key, request_host, Router};
pub use stats::{BackendHttpStats, HttpStatsSnapshot, StatusClasses, VirtualServerStats};
pub use tls::TlsTermination;
