//! A real SMTP server for tests: Debian's `python3-aiosmtpd` (`python3 -m aiosmtpd`) on a
//! loopback port, accepting and discarding mail (its `Sink` handler).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::Duration;

/// Debian's Python, which has the `aiosmtpd` package (another `python3` on `PATH` may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// An `aiosmtpd` in the foreground on `127.0.0.1:port`; killed by PID and reaped when
/// dropped.
#[derive(Debug)]
pub struct Aiosmtpd {
    child: Child,
    addr: SocketAddr,
}

impl Aiosmtpd {
    /// True if Debian's python3 has aiosmtpd. Otherwise prints a loud skip message and
    /// returns false — except under `CI=true`, where it panics (`.ci/run` installs it).
    pub fn available() -> bool {
        let ok = crate::command(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true: {PYTHON} has no aiosmtpd (Debian python3-aiosmtpd); refusing to skip"
                );
            }
            eprintln!("\n!!!!! SKIPPING: aiosmtpd is not installed (apt-get install python3-aiosmtpd) !!!!!\n");
        }
        ok
    }

    /// Starts one on a free loopback port and waits (at most 10 s) until it greets.
    ///
    /// # Errors
    /// The spawn error, or [`io::ErrorKind::TimedOut`] when no port gave a greeting server
    /// in 3 tries.
    pub fn start() -> io::Result<Self> {
        for _ in 0..3 {
            // A port that was free a moment ago (TCP and UDP share nothing, but a free UDP
            // port is very likely a free TCP one; a taken one makes aiosmtpd exit).
            let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = crate::command(PYTHON)
                .args([
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    &format!("127.0.0.1:{port}"),
                    "-c",
                    "aiosmtpd.handlers.Sink",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut server = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            let up = crate::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                greets(server.addr)
            });
            // Greeted, and by our aiosmtpd: had the port been taken, it would have exited.
            if up.is_some() && matches!(server.child.try_wait(), Ok(None)) {
                return Ok(server);
            }
            server.stop();
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "aiosmtpd did not greet on 127.0.0.1 in 3 tries",
        ))
    }

    /// Its address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills it (SIGKILL, by PID) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        self.stop();
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
