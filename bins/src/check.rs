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

use crate::config::{self, ConfigError, Format};

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
            let n = ConfigError::count_errors(&errors);
            let warnings = errors.len() - n;
            writeln!(
                err,
                "{}: configuration is invalid ({} error{}, {} warning{})",
                path.display(),
                n,
                plural(n),
                warnings,
                plural(warnings)
            )?;
            Ok(EXIT_INVALID)
        }
    }
}

/// What of `cfg` this host lacks, as keepalived's `-t` warns of it: an instance's
/// `interface` or a `track_interface` that does not exist, a `vrrp_script` or `MISC_CHECK`
/// program that cannot be found or run (the scripts are then disabled by lb-node, as by
/// keepalived: [`disable_missing_scripts`]). Warnings, not errors: the file may be meant
/// for another host, or the interface may come later. lb-node logs them at its start and
/// at each reload too.
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
    for (name, why) in missing_scripts(cfg) {
        warn(format!(
            "vrrp_script {name}: {why}: disabled, as keepalived disables it (`Disabling track script {name} since not found/accessible`): the instances tracking it go on without it"
        ));
    }
    for vs in &cfg.virtual_servers {
        for b in &vs.backends {
            for c in &b.checks {
                if let config::model::CheckKind::Misc(m) = &c.kind {
                    if let Some(why) = unrunnable(&m.misc_path, Runner::Exec) {
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

/// How a command line is run: by `/bin/sh -c` (a `vrrp_script`) or as its words (a
/// `MISC_CHECK`, split with keepalived's quoting, no shell).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    Shell,
    Exec,
}

/// Why the program `command` starts with cannot be run, if that can be told without
/// running it: its first word (keepalived's quoting) is a path to nothing, or to no
/// executable file; for a `MISC_CHECK`, also a bare name found nowhere in `PATH`. A shell
/// command whose first word has no `/` (a builtin, `if`, a name the shell looks up) or
/// names a variable or `~` is not looked at.
fn unrunnable(command: &str, runner: Runner) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let words = lb_health::probe::split_command_line(command).ok()?;
    let first = words.first()?.to_str()?.to_owned();
    // Shell syntax in the first word (an assignment, `;`, `&&`, a subshell, a
    // redirection, a variable): not a plain file name to look for.
    if first.is_empty()
        || first.contains(['$', '`', '=', ';', '|', '&', '<', '>', '(', ')'])
        || first.starts_with('~')
    {
        return None;
    }
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if first.contains('/') {
        let p = Path::new(&first);
        return (!runnable(p)).then(|| {
            if p.exists() {
                format!("{first} is not an executable file")
            } else {
                format!("{first} does not exist")
            }
        });
    }
    if runner == Runner::Shell {
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let found = std::env::split_paths(&path).any(|d| runnable(&d.join(&first)));
    (!found).then(|| format!("{first} is not found in PATH"))
}

/// The `vrrp_script`s whose program is not there or not executable, and why (see
/// [`host_warnings`]): keepalived disables such a script (`Disabling track script … since
/// not found/accessible`) and the instances that track it go on without it; lb-node does
/// the same ([`disable_missing_scripts`]).
fn missing_scripts(cfg: &config::model::Config) -> Vec<(String, String)> {
    cfg.vrrp_scripts
        .iter()
        .filter_map(|s| Some((s.name.clone(), unrunnable(&s.script, Runner::Shell)?)))
        .collect()
}

/// Drops, as keepalived does, every `track_script` entry naming a `vrrp_script` whose
/// program is not there or not executable, so that the instances tracking it go on without
/// it instead of failing it at every run (a typo in a script path put every node in FAULT).
/// Returns the names of the scripts disabled.
pub fn disable_missing_scripts(cfg: &mut config::model::Config) -> Vec<String> {
    let missing: Vec<String> = missing_scripts(cfg).into_iter().map(|(n, _)| n).collect();
    if missing.is_empty() {
        return missing;
    }
    for inst in &mut cfg.vrrp_instances {
        inst.track_script.retain(|t| !missing.contains(&t.script));
    }
    missing
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vrrp_script whose program is missing is dropped from the instances that track it,
    /// as keepalived disables it; one that exists stays.
    #[test]
    fn missing_scripts_are_disabled_as_keepalived_disables_them() {
        let text = "vrrp_script gone {\n script \"/nonexistent/chk.sh\"\n}\nvrrp_script here {\n script \"/bin/true\"\n}\nvrrp_instance VI_1 {\n interface lo\n virtual_router_id 51\n priority 100\n track_script {\n  gone\n  here\n }\n virtual_ipaddress {\n  198.18.0.1\n }\n}\n";
        let (mut cfg, _) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap();
        assert_eq!(disable_missing_scripts(&mut cfg), ["gone"]);
        let names: Vec<&str> = cfg.vrrp_instances[0]
            .track_script
            .iter()
            .map(|t| t.script.as_str())
            .collect();
        assert_eq!(names, ["here"]);
        assert!(host_warnings(&cfg).iter().any(|w| w
            .message
            .starts_with("vrrp_script gone: /nonexistent/chk.sh does not exist: disabled")));
    }
}
