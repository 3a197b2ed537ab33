//! The IO half of [`crate::track`]: a process watcher (the kernel's process events
//! connector, or a `/proc` scan each second where the connector is not available) and a
//! file watcher (inotify), each run as one task per speaker that reports to the speaker's
//! control channel.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::Control;
use crate::machine::TrackId;
use crate::track::{
    parse_file_value, parse_stat, CountCause, ProcEvent, ProcessQuorum, TrackFile, TrackProcess,
};
use crate::{Error, Result};

/// How often `/proc` is scanned when the process events connector is not available: it
/// exists only in the initial network namespace and for the initial PID namespace.
pub(crate) const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// How long [`ProcessWatcher::start`] waits for the first count of `/proc`.
pub(crate) const FIRST_COUNT_WAIT: Duration = Duration::from_secs(1);

/// Longest command line read (`/proc/PID/cmdline`), bytes.
const CMDLINE_MAX: usize = 4096;

/// The connector socket, subscribed; unsubscribes (`PROC_CN_MCAST_IGNORE`) when dropped,
/// as keepalived does, so that the kernel stops sending events nobody reads.
pub(crate) struct Connector {
    sock: netlink_sys::Socket,
    port: u32,
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.sock.send(&ProcEvent::ignore_request(self.port), 0);
    }
}

impl AsRawFd for Connector {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Where process changes come from.
enum Source {
    /// The connector, subscribed, not yet registered with a reactor.
    Subscribed(Connector),
    /// The connector, answering (registered with the watcher thread's reactor).
    Connector(AsyncFd<Connector>),
    /// A `/proc` scan every [`SCAN_INTERVAL`].
    Scan,
}

/// What [`ProcessWatcher::start`] gives back: the first count's state of each spec
/// (`(instance, track id, quorum held)`, `None` if it took too long), and the thread.
pub(crate) type Started = (
    Vec<(usize, TrackId, Option<bool>)>,
    Option<std::thread::JoinHandle<()>>,
);

/// Every `vrrp_track_process` of a speaker's instances: `(instance, track id, spec)`.
pub(crate) struct ProcessWatcher {
    specs: Vec<(usize, TrackId, TrackProcess)>,
    quorums: Vec<ProcessQuorum>,
    /// The processes each spec counts.
    members: Vec<HashSet<u32>>,
    source: Source,
    needs_cmdline: bool,
    /// Bytes of `/proc/PID/cmdline` worth reading: the longest pattern's and one more.
    cmdline_max: usize,
    /// Connector messages dropped as malformed.
    malformed: u64,
    /// When the next full count is due after lost events (at most one a second).
    rescan_at: Option<Instant>,
    last_rescan: Option<Instant>,
}

impl std::fmt::Debug for ProcessWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessWatcher")
            .field("specs", &self.specs.len())
            .field("scanning", &matches!(self.source, Source::Scan))
            .finish()
    }
}

/// Opens the connector and asks for process events (the answer is awaited by the watcher
/// thread); `Err` says why not (the caller falls back to scanning).
fn open_connector() -> std::io::Result<Connector> {
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_CONNECTOR)?;
    sock.bind(&netlink_sys::SocketAddr::new(0, 1))?; // group CN_IDX_PROC
    let mut addr = netlink_sys::SocketAddr::new(0, 0);
    sock.get_address(&mut addr)?;
    // Room for bursts (keepalived's process_monitor_rcv_bufs); forced past rmem_max
    // when allowed (CAP_NET_ADMIN).
    if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(1 << 20))
        .is_err()
    {
        let _ = sock.set_rx_buf_sz(1 << 20);
    }
    sock.set_non_blocking(true)?;
    let port = addr.port_number();
    sock.send(&ProcEvent::listen_request(port), 0)?;
    Ok(Connector { sock, port })
}

/// Reads at most `max` bytes of `path`, without blocking on odd files.
fn read_head(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut out = Vec::new();
    f.take(max as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// What `/proc/PID` says: the name, and the first `cmdline_max` bytes of the command line
/// if asked (enough to compare every pattern).
fn read_process(pid: u32, cmdline_max: Option<usize>) -> Option<(Vec<u8>, Vec<u8>)> {
    let stat = read_head(Path::new(&format!("/proc/{pid}/stat")), 1024).ok()?;
    let (comm, zombie) = parse_stat(&stat)?;
    if zombie {
        return None;
    }
    let comm = comm.to_vec();
    let cmdline = match cmdline_max {
        Some(max) => read_head(Path::new(&format!("/proc/{pid}/cmdline")), max).ok()?,
        None => Vec::new(),
    };
    Some((comm, cmdline))
}

impl ProcessWatcher {
    /// Subscribes to process events (or settles for scanning, without `connector` or
    /// where they are not offered), then counts the matching processes in `/proc`: each
    /// spec's health is known from the start. Subscribing first, so that no change
    /// between the count and the first event is missed. Blocks (see
    /// [`ProcessWatcher::start`]).
    fn with_connector(specs: Vec<(usize, TrackId, TrackProcess)>, connector: bool) -> Result<Self> {
        let opened = if connector {
            open_connector()
        } else {
            Err(std::io::Error::other("not asked for"))
        };
        let source = match opened {
            Ok(c) => Source::Subscribed(c),
            Err(e) => {
                tracing::info!(error = %e, "process events connector not available (outside the initial network namespace?): track_process scans /proc every {} s", SCAN_INTERVAL.as_secs());
                Source::Scan
            }
        };
        let needs_cmdline = specs.iter().any(|(_, _, s)| s.pattern.needs_cmdline());
        // The command's first word and its parameters, NUL-separated, and one byte more
        // to tell "longer" apart (keepalived reads the longest name + 2).
        let cmdline_max = specs
            .iter()
            .map(|(_, _, s)| {
                s.pattern.process.len()
                    + s.pattern.params.iter().map(|p| p.len() + 1).sum::<usize>()
                    + 2
            })
            .max()
            .unwrap_or(0)
            .min(CMDLINE_MAX);
        let mut w = Self {
            quorums: Vec::new(),
            members: vec![HashSet::new(); specs.len()],
            specs,
            source,
            needs_cmdline,
            cmdline_max,
            malformed: 0,
            rescan_at: None,
            last_rescan: None,
        };
        w.members = w.scan();
        w.quorums = w
            .specs
            .iter()
            .zip(&w.members)
            .map(|((_, _, s), m)| ProcessQuorum::new(s, m.len() as u32))
            .collect();
        for ((i, _, s), q) in w.specs.iter().zip(&w.quorums) {
            tracing::info!(instance = i, track_process = %s.name, processes = q.count(), quorum = q.is_up(), "tracked process counted");
        }
        Ok(w)
    }

    /// Whether spec `(instance, id)` has its quorum now.
    #[cfg(test)]
    pub(crate) fn is_up(&self, instance: usize, id: TrackId) -> Option<bool> {
        self.specs
            .iter()
            .position(|(i, t, _)| *i == instance && *t == id)
            .map(|k| self.quorums[k].is_up())
    }

    /// Which specs process `pid` matches; `None` if it is gone (or a zombie).
    fn matching(&self, pid: u32) -> Option<Vec<bool>> {
        let (comm, cmdline) = read_process(pid, self.needs_cmdline.then_some(self.cmdline_max))?;
        Some(
            self.specs
                .iter()
                .map(|(_, _, s)| s.pattern.matches(&comm, &cmdline))
                .collect(),
        )
    }

    /// The processes in `/proc` each spec counts.
    fn scan(&self) -> Vec<HashSet<u32>> {
        let mut out = vec![HashSet::new(); self.specs.len()];
        let Ok(dir) = std::fs::read_dir("/proc") else {
            tracing::warn!("cannot read /proc: no process is counted");
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Some(m) = self.matching(pid) else {
                continue;
            };
            for (k, m) in m.into_iter().enumerate() {
                if m {
                    out[k].insert(pid);
                }
            }
        }
        out
    }

    /// Replaces every spec's processes with a fresh scan: counts that grew count as
    /// forks, counts that shrank as exits (for the delays).
    fn rescan(&mut self, now: Instant, tx: &mpsc::UnboundedSender<Control>) {
        self.last_rescan = Some(now);
        self.rescan_at = None;
        let fresh = self.scan();
        for (k, m) in fresh.into_iter().enumerate() {
            let before = self.members[k].len();
            let cause = if m.len() >= before {
                CountCause::Fork
            } else {
                CountCause::Exit
            };
            self.members[k] = m;
            self.changed(k, now, cause, tx);
        }
    }

    /// Spec `k`'s membership changed: tells the speaker if its health does now.
    fn changed(
        &mut self,
        k: usize,
        now: Instant,
        cause: CountCause,
        tx: &mpsc::UnboundedSender<Control>,
    ) {
        let count = self.members[k].len() as u32;
        if let Some(up) = self.quorums[k].update(now, count, cause) {
            self.report(k, up, tx);
        }
    }

    fn report(&self, k: usize, up: bool, tx: &mpsc::UnboundedSender<Control>) {
        let (instance, id, spec) = &self.specs[k];
        tracing::info!(track_process = %spec.name, processes = self.members[k].len(), "quorum {}", if up { "gained" } else { "lost" });
        let (_, healthy) = spec.as_track(up);
        let _ = tx.send(Control::Track(*instance, *id, healthy));
    }

    fn handle_event(&mut self, ev: ProcEvent, now: Instant, tx: &mpsc::UnboundedSender<Control>) {
        match ev {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } if child_pid == child_tgid => {
                // A child already gone (its exit may have been lost) is not counted.
                if !self.members.iter().any(|m| m.contains(&parent_tgid))
                    || !Path::new(&format!("/proc/{child_tgid}")).exists()
                {
                    return;
                }
                for k in 0..self.specs.len() {
                    if self.members[k].contains(&parent_tgid) && self.members[k].insert(child_tgid)
                    {
                        self.changed(k, now, CountCause::Fork, tx);
                    }
                }
            }
            ProcEvent::Exec { pid, tgid } | ProcEvent::Comm { pid, tgid } if pid == tgid => {
                // A process gone since (its exit event follows, or came first): the exit
                // decides, with terminate_delay; this late event is not a name change.
                let Some(m) = self.matching(tgid) else {
                    return;
                };
                for (k, m) in m.into_iter().enumerate() {
                    let changed = if m {
                        self.members[k].insert(tgid)
                    } else {
                        self.members[k].remove(&tgid)
                    };
                    if changed {
                        self.changed(k, now, CountCause::Other, tx);
                    }
                }
            }
            ProcEvent::Exit { pid, tgid } if pid == tgid => {
                for k in 0..self.specs.len() {
                    if self.members[k].remove(&tgid) {
                        self.changed(k, now, CountCause::Exit, tx);
                    }
                }
            }
            ProcEvent::Ack { err, .. } if err != 0 => {
                tracing::warn!(err, "process events connector reported an error");
            }
            _ => {}
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.quorums
            .iter()
            .filter_map(ProcessQuorum::poll_timeout)
            .chain(self.rescan_at)
            .min()
    }

    fn timeouts(&mut self, now: Instant, tx: &mpsc::UnboundedSender<Control>) {
        if self.rescan_at.is_some_and(|t| t <= now) {
            self.rescan(now, tx);
        }
        for k in 0..self.quorums.len() {
            if let Some(up) = self.quorums[k].handle_timeout(now) {
                self.report(k, up, tx);
            }
        }
    }

    /// Events were lost: the count is redone (at most once a second, as keepalived waits
    /// before rebuilding), after what is queued is thrown away (older than the count).
    fn lost_events(&mut self, now: Instant, tx: &mpsc::UnboundedSender<Control>) {
        if let Source::Connector(fd) = &self.source {
            let mut buf = [0u8; 4096];
            // Bounded: the queue holds at most the receive buffer.
            for _ in 0..100_000 {
                if fd.get_ref().sock.recv(&mut &mut buf[..], 0).is_err() {
                    break;
                }
            }
        }
        let due = self
            .last_rescan
            .map_or(now, |t| (t + Duration::from_secs(1)).max(now));
        if due <= now {
            tracing::warn!("process events lost (receive buffer full): counting again from /proc");
            self.rescan(now, tx);
        } else {
            self.rescan_at = Some(due);
        }
    }

    /// Starts the watcher on a thread of its own: reading `/proc` can block (a process
    /// stuck in the kernel blocks a read of its command line), so neither the first
    /// count nor any later one runs on the caller's event loop. The thread subscribes,
    /// counts, reports every spec's state once ([`Control::Track`]), then follows changes
    /// until the speaker's channel closes. Returns the first count's states by spec, as
    /// [`ProcessWatcher::is_up`] gives them, if it took less than [`FIRST_COUNT_WAIT`];
    /// `None` otherwise (unknown until the thread reports).
    pub(crate) fn start(
        specs: Vec<(usize, TrackId, TrackProcess)>,
        tx: mpsc::UnboundedSender<Control>,
    ) -> Started {
        Self::start_with(specs, tx, true)
    }

    fn start_with(
        specs: Vec<(usize, TrackId, TrackProcess)>,
        tx: mpsc::UnboundedSender<Control>,
        connector: bool,
    ) -> Started {
        let keys: Vec<(usize, TrackId)> = specs.iter().map(|(i, id, _)| (*i, *id)).collect();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("lb-track-process".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "track_process: no runtime, processes are not followed");
                        return;
                    }
                };
                let w = match Self::with_connector(specs, connector) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(error = %e, "track_process: processes are not followed");
                        return;
                    }
                };
                let _ = first_tx.send(w.quorums.iter().map(ProcessQuorum::is_up).collect::<Vec<_>>());
                for k in 0..w.specs.len() {
                    let (instance, id, spec) = &w.specs[k];
                    let (_, healthy) = spec.as_track(w.quorums[k].is_up());
                    let _ = tx.send(Control::Track(*instance, *id, healthy));
                }
                rt.block_on(w.run(tx));
            });
        let handle = match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "track_process: no thread, processes are not followed");
                None
            }
        };
        let (first, handle) = match first_rx.recv_timeout(FIRST_COUNT_WAIT) {
            Ok(f) => (Some(f), handle),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!("track_process: counting the processes in /proc took more than {FIRST_COUNT_WAIT:?}: their state is unknown until it is done");
                (None, handle)
            }
            // The thread ended without counting (logged there): no report will come.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (None, None),
        };
        let states = keys
            .into_iter()
            .enumerate()
            .map(|(k, (i, id))| (i, id, first.as_ref().and_then(|f| f.get(k).copied())))
            .collect();
        (states, handle)
    }

    /// Waits (at most 500 ms) for the kernel's answer to our subscription (the ack that
    /// repeats our sequence number: acks reach every listener). It says nothing to a
    /// process outside the initial PID namespace, whose events would never come. Events
    /// lost meanwhile (`ENOBUFS`) are counted again once the answer is known, from `/proc`
    /// either way.
    async fn confirm(&mut self, tx: &mpsc::UnboundedSender<Control>) {
        let source = std::mem::replace(&mut self.source, Source::Scan);
        let Source::Subscribed(c) = source else {
            self.source = source;
            return;
        };
        let port = c.port;
        let fd = match super::sys::async_fd(c) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "process events connector: scanning /proc instead");
                return;
            }
        };
        let mut buf = vec![0u8; 4096];
        let mut lost = false;
        let acked = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match recv(&fd, &mut buf).await {
                    Ok(n) => {
                        for ev in ProcEvent::parse_all(&buf[..n]).into_iter().flatten() {
                            match ev {
                                ProcEvent::Ack { err, seq } if seq == port => return Ok(err),
                                _ => {}
                            }
                        }
                    }
                    // Events lost while waiting (other listeners' events reach us too,
                    // whether or not ours was accepted): our ack may be among them, or
                    // still to come. Count again once we know.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match acked {
            Ok(Ok(0)) => {
                self.source = Source::Connector(fd);
                if lost {
                    self.lost_events(super::now(), tx);
                }
            }
            Ok(Ok(err)) => tracing::info!(err, "process events connector refused: track_process scans /proc every {} s", SCAN_INTERVAL.as_secs()),
            Ok(Err(e)) => tracing::info!(error = %e, "process events connector failed: track_process scans /proc every {} s", SCAN_INTERVAL.as_secs()),
            Err(_) if lost => {
                // The ack may have been lost with the rest: subscribed, most likely, but
                // unsure. Scanning is always right.
                tracing::info!("process events connector: our subscription's answer was lost in an overflow; track_process scans /proc every {} s", SCAN_INTERVAL.as_secs());
            }
            Err(_) => tracing::info!("process events connector did not answer (outside the initial PID namespace?): track_process scans /proc every {} s", SCAN_INTERVAL.as_secs()),
        }
        if matches!(self.source, Source::Scan) {
            // What was counted may have changed meanwhile.
            self.rescan(super::now(), tx);
        }
    }

    /// Runs until the speaker's channel closes.
    async fn run(mut self, tx: mpsc::UnboundedSender<Control>) {
        self.confirm(&tx).await;
        let mut scan = tokio::time::interval(SCAN_INTERVAL);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scan.tick().await; // the first tick is now: the start counted already
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let timeout = self.next_timeout();
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let scanning = matches!(self.source, Source::Scan);
            let connector = match &self.source {
                Source::Connector(fd) => Some(fd),
                _ => None,
            };
            let got = tokio::select! {
                () = tx.closed() => return,
                () = sleep => Got::Timeout,
                _ = scan.tick(), if scanning => Got::Scan,
                r = recv_opt(connector, &mut buf) => Got::Recv(r),
            };
            let now = super::now();
            match got {
                Got::Timeout => self.timeouts(now, &tx),
                Got::Scan => self.rescan(now, &tx),
                Got::Recv(Ok(n)) => {
                    for ev in ProcEvent::parse_all(&buf[..n]) {
                        match ev {
                            Ok(ev) => self.handle_event(ev, now, &tx),
                            Err(why) => {
                                self.malformed += 1;
                                tracing::debug!(
                                    why,
                                    malformed = self.malformed,
                                    "process event dropped"
                                );
                            }
                        }
                    }
                }
                Got::Recv(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.lost_events(now, &tx);
                }
                Got::Recv(Err(e)) => {
                    tracing::warn!(error = %e, "process events connector failed: track_process scans /proc every {} s from now", SCAN_INTERVAL.as_secs());
                    self.source = Source::Scan;
                }
            }
        }
    }
}

/// What woke the process watcher.
enum Got {
    Timeout,
    Scan,
    Recv(std::io::Result<usize>),
}

/// One datagram from the connector.
async fn recv(fd: &AsyncFd<Connector>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|s| s.get_ref().sock.recv(&mut &mut buf[..], 0)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// [`recv`], never ready without a connector.
async fn recv_opt(fd: Option<&AsyncFd<Connector>>, buf: &mut [u8]) -> std::io::Result<usize> {
    match fd {
        Some(fd) => recv(fd, buf).await,
        None => std::future::pending().await,
    }
}

/// inotify, for [`AsyncFd`] (which wants [`AsRawFd`]).
pub(crate) struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Every `track_file` of a speaker's instances.
pub(crate) struct FileWatcher {
    specs: Vec<(usize, TrackId, TrackFile)>,
    /// Per spec: the (watched directory, file name) pairs whose events concern it: the
    /// path as written, and for a symbolic link also its target's (keepalived watches the
    /// target).
    names: Vec<Vec<(WatchDescriptor, OsString)>>,
    /// Per spec: the status last reported ([`TrackFile::status`]).
    status: Vec<i32>,
    /// Per spec: its watches are to be set again (a watched directory went away, or a
    /// link changed), tried each second until they are.
    rewatch: Vec<bool>,
    inotify: AsyncFd<InotifyFd>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("specs", &self.specs.len())
            .finish()
    }
}

/// How much of a tracked file is read, as keepalived's `process_track_file`.
const FILE_HEAD: usize = 127;

/// A tracked file's value: 0 when it does not exist or holds no number (logged); `None`
/// for a number outside the 32-bit range, which keepalived (`process_track_file`: "Invalid
/// number … - ignoring") ignores, keeping the value it had (0 at start). Read without
/// blocking (a FIFO with no writer reads as empty) and at most [`FILE_HEAD`] bytes
/// (`/dev/zero` is no trouble).
fn read_value(f: &TrackFile) -> Option<i64> {
    match read_head(&f.path, FILE_HEAD) {
        Ok(c) => match parse_file_value(&c) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                tracing::warn!(track_file = %f.name, path = %f.path.display(), content = %String::from_utf8_lossy(&c).trim_end(), "number outside the 32-bit range: ignored, as keepalived ignores it");
                None
            }
            Err(why) => {
                tracing::warn!(track_file = %f.name, path = %f.path.display(), "{why}: read as 0, as keepalived does");
                Some(0)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(e) => {
            tracing::warn!(track_file = %f.name, path = %f.path.display(), error = %e, "cannot read: read as 0");
            Some(0)
        }
    }
}

/// The file's directory, made absolute with links resolved, and its name.
fn split_path(p: &Path) -> Result<(PathBuf, OsString)> {
    let bad = |why: String| Error::Config(format!("track_file {}: {why}", p.display()));
    let name = p
        .file_name()
        .ok_or_else(|| bad("names no file".into()))?
        .to_owned();
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| bad(format!("its directory {}: {e}", dir.display())))?;
    if !dir.is_dir() {
        return Err(bad(format!("{} is not a directory", dir.display())));
    }
    Ok((dir, name))
}

/// What a tracked file's directory is watched for: a file written (closed after writing),
/// deleted, or renamed in or out.
fn watch_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVE
}

/// Watches `f`'s directory (and a symbolic link's target's): the (watch, name) pairs
/// whose events concern it. Watching a directory twice gives the same watch.
fn watch(inotify: &Inotify, f: &TrackFile) -> Result<Vec<(WatchDescriptor, OsString)>> {
    let flags = watch_flags();
    let mut paths = vec![split_path(&f.path)?];
    // A link: its target's directory too (a write through the link is an event there);
    // the link's own catches the link being replaced (`ln -sf`). A target whose directory
    // does not exist (yet) is an error: the caller tries again.
    if let Ok(to) = std::fs::read_link(&f.path) {
        let to = paths[0].0.join(to);
        let target = to.canonicalize().unwrap_or(to);
        if target != paths[0].0.join(&paths[0].1) {
            paths.push(split_path(&target)?);
        }
    }
    let mut pairs = Vec::new();
    for (dir, name) in paths {
        let wd = inotify.add_watch(&dir, flags).map_err(|e| {
            Error::Config(format!(
                "track_file {}: watching {}: {e}",
                f.name,
                dir.display()
            ))
        })?;
        pairs.push((wd, name));
    }
    Ok(pairs)
}

/// keepalived's `init_file [VALUE] [overwrite]`: writes each file's value if it does not
/// exist, or always with `overwrite`, once when the daemon starts (keepalived: "Don't
/// overwrite a file on reload": a reload must not undo `echo -254 > FILE`). Something
/// other than a regular file is left alone.
///
/// # Errors
/// [`Error::Config`] naming the first file that could not be written (the others are
/// written all the same).
pub fn init_track_files<'a>(files: impl IntoIterator<Item = &'a TrackFile>) -> Result<()> {
    let mut first_error = None;
    for f in files {
        let Some((value, overwrite)) = f.init else {
            continue;
        };
        if std::fs::symlink_metadata(&f.path).is_ok() && !overwrite {
            continue;
        }
        if std::fs::metadata(&f.path).is_ok_and(|m| !m.is_file()) {
            tracing::warn!(track_file = %f.name, path = %f.path.display(), "init_file: not a regular file, left alone");
            continue;
        }
        if let Err(e) = std::fs::write(&f.path, format!("{value}\n")) {
            first_error.get_or_insert(Error::Config(format!(
                "track_file {}: init_file {}: {e}",
                f.name,
                f.path.display()
            )));
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl FileWatcher {
    /// Watches every file's directory (and a symbolic link's target's) and reads each
    /// file: each spec's status is known from the start.
    ///
    /// # Errors
    /// [`Error::Config`] for a file whose directory does not exist or cannot be watched.
    pub(crate) fn new(specs: Vec<(usize, TrackId, TrackFile)>) -> Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::Config(format!("inotify: {e}")))?;
        let mut names = Vec::new();
        let mut rewatch = Vec::new();
        for (_, _, f) in &specs {
            match watch(&inotify, f) {
                Ok(pairs) => {
                    names.push(pairs);
                    rewatch.push(false);
                }
                // A link whose target's directory is missing: its own directory for now
                // (which must exist), the target's tried again each second.
                Err(e) => {
                    let (dir, name) = split_path(&f.path)?;
                    let wd = inotify.add_watch(&dir, watch_flags()).map_err(|_| e)?;
                    names.push(vec![(wd, name)]);
                    rewatch.push(true);
                }
            }
        }
        let status = specs
            .iter()
            .map(|(_, _, f)| f.status(read_value(f).unwrap_or(0)))
            .collect();
        Ok(Self {
            rewatch,
            specs,
            names,
            status,
            inotify: super::sys::async_fd(InotifyFd(inotify))?,
        })
    }

    /// Spec `(instance, id)`'s status now ([`TrackFile::status`]).
    pub(crate) fn status(&self, instance: usize, id: TrackId) -> Option<i32> {
        self.specs
            .iter()
            .position(|(i, t, _)| *i == instance && *t == id)
            .map(|k| self.status[k])
    }

    /// Spec `k`'s file reads `value` now: tells the speaker if its status changed.
    fn update(&mut self, k: usize, value: i64, tx: &mpsc::UnboundedSender<Control>) {
        let f = &self.specs[k].2;
        let status = f.status(value);
        if status != self.status[k] {
            self.status[k] = status;
            tracing::info!(track_file = %f.name, value, status, "tracked file changed");
            let (instance, id, _) = &self.specs[k];
            let _ = tx.send(Control::TrackValue(*instance, *id, status));
        }
    }

    /// Sets spec `k`'s watches again, and reads it whether or not that worked (a link
    /// pointed at a missing directory reads as 0 meanwhile); `false` while the watches
    /// cannot be set.
    fn rewatch(&mut self, k: usize, tx: &mpsc::UnboundedSender<Control>) -> bool {
        let set = match watch(&self.inotify.get_ref().0, &self.specs[k].2) {
            Ok(pairs) => {
                self.names[k] = pairs;
                self.rewatch[k] = false;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "track_file: watch not set again yet");
                false
            }
        };
        if let Some(v) = read_value(&self.specs[k].2) {
            self.update(k, v, tx);
        }
        set
    }

    /// Runs until the speaker's channel closes.
    pub(crate) async fn run(mut self, tx: mpsc::UnboundedSender<Control>) {
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retrying = self.rewatch.iter().any(|r| *r);
            let events = tokio::select! {
                () = tx.closed() => return,
                _ = retry.tick(), if retrying => {
                    for k in 0..self.specs.len() {
                        if self.rewatch[k] && self.rewatch(k, &tx) {
                            tracing::info!(track_file = %self.specs[k].2.name, "track_file: watched again");
                        }
                    }
                    continue;
                }
                r = self.inotify.readable() => {
                    let Ok(mut guard) = r else { return };
                    match guard.try_io(|i| i.get_ref().0.read_events().map_err(std::io::Error::from)) {
                        Ok(Ok(ev)) => ev,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "reading inotify events");
                            continue;
                        }
                        Err(_would_block) => continue,
                    }
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost: read every file again.
                    // A link may have been pointed elsewhere among them: watched again.
                    tracing::warn!("inotify queue overflowed: reading every tracked file again");
                    for k in 0..self.specs.len() {
                        if !self.rewatch(k, &tx) {
                            self.rewatch[k] = true;
                        }
                    }
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The watched directory is gone (deleted, or replaced by a new one):
                    // its files read as 0, as deleted files do, and its watch is set again
                    // each second until the directory is back.
                    for k in 0..self.specs.len() {
                        if self.names[k].iter().any(|(wd, _)| *wd == ev.wd) {
                            tracing::warn!(track_file = %self.specs[k].2.name, path = %self.specs[k].2.path.display(), "the tracked file's directory is gone: it reads as 0 until it is back");
                            self.update(k, 0, &tx);
                            self.rewatch[k] = true;
                        }
                    }
                    continue;
                }
                let Some(name) = &ev.name else { continue };
                for k in 0..self.specs.len() {
                    let Some(at) = self.names[k]
                        .iter()
                        .position(|(wd, n)| *wd == ev.wd && n == name)
                    else {
                        continue;
                    };
                    // The path as written changed: a link may point elsewhere now, so
                    // its target is watched again (the same watches if not).
                    if at == 0 && (self.names[k].len() > 1 || self.specs[k].2.path.is_symlink()) {
                        if !self.rewatch(k, &tx) {
                            self.rewatch[k] = true;
                        }
                        continue;
                    }
                    // Read the file whatever happened to this name (deleted, renamed away,
                    // written): a link's target gone reads as 0, as a deleted file.
                    if let Some(value) = read_value(&self.specs[k].2) {
                        self.update(k, value, &tx);
                    }
                }
            }
        }
    }
}

/// Every tracked process and file of `configs`, by instance and track id.
pub(crate) type Specs<T> = Vec<(usize, TrackId, T)>;

/// Collects the process and file specs with their [`TrackId`]s.
pub(crate) fn collect(
    configs: &[super::VrrpInstanceConfig],
) -> (Specs<TrackProcess>, Specs<TrackFile>) {
    let mut procs = Vec::new();
    let mut files = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let base = c.track.len() + c.track_script.len();
        for (k, p) in c.track_process.iter().enumerate() {
            procs.push((i, TrackId(base + k), p.clone()));
        }
        let base = base + c.track_process.len();
        for (k, f) in c.track_file.iter().enumerate() {
            files.push((i, TrackId(base + k), f.clone()));
        }
    }
    (procs, files)
}

/// Checks used in tests: the process ids a watcher counts for each spec.
#[cfg(test)]
impl ProcessWatcher {
    pub(crate) fn members(&self, k: usize) -> &HashSet<u32> {
        &self.members[k]
    }
    pub(crate) fn uses_connector(&self) -> bool {
        matches!(self.source, Source::Subscribed(_) | Source::Connector(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::ProcessPattern;
    use std::process::{Child, Command};

    /// Children killed and reaped on drop.
    struct Kids(Vec<Child>);
    impl Drop for Kids {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// A copy of `sleep` under a name no other process has (the process name is the
    /// file's name), in a directory removed on drop.
    struct UniqueSleep {
        dir: PathBuf,
        path: PathBuf,
        name: String,
    }
    impl UniqueSleep {
        fn new(tag: &str) -> Self {
            let name = format!("lbt{tag}{}", std::process::id() % 100_000);
            let dir = std::env::temp_dir().join(format!("lb-track-{name}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(&name);
            std::fs::copy("/bin/sleep", &path).unwrap();
            Self { dir, path, name }
        }
        /// Retries while the copy is busy (ETXTBSY: another test's fork can hold the
        /// copy's write descriptor for a moment, until that child execs).
        fn spawn(&self, kids: &mut Kids, arg: &str) {
            for _ in 0..100 {
                match Command::new(&self.path).arg(arg).spawn() {
                    Ok(c) => {
                        kids.0.push(c);
                        return;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                        #[allow(clippy::disallowed_methods)] // a test helper, bounded
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("spawn {}: {e}", self.path.display()),
                }
            }
            panic!("{} stayed busy for 1 s", self.path.display());
        }
    }
    impl Drop for UniqueSleep {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Control>) -> (usize, TrackId, String) {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Control::Track(i, id, ok))) => (i, id, format!("track {ok}")),
            Ok(Some(Control::TrackValue(i, id, v))) => (i, id, format!("value {v}")),
            Ok(_) => panic!("unexpected control message"),
            Err(_) => panic!("no report within 5 s"),
        }
    }

    async fn quiet(rx: &mut mpsc::UnboundedReceiver<Control>, for_: Duration) {
        if let Ok(Some(c)) = tokio::time::timeout(for_, rx.recv()).await {
            let what = match c {
                Control::Track(i, id, ok) => format!("track {i} {id:?} {ok}"),
                Control::TrackValue(i, id, v) => format!("value {i} {id:?} {v}"),
                _ => "other".into(),
            };
            panic!("unexpected report: {what}");
        }
    }

    /// Both ways of following processes: the connector where it works (the initial
    /// network namespace, where tests run), and the `/proc` scan.
    async fn follows_real_processes(connector: bool) {
        let bin = UniqueSleep::new(if connector { "c" } else { "s" });
        let mut kids = Kids(Vec::new());
        bin.spawn(&mut kids, "30");
        let mut quorum2 = TrackProcess::new("two", ProcessPattern::name(&bin.name));
        quorum2.quorum = 2;
        let mut with_arg = TrackProcess::new(
            "arg",
            ProcessPattern {
                process: bin.path.to_str().unwrap().to_owned(),
                full_command: true,
                params: vec!["31".into()],
                param_match: Some(crate::track::ParamMatch::Exact),
            },
        );
        with_arg.reverse = true;
        with_arg.weight = crate::machine::TrackWeight(0);
        let w = ProcessWatcher::with_connector(
            vec![(0, TrackId(3), quorum2), (1, TrackId(0), with_arg)],
            connector,
        )
        .unwrap();
        if connector {
            assert!(
                w.uses_connector(),
                "the connector works in the initial namespaces"
            );
        }
        assert_eq!(w.members(0).len(), 1);
        assert_eq!(w.is_up(0, TrackId(3)), Some(false));
        assert_eq!(w.is_up(1, TrackId(0)), Some(false));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(w.run(tx));
        bin.spawn(&mut kids, "30");
        assert_eq!(next(&mut rx).await, (0, TrackId(3), "track true".into()));
        // Only the one with parameter 31 counts for the second; reverse, weight 0: its
        // running is the failure.
        bin.spawn(&mut kids, "31");
        assert_eq!(next(&mut rx).await, (1, TrackId(0), "track false".into()));
        let mut c = kids.0.remove(2);
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(next(&mut rx).await, (1, TrackId(0), "track true".into()));
        let mut c = kids.0.remove(0);
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(3), "track false".into()));
        quiet(&mut rx, Duration::from_millis(1500)).await;
        task.abort();
    }

    #[tokio::test]
    async fn process_watcher_follows_real_processes_with_the_connector() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root: this test must run"
            );
            eprintln!("skipped: the process events connector needs CAP_NET_ADMIN");
            return;
        }
        follows_real_processes(true).await;
    }

    #[tokio::test]
    async fn process_watcher_follows_real_processes_by_scanning() {
        follows_real_processes(false).await;
    }

    /// A restart within terminate_delay is never reported.
    #[tokio::test]
    async fn terminate_delay_hides_a_restart() {
        let bin = UniqueSleep::new("d");
        let mut kids = Kids(Vec::new());
        bin.spawn(&mut kids, "30");
        let mut t = TrackProcess::new("d", ProcessPattern::name(&bin.name));
        t.terminate_delay = Duration::from_millis(1500);
        let w = ProcessWatcher::with_connector(vec![(0, TrackId(0), t)], true).unwrap();
        assert_eq!(w.is_up(0, TrackId(0)), Some(true));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(w.run(tx));
        let mut c = kids.0.remove(0);
        c.kill().unwrap();
        c.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        bin.spawn(&mut kids, "30");
        quiet(&mut rx, Duration::from_millis(2500)).await;
        let mut c = kids.0.remove(0);
        c.kill().unwrap();
        c.wait().unwrap();
        let started = super::super::now();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "track false".into()));
        assert!(
            started.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            started.elapsed()
        );
        task.abort();
    }

    /// The watcher started on its own thread: the first count comes back to the caller
    /// and is reported once on the channel; the thread ends once the channel's receiver
    /// (the speaker) is gone.
    #[test]
    fn started_watcher_reports_its_first_count_and_ends_with_its_speaker() {
        let bin = UniqueSleep::new("t");
        let mut kids = Kids(Vec::new());
        bin.spawn(&mut kids, "30");
        let t = TrackProcess::new("t", ProcessPattern::name(&bin.name));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (states, handle) = ProcessWatcher::start_with(vec![(2, TrackId(1), t)], tx, false);
        assert_eq!(states, [(2, TrackId(1), Some(true))]);
        let handle = handle.expect("a thread");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(next(&mut rx).await, (2, TrackId(1), "track true".into()));
        });
        drop(rx);
        rt.block_on(async {
            for _ in 0..100 {
                if handle.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert!(
            handle.is_finished(),
            "the watcher thread outlived its speaker"
        );
    }

    /// A counted process's fork counts (a forking server's workers share its name), with
    /// fork_delay; threads do not; the child's exit counts with terminate_delay.
    #[tokio::test]
    async fn forks_count_threads_do_not() {
        let bin = UniqueSleep::new("f");
        let mut kids = Kids(Vec::new());
        bin.spawn(&mut kids, "30");
        let parent = kids.0[0].id();
        // Live processes to stand for forked children (a fork event is checked against
        // /proc: a child already gone is not counted). `sleep` under another name.
        let other = UniqueSleep::new("g");
        other.spawn(&mut kids, "30");
        other.spawn(&mut kids, "30");
        let (child, stranger) = (kids.0[1].id(), kids.0[2].id());
        let mut t = TrackProcess::new("f", ProcessPattern::name(&bin.name));
        t.quorum = 2;
        t.fork_delay = Duration::from_millis(500);
        let mut w = ProcessWatcher::with_connector(vec![(0, TrackId(0), t)], false).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = super::super::now();
        // A thread of the process: not counted.
        w.handle_event(
            ProcEvent::Fork {
                parent_tgid: parent,
                child_pid: 4_000_001,
                child_tgid: parent,
            },
            t0,
            &tx,
        );
        assert_eq!(w.members(0).len(), 1);
        // A forked child: counted once, however often the event comes.
        for _ in 0..2 {
            w.handle_event(
                ProcEvent::Fork {
                    parent_tgid: parent,
                    child_pid: child,
                    child_tgid: child,
                },
                t0,
                &tx,
            );
        }
        assert_eq!(w.members(0).len(), 2);
        assert!(rx.try_recv().is_err(), "fork_delay holds the change");
        w.timeouts(t0 + Duration::from_millis(500), &tx);
        assert!(matches!(
            rx.try_recv(),
            Ok(Control::Track(0, TrackId(0), true))
        ));
        // The child of an untracked parent is not counted.
        w.handle_event(
            ProcEvent::Fork {
                parent_tgid: 1,
                child_pid: stranger,
                child_tgid: stranger,
            },
            t0,
            &tx,
        );
        assert_eq!(w.members(0).len(), 2);
        w.handle_event(
            ProcEvent::Exit {
                pid: child,
                tgid: child,
            },
            t0,
            &tx,
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(Control::Track(0, TrackId(0), false))
        ));
        // A fork whose child is already gone (its exit lost in an overflow) counts nothing.
        w.handle_event(
            ProcEvent::Fork {
                parent_tgid: parent,
                child_pid: 4_000_002,
                child_tgid: 4_000_002,
            },
            t0,
            &tx,
        );
        assert_eq!(w.members(0).len(), 1);
    }

    #[tokio::test]
    async fn file_watcher_follows_writes_renames_and_deletes() {
        let dir = std::env::temp_dir().join(format!("lb-track-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        let path = dir.join("prio");
        let mut f = TrackFile::new("prio", &path);
        f.weight = 10;
        let mut init = TrackFile::new("init", dir.join("init"));
        init.init = Some((3, false));
        std::fs::write(dir.join("other"), "9").unwrap();
        init_track_files([&init]).unwrap();
        let w = FileWatcher::new(vec![(0, TrackId(1), f), (0, TrackId(2), init)]).unwrap();
        assert_eq!(w.status(0, TrackId(1)), Some(0), "missing: 0");
        assert_eq!(w.status(0, TrackId(2)), Some(3), "init_file wrote 3");
        assert_eq!(std::fs::read_to_string(dir.join("init")).unwrap(), "3\n");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(w.run(tx));
        std::fs::write(&path, "-5\n").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(1), "value -50".into()));
        // Another file in the directory changes nothing.
        std::fs::write(dir.join("other"), "7").unwrap();
        // Renamed into place, as `mv` and editors do.
        std::fs::write(dir.join("prio.tmp"), "-30").unwrap();
        std::fs::rename(dir.join("prio.tmp"), &path).unwrap();
        assert_eq!(
            next(&mut rx).await,
            (0, TrackId(1), format!("value {TRACK_VALUE_FAULT_STR}"))
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(1), "value 0".into()));
        // Garbage reads as 0 (with a warning): no change, no report.
        std::fs::write(&path, "maintenance").unwrap();
        std::fs::write(dir.join("init"), "4").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(2), "value 4".into()));
        // A number outside the 32-bit range is ignored, as keepalived ignores it: the
        // value stays (it was taken as +-254, a FAULT for a negative one).
        std::fs::write(&path, "2").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(1), "value 20".into()));
        std::fs::write(&path, "-99999999999").unwrap();
        std::fs::write(dir.join("init"), "5").unwrap();
        assert_eq!(
            next(&mut rx).await,
            (0, TrackId(2), "value 5".into()),
            "the out-of-range write changed nothing"
        );
        task.abort();
        // A file whose directory does not exist is refused with its name.
        let e = FileWatcher::new(vec![(
            0,
            TrackId(0),
            TrackFile::new("x", "/nonexistent-lb/x"),
        )])
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent-lb"), "{e}");
    }

    const TRACK_VALUE_FAULT_STR: &str = "-254";

    /// A file reached through a symbolic link is followed where it lives (keepalived
    /// watches the target); odd files neither block nor exhaust memory; init_file writes
    /// only what is missing unless told to overwrite, and leaves odd files alone.
    #[tokio::test]
    async fn links_odd_files_and_init() {
        let dir = std::env::temp_dir().join(format!("lb-track-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        std::fs::write(dir.join("b/prio"), "0").unwrap();
        std::os::unix::fs::symlink(dir.join("b/prio"), dir.join("a/prio")).unwrap();
        let linked = TrackFile::new("linked", dir.join("a/prio"));
        let zero = TrackFile::new("zero", "/dev/zero");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut pipe = TrackFile::new("fifo", &fifo);
        pipe.init = Some((5, true));
        // Neither blocks on the FIFO nor writes into it.
        init_track_files([&pipe]).unwrap();
        let started = super::super::now();
        let w = FileWatcher::new(vec![
            (0, TrackId(0), linked),
            (0, TrackId(1), zero),
            (0, TrackId(2), pipe),
        ])
        .unwrap();
        assert!(super::super::now() - started < Duration::from_secs(1));
        assert_eq!(w.status(0, TrackId(1)), Some(0), "/dev/zero reads as 0");
        assert_eq!(w.status(0, TrackId(2)), Some(0), "an empty FIFO reads as 0");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(w.run(tx));
        // Written through the link's target's own path.
        std::fs::write(dir.join("b/prio"), "-7").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value -7".into()));
        // The link pointed elsewhere (`ln -sf`): the new target is read, then followed.
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::fs::write(dir.join("c/prio"), "-3").unwrap();
        std::os::unix::fs::symlink(dir.join("c/prio"), dir.join("a/prio.new")).unwrap();
        std::fs::rename(dir.join("a/prio.new"), dir.join("a/prio")).unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value -3".into()));
        std::fs::write(dir.join("c/prio"), "-4").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value -4".into()));
        // The target's directory removed: 0; made again and written: followed again.
        std::fs::remove_dir_all(dir.join("c")).unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value 0".into()));
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::fs::write(dir.join("c/prio"), "-5").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value -5".into()));
        std::fs::write(dir.join("c/prio"), "-6").unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value -6".into()));
        // Pointed at a directory that does not exist: it reads as 0 at once.
        std::os::unix::fs::symlink(dir.join("nodir/prio"), dir.join("a/prio.new")).unwrap();
        std::fs::rename(dir.join("a/prio.new"), dir.join("a/prio")).unwrap();
        assert_eq!(next(&mut rx).await, (0, TrackId(0), "value 0".into()));
        task.abort();
        // init_file: missing written, present kept, present overwritten with overwrite.
        let mut keep = TrackFile::new("keep", dir.join("keep"));
        keep.init = Some((3, false));
        init_track_files([&keep]).unwrap();
        std::fs::write(dir.join("keep"), "-254\n").unwrap();
        init_track_files([&keep]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "-254\n");
        keep.init = Some((3, true));
        init_track_files([&keep]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "3\n");
        // FileWatcher::new never writes: a reload's check and start leave the file alone.
        std::fs::write(dir.join("keep"), "-254\n").unwrap();
        let w = FileWatcher::new(vec![(0, TrackId(0), keep)]).unwrap();
        assert_eq!(
            w.status(0, TrackId(0)),
            Some(TRACK_VALUE_FAULT_STR.parse().unwrap())
        );
        assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "-254\n");
    }
}
