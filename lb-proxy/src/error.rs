//! The proxy's error type: who failed, and whether trying another backend makes sense.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::error::{Error, ErrorSource};
//! use std::time::Duration;
//!
//! let e = Error::ConnectTimeout {
//!     backend: "192.0.2.151:82".parse().unwrap(),
//!     timeout: Duration::from_secs(5),
//! };
//! assert_eq!(e.source(), ErrorSource::Backend);
//! assert!(e.is_retryable());
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::proxy_protocol::ParseError;

/// Which side of a proxied connection a failure belongs to (pingora `ErrorSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The client (or the network towards it) misbehaved or went away.
    Client,
    /// A backend refused, timed out or broke the connection, or none was available.
    Backend,
    /// The proxy itself: configuration, resource limits, local socket errors.
    Internal,
}

/// Everything that can go wrong in `lb-proxy`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listening socket could not be created or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A setting is invalid.
    #[error("invalid setting {setting}: {reason}")]
    Config {
        /// The setting's name (HAProxy / keepalived spelling).
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The PROXY protocol header sent by the client is malformed.
    #[error("malformed PROXY protocol header: {0}")]
    ProxyHeader(#[from] ParseError),
    /// The client sent no complete PROXY protocol header in time.
    #[error("no PROXY protocol header within {0:?}")]
    ProxyHeaderTimeout(Duration),
    /// No backend is eligible (all down, drained, or refused by the caller).
    #[error("no backend available")]
    NoBackend,
    /// Every eligible backend is at `maxconn` and the wait queue is full.
    #[error("wait queue full ({0} connections queued)")]
    QueueFull(usize),
    /// Every eligible backend stayed at `maxconn` for the whole queue timeout.
    #[error("no backend slot within the queue timeout of {0:?}")]
    QueueTimeout(Duration),
    /// Connecting to a backend failed (refused, unreachable, reset).
    #[error("cannot connect to backend {backend}: {source}")]
    Connect {
        /// The backend's address.
        backend: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A backend connection could not be set up on this host: no socket (`EMFILE`,
    /// `ENFILE`), a socket option refused, the `source` address not bindable (`EADDRINUSE`,
    /// `EADDRNOTAVAIL`, wrong address family) or no ephemeral port left. Not the backend's
    /// fault: it is neither reported to passive health nor counted against the backend, and
    /// not retried (another backend would meet the same local condition).
    #[error("cannot set up a connection to backend {backend} on this host: {source}")]
    LocalConnect {
        /// The backend's address.
        backend: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Connecting to a backend took longer than `connect_timeout`.
    #[error("connect to backend {backend} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The backend's address.
        backend: SocketAddr,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// Reading from or writing to the client failed.
    #[error("client i/o: {0}")]
    ClientIo(io::Error),
    /// Reading from or writing to the backend failed.
    #[error("backend i/o: {0}")]
    BackendIo(io::Error),
    /// The backend answered, then closed with the client's upload unread (an early
    /// response: a 413, a 401), so its kernel reset the connection: the connection ends,
    /// but the backend is not held to have failed (HAProxy's `observe layer4` counts only
    /// connects).
    #[error("backend answered and stopped reading the upload: {0}")]
    BackendStoppedReading(io::Error),
    /// Neither side sent anything, nor took any of what was sent to it, for the idle
    /// timeout.
    #[error("idle for {0:?}")]
    IdleTimeout(Duration),
    /// The proxy closed the connection: drain deadline reached or stop.
    #[error("closed by proxy shutdown")]
    Shutdown,
    /// A local socket operation failed (pipes, socket options, ephemeral sockets).
    #[error("local i/o: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// Who failed.
    ///
    /// This inherent method shadows `std::error::Error::source` in method-call syntax (the
    /// pingora convention); call `std::error::Error::source(&e)` for the underlying cause.
    pub fn source(&self) -> ErrorSource {
        match self {
            Self::ProxyHeader(_)
            | Self::ProxyHeaderTimeout(_)
            | Self::ClientIo(_)
            | Self::IdleTimeout(_) => ErrorSource::Client,
            Self::NoBackend
            | Self::QueueFull(_)
            | Self::QueueTimeout(_)
            | Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::BackendIo(_)
            | Self::BackendStoppedReading(_) => ErrorSource::Backend,
            Self::Bind { .. }
            | Self::Config { .. }
            | Self::LocalConnect { .. }
            | Self::Shutdown
            | Self::Io(_) => ErrorSource::Internal,
        }
    }

    /// Whether the same client connection may be retried on another backend: true only for
    /// failures before any byte reached a backend (refused or timed-out connects).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::ConnectTimeout { .. })
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
