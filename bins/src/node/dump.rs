//! keepalived's signal dumps: SIGUSR1 writes the state (`/tmp/keepalived.data`), SIGUSR2
//! the counters (`/tmp/keepalived.stats`), and the daemon runs on. lb-node writes
//! `lbctl status`'s text ([`crate::admin::render::status_table`]: instances, priorities
//! and why, counters, virtual servers and backends) on SIGUSR1 and its JSON (every field
//! and counter) on SIGUSR2, to the files of [`DumpFiles`].

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::admin::{render, Status};

/// Where SIGUSR1 writes the state. The default sits beside keepalived's
/// `/tmp/keepalived.data`.
pub const DEFAULT_DATA_FILE: &str = "/tmp/lb-node.data";
/// Where SIGUSR2 writes the counters (keepalived's `/tmp/keepalived.stats`).
pub const DEFAULT_STATS_FILE: &str = "/tmp/lb-node.stats";

/// The files the signal dumps go to (`lb-node --data-file`, `--stats-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFiles {
    /// SIGUSR1: `lbctl status`'s text.
    pub data: PathBuf,
    /// SIGUSR2: `lbctl status --json`'s JSON.
    pub stats: PathBuf,
}

impl Default for DumpFiles {
    fn default() -> Self {
        Self {
            data: DEFAULT_DATA_FILE.into(),
            stats: DEFAULT_STATS_FILE.into(),
        }
    }
}

/// Which dump a signal asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dump {
    /// SIGUSR1: the text.
    Data,
    /// SIGUSR2: the JSON.
    Stats,
}

impl DumpFiles {
    /// Writes `which` of `status` to its file, logging where (or why not: the daemon runs
    /// on either way).
    pub(crate) fn write(&self, which: Dump, status: &Status) {
        let (path, text) = match which {
            Dump::Data => (&self.data, render::status_table(status)),
            Dump::Stats => match serde_json::to_string_pretty(status) {
                Ok(mut json) => {
                    json.push('\n');
                    (&self.stats, json)
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGUSR2: cannot encode the status");
                    return;
                }
            },
        };
        match write_private(path, text.as_bytes()) {
            Ok(()) => tracing::info!(file = %path.display(), "{which:?} dump written"),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "{which:?} dump not written");
            }
        }
    }
}

/// Writes `bytes` to `path`, mode 0600, not following a symbolic link there (in a
/// world-writable /tmp, a link planted at the dump's name would otherwise have the daemon
/// overwrite its target: keepalived's CVE-2018-19044).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    // A file that was there already keeps its mode through the open: 0600 whatever it was.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both dumps land in their files; a symbolic link at a dump's name is not followed.
    #[test]
    fn dumps_are_written_and_links_not_followed() {
        let dir = std::env::temp_dir().join(format!("lb-dump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = DumpFiles {
            data: dir.join("data"),
            stats: dir.join("stats"),
        };
        let status = Status::default();
        // One already there, readable by all: 0600 after the dump all the same.
        std::fs::write(&files.data, "old").unwrap();
        std::fs::set_permissions(&files.data, PermissionsExt::from_mode(0o644)).unwrap();
        files.write(Dump::Data, &status);
        files.write(Dump::Stats, &status);
        let data = std::fs::read_to_string(&files.data).unwrap();
        assert!(data.contains("VRRP instances: none"), "{data}");
        let stats: Status =
            serde_json::from_str(&std::fs::read_to_string(&files.stats).unwrap()).unwrap();
        assert_eq!(stats, status);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A planted link: the dump fails, the target is untouched.
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        std::fs::remove_file(&files.data).unwrap();
        std::os::unix::fs::symlink(&target, &files.data).unwrap();
        files.write(Dump::Data, &status);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
