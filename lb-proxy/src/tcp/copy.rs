//! Forwarding through a user-space buffer: the fallback where `splice(2)` is unavailable
//! (non-Linux, the `splice` feature off, descriptors the kernel will not splice), and the
//! overflow path when the pipe pool is exhausted.
//!
//! A buffer is allocated only once the source is readable and freed before waiting again,
//! so an idle connection holds no buffer (HAProxy's dynamic buffer allocation).

use std::io;

use tokio::net::TcpStream;

use super::{DirError, Direction};

/// Size of the buffer used for one readiness event, in bytes.
pub(super) const COPY_BUFFER: usize = 64 * 1024;

/// What one [`copy_once`] did.
pub(super) enum Chunk {
    /// The source reached EOF (everything before it was written).
    Eof,
    /// Some bytes moved; the source would now block.
    Moved,
}

/// Forwards `src` → `dst` until EOF on `src`.
///
/// # Cancel safety
/// Cancelling may lose bytes read but not yet written.
pub(super) async fn copy_direction(
    src: &TcpStream,
    dst: &TcpStream,
    dir: &Direction<'_>,
) -> Result<(), DirError> {
    loop {
        src.readable().await.map_err(DirError::Read)?;
        if let Chunk::Eof = copy_once(src, dst, dir).await? {
            return Ok(());
        }
    }
}

/// Copies everything readable from `src` to `dst` right now, with one buffer.
pub(super) async fn copy_once(
    src: &TcpStream,
    dst: &TcpStream,
    dir: &Direction<'_>,
) -> Result<Chunk, DirError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Ok(Chunk::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Chunk::Moved),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DirError::Read(e)),
        };
        dir.activity.touch();
        let mut off = 0;
        while off < n {
            match dst.try_write(&buf[off..n]) {
                Ok(w) => {
                    off += w;
                    dir.add(w);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.writable().await.map_err(DirError::Write)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DirError::Write(e)),
            }
        }
    }
}
