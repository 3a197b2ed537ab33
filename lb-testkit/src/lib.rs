//! Test and lab harness for lb: network namespaces joined by a bridge, processes started
//! inside them, and guards that remove everything even when a test fails. Not published.
//!
//! * [`Lab`]: a bridge namespace and N host namespaces, each with a veth `eth0` on the
//!   bridge and an address from 198.18.0.0/24 (RFC 2544 benchmarking space) only. Names are
//!   unique per process and per lab (`PREFIX` + pid + counter), so tests can run in
//!   parallel. Dropping the lab deletes exactly the namespaces it created, and its log
//!   directory.
//! * [`Proc`]: a process started inside a namespace (`ip netns exec NS …`) as the leader of
//!   its own process group, stdout/stderr in files; `kill -9`, SIGTERM and SIGHUP helpers;
//!   killed (the whole group, while the leader is still ours) on drop. When dropped during a
//!   panic it prints the tail of its logs.
//! * [`server::TcpServer`]: a tiny in-process real server bound inside a namespace (an HTTP
//!   page, or a line echo for long-lived connections), and [`Lab::http_get`] /
//!   [`Lab::connect`] clients that open their sockets inside a namespace.
//! * [`dns::Dnsmasq`]: a real DNS server (Debian's dnsmasq) on a loopback port, and
//!   [`dns::query`], a blocking `A` query that says which server answered.
//! * [`smtp::Aiosmtpd`]: a real SMTP server (Debian's python3-aiosmtpd) on a loopback port.
//! * [`grpc::GrpcServer`] and [`grpc::client`]: a real gRPC server and client (Debian's
//!   python3-grpcio, gRPC's C core) on loopback.
//! * [`nginx::Nginx`]: a real HTTP server (Debian's nginx-light) on a configuration the
//!   test writes.
//! * [`ports::unused_port`] / [`ports::dead_addr`]: loopback ports below the kernel's
//!   ephemeral range, for a config that must name a port before anything listens on it.
//! * [`wait_until`]: every wait is bounded in time and in iterations.
//! * [`lab_available`]: skips loudly without root, fails under `CI=true` (STYLE.md §10.5).
//!
//! ```no_run
//! use std::time::Duration;
//! use lb_testkit::{lab_available, wait_until, Lab};
//!
//! if !lab_available() {
//!     return;
//! }
//! let lab = Lab::new("doc", &[("a", 1), ("b", 2)]).unwrap();
//! let mut p = lab.spawn("a", "sleeper", "sleep", ["30"]).unwrap();
//! assert!(lab.has_addr("a", "198.18.0.1".parse().unwrap()));
//! p.sigterm();
//! assert!(p.wait_exit(Duration::from_secs(5)).is_some());
//! // `p` and `lab` clean up on drop, also on panic.
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]
// A blocking test harness: reading the clock and sleeping between polls is what it does.
#![allow(clippy::disallowed_methods)]

pub mod dns;
pub mod grpc;
mod lab;
pub mod nginx;
mod peer;
pub mod ports;
mod process;
pub mod server;
pub mod smtp;

use std::io::{self, Read};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use lab::{in_netns, Lab, LAB_NET};
pub use process::Proc;

/// True if network-namespace labs can run here (root and `ip netns`). Otherwise prints a
/// loud skip message and returns false — except under `CI=true`, where a missing
/// capability panics: CI must run these tests, not skip them.
pub fn lab_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = command("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ok = root && ip;
    if !ok {
        let why = if root {
            "`ip netns` (iproute2) does not work"
        } else {
            "not running as root"
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true: network-namespace lab needs root and iproute2 ({why}); refusing to skip"
            );
        }
        eprintln!(
            "\n!!!!! SKIPPING network-namespace lab: {why} (run as root; CI=true turns this into a failure) !!!!!\n"
        );
    }
    ok
}

/// The directories appended to `PATH` for every command the harness runs: `ip` and other
/// admin tools live in the sbin directories, which a CI environment's `PATH` may lack.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn search_path() -> String {
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{SYSTEM_PATH}"),
        _ => SYSTEM_PATH.to_owned(),
    }
}

/// `Command::new(program)` with the sbin directories added to its `PATH` (used to find
/// `program` too), whatever `PATH` the tests run with.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", search_path());
    c
}

/// True if `tool` is on `PATH` (or in the sbin directories). A missing tool skips loudly,
/// or panics under `CI=true`.
pub fn tool_available(tool: &str) -> bool {
    let ok = std::env::split_paths(&search_path()).any(|d| d.join(tool).is_file());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: the lab needs `{tool}` on PATH; refusing to skip");
        }
        eprintln!("\n!!!!! SKIPPING: `{tool}` is not on PATH !!!!!\n");
    }
    ok
}

/// Polls `f` every `poll` until it returns true or `timeout` passes. Returns the time it
/// took, or `None` on timeout. Bounded in time and in iterations (at most
/// `timeout / poll + 2` calls).
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let poll = poll.max(Duration::from_millis(1));
    let max_iter = timeout.as_millis() / poll.as_millis() + 2;
    for _ in 0..max_iter {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(poll.min(timeout.saturating_sub(start.elapsed())));
    }
    f().then(|| start.elapsed())
}

/// Runs `cmd` to completion with its output captured. It runs in its own process group,
/// which is killed (while its leader, our child, is not yet reaped) if it has not exited
/// after `timeout`.
///
/// # Errors
/// The spawn error, or [`io::ErrorKind::TimedOut`] when it had to be killed.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> io::Result<Output> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    for (is_out, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        if let Some(mut pipe) = pipe {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = pipe.read_to_end(&mut v);
                let _ = tx.send((is_out, v));
            });
        }
    }
    drop(tx);
    let mut status = None;
    wait_until(timeout, Duration::from_millis(5), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let timed_out = status.is_none();
    if timed_out {
        // Not reaped yet, so the process group is still ours: kill it and what it started.
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    let status = child.wait()?;
    // The pipes close when the last writer exits; a straggler that escaped the group
    // could hold them, so collecting is bounded too.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok((true, v)) => stdout = v,
            Ok((false, v)) => stderr = v,
            Err(_) => break,
        }
    }
    if timed_out {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{cmd:?} did not finish within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&stderr)
            ),
        ));
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Runs `program args…` (outside any lab namespace) with a 10 s bound and asserts success.
pub(crate) fn run_ok(program: &str, args: &[&str]) -> io::Result<()> {
    let mut cmd = command(program);
    cmd.args(args);
    let out = run_bounded(cmd, Duration::from_secs(10))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_is_bounded() {
        let mut calls = 0u32;
        let r = wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
            calls += 1;
            false
        });
        assert!(r.is_none());
        assert!((2..=8).contains(&calls), "{calls} calls");
        let mut n = 0;
        let r = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            n == 3
        });
        assert!(r.is_some_and(|d| d < Duration::from_secs(1)));
    }

    #[test]
    fn run_bounded_kills_on_timeout() {
        let mut cmd = command("sleep");
        cmd.arg("10");
        let start = Instant::now();
        let e = run_bounded(cmd, Duration::from_millis(100)).expect_err("timed out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
        // A grandchild holding the pipes is killed with the group.
        let mut cmd = command("sh");
        cmd.args(["-c", "sleep 10 & sleep 10"]);
        let start = Instant::now();
        assert!(run_bounded(cmd, Duration::from_millis(100)).is_err());
        assert!(start.elapsed() < Duration::from_secs(3));
        let mut cmd = command("sh");
        cmd.args(["-c", "echo out; echo err >&2"]);
        let out = run_bounded(cmd, Duration::from_secs(5)).expect("runs");
        assert!(out.status.success());
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}
