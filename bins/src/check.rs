//! `lb-node --check CONFIG`: validate a configuration and report, without starting anything
//! (keepalived `-t`, haproxy `-c`).
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | [`EXIT_OK`] (0) | the configuration is valid (warnings may have been printed) |
//! | [`EXIT_INVALID`] (1) | the configuration is invalid; every error was printed |
//! | [`EXIT_USAGE`] (2) | bad command line (clap's code) |
//!
//! # Examples
//!
//! ```
//! use lb_bins::check::{check, EXIT_INVALID};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("keepalived.conf");
//! std::fs::write(&path, "vrrp_instance VI_1 {\n  priority 256\n}\n")?;
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! assert_eq!(check(&path, None, &mut out, &mut err)?, EXIT_INVALID);
//! let err = String::from_utf8(err)?;
//! assert!(err.contains("keepalived.conf:2:12: priority 256 is out of range 1..=255"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Write};
use std::path::Path;

use crate::config::{self, Format};

/// Exit code: valid configuration.
pub const EXIT_OK: u8 = 0;
/// Exit code: invalid configuration.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: bad command line.
pub const EXIT_USAGE: u8 = 2;

/// Loads `path` (in `format`, or by extension), writes warnings and errors to `err` (one per
/// line, `FILE:LINE:COLUMN: MESSAGE`) and a summary to `out`, and returns the exit code.
///
/// # Errors
/// Only when writing to `out` or `err` fails.
pub fn check(
    path: &Path,
    format: Option<Format>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u8> {
    let format = format.unwrap_or_else(|| Format::from_path(path));
    match config::load_with_format(path, format) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                writeln!(err, "{w}")?;
            }
            let backends: usize = cfg.virtual_servers.iter().map(|v| v.backends.len()).sum();
            writeln!(
                out,
                "{}: configuration is valid ({} VRRP instance{}, {} sync group{}, {} virtual server{}, {} backend{}, {} warning{})",
                path.display(),
                cfg.vrrp_instances.len(),
                plural(cfg.vrrp_instances.len()),
                cfg.sync_groups.len(),
                plural(cfg.sync_groups.len()),
                cfg.virtual_servers.len(),
                plural(cfg.virtual_servers.len()),
                backends,
                plural(backends),
                warnings.len(),
                plural(warnings.len()),
            )?;
            Ok(EXIT_OK)
        }
        Err(errors) => {
            for e in &errors {
                writeln!(err, "{e}")?;
            }
            writeln!(
                err,
                "{}: configuration is invalid ({} error{})",
                path.display(),
                errors.len(),
                plural(errors.len())
            )?;
            Ok(EXIT_INVALID)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
