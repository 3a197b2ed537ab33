//! Errors of the HTTP mode: configuration and start-up errors ([`Error`]), and why one
//! request could not be forwarded ([`ForwardError`], which becomes a 502/503/504 response).
//!
//! # Examples
//!
//! ```
//! use lb_proxy::http::{ErrorSource, ForwardError};
//!
//! let e = ForwardError::ConnectTimeout { backend: "127.0.0.1:9".parse().unwrap() };
//! assert_eq!(e.source(), ErrorSource::Backend);
//! assert!(e.is_retryable());
//! assert_eq!(e.status().as_u16(), 502);
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// Errors starting or configuring an HTTP virtual server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting has a value that can never work.
    #[error("invalid {setting}: {reason}")]
    InvalidConfig {
        /// The setting, as named in [`HttpProxyConfig`](super::HttpProxyConfig).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A route or the default pool names a pool that was not handed to the proxy.
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    /// Two pools were handed to the proxy under one name.
    #[error("duplicate pool {0:?}")]
    DuplicatePool(String),
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Reading the listener's local address failed.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] io::Error),
}

/// The HTTP mode's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::error::ErrorSource;

/// Why one request could not be forwarded. Each maps to the status the client receives
/// ([`ForwardError::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// No routing rule matched and there is no default pool.
    #[error("no pool serves host {host:?} path {path:?}")]
    NoRoute {
        /// The request's host (empty when absent).
        host: String,
        /// The request's path.
        path: String,
    },
    /// The chosen pool has no backend that may take a request.
    #[error("no live backend in pool {0:?}")]
    NoBackend(String),
    /// The TCP connect to a backend failed.
    #[error("connect to backend {backend} failed: {source}")]
    Connect {
        /// The backend's address.
        backend: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The TCP connect to a backend (and its TLS handshake, with
    /// [`BackendTls`](super::BackendTls)) took longer than the connect timeout.
    #[error("connect to backend {backend} timed out")]
    ConnectTimeout {
        /// The backend's address.
        backend: SocketAddr,
    },
    /// The TLS handshake with a backend ([`BackendTls`](super::BackendTls)) failed: a
    /// certificate that does not verify, no common version, a backend that does not speak
    /// TLS (one that does not finish it within the connect timeout, which covers the
    /// connect and the handshake, is [`ForwardError::ConnectTimeout`]). Nothing was sent:
    /// retried on another backend, 502 when none is left.
    #[error("TLS handshake with backend {backend} failed: {source}")]
    Tls {
        /// The backend's address.
        backend: SocketAddr,
        /// The cause (rustls's error inside).
        source: io::Error,
    },
    /// The HTTP handshake on a new backend connection failed.
    #[error("handshake with backend {backend} failed: {source}")]
    Handshake {
        /// The backend's address.
        backend: SocketAddr,
        /// The cause.
        source: hyper::Error,
    },
    /// The backend sent no response head within the response timeout.
    #[error("backend {backend} sent no response within {timeout:?}")]
    ResponseTimeout {
        /// The backend's address.
        backend: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The request is not one a proxy may forward (RFC 9112 §3.2: an HTTP/1.1 request
    /// without `Host`, or with more than one `Host` line).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// An HTTP/2 request with more header fields than
    /// [`Limits::max_headers`](super::Limits::max_headers) (an HTTP/1.1 one is refused by
    /// hyper before it is routed): 431, as hyper answers the HTTP/1.1 one. Only that
    /// stream fails.
    #[error("{count} header fields, more than the limit of {limit}")]
    TooManyHeaders {
        /// The request's header fields.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A method this proxy does not forward: `CONNECT` (RFC 9110 §9.3.6), which asks for a
    /// tunnel to the host it names, not for a resource of a backend. 501, as HAProxy and
    /// Envoy answer it unless told to tunnel; the connection is closed.
    #[error("method not implemented: {0}")]
    NotImplemented(http::Method),
    /// A protocol upgrade (WebSocket) routed to a pool that speaks HTTP/2 to its backends
    /// ([`HttpPool::http2`](super::HttpPool::http2)): HTTP/2 has no `Upgrade` (RFC 9113
    /// §8.6), and its extended CONNECT (RFC 8441) is not spoken to backends. 501, and the
    /// connection is closed, as for `CONNECT`.
    #[error("no protocol upgrade to pool {pool}, whose backends are spoken to in HTTP/2")]
    UpgradeNotSupported {
        /// The pool the request was routed to.
        pool: String,
    },
    /// The client's request body failed while it was sent to the backend: the client went
    /// away or broke its framing. Not held against the backend (HAProxy's termination
    /// state `CD`).
    #[error("client aborted its request body: {0}")]
    ClientAborted(hyper::Error),
    /// The client sent nothing more of its request body for the client timeout (HAProxy
    /// `timeout client`, termination state `cD`): 408, and the connection is closed. Not
    /// held against the backend.
    #[error("client request body stalled for {0:?}")]
    ClientTimeout(Duration),
    /// The backend answered with a response a proxy must not pass on: a `101 Switching
    /// Protocols` to a request that asked for no switch (RFC 9110 §15.2.2: only protocols
    /// the client offered; held against the backend), or a transfer coding besides chunked
    /// to an HTTP/1.0 client (RFC 9112 §6.1) or to an HTTP/2 one (which has none, RFC 9113
    /// §8.2.2; neither held against the backend). 502.
    #[error("backend {backend} sent an invalid response: {reason}")]
    InvalidResponse {
        /// The backend's address.
        backend: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
    /// The backend connection failed while the request was sent or the response awaited.
    #[error("backend {backend} failed: {source}")]
    Backend {
        /// The backend's address.
        backend: SocketAddr,
        /// The cause.
        source: hyper::Error,
        /// Whether the request never reached the backend (hyper handed it back), so any
        /// method may be retried.
        not_sent: bool,
    },
}

impl ForwardError {
    /// Who failed: [`ErrorSource::Internal`] without a route,
    /// [`ErrorSource::Backend`] otherwise (no live backend counts as the backends' side, as
    /// in the crate's [`Error::source`](crate::Error::source)).
    pub fn source(&self) -> ErrorSource {
        match self {
            Self::NoRoute { .. } => ErrorSource::Internal,
            Self::BadRequest(_)
            | Self::TooManyHeaders { .. }
            | Self::NotImplemented(_)
            | Self::UpgradeNotSupported { .. }
            | Self::ClientAborted(_)
            | Self::ClientTimeout(_) => ErrorSource::Client,
            _ => ErrorSource::Backend,
        }
    }

    /// Whether trying another backend makes sense (for an idempotent request): the request
    /// cannot have been processed by the backend.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Tls { .. }
            | Self::Handshake { .. } => true,
            Self::Backend { not_sent, .. } => *not_sent,
            _ => false,
        }
    }

    /// The status the client receives: 503 without a backend, 504 on a response timeout,
    /// 408 for a stalled upload, 501 for `CONNECT` and an upgrade to HTTP/2 backends, 431
    /// for too many header fields, 400 for the client's other faults, 502 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotImplemented(_) | Self::UpgradeNotSupported { .. } => {
                StatusCode::NOT_IMPLEMENTED
            }
            Self::NoRoute { .. } | Self::NoBackend(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest(_) | Self::ClientAborted(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}
