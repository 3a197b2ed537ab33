//! Zero-copy forwarding with `splice(2)`: socket → pipe → socket, the bytes never entering
//! user space (sozu, HAProxy `option splice-auto`).
//!
//! Pipes come from a bounded [`PipePool`] (HAProxy `maxpipes`). A direction takes a pipe
//! only once its source is readable, and gives it back as soon as the pipe is drained and
//! the source would block, so an idle connection holds no pipe descriptors. When the pool is
//! exhausted, that burst is copied through a user-space buffer instead; when the kernel
//! refuses `splice` for these descriptors (EINVAL), the direction copies for good.
//!
//! No `unsafe`: `nix::fcntl::splice` is a safe wrapper over borrowed descriptors.
//!
//! # Platform support
//! Linux only, behind the `splice` feature.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{DirError, Direction, SPLICED_BYTES};

/// One kernel pipe: read end, write end, and its capacity in bytes.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// A bounded pool of pipes (HAProxy `maxpipes`, `tune.pipesize`).
///
/// At most `max_pipes` pipes exist at once (2 descriptors each). Drained pipes are kept for
/// reuse.
#[derive(Debug)]
pub struct PipePool {
    free: Mutex<Vec<Pipe>>,
    created: AtomicUsize,
    max_pipes: usize,
    pipe_size: usize,
    exhausted: AtomicU64,
}

impl PipePool {
    /// A pool of at most `max_pipes` pipes of `pipe_size` bytes each (rounded by the kernel
    /// to pages; capped by `/proc/sys/fs/pipe-max-size`; 0 keeps the kernel default of
    /// 64 KiB). Creates nothing up front.
    pub fn new(max_pipes: usize, pipe_size: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            created: AtomicUsize::new(0),
            max_pipes,
            pipe_size,
            exhausted: AtomicU64::new(0),
        }
    }

    /// Pipes currently open (in use or free), each holding 2 descriptors.
    pub fn open_pipes(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// Pipes currently lent to connections with data in flight.
    pub fn pipes_in_use(&self) -> usize {
        let free = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.open_pipes().saturating_sub(free)
    }

    /// How many times a direction found the pool empty and copied instead.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    fn take(&self) -> Option<LentPipe<'_>> {
        if let Some(pipe) = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Some(LentPipe {
                pool: self,
                pipe: Some(pipe),
                pending: 0,
            });
        }
        let reserved = self
            .created
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pipes).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self.create() {
            Ok(pipe) => Some(LentPipe {
                pool: self,
                pipe: Some(pipe),
                pending: 0,
            }),
            Err(e) => {
                self.created.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "cannot create a pipe; copying instead");
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn create(&self) -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        if self.pipe_size > 0 {
            let size = i32::try_from(self.pipe_size).unwrap_or(i32::MAX);
            // Best effort: an unprivileged process may be capped below the wish.
            let _ = fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(size));
        }
        let capacity = fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)
            .map(|c| usize::try_from(c).unwrap_or(65_536))
            .unwrap_or(65_536);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// A pipe lent to one direction; returned to the pool on drop when empty, closed otherwise.
struct LentPipe<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
    /// Bytes in the pipe not yet written out.
    pending: usize,
}

impl Drop for LentPipe<'_> {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else {
            return;
        };
        if self.pending == 0 {
            self.pool
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(pipe);
        } else {
            // Bytes stuck in it belong to a dead connection: close, don't reuse.
            drop(pipe);
            self.pool.created.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What one [`splice_burst`] did.
pub(super) enum Burst {
    /// The source reached EOF and everything before it was written.
    Eof,
    /// This many bytes moved; the source would now block and the pipe went back.
    Moved(usize),
    /// The kernel does not splice these descriptors; nothing was lost, copy instead.
    Unsupported,
    /// The pool is exhausted; nothing was read, copy this burst.
    NoPipe,
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Splices everything readable from `src` to `dst` right now through one lent pipe, and
/// returns the pipe once `src` would block (so idle connections hold none).
///
/// # Cancel safety
/// Cancelling drops the lent pipe; a pipe still holding bytes is closed, not reused.
pub(super) async fn splice_burst(
    src: &TcpStream,
    dst: &TcpStream,
    pool: &PipePool,
    dir: &Direction<'_>,
) -> Result<Burst, DirError> {
    let Some(mut pipe) = pool.take() else {
        return Ok(Burst::NoPipe);
    };
    let mut total = 0usize;
    loop {
        let Some(p) = pipe.pipe.as_ref() else {
            return Err(DirError::Read(io::ErrorKind::Other.into()));
        };
        let read = src.try_io(Interest::READABLE, || {
            splice(src, None, &p.write, None, p.capacity, FLAGS).map_err(io::Error::from)
        });
        match read {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => {
                pipe.pending = n;
                dir.activity().touch();
                while pipe.pending > 0 {
                    let pending = pipe.pending;
                    let written = dst.try_io(Interest::WRITABLE, || {
                        splice(&p.read, None, dst, None, pending, FLAGS).map_err(io::Error::from)
                    });
                    let n = match written {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            dir.wait_writable(dst).await?;
                            continue;
                        }
                        Err(e) => return Err(DirError::Write(e)),
                    };
                    pipe.pending -= n;
                    total += n;
                    SPLICED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                    dir.add_spliced(n);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Moved(total)),
            Err(e)
                if total == 0
                    && matches!(
                        Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                        Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP
                    ) =>
            {
                return Ok(Burst::Unsupported);
            }
            Err(e) => return Err(DirError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_bounded_and_reuses_drained_pipes() {
        let pool = PipePool::new(2, 0);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(pool.take().is_none());
        assert_eq!(pool.exhausted(), 1);
        assert_eq!(pool.pipes_in_use(), 2);
        drop(a);
        assert_eq!(pool.pipes_in_use(), 1);
        let mut c = pool.take().unwrap();
        assert_eq!(pool.open_pipes(), 2);
        c.pending = 10; // dirty: closed instead of reused
        drop(c);
        drop(b);
        assert_eq!(pool.open_pipes(), 1);
        assert_eq!(pool.pipes_in_use(), 0);
    }
}
