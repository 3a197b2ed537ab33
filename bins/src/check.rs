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
        Ok((cfg, mut warnings)) => {
            warnings.extend(host_warnings(&cfg));
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

/// What of `cfg` this host lacks, as keepalived's `-t` warns of it: an instance's
/// `interface` or a `track_interface` that does not exist, a `vrrp_script` or `MISC_CHECK`
/// program that cannot be found or run. Warnings, not errors: the file may be meant for
/// another host, or the interface may come later. lb-node logs them at its start and at
/// each reload too.
pub fn host_warnings(cfg: &config::model::Config) -> Vec<config::Warning> {
    let mut out = Vec::new();
    let mut warn = |message: String| {
        out.push(config::Warning {
            location: None,
            message,
        });
    };
    let exists = |name: &str| nix::net::if_::if_nametoindex(name).is_ok();
    for inst in &cfg.vrrp_instances {
        if !exists(&inst.interface) {
            warn(format!(
                "interface {} of vrrp_instance {} does not exist on this host: lb-node will not start",
                inst.interface, inst.name
            ));
        }
        for t in &inst.track_interface {
            if !exists(&t.interface) {
                warn(format!(
                    "tracked interface {} of vrrp_instance {} does not exist on this host: it counts as down",
                    t.interface, inst.name
                ));
            }
        }
    }
    for s in &cfg.vrrp_scripts {
        if let Some(why) = unrunnable(&s.script) {
            warn(format!(
                "vrrp_script {}: {why}: the script fails at every run",
                s.name
            ));
        }
    }
    for vs in &cfg.virtual_servers {
        for b in &vs.backends {
            for c in &b.checks {
                if let config::model::CheckKind::Misc(m) = &c.kind {
                    if let Some(why) = unrunnable(&m.misc_path) {
                        warn(format!(
                            "MISC_CHECK of real server {} of virtual server {}: {why}: the check fails at every run",
                            b.address, vs.name
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Why the program `command` starts with (its first word, looked up in `PATH` without a
/// `/`) cannot be run, if it cannot.
fn unrunnable(command: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let first = command
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == '\'' || c == '"');
    // Shell syntax (a builtin, an assignment, a group): not a file to look for.
    if first.is_empty()
        || first.contains('=')
        || matches!(
            first,
            "test" | "[" | "exec" | "true" | "false" | "!" | "{" | "("
        )
    {
        return None;
    }
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if first.contains('/') {
        let p = Path::new(first);
        return (!runnable(p)).then(|| {
            if p.exists() {
                format!("{first} is not an executable file")
            } else {
                format!("{first} does not exist")
            }
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let found = std::env::split_paths(&path).any(|d| runnable(&d.join(first)));
    (!found).then(|| format!("{first} is not found in PATH"))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
