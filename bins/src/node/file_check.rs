//! keepalived's `FILE_CHECK` (check_file.c, track_file.c): a real server follows the number
//! in a `track_file`. With weight 0, any value but 0 (with `reverse`: 0) takes it down; with
//! another weight, value × weight (negated with `reverse`) is added to its weight (the
//! sum limited to IPVS's 0..=65535; 0 takes no new connection but stays up). A real
//! server's file checks add up, and combine with its other checks: it is up only while
//! those pass and no file faults it.
//!
//! The files are not probes of the health checker: one task per virtual server reads them
//! as soon as inotify reports a write, creation, deletion or rename in their directories,
//! as keepalived follows them, and every second besides (the shortest `delay_loop` of its
//! file checks; the safety net where a directory cannot be watched), and hands changes to
//! the health task ([`PoolApplier::set_adjustment`](lb_health::PoolApplier::set_adjustment)),
//! whatever schedule the real server's other checks keep. A missing file, one that is not a regular file, or one without a number
//! reads as 0, as keepalived reads a deleted file; a number outside the 32-bit range is
//! ignored (the previous value stays), as keepalived ignores it.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use lb_core::BackendId;
use tokio::sync::mpsc;

/// One `FILE_CHECK` of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSpec {
    /// The real server.
    pub(crate) backend: BackendId,
    /// The tracked file.
    pub(crate) file: PathBuf,
    /// Multiplier of the value; 0: any value but 0 is a fault.
    pub(crate) weight: i32,
    /// Negate the product (with weight 0: a value of 0 is a fault).
    pub(crate) reverse: bool,
}

/// What a real server's file checks say together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileVerdict {
    /// A file faults it: down whatever its other checks say.
    pub(crate) down: bool,
    /// Added to its weight.
    pub(crate) offset: i64,
    /// What the files read, for the log and `lbctl status`.
    pub(crate) reason: String,
    /// The real server's first verdict: the state at start (no notify script runs).
    pub(crate) initial: bool,
}

/// Reads a tracked file as keepalived does: its first 127 bytes, without blocking on a
/// FIFO (`O_NONBLOCK`, and only a regular file is read). `Ok(None)`: a number outside the
/// 32-bit range (ignored); `Err`: it reads as 0, and why.
pub(crate) fn read_value(file: &std::path::Path) -> Result<Option<i64>, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(file);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("absent".into()),
        Err(e) => return Err(format!("unreadable ({e})")),
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err("not a regular file".into());
    }
    let mut buf = Vec::with_capacity(128);
    if let Err(e) = (&mut f).take(127).read_to_end(&mut buf) {
        return Err(format!("unreadable ({e})"));
    }
    match lb_vrrp::track::parse_file_number(&buf) {
        Ok(v) if (i64::from(i32::MIN)..=i64::from(i32::MAX) + 1).contains(&v) => Ok(Some(v)),
        Ok(_) => Ok(None),
        Err(_) => Err("no number".into()),
    }
}

/// What one file check says for `value`: a fault, or the weight it adds.
fn judge(spec: &FileSpec, value: i64) -> (bool, i64) {
    if spec.weight == 0 {
        return ((value != 0) != spec.reverse, 0);
    }
    let sign: i128 = if spec.reverse { -1 } else { 1 };
    let delta = i128::from(value) * i128::from(spec.weight) * sign;
    // keepalived: a product at INT_MIN (its FAULT value) is a fault.
    if delta <= i128::from(i32::MIN) {
        return (true, 0);
    }
    // In range: |value| ≤ 2^31 and |weight| ≤ 65535.
    (false, i64::try_from(delta).unwrap_or(i64::MAX))
}

/// Follows the file checks of one virtual server.
#[derive(Debug)]
pub(crate) struct FileWatch {
    specs: Vec<FileSpec>,
    /// The last value each spec read (a value out of range keeps it).
    values: Vec<i64>,
    /// The last verdict per real server.
    last: HashMap<BackendId, FileVerdict>,
}

impl FileWatch {
    /// A watch over `specs`, every value 0 until read.
    pub(crate) fn new(specs: Vec<FileSpec>) -> Self {
        let values = vec![0; specs.len()];
        Self {
            specs,
            values,
            last: HashMap::new(),
        }
    }

    /// Reads every file (blocking; small reads) and returns the real servers whose verdict
    /// changed since the last call (all of them the first time).
    pub(crate) fn poll(&mut self) -> Vec<(BackendId, FileVerdict)> {
        let mut notes: HashMap<BackendId, Vec<String>> = HashMap::new();
        let mut reads: Vec<_> = self.specs.iter().map(|s| read_value(&s.file)).collect();
        // A read between a writer's truncate and its write (`echo 1 > file`) finds no
        // number: those files once more, a moment later, before taking them as 0 (keepalived
        // reads at the writer's close, told by inotify). One pause for all, and only for a
        // file that did not read 0 last time.
        let again: Vec<usize> = reads
            .iter()
            .enumerate()
            .filter(|(i, r)| matches!(r, Err(why) if why == "no number") && self.values[*i] != 0)
            .map(|(i, _)| i)
            .collect();
        if !again.is_empty() {
            // On a blocking-pool thread (see `spawn`), never on the event loop.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(50));
            for i in again {
                reads[i] = read_value(&self.specs[i].file);
            }
        }
        for ((i, spec), read) in self.specs.iter().enumerate().zip(reads) {
            let how = match read {
                Ok(Some(v)) => {
                    self.values[i] = v;
                    format!("{v}")
                }
                Ok(None) => format!("{} (out of range, ignored)", self.values[i]),
                Err(why) => {
                    self.values[i] = 0;
                    format!("0 ({why})")
                }
            };
            notes
                .entry(spec.backend)
                .or_default()
                .push(format!("{} reads {how}", spec.file.display()));
        }
        let mut verdicts: HashMap<BackendId, FileVerdict> = HashMap::new();
        for (spec, &value) in self.specs.iter().zip(&self.values) {
            let (down, offset) = judge(spec, value);
            let v = verdicts.entry(spec.backend).or_insert(FileVerdict {
                down: false,
                offset: 0,
                reason: String::new(),
                initial: false,
            });
            v.down |= down;
            v.offset = v.offset.saturating_add(offset);
        }
        let mut changed = Vec::new();
        for (id, mut v) in verdicts {
            v.reason = notes.remove(&id).unwrap_or_default().join(", ");
            v.reason.push_str(if v.down { ": fault" } else { "" });
            // A changed reason alone (the same verdict) is not a change.
            v.initial = !self.last.contains_key(&id);
            let same = self
                .last
                .get(&id)
                .is_some_and(|l| l.down == v.down && l.offset == v.offset);
            if !same {
                self.last.insert(id, v.clone());
                changed.push((id, v));
            }
        }
        changed.sort_by_key(|(id, _)| *id);
        changed
    }

    /// Reads the files when inotify reports a change in their directories, and every
    /// `interval` besides, and sends what changed, until the receiver is gone. A watch that
    /// has read once already (the caller's [`FileWatch::poll`] before the proxy starts)
    /// waits first; a fresh one reads at once.
    pub(crate) fn spawn(
        mut self,
        name: String,
        interval: Duration,
        tx: mpsc::UnboundedSender<(BackendId, super::vs::Tracked)>,
    ) -> tokio::task::JoinHandle<()> {
        let files: Vec<PathBuf> = self.specs.iter().map(|s| s.file.clone()).collect();
        let mut wake = match spawn_wake(&files) {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(virtual_server = %name, error = %e, "tracked files: no inotify, read every {interval:?} only");
                None
            }
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            if !self.last.is_empty() {
                tick.tick().await;
            }
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    w = async {
                        match &mut wake {
                            Some(rx) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => match w {
                        // Several events at once: one read.
                        Some(()) => {
                            if let Some(rx) = &mut wake {
                                while rx.try_recv().is_ok() {}
                            }
                        }
                        None => wake = None,
                    },
                }
                // Off the event loop: reads go through the file system.
                let (watch, changed) = match tokio::task::spawn_blocking(move || {
                    let changed = self.poll();
                    (self, changed)
                })
                .await
                {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(virtual_server = %name, error = %e, "tracked files watch ended: FILE_CHECKs keep their last verdict");
                        return;
                    }
                };
                self = watch;
                for (id, v) in changed {
                    if tx.send((id, super::vs::Tracked::Files(v))).is_err() {
                        return;
                    }
                }
            }
        })
    }
}

/// What a tracked file's directory is watched for, as keepalived watches it: a file
/// written (closed after writing), created, deleted, or renamed in or out.
fn watch_flags() -> nix::sys::inotify::AddWatchFlags {
    use nix::sys::inotify::AddWatchFlags as F;
    F::IN_CLOSE_WRITE | F::IN_CREATE | F::IN_DELETE | F::IN_MOVE
}

/// A thread that sends `()` each time inotify reports a change to one of `files` (by its
/// name in its directory), or may have missed one (queue overflow, a directory gone). It
/// waits in poll(2) a second at a time and ends within a second of the receiver going away.
///
/// # Errors
/// inotify cannot be set up, or no file's directory can be watched.
fn spawn_wake(files: &[PathBuf]) -> std::io::Result<mpsc::UnboundedReceiver<()>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
    use std::collections::HashSet;
    use std::ffi::OsString;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    let mut names: HashMap<WatchDescriptor, HashSet<OsString>> = HashMap::new();
    let mut last_error = None;
    for f in files {
        let Some(name) = f.file_name() else { continue };
        let dir = match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        match inotify.add_watch(dir, watch_flags()) {
            Ok(wd) => {
                names.entry(wd).or_default().insert(name.to_owned());
            }
            Err(e) => last_error = Some(std::io::Error::from(e)),
        }
    }
    if names.is_empty() {
        return Err(last_error.unwrap_or_else(|| std::io::Error::other("no file to watch")));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("file-check-inotify".into())
        .spawn(move || {
            use std::os::fd::AsFd as _;
            while !tx.is_closed() {
                let mut fds = [nix::poll::PollFd::new(
                    inotify.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "tracked files: inotify poll failed; read every interval only");
                        return;
                    }
                }
                let Ok(events) = inotify.read_events() else {
                    continue;
                };
                if events
                    .iter()
                    .any(|ev| ev.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    tracing::warn!("tracked files: a watched directory is gone; its files are read every interval only from now on");
                }
                let relevant = events.iter().any(|ev| {
                    ev.mask
                        .intersects(AddWatchFlags::IN_Q_OVERFLOW | AddWatchFlags::IN_IGNORED)
                        || ev
                            .name
                            .as_ref()
                            .is_some_and(|n| names.get(&ev.wd).is_some_and(|set| set.contains(n)))
                });
                if relevant && tx.send(()).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(backend: u32, file: PathBuf, weight: i32, reverse: bool) -> FileSpec {
        FileSpec {
            backend: BackendId(backend),
            file,
            weight,
            reverse,
        }
    }

    #[test]
    fn verdicts_follow_keepalived() {
        let f = PathBuf::from("/x");
        assert_eq!(judge(&spec(1, f.clone(), 0, false), 0), (false, 0));
        assert_eq!(judge(&spec(1, f.clone(), 0, false), 3), (true, 0));
        assert_eq!(judge(&spec(1, f.clone(), 0, true), 0), (true, 0));
        assert_eq!(judge(&spec(1, f.clone(), 0, true), -1), (false, 0));
        assert_eq!(judge(&spec(1, f.clone(), 2, false), 5), (false, 10));
        assert_eq!(judge(&spec(1, f.clone(), 2, true), 5), (false, -10));
        assert_eq!(
            judge(&spec(1, f.clone(), 1, false), i64::from(i32::MIN)),
            (true, 0)
        );
        assert_eq!(
            judge(&spec(1, f, 65_535, false), i64::from(i32::MAX) + 1),
            (false, (i64::from(i32::MAX) + 1) * 65_535)
        );
    }

    #[test]
    fn files_are_read_added_up_and_changes_reported() {
        let dir = std::env::temp_dir().join(format!("lb-file-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        let mut w = FileWatch::new(vec![
            spec(1, a.clone(), 2, false),
            spec(1, b.clone(), 3, false),
            spec(2, c.clone(), 0, false),
        ]);
        let first = w.poll();
        assert_eq!(first.len(), 2, "the first poll reports every real server");
        assert!(first.iter().all(|(_, v)| !v.down && v.offset == 0));
        assert!(w.poll().is_empty(), "nothing changed");
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "0x2").unwrap();
        let ch = w.poll();
        assert_eq!(ch.len(), 1);
        assert_eq!(
            (ch[0].0, ch[0].1.down, ch[0].1.offset),
            (BackendId(1), false, 8)
        );
        assert!(ch[0].1.reason.contains("reads 1"), "{}", ch[0].1.reason);
        // Out of the 32-bit range: ignored, the previous value stays.
        std::fs::write(&a, "99999999999\n").unwrap();
        assert!(w.poll().is_empty());
        // Garbage and a FIFO read as 0, without blocking.
        std::fs::write(&c, "maintenance").unwrap();
        assert!(w.poll().is_empty(), "no number: 0, no fault");
        std::fs::remove_file(&c).unwrap();
        nix::unistd::mkfifo(&c, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(w.poll().is_empty());
        assert_eq!(read_value(&c), Err("not a regular file".to_owned()));
        std::fs::remove_file(&c).unwrap();
        std::fs::write(&c, "7").unwrap();
        let ch = w.poll();
        assert_eq!(ch.len(), 1);
        assert!(
            ch[0].1.down && ch[0].1.reason.ends_with(": fault"),
            "{:?}",
            ch[0]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
