//! The `lbctl` side of the admin socket (blocking, std only).
//!
//! # Examples
//!
//! ```no_run
//! use lb_bins::admin::{client::Client, AdminState};
//!
//! let mut c = Client::connect("/run/lb-node/admin.sock".as_ref())?;
//! let status = c.status()?;
//! println!("{} virtual servers", status.virtual_servers.len());
//! c.set_backend_admin("web", "198.18.0.151:82", AdminState::Drain)?;
//! # Ok::<(), lb_bins::admin::client::ClientError>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AdminState, Request, Response, Status, MAX_LINE};

/// How long a request may take before the client gives up: longer than the server's
/// [`IDLE_TIMEOUT`](super::server::IDLE_TIMEOUT), so that a request queued behind
/// [`MAX_CONNECTIONS`](super::server::MAX_CONNECTIONS) idle clients is answered once the
/// server closes them, rather than the two timers racing.
pub const TIMEOUT: Duration = Duration::from_secs(15);
const _: () = assert!(TIMEOUT.as_secs() > super::server::IDLE_TIMEOUT.as_secs());

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached (no daemon, or no permission).
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The connection failed mid-request.
    #[error("admin socket: {0}")]
    Io(#[from] io::Error),
    /// The daemon did not answer within [`TIMEOUT`] (busy with other admin connections,
    /// or hung).
    #[error("admin socket: no answer within {} s", TIMEOUT.as_secs())]
    TimedOut,
    /// The daemon's answer was not understood.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon refused the command.
    #[error("{0}")]
    Refused(String),
}

impl ClientError {
    /// Whether the daemon answered and refused (as opposed to not being reachable).
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// A connection to a daemon's admin socket.
#[derive(Debug)]
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`, with [`TIMEOUT`] on every read and write.
    ///
    /// # Errors
    /// [`ClientError::Connect`].
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(connect_err)?;
        let reader = BufReader::new(stream.try_clone().map_err(connect_err)?);
        Ok(Self {
            writer: stream,
            reader,
        })
    }

    /// Sends one request and reads its response.
    ///
    /// # Errors
    /// [`ClientError::Io`], [`ClientError::TimedOut`] or [`ClientError::Protocol`]; an [`Response::Error`] is returned
    /// as a response, not an error.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        // A socket timeout shows as EAGAIN (SO_RCVTIMEO / SO_SNDTIMEO).
        let timed_out = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut,
            _ => ClientError::Io(e),
        };
        self.writer.write_all(&line).map_err(timed_out)?;
        let mut answer = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut answer)
            .map_err(timed_out)?;
        if n == 0 {
            return Err(ClientError::Protocol(
                "connection closed without an answer".into(),
            ));
        }
        if answer.len() > MAX_LINE {
            return Err(ClientError::Protocol(format!(
                "answer longer than {MAX_LINE} bytes"
            )));
        }
        serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Fetches the daemon's [`Status`].
    ///
    /// # Errors
    /// As [`Client::request`]; [`ClientError::Refused`] when the daemon answers an error.
    pub fn status(&mut self) -> Result<Status, ClientError> {
        match self.request(&Request::Status)? {
            Response::Status { status } => Ok(*status),
            Response::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Sets a backend's admin state.
    ///
    /// # Errors
    /// As [`Client::request`]; [`ClientError::Refused`] when the daemon refuses (unknown
    /// virtual server or backend).
    pub fn set_backend_admin(
        &mut self,
        virtual_server: &str,
        backend: &str,
        state: AdminState,
    ) -> Result<(), ClientError> {
        let req = Request::SetBackendAdmin {
            virtual_server: virtual_server.to_owned(),
            backend: backend.to_owned(),
            state,
        };
        match self.request(&req)? {
            Response::Ok => Ok(()),
            Response::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Sets `backend`'s configured weight in `virtual_server` (0..=65535).
    ///
    /// # Errors
    /// As [`Client::set_backend_admin`].
    pub fn set_backend_weight(
        &mut self,
        virtual_server: &str,
        backend: &str,
        weight: u32,
    ) -> Result<(), ClientError> {
        let req = Request::SetBackendWeight {
            virtual_server: virtual_server.to_owned(),
            backend: backend.to_owned(),
            weight,
        };
        match self.request(&req)? {
            Response::Ok => Ok(()),
            Response::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}
