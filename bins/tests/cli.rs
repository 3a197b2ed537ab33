//! `lb-node --check` as a process: exit codes and output.

use std::path::Path;
use std::process::Command;

fn lb_node(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb-node"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn path(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

#[test]
fn check_valid_configs_exits_0() {
    for p in [
        "tests/fixtures/seed/master.conf",
        "tests/fixtures/seed/backup.conf",
        "tests/fixtures/seed/master.toml",
        "conf/lb-node.example.toml",
    ] {
        let (code, out, err) = lb_node(&["--check", &path(p)]);
        assert_eq!(code, 0, "{p}: {err}");
        assert!(out.contains("configuration is valid"), "{out}");
    }
}

#[test]
fn check_invalid_config_exits_1_and_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keepalived.conf");
    std::fs::write(
        &p,
        "vrrp_instance A {\n interface e\n virtual_router_id 300\n priority 0\n virtual_ipaddress {\n  198.18.0.1\n }\n}\nvirtual_server 198.18.0.1 80 {\n lb_kind DR\n}\n",
    )
    .unwrap();
    let (code, out, err) = lb_node(&["--check", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 6, "{err}");
    assert!(
        lines[0].ends_with("keepalived.conf:3:20: virtual_router_id 300 is out of range 1..=255")
    );
    assert!(lines[1].ends_with("keepalived.conf:4:11: priority 0 is out of range 1..=255"));
    assert!(lines[2].contains("keepalived.conf:10:10: lb_kind DR is not supported"));
    // The warnings too, after the errors (keepalived -t reports every problem at once):
    // they used to show only once the errors were fixed.
    assert!(
        lines[3].contains("keepalived.conf:9:1: warning: virtual_server without `protocol`"),
        "{err}"
    );
    assert!(lines[4].contains("keepalived.conf:9:1: warning: virtual server without real servers"));
    assert!(lines[5].ends_with("configuration is invalid (3 errors, 2 warnings)"));
    // --format overrides the extension.
    let (code, _, err) = lb_node(&["--check", "--format", "toml", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("keepalived.conf:1:"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = lb_node(&["--check"]);
    assert_eq!(code, 2);
    let (code, _, _) = lb_node(&["--check", "--format", "yaml", "x"]);
    assert_eq!(code, 2);
    // The file given twice, as CONFIG and as keepalived's -f.
    let (code, _, err) = lb_node(&["--check", "-f", "x", "y"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

/// keepalived's `-f FILE` (`--use-file`) names the configuration as CONFIG does.
#[test]
fn keepalived_use_file_names_the_configuration() {
    let seed = path("tests/fixtures/seed/master.conf");
    for args in [
        ["-t", "-f", seed.as_str()],
        ["-t", "--use-file", seed.as_str()],
    ] {
        let (code, out, err) = lb_node(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.contains(&format!("{seed}: configuration is valid")),
            "{out}"
        );
    }
}

/// What this host lacks is warned about, as `keepalived -t` warns (`interface eth9 for
/// vrrp_instance VI_2 doesn't exist`, `Disabling track script … since not found`): the file
/// is still valid (it may be meant for another host).
#[test]
fn check_warns_of_a_missing_interface_and_script() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keepalived.conf");
    std::fs::write(
        &p,
        "vrrp_script chk {\n script \"/nonexistent/chk_nginx.sh\"\n}\nvrrp_instance VI_2 {\n interface lbnosuch0\n virtual_router_id 52\n priority 100\n track_interface {\n  lbnosuch1\n }\n track_script {\n  chk\n }\n virtual_ipaddress {\n  198.18.0.1\n }\n}\n",
    )
    .unwrap();
    let (code, out, err) = lb_node(&["--check", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 warnings"), "{out}");
    for want in [
        "warning: interface lbnosuch0 of vrrp_instance VI_2 does not exist on this host",
        "warning: tracked interface lbnosuch1 of vrrp_instance VI_2 does not exist on this host",
        "warning: vrrp_script chk: /nonexistent/chk_nginx.sh does not exist",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

/// `lbctl` refuses a backend that is not IP:PORT as a usage error (2), before it asks the
/// daemon (it was the daemon's refusal, 1).
#[test]
fn lbctl_backend_without_a_port_is_a_usage_error() {
    for args in [
        &["backend", "drain", "web", "198.18.0.151"][..],
        &["weight", "web", "backend-1", "5"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .args(["--socket", "/nonexistent/admin.sock"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

/// Shell commands are not taken for missing programs (they run with `sh -c`): a builtin,
/// `if`, a quoted path with a blank that exists; a MISC_CHECK (no shell) whose program is
/// a shell word is one.
#[test]
fn check_does_not_warn_of_shell_commands() {
    let dir = tempfile::tempdir().unwrap();
    let spaced = dir.path().join("my dir");
    std::fs::create_dir(&spaced).unwrap();
    let script = spaced.join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = dir.path().join("keepalived.conf");
    std::fs::write(
        &p,
        format!(
            "vrrp_script a {{\n script \"exit 0\"\n}}\nvrrp_script b {{\n script \"if [ -e /etc/passwd ]; then exit 0; fi\"\n}}\nvrrp_script c {{\n script \"'{}'\"\n}}\nvrrp_script d {{\n script \"$HOME/bin/x\"\n}}\nvrrp_script e {{\n script \"LD_LIBRARY_PATH=/opt/lib /opt/bin/chk\"\n}}\nvrrp_script f {{\n script \"/opt/chk.sh; exit $?\"\n}}\nvirtual_server 198.18.0.250 80 {{\n real_server 198.18.0.151 80 {{\n  MISC_CHECK {{\n   misc_path \"exec /bin/true\"\n  }}\n }}\n}}\n",
            script.display()
        ),
    )
    .unwrap();
    let (code, _, err) = lb_node(&["--check", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // What this host lacks has no file location (the file's own warnings, shell syntax
    // among them, have theirs).
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("MISC_CHECK of real server 198.18.0.151:80")
            && warnings[0].contains("exec is not found in PATH"),
        "{err}"
    );
}
