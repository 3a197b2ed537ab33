//! Forwarding through a user-space buffer: the fallback where `splice(2)` is unavailable
//! (non-Linux, the `splice` feature off, descriptors the kernel will not splice), and the
//! overflow path when the pipe pool is exhausted.
//!
//! A buffer is taken only once the source is readable and given back before waiting again,
//! so an idle connection holds no buffer (HAProxy's dynamic buffer allocation). Buffers come
//! from a small per-thread free list, so a busy connection does not allocate per event.

use std::cell::RefCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recv, MsgFlags};
use tokio::io::Interest;

use tokio::net::TcpStream;

use super::{DirError, Direction};

/// Size of the buffer used for one readiness event, in bytes. 32 KiB: on loopback a 64 KiB
/// buffer forwarded about 13 % less (one stream, 4 GiB, copy mode: 14.4 against 16.6
/// Gbit/s; 16 KiB 15.3, 8 KiB 14.1; HAProxy's 16 KiB buffers 15.3), measured, not
/// derived (`benches/README.md`, 2026-11-24). It is also the bulk threshold of
/// [`ForwardMode::Auto`]: a read that fills it moves the transfer to `splice(2)`.
///
/// [`ForwardMode::Auto`]: super::ForwardMode::Auto
pub(super) const COPY_BUFFER: usize = 32 * 1024;

/// Free buffers kept per thread (at most this many × [`COPY_BUFFER`] bytes stay allocated).
const FREE_BUFFERS: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A [`COPY_BUFFER`]-byte buffer lent from the per-thread free list; given back on drop.
struct LentBuffer(Option<Box<[u8]>>);

impl LentBuffer {
    fn take() -> Self {
        let buf = FREE
            .with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; COPY_BUFFER].into_boxed_slice());
        Self(Some(buf))
    }
}

impl Deref for LentBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl DerefMut for LentBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for LentBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            FREE.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < FREE_BUFFERS {
                    f.push(buf);
                }
            });
        }
    }
}

/// What one [`copy_burst`] did.
pub(super) enum Copied {
    /// The source reached EOF (everything before it was written).
    Eof,
    /// Some bytes moved; the source would now block.
    Moved {
        /// Whether one read filled the whole buffer: a bulk transfer.
        #[cfg_attr(not(all(target_os = "linux", feature = "splice")), allow(dead_code))]
        filled: bool,
    },
}

/// Copies everything readable from `src` to `dst` right now, with one lent buffer.
///
/// # Cancel safety
/// Cancelling may lose bytes read but not yet written.
pub(super) async fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    dir: &Direction<'_>,
) -> Result<Copied, DirError> {
    let mut buf = LentBuffer::take();
    let mut filled = false;
    loop {
        // A read that does not fill the buffer drained the socket (epoll is edge-triggered):
        // report it as WouldBlock inside `try_io` so tokio clears the readiness observed
        // *before* the read (as its own `poll_read` does), saving the extra read(2) that
        // would only return EAGAIN. `got` carries the bytes out.
        let mut got = 0;
        let read = src.try_io(Interest::READABLE, || {
            let n = recv(src.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            got = n;
            if 0 < n && n < COPY_BUFFER {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        let (n, drained) = match read {
            Ok(0) => return Ok(Copied::Eof),
            Ok(n) => (n, false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => (got, true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Copied::Moved { filled }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DirError::Read(e)),
        };
        filled |= n == COPY_BUFFER;
        dir.activity().touch();
        let mut off = 0;
        while off < n {
            match dst.try_write(&buf[off..n]) {
                Ok(w) => {
                    off += w;
                    dir.add(w);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dir.wait_writable(dst).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DirError::Write(e)),
            }
        }
        if drained {
            return Ok(Copied::Moved { filled });
        }
    }
}
