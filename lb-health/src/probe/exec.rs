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
use crate::error::{Error, Result};
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
/// its timeout, its process group gets `SIGTERM`, so that a `trap … TERM` can clean up, and
/// `SIGKILL` once the program has exited or [`TERM_GRACE`] later (keepalived check_misc.c:
/// `SIGTERM`, then `SIGKILL` after 2 s); then the program is reaped, so a hung check leaks
/// no process. A dropped probe's group gets `SIGKILL` at once. (Like keepalived, a program
/// that exits by itself in time is not chased further: what it left running in the
/// background is its own.)
///
/// # Platform support
/// Unix only (process groups).
#[derive(Debug, Clone)]
pub struct ExecProbe {
    program: OsString,
    args: Vec<OsString>,
    dynamic: bool,
    misc_timeout: Option<Duration>,
    run_as: Option<(u32, u32)>,
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
            run_as: None,
        }
    }

    /// A probe running `script` with `/bin/sh -c`.
    pub fn shell(script: impl Into<OsString>) -> Self {
        Self::new("/bin/sh").arg("-c").arg(script)
    }

    /// A probe running a keepalived `misc_path` command line: the program and its
    /// arguments, split by [`split_command_line`] (quotes and backslash escapes as
    /// keepalived has them; no shell is involved).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unterminated quote, a backslash at the end, a NUL
    /// character, or a line without a program.
    ///
    /// # Examples
    ///
    /// ```
    /// use lb_health::probe::ExecProbe;
    ///
    /// let probe = ExecProbe::command_line("/bin/sh -c 'exit 0'")?;
    /// assert!(ExecProbe::command_line("/bin/sh -c 'exit 0").is_err());
    /// # Ok::<(), lb_health::Error>(())
    /// ```
    pub fn command_line(line: &str) -> Result<Self> {
        let mut words = split_command_line(line)?.into_iter();
        let program = words.next().ok_or_else(|| Error::InvalidConfig {
            setting: "misc_path",
            reason: format!("{line:?} names no program"),
        })?;
        Ok(words.fold(Self::new(program), Self::arg))
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

    /// keepalived `misc_timeout`: the program's own timeout, replacing the check's. Zero
    /// means none of its own, as keepalived's (`misc_check_thread` runs the program with
    /// the virtual server's `delay_loop` then): the check's timeout applies.
    #[must_use]
    pub fn misc_timeout(mut self, timeout: Duration) -> Self {
        self.misc_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// keepalived `MISC_CHECK { user USER [GROUP] }`: runs the program as user id `uid` and
    /// group id `gid`, with no supplementary groups (the standard library drops them when
    /// the daemon runs as root). Needs the privilege to change user (root, or CAP_SETUID
    /// and CAP_SETGID) and, to stop a program that outlives its timeout, to signal another
    /// user's processes (root, or CAP_KILL). Without the first every run fails to start and
    /// the check is down with that reason; without the second a timed-out program keeps
    /// running and the reason says so. Default: the daemon's own user.
    #[must_use]
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
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

/// Splits a command line into words as keepalived splits a `misc_path` (or a script's)
/// command line (lib/parser.c `alloc_strvec_quoted_escaped`); no shell is involved, so
/// `$VAR`, globs, `;` and the like are plain characters.
///
/// - Words are separated by blanks (space, tab, and the other ASCII white space) outside
///   quotes.
/// - `'…'` and `"…"` quote blanks and the other kind of quote; they may start or end
///   anywhere in a word (`a'b c'd` is one word, `ab cd`), and `''` is an empty word.
/// - A backslash escapes the next character, inside quotes too: `\a \b \E \f \n \r \t
///   \v`, `\xHH…` (hexadecimal), `\NNN` (one to three octal digits), `\cX` (control-X);
///   any other character stands for itself (`\\`, `\'`, `\"`, `\ `). Values above 255
///   keep their low 8 bits, as in C.
///
/// # Errors
/// [`Error::InvalidConfig`] (setting `misc_path`) naming the problem: a quote without its
/// closing quote, a backslash at the very end, or a NUL character (which no argument can
/// hold). An empty or blank line gives no word and no error.
///
/// # Examples
///
/// ```
/// use lb_health::probe::split_command_line;
///
/// assert_eq!(split_command_line("/bin/sh -c 'exit 0'")?, ["/bin/sh", "-c", "exit 0"]);
/// assert_eq!(split_command_line(r#"check "a b" c\ d"#)?, ["check", "a b", "c d"]);
/// let err = split_command_line("/bin/sh -c 'exit 0").unwrap_err();
/// assert!(err.to_string().contains("missing its closing '"), "{err}");
/// # Ok::<(), lb_health::Error>(())
/// ```
pub fn split_command_line(line: &str) -> Result<Vec<OsString>> {
    use std::os::unix::ffi::OsStringExt;

    let invalid = |reason: &str| Error::InvalidConfig {
        setting: "misc_path",
        reason: format!("{line:?}: {reason}"),
    };
    let bytes = line.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if i == bytes.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut quote: Option<u8> = None;
        while let Some(&c) = bytes.get(i) {
            i += 1;
            match (c, quote) {
                (b'\\', _) => {
                    let (byte, used) = unescape(&bytes[i..])
                        .ok_or_else(|| invalid("a backslash at the end escapes nothing"))?;
                    word.push(byte);
                    i += used;
                }
                (b'\'' | b'"', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if c.is_ascii_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        if let Some(q) = quote {
            let q = char::from(q);
            return Err(invalid(&format!(
                "the {q} quote is missing its closing {q}"
            )));
        }
        if word.contains(&0) {
            return Err(invalid("an argument cannot hold a NUL character"));
        }
        words.push(OsString::from_vec(word));
    }
}

/// One backslash escape of [`split_command_line`]: `rest` follows the backslash. The byte
/// it stands for and how many bytes of `rest` it used; `None` when `rest` is empty.
fn unescape(rest: &[u8]) -> Option<(u8, usize)> {
    let first = *rest.first()?;
    let digits = |radix: u32, max: usize| {
        rest[1..]
            .iter()
            .take(max)
            .take_while(|b| char::from(**b).is_digit(radix))
            .count()
    };
    // Wrapping, as keepalived's `char` arithmetic.
    let value = |digits: &[u8], radix: u32| {
        digits.iter().fold(0u8, |v, d| {
            let d = char::from(*d).to_digit(radix).unwrap_or(0) as u8;
            v.wrapping_mul(radix as u8).wrapping_add(d)
        })
    };
    Some(match first {
        b'x' if rest.get(1).is_some_and(u8::is_ascii_hexdigit) => {
            let n = digits(16, usize::MAX);
            (value(&rest[1..=n], 16), 1 + n)
        }
        b'c' if rest.len() > 1 => (rest[1] & 0x1f, 2),
        b'0'..=b'7' => {
            let n = 1 + digits(8, 2);
            (value(&rest[..n], 8), n)
        }
        b'a' => (0x07, 1),
        b'b' => (0x08, 1),
        b'E' => (0x1b, 1),
        b'f' => (0x0c, 1),
        b'n' => (b'\n', 1),
        b'r' => (b'\r', 1),
        b't' => (b'\t', 1),
        b'v' => (0x0b, 1),
        other => (other, 1),
    })
}

/// How long a timed-out program has between `SIGTERM` and `SIGKILL` (keepalived
/// check_misc.c `misc_check_child_thread`: 2 s).
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long a probe waits for a killed program to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// How a timed-out program's group leader answered `SIGTERM`.
enum AfterTerm {
    /// It exited; it is not reaped yet, so its pid (the group id) cannot have been reused.
    Exited,
    /// Still running at the end of the grace.
    Running,
    /// Its state cannot be read (it was reaped elsewhere): the group must not be signalled.
    Unknown,
    /// SIGTERM was refused (EPERM): the program runs as a user this process may not
    /// signal. SIGKILL would be refused too.
    NotPermitted,
}

/// Waits up to `grace` for the group leader `pid` to exit, without reaping it (`WNOWAIT`).
async fn after_term(pid: Pid, grace: Duration) -> AfterTerm {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let deadline = tokio::time::Instant::now() + grace;
    // Bounded: one check per 20 ms until the deadline.
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return AfterTerm::Exited,
            Err(_) => return AfterTerm::Unknown,
        }
        if tokio::time::Instant::now() >= deadline {
            return AfterTerm::Running;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        if let Some((uid, gid)) = self.run_as {
            cmd.gid(gid).uid(uid);
        }
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
                // keepalived: SIGTERM to the group first, so that the program can clean up.
                let how = match group.0 {
                    Some(pgid) => match killpg(pgid, Signal::SIGTERM) {
                        // Another user's program, and no CAP_KILL: it cannot be stopped.
                        Err(nix::errno::Errno::EPERM) => AfterTerm::NotPermitted,
                        _ => after_term(pgid, TERM_GRACE).await,
                    },
                    None => AfterTerm::Unknown,
                };
                let reason = match how {
                    AfterTerm::Exited => "process group terminated",
                    AfterTerm::Running => "process group killed after the SIGTERM grace",
                    AfterTerm::NotPermitted => {
                        group.0 = None;
                        "its process group could not be signalled (EPERM: it runs as another user and this process lacks CAP_KILL), so it still runs"
                    }
                    AfterTerm::Unknown => {
                        group.0 = None;
                        "process group terminated"
                    }
                };
                // SIGKILL: the program if it ignored SIGTERM, and what it left in its group
                // (its pid, the group id, is still held by the unreaped leader).
                group.fire();
                // SIGKILL cannot be caught; reaping follows promptly. Bounded all the same:
                // if it does not, dropping `child` hands it to tokio's orphan reaper.
                let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
                ProbeOutcome::down(
                    format!("timed out after {timeout:?}: {reason}"),
                    elapsed(start),
                )
            }
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.misc_timeout
    }

    /// [`TERM_GRACE`] and the wait for the killed program to be reaped.
    fn cleanup_grace(&self) -> Duration {
        TERM_GRACE + REAP_WAIT
    }

    fn kind(&self) -> &'static str {
        "exec"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn split(line: &str) -> Vec<String> {
        split_command_line(line)
            .unwrap()
            .into_iter()
            .map(|w| w.into_string().unwrap())
            .collect()
    }

    fn error(line: &str) -> String {
        match split_command_line(line) {
            Err(e @ Error::InvalidConfig { setting, .. }) => {
                assert_eq!(setting, "misc_path");
                e.to_string()
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn words_quotes_and_blanks() {
        assert_eq!(split("/bin/true"), ["/bin/true"]);
        assert_eq!(split("  /bin/check \t a  b\n"), ["/bin/check", "a", "b"]);
        assert_eq!(split("/bin/sh -c 'exit 0'"), ["/bin/sh", "-c", "exit 0"]);
        assert_eq!(split(r#"/bin/sh -c "exit 0""#), ["/bin/sh", "-c", "exit 0"]);
        // The other quote is literal inside quotes; quotes join parts of one word.
        assert_eq!(
            split(r#"a "it's" 'say "hi"'"#),
            ["a", "it's", r#"say "hi""#]
        );
        assert_eq!(split("a'b c'd e"), ["ab cd", "e"]);
        assert_eq!(split(r#"x '' """#), ["x", "", ""]);
        // No shell: `$`, `;`, `*` are plain characters.
        assert_eq!(split("echo $HOME; *"), ["echo", "$HOME;", "*"]);
        assert!(split_command_line("").unwrap().is_empty());
        assert!(split_command_line(" \t ").unwrap().is_empty());
    }

    #[test]
    fn backslash_escapes_as_keepalived() {
        assert_eq!(split(r"a\ b c"), ["a b", "c"]);
        assert_eq!(split(r#"\'\"\\"#), [r#"'"\"#]);
        // Inside quotes too (keepalived escapes in both kinds).
        assert_eq!(split(r"'a\'b' "), ["a'b"]);
        assert_eq!(split(r#""\t\n""#), ["\t\n"]);
        assert_eq!(split(r"\a\b\E\f\r\v"), ["\x07\x08\x1b\x0c\r\x0b"]);
        assert_eq!(split(r"\x41\x4a\x4A"), ["AJJ"]);
        assert_eq!(split(r"\xg"), ["xg"], "\\x without a hex digit is x");
        assert_eq!(split(r"\101\61\0619"), ["A\x31\x319"]);
        assert_eq!(split(r"\cA\c"), ["\x01c"]);
        assert_eq!(split(r"\q"), ["q"]);
        // Beyond one byte: the low 8 bits, as C's char.
        let high = split_command_line(r"\777\x141").unwrap();
        assert_eq!(high, [OsString::from_vec(vec![0xff, 0x41])]);
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        let e = error("/bin/sh -c 'exit 0");
        assert!(e.contains("the ' quote is missing its closing '"), "{e}");
        assert!(e.contains("/bin/sh -c 'exit 0"), "names the line: {e}");
        let e = error(r#"check "a b"#);
        assert!(e.contains("the \" quote is missing its closing \""), "{e}");
        let e = error(r"check a\");
        assert!(e.contains("backslash at the end"), "{e}");
        let e = error(r"check a\0b");
        assert!(e.contains("NUL"), "{e}");
        assert!(ExecProbe::command_line("  ").is_err());
        assert!(
            ExecProbe::command_line("'' x").is_ok(),
            "an empty program name runs (and fails)"
        );
    }

    proptest::proptest! {
        /// Any line, heavy in quotes, backslashes and escape letters: words or an error,
        /// never a panic.
        #[test]
        fn any_line_splits_or_is_refused(line in "[\\\\'\" a-z0-9xcE\t]{0,40}|.{0,40}") {
            let _ = split_command_line(&line);
        }
    }

    #[test]
    fn command_line_sets_program_and_arguments() {
        let p = ExecProbe::command_line("/bin/sh -c 'exit 3' x").unwrap();
        assert_eq!(p.program, "/bin/sh");
        assert_eq!(p.args, ["-c", "exit 3", "x"]);
    }
}
