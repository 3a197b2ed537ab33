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
//! Also `INSTANCE "VI_1" MASTER_RX_LOWER_PRI 150` when a master hears a lower-priority
//! master, and with `notify_priority_changes` `INSTANCE "VI_1" MASTER_PRIORITY 140` (or
//! `BACKUP_PRIORITY`: any other state) when the effective priority changes. Unlike
//! keepalived: several such events between two steps of the speaker give one line; the
//! word follows the state after the step; a base priority changed by a reload, and a
//! `track_file` entering or leaving its fault value, give a priority line too; an owner
//! hearing another owner reports `MASTER_RX_LOWER_PRI` (keepalived steps down to 254).
//!
//! An instance a reload removes gives `INSTANCE "VI_1" FAULT 100`, or `DELETED` with
//! `notify_deleted` (keepalived's `clear_diff_vrrp`). With
//! `fifo_write_vrrp_states_on_reload`, a reload writes the state of each instance and sync
//! group it did not change; unlike keepalived 2.2.7, also of an instance that stays MASTER.
//!
//! `notify_fifo` gets every line; `vrrp_notify_fifo` the `INSTANCE` and `GROUP` ones;
//! `lvs_notify_fifo` the `VS` (quorum) and `RS` (real server) ones. As keepalived
//! (lib/notify.c): the FIFO is created (mode 0644, owned by the configured user and
//! group) unless it exists, the script is started with the FIFO's name as its last
//! argument, and the FIFO is opened read-write and non-blocking, so that lb-node never
//! waits for a reader: a line that does not fit (no reader, pipe full) is dropped. At the
//! stop the FIFO is removed if lb-node created it and closed (a reader sees the end), then
//! the script's process group gets SIGTERM, and SIGKILL 2 s later if it is still there.
//! A FIFO named twice (keepalived takes it so) is one FIFO with both kinds of lines, and
//! only the first name's script. A reload reopens only the FIFOs whose settings changed (one
//! lb-node created is made anew at its path, so that the old script's reader sees the end).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::model::{Global, NotifyFifo};

/// The open FIFOs; `None` before the node starts and after it stops.
static FIFOS: Mutex<Option<Fifos>> = Mutex::new(None);

/// How long a FIFO's script has after SIGTERM before its process group is killed.
const SCRIPT_GRACE: Duration = Duration::from_secs(2);

/// The FIFOs, one per path, and which of them each kind of line goes to.
#[derive(Debug, Default)]
struct Fifos {
    open: Vec<Fifo>,
    /// Indexes into `open` of `notify_fifo`, `vrrp_notify_fifo`, `lvs_notify_fifo`.
    all: Option<usize>,
    vrrp: Option<usize>,
    lvs: Option<usize>,
}

#[derive(Debug)]
struct Fifo {
    settings: NotifyFifo,
    file: File,
    /// lb-node created it, and removes it at the stop.
    created: bool,
    script: Option<Script>,
}

/// A running FIFO script: its task waits for it, and stops it when told.
#[derive(Debug)]
struct Script {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Closes of FIFOs a reload retired, still running (their scripts get their grace time);
/// [`close`] waits for them.
static RETIRING: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Opens the FIFOs `global` names (at the node's start, and at a reload, where those whose
/// settings did not change stay open and their scripts keep running; one lb-node created
/// whose script or owner changed is made anew at the same path, as keepalived does).
/// Failures are logged, as keepalived logs them, and that FIFO gets no line. Must run in
/// a tokio runtime.
pub(crate) fn open(global: &Global) {
    let wanted = [
        global.notify_fifo.clone(),
        global.vrrp_notify_fifo.clone(),
        global.lvs_notify_fifo.clone(),
    ];
    // What is open now. A FIFO lb-node created whose settings change is made anew, as
    // keepalived does at a reload: its path is removed now (the old one, still written to
    // until the swap below, closes then, and its reader sees the end), so that the new one
    // is a FIFO of its own for the new script.
    let current: Vec<NotifyFifo> = FIFOS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_mut()
        .map(|f| {
            for fifo in f.open.iter_mut() {
                if fifo.created && !wanted.iter().flatten().any(|w| *w == fifo.settings) {
                    let _ = std::fs::remove_file(&fifo.settings.path);
                    fifo.created = false;
                }
            }
            f.open.iter().map(|x| x.settings.clone()).collect()
        })
        .unwrap_or_default();
    open_with(wanted, &current);
}

/// Opens what of `wanted` is not in `current` (without the lock: user lookups, mkfifo,
/// fork; lines still go to the FIFOs open now), then swaps the new set in.
fn open_with(wanted: [Option<NotifyFifo>; 3], current: &[NotifyFifo]) {
    let mut opened: Vec<Fifo> = Vec::new();
    let mut paths: Vec<&Path> = Vec::new();
    for settings in wanted.iter().flatten() {
        // Only the first kind naming a path counts (a FIFO named twice is one).
        if paths.contains(&settings.path.as_path()) {
            continue;
        }
        paths.push(&settings.path);
        if !current.contains(settings) {
            opened.extend(Fifo::open(settings.clone()));
        }
    }
    let retired = {
        let mut fifos = FIFOS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut old = fifos.take().map(|f| f.open).unwrap_or_default();
        let mut new = Fifos::default();
        for (kind, settings) in wanted.into_iter().enumerate() {
            let Some(settings) = settings else { continue };
            let index = if let Some(i) = new
                .open
                .iter()
                .position(|f| f.settings.path == settings.path)
            {
                Some(i)
            } else if let Some(i) = old.iter().position(|f| f.settings == settings) {
                new.open.push(old.swap_remove(i));
                Some(new.open.len() - 1)
            } else if let Some(i) = opened.iter().position(|f| f.settings == settings) {
                new.open.push(opened.swap_remove(i));
                Some(new.open.len() - 1)
            } else {
                None
            };
            match kind {
                0 => new.all = index,
                1 => new.vrrp = index,
                _ => new.lvs = index,
            }
        }
        *fifos = Some(new);
        old.extend(opened);
        old
    };
    let mut retiring = RETIRING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    retiring.retain(|t| !t.is_finished());
    retiring.extend(retired.into_iter().map(|f| tokio::spawn(f.close())));
}

/// Closes the FIFOs and stops their scripts (the node stops), within about
/// [`SCRIPT_GRACE`] × 2; also waits for those a reload retired.
pub(crate) async fn close() {
    let old = FIFOS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let retiring = std::mem::take(
        &mut *RETIRING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let current = old.map(|o| o.open).unwrap_or_default();
    let (_, late) = futures::join!(
        futures::future::join_all(current.into_iter().map(Fifo::close)),
        tokio::time::timeout(SCRIPT_GRACE * 2, futures::future::join_all(retiring)),
    );
    if late.is_err() {
        tracing::warn!("FIFO scripts a reload retired still running at the stop");
    }
}

/// Writes a VRRP line (`INSTANCE …`, `GROUP …`) to `notify_fifo` and `vrrp_notify_fifo`.
pub(crate) fn vrrp(line: &str) {
    write(line, |f| [f.all, f.vrrp]);
}

/// Writes a checker line (`VS …`, `RS …`) to `notify_fifo` and `lvs_notify_fifo`.
pub(crate) fn lvs(line: &str) {
    write(line, |f| [f.all, f.lvs]);
}

fn write(line: &str, which: impl FnOnce(&Fifos) -> [Option<usize>; 2]) {
    let mut fifos = FIFOS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(f) = fifos.as_mut() else { return };
    let [a, b] = which(f);
    // A FIFO named for both kinds gets the line once.
    let targets = [a, b.filter(|b| Some(*b) != a)];
    for i in targets.into_iter().flatten() {
        let fifo = &mut f.open[i];
        // One write of the whole line: a pipe takes up to PIPE_BUF (4 KiB) atomically;
        // without room (no reader) it fails at once and the line is dropped.
        if let Err(e) = fifo.file.write_all(line.as_bytes()) {
            tracing::debug!(fifo = %fifo.settings.path.display(), error = %e, "notify FIFO line dropped");
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
    fn open(settings: NotifyFifo) -> Option<Self> {
        let path = settings.path.as_path();
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
            if let Some(user) = &settings.user {
                match super::run_as_cached(user, settings.group.as_deref()) {
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
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW).bits())
            .open(path);
        match file {
            Ok(file) => {
                tracing::info!(fifo = %path.display(), created, "notify FIFO open");
                let script = settings
                    .script
                    .as_ref()
                    .and_then(|script| Script::start(script, path));
                Some(Self {
                    settings,
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
                None
            }
        }
    }

    /// Removes the FIFO if lb-node created it (so that a script that reopens it cannot),
    /// closes it (its reader sees the end), then stops the script.
    async fn close(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.settings.path);
        }
        drop(self.file);
        tracing::info!(fifo = %self.settings.path.display(), "notify FIFO closed");
        if let Some(script) = self.script {
            let _ = script.stop.send(());
            let _ = tokio::time::timeout(SCRIPT_GRACE * 2, script.task).await;
        }
    }
}

impl Script {
    /// Starts a FIFO's script, in a process group of its own, with the FIFO's name as its
    /// last argument, as its user (keepalived's `system_call_script`).
    fn start(script: &crate::config::model::NotifyScript, fifo: &Path) -> Option<Self> {
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
        let mut child = match super::script_command(
            script,
            run_as,
            Some(("notify_fifo", &[fifo])),
            true,
        )
        .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(script = %script.command, error = %e, "notify FIFO script failed to start");
                return None;
            }
        };
        let group = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(nix::unistd::Pid::from_raw);
        let command = script.command.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = |sig| {
                if let Some(g) = group {
                    let _ = nix::sys::signal::killpg(g, sig);
                }
            };
            tokio::select! {
                status = child.wait() => {
                    tracing::warn!(script = %command, ?status, "notify FIFO script ended");
                }
                _ = stopped => {
                    signal(nix::sys::signal::Signal::SIGTERM);
                    if tokio::time::timeout(SCRIPT_GRACE, child.wait()).await.is_err() {
                        signal(nix::sys::signal::Signal::SIGKILL);
                        let _ = child.wait().await;
                    }
                }
            }
        });
        Some(Self { stop, task })
    }
}
