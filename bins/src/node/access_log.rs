//! Access log files (`[virtual_server.http]` and `[virtual_server.tcp]` `access_log`): the
//! proxies hand each request's or connection's entry to [`VsAccessLog`], which formats it
//! and queues the line for the file's writer thread, so that no request waits on the disk.
//! A full queue drops lines (counted, logged at WARN once a minute) rather than holding
//! requests up. Virtual servers naming one path share one open file and one writer; a
//! reload reopens every file (after logrotate moved it, as nginx's USR1 does); a stopping
//! node writes out what is queued ([`AccessLogFiles::finish`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_proxy::http::{AccessEntry, AccessLog};
use lb_proxy::log::{TcpLog, TcpLogEntry};

use crate::config::model::AccessLogFormat;

/// Lines queued per file before new ones are dropped (about 16 MiB of 256-byte lines).
const QUEUE: usize = 65_536;

/// How often the writer takes the queued lines, writes and flushes them: the most a line
/// waits.
const BATCH: Duration = Duration::from_millis(50);

/// How often at most dropped or unwritable lines are reported, per file.
const WARN_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Line(String),
    /// Everything before it is written and flushed: answer.
    Barrier(mpsc::Sender<()>),
}

/// What the proxies' side and the writer share.
#[derive(Debug)]
struct State {
    /// Set by a reload: the writer reopens the file by its path (at its next batch).
    reopen: AtomicBool,
    /// Lines dropped because the queue was full, since the last warning.
    dropped: AtomicU64,
    /// Milliseconds since `epoch` of the last dropped-lines warning, `u64::MAX` for none.
    warned_ms: AtomicU64,
    epoch: tokio::time::Instant,
    /// Since the file was opened (`lbctl status`): lines written (flushed), lines dropped
    /// (the queue was full), lines lost to failed writes or flushes.
    written_total: AtomicU64,
    dropped_total: AtomicU64,
    lost_total: AtomicU64,
}

/// One open access log file and its writer thread, which ends (flushing) once the last
/// [`VsAccessLog`] using it is dropped.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    tx: SyncSender<Msg>,
    state: Arc<State>,
}

/// The open access log files, by path: shared by the virtual servers naming one, reopened
/// by a reload, written out by a stop.
#[derive(Debug, Default)]
pub(crate) struct AccessLogFiles {
    files: Mutex<HashMap<PathBuf, Weak<LogFile>>>,
    /// Every writer thread started, with its file, to wait for at the end.
    writers: Mutex<Vec<(Weak<LogFile>, JoinHandle<()>)>>,
}

impl AccessLogFiles {
    /// The file at `path`, already open or opened now (append, created 0640 if missing).
    ///
    /// # Errors
    /// Opening the file, or starting its writer thread.
    pub(crate) fn get(&self, path: &Path) -> io::Result<Arc<LogFile>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.retain(|_, f| f.strong_count() > 0);
        if let Some(f) = files.get(path).and_then(Weak::upgrade) {
            return Ok(f);
        }
        let file = open(path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let state = Arc::new(State {
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            warned_ms: AtomicU64::new(u64::MAX),
            epoch: tokio::time::Instant::now(),
            written_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            lost_total: AtomicU64::new(0),
        });
        let writer = Writer {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 * 1024, file),
            state: Arc::clone(&state),
            failed: 0,
            pending: 0,
            failure_warned: None,
        };
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(&rx))?;
        let f = Arc::new(LogFile {
            path: path.to_owned(),
            tx,
            state,
        });
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        writers.retain(|(_, w)| !w.is_finished());
        writers.push((Arc::downgrade(&f), handle));
        files.insert(path.to_owned(), Arc::downgrade(&f));
        Ok(f)
    }

    /// Has every open file reopened by its path (a reload: logrotate has moved the old
    /// file away), from the writer's next batch on. Never waits.
    pub(crate) fn reopen_all(&self) {
        for f in self.live() {
            f.state.reopen.store(true, Ordering::Release);
        }
    }

    /// Each open file's counters, by path.
    pub(crate) fn stats(&self) -> Vec<crate::admin::AccessLogStatus> {
        let mut out: Vec<_> = self
            .live()
            .iter()
            .map(|f| {
                let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
                crate::admin::AccessLogStatus {
                    path: f.path.display().to_string(),
                    lines_written: g(&f.state.written_total),
                    lines_dropped: g(&f.state.dropped_total),
                    lines_lost: g(&f.state.lost_total),
                }
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    fn live(&self) -> Vec<Arc<LogFile>> {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.values().filter_map(Weak::upgrade).collect()
    }

    /// Writes out what is queued, for a stopping node: each open file's lines so far are
    /// written and flushed, and writers whose files are no longer used end; `limit` bounds
    /// the wait (a stuck disk).
    #[allow(clippy::disallowed_methods)] // plain threads, on the wall clock
    pub(crate) fn finish(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut answers = Vec::new();
        for f in self.live() {
            let (tx, rx) = mpsc::channel();
            let mut barrier = Msg::Barrier(tx);
            loop {
                match f.tx.try_send(barrier) {
                    Ok(()) => {
                        answers.push(rx);
                        break;
                    }
                    Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                        barrier = m;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => {
                        tracing::warn!(path = %f.path.display(), "access log lines still queued at exit are lost");
                        break;
                    }
                }
            }
        }
        for rx in answers {
            let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let writers =
            std::mem::take(&mut *self.writers.lock().unwrap_or_else(PoisonError::into_inner));
        for (file, w) in writers {
            // A writer whose last user is gone ends on its own, flushing (the live ones
            // answered their barrier above).
            while file.strong_count() == 0 && !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    state: Arc<State>,
    /// Lines lost to write errors since the last warning.
    failed: u64,
    /// Lines in `out` not flushed yet.
    pending: u64,
    failure_warned: Option<Instant>,
}

// A plain thread outside any runtime, on the wall clock.
#[allow(clippy::disallowed_methods)]
impl Writer {
    /// Writes lines until every sender is gone: every [`BATCH`] it takes what is queued,
    /// writes it and flushes. It never waits on the queue, so a request queueing a line
    /// wakes no thread (a wake and a write per request cost the proxy's CPU as much as the
    /// request itself).
    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            std::thread::sleep(BATCH);
            if self.state.reopen.swap(false, Ordering::AcqRel) {
                self.reopen();
            }
            let mut barriers = Vec::new();
            let ended = loop {
                match rx.try_recv() {
                    Ok(Msg::Line(line)) => {
                        // A line that does not fit is written after a flush of its own, so
                        // that the lines before it are counted as they land.
                        if self.out.buffer().len() + line.len() > self.out.capacity() {
                            self.flush();
                        }
                        if self.out.write_all(line.as_bytes()).is_err() {
                            self.failed += 1;
                            self.state.lost_total.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.pending += 1;
                        }
                    }
                    Ok(Msg::Barrier(done)) => barriers.push(done),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            self.flush();
            for done in barriers {
                let _ = done.send(());
            }
            self.report_failures();
            if ended {
                return;
            }
        }
    }

    fn reopen(&mut self) {
        self.flush();
        match open(&self.path) {
            Ok(f) => self.out = BufWriter::with_capacity(64 * 1024, f),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "access log not reopened; writing on to the old file until the next reload");
            }
        }
    }

    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if self.out.flush().is_ok() {
            self.state
                .written_total
                .fetch_add(pending, Ordering::Relaxed);
            return;
        }
        // What the buffer held is lost: BufWriter keeps it, so it is taken out (not
        // flushed again as the old writer drops) and new lines start an empty buffer.
        self.failed += pending.max(1);
        self.state.lost_total.fetch_add(pending, Ordering::Relaxed);
        if let Ok(f) = self.out.get_ref().try_clone() {
            let old = std::mem::replace(&mut self.out, BufWriter::with_capacity(64 * 1024, f));
            drop(old.into_parts());
        }
    }

    /// Warns of write failures (a full disk) at most once per [`WARN_EVERY`].
    fn report_failures(&mut self) {
        if self.failed == 0
            || self
                .failure_warned
                .is_some_and(|t| t.elapsed() < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(path = %self.path.display(), failed_writes = self.failed, "access log writes failed (a full disk?): lines lost");
        self.failed = 0;
        self.failure_warned = Some(Instant::now());
    }
}

/// One virtual server's access log: its file and line format.
#[derive(Debug)]
pub(crate) struct VsAccessLog {
    pub(crate) file: Arc<LogFile>,
    pub(crate) format: AccessLogFormat,
}

impl AccessLog for VsAccessLog {
    fn log(&self, entry: &AccessEntry<'_>) {
        let mut line = String::with_capacity(256);
        match self.format {
            AccessLogFormat::Httplog => entry.write_httplog(&mut line),
            AccessLogFormat::Combined => entry.write_combined(&mut line),
        }
        self.send(line);
    }
}

/// A TCP virtual server's lines: HAProxy's `option tcplog` whatever the format.
impl TcpLog for VsAccessLog {
    fn log(&self, entry: &TcpLogEntry<'_>) {
        let mut line = String::with_capacity(160);
        entry.write_tcplog(&mut line);
        self.send(line);
    }
}

impl VsAccessLog {
    /// Queues `line` (a newline added) for the writer, or counts it dropped, warning at
    /// most once per [`WARN_EVERY`] (here, where it happens: the writer may be stuck).
    fn send(&self, mut line: String) {
        line.push('\n');
        if let Err(TrySendError::Full(_)) = self.file.tx.try_send(Msg::Line(line)) {
            let st = &self.file.state;
            st.dropped_total.fetch_add(1, Ordering::Relaxed);
            let dropped = st.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = u64::try_from(st.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            let last = st.warned_ms.load(Ordering::Relaxed);
            let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
            if due
                && st
                    .warned_ms
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                st.dropped.fetch_sub(dropped, Ordering::Relaxed);
                tracing::warn!(path = %self.file.path.display(), lines = dropped, "access log lines dropped: the disk does not keep up");
            }
        }
        // Disconnected: the writer ends only once every sender is gone; unreachable.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_proxy::http::{RequestLine, Termination, Timings};

    fn entry_line(log: &VsAccessLog, path: &str) {
        let method = http::Method::GET;
        let uri: http::Uri = path.parse().unwrap();
        AccessLog::log(
            log,
            &AccessEntry {
                virtual_server: "web",
                client: "198.18.0.7:4000".parse().unwrap(),
                started: std::time::SystemTime::now(),
                pool: Some("web"),
                backend: None,
                request: Some(RequestLine {
                    method: &method,
                    uri: &uri,
                    version: http::Version::HTTP_11,
                }),
                referer: None,
                user_agent: None,
                status: Some(200),
                bytes_to_client: 1,
                timings: Timings {
                    request: Duration::ZERO,
                    connect: None,
                    response: None,
                    total: Duration::ZERO,
                },
                retries: 0,
                termination: Termination::NORMAL,
            },
        );
    }

    #[allow(clippy::disallowed_methods)] // the writer is a plain thread: wall-clock waits
    fn wait_for(path: &Path, lines: usize) -> String {
        for _ in 0..500 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= lines {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} has not {lines} lines", path.display());
    }

    /// Two virtual servers share one file; a reload after the file was moved away (as
    /// logrotate does) writes on into a new file at the path; the writer ends with the last
    /// user and nothing queued is lost.
    #[test]
    fn shared_files_reopen_and_flush_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let files = AccessLogFiles::default();
        let a = VsAccessLog {
            file: files.get(&path).unwrap(),
            format: AccessLogFormat::Httplog,
        };
        let b = VsAccessLog {
            file: files.get(&path).unwrap(),
            format: AccessLogFormat::Combined,
        };
        assert!(Arc::ptr_eq(&a.file, &b.file));
        entry_line(&a, "/one");
        entry_line(&b, "/two");
        let text = wait_for(&path, 2);
        assert!(
            text.contains("web web/<NOSRV> 0/0/-1/-1/0 200 1 - - ---- 0 \"GET /one HTTP/1.1\"\n"),
            "{text}"
        );
        assert!(
            text.contains(" - - [") && text.contains("\"GET /two HTTP/1.1\" 200 1 \"-\" \"-\"\n"),
            "{text}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o640);

        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        files.reopen_all();
        entry_line(&a, "/three");
        assert!(wait_for(&path, 1).contains("/three"));
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );

        // A stop writes out what is queued: in the file once `finish` returns.
        for i in 0..1000 {
            entry_line(&b, &format!("/n{i}"));
        }
        files.finish(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1001);
        assert!(text.ends_with("\"GET /n999 HTTP/1.1\" 200 1 \"-\" \"-\"\n"));

        // Many lines, then the last users go: all of them are in the file.
        for i in 0..1000 {
            entry_line(&b, &format!("/m{i}"));
        }
        drop((a, b));
        let text = wait_for(&path, 2001);
        assert!(text.ends_with("\"GET /m999 HTTP/1.1\" 200 1 \"-\" \"-\"\n"));
        // The next user opens it anew.
        assert!(files.get(&path).is_ok());
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error() {
        let files = AccessLogFiles::default();
        let e = files
            .get(Path::new("/nonexistent/dir/access.log"))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
