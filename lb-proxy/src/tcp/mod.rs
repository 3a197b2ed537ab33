//! TCP forwarding (HAProxy `mode tcp`, LVS NAT for TCP): [`TcpProxy`] accepts on a virtual
//! address, picks a backend from an `lb_core::Pool`, connects (with retries and
//! redispatch) and runs [`forward`] between the two sockets.
//!
//! [`forward`] moves bytes with `splice(2)` on Linux (the `splice` feature) and through a
//! user-space buffer elsewhere, choosing automatically. Each direction runs
//! `Running → ShuttingDown → Done` (tokio's `TransferState`): on EOF from its source it
//! shuts its destination down for writing (the half-close reaches the other side) while the
//! other direction keeps flowing.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
//! use lb_proxy::tcp::{TcpProxy, TcpProxyConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An echo backend on loopback.
//! let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let backend_addr = backend.local_addr()?;
//! tokio::spawn(async move {
//!     let (mut s, _) = backend.accept().await.unwrap();
//!     let (mut r, mut w) = s.split();
//!     tokio::io::copy(&mut r, &mut w).await.unwrap();
//! });
//! // keepalived: virtual_server 127.0.0.1 <any port> { real_server 127.0.0.1 <backend port> }
//! let set = BackendSet::new(vec![Backend::new(BackendId(1), backend_addr)])?;
//! let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default())?);
//! let config = TcpProxyConfig::new(vec!["127.0.0.1:0".parse()?]);
//! let proxy = TcpProxy::start(config, pool)?;
//!
//! let mut client = tokio::net::TcpStream::connect(proxy.local_addrs()[0]).await?;
//! client.write_all(b"ping").await?;
//! client.shutdown().await?; // half-close: the echo still comes back
//! let mut reply = Vec::new();
//! client.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"ping");
//! proxy.stop().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{Error, Result};

mod copy;
mod proxy;
#[cfg(all(target_os = "linux", feature = "splice"))]
mod splice;

pub use crate::sockopt::UseSrc;
pub use proxy::{ProxyHandle, TcpProxy, TcpProxyConfig};
#[cfg(all(target_os = "linux", feature = "splice"))]
pub use splice::PipePool;

/// Bytes moved by `splice(2)` from a pipe into a socket, process-wide.
static SPLICED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Total bytes moved by `splice(2)` (pipe → socket) in this process since start; always 0
/// without the `splice` feature. Lets tests and operators prove the zero-copy path is used.
pub fn spliced_bytes() -> u64 {
    SPLICED_BYTES.load(Ordering::Relaxed)
}

/// Bytes forwarded by one connection, in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardStats {
    /// Bytes written to the backend (payload from the client), excluding any PROXY header.
    pub client_to_backend: u64,
    /// Bytes written to the client.
    pub backend_to_client: u64,
    /// Of those, bytes moved by `splice(2)` (both directions), without user-space copies.
    pub spliced: u64,
    /// How long forwarding ran.
    pub duration: Duration,
}

/// How [`forward`] moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardMode {
    /// `splice(2)` for bulk transfers where compiled in (Linux + `splice` feature) and
    /// accepted by the kernel, copying small exchanges and everything else (HAProxy
    /// `option splice-auto`). The default.
    #[default]
    Auto,
    /// `splice(2)` for everything (HAProxy `option splice-request` + `option
    /// splice-response`), copying only when the pipe pool is exhausted or the kernel refuses.
    /// Without the `splice` feature, the same as [`ForwardMode::Copy`].
    Splice,
    /// Always copy through a user-space buffer (32 KiB, allocated only while data flows).
    Copy,
}

/// Settings of [`forward`].
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Close when neither side sent anything, nor took any of what was sent to it, for
    /// this long (HAProxy `timeout client` / `timeout server`, IPVS `tcp` timeout): a slow
    /// reader draining a large response is not idle, one that stopped reading is. `None`
    /// never times out. Default 900 s.
    pub idle_timeout: Option<Duration>,
    /// Splice or copy. Default [`ForwardMode::Auto`].
    pub mode: ForwardMode,
    /// Where pipes come from (shared by every connection of a proxy).
    #[cfg(all(target_os = "linux", feature = "splice"))]
    pub pipes: std::sync::Arc<PipePool>,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(900)),
            mode: ForwardMode::Auto,
            #[cfg(all(target_os = "linux", feature = "splice"))]
            pipes: std::sync::Arc::new(PipePool::new(1024, 0)),
        }
    }
}

/// The last time either direction moved bytes, for the idle timeout.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing happened for `timeout`: no [`touch`](Self::touch), and
    /// `progressed` (asked when the time is up) says nothing moved that this could not see.
    pub(crate) async fn idle(
        &self,
        timeout: Option<Duration>,
        mut progressed: impl FnMut() -> bool,
    ) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let deadline = after(self.last(), timeout);
            if Instant::now() >= deadline {
                if progressed() {
                    self.touch();
                    continue;
                }
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// `at + d`, or about 30 years after `at` when that overflows (a `Duration::MAX` timeout
/// means none in practice, and `Instant + Duration` panics past the clock's range).
pub(crate) fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 86_400))
}

/// Waits until `s` is readable: a `poll_fn` over a reference, far smaller than the future of
/// `TcpStream::readable`, which matters because every idle connection parks on it.
pub(crate) async fn read_ready(s: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| s.poll_read_ready(cx)).await
}

/// Waits until `s` is writable (see [`read_ready`]).
pub(crate) async fn write_ready(s: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| s.poll_write_ready(cx)).await
}

/// [`Direction::blocked`] when the direction's writes are not waiting.
const NOT_BLOCKED: u32 = u32::MAX;

/// Told of bytes as [`forward_metered`] moves them, after each write, so that counters
/// move while a connection lasts (HAProxy's `bin`/`bout`, IPVS's byte counts per packet),
/// not only when it ends.
pub trait Meter: Sync {
    /// `n` bytes were written to the backend (`to_backend`) or to the client; `spliced` when
    /// `splice(2)` moved them.
    fn moved(&self, to_backend: bool, n: u64, spliced: bool);
}

/// No meter: [`forward`]'s.
impl Meter for () {
    fn moved(&self, _: bool, _: u64, _: bool) {}
}

/// A connection's state shared by its two directions and its idle timer: kept once, in
/// the connection's future, whose size is the per-connection memory cost.
struct ConnState<'a> {
    activity: Activity,
    /// Bytes written to the backend, and to the client.
    up: AtomicU64,
    down: AtomicU64,
    spliced: AtomicU64,
    /// Per direction (backend-bound, client-bound): while a write waits for the
    /// destination to take more, its unacknowledged bytes
    /// ([`unacked_bytes`](crate::sockopt::unacked_bytes)) when the wait began, or lower as
    /// the idle timer saw them fall; [`NOT_BLOCKED`] otherwise.
    up_blocked: AtomicU32,
    down_blocked: AtomicU32,
    meter: &'a dyn Meter,
}

/// One direction's view of its connection.
pub(crate) struct Direction<'a> {
    conn: &'a ConnState<'a>,
    /// Client to backend.
    upstream: bool,
}

impl Direction<'_> {
    pub(crate) fn activity(&self) -> &Activity {
        &self.conn.activity
    }

    fn blocked(&self) -> &AtomicU32 {
        if self.upstream {
            &self.conn.up_blocked
        } else {
            &self.conn.down_blocked
        }
    }

    /// Waits until `dst` takes more bytes. The time spent is not idle if the peer
    /// acknowledges bytes meanwhile ([`progressed`]): a slow reader keeps its connection.
    pub(crate) async fn wait_writable(&self, dst: &TcpStream) -> std::result::Result<(), DirError> {
        let queued = crate::sockopt::unacked_bytes(dst).unwrap_or(NOT_BLOCKED);
        self.blocked().store(queued, Ordering::Relaxed);
        let r = write_ready(dst).await;
        self.blocked().store(NOT_BLOCKED, Ordering::Relaxed);
        self.activity().touch();
        r.map_err(DirError::Write)
    }

    /// Counts `n` bytes written to the destination. New bytes make any reference the idle
    /// check took of the unacknowledged ones stale ([`progressed`]).
    pub(crate) fn add(&self, n: usize) {
        self.count(n);
        self.conn.meter.moved(self.upstream, n as u64, false);
    }

    /// [`add`](Self::add) for bytes moved by `splice(2)`.
    #[cfg_attr(not(all(target_os = "linux", feature = "splice")), allow(dead_code))]
    pub(crate) fn add_spliced(&self, n: usize) {
        self.count(n);
        self.conn.spliced.fetch_add(n as u64, Ordering::Relaxed);
        self.conn.meter.moved(self.upstream, n as u64, true);
    }

    fn count(&self, n: usize) {
        let bytes = if self.upstream {
            &self.conn.up
        } else {
            &self.conn.down
        };
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.blocked().store(NOT_BLOCKED, Ordering::Relaxed);
    }
}

/// Whether `dst`'s peer has acknowledged bytes since the last look: since a blocked write
/// began waiting, or since this was last asked. Bytes written without waiting may still be
/// in flight (a large upload the send buffer took whole, which the peer then takes slowly):
/// with no earlier look to compare with, bytes still unacknowledged count as progress once
/// and become the reference, so a slow but moving peer is not idle (IPVS refreshes its
/// timer on every ACK), while a stuck one is cut one period later. A write clears the
/// reference ([`Direction::add`]): a later burst's unacknowledged bytes are not compared
/// with an earlier one's.
fn progressed(dst: &TcpStream, blocked: &AtomicU32) -> bool {
    let before = blocked.load(Ordering::Relaxed);
    match crate::sockopt::unacked_bytes(dst) {
        Ok(0) => false,
        Ok(now) if before == NOT_BLOCKED || now < before => {
            blocked.store(now, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// A failure inside one direction: reading its source or writing its destination.
pub(crate) enum DirError {
    Read(io::Error),
    Write(io::Error),
}

/// A direction's state (tokio `TransferState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferState {
    /// Moving bytes.
    Running,
    /// The source hit EOF; shutting the destination down for writing.
    ShuttingDown,
    /// Finished.
    Done,
}

/// One direction: `Running` until EOF from `src`, then `ShuttingDown` (`shutdown(Write)` on
/// `dst`, so the half-close reaches the other side), then `Done`. Errors are attributed to
/// the side that failed.
///
/// Returns `Ok(Some(e))` when writing to `dst` failed: only this direction ended (see
/// [`forward`]), and `e` is reported once the other one ends too.
///
/// `eofs` counts the directions that reached EOF (in its low bits; [`UPLOAD_REFUSED`] is a
/// flag in the same byte, to keep the per-connection future small). The second to get there skips its
/// `shutdown`: both peers have sent their FIN, the connection ends, and closing `dst`
/// sends this FIN (HAProxy makes the same saving; one syscall per connection).
async fn side(
    src: &TcpStream,
    dst: &TcpStream,
    opts: &ForwardOptions,
    dir: Direction<'_>,
    src_is_client: bool,
    eofs: &AtomicU8,
) -> Result<Option<Error>> {
    let attribute = |e| match (e, src_is_client) {
        (DirError::Read(e), true) | (DirError::Write(e), false) => Error::ClientIo(e),
        (DirError::Read(e), false) | (DirError::Write(e), true) => Error::BackendIo(e),
    };
    let mut state = TransferState::Running;
    loop {
        state = match state {
            TransferState::Running => match transfer(src, dst, opts, &dir).await {
                Ok(()) => TransferState::ShuttingDown,
                // `dst` is broken (reset, broken pipe), but what it sent before is still
                // queued in its receive buffer: the other direction goes on to deliver it
                // (a backend that answers and closes while the client still uploads), and
                // ends at that socket's error or EOF. Only this direction ends here.
                Err(e @ DirError::Write(_)) => {
                    if src_is_client {
                        eofs.fetch_or(UPLOAD_REFUSED, Ordering::Relaxed);
                    }
                    return Ok(Some(attribute(e)));
                }
                // `src` is broken: nothing more can come from it, and nothing can reach it.
                Err(e) => return Err(attribute(e)),
            },
            TransferState::ShuttingDown => {
                let last = eofs.fetch_add(1, Ordering::Relaxed) & !UPLOAD_REFUSED > 0;
                if !last {
                    match SockRef::from(dst).shutdown(Shutdown::Write) {
                        Ok(()) => {}
                        // The peer is already gone: nothing left to tell it.
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                        Err(e) => return Err(attribute(DirError::Write(e))),
                    }
                }
                TransferState::Done
            }
            TransferState::Done => return Ok(None),
        };
    }
}

/// In `forward`'s `eofs` byte: the backend stopped taking the client's bytes (writing to it
/// failed).
const UPLOAD_REFUSED: u8 = 0x80;

/// A splice burst below this many bytes counts as interactive traffic.
#[cfg(all(target_os = "linux", feature = "splice"))]
const SMALL_BURST: usize = 4096;

/// Consecutive small bursts after which a direction goes back from splicing to copying.
#[cfg(all(target_os = "linux", feature = "splice"))]
const SMALL_BURSTS_TO_COPY: u8 = 4;

/// Moves bytes `src` → `dst` until EOF on `src`.
///
/// In [`ForwardMode::Auto`] this is HAProxy's `splice-auto`: small exchanges are copied
/// (cheaper than two splices and a pipe for a few hundred bytes); once one read fills the
/// whole copy buffer the transfer is bulk and moves to `splice(2)`, and it returns to copying
/// after [`SMALL_BURSTS_TO_COPY`] consecutive bursts under [`SMALL_BURST`] bytes. Each burst's future is boxed so the long-lived
/// state of an idle connection is only a readiness wait on two references.
async fn transfer(
    src: &TcpStream,
    dst: &TcpStream,
    opts: &ForwardOptions,
    dir: &Direction<'_>,
) -> Result<(), DirError> {
    #[cfg(all(target_os = "linux", feature = "splice"))]
    let (mut can_splice, mut always) = (
        opts.mode != ForwardMode::Copy,
        opts.mode == ForwardMode::Splice,
    );
    #[cfg(not(all(target_os = "linux", feature = "splice")))]
    let _ = opts;
    #[cfg(all(target_os = "linux", feature = "splice"))]
    let mut splicing = always;
    #[cfg(all(target_os = "linux", feature = "splice"))]
    let mut small_bursts = 0u8;
    loop {
        read_ready(src).await.map_err(DirError::Read)?;
        #[cfg(all(target_os = "linux", feature = "splice"))]
        if splicing {
            use splice::Burst;
            match Box::pin(splice::splice_burst(src, dst, &opts.pipes, dir)).await? {
                Burst::Eof => return Ok(()),
                Burst::Moved(n) if n < SMALL_BURST && !always => {
                    small_bursts += 1;
                    if small_bursts >= SMALL_BURSTS_TO_COPY {
                        (splicing, small_bursts) = (false, 0);
                    }
                    continue;
                }
                Burst::Moved(_) => {
                    small_bursts = 0;
                    continue;
                }
                Burst::Unsupported => {
                    tracing::debug!("splice refused by the kernel; copying");
                    (can_splice, always, splicing) = (false, false, false);
                    continue;
                }
                // No pipe free: copy this burst (below); `Splice` mode tries pipes again
                // next time, `Auto` only after another full read.
                Burst::NoPipe => {}
            }
        }
        match Box::pin(copy::copy_burst(src, dst, dir)).await? {
            copy::Copied::Eof => return Ok(()),
            #[cfg(all(target_os = "linux", feature = "splice"))]
            copy::Copied::Moved { filled } => splicing = always || (filled && can_splice),
            #[cfg(not(all(target_os = "linux", feature = "splice")))]
            copy::Copied::Moved { .. } => {}
        }
    }
}

/// Forwards bytes between `client` and `backend` in both directions until both have sent
/// EOF, one fails, the idle timeout expires, or `cancel` resolves.
///
/// Each EOF is passed on with `shutdown(SHUT_WR)` while the other direction still runs
/// (half-close). The FIN of the direction that ends last is left to `close(2)`: drop both
/// streams when this returns.
///
/// A side that fails to read ends both directions. A side that fails to be written to (it
/// reset, as a backend closing with an upload unread does) ends only the direction towards
/// it: what that side sent before is still delivered the other way, as on a direct
/// connection, and the write error is returned once that direction ends too.
///
/// The idle timeout counts reads, and writes that had to wait for the peer to take more
/// (a slow reader draining a large response is not idle).
///
/// Returns the bytes moved in any case, with the reason forwarding stopped.
///
/// # Errors
/// [`Error::ClientIo`] / [`Error::BackendIo`] for a failing side (reset, broken pipe),
/// [`Error::IdleTimeout`], [`Error::Shutdown`] when `cancel` resolved first.
///
/// # Cancel safety
/// Dropping the future drops in-flight bytes (a pipe holding some is closed, not reused);
/// prefer `cancel`, which still returns the counts.
pub async fn forward(
    client: &TcpStream,
    backend: &TcpStream,
    opts: &ForwardOptions,
    cancel: impl Future<Output = ()>,
) -> (ForwardStats, Result<()>) {
    forward_metered(client, backend, opts, &(), cancel).await
}

/// [`forward`], telling `meter` of the bytes moved after each write.
///
/// # Errors
/// As [`forward`].
///
/// # Cancel safety
/// As [`forward`]; what `meter` was told stays told.
pub async fn forward_metered(
    client: &TcpStream,
    backend: &TcpStream,
    opts: &ForwardOptions,
    meter: &dyn Meter,
    cancel: impl Future<Output = ()>,
) -> (ForwardStats, Result<()>) {
    let start = Instant::now();
    let conn = ConnState {
        activity: Activity::new(),
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
        spliced: AtomicU64::new(0),
        up_blocked: AtomicU32::new(NOT_BLOCKED),
        down_blocked: AtomicU32::new(NOT_BLOCKED),
        meter,
    };
    let eofs = AtomicU8::new(0);
    // The direction futures are built in place inside `select!` (not bound to locals first):
    // rustc stores a moved-from future twice, and this future lives as long as the
    // connection, so its size is the per-connection memory cost.
    let result = tokio::select! {
        r = futures::future::try_join(
            side(client, backend, opts, Direction { conn: &conn, upstream: true }, true, &eofs),
            side(backend, client, opts, Direction { conn: &conn, upstream: false }, false, &eofs),
        ) => match r {
            Ok((None, None)) => Ok(()),
            Ok((Some(e), _) | (None, Some(e))) => Err(e),
            Err(e) => Err(e),
        },
        () = conn.activity.idle(opts.idle_timeout, || {
            // Both asked, so each wait's reference moves on.
            progressed(backend, &conn.up_blocked) | progressed(client, &conn.down_blocked)
        }) => Err(Error::IdleTimeout(opts.idle_timeout.unwrap_or_default())),
        () = cancel => Err(Error::Shutdown),
    };
    let stats = ForwardStats {
        client_to_backend: conn.up.load(Ordering::Relaxed),
        backend_to_client: conn.down.load(Ordering::Relaxed),
        spliced: conn.spliced.load(Ordering::Relaxed),
        duration: start.elapsed(),
    };
    // A backend that answered and then stopped taking the upload (closed with it unread:
    // its kernel resets, so reading it fails too after its answer): an early response, not
    // a broken backend. The reset may reach the read of the answer's direction before a
    // write of the upload fails: a reset after an answer to a client that sent something is
    // taken for the same (a backend that dies with nothing unread sends a FIN, not a reset).
    let result = match result {
        Err(Error::BackendIo(e))
            if stats.backend_to_client > 0
                && (eofs.load(Ordering::Relaxed) & UPLOAD_REFUSED != 0
                    || (e.kind() == io::ErrorKind::ConnectionReset
                        && stats.client_to_backend > 0)) =>
        {
            Err(Error::BackendStoppedReading(e))
        }
        r => r,
    };
    (stats, result)
}
