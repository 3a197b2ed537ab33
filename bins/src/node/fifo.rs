//! keepalived's notify FIFOs (`notify_fifo`, `vrrp_notify_fifo`, `lvs_notify_fifo` and
//! their `*_script`s): one line per event, in event order, for a reader that acts on them
//! (keepalived's doc/samples/sample_notify_fifo.sh reads these lines unchanged):
//!
//! ```text
//! INSTANCE "VI_1" MASTER 150
//! GROUP "VG_1" BACKUP 0
//! VS [198.18.0.250]:tcp:80 UP
//! RS [198.18.0.151]:tcp:80 [198.18.0.250]:tcp:80 DOWN
//! ```
//!
//! `notify_fifo` gets every line; `vrrp_notify_fifo` the `INSTANCE` and `GROUP` ones;
//! `lvs_notify_fifo` the `VS` (quorum) and `RS` (real server) ones. As keepalived
//! (lib/notify.c): the FIFO is created (mode 0644, owned by the configured user and
//! group) unless it exists, the script is started with the FIFO's name as its last
//! argument, and the FIFO is opened read-write and non-blocking, so that lb-node never
//! waits for a reader: a line that does not fit (no reader, pipe full) is dropped. At the
//! stop the script gets SIGTERM, the FIFO is closed and, if lb-node created it, removed.
//! A reload with other FIFO settings closes the old ones and opens the new.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Mutex;

use crate::config::model::{Global, NotifyFifo};

/// The open FIFOs, by kind; `None` before the node starts and after it stops.
static FIFOS: Mutex<Option<Fifos>> = Mutex::new(None);

#[derive(Debug, Default)]
struct Fifos {
    /// The settings they were opened with (a reload with the same keeps them).
    settings: [Option<NotifyFifo>; 3],
    all: Option<Fifo>,
    vrrp: Option<Fifo>,
    lvs: Option<Fifo>,
}

#[derive(Debug)]
struct Fifo {
    path: std::path::PathBuf,
    file: File,
    /// lb-node created it, and removes it at the stop.
    created: bool,
    script: Option<tokio::process::Child>,
}

/// Opens the FIFOs `global` names (at the node's start, and at a reload, where unchanged
/// ones stay open). Failures are logged, as keepalived logs them, and that FIFO gets no
/// line.
pub(crate) fn open(global: &Global) {
    let settings = [
        global.notify_fifo.clone(),
        global.vrrp_notify_fifo.clone(),
        global.lvs_notify_fifo.clone(),
    ];
    let mut fifos = FIFOS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if fifos.as_ref().is_some_and(|f| f.settings == settings) {
        return;
    }
    if let Some(old) = fifos.take() {
        close_all(old);
    }
    let [all, vrrp, lvs] = settings.clone().map(|s| s.and_then(|s| Fifo::open(&s)));
    *fifos = Some(Fifos {
        settings,
        all,
        vrrp,
        lvs,
    });
}

/// Closes the FIFOs (the node stops).
pub(crate) fn close() {
    let old = FIFOS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(old) = old {
        close_all(old);
    }
}

fn close_all(f: Fifos) {
    for fifo in [f.all, f.vrrp, f.lvs].into_iter().flatten() {
        fifo.close();
    }
}

/// Writes a VRRP line (`INSTANCE …`, `GROUP …`) to `notify_fifo` and `vrrp_notify_fifo`.
pub(crate) fn vrrp(line: &str) {
    write(line, |f| [f.all.as_mut(), f.vrrp.as_mut()]);
}

/// Writes a checker line (`VS …`, `RS …`) to `notify_fifo` and `lvs_notify_fifo`.
pub(crate) fn lvs(line: &str) {
    write(line, |f| [f.all.as_mut(), f.lvs.as_mut()]);
}

fn write(line: &str, which: impl FnOnce(&mut Fifos) -> [Option<&mut Fifo>; 2]) {
    let mut fifos = FIFOS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(f) = fifos.as_mut() else { return };
    for fifo in which(f).into_iter().flatten() {
        // One write of the whole line: a pipe takes up to PIPE_BUF (4 KiB) atomically.
        if let Err(e) = fifo.file.write_all(line.as_bytes()) {
            tracing::debug!(fifo = %fifo.path.display(), error = %e, "notify FIFO line dropped");
        }
    }
}

/// `[ADDRESS]:PROTOCOL:PORT`, keepalived's `inet_sockaddrtotrio` (IPv6 without brackets
/// of its own: `[fd00:18::1]:tcp:80`).
pub(crate) fn trio(addr: std::net::SocketAddr, udp: bool) -> String {
    format!(
        "[{}]:{}:{}",
        addr.ip(),
        if udp { "udp" } else { "tcp" },
        addr.port()
    )
}

impl Fifo {
    fn open(s: &NotifyFifo) -> Option<Self> {
        let path = s.path.as_path();
        let created = match nix::unistd::mkfifo(
            path,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        ) {
            Ok(()) => true,
            Err(nix::errno::Errno::EEXIST) => false,
            Err(e) => {
                tracing::warn!(fifo = %path.display(), error = %e, "cannot create the notify FIFO");
                return None;
            }
        };
        if created {
            if let Some(user) = &s.user {
                match super::run_as_cached(user, s.group.as_deref()) {
                    Ok(r) => {
                        if let Err(e) = nix::unistd::chown(
                            path,
                            Some(nix::unistd::Uid::from_raw(r.uid)),
                            Some(nix::unistd::Gid::from_raw(r.gid)),
                        ) {
                            tracing::warn!(fifo = %path.display(), error = %e, "cannot give the notify FIFO its user");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(fifo = %path.display(), error = %e, "the notify FIFO's user")
                    }
                }
            }
        }
        let script = s
            .script
            .as_ref()
            .and_then(|script| start_script(script, path));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW).bits())
            .open(path);
        match file {
            Ok(file) => {
                tracing::info!(fifo = %path.display(), created, "notify FIFO open");
                Some(Self {
                    path: path.to_owned(),
                    file,
                    created,
                    script,
                })
            }
            Err(e) => {
                tracing::warn!(fifo = %path.display(), error = %e, "cannot open the notify FIFO");
                if created {
                    let _ = std::fs::remove_file(path);
                }
                if let Some(child) = script {
                    stop_script(child);
                }
                None
            }
        }
    }

    fn close(self) {
        // The script first (keepalived: it may still read what was written), then the
        // FIFO goes, so that a script that reopens it cannot.
        if let Some(child) = self.script {
            stop_script(child);
        }
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
        tracing::info!(fifo = %self.path.display(), "notify FIFO closed");
    }
}

/// Starts a FIFO's script with the FIFO's name as its last argument, as its user.
fn start_script(
    script: &crate::config::model::NotifyScript,
    fifo: &Path,
) -> Option<tokio::process::Child> {
    let run_as = match &script.user {
        Some(user) => match super::run_as_cached(user, script.group.as_deref()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(script = %script.command, error = %e, "notify FIFO script not run");
                return None;
            }
        },
        None => None,
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{} \"$@\"", script.command))
        .arg("notify_fifo")
        .arg(fifo)
        .kill_on_drop(false);
    if let Some(r) = run_as {
        cmd.gid(r.gid).uid(r.uid);
    }
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!(script = %script.command, error = %e, "notify FIFO script failed to start");
            None
        }
    }
}

/// SIGTERM to a FIFO's script (keepalived's), reaped in the background.
fn stop_script(mut child: tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            // Bounded: a script ignoring SIGTERM is killed after 10 s.
            if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        });
    }
}
