//! A real SMTP server for tests: Debian's `python3-aiosmtpd` (`python3 -m aiosmtpd`) on a
//! loopback port, accepting and discarding mail (its `Sink` handler).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use crate::peer::LoopbackPeer;

/// Debian's Python, which has the `aiosmtpd` package (another `python3` on `PATH` may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// True if [`PYTHON`] can import `module` (Debian's `package`). Otherwise prints a loud
/// skip message and returns false — except under `CI=true`, where it panics (`.ci/run`
/// installs it).
pub(crate) fn python_has(module: &str, package: &str) -> bool {
    let ok = crate::command(PYTHON)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: {PYTHON} has no {module} (Debian {package}); refusing to skip");
        }
        eprintln!(
            "\n!!!!! SKIPPING: {module} is not installed (apt-get install {package}) !!!!!\n"
        );
    }
    ok
}

/// An `aiosmtpd` in the foreground on `127.0.0.1:port`; killed by PID and reaped when
/// dropped.
#[derive(Debug)]
pub struct Aiosmtpd(LoopbackPeer);

impl Aiosmtpd {
    /// True if Debian's python3 has aiosmtpd. Otherwise prints a loud skip message and
    /// returns false — except under `CI=true`, where it panics (`.ci/run` installs it).
    pub fn available() -> bool {
        python_has("aiosmtpd", "python3-aiosmtpd")
    }

    /// Starts one on a free loopback port and waits (at most 10 s a try, 3 tries) until it
    /// greets.
    ///
    /// # Errors
    /// The spawn error, or [`io::ErrorKind::TimedOut`] when no port gave a greeting server
    /// in 3 tries.
    pub fn start() -> io::Result<Self> {
        let command = |port: u16| {
            let mut cmd = crate::command(PYTHON);
            cmd.args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Sink",
            ]);
            cmd
        };
        LoopbackPeer::start("aiosmtpd", 3, Duration::from_secs(10), command, greets).map(Self)
    }

    /// Its address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Kills it (SIGKILL, by PID) and reaps it.
    pub fn stop(&mut self) {
        self.0.stop();
    }
}

/// Whether a server at `addr` sends a `220` greeting within 1 s.
fn greets(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).is_ok() && &buf == b"220"
}
