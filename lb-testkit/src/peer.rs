//! A real server process the tests start on a free loopback port: started again on another
//! port when the first is taken, ready only once it answers and is still ours, killed by
//! PID and reaped when dropped.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A peer process serving on `127.0.0.1:port`.
#[derive(Debug)]
pub(crate) struct LoopbackPeer {
    child: Child,
    addr: SocketAddr,
}

impl LoopbackPeer {
    /// Starts `command(port)` on a port that was free a moment ago, at most `tries` times,
    /// each waiting at most `wait` until `ready(addr)`. A port taken meanwhile makes the
    /// server exit: it is ready only if it still runs (not another process on the port).
    ///
    /// # Errors
    /// The spawn error, or [`io::ErrorKind::TimedOut`] naming `what` when no try gave a
    /// ready server.
    pub(crate) fn start(
        what: &str,
        tries: usize,
        wait: Duration,
        mut command: impl FnMut(u16) -> Command,
        ready: impl Fn(SocketAddr) -> bool,
    ) -> io::Result<Self> {
        for _ in 0..tries {
            // Free a moment ago (a free UDP port is very likely a free TCP one too).
            let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = command(port)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut peer = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            let up = crate::wait_until(wait, Duration::from_millis(20), || ready(peer.addr));
            if up.is_some() && matches!(peer.child.try_wait(), Ok(None)) {
                return Ok(peer);
            }
            peer.stop();
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} did not serve on 127.0.0.1 in {tries} tries"),
        ))
    }

    /// Its address, `127.0.0.1:port`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills it (SIGKILL, by PID) and reaps it; nothing listens on its port afterwards.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoopbackPeer {
    fn drop(&mut self) {
        self.stop();
    }
}
