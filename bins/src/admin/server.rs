//! The daemon's side of the admin socket (tokio).
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use lb_bins::admin::{server, AdminHandler, AdminState, Status};
//!
//! struct Daemon;
//! impl AdminHandler for Daemon {
//!     fn status(&self) -> Status { Status::default() }
//!     fn set_backend_admin(&self, _: &str, _: &str, _: AdminState) -> Result<(), String> { Ok(()) }
//!     fn set_backend_weight(&self, _: &str, _: &str, _: u32) -> Result<(), String> { Ok(()) }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = server::bind("/run/lb-node/admin.sock".as_ref())?;
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! tokio::spawn(server::serve(listener, Arc::new(Daemon), async { let _ = stop_rx.await; }));
//! // … on SIGTERM:
//! let _ = stop_tx.send(());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{AdminHandler, Request, Response, MAX_LINE};

/// Binds the admin socket at `path` with mode 0600.
///
/// Creates the parent directory (mode 0700) when missing. A leftover socket file that no
/// process listens on (`ECONNREFUSED`) is replaced; one that answers means another daemon
/// is running, and one that cannot be tried (`EACCES`, …) is left alone, with the error.
///
/// Must be called within a tokio runtime.
///
/// # Errors
/// `AddrInUse` when another process serves `path`, `AlreadyExists` when `path` is not a
/// socket, and the IO errors of creating the directory, binding, or setting the mode.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by another process", path.display()),
                    ))
                }
                // Nobody listens: a leftover of a daemon that ended.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "{}: cannot tell whether another process serves it ({e}), left alone",
                            path.display()
                        ),
                    ))
                }
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Created 0600 whatever the process umask and the directory's mode (an existing
    // /run/lb-node may be 0755): nobody else can connect between the bind and the chmod.
    // The umask is the process's: a file another thread creates meanwhile is only made
    // more private.
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(previous);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The longest a `set_backend_weight` answer waits for the change to be applied
/// ([`AdminHandler::weights_applied`]) before it is sent anyway.
pub const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Connections served at once (HAProxy's `stats maxconn` default, 10); more wait in the
/// listen backlog until one ends.
pub const MAX_CONNECTIONS: usize = 10;

/// A connection that sends no complete request for this long, or does not take its answer
/// within it, is closed (HAProxy's `stats timeout` default, 10 s). Longer than the client's
/// own [`super::client::TIMEOUT`]-bounded requests need.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves admin connections until `shutdown` completes; each connection runs in its own
/// task, at most [`MAX_CONNECTIONS`] at once, each closed after [`IDLE_TIMEOUT`] without a
/// request. Does not remove the socket file (the daemon does, on exit).
///
/// # Cancel safety
/// Dropping the future stops accepting; connections already accepted finish their current
/// request in their own tasks.
///
/// Accept errors (descriptors or memory running out, …) are logged and retried after a
/// pause: the socket never goes silent while the daemon runs.
///
/// # Errors
/// None in practice (the connection-slot semaphore is never closed).
pub async fn serve<H: AdminHandler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first: beyond the limit, connections wait in the kernel's backlog
        // instead of holding a task, a descriptor and a partial line each.
        let permit = tokio::select! {
            () = &mut shutdown => return Ok(()),
            p = Arc::clone(&slots).acquire_owned() => p.map_err(io::Error::other)?,
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let h = Arc::clone(&handler);
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, h).await {
                            tracing::debug!(error = %e, "admin connection ended with an error");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Transient or not (ENOMEM, ENOBUFS, …), giving up would leave a socket
                    // file nobody answers on for the rest of the daemon's life.
                    if is_transient(&e) {
                        tracing::warn!(error = %e, "admin socket accept failed");
                    } else {
                        tracing::error!(error = %e, "admin socket accept failed, retrying");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

/// Answers one request line.
pub fn handle_line<H: AdminHandler + ?Sized>(handler: &H, line: &str) -> Response {
    answer(handler, serde_json::from_str::<Request>(line))
}

/// Answers a request line once parsed (or not: a `bad request` error).
fn answer<H: AdminHandler + ?Sized>(handler: &H, request: serde_json::Result<Request>) -> Response {
    match request {
        Ok(Request::Status) => Response::Status {
            status: Box::new(handler.status()),
        },
        Ok(Request::SetBackendAdmin {
            virtual_server,
            backend,
            state,
        }) => match handler.set_backend_admin(&virtual_server, &backend, state) {
            Ok(()) => {
                tracing::info!(%virtual_server, %backend, %state, "backend admin state set");
                Response::Ok
            }
            Err(message) => Response::Error { message },
        },
        Ok(Request::SetBackendWeight {
            virtual_server,
            backend,
            weight,
        }) => match handler.set_backend_weight(&virtual_server, &backend, weight) {
            Ok(()) => {
                tracing::info!(%virtual_server, %backend, weight, "backend weight set");
                Response::Ok
            }
            Err(message) => Response::Error { message },
        },
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    }
}

async fn connection<H: AdminHandler>(stream: UnixStream, handler: Arc<H>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let idle = |what: &str| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("admin connection idle: {what}"),
        )
    };
    // Only a request moves the deadline: blank lines do not keep a connection (and its
    // place among the MAX_CONNECTIONS) alive.
    let mut deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        line.clear();
        let n = tokio::time::timeout_at(
            deadline,
            (&mut read)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| idle("no request"))??;
        if n == 0 {
            return Ok(());
        }
        // Whether the line was a request (one the protocol reads, refused or not): only
        // that moves the deadline, not blank lines or garbage.
        let mut understood = false;
        let response = if line.len() > MAX_LINE {
            Response::Error {
                message: format!("request longer than {MAX_LINE} bytes"),
            }
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => {
                    let request = serde_json::from_str::<Request>(text.trim());
                    understood = request.is_ok();
                    let weight = matches!(request, Ok(Request::SetBackendWeight { .. }));
                    let response = answer(&*handler, request);
                    if weight && response == Response::Ok {
                        // Answered once applied: a `status` right after shows it.
                        let applied = handler.weights_applied();
                        if tokio::time::timeout(APPLY_TIMEOUT, applied).await.is_err() {
                            tracing::warn!(
                                "a weight change was not applied within {APPLY_TIMEOUT:?}"
                            );
                        }
                    }
                    response
                }
                Err(_) => Response::Error {
                    message: "request is not UTF-8".into(),
                },
            }
        };
        let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
        out.push(b'\n');
        tokio::time::timeout(IDLE_TIMEOUT, write.write_all(&out))
            .await
            .map_err(|_| idle("answer not read"))??;
        if line.len() > MAX_LINE {
            return Ok(());
        }
        if understood {
            deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
        }
    }
}
