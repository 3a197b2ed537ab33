//! [`Proc`]: a child process guard.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::wait_until;

/// A process this harness started: the leader of its own process group, with stdout and
/// stderr in files. Dropping it kills the whole group with SIGKILL — also after the leader
/// exited, so that the scripts a daemon started do not outlive a test — and then reaps the
/// leader. Its exit is seen without reaping it ([`Proc::try_exit`]): until the drop (or
/// [`Proc::kill9`]) the zombie keeps its PID, and so the group's ID, ours, and a recycled
/// PID is never hit.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    /// The leader's exit status, once seen.
    status: Option<ExitStatus>,
    /// Whether the leader was reaped (by [`Proc::kill9`]).
    reaped: bool,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` in its own process group with stdin from `/dev/null` and stdout/stderr
    /// to `DIR/NAME.out` and `DIR/NAME.err` (truncated).
    ///
    /// # Errors
    /// The log files cannot be created, or the spawn fails.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> io::Result<Self> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .process_group(0);
        let child = cmd.spawn()?;
        Ok(Self {
            name: name.to_owned(),
            child,
            status: None,
            reaped: false,
            stdout,
            stderr,
        })
    }

    /// The name given at spawn (also the log files' stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID (and process group ID).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn raw_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// The exit status if it has exited. The leader is left unreaped (a zombie) until
    /// the drop or [`Proc::kill9`], which kill what is left of its group first.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        use std::os::unix::process::ExitStatusExt as _;
        if self.status.is_some() || self.reaped {
            return self.status;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        self.status = match waitid(Id::Pid(self.raw_pid()), flags) {
            // The raw wait status: the code in the second byte, or the signal (and the
            // core flag) in the first.
            Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, sig, core)) => Some(ExitStatus::from_raw(
                sig as i32 | if core { 0x80 } else { 0 },
            )),
            Ok(_) => None,
            // Not our child any more (cannot happen while `reaped` is false): as std sees it.
            Err(_) => self.child.try_wait().ok().flatten(),
        };
        self.status
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Sends `sig` to the process only (not its group), if it still runs. Returns whether
    /// the signal was sent.
    pub fn signal(&mut self, sig: Signal) -> bool {
        self.is_running() && kill(self.raw_pid(), sig).is_ok()
    }

    /// SIGTERM to the process.
    pub fn sigterm(&mut self) -> bool {
        self.signal(Signal::SIGTERM)
    }

    /// SIGHUP to the process.
    pub fn sighup(&mut self) -> bool {
        self.signal(Signal::SIGHUP)
    }

    /// `kill -9` of the whole process group (the leader, or what it left running if it
    /// exited), then reaps the leader. Returns its status.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if !self.reaped {
            // The leader is not reaped, so the group ID is still ours.
            let _ = killpg(self.raw_pid(), Signal::SIGKILL);
            let status = self.child.wait().ok();
            self.reaped = true;
            if self.status.is_none() {
                self.status = status;
            }
        }
        self.status
    }

    /// Waits (bounded) for the process to exit; returns its status, or `None` if it still
    /// runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, Duration::from_millis(10), || !self.is_running());
        self.status
    }

    /// Path of the stdout log.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Path of the stderr log.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `lines` lines of stdout and stderr, labelled, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let tail = |s: String| {
            let v: Vec<&str> = s.lines().collect();
            v[v.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "----- {} (pid {}) stdout -----\n{}\n----- {} stderr -----\n{}\n",
            self.name,
            self.pid(),
            tail(self.stdout()),
            self.name,
            tail(self.stderr())
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
        self.kill9();
    }
}
