//! Access log files (`[virtual_server.http] access_log`): the proxies hand each request's
//! entry to [`VsAccessLog`], which formats it and queues the line for the file's writer
//! thread, so that no request waits on the disk. A full queue drops lines (counted and
//! logged at WARN once a minute) rather than holding requests up. Virtual servers naming
//! one path share one open file and one writer; a reload reopens every file (after
//! logrotate moved it, as nginx's USR1 and HAProxy's syslog socket do).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use lb_proxy::http::{AccessEntry, AccessLog};
use lb_proxy::log::{TcpLog, TcpLogEntry};

use crate::config::model::AccessLogFormat;

/// Lines queued per file before new ones are dropped (about 16 MiB of 256-byte lines).
const QUEUE: usize = 65_536;

/// How long the writer may keep written lines in its buffer while more keep coming.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How often at most dropped lines are reported, per file.
const DROP_WARN_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Line(String),
    Reopen,
}

/// One open access log file and its writer thread, which ends (flushing) once the last
/// [`VsAccessLog`] using it is dropped.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    tx: SyncSender<Msg>,
    /// Lines dropped because the queue was full, since the writer last reported them.
    dropped: Arc<AtomicU64>,
}

/// The open access log files, by path: shared by the virtual servers naming one, and
/// reopened by a reload.
#[derive(Debug, Default)]
pub(crate) struct AccessLogFiles {
    files: Mutex<HashMap<PathBuf, Weak<LogFile>>>,
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
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 * 1024, file),
            dropped: Arc::clone(&dropped),
            last_drop_warning: None,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(&rx))?;
        let f = Arc::new(LogFile {
            path: path.to_owned(),
            tx,
            dropped,
        });
        files.insert(path.to_owned(), Arc::downgrade(&f));
        Ok(f)
    }

    /// Asks every open file's writer to reopen it by its path (a reload: logrotate has
    /// moved the old file away).
    pub(crate) fn reopen_all(&self) {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        for f in files.values().filter_map(Weak::upgrade) {
            // A full queue: the reopen waits its turn behind the lines (bounded).
            if f.tx.send(Msg::Reopen).is_err() {
                tracing::warn!(path = %f.path.display(), "access log writer has ended");
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
    dropped: Arc<AtomicU64>,
    last_drop_warning: Option<Instant>,
}

// A plain thread outside any runtime, on the wall clock.
#[allow(clippy::disallowed_methods)]
impl Writer {
    /// Writes lines until every sender is gone, flushing when the queue runs empty and at
    /// least every [`FLUSH_EVERY`].
    fn run(mut self, rx: &Receiver<Msg>) {
        let mut unflushed_since: Option<Instant> = None;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => {
                    // Nothing waiting: what was written goes out before sleeping.
                    self.flush();
                    unflushed_since = None;
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            match msg {
                Msg::Line(line) => {
                    if let Err(e) = self.out.write_all(line.as_bytes()) {
                        tracing::warn!(path = %self.path.display(), error = %e, "access log write failed");
                    }
                    unflushed_since.get_or_insert_with(Instant::now);
                }
                Msg::Reopen => {
                    self.flush();
                    match open(&self.path) {
                        Ok(f) => self.out = BufWriter::with_capacity(64 * 1024, f),
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), error = %e, "access log not reopened; writing on to the old file");
                        }
                    }
                }
            }
            if unflushed_since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
                self.flush();
                unflushed_since = None;
            }
            self.report_drops();
        }
        self.flush();
        self.report_drops();
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "access log write failed");
        }
    }

    fn report_drops(&mut self) {
        if self
            .last_drop_warning
            .is_some_and(|t| t.elapsed() < DROP_WARN_EVERY)
        {
            return;
        }
        let n = self.dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(path = %self.path.display(), lines = n, "access log lines dropped: the disk did not keep up");
            self.last_drop_warning = Some(Instant::now());
        }
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
    /// Queues `line` (a newline added) for the writer, or counts it dropped.
    fn send(&self, mut line: String) {
        line.push('\n');
        match self.file.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.file.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer ended (it only does once every sender is gone): unreachable.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_proxy::http::{Termination, Timings};

    fn entry_line(log: &VsAccessLog, path: &str) {
        let method = http::Method::GET;
        let uri: http::Uri = path.parse().unwrap();
        AccessLog::log(log, &AccessEntry {
            virtual_server: "web",
            client: "198.18.0.7:4000".parse().unwrap(),
            started: std::time::SystemTime::now(),
            pool: Some("web"),
            backend: None,
            method: &method,
            uri: &uri,
            version: http::Version::HTTP_11,
            referer: None,
            user_agent: None,
            status: 200,
            bytes_to_client: 1,
            timings: Timings {
                request: Duration::ZERO,
                connect: None,
                response: None,
                total: Duration::ZERO,
            },
            retries: 0,
            termination: Termination::NORMAL,
        });
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
            text.contains("web web/- 0/0/-1/-1/0 200 1 - - ---- 0 \"GET /one HTTP/1.1\"\n"),
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

        // Many lines, then the last users go: all of them are in the file.
        for i in 0..1000 {
            entry_line(&b, &format!("/n{i}"));
        }
        drop((a, b));
        let text = wait_for(&path, 1001);
        assert!(text.ends_with("\"GET /n999 HTTP/1.1\" 200 1 \"-\" \"-\"\n"));
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
