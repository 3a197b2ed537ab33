//! The pid file: one `lb-node` per file, as keepalived's `-p` and HAProxy's `-p`.
//!
//! The file holds the daemon's pid (decimal, then a newline) and an exclusive `flock(2)`
//! for as long as the process lives. A second daemon given the same file finds it locked
//! and stops before it has touched anything (keepalived refuses to start when its pid file
//! names a running process): it would otherwise add the addresses and routes the first one
//! holds, fail on its first busy listener, and delete them on its way out. The lock goes
//! with the process (kernel-released, also after `kill -9`), so a stale file left by a
//! crash never keeps a new daemon from starting, unlike a pid that has been reused.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The default pid file, as keepalived's `/run/keepalived.pid`.
pub const DEFAULT_PID_FILE: &str = "/run/lb-node.pid";

/// How many times a lock taken on a file that was replaced meanwhile (its holder stopped
/// and removed it between our open and our lock) is tried again on the new file.
const ATTEMPTS: usize = 5;

/// The locked pid file of this process; removed when dropped, if it is still this one.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    /// Device and inode of the file locked: removed at the end only if the path still
    /// names it.
    id: (u64, u64),
    _lock: Flock<File>,
}

/// Why the pid file could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PidFileError {
    /// Another process holds the lock.
    #[error(
        "pid file {path}: another lb-node{} runs with it (give it another --pid-file to run \
         a second instance)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The file.
        path: String,
        /// The pid written in it, when it could be read.
        pid: Option<u32>,
    },
    /// The file could not be opened, locked or written.
    #[error("pid file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

impl PidFile {
    /// Opens (creating, mode 0644) and locks `path`, then writes this process's pid in it.
    ///
    /// # Errors
    /// [`PidFileError::Held`] when another process holds it; [`PidFileError::Io`] when it
    /// cannot be opened, locked or written (its directory does not exist, say).
    pub(crate) fn acquire(path: &Path) -> Result<Self, PidFileError> {
        let io = |source: std::io::Error| PidFileError::Io {
            path: path.display().to_string(),
            source,
        };
        for _ in 0..ATTEMPTS {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io)?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let pid = file
                        .read_to_string(&mut text)
                        .ok()
                        .and_then(|_| text.trim().parse().ok());
                    return Err(PidFileError::Held {
                        path: path.display().to_string(),
                        pid,
                    });
                }
                Err((_, e)) => return Err(io(e.into())),
            };
            let meta = lock.metadata().map_err(io)?;
            let id = (meta.dev(), meta.ino());
            // The holder we waited for may have removed its file between our open and our
            // lock: ours is then an unlinked inode that nobody else would see locked.
            let now = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
            if now != Some(id) {
                continue;
            }
            lock.set_len(0).map_err(io)?;
            lock.rewind().map_err(io)?;
            lock.write_all(format!("{}\n", std::process::id()).as_bytes())
                .map_err(io)?;
            return Ok(Self {
                path: path.to_owned(),
                id,
                _lock: lock,
            });
        }
        Err(io(std::io::Error::other(
            "replaced by another process at every attempt",
        )))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so no other daemon can have taken it meanwhile.
        let now = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now == Some(self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn holds_the_pid_and_refuses_a_second_holder() {
        let d = dir();
        let path = d.path().join("lb-node.pid");
        let first = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file description: a second open in the same
        // process conflicts as one in another process would.
        match PidFile::acquire(&path) {
            Err(PidFileError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        assert!(path.exists(), "a refused second holder removed the file");
        drop(first);
        assert!(!path.exists(), "the file outlived its holder");
        let again = PidFile::acquire(&path).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_file_is_taken_over_and_rewritten() {
        let d = dir();
        let path = d.path().join("lb-node.pid");
        std::fs::write(&path, "999999999\nleftover text longer than a pid\n").unwrap();
        let p = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(p);
    }

    #[test]
    fn another_file_at_the_path_is_not_removed() {
        let d = dir();
        let path = d.path().join("lb-node.pid");
        let p = PidFile::acquire(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        drop(p);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let d = dir();
        let path = d.path().join("no/such/dir/lb-node.pid");
        let e = PidFile::acquire(&path).unwrap_err();
        assert!(matches!(e, PidFileError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("no/such/dir/lb-node.pid"), "{e}");
    }
}
