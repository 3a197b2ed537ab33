//! keepalived `MISC_CHECK`: run a program; its exit code is the verdict.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use lb_core::Weight;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{elapsed, io_reason, Probe};
use crate::tracker::ProbeOutcome;

/// Runs a program per check (keepalived `MISC_CHECK` with `misc_path`, `misc_timeout`,
/// `misc_dynamic`).
///
/// - exit 0: up; exit 1: down;
/// - exit 2..=255: down, or with `misc_dynamic` up with weight `code − 2` (keepalived);
/// - killed by a signal, or failing to start: down.
///
/// The program runs in its own process group with stdin, stdout and stderr on `/dev/null`,
/// and gets the backend in `LB_BACKEND_ADDR` (IP) and `LB_BACKEND_PORT`. When it outlives
/// its timeout, or the probe is dropped, the whole process group gets `SIGKILL` and the
/// program is reaped, so a hung check leaks no process. (Like keepalived, a program that
/// exits by itself is not chased further: what it left running in the background is its own.)
///
/// # Platform support
/// Unix only (process groups).
#[derive(Debug, Clone)]
pub struct ExecProbe {
    program: OsString,
    args: Vec<OsString>,
    dynamic: bool,
    misc_timeout: Option<Duration>,
}

impl ExecProbe {
    /// A probe running `program` (looked up in `PATH` when it has no slash), no arguments,
    /// not dynamic, with the check's timeout.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            dynamic: false,
            misc_timeout: None,
        }
    }

    /// A probe running `script` with `/bin/sh -c` (a keepalived `misc_path` with arguments).
    pub fn shell(script: impl Into<OsString>) -> Self {
        Self::new("/bin/sh").arg("-c").arg(script)
    }

    /// Adds one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// keepalived `misc_dynamic`: exit codes 2..=255 mean up with weight `code − 2`.
    #[must_use]
    pub fn misc_dynamic(mut self, dynamic: bool) -> Self {
        self.dynamic = dynamic;
        self
    }

    /// keepalived `misc_timeout`: the program's own timeout, replacing the check's.
    #[must_use]
    pub fn misc_timeout(mut self, timeout: Duration) -> Self {
        self.misc_timeout = Some(timeout);
        self
    }

    /// The verdict for an exit status.
    fn verdict(&self, status: ExitStatus, latency: Duration) -> ProbeOutcome {
        match status.code() {
            Some(0) => ProbeOutcome::up("exit 0", latency),
            Some(code @ 2..=255) if self.dynamic => {
                let w = u64::from(code.unsigned_abs()) - 2;
                // 0..=253 always fits in a Weight.
                let weight = Weight::new(w).unwrap_or(Weight::MAX);
                ProbeOutcome::up(format!("exit {code}: weight {w}"), latency).with_weight(weight)
            }
            Some(code) => ProbeOutcome::down(format!("exit {code}"), latency),
            None => ProbeOutcome::down(
                format!("killed by signal {}", status.signal().unwrap_or(0)),
                latency,
            ),
        }
    }
}

/// Kills the process group when dropped while armed: the program timed out, or the probe
/// future was dropped. Declared after the `Child`, so it runs before the child is dropped
/// (and before it is reaped): the group id is still ours.
struct GroupKill(Option<Pid>);

impl GroupKill {
    fn fire(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.fire();
    }
}

#[async_trait]
impl Probe for ExecProbe {
    /// # Cancel safety
    /// Cancel safe: dropping the future kills the program's process group; tokio reaps the
    /// program (`kill_on_drop`).
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let timeout = self.misc_timeout.unwrap_or(timeout);
        let start = tokio::time::Instant::now();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env("LB_BACKEND_ADDR", addr.ip().to_string())
            .env("LB_BACKEND_PORT", addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let what = format!("start {}", self.program.to_string_lossy());
                return ProbeOutcome::down(io_reason(&what, &e), elapsed(start));
            }
        };
        // The child leads its own group (process_group(0)), so its pid is the group id.
        let mut group = GroupKill(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                group.0 = None; // exited and reaped: the id may be reused, don't signal it
                self.verdict(status, elapsed(start))
            }
            Ok(Err(e)) => ProbeOutcome::down(io_reason("wait", &e), elapsed(start)),
            Err(_) => {
                group.fire();
                // SIGKILL cannot be caught; reaping follows promptly. Bounded all the same:
                // if it does not, dropping `child` hands it to tokio's orphan reaper.
                let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                ProbeOutcome::down(
                    format!("timed out after {timeout:?}: process group killed"),
                    elapsed(start),
                )
            }
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.misc_timeout
    }

    fn kind(&self) -> &'static str {
        "exec"
    }
}
