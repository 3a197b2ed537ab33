//! Configuration tests: the seed keepalived.conf pair against its TOML equivalent, the
//! commented example, includes, and broken configurations whose errors must name the line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_bins::config::model::{CheckKind, GarpGroup, GrpcCheck, InitialState, Protocol};
use lb_bins::config::{self, Config, ConfigError, Format, Warning};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn ok(path: &Path) -> (Config, Vec<Warning>) {
    match config::load(path) {
        Ok(x) => x,
        Err(errors) => panic!(
            "{} failed:\n{}",
            path.display(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Writes `text` as `name` in a fresh directory and loads it; returns the errors as strings
/// with the directory stripped.
fn errors(name: &str, text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let errs: Vec<ConfigError> = config::load(&path).expect_err("config should be refused");
    let prefix = format!("{}/", dir.path().display());
    errs.iter()
        .filter(|e| !e.warning)
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect()
}

#[test]
fn seed_pair_parses_into_the_same_model_as_toml() {
    for side in ["master", "backup"] {
        let (k, kw) = ok(&fixture(&format!("seed/{side}.conf")));
        let (t, tw) = ok(&fixture(&format!("seed/{side}.toml")));
        // The seed's TCP_CHECKs say `nb_get_retry 3`, which keepalived 2.2.7 ignores there
        // (an unknown keyword outside HTTP_GET/SSL_GET): warned and ignored alike.
        assert_eq!(kw.len(), 2, "{side}.conf warnings: {kw:?}");
        assert!(
            kw.iter()
                .all(|w| w.message.contains("`nb_get_retry` in TCP_CHECK is ignored")),
            "{side}.conf warnings: {kw:?}"
        );
        assert!(tw.is_empty(), "{side}.toml warnings: {tw:?}");
        assert_eq!(k, t, "{side}: keepalived.conf and TOML differ");
    }
    let (m, _) = ok(&fixture("seed/master.conf"));
    let (b, _) = ok(&fixture("seed/backup.conf"));
    assert_eq!(m.global.router_id.as_deref(), Some("LVS_MASTER"));
    assert_eq!(m.vrrp_instances.len(), 2);
    assert_eq!(m.vrrp_instances[0].state, InitialState::Master);
    assert_eq!(b.vrrp_instances[0].state, InitialState::Backup);
    assert_eq!(m.vrrp_instances[1].priority, 100);
    assert_eq!(b.vrrp_instances[1].priority, 80);
    assert_eq!(
        m.vrrp_instances[0]
            .authentication
            .as_ref()
            .unwrap()
            .auth_pass,
        "7road123"
    );
    assert_eq!(m.sync_groups[0].group, ["VI_1", "VI_2"]);
    let vs = &m.virtual_servers[0];
    assert_eq!(vs.name, "198.18.0.250:80");
    assert_eq!(vs.protocol, Protocol::Tcp);
    assert_eq!(vs.lb_algo.name(), "rr");
    assert_eq!(vs.delay_loop, Duration::from_secs(6));
    assert_eq!(vs.persistence_timeout, None);
    assert_eq!(vs.backends.len(), 2);
    for (b, port) in vs.backends.iter().zip([82, 83]) {
        assert_eq!(b.address.port(), port);
        assert_eq!(b.weight.get(), 3);
        let c = &b.checks[0];
        assert_eq!(c.kind, CheckKind::Tcp);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            c.retry, 1,
            "keepalived's default: nb_get_retry is ignored in TCP_CHECK"
        );
        assert_eq!(c.delay_before_retry, Some(Duration::from_secs(3)));
        assert_eq!(c.retry_delay(vs), Duration::from_secs(3));
        assert_eq!(c.connect_port, Some(port));
    }
}

#[test]
fn format_follows_the_extension_and_can_be_forced() {
    assert_eq!(Format::from_path(Path::new("a/lb.toml")), Format::Toml);
    assert_eq!(
        Format::from_path(Path::new("keepalived.conf")),
        Format::Keepalived
    );
    assert_eq!(
        Format::from_path(Path::new("keepalived")),
        Format::Keepalived
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lb.cfg");
    std::fs::copy(fixture("seed/master.toml"), &p).unwrap();
    // Read as keepalived.conf, TOML is a list of unknown keywords.
    let (cfg, warnings) = config::load(&p).unwrap();
    assert_eq!(cfg, Config::default().with_defaults());
    assert!(
        warnings[0]
            .to_string()
            .contains("unknown keyword `[global]`"),
        "{warnings:?}"
    );
    assert!(config::load_with_format(&p, Format::Toml).is_ok());
}

#[test]
fn commented_example_exercises_every_option() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/lb-node.example.toml");
    let (cfg, warnings) = ok(&path);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!cfg.vrrp_scripts.is_empty());
    assert!(cfg.vrrp_instances.len() >= 2);
    assert!(!cfg.sync_groups.is_empty());
    let kinds: Vec<&str> = cfg
        .virtual_servers
        .iter()
        .flat_map(|v| &v.backends)
        .flat_map(|b| &b.checks)
        .map(|c| match c.kind {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(_) => "http",
            CheckKind::Ssl(_) => "ssl",
            CheckKind::Misc(_) => "misc",
            CheckKind::Udp(_) => "udp",
            CheckKind::Dns(_) => "dns",
            CheckKind::Ping => "ping",
            CheckKind::Smtp(_) => "smtp",
            CheckKind::File(_) => "file",
            CheckKind::Bfd(_) => "bfd",
            CheckKind::Grpc(_) => "grpc",
        })
        .collect();
    for k in [
        "tcp", "http", "ssl", "misc", "udp", "dns", "ping", "smtp", "file", "bfd", "grpc",
    ] {
        assert!(kinds.contains(&k), "no {k} check in the example");
    }
    let v3 = cfg.vrrp_instances.iter().find(|v| v.version == 3).unwrap();
    assert_eq!(v3.advert_int, Duration::from_millis(500));
    assert!(cfg
        .vrrp_instances
        .iter()
        .any(|v| !v.track_service.is_empty()));
    assert!(cfg
        .virtual_servers
        .iter()
        .any(|v| v.backends.iter().any(|b| b.backup)));
    let check = &cfg.virtual_servers[0].backends[0].checks[0];
    assert_eq!(check.connect_ip, Some("198.18.0.161".parse().unwrap()));
    assert_eq!(check.connect_port, Some(8082));
    // Every key the example writes, once uncommented, is one the model knows: the file is
    // parsed with deny_unknown_fields, so a typo above would have failed.
}

#[test]
fn seed_002_unicast_peers_and_vrrp_script() {
    let (k, kw) = ok(&fixture("unicast_nginx.conf"));
    assert_eq!(kw.len(), 1, "{kw:?}");
    assert!(kw[0]
        .to_string()
        .contains("unicast_nginx.conf:6:5: warning: `enable_script_security`"));
    let s = &k.vrrp_scripts[0];
    assert_eq!(s.name, "chk_nginx");
    assert_eq!(s.script, "/usr/bin/pgrep -x nginx");
    assert_eq!((s.weight, s.rise, s.fall), (-20, 2, 3));
    assert_eq!(s.interval, Duration::from_secs(2));
    let vi = &k.vrrp_instances[0];
    assert!(vi.nopreempt);
    assert_eq!(vi.unicast_peer.len(), 2);
    assert_eq!(vi.unicast_src_ip, Some("198.18.0.11".parse().unwrap()));
    assert_eq!(
        vi.virtual_ipaddress[0].to_string(),
        "198.18.0.10/24 dev lbnet0 label lbnet0:1"
    );
    assert_eq!(vi.track_script[0].script, "chk_nginx");
    assert_eq!(
        vi.notify_master.as_ref().map(|n| n.command.as_str()),
        Some("/etc/keepalived/notify.sh master")
    );
}

#[test]
fn includes_are_expanded_relative_to_the_including_file() {
    let (cfg, w) = ok(&fixture("include/main.conf"));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.global.router_id.as_deref(), Some("inc"));
    assert_eq!(
        cfg.vrrp_instances[0].track_service[0].virtual_server,
        "198.18.0.250:80"
    );
    assert_eq!(cfg.virtual_servers[0].lb_algo.name(), "wrr");
    match &cfg.virtual_servers[0].backends[0].checks[0].kind {
        CheckKind::Http(h) => assert_eq!(h.url[0].status_code, Some("200".parse().unwrap())),
        k => panic!("{k:?}"),
    }
}

#[test]
fn errors_in_included_files_name_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("main.conf"), "include d/vs.conf\n").unwrap();
    std::fs::write(
        dir.path().join("d/vs.conf"),
        "virtual_server 198.18.0.250 80 {\n  lb_algo fastest\n}\n",
    )
    .unwrap();
    let errs = config::load(&dir.path().join("main.conf")).unwrap_err();
    let e = errs[0].to_string();
    assert!(
        e.contains("d/vs.conf:2:11: unknown lb_algo \"fastest\""),
        "{e}"
    );

    std::fs::write(dir.path().join("main.conf"), "include missing.conf\n").unwrap();
    let errs = config::load(&dir.path().join("main.conf")).unwrap_err();
    assert!(
        errs[0].to_string().contains("main.conf:1:9: included file"),
        "{errs:?}"
    );
}

const BASE_INSTANCE: &str = "vrrp_instance VI_1 {\n    interface lbnet0\n    virtual_router_id 51\n    priority 100\n    virtual_ipaddress {\n        198.18.0.250\n    }\n}\n";

#[test]
fn broken_keepalived_configs_name_the_line() {
    // Bad address.
    assert_eq!(
        errors(
            "k.conf",
            "virtual_server 198.18.0.300 80 {\n    lb_algo rr\n}\n"
        ),
        ["k.conf:1:16: \"198.18.0.300\" is not an IP address"]
    );
    assert_eq!(
        errors(
            "k.conf",
            &BASE_INSTANCE.replace("        198.18.0.250", "        198.18.0.250/40")
        ),
        ["k.conf:6:9: bad prefix length /40 for 198.18.0.250"]
    );
    // Unknown algorithm.
    let e = errors(
        "k.conf",
        "virtual_server 198.18.0.250 80 {\n    lb_algo fastest\n}\n",
    );
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("k.conf:2:13: unknown lb_algo \"fastest\" (known: rr, wrr"),
        "{e:?}"
    );
    // Duplicate VRID on one interface.
    let two = format!(
        "{BASE_INSTANCE}{}",
        BASE_INSTANCE
            .replace("VI_1", "VI_2")
            .replace(".250", ".251")
    );
    assert_eq!(
        errors("k.conf", &two),
        ["k.conf:11:23: virtual_router_id 51 is already used on lbnet0 by vrrp_instance VI_1"]
    );
    // ...but the same VRID on another interface is fine.
    let other = format!(
        "{BASE_INSTANCE}{}",
        BASE_INSTANCE
            .replace("VI_1", "VI_2")
            .replace("lbnet0", "lbnet1")
    );
    assert!(config::keepalived::parse_str(&other, Path::new("k.conf")).is_ok());
    // Priority 256 and 0.
    assert_eq!(
        errors(
            "k.conf",
            &BASE_INSTANCE.replace("priority 100", "priority 256")
        ),
        ["k.conf:4:14: priority 256 is out of range 1..=255"]
    );
    assert_eq!(
        errors(
            "k.conf",
            &BASE_INSTANCE.replace("priority 100", "priority 0")
        ),
        ["k.conf:4:14: priority 0 is out of range 1..=255"]
    );
    // Missing brace.
    assert_eq!(
        errors(
            "k.conf",
            &BASE_INSTANCE.replace("        198.18.0.250\n    }\n", "        198.18.0.250\n")
        ),
        ["k.conf:1:20: missing `}`: this block is never closed"]
    );
    // DR and TUN.
    let e = errors(
        "k.conf",
        "virtual_server 198.18.0.250 80 {\n    lb_kind DR\n}\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("k.conf:2:13: lb_kind DR is not supported: lb-node is a full proxy"));
    let e = errors(
        "k.conf",
        "virtual_server 198.18.0.250 80 {\n    lb_kind TUN\n}\n",
    );
    assert!(e[0].starts_with("k.conf:2:13: lb_kind TUN is not supported"));
    // virtual_server group naming no group.
    let e = errors("k.conf", "virtual_server group VSG {\n}\n");
    assert!(
        e[0].starts_with("k.conf:1:22: unknown virtual_server_group \"VSG\""),
        "{e:?}"
    );
    // Unknown tracked script (an unknown sync-group member is ignored with a warning, as
    // keepalived ignores it).
    let e = errors(
        "k.conf",
        &format!(
            "{}vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_9\n    }}\n}}\n",
            BASE_INSTANCE.replace(
                "    priority 100\n",
                "    priority 100\n    track_script {\n        chk\n    }\n"
            )
        ),
    );
    assert_eq!(
        e,
        ["k.conf:6:9: track_script names unknown vrrp_script \"chk\""]
    );
}

#[test]
fn every_error_is_listed() {
    let text = "virtual_server 198.18.0.300 80 {\n    lb_algo fastest\n    lb_kind DR\n}\nvrrp_instance X {\n    priority 300\n}\n";
    let e = errors("k.conf", text);
    assert_eq!(
        e,
        [
            "k.conf:1:16: \"198.18.0.300\" is not an IP address",
            "k.conf:2:13: unknown lb_algo \"fastest\" (known: rr, wrr, swrr, lc, wlc, sed, nq, sh, dh, mh, ring_hash, random, p2c, peak_ewma, fo)",
            "k.conf:3:13: lb_kind DR is not supported: lb-node is a full proxy (it terminates connections and opens its own to the backends, like NAT); use lb_kind NAT",
            "k.conf:5:1: vrrp_instance X has no `interface`",
            "k.conf:5:1: vrrp_instance X has no `virtual_router_id`",
            "k.conf:5:1: vrrp_instance X has no virtual_ipaddress",
            "k.conf:6:14: priority 300 is out of range 1..=255",
        ]
    );
}

#[test]
fn unknown_keywords_warn_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(
        &p,
        BASE_INSTANCE.replace(
            "    priority 100\n",
            "    priority 100\n    frobnicate yes\n",
        ),
    )
    .unwrap();
    let (_, w) = config::load(&p).unwrap();
    assert_eq!(w.len(), 1);
    assert!(w[0]
        .to_string()
        .ends_with("k.conf:5:5: warning: unknown keyword `frobnicate` in vrrp_instance, ignored"));
}

#[test]
fn broken_toml_configs_name_the_line() {
    let e = errors(
        "lb.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.300:80\"\n",
    );
    assert!(
        e[0].starts_with("lb.toml:2:10: invalid socket address syntax"),
        "{e:?}"
    );
    let e = errors(
        "lb.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\nlb_algo = \"fastest\"\n",
    );
    assert!(e[0].starts_with("lb.toml:3:11: unknown lb_algo"), "{e:?}");
    let e = errors(
        "lb.toml",
        "[[vrrp_instance]]\nname = \"A\"\ninterface = \"e\"\nvirtual_router_id = 1\npriority = 256\nvirtual_ipaddress = [\"198.18.0.250\"]\n",
    );
    assert!(e[0].starts_with("lb.toml:5:12: "), "{e:?}");
    let e = errors("lb.toml", "[[virtual_server]\nlisten = 1\n");
    assert!(e[0].starts_with("lb.toml:1:"), "{e:?}");
}

/// Every field of the model (read from its source, with serde's renames applied) is a key
/// the commented example sets, so a new option cannot go undocumented.
#[test]
fn commented_example_sets_every_key_of_the_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = std::fs::read_to_string(root.join("src/config/model.rs")).unwrap();
    let example: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("conf/lb-node.example.toml")).unwrap())
            .unwrap();
    fn keys(v: &toml::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    out.insert(k.clone());
                    keys(v, out);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut present = std::collections::BTreeSet::new();
    keys(&example, &mut present);
    fn renamed(f: &str) -> Option<&str> {
        Some(match f {
            "vrrp_scripts" => "vrrp_script",
            "vrrp_track_processes" => "vrrp_track_process",
            "track_files" => "track_file",
            "bfd_instances" => "bfd_instance",
            "vrrp_instances" => "vrrp_instance",
            "sync_groups" => "vrrp_sync_group",
            "garp_groups" => "garp_group",
            "virtual_servers" => "virtual_server",
            "backends" => "backend",
            "checks" => "check",
            "kind" => "type",
            "qtype" => "dns_type",
            "routes" => "route",
            // GrpcCheck's.
            "service" => "grpc_service",
            "authority" => "virtualhost",
            "tls" => "grpc_tls",
            // HttpCheck's.
            "http2" => "check_proto",
            // Not keys: VirtualIp parts (written inside the address string, checked below),
            // validation results, and the TLS files' contents read at load.
            "prefix_len"
            | "dev"
            | "label"
            | "message"
            | "errors"
            | "warnings"
            | "tls_files"
            | "pairs"
            | "at"
            | "backend_ca"
            | "backend_client_files" => return None,
            other => other,
        })
    }
    let mut missing = Vec::new();
    for line in model.lines() {
        let Some(rest) = line.trim_start().strip_prefix("pub ") else {
            continue;
        };
        let Some((field, _)) = rest.split_once(':') else {
            continue;
        };
        if field.contains(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
            continue;
        }
        if let Some(key) = renamed(field) {
            if !present.contains(key) {
                missing.push(key.to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    let text = std::fs::read_to_string(root.join("conf/lb-node.example.toml")).unwrap();
    assert!(text.contains("/24 dev eth0 label eth0:1"));
}

#[test]
fn settings_given_twice_warn() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(
        &p,
        BASE_INSTANCE.replace("    priority 100\n", "    priority 100\n    priority 90\n"),
    )
    .unwrap();
    let (cfg, w) = config::load(&p).unwrap();
    assert_eq!(cfg.vrrp_instances[0].priority, 90);
    assert_eq!(w.len(), 1);
    assert!(w[0].to_string().ends_with(
        "k.conf:5:5: warning: `priority` is set again; the last value wins (first set at 4:5)"
    ));
}

#[test]
fn virtual_server_defaults_apply_wherever_written() {
    let text = "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    sorry_server 198.18.0.160 8080\n    real_server 198.18.0.151 82 {\n        TCP_CHECK {\n        }\n    }\n    retry 4\n    delay_before_retry 2\n    inhibit_on_failure\n    real_server 198.18.0.153 83 {\n        delay_loop 9\n        TCP_CHECK {\n            retry 1\n        }\n    }\n}\n";
    let (cfg, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let b = &cfg.virtual_servers[0].backends;
    assert_eq!(b.len(), 3);
    assert_eq!(
        (b[0].checks[0].retry, b[0].checks[0].delay_before_retry),
        (4, Some(Duration::from_secs(2)))
    );
    assert_eq!(
        (b[1].checks[0].retry, b[1].checks[0].delay_loop),
        (1, Some(Duration::from_secs(9)))
    );
    assert!(b[0].inhibit_on_failure && b[1].inhibit_on_failure);
    assert!(b[2].backup && !b[2].inhibit_on_failure);
    assert_eq!(b[2].address.port(), 8080);
    let (c, _) = config::keepalived::parse_str(
        "vrrp_script s {\n    script x\n    weight -2 reverse\n}\n",
        Path::new("k.conf"),
    )
    .unwrap();
    assert_eq!(
        (c.vrrp_scripts[0].weight, c.vrrp_scripts[0].reverse),
        (-2, true)
    );
}

#[test]
fn keepalived_example_is_the_twin_of_the_toml_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (k, kw) = ok(&root.join("conf/keepalived.example.conf"));
    let (mut t, _) = ok(&root.join("conf/lb-node.example.toml"));
    assert!(kw.is_empty(), "{kw:?}");
    // `[virtual_server.http]`, `[virtual_server.tcp]` and `slow_start` are TOML only (IPVS
    // has no slow start).
    assert!(t.virtual_servers.iter().any(|v| v.http.is_some()));
    assert!(t.virtual_servers.iter().any(|v| v.tcp.is_some()));
    assert!(t.virtual_servers.iter().any(|v| v.udp.is_some()));
    assert!(t.virtual_servers.iter().any(|v| v.slow_start.is_some()));
    // So is a check's `check_send_proxy` (it follows `[virtual_server.tcp] send_proxy`).
    assert!(t
        .virtual_servers
        .iter()
        .flat_map(|v| &v.backends)
        .flat_map(|b| &b.checks)
        .any(|c| c.check_send_proxy.is_some()));
    // `[virtual_server.outlier_detection]` too; the example writes the default values
    // except `max_ejection_time`, which unwritten follows `base_ejection_time`.
    assert!(t
        .virtual_servers
        .iter()
        .any(|v| v.outlier_detection.max_ejection_time.is_some()));
    // A `grpc` check is TOML only (keepalived has none): its virtual server is not in the
    // twin.
    assert!(t.virtual_servers.iter().any(|v| v
        .backends
        .iter()
        .flat_map(|b| &b.checks)
        .any(|c| matches!(c.kind, CheckKind::Grpc(_)))));
    t.virtual_servers.retain(|v| v.name != "grpc");
    for v in &mut t.virtual_servers {
        v.http = None;
        v.tcp = None;
        v.udp = None;
        v.slow_start = None;
        v.outlier_detection.max_ejection_time = None;
        for c in v.backends.iter_mut().flat_map(|b| &mut b.checks) {
            c.check_send_proxy = None;
        }
    }
    // `reload_drain_deadline` is TOML only (keepalived has no such limit).
    assert!(t.global.reload_drain_deadline.is_some());
    t.global.reload_drain_deadline = None;
    assert_eq!(k.global, t.global);
    assert_eq!(k.vrrp_scripts, t.vrrp_scripts);
    assert_eq!(k.vrrp_instances, t.vrrp_instances);
    assert_eq!(k.sync_groups, t.sync_groups);
    for (a, b) in k.virtual_servers.iter().zip(&t.virtual_servers) {
        assert_eq!(a, b, "virtual server {}", a.name);
    }
    assert_eq!(k, t);
}

#[test]
fn nbthread_is_read_from_both_formats_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    std::fs::write(&k, "global_defs {\n    nbthread 1\n}\n").unwrap();
    assert_eq!(ok(&k).0.global.nbthread, 1);
    let t = dir.path().join("n.toml");
    std::fs::write(&t, "[global]\nnbthread = 4\n").unwrap();
    assert_eq!(ok(&t).0.global.nbthread, 4);
    let t0 = dir.path().join("d.toml");
    std::fs::write(&t0, "[global]\n").unwrap();
    assert_eq!(ok(&t0).0.global.nbthread, 0, "default: one worker per CPU");
    assert_eq!(
        errors("k.conf", "global_defs {\n    nbthread many\n}\n"),
        ["k.conf:2:14: nbthread many: expected 0..=65535"]
    );
}

#[test]
fn busy_polling_is_read_from_both_formats_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    std::fs::write(&k, "global_defs {\n    busy_polling\n    nbthread 1\n}\n").unwrap();
    assert!(ok(&k).0.global.busy_polling, "a bare keepalived flag is on");
    std::fs::write(&k, "global_defs {\n    busy_polling false\n}\n").unwrap();
    assert!(!ok(&k).0.global.busy_polling);
    let t = dir.path().join("n.toml");
    std::fs::write(&t, "[global]\nbusy_polling = true\nnbthread = 1\n").unwrap();
    assert!(ok(&t).0.global.busy_polling);
    // The multi-thread runtime cannot busy-poll (a parked worker holds the event loop).
    assert_eq!(
        errors("n.toml", "[global]\nbusy_polling = true\n"),
        ["n.toml:2:16: busy_polling needs nbthread = 1 (one event loop), not 0"]
    );
    std::fs::write(&t, "[global]\n").unwrap();
    assert!(!ok(&t).0.global.busy_polling, "off by default");
    let e = errors("k.conf", "global_defs {\n    busy_polling sometimes\n}\n");
    assert!(
        e.len() == 1 && e[0].starts_with("k.conf:2:18: "),
        "a value that is not a boolean is a located error: {e:?}"
    );
}

/// Every `[virtual_server.http]` key but the routes.
const HTTP_KEYS: &str = r#"forwardfor = false
x_forwarded_proto = false
x_forwarded_port = true
forwarded = true
accept_proxy = true
accept_proxy_timeout = "1500ms"
hash_key = "header:X-User"
timeout_http_request = 4
timeout_http_keep_alive = "20s"
timeout_server = "7s"
backend_idle_timeout = "45s"
max_header_bytes = 32768
max_headers = 50
max_idle_per_backend = 8
http2 = true
max_concurrent_streams = 64
maxconn = 300
count_5xx = false
timeout_client = "12s""#;

/// Three virtual servers: HTTP `front` routing to HTTP `api`, and TCP `plain`. `keys` is
/// front's `[virtual_server.http]` table (from line 9), before its routes.
fn http_pair(keys: &str) -> String {
    format!(
        r#"[[virtual_server]]
name = "front"
listen = "198.18.0.250:80"
protocol = "http"
retries = 3
connect_timeout = "2s"

[virtual_server.http]
{keys}

[[virtual_server.http.route]]
host = "*.Example.com"
path_prefix = "/api"
virtual_server = "api"

[[virtual_server.http.route]]
path_prefix = "/v2/"
virtual_server = "api"

[[virtual_server.backend]]
address = "198.18.0.151:80"

[[virtual_server]]
name = "api"
listen = "198.18.0.250:8080"
protocol = "http"

[[virtual_server.backend]]
address = "198.18.0.152:80"

[[virtual_server]]
name = "plain"
listen = "198.18.0.250:9000"

[[virtual_server.backend]]
address = "198.18.0.153:80"
"#
    )
}

fn load_toml(text: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lb.toml");
    std::fs::write(&p, text).unwrap();
    ok(&p).0
}

#[test]
fn http_table_maps_onto_lb_proxy_config() {
    use lb_bins::config::model::HashKey;
    use lb_proxy::http::{ForwardedHeaders, HashKeySource, HostMatch, HttpProxyConfig, Route};

    let cfg = load_toml(&http_pair(HTTP_KEYS));
    let front = cfg.virtual_server("front").unwrap();
    assert_eq!(
        front.http.as_ref().unwrap().hash_key,
        HashKey::Header("X-User".into())
    );
    let hc = front.http_proxy_config().unwrap();
    assert_eq!(hc.name, "front");
    assert_eq!(hc.default_pool.as_deref(), Some("front"));
    assert_eq!(hc.retries, 3);
    assert_eq!(
        hc.forwarded,
        ForwardedHeaders {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_port: true,
            forwarded: true,
        }
    );
    assert_eq!(
        hc.accept_proxy.map(|a| a.header_timeout),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        hc.hash_key,
        HashKeySource::Header("x-user".parse().unwrap())
    );
    assert_eq!(hc.timeouts.backend_connect, Duration::from_secs(2));
    assert_eq!(hc.timeouts.header_read, Duration::from_secs(4));
    assert_eq!(hc.timeouts.client_idle, Duration::from_secs(20));
    assert_eq!(hc.timeouts.backend_response, Duration::from_secs(7));
    assert_eq!(hc.timeouts.backend_idle, Duration::from_secs(45));
    assert_eq!(hc.timeouts.client, Duration::from_secs(12));
    assert_eq!(hc.limits.max_header_bytes, 32_768);
    assert_eq!(hc.limits.max_headers, 50);
    assert_eq!(hc.limits.max_idle_per_backend, 8);
    assert!(hc.http2);
    assert_eq!(hc.limits.max_concurrent_streams, 64);
    assert_eq!(hc.maxconn, 300);
    assert!(!hc.passive_health.count_5xx);
    assert_eq!(
        hc.routes,
        [
            Route::new("api")
                .host(HostMatch::Suffix(".example.com".into()))
                .path_prefix("/api"),
            Route::new("api").path_prefix("/v2/"),
        ]
    );
    hc.validate().unwrap();
    assert_eq!(front.route_targets(), ["api"]);
    // Targets start first.
    assert_eq!(cfg.start_order(), [1, 0, 2]);

    // Without the table: lb-proxy's defaults, but the virtual server's retries and
    // connect timeout.
    let api = cfg.virtual_server("api").unwrap();
    assert!(api.http.is_none());
    let mut expected = HttpProxyConfig::new("api");
    expected.default_pool = Some("api".into());
    expected.retries = 1;
    expected.timeouts.backend_connect = Duration::from_secs(5);
    assert_eq!(api.http_proxy_config().unwrap(), expected);
    // An empty table is the same.
    let empty = load_toml(
        "[[virtual_server]]\nname = \"api\"\nlisten = \"198.18.0.250:8080\"\nprotocol = \"http\"\n[virtual_server.http]\n[[virtual_server.backend]]\naddress = \"198.18.0.152:80\"\n",
    );
    assert_eq!(
        empty.virtual_servers[0].http_proxy_config().unwrap(),
        expected
    );
    for (text, key) in [
        ("client", HashKey::Client),
        ("URI", HashKey::Uri),
        ("cookie:session", HashKey::Cookie("session".into())),
    ] {
        assert_eq!(text.parse::<HashKey>().unwrap(), key);
    }
}

#[test]
fn http_table_errors_name_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "timeout_server = 0",
            "lb.toml:9:18: timeout_server must be above 0 s",
        ),
        (
            "timeout_client = \"0ms\"",
            "lb.toml:9:18: timeout_client must be above 0 s",
        ),
        (
            "timeout_http_request = \"0s\"",
            "lb.toml:9:24: timeout_http_request must be above 0 s",
        ),
        (
            "max_header_bytes = 4096",
            "lb.toml:9:20: max_header_bytes 4096 is below the minimum of 8192",
        ),
        (
            "max_headers = 0",
            "lb.toml:9:15: max_headers must be at least 1",
        ),
        (
            "maxconn = 0",
            "lb.toml:9:11: maxconn 0 is outside 1..=4294967295",
        ),
        (
            "max_concurrent_streams = 0",
            "lb.toml:9:26: max_concurrent_streams must be at least 1",
        ),
        (
            "hash_key = \"header:bad name\"",
            "lb.toml:9:12: hash_key header:bad name: \"bad name\" is not a valid HTTP header name",
        ),
        (
            "hash_key = \"cookie:\"",
            "lb.toml:9:12: hash_key cookie:: \"\" is not a valid cookie name",
        ),
        (
            "hash_key = \"body\"",
            "lb.toml:9:12: unknown hash_key \"body\" (expected \"client\", \"uri\", \"uri_whole\", \"header:NAME\" or \"cookie:NAME\")",
        ),
        (
            "[[virtual_server.http.route]]\nhost = \"a.*.com\"\nvirtual_server = \"api\"",
            "lb.toml:10:8: invalid route host: \"a.*.com\": only a leading `*.` wildcard is allowed, and no port, slash or space",
        ),
        (
            "[[virtual_server.http.route]]\npath_prefix = \"api\"\nvirtual_server = \"api\"",
            "lb.toml:10:15: path_prefix \"api\" must start with /",
        ),
        (
            "[[virtual_server.http.route]]\nvirtual_server = \"nope\"",
            "lb.toml:10:18: route names unknown virtual server \"nope\"",
        ),
        (
            "[[virtual_server.http.route]]\nvirtual_server = \"plain\"",
            "lb.toml:10:18: route target \"plain\" is a tcp virtual server; routes need protocol = \"http\"",
        ),
        (
            "[[virtual_server.http.route]]\nvirtual_server = \"front\"",
            "lb.toml:10:18: a route cannot name its own virtual server \"front\" (requests no route matches go to its backends already)",
        ),
        (
            "frobnicate = true",
            "lb.toml:9:1: unknown field `frobnicate`",
        ),
    ];
    for (extra, want) in cases {
        let e = errors("lb.toml", &http_pair(extra));
        assert!(
            e.len() == 1 && e[0].starts_with(want),
            "{extra}:\n got {e:?}\nwant {want:?}"
        );
    }
}

#[test]
fn http_table_and_routes_are_refused_where_they_do_not_apply() {
    // On a TCP virtual server.
    let e = errors(
        "lb.toml",
        "[[virtual_server]]\nname = \"t\"\nlisten = \"198.18.0.250:80\"\n\n[virtual_server.http]\nforwardfor = false\n",
    );
    assert_eq!(
        e,
        ["lb.toml:5:1: [virtual_server.http] applies to protocol = \"http\" only (virtual server t is tcp)"]
    );
    // A route with no condition before others: usable, with a warning.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lb.toml");
    std::fs::write(
        &p,
        http_pair("[[virtual_server.http.route]]\nvirtual_server = \"api\"\n"),
    )
    .unwrap();
    let (_, w) = ok(&p);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().ends_with("lb.toml:9:1: warning: this route has neither host nor path_prefix: it takes every request, the routes after it never match"),
        "{w:?}"
    );
    // Routes that loop: api routes back to front.
    let text = http_pair(HTTP_KEYS).replace(
        "name = \"api\"\nlisten = \"198.18.0.250:8080\"\nprotocol = \"http\"\n",
        "name = \"api\"\nlisten = \"198.18.0.250:8080\"\nprotocol = \"http\"\n[[virtual_server.http.route]]\nvirtual_server = \"front\"\n",
    );
    let e = errors("lb.toml", &text);
    assert_eq!(
        e,
        ["lb.toml:32:18: routes form a cycle (front -> api -> front): a route target must start before the virtual servers that route to it"]
    );
}

#[test]
fn outlier_detection_parses_and_each_error_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("o.toml");
    std::fs::write(
        &t,
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.outlier_detection]\nenabled = false\nconsecutive_failures = 2\nhttp_failures = \"5xx\"\nbase_ejection_time = \"1s\"\nmax_ejection_time = 10\nmax_ejection_percent = 100\nenforcing_success_rate = 100\nsuccess_rate_request_volume = 20\nenforcing_failure_percentage = 50\n",
    )
    .unwrap();
    let o = &ok(&t).0.virtual_servers[0].outlier_detection;
    assert!(!o.enabled);
    assert_eq!(o.consecutive_failures, 2);
    assert_eq!(o.http_failures, config::model::HttpFailures::Any5xx);
    assert_eq!(o.base_ejection_time, Duration::from_secs(1));
    assert_eq!(o.max_ejection_time, Some(Duration::from_secs(10)));
    assert_eq!(o.max_ejection_percent, 100);
    assert_eq!(
        (
            o.enforcing_success_rate,
            o.success_rate_request_volume,
            o.success_rate_minimum_hosts,
            o.enforcing_failure_percentage,
            o.failure_percentage_threshold
        ),
        (100, 20, 5, 50, 85)
    );
    let c = o.outlier_config().unwrap();
    assert_eq!(
        (c.enforcing_success_rate(), c.success_rate_request_volume()),
        (100, 20)
    );
    assert_eq!(
        errors(
            "o.toml",
            "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.outlier_detection]\nconsecutive_failures = 0\nbase_ejection_time = \"20s\"\nmax_ejection_time = \"10s\"\nmax_ejection_percent = 101\nenforcing_failure_percentage = 200\n"
        ),
        [
            "o.toml:4:24: consecutive_failures must be at least 1",
            "o.toml:6:21: max_ejection_time 10s is below base_ejection_time 20s",
            "o.toml:7:24: max_ejection_percent 101 is above 100",
            "o.toml:8:32: enforcing_failure_percentage 200 is above 100",
        ]
    );
    // A base above 300 s without max_ejection_time: the base is the longest (Envoy). It
    // was refused against a default of 300 s the file never wrote.
    std::fs::write(
        &t,
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.outlier_detection]\nbase_ejection_time = \"600s\"\n",
    )
    .unwrap();
    let o = &ok(&t).0.virtual_servers[0].outlier_detection;
    assert_eq!(o.max_ejection_time, None);
    assert_eq!(
        o.outlier_config().unwrap().max_ejection_time(),
        Duration::from_secs(600)
    );
}

/// keepalived's `skip_check_adv_addr` (per instance) and `vrrp_skip_check_adv_addr` (global,
/// for every instance) are honoured, not ignored; without them adverts for other addresses
/// are dropped.
#[test]
fn skip_check_adv_addr_per_instance_and_global() {
    let instance = |name: &str, vrid: u8, extra: &str| {
        format!(
            "vrrp_instance {name} {{\n    interface eth0\n    virtual_router_id {vrid}\n{extra}    virtual_ipaddress {{\n        198.18.0.{vrid}\n    }}\n}}\n"
        )
    };
    let text = format!(
        "{}{}",
        instance("VI_1", 51, "    skip_check_adv_addr\n"),
        instance("VI_2", 52, "")
    );
    let (cfg, w) = config::keepalived::parse_str(&text, Path::new("k.conf")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let skip: Vec<bool> = cfg
        .vrrp_instances
        .iter()
        .map(|v| v.skip_check_adv_addr)
        .collect();
    assert_eq!(skip, [true, false]);
    let global = format!("global_defs {{\n    vrrp_skip_check_adv_addr\n}}\n{text}");
    let (cfg, w) = config::keepalived::parse_str(&global, Path::new("k.conf")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert!(cfg.vrrp_instances.iter().all(|v| v.skip_check_adv_addr));
}

/// Whole-number durations are range-checked like floats and strings: a huge `delay_loop`
/// is refused at its position instead of overflowing an `Instant` later.
#[test]
fn integer_durations_are_range_checked() {
    for v in [
        "9223372036854775807",
        "1000000001",
        "1e10",
        "\"1000000001s\"",
    ] {
        let e = errors(
            "lb.toml",
            &format!("[[virtual_server]]\nlisten = \"198.18.0.250:80\"\ndelay_loop = {v}\n"),
        );
        assert_eq!(e.len(), 1, "{v}: {e:?}");
        assert!(e[0].starts_with("lb.toml:3:14: "), "{v}: {e:?}");
        assert!(e[0].contains("out of range"), "{v}: {e:?}");
    }
    let c = load_toml("[[virtual_server]]\nlisten = \"198.18.0.250:80\"\ndelay_loop = 1000000000\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n");
    assert_eq!(
        c.virtual_servers[0].delay_loop,
        Duration::from_secs(1_000_000_000)
    );
}

fn addresses(n: usize, v6: bool) -> Vec<String> {
    (0..n)
        .map(|i| {
            if v6 {
                format!("2001:db8::{:x}", i + 1)
            } else {
                format!("10.0.{}.{}", i / 250, i % 250 + 1)
            }
        })
        .collect()
}

/// A keepalived instance: `vips` in `virtual_ipaddress` from line 5 (column 9), then
/// `excluded` in `virtual_ipaddress_excluded`.
fn keepalived_instance(version: u8, vips: &[String], excluded: &[String]) -> String {
    let mut s = String::from(
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n",
    );
    for a in vips {
        s.push_str(&format!("        {a}\n"));
    }
    s.push_str("    }\n    virtual_ipaddress_excluded {\n");
    for a in excluded {
        s.push_str(&format!("        {a}\n"));
    }
    s.push_str(&format!("    }}\n    version {version}\n}}\n"));
    s
}

/// `virtual_ipaddress_excluded` is its own list (added with the VIPs, never advertised),
/// not merged into `virtual_ipaddress`, in both formats; it may hold the other family.
#[test]
fn virtual_ipaddress_excluded_is_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    let excluded = ["198.18.0.251".to_owned(), "2001:db8::1/64".to_owned()];
    std::fs::write(
        &k,
        keepalived_instance(2, &["198.18.0.250".to_owned()], &excluded),
    )
    .unwrap();
    let (c, w) = ok(&k);
    assert!(!w.iter().any(|w| w.message.contains("excluded")), "{w:?}");
    let vi = &c.vrrp_instances[0];
    assert_eq!(vi.virtual_ipaddress.len(), 1);
    let ex: Vec<String> = vi
        .virtual_ipaddress_excluded
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ex, ["198.18.0.251", "2001:db8::1/64"]);
    let t = load_toml(
        "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
         virtual_ipaddress = [\"198.18.0.250\"]\n\
         virtual_ipaddress_excluded = [\"198.18.0.251\", \"2001:db8::1/64\"]\n",
    );
    assert_eq!(t.vrrp_instances, c.vrrp_instances);
    // A duplicate across the two lists is refused where it is written.
    let e = errors(
        "k.conf",
        &keepalived_instance(
            2,
            &["198.18.0.250".to_owned()],
            &["198.18.0.250".to_owned()],
        ),
    );
    assert_eq!(e, ["k.conf:5:9: duplicate virtual address 198.18.0.250"]);
    // Twice in virtual_ipaddress (keepalived's own sample does it): keepalived would
    // advertise it twice, which peers comparing address counts would see.
    let e = errors(
        "k.conf",
        &keepalived_instance(
            2,
            &["198.18.0.250".to_owned(), "198.18.0.250".to_owned()],
            &[],
        ),
    );
    assert_eq!(
        e,
        ["k.conf:6:9: duplicate virtual address 198.18.0.250 (keepalived would advertise it twice: list it once, on every node)"]
    );
}

/// An advert holds 255 IPv4 / 89 IPv6 addresses (keepalived's count at MTU 1500): in
/// keepalived.conf more VIPs are moved to the excluded ones with a warning, as keepalived
/// moves them (it was an error, and 90 IPv6 VIPs were advertised, which a keepalived peer
/// drops: both nodes master); TOML refuses them at the first that does not fit. Excluded
/// addresses do not count.
#[test]
fn advertised_addresses_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    std::fs::write(
        &k,
        keepalived_instance(2, &addresses(255, false), &addresses(300, true)),
    )
    .unwrap();
    let (c, _) = ok(&k);
    assert_eq!(c.vrrp_instances[0].virtual_ipaddress.len(), 255);
    assert_eq!(c.vrrp_instances[0].virtual_ipaddress_excluded.len(), 300);

    for (version, v6, n, max) in [(2, false, 256, 255), (3, true, 90, 89)] {
        std::fs::write(&k, keepalived_instance(version, &addresses(n, v6), &[])).unwrap();
        let (c, w) = ok(&k);
        let vi = &c.vrrp_instances[0];
        assert_eq!(vi.virtual_ipaddress.len(), max);
        assert_eq!(vi.virtual_ipaddress_excluded.len(), n - max);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].to_string().contains(&format!(
                "{n} VIPs, more than an advert carries ({max}): the last {} moved to virtual_ipaddress_excluded",
                n - max
            )),
            "{}",
            w[0]
        );
    }
    std::fs::write(&k, keepalived_instance(3, &addresses(89, true), &[])).unwrap();
    let (_, w) = ok(&k);
    assert!(w.is_empty(), "{w:?}");

    let list = |n| {
        addresses(n, false)
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    let e = errors(
        "lb.toml",
        &format!(
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\n{}\n]\n",
            list(256)
        ),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("lb.toml:261:1: vrrp_instance VI_1 advertises 256 addresses"),
        "{e:?}"
    );
}

/// `vrrp_script { user USER [GROUP] }` is read in both formats and looked up at load: an
/// unknown user or group is an error where it is written, not a script silently run as root.
#[test]
fn vrrp_script_user_is_read_and_looked_up() {
    let script = |user: &str| {
        format!(
            "vrrp_script chk {{\n    script \"/bin/true\"\n    user {user}\n}}\n{BASE_INSTANCE}"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    std::fs::write(&k, script("nobody nogroup")).unwrap();
    let (c, _) = ok(&k);
    let s = &c.vrrp_scripts[0];
    assert_eq!(
        (s.user.as_deref(), s.group.as_deref()),
        (Some("nobody"), Some("nogroup"))
    );
    let t = load_toml(
        "[[vrrp_script]]\nname = \"chk\"\nscript = \"/bin/true\"\nuser = \"nobody\"\ngroup = \"nogroup\"\n",
    );
    assert_eq!(t.vrrp_scripts, c.vrrp_scripts);
    std::fs::write(&k, script("nobody")).unwrap();
    assert_eq!(ok(&k).0.vrrp_scripts[0].group, None);

    assert_eq!(
        errors("k.conf", &script("no-such-user-lb")),
        ["k.conf:3:10: vrrp_script chk: unknown user \"no-such-user-lb\""]
    );
    assert_eq!(
        errors("k.conf", &script("nobody no-such-group-lb")),
        ["k.conf:3:17: vrrp_script chk: unknown group \"no-such-group-lb\""]
    );
    assert_eq!(
        errors("k.conf", &script("nobody nogroup extra")),
        ["k.conf:3:25: `user` takes a user name and an optional group name"]
    );
    assert_eq!(
        errors(
            "lb.toml",
            "[[vrrp_script]]\nname = \"chk\"\nscript = \"/bin/true\"\nuser = \"no-such-user-lb\"\n"
        ),
        ["lb.toml:4:8: vrrp_script chk: unknown user \"no-such-user-lb\""]
    );
    assert_eq!(
        errors(
            "lb.toml",
            "[[vrrp_script]]\nname = \"chk\"\nscript = \"/bin/true\"\ngroup = \"nogroup\"\n"
        ),
        ["lb.toml:4:9: vrrp_script chk: group needs a user"]
    );
}

#[test]
fn connect_ip_is_parsed_and_checked() {
    let text = "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.151 82 {\n        TCP_CHECK {\n            connect_ip 198.18.0.161\n            connect_port 8082\n        }\n        MISC_CHECK {\n            misc_path /bin/true\n            connect_ip 198.18.0.161\n        }\n        HTTP_GET {\n            url {\n                path /\n            }\n            connect_ip fd00:18::161\n            bindto 198.18.0.11\n        }\n    }\n}\n";
    let e = errors("k.conf", text);
    assert_eq!(
        e,
        [
            "k.conf:10:24: connect_ip 198.18.0.161 does not apply to a misc check (it runs a program)",
            "k.conf:16:24: connect_ip fd00:18::161 and bindto 198.18.0.11 are of different address families",
        ]
    );
    let fixed = text
        .replace(
            "            misc_path /bin/true\n            connect_ip 198.18.0.161\n",
            "            misc_path /bin/true\n",
        )
        .replace("fd00:18::161", "198.18.0.162");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(&p, fixed).unwrap();
    let (cfg, _) = ok(&p);
    let checks = &cfg.virtual_servers[0].backends[0].checks;
    assert_eq!(checks[0].connect_ip, Some("198.18.0.161".parse().unwrap()));
    assert_eq!(checks[0].connect_port, Some(8082));
    assert_eq!(checks[2].connect_ip, Some("198.18.0.162".parse().unwrap()));
}

/// A block dropped for an error (a virtual server with a bad address, a check without its
/// program) gives its index to the next one: that one's errors are still reported, at its
/// own lines. They used to be dropped (a path poisoned by the dropped block) or placed in
/// the dropped block.
#[test]
fn errors_after_a_dropped_block_are_reported_at_their_own_lines() {
    let text = "virtual_server 198.18.0.300 80 {\n    protocol TCP\n    delay_loop abc\n}\nvirtual_server 198.18.0.250 81 {\n    protocol TCP\n    delay_loop 0\n    real_server 198.18.0.2 80 {\n        MISC_CHECK {\n            misc_timeout 1\n        }\n        TCP_CHECK {\n            connect_timeout 0\n        }\n    }\n}\n";
    assert_eq!(
        errors("k.conf", text),
        [
            "k.conf:1:16: \"198.18.0.300\" is not an IP address",
            "k.conf:3:16: delay_loop: \"abc\" is not a duration (e.g. 3, 1.5, 500ms, 2m)",
            "k.conf:7:16: delay_loop must be above 0 s",
            "k.conf:9:9: MISC_CHECK has no misc_path",
            "k.conf:13:29: connect_timeout must be above 0 s",
        ]
    );
}

/// keepalived's global `vrrp_garp_*`, `vrrp_lower_prio_no_advert` and
/// `vrrp_skip_check_adv_addr` are defaults of every instance, which its own keywords
/// override; the lower-priority GARPs default to the global master ones, not the
/// instance's.
#[test]
fn global_vrrp_defaults_apply_where_an_instance_is_silent() {
    let second = BASE_INSTANCE
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id 51", "virtual_router_id 52")
        .replace(
            "    priority 100\n",
            "    priority 100\n    garp_master_repeat 2\n    garp_lower_prio_delay 1\n    skip_check_adv_addr off\n    lower_prio_no_advert false\n",
        );
    let text = format!(
        "global_defs {{\n    vrrp_garp_master_delay 7\n    vrrp_garp_master_repeat 3\n    vrrp_garp_master_refresh 30\n    vrrp_garp_master_refresh_repeat 2\n    vrrp_garp_lower_prio_repeat 4\n    vrrp_lower_prio_no_advert\n    vrrp_skip_check_adv_addr\n}}\n{BASE_INSTANCE}{second}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(&p, text).unwrap();
    let (cfg, w) = ok(&p);
    // keepalived 2.2.7's `vrrp_skip_check_adv_addr_handler` sets the flag for any valid
    // value: `off` turns it on. Followed, and warned about.
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .contains(":24:25: warning: `skip_check_adv_addr off` turns it on"),
        "{}",
        w[0]
    );
    let (a, b) = (&cfg.vrrp_instances[0], &cfg.vrrp_instances[1]);
    assert_eq!(a.garp_master_delay, Duration::from_secs(7));
    assert_eq!(a.garp_master_repeat, 3);
    assert_eq!(a.garp_master_refresh, Some(Duration::from_secs(30)));
    assert_eq!(a.garp_master_refresh_repeat, 2);
    assert_eq!(a.garp_lower_prio_repeat, 4);
    assert_eq!(
        a.garp_lower_prio_delay,
        Duration::from_secs(7),
        "the global master delay"
    );
    assert!(a.lower_prio_no_advert && a.skip_check_adv_addr);
    assert_eq!(b.garp_master_repeat, 2);
    assert_eq!(
        b.garp_lower_prio_repeat, 4,
        "the global value, not the instance's master repeat"
    );
    assert_eq!(b.garp_lower_prio_delay, Duration::from_secs(1));
    assert!(!b.lower_prio_no_advert && b.skip_check_adv_addr);
    // A flag's argument is a keepalived <BOOL> or nothing.
    assert_eq!(
        errors(
            "k.conf",
            &BASE_INSTANCE.replace(
                "    priority 100\n",
                "    priority 100\n    lower_prio_no_advert maybe\n"
            )
        ),
        ["k.conf:5:26: `lower_prio_no_advert` takes on|off|true|false|yes|no or nothing, not \"maybe\""]
    );
}

/// `include` takes csh-style braces as keepalived's glob(3) with GLOB_BRACE does: each
/// alternative's files in order, the others left out.
#[test]
fn include_expands_braces() {
    let dir = tempfile::tempdir().unwrap();
    let instance = |name: &str, vrid: u8| {
        BASE_INSTANCE
            .replace("VI_1", name)
            .replace("virtual_router_id 51", &format!("virtual_router_id {vrid}"))
    };
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(dir.path().join("conf.d/b.conf"), instance("VI_B", 52)).unwrap();
    std::fs::write(dir.path().join("conf.d/a.conf"), instance("VI_A", 51)).unwrap();
    std::fs::write(dir.path().join("conf.d/c.conf"), instance("VI_C", 53)).unwrap();
    std::fs::write(dir.path().join("main.conf"), "include conf.d/{b,a}.conf\n").unwrap();
    let (cfg, w) = ok(&dir.path().join("main.conf"));
    assert!(w.is_empty(), "{w:?}");
    let names: Vec<&str> = cfg.vrrp_instances.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["VI_B", "VI_A"]);
}

/// An `include` line whose last word touches the `}` closing the block it is in
/// (`{ include vs.d/rs.conf}`) still closes that block, as it did before braces were read
/// as part of the pattern: only a `}` matching a `{` of the same word belongs to the
/// pattern. It used to be taken into the file name ("rs.conf}" does not exist) and the
/// block stayed open to the end of the file.
#[test]
fn include_touching_the_closing_brace_closes_the_block() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rs.d")).unwrap();
    let rs = |port: u16| format!("real_server 198.18.0.2 {port} {{\n    weight 1\n}}\n");
    std::fs::write(dir.path().join("rs.d/a.conf"), rs(8080)).unwrap();
    std::fs::write(dir.path().join("rs.d/b.conf"), rs(8081)).unwrap();
    std::fs::write(
        dir.path().join("main.conf"),
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    include rs.d/a.conf}\nvirtual_server 198.18.0.250 81 {\n    protocol TCP\n    include rs.d/{a,b}.conf}\n",
    )
    .unwrap();
    let (cfg, w) = ok(&dir.path().join("main.conf"));
    assert!(w.is_empty(), "{w:?}");
    let ports: Vec<Vec<u16>> = cfg
        .virtual_servers
        .iter()
        .map(|vs| vs.backends.iter().map(|b| b.address.port()).collect())
        .collect();
    assert_eq!(ports, [vec![8080], vec![8080, 8081]]);
}

/// A backslash escapes a brace (or a glob character) in an include pattern, as glob(3)
/// without GLOB_NOESCAPE: `\{x\}.conf` names the file `{x}.conf`. The escaped braces
/// used to be expanded (into `\x\.conf`), and the backslashes were passed to the glob as
/// literal characters.
#[test]
fn include_backslash_escapes_braces() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("{x}.conf"), BASE_INSTANCE).unwrap();
    std::fs::write(
        dir.path().join("[v].conf"),
        BASE_INSTANCE
            .replace("VI_1", "VI_2")
            .replace("virtual_router_id 51", "virtual_router_id 52"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.conf"),
        "include \\{x\\}.conf\ninclude \\[v\\].conf\n",
    )
    .unwrap();
    let (cfg, w) = ok(&dir.path().join("main.conf"));
    assert!(w.is_empty(), "{w:?}");
    let names: Vec<&str> = cfg.vrrp_instances.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["VI_1", "VI_2"]);
}

/// Only the pattern written after `include` is a pattern: the directory of the including
/// file is taken as it is, even with braces or glob characters in its name. It used to go
/// through the brace expansion (`conf{1}/` became `conf1/`) and the glob.
#[test]
fn include_reads_the_including_files_directory_literally() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("conf{1}[2]");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("vi.conf"), BASE_INSTANCE).unwrap();
    std::fs::write(
        sub.join("vj.conf"),
        BASE_INSTANCE
            .replace("VI_1", "VI_2")
            .replace("virtual_router_id 51", "virtual_router_id 52"),
    )
    .unwrap();
    std::fs::write(sub.join("main.conf"), "include vi.conf\ninclude vj*.conf\n").unwrap();
    let (cfg, w) = ok(&sub.join("main.conf"));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.vrrp_instances.len(), 2);
}

/// A wildcard listener takes its port on every address (`[::]` on IPv4 ones too), so a
/// virtual server on the same port and transport could not bind: a located error at load
/// rather than a failure at start. Other ports, or TCP beside UDP, are fine.
#[test]
fn overlapping_listeners_are_refused_at_load() {
    let vs = |listen: &str, proto: &str| {
        format!("[[virtual_server]]\nlisten = \"{listen}\"\nprotocol = \"{proto}\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\n")
    };
    let text = [
        vs("0.0.0.0:80", "tcp"),
        vs("198.18.0.250:80", "tcp"),
        vs("198.18.0.250:80", "udp"),
        vs("198.18.0.250:81", "tcp"),
        vs("[::]:443", "tcp"),
        vs("198.18.0.250:443", "http"),
    ]
    .concat();
    assert_eq!(
        errors("lb.toml", &text),
        [
            "lb.toml:8:10: tcp 198.18.0.250:80 overlaps virtual server 0.0.0.0:80 on 0.0.0.0:80: a wildcard address takes its port on every address; listen on the addresses one by one",
            "lb.toml:32:10: tcp 198.18.0.250:443 overlaps virtual server [::]:443 on [::]:443: a wildcard address takes its port on every address; listen on the addresses one by one",
        ]
    );
}

/// An IPv4-mapped IPv6 listen address (`[::ffff:a.b.c.d]`) binds the IPv4 address: it
/// overlaps `0.0.0.0` and is the same listener as `a.b.c.d` (both fail to bind), while an
/// IPv6 address beside `0.0.0.0` on one port binds fine.
#[test]
fn ipv4_mapped_listeners_overlap_their_ipv4_address() {
    let vs = |listen: &str, proto: &str| {
        format!("[[virtual_server]]\nlisten = \"{listen}\"\nprotocol = \"{proto}\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\n")
    };
    let text = [
        vs("0.0.0.0:82", "tcp"),
        vs("[::ffff:198.18.0.250]:82", "tcp"),
        vs("198.18.0.250:83", "udp"),
        vs("[::ffff:198.18.0.250]:83", "udp"),
        vs("0.0.0.0:84", "tcp"),
        vs("[2001:db8::1]:84", "tcp"),
        vs("[::1]:84", "tcp"),
        vs("[::ffff:198.18.0.250]:85", "tcp"),
        vs("[::ffff:198.18.0.250]:85", "udp"),
    ]
    .concat();
    assert_eq!(
        errors("lb.toml", &text),
        [
            "lb.toml:8:10: tcp [::ffff:198.18.0.250]:82 overlaps virtual server 0.0.0.0:82 on 0.0.0.0:82: a wildcard address takes its port on every address; listen on the addresses one by one",
            "lb.toml:20:10: another virtual server already listens on udp [::ffff:198.18.0.250]:83",
        ]
    );
}

/// keepalived `ops` (one-packet scheduling) and its TOML twin reach the UDP virtual server.
/// On a TCP virtual server keepalived ignores it (ipvswrapper.c sets the flag for UDP
/// only): keepalived.conf loads with a located warning and `ops` off. TOML refuses it with
/// a located error, as `ipvsadm --ops` does.
#[test]
fn ops_is_read_from_both_formats_and_needs_udp() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    let conf = |proto: &str| {
        format!(
            "virtual_server 198.18.0.250 53 {{\n    protocol {proto}\n    ops\n    real_server 198.18.0.151 53 {{\n    }}\n}}\n"
        )
    };
    std::fs::write(&k, conf("UDP")).unwrap();
    assert!(ok(&k).0.virtual_servers[0].ops);
    let t = dir.path().join("n.toml");
    let toml = |proto: &str, ops: &str| {
        format!(
            "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"{proto}\"\n{ops}[[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n"
        )
    };
    std::fs::write(&t, toml("udp", "ops = true\n")).unwrap();
    assert!(ok(&t).0.virtual_servers[0].ops);
    std::fs::write(&t, toml("udp", "")).unwrap();
    assert!(!ok(&t).0.virtual_servers[0].ops, "off by default");
    std::fs::write(&k, conf("TCP")).unwrap();
    let (c, warnings) = ok(&k);
    assert!(!c.virtual_servers[0].ops);
    let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter().any(|w| w.ends_with("k.conf:3:5: warning: `ops` applies to UDP virtual servers only (keepalived ignores it on tcp), ignored")),
        "{w:?}"
    );
    assert_eq!(
        errors("n.toml", &toml("http", "ops = true\n")),
        ["n.toml:4:7: ops (one-packet scheduling) needs protocol udp, not http"]
    );
}

/// keepalived's per-checker defaults, in both formats: `retry` 0 for MISC_CHECK, 3 for
/// DNS_CHECK and 1 for the others (check_misc.c `default_retry = 0`, check_dns.h
/// `DNS_DEFAULT_RETRY`), `delay_before_retry` 3 s for HTTP_GET/SSL_GET (check_http.c),
/// the check's `delay_loop` for DNS_CHECK (check_dns.c) and 1 s for the others, a MISC_CHECK without
/// `misc_timeout` given the virtual server's `delay_loop` to run (check_misc.c), and
/// `retry 0` / `nb_get_retry 0` accepted (keepalived reads them as 0..=UINT_MAX).
#[test]
fn check_defaults_follow_keepalived_per_checker() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("k.conf");
    std::fs::write(
        &conf,
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    delay_loop 60\n\
         real_server 198.18.0.151 82 {\n\
         TCP_CHECK {\n        }\n\
         HTTP_GET {\n            url {\n                path /\n            }\n        }\n\
         SSL_GET {\n            url {\n                path /\n            }\n        }\n\
         MISC_CHECK {\n            misc_path /bin/true\n        }\n\
         TCP_CHECK {\n            retry 0\n        }\n\
         HTTP_GET {\n            nb_get_retry 0\n            url {\n                path /\n            }\n        }\n\
         DNS_CHECK {\n        }\n\
         DNS_CHECK {\n            delay_loop 7\n        }\n\
         PING_CHECK {\n        }\n\
         }\n}\n",
    )
    .unwrap();
    let (k, _) = ok(&conf);
    let toml = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\ndelay_loop = 60\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:82\"\n\
         [[virtual_server.backend.check]]\ntype = \"tcp\"\n\
         [[virtual_server.backend.check]]\ntype = \"http\"\nurl = [{ path = \"/\" }]\n\
         [[virtual_server.backend.check]]\ntype = \"ssl\"\nurl = [{ path = \"/\" }]\n\
         [[virtual_server.backend.check]]\ntype = \"misc\"\nmisc_path = \"/bin/true\"\n\
         [[virtual_server.backend.check]]\ntype = \"tcp\"\nretry = 0\n\
         [[virtual_server.backend.check]]\ntype = \"http\"\nretry = 0\nurl = [{ path = \"/\" }]\n\
         [[virtual_server.backend.check]]\ntype = \"dns\"\n\
         [[virtual_server.backend.check]]\ntype = \"dns\"\ndelay_loop = 7\n\
         [[virtual_server.backend.check]]\ntype = \"ping\"\n",
    );
    for cfg in [&k, &toml] {
        let vs = &cfg.virtual_servers[0];
        let got: Vec<_> = vs.backends[0]
            .checks
            .iter()
            .map(|c| {
                (
                    c.retry,
                    c.retry_delay(vs).as_secs(),
                    c.timeout(vs).as_secs(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 1, 5),
                (1, 3, 5),
                (1, 3, 5),
                (0, 1, 60),
                (0, 1, 5),
                (0, 3, 5),
                (3, 60, 5),
                (3, 7, 5),
                (1, 1, 5)
            ]
        );
    }
    assert_eq!(
        k.virtual_servers[0].backends[0].checks,
        toml.virtual_servers[0].backends[0].checks
    );
}

/// keepalived's `UDP_CHECK` (check_udp.c) and its TOML twin `type = "udp"` give the same
/// model: the payload and reply hex strings parsed (spaces optional, `x` wildcards in the
/// reply), `require_reply` bare or with data, the reply length bounds, and keepalived's
/// defaults (no payload: its filler; min 0, max 255; retry 1, delay_before_retry 1 s).
#[test]
fn udp_check_is_read_from_both_formats() {
    use lb_bins::config::model::UdpCheck;
    use lb_health::probe::HexPattern;

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("k.conf");
    std::fs::write(
        &conf,
        "virtual_server 198.18.0.250 53 {\n    protocol UDP\n\
         real_server 198.18.0.151 53 {\n\
         UDP_CHECK {\n            connect_port 5353\n            connect_timeout 2\n\
         payload 0102 0a\tff\n            require_reply 01 x2 Fx\n\
         min_reply_length 3\n            max_reply_length 512\n        }\n\
         UDP_CHECK {\n            require_reply\n        }\n\
         UDP_CHECK {\n        }\n\
         }\n}\n",
    )
    .unwrap();
    let (k, kw) = ok(&conf);
    assert!(kw.is_empty(), "{kw:?}");
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n\
         [[virtual_server.backend.check]]\ntype = \"udp\"\nconnect_port = 5353\nconnect_timeout = 2\n\
         payload = \"01020aff\"\nrequire_reply = true\nreply = \"01 x2 Fx\"\n\
         min_reply_length = 3\nmax_reply_length = 512\n\
         [[virtual_server.backend.check]]\ntype = \"udp\"\nrequire_reply = true\n\
         [[virtual_server.backend.check]]\ntype = \"udp\"\n",
    );
    let checks = &k.virtual_servers[0].backends[0].checks;
    assert_eq!(checks, &t.virtual_servers[0].backends[0].checks);
    let kinds: Vec<&UdpCheck> = checks
        .iter()
        .map(|c| match &c.kind {
            CheckKind::Udp(u) => u,
            other => panic!("not a udp check: {other:?}"),
        })
        .collect();
    let reply = HexPattern::parse("01 x2 Fx").unwrap();
    assert_eq!(
        (reply.data(), reply.mask()),
        (&[1, 2, 0xf0][..], &[0, 0xf0, 0x0f][..])
    );
    assert_eq!(
        *kinds[0],
        UdpCheck {
            payload: Some(vec![0x01, 0x02, 0x0a, 0xff]),
            require_reply: true,
            reply: Some(reply),
            min_reply_length: 3,
            max_reply_length: 512,
        }
    );
    assert_eq!(
        *kinds[1],
        UdpCheck {
            require_reply: true,
            ..UdpCheck::default()
        }
    );
    assert_eq!(
        *kinds[2],
        UdpCheck {
            payload: None,
            require_reply: false,
            reply: None,
            min_reply_length: 0,
            max_reply_length: 255,
        }
    );
    assert_eq!(checks[0].connect_port, Some(5353));
    assert_eq!(checks[0].connect_timeout, Duration::from_secs(2));
    for c in checks {
        let vs = &k.virtual_servers[0];
        assert_eq!((c.retry, c.retry_delay(vs)), (1, Duration::from_secs(1)));
    }
}

/// keepalived's `DNS_CHECK` (check_dns.c: `type`, `name`, defaults `.` SOA, retry 3) and
/// `PING_CHECK` (check_ping.c: the common keywords only), with their TOML twins
/// `type = "dns"` (`dns_name`, `dns_type`) and `type = "ping"`; bad names and types are
/// located errors, and a ping check's `connect_port` is ignored with a warning in
/// keepalived.conf and refused in TOML.
#[test]
fn dns_and_ping_checks_are_read_from_both_formats() {
    use lb_bins::config::model::DnsCheck;
    use lb_health::probe::{DnsName, QueryType};

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("k.conf");
    std::fs::write(
        &conf,
        "virtual_server 198.18.0.250 53 {\n    protocol UDP\n\
         real_server 198.18.0.151 53 {\n\
         DNS_CHECK {\n            type aaaa\n            name example.test.\n            connect_timeout 2\n        }\n\
         DNS_CHECK {\n            connect_port 5353\n        }\n\
         PING_CHECK {\n            connect_ip 198.18.0.152\n            retry 2\n        }\n\
         }\n}\n",
    )
    .unwrap();
    let (k, kw) = ok(&conf);
    assert!(kw.is_empty(), "{kw:?}");
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n\
         [[virtual_server.backend.check]]\ntype = \"dns\"\ndns_type = \"AAAA\"\ndns_name = \"example.test\"\nconnect_timeout = 2\n\
         [[virtual_server.backend.check]]\ntype = \"dns\"\nconnect_port = 5353\n\
         [[virtual_server.backend.check]]\ntype = \"ping\"\nconnect_ip = \"198.18.0.152\"\nretry = 2\n",
    );
    let checks = &k.virtual_servers[0].backends[0].checks;
    assert_eq!(checks, &t.virtual_servers[0].backends[0].checks);
    assert_eq!(
        checks[0].kind,
        CheckKind::Dns(DnsCheck {
            name: "example.test".parse::<DnsName>().unwrap(),
            qtype: QueryType::AAAA,
        })
    );
    assert_eq!(checks[0].connect_timeout, Duration::from_secs(2));
    assert_eq!(checks[1].kind, CheckKind::Dns(DnsCheck::default()));
    assert_eq!(checks[1].connect_port, Some(5353));
    assert_eq!(checks[2].kind, CheckKind::Ping);
    assert_eq!(checks[2].connect_ip, Some("198.18.0.152".parse().unwrap()));
    assert_eq!(checks[2].retry, 2);

    let e = errors(
        "bad.conf",
        "virtual_server 198.18.0.250 53 {\n    protocol UDP\n\
         real_server 198.18.0.151 53 {\n\
         DNS_CHECK {\n            type SRV\n            name a..b\n        }\n\
         }\n}\n",
    )
    .join("\n");
    assert!(
        e.contains("bad.conf:5:18: invalid type: unknown DNS query type \"SRV\""),
        "{e}"
    );
    assert!(
        e.contains("bad.conf:6:18: invalid name: DNS name \"a..b\": has an empty label"),
        "{e}"
    );
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "virtual_server 198.18.0.250 53 {\n    protocol UDP\n\
         real_server 198.18.0.151 53 {\n\
         PING_CHECK {\n            connect_port 7\n        }\n\
         }\n}\n",
    )
    .unwrap();
    let (_, w) = ok(&bad);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().contains(
            "bad.conf:5:13: warning: `connect_port` in PING_CHECK is ignored: ICMP has no ports"
        ),
        "{w:?}"
    );

    for (check, want) in [
        (
            "type = \"ping\"\nconnect_port = 7\n",
            "connect_port 7 does not apply to a ping check (ICMP has no ports)",
        ),
        (
            "type = \"dns\"\ndns_type = \"SRV\"\n",
            "unknown DNS query type \"SRV\"",
        ),
        (
            "type = \"dns\"\ndns_name = \"a..b\"\n",
            "has an empty label",
        ),
        (
            "type = \"tcp\"\ndns_name = \"a\"\n",
            "dns_name and dns_type apply to dns checks, not tcp",
        ),
    ] {
        let text = format!(
            "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n\
             [[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n\
             [[virtual_server.backend.check]]\n{check}"
        );
        let e = errors("n.toml", &text).join("\n");
        assert!(e.contains(want), "{check}: {e}");
        assert!(e.starts_with("n.toml:"), "{e}");
    }
}

/// Bad `UDP_CHECK` input is refused with `file:line:column` in both formats: hex that does
/// not parse (a wildcard in the payload included), lengths out of 0..=65535, min above max,
/// and UDP keys on another kind of check.
#[test]
fn udp_check_errors_are_located() {
    let conf = |body: &str| {
        format!(
            "virtual_server 198.18.0.250 53 {{\n    protocol UDP\n    real_server 198.18.0.151 53 {{\n        UDP_CHECK {{\n{body}        }}\n    }}\n}}\n"
        )
    };
    assert_eq!(
        errors("k.conf", &conf("            payload 01 0g\n")),
        ["k.conf:5:21: payload: invalid hex string \"01 0g\": 'g' at offset 4 is not a hex digit (0-9, a-f, A-F)"]
    );
    assert_eq!(
        errors("k.conf", &conf("            payload 0x01\n")),
        ["k.conf:5:21: payload: invalid hex string \"0x01\": wildcard 'x' at offset 1: wildcards are for replies, not payloads"]
    );
    assert_eq!(
        errors("k.conf", &conf("            payload\n")),
        ["k.conf:5:13: `payload` needs a hex string"]
    );
    assert_eq!(
        errors("k.conf", &conf("            require_reply 01 zz\n")),
        ["k.conf:5:27: require_reply: invalid hex string \"01 zz\": 'z' at offset 3 is not a hex digit (0-9, a-f, A-F, x for any)"]
    );
    assert_eq!(
        errors("k.conf", &conf("            max_reply_length 65536\n")),
        ["k.conf:5:30: max_reply_length 65536 is out of range 0..=65535"]
    );
    assert_eq!(
        errors(
            "k.conf",
            &conf("            require_reply 01\n            min_reply_length 10\n            max_reply_length 4\n")
        ),
        ["k.conf:6:30: min_reply_length 10 is above max_reply_length 4: every reply would fail"]
    );
    let toml = |check: &str| {
        format!(
            "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n[[virtual_server.backend.check]]\n{check}"
        )
    };
    assert_eq!(
        errors("n.toml", &toml("type = \"udp\"\npayload = \"01 0g\"\n")),
        ["n.toml:8:11: payload: invalid hex string \"01 0g\": 'g' at offset 4 is not a hex digit (0-9, a-f, A-F)"]
    );
    assert_eq!(
        errors("n.toml", &toml("type = \"udp\"\nreply = \"\"\n")),
        ["n.toml:8:9: reply: invalid hex string \"\": no octet"]
    );
    assert_eq!(
        errors(
            "n.toml",
            &toml("type = \"udp\"\nreply = \"01\"\nmin_reply_length = 10\nmax_reply_length = 4\n")
        ),
        ["n.toml:9:20: min_reply_length 10 is above max_reply_length 4: every reply would fail"]
    );
    let e = errors(
        "n.toml",
        &toml("type = \"udp\"\nmax_reply_length = 65536\n"),
    );
    assert!(e[0].starts_with("n.toml:8:20: "), "{e:?}");
    let e = errors(
        "n.toml",
        &toml("type = \"udp\"\nrequire_reply = false\nreply = \"01\"\n"),
    );
    assert!(
        e[0].starts_with("n.toml:6:") && e[0].contains("reply needs require_reply"),
        "{e:?}"
    );
    let e = errors("n.toml", &toml("type = \"tcp\"\npayload = \"01\"\n"));
    assert!(
        e[0].starts_with("n.toml:6:") && e[0].contains("apply to udp checks, not tcp"),
        "{e:?}"
    );
}

/// `no_accept` is enforced now (nftables drop rules while MASTER), so a virtual server on
/// that instance's VIP would get no client: a located warning says so; `accept`, an owner
/// (priority 255) or a virtual server on another address draw none.
#[test]
fn no_accept_warns_about_virtual_servers_on_its_vips() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    let conf = |accept: &str, prio: u8, vs: &str| {
        format!(
            "vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n    priority {prio}\n    {accept}\n    virtual_ipaddress {{\n        198.18.0.250/24\n    }}\n}}\n\
             virtual_server {vs} 80 {{\n    protocol TCP\n    real_server 198.18.0.151 80 {{\n    }}\n}}\n"
        )
    };
    let warned = |text: String| {
        std::fs::write(&k, text).unwrap();
        ok(&k)
            .1
            .iter()
            .map(ToString::to_string)
            .filter(|w| w.contains("no_accept"))
            .collect::<Vec<_>>()
    };
    let w = warned(conf("no_accept", 100, "198.18.0.250"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(
            "k.conf:5:5: warning: accept mode off (no_accept, or vrrp_strict): while MASTER this node drops traffic to 198.18.0.250"
        ),
        "{w:?}"
    );
    assert!(warned(conf("accept", 100, "198.18.0.250")).is_empty());
    assert!(warned(conf("no_accept", 255, "198.18.0.250")).is_empty());
    assert!(warned(conf("no_accept", 100, "198.18.0.251")).is_empty());
}

/// Loads `main.conf` of `dir`: the model and warnings, or the errors, as strings with the
/// directory stripped.
fn load_in(dir: &Path) -> Result<(Config, Vec<String>), Vec<String>> {
    let prefix = format!("{}/", dir.display());
    let strip = |s: String| s.replace(&prefix, "");
    match config::load(&dir.join("main.conf")) {
        Ok((c, w)) => Ok((c, w.into_iter().map(|w| strip(w.to_string())).collect())),
        Err(e) => Err(e.into_iter().map(|e| strip(e.to_string())).collect()),
    }
}

/// keepalived's include variants read files as `include` does, each with its checks
/// (keepalived.conf(5), `include_check`; tried with keepalived 2.2.7 `-t`): `includer` only
/// refuses what it cannot read (a directory), `includem` also a missing file named without
/// wildcards, `includew` also a pattern matching nothing, `includeb` a brace alternative
/// without wildcards naming no file, `includea` everything. They used to be unknown
/// keywords: a warning, and nothing they named was read.
#[test]
fn include_variants_read_files_with_keepalived_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("vi.conf"), BASE_INSTANCE).unwrap();
    std::fs::create_dir(d.join("sub.d")).unwrap();
    for kw in [
        "include", "includer", "includem", "includew", "includeb", "includea",
    ] {
        std::fs::write(d.join("main.conf"), format!("{kw} vi.conf\n")).unwrap();
        let (cfg, w) = load_in(d).unwrap_or_else(|e| panic!("{kw}: {e:?}"));
        assert!(w.is_empty(), "{kw}: {w:?}");
        assert_eq!(cfg.vrrp_instances.len(), 1, "{kw}");
    }
    // (keyword, pattern, expected: Ok(warning) or Err(error)), all at main.conf:1:10.
    let cases: &[(&str, &str, Result<&str, &str>)] = &[
        (
            "include",
            "missing.conf",
            Err("included file missing.conf does not exist"),
        ),
        (
            "includer",
            "missing.conf",
            Ok("included file missing.conf does not exist; nothing included"),
        ),
        (
            "includem",
            "missing.conf",
            Err("included file missing.conf does not exist"),
        ),
        (
            "includew",
            "missing.conf",
            Err("included file missing.conf does not exist"),
        ),
        (
            "includeb",
            "missing.conf",
            Ok("included file missing.conf does not exist; nothing included"),
        ),
        (
            "includea",
            "missing.conf",
            Err("included file missing.conf does not exist"),
        ),
        (
            "includer",
            "none*.conf",
            Ok("includer \"none*.conf\" matches no file; nothing included"),
        ),
        (
            "includem",
            "none*.conf",
            Ok("includem \"none*.conf\" matches no file; nothing included"),
        ),
        (
            "includew",
            "none*.conf",
            Err("includew \"none*.conf\" matches no file"),
        ),
        (
            "includea",
            "none*.conf",
            Err("includea \"none*.conf\" matches no file"),
        ),
        (
            "includem",
            "{m1,m2}.conf",
            Ok("includem \"{m1,m2}.conf\" matches no file; nothing included"),
        ),
        (
            "includeb",
            "{m1,m2}.conf",
            Err("includeb \"{m1,m2}.conf\" matches no file"),
        ),
        (
            "include",
            "{vi,m2}.conf",
            Ok("include \"{vi,m2}.conf\": \"m2.conf\" names no file"),
        ),
        (
            "includeb",
            "{vi,m2}.conf",
            Err("includeb \"{vi,m2}.conf\": \"m2.conf\" names no file"),
        ),
        (
            "includea",
            "{vi,m2}.conf",
            Err("includea \"{vi,m2}.conf\": \"m2.conf\" names no file"),
        ),
        (
            "include",
            "sub.d",
            Ok("include: sub.d is a directory, not a file; skipped"),
        ),
        (
            "includer",
            "sub.d",
            Err("includer: sub.d is a directory, not a file"),
        ),
    ];
    for (kw, pattern, expected) in cases {
        std::fs::write(d.join("main.conf"), format!("{kw} {pattern}\n")).unwrap();
        let col = kw.len() + 2;
        match (load_in(d), expected) {
            (Ok((_, w)), Ok(m)) => {
                assert_eq!(
                    w,
                    [format!("main.conf:1:{col}: warning: {m}")],
                    "{kw} {pattern}"
                )
            }
            (Err(e), Err(m)) => {
                assert_eq!(e, [format!("main.conf:1:{col}: {m}")], "{kw} {pattern}")
            }
            (got, _) => panic!("{kw} {pattern}: {got:?}"),
        }
    }
    // An alternative with a wildcard may match nothing, even for includeb.
    std::fs::write(d.join("main.conf"), "includeb {vi,none*}.conf\n").unwrap();
    let (cfg, w) = load_in(d).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.vrrp_instances.len(), 1);
}

/// Files that include one another are refused where the cycle closes, and the number of
/// files read is capped: three files each including `*.conf` used to be read until the
/// depth limit, about 43 million parses (`lb-node --check` still running after 30 s, and a
/// reload stalling the daemon). keepalived 2.2.7 loops forever on them.
#[test]
fn include_cycles_and_fan_out_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["main", "b", "c"] {
        std::fs::write(d.join(format!("{f}.conf")), "include *.conf\n").unwrap();
    }
    let start = tokio::time::Instant::now();
    let mut e = load_in(d).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    e.sort();
    let cycle = |at: &str, file: &str| {
        format!("{at}.conf:1:9: include cycle: {file}.conf is already being read, not read again")
    };
    let mut expected = Vec::new();
    for (at, files) in [("b", ["b", "c", "main"]), ("c", ["b", "c", "main"])] {
        for file in files {
            expected.push(cycle(at, file));
        }
    }
    expected.push(cycle("main", "main"));
    assert_eq!(e, expected);
    // No cycle, but 10 + 100 + 1000 inclusions: refused past 1000.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for level in ["l1", "l2", "l3"] {
        std::fs::create_dir(d.join(level)).unwrap();
    }
    std::fs::write(d.join("main.conf"), "include l1/*.conf\n").unwrap();
    for i in 0..10 {
        std::fs::write(d.join(format!("l1/{i}.conf")), "include ../l2/*.conf\n").unwrap();
        std::fs::write(d.join(format!("l2/{i}.conf")), "include ../l3/*.conf\n").unwrap();
        std::fs::write(d.join(format!("l3/{i}.conf")), "! empty\n").unwrap();
    }
    // 10 l1 files, each including 10 l2 files, each including 10 l3 files: 1110 inclusions;
    // l1/9.conf is the 1000th (9 × 111 + 1), and its first include goes past the cap.
    assert_eq!(
        load_in(d).unwrap_err(),
        ["l1/9.conf:1:9: more than 1000 files included: not reading any more"]
    );
}

/// keepalived replaces its predefined parameters (`${_PWD}`, `$_PWD ` followed by a blank,
/// `_INSTANCE`, `_RANDOM`, `_HASH`, `_BANG`) and repeats `~SEQ` lines; lb-node does
/// neither, and refuses them where they are written. `script "${_PWD}/check.sh"` used to
/// keep the text (sh ran `/check.sh`), and a `~SEQ` line was split into unrelated
/// statements with a valid result of one backend instead of three. Other `${NAME}`
/// stay as written, as keepalived leaves names it has no definition for (lb-node reads
/// none): in a quoted command with a warning, in a bare word an error (keepalived splits
/// the word at its braces).
#[test]
fn keepalived_parameters_and_sequences_are_refused() {
    let vs =
        |body: &str| format!("virtual_server 198.18.0.250 80 {{\n    protocol TCP\n{body}}}\n");
    let script = |line: &str| format!("vrrp_script chk {{\n    {line}\n}}\n");
    assert_eq!(
        errors("k.conf", &script("script \"${_PWD}/check.sh\"")),
        ["k.conf:2:13: `${_PWD}`: keepalived replaces it by its value, lb-node does not: keepalived parameter expansion is not supported (lb-node reads no parameter definitions): write the value out"]
    );
    assert_eq!(
        errors("k.conf", &script("script /bin/true $_HASH")),
        ["k.conf:2:22: `$_HASH`: keepalived replaces it by its value, lb-node does not: keepalived parameter expansion is not supported (lb-node reads no parameter definitions): write the value out"]
    );
    assert_eq!(
        errors("k.conf", &script("script \"/bin/echo ${_RANDOM 1 10}\"")),
        ["k.conf:2:23: `${_RANDOM 1 10}`: keepalived replaces it by its value, lb-node does not: keepalived parameter expansion is not supported (lb-node reads no parameter definitions): write the value out"]
    );
    assert_eq!(
        errors("k.conf", &script("script ${CHECKS}/check.sh")),
        ["k.conf:2:12: `${CHECKS}`: keepalived parameter expansion is not supported (lb-node reads no parameter definitions): write the value out"]
    );
    assert_eq!(
        errors(
            "k.conf",
            &vs("    ~SEQ(N, 3, 5) real_server 198.18.0.${N} 80 { weight 2 }\n")
        ),
        [
            "k.conf:3:5: `~SEQ(…)`: keepalived sequence expansion (~SEQ, ~LST) is not supported: write each line out",
            "k.conf:3:40: `${N}`: keepalived parameter expansion is not supported (lb-node reads no parameter definitions): write the value out",
        ]
    );
    assert_eq!(
        errors(
            "k.conf",
            &vs("    ~LST(N, 2, 3) real_server 198.18.0.2 8$N {\n        weight 2\n    }\n    real_server 198.18.0.9 80\n")
        ),
        ["k.conf:3:5: `~LST(…)`: keepalived sequence expansion (~SEQ, ~LST) is not supported: write each line out"]
    );
    // What keepalived leaves as written: `$_PWD` not followed by a blank, a name it has no
    // definition for.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(
        &path,
        script("script \"/bin/sh -c 'test -d $_PWD/x || echo ${HOME}'\""),
    )
    .unwrap();
    let (cfg, w) = ok(&path);
    assert_eq!(
        cfg.vrrp_scripts[0].script,
        "/bin/sh -c 'test -d $_PWD/x || echo ${HOME}'"
    );
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [format!("{}:2:49: warning: `${{HOME}}` is kept as written, as keepalived does without a definition of HOME (lb-node reads no parameter definitions)", path.display())]
    );
}

/// Entries of a second `track_script` or `track_service` block (and `track_interface`) are
/// located at their own lines: the model's lists take both blocks, and the recorded
/// locations restarted at index 0 in each block, so an error in the second block named
/// the first block's line.
#[test]
fn repeated_track_blocks_locate_their_entries() {
    let text = "vrrp_script chk {\n    script /bin/true\n}\n\
        vrrp_instance VI_1 {\n    interface lbnet0\n    virtual_router_id 51\n\
        track_script {\n        chk\n    }\n    track_script {\n        nope\n    }\n\
        track_service {\n        198.18.0.250:80\n    }\n    track_service {\n        other\n    }\n\
        virtual_ipaddress {\n        198.18.0.250\n    }\n}\n\
        virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.2 80\n}\n";
    assert_eq!(
        errors("k.conf", text),
        [
            "k.conf:11:9: track_script names unknown vrrp_script \"nope\"",
            "k.conf:17:9: track_service names unknown virtual server \"other\"",
        ]
    );
}

/// `uthreshold 0` is no upper threshold, as in IPVS and keepalived (check_parser.c reads
/// 0..UINT_MAX; ipvsadm's `-x 0` is no limit). It was refused as "maxconn 0 would refuse
/// every connection". lb's own `maxconn 0` is still refused, as in TOML.
#[test]
fn uthreshold_zero_is_no_limit() {
    let vs = |rs: &str| {
        format!("virtual_server 198.18.0.250 80 {{\n    protocol TCP\n    real_server 198.18.0.2 80 {{\n        {rs}\n    }}\n}}\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, vs("uthreshold 0")).unwrap();
    let (cfg, w) = ok(&path);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.virtual_servers[0].backends[0].maxconn, None);
    std::fs::write(&path, vs("uthreshold 7")).unwrap();
    assert_eq!(ok(&path).0.virtual_servers[0].backends[0].maxconn, Some(7));
    assert_eq!(
        errors("k.conf", &vs("maxconn 0")),
        ["k.conf:4:17: maxconn 0 would refuse every connection (use weight 0 to drain)"]
    );
}

/// A keepalived.conf virtual server without `lb_algo` schedules with wlc, keepalived's
/// default ("no scheduler set, setting default 'wlc'"); it used rr, the TOML default,
/// which stays.
#[test]
fn keepalived_default_scheduler_is_wlc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(
        &path,
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.2 80\n}\n",
    )
    .unwrap();
    assert_eq!(ok(&path).0.virtual_servers[0].lb_algo.name(), "wlc");
    let toml = load_toml("[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n");
    assert_eq!(toml.virtual_servers[0].lb_algo.name(), "rr");
}

/// keepalived's persistence forms (check_parser.c pto_handler, pgr_handler): a bare
/// `persistence_timeout` is 360 s; a `persistence_granularity` alone turns persistence on
/// for 360 s; on an IPv6 virtual server the granularity is a prefix length 1..=128. The
/// bare timeout was refused ("needs a value"), a granularity alone left persistence off,
/// and `persistence_granularity 64` on IPv6 was refused as an IPv4 prefix.
#[test]
fn persistence_forms_follow_keepalived() {
    let vs = |listen: &str, backend: &str, body: &str| {
        format!("virtual_server {listen} 80 {{\n    protocol TCP\n{body}    real_server {backend} 80\n}}\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    let load = |text: String| {
        std::fs::write(&path, text).unwrap();
        let (cfg, w) = ok(&path);
        assert!(w.is_empty(), "{w:?}");
        cfg.virtual_servers[0].clone()
    };
    let v = load(vs(
        "198.18.0.250",
        "198.18.0.2",
        "    persistence_timeout\n",
    ));
    assert_eq!(v.persistence_timeout, Some(Duration::from_secs(360)));
    let v = load(vs(
        "198.18.0.250",
        "198.18.0.2",
        "    persistence_granularity 255.255.255.0\n",
    ));
    assert_eq!(v.persistence_timeout, Some(Duration::from_secs(360)));
    assert_eq!(v.persistence_granularity.v4_prefix, 24);
    // Written after the granularity, the timeout is kept.
    let v = load(vs(
        "198.18.0.250",
        "198.18.0.2",
        "    persistence_granularity 255.255.255.0\n    persistence_timeout 50\n",
    ));
    assert_eq!(v.persistence_timeout, Some(Duration::from_secs(50)));
    let v = load(vs(
        "2001:db8::1",
        "2001:db8::2",
        "    persistence_granularity 64\n",
    ));
    assert_eq!(v.persistence_timeout, Some(Duration::from_secs(360)));
    assert_eq!(
        (
            v.persistence_granularity.v4_prefix,
            v.persistence_granularity.v6_prefix
        ),
        (32, 64)
    );
    for bad in ["0", "129", "ffff:ffff::"] {
        let e = errors(
            "k.conf",
            &vs(
                "2001:db8::1",
                "2001:db8::2",
                &format!("    persistence_granularity {bad}\n"),
            ),
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("k.conf:3:29: persistence_granularity "),
            "{e:?}"
        );
    }
    // `persistence_timeout 0`: keepalived says "persistence_timeout invalid" and runs
    // without persistence; it was an error that kept lb-node from starting.
    std::fs::write(
        &path,
        vs("198.18.0.250", "198.18.0.2", "    persistence_timeout 0\n"),
    )
    .unwrap();
    let (cfg, w) = ok(&path);
    assert_eq!(cfg.virtual_servers[0].persistence_timeout, None);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .ends_with("k.conf:3:25: warning: persistence_timeout 0 is invalid: ignored (no persistence), as keepalived ignores it"),
        "{w:?}"
    );
}

/// A real or sorry server written without a port (or with port 0) takes its virtual
/// server's, as keepalived does (check_data.c validate_check_config, for NAT); they were
/// refused ("needs an address and a port"). A virtual server still needs its port.
#[test]
fn real_and_sorry_servers_default_to_the_virtual_server_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(
        &path,
        "virtual_server 198.18.0.250 8080 {\n    protocol TCP\n    real_server 198.18.0.2 {\n        weight 2\n    }\n    real_server 198.18.0.3 0\n    real_server 198.18.0.4 81\n    sorry_server 198.18.0.9\n}\n",
    )
    .unwrap();
    let (cfg, w) = ok(&path);
    assert!(w.is_empty(), "{w:?}");
    let addrs: Vec<String> = cfg.virtual_servers[0]
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    assert_eq!(
        addrs,
        [
            "198.18.0.2:8080",
            "198.18.0.3:8080",
            "198.18.0.4:81",
            "198.18.0.9:8080"
        ]
    );
    assert_eq!(cfg.virtual_servers[0].backends[0].weight.get(), 2);
    assert!(cfg.virtual_servers[0].backends[3].backup);
    assert_eq!(
        errors(
            "k.conf",
            "virtual_server 198.18.0.250 {\n    protocol TCP\n}\n"
        ),
        ["k.conf:1:1: `virtual_server` needs an address and a port"]
    );
}

/// What a check inherits follows keepalived's validate_check_config (check_data.c): the
/// check's own setting, else its real server's, else its virtual server's. A real server's
/// `connect_timeout`, `alpha` and `virtualhost` were ignored (with a warning, or "has no
/// effect"), a virtual server's `connect_timeout` did not reach the checks (5 s), and a real
/// server's `inhibit_on_failure no` could not turn off its virtual server's.
#[test]
fn checks_inherit_from_real_and_virtual_servers_as_keepalived() {
    let text = "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    connect_timeout 2\n    virtualhost vs.example\n    inhibit_on_failure\n\
        real_server 198.18.0.2 80 {\n        connect_timeout 1\n        alpha\n        virtualhost rs.example\n        inhibit_on_failure no\n\
        TCP_CHECK {\n        }\n        HTTP_GET {\n            url {\n                path /\n            }\n        }\n\
        HTTP_GET {\n            connect_timeout 4\n            virtualhost own.example\n            alpha off\n            url {\n                path /\n            }\n        }\n    }\n\
        real_server 198.18.0.3 80 {\n        HTTP_GET {\n            url {\n                path /\n            }\n        }\n\
        MISC_CHECK {\n            misc_path /bin/true\n        }\n    }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, text).unwrap();
    let (cfg, w) = ok(&path);
    assert!(w.is_empty(), "{w:?}");
    let vs = &cfg.virtual_servers[0];
    assert_eq!(vs.connect_timeout, Duration::from_secs(2));
    let host = |c: &config::model::HealthCheck| match &c.kind {
        CheckKind::Http(h) => h.virtualhost.clone(),
        _ => None,
    };
    let [rs2, rs3] = [&vs.backends[0], &vs.backends[1]];
    let timeouts: Vec<u64> = rs2
        .checks
        .iter()
        .map(|c| c.connect_timeout.as_secs())
        .collect();
    assert_eq!(timeouts, [1, 1, 4]);
    assert_eq!(
        rs2.checks.iter().map(|c| c.alpha).collect::<Vec<_>>(),
        [Some(true), Some(true), Some(false)]
    );
    assert!(rs2.starts_down(vs));
    assert_eq!(host(&rs2.checks[1]).as_deref(), Some("rs.example"));
    assert_eq!(host(&rs2.checks[2]).as_deref(), Some("own.example"));
    assert!(!rs2.inhibit_on_failure);
    assert_eq!(rs3.checks[0].connect_timeout, Duration::from_secs(2));
    assert_eq!(host(&rs3.checks[0]).as_deref(), Some("vs.example"));
    assert_eq!(rs3.checks[0].alpha, None);
    assert!(!rs3.starts_down(vs));
    assert!(rs3.inhibit_on_failure);
    // A MISC_CHECK opens no connection: nothing to inherit.
    assert_eq!(rs3.checks[1].connect_timeout, Duration::from_secs(5));
}

/// `status_code` takes keepalived's list of codes and ranges (keepalived.conf(5):
/// `status_code <INTEGER|RANGE> [<INTEGER|RANGE>] ...`), all of which pass; TOML takes a
/// number or a string of them. A range was refused and a list kept only its first code,
/// with a warning.
#[test]
fn status_code_takes_ranges_and_lists() {
    let vs = |codes: &str| {
        format!("virtual_server 198.18.0.250 80 {{\n    protocol TCP\n    real_server 198.18.0.2 80 {{\n        HTTP_GET {{\n            url {{\n                path /\n                status_code {codes}\n            }}\n        }}\n    }}\n}}\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, vs("200-299 301 404-404")).unwrap();
    let (cfg, w) = ok(&path);
    assert!(w.is_empty(), "{w:?}");
    let CheckKind::Http(h) = &cfg.virtual_servers[0].backends[0].checks[0].kind else {
        panic!()
    };
    let set = h.url[0].status_code.as_ref().unwrap();
    assert_eq!(set.to_string(), "200-299,301,404");
    assert!(set.contains(204) && set.contains(301) && set.contains(404) && !set.contains(302));
    for (bad, word, col) in [
        ("200-", "200-", 29),
        ("200 99", "99", 33),
        ("200,302", "200,302", 29),
        ("300-200", "300-200", 29),
    ] {
        assert_eq!(
            errors("k.conf", &vs(bad)),
            [format!("k.conf:7:{col}: status_code {word:?} is neither an HTTP status nor a range of them in 100..=599 (200, 200-299)")],
            "{bad}"
        );
    }
    let toml = |codes: &str| {
        format!("[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[[virtual_server.backend]]\naddress = \"198.18.0.2:80\"\n[[virtual_server.backend.check]]\ntype = \"http\"\nurl = [{{ path = \"/\", status_code = {codes} }}]\n")
    };
    for (codes, shown) in [("200", "200"), ("\"200-299,302\"", "200-299,302")] {
        let cfg = load_toml(&toml(codes));
        let CheckKind::Http(h) = &cfg.virtual_servers[0].backends[0].checks[0].kind else {
            panic!()
        };
        assert_eq!(h.url[0].status_code.as_ref().unwrap().to_string(), shown);
    }
    assert_eq!(
        errors("lb.toml", &toml("\"2xx\"")),
        ["lb.toml:7:36: status_code \"2xx\" is not a list of HTTP statuses and ranges in 100..=599 (200, \"200-299,302\")"]
    );
}

/// Notify scripts are `SCRIPT [USER [GROUP]]`, as keepalived's notify_script_init reads
/// them (keepalived 2.2.7 -d: `notify_master /tmp/kt/master.sh nobody` is script
/// '/tmp/kt/master.sh' uid:gid 65534:65534): a quoted command may hold arguments; the next
/// words are the user and group it runs as. They used to be appended to the command, which
/// then ran as lb-node's user with extra arguments. An unknown user or group is an error
/// at its word (keepalived drops the script). TOML: a string or `{ command, user, group }`.
#[test]
fn notify_scripts_take_a_user_and_group() {
    let text = "vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n    notify_master /bin/g.sh nobody\n}\n\
        vrrp_instance VI_1 {\n    interface lbnet0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.250\n    }\n\
        notify_master /tmp/kt/master.sh nobody\n    notify \"/tmp/kt/master.sh arg1\" nobody nogroup\n    notify_stop \"/bin/stop.sh a b\"\n}\n\
        vrrp_instance VI_2 {\n    interface lbnet0\n    virtual_router_id 52\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
        virtual_server 198.18.0.250 80 {\n    protocol TCP\n    quorum_up \"/bin/q.sh up\" nobody nogroup\n\
        real_server 198.18.0.2 80 {\n        notify_down /bin/rs.sh nobody\n    }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, text).unwrap();
    let (cfg, w) = ok(&path);
    assert!(w.is_empty(), "{w:?}");
    let n = |s: &Option<config::model::NotifyScript>| {
        let s = s.as_ref().unwrap();
        (s.command.clone(), s.user.clone(), s.group.clone())
    };
    let some = |s: &str| Some(s.to_owned());
    let vi = &cfg.vrrp_instances[0];
    assert_eq!(
        n(&vi.notify_master),
        ("/tmp/kt/master.sh".into(), some("nobody"), None)
    );
    assert_eq!(
        n(&vi.notify),
        (
            "/tmp/kt/master.sh arg1".into(),
            some("nobody"),
            some("nogroup")
        )
    );
    assert_eq!(n(&vi.notify_stop), ("/bin/stop.sh a b".into(), None, None));
    assert_eq!(
        n(&cfg.sync_groups[0].notify_master),
        ("/bin/g.sh".into(), some("nobody"), None)
    );
    let vs = &cfg.virtual_servers[0];
    assert_eq!(
        n(&vs.quorum_up),
        ("/bin/q.sh up".into(), some("nobody"), some("nogroup"))
    );
    assert_eq!(
        n(&vs.backends[0].notify_down),
        ("/bin/rs.sh".into(), some("nobody"), None)
    );

    // Unquoted arguments are users (keepalived: "Script user 'arg1' does not exist").
    let instance = |line: &str| {
        format!("vrrp_instance VI_1 {{\n    interface lbnet0\n    virtual_router_id 51\n    virtual_ipaddress {{\n        198.18.0.250\n    }}\n    {line}\n}}\n")
    };
    assert_eq!(
        errors("k.conf", &instance("notify_fault /tmp/kt/master.sh arg1")),
        ["k.conf:7:36: notify_fault: unknown user \"arg1\""]
    );
    assert_eq!(
        errors(
            "k.conf",
            &instance("notify_backup /x.sh nobody no-such-group")
        ),
        ["k.conf:7:32: notify_backup: unknown group \"no-such-group\""]
    );
    // keepalived ignores a fourth word; so does lb-node, with a warning.
    std::fs::write(&path, instance("notify_master /x.sh nobody nogroup extra")).unwrap();
    let (cfg, w) = ok(&path);
    assert_eq!(n(&cfg.vrrp_instances[0].notify_master).2, some("nogroup"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .contains(":7:40: warning: `notify_master` takes a command, a user and a group"),
        "{w:?}"
    );

    // TOML: a string or a table.
    let toml = |notify: &str| {
        format!("[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"lbnet0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.0.250\"]\n{notify}\n")
    };
    let cfg = load_toml(&toml("notify_master = { command = \"/x.sh a\", user = \"nobody\", group = \"nogroup\" }\nnotify = \"/y.sh\""));
    assert_eq!(
        n(&cfg.vrrp_instances[0].notify_master),
        ("/x.sh a".into(), some("nobody"), some("nogroup"))
    );
    assert_eq!(
        n(&cfg.vrrp_instances[0].notify),
        ("/y.sh".into(), None, None)
    );
    let e = errors(
        "lb.toml",
        &toml("notify_master = { command = \"/x.sh\", user = \"no-such-user-lb\" }"),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("lb.toml:6:")
            && e[0].ends_with("notify_master: unknown user \"no-such-user-lb\""),
        "{e:?}"
    );
    let e = errors(
        "lb.toml",
        &toml("notify_master = { command = \"/x.sh\", users = \"nobody\" }"),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("lb.toml:6:") && e[0].contains("unknown field `users`"),
        "{e:?}"
    );
}

/// A notify script given twice keeps the first, as keepalived does ("notify_backup script
/// already specified - ignoring", vrrp_parser.c and check_parser.c; tried with keepalived
/// 2.2.7 for instances and sync groups): the last one used to win, and the warning said
/// so. Other settings still keep the last.
#[test]
fn repeated_notify_scripts_keep_the_first() {
    let text = "vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n    notify /bin/g1.sh\n    notify /bin/g2.sh\n}\n\
        vrrp_instance VI_1 {\n    interface lbnet0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.250\n    }\n    notify_master /bin/m1.sh\n\
        \x20   notify_master /bin/m2.sh\n}\n\
        vrrp_instance VI_2 {\n    interface lbnet0\n    virtual_router_id 52\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
        virtual_server 198.18.0.250 80 {\n    protocol TCP\n    quorum_up /bin/q1.sh\n    quorum_up /bin/q2.sh\n\
        real_server 198.18.0.2 80 {\n        notify_down /bin/d1.sh\n        notify_down /bin/d2.sh\n    }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, text).unwrap();
    let (cfg, w) = ok(&path);
    let cmd = |n: &Option<config::model::NotifyScript>| n.as_ref().unwrap().command.clone();
    assert_eq!(cmd(&cfg.sync_groups[0].notify), "/bin/g1.sh");
    assert_eq!(cmd(&cfg.vrrp_instances[0].notify_master), "/bin/m1.sh");
    assert_eq!(cmd(&cfg.virtual_servers[0].quorum_up), "/bin/q1.sh");
    assert_eq!(
        cmd(&cfg.virtual_servers[0].backends[0].notify_down),
        "/bin/d1.sh"
    );
    let prefix = format!("{}:", path.display());
    let w: Vec<String> = w
        .iter()
        .map(|w| w.to_string().replace(&prefix, ""))
        .collect();
    let again = |at: &str, kw: &str, first: &str| {
        format!("{at}: warning: `{kw}` is set again; the first value wins, as in keepalived (set at {first}): this one is ignored")
    };
    assert_eq!(
        w,
        [
            again("7:5", "notify", "6:5"),
            again("16:5", "notify_master", "15:5"),
            again("28:5", "quorum_up", "27:5"),
            again("31:9", "notify_down", "30:9"),
        ]
    );
}

/// `authentication` without `auth_type` is no authentication, as in keepalived 2.2.7
/// ("Authentication type = none", without a word), now with a warning at the block: a
/// password written without its type was dropped silently.
#[test]
fn authentication_without_type_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    for (block, message) in [
        ("auth_pass secret", "authentication has auth_pass but no auth_type: no authentication, as in keepalived (write auth_type PASS to use the password)"),
        ("", "authentication has no auth_type: no authentication, as in keepalived"),
    ] {
        std::fs::write(
            &path,
            BASE_INSTANCE.replace(
                "    priority 100\n",
                &format!("    priority 100\n    authentication {{\n        {block}\n    }}\n"),
            ),
        )
        .unwrap();
        let (cfg, w) = ok(&path);
        assert_eq!(cfg.vrrp_instances[0].authentication, None);
        let w: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(w, [format!("{}:5:5: warning: {message}", path.display())]);
    }
}

/// Settings keepalived acts on that lb-node once warned about and ignored are applied
/// now, with no warning; a real server's or sorry server's `lvs_method DR` is refused as a
/// virtual server's is (it was an unknown keyword, or ignored).
#[test]
fn settings_keepalived_acts_on_are_applied() {
    let text = "global_defs {\n    script_user nobody\n}\n\
        vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n    track_interface {\n        eth1\n    }\n}\n\
        vrrp_instance VI_1 {\n    interface lbnet0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.250\n    }\n}\n\
        vrrp_instance VI_2 {\n    interface lbnet0\n    virtual_router_id 52\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
        virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.2 80 {\n        MISC_CHECK {\n            misc_path /bin/true\n            user nobody\n        }\n\
        HTTP_GET {\n            url {\n                path /\n                virtualhost u.example\n            }\n        }\n    }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, text).unwrap();
    let (cfg, w) = ok(&path);
    // Each used to be warned and ignored; all are applied now: script_user, MISC_CHECK's
    // user, a url's virtualhost, and the sync group's track_interface, which every member
    // tracks (weight 0: its failure faults the group).
    assert!(w.is_empty(), "{w:?}");
    for vi in &cfg.vrrp_instances {
        assert_eq!(vi.track_interface.len(), 1, "{}", vi.name);
        assert_eq!(
            (
                vi.track_interface[0].interface.as_str(),
                vi.track_interface[0].weight
            ),
            ("eth1", 0)
        );
    }
    let dr = "lb_kind DR is not supported: lb-node is a full proxy (it terminates connections and opens its own to the backends, like NAT); use lb_kind NAT";
    assert_eq!(
        errors(
            "k.conf",
            "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.2 80 {\n        lvs_method DR\n    }\n    sorry_server 198.18.0.9 80\n    sorry_server_lvs_method DR\n}\n"
        ),
        [format!("k.conf:4:20: {dr}"), format!("k.conf:7:29: {dr}")]
    );
}

/// keepalived's `vrrp_track_process` and `track_file` (and its old name
/// `vrrp_track_file`) are read with every option, the instance's `weight … reverse`
/// overrides, and each mistake is an error where it is written.
#[test]
fn track_process_and_track_file_are_read_and_checked() {
    use lb_bins::config::model::ParamMatch;
    let text = "vrrp_track_process web {\n    process /usr/sbin/nginx -g \"daemon off;\"\n    param_match initial\n    quorum 2\n    quorum_max 4\n    delay 1.5\n    weight 10 reverse\n}\nvrrp_track_file maint {\n    file /run/lb/maint\n    weight -3\n    init_file 7 overwrite\n}\n"
        .to_owned()
        + &BASE_INSTANCE.replace(
            "    priority 100\n",
            "    priority 100\n    track_process {\n        web weight -4 noreverse\n    }\n    track_file {\n        maint\n    }\n",
        );
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    std::fs::write(&k, &text).unwrap();
    let (c, w) = ok(&k);
    assert!(w.is_empty(), "{w:?}");
    let p = &c.vrrp_track_processes[0];
    assert_eq!(p.process, "/usr/sbin/nginx");
    assert_eq!(p.params, ["-g", "daemon off;"]);
    assert_eq!(p.param_match, Some(ParamMatch::Initial));
    assert_eq!((p.quorum, p.quorum_max), (Some(2), Some(4)));
    assert_eq!(p.fork_delay, Duration::from_millis(1500));
    assert_eq!(p.terminate_delay, Duration::from_millis(1500));
    assert_eq!((p.weight, p.reverse), (10, true));
    let f = &c.track_files[0];
    assert_eq!(f.file, Path::new("/run/lb/maint"));
    assert_eq!(
        (f.weight, f.init_file, f.init_overwrite),
        (-3, Some(7), true)
    );
    let vi = &c.vrrp_instances[0];
    assert_eq!(vi.track_process[0].weight, Some(-4));
    assert_eq!(vi.track_process[0].reverse, Some(false));
    assert_eq!(vi.track_file[0].file, "maint");
    // The same in TOML.
    let t = load_toml(
        "[[vrrp_track_process]]\nname = \"web\"\nprocess = \"/usr/sbin/nginx\"\nparams = [\"-g\", \"daemon off;\"]\nparam_match = \"initial\"\nquorum = 2\nquorum_max = 4\nfork_delay = \"1.5s\"\nterminate_delay = \"1.5s\"\nweight = 10\nreverse = true\n\n[[track_file]]\nname = \"maint\"\nfile = \"/run/lb/maint\"\nweight = -3\ninit_file = 7\ninit_overwrite = true\n\n[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"lbnet0\"\nvirtual_router_id = 51\npriority = 100\nvirtual_ipaddress = [\"198.18.0.250\"]\ntrack_process = [{ process = \"web\", weight = -4, reverse = false }]\ntrack_file = [{ file = \"maint\" }]\n",
    );
    assert_eq!(t.vrrp_track_processes, c.vrrp_track_processes);
    assert_eq!(t.track_files, c.track_files);
    assert_eq!(t.vrrp_instances[0].track_process, vi.track_process);
    assert_eq!(t.vrrp_instances[0].track_file, vi.track_file);

    // quorum_max 0 alone: healthy while none runs (keepalived sets quorum 0 then).
    let k0 = dir.path().join("k0.conf");
    std::fs::write(
        &k0,
        "vrrp_track_process p {\n    process nginx\n    quorum_max 0\n}\n".to_owned()
            + BASE_INSTANCE,
    )
    .unwrap();
    let (c0, _) = ok(&k0);
    assert_eq!(c0.vrrp_track_processes[0].effective_quorum(), 0);
    // A sync group without sync_group_tracking_weight: keepalived would ignore a member's
    // track weights; lb-node applies them and says so where each is written.
    let ks = dir.path().join("ks.conf");
    std::fs::write(
        &ks,
        "vrrp_script s {\n    script /bin/true\n    weight -5\n}\n".to_owned()
            + &BASE_INSTANCE.replace(
                "    priority 100\n",
                "    priority 100\n    track_script {\n        s\n    }\n",
            )
            + "vrrp_sync_group G {\n    group {\n        VI_1\n    }\n}\n",
    )
    .unwrap();
    let (_, w) = ok(&ks);
    assert_eq!(w.len(), 2, "{w:?}"); // and "a single member"
    assert!(
        w[0].to_string().contains(":10:9: warning: vrrp_instance VI_1 is in vrrp_sync_group G, which has no `sync_group_tracking_weight`"),
        "{}",
        w[0]
    );
    std::fs::write(
        &ks,
        std::fs::read_to_string(&ks)
            .unwrap()
            .replace("    group {", "    sync_group_tracking_weight\n    group {"),
    )
    .unwrap();
    assert_eq!(ok(&ks).1.len(), 1);
    let bad = |body: &str, instance_tracks: &str| {
        errors(
            "k.conf",
            &(body.to_owned()
                + &BASE_INSTANCE.replace(
                    "    priority 100\n",
                    &format!("    priority 100\n{instance_tracks}"),
                )),
        )
    };
    assert_eq!(
        bad("vrrp_track_process p {\n    process nginx-with-a-long-name\n}\n", ""),
        ["k.conf:2:13: \"nginx-with-a-long-name\" is longer than the 15 bytes the kernel keeps of a process name: it would never match; set full_command to compare the command's first word"]
    );
    assert_eq!(
        bad(
            "vrrp_track_process p {\n    process nginx\n    quorum 3\n    quorum_max 2\n}\n",
            ""
        ),
        ["k.conf:3:12: quorum 3 is above quorum_max 2"]
    );
    assert_eq!(
        bad(
            "vrrp_track_process p {\n    process nginx\n    param_match fuzzy\n}\n",
            ""
        ),
        ["k.conf:3:17: param_match takes `initial`, `partial` or nothing, not \"fuzzy\""]
    );
    assert_eq!(
        bad("vrrp_track_process p {\n    weight 300\n}\n", ""),
        [
            "k.conf:1:1: vrrp_track_process p has no `process`",
            "k.conf:2:12: weight 300 is out of range -254..=254"
        ]
    );
    assert_eq!(
        bad("track_file f {\n    weight 2\n}\n", ""),
        ["k.conf:1:1: track_file f has no `file`"]
    );
    assert_eq!(
        bad("", "    track_process {\n        nope\n    }\n    track_file {\n        gone weight 300\n    }\n"),
        [
            "k.conf:6:9: track_process names unknown vrrp_track_process \"nope\"",
            "k.conf:9:9: track_file names unknown track_file \"gone\"",
            "k.conf:9:21: weight 300 is out of range -254..=254"
        ]
    );
    assert_eq!(
        bad("", "    track_service {\n        web weight 2 reverse\n    }\n")[1],
        "k.conf:6:22: `weight … reverse` is not supported in `track_service` (keepalived applies the weight to the opposite state)"
    );
}

/// keepalived's `virtual_server_group`: each member (ranges expanded) is a virtual server of
/// its own with the block's settings and real servers, as IPVS has a service per member;
/// a mistake in the block is reported once per member, where it is written.
#[test]
fn virtual_server_group_expands_into_one_virtual_server_per_member() {
    let text = "virtual_server_group web {\n    198.18.0.250-252 80\n    fd00:18::a-b 8080\n}\nvirtual_server group web {\n    lb_algo rr\n    protocol TCP\n    real_server 198.18.0.151 {\n        weight 3\n        notify_down /bin/true\n    }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.conf");
    std::fs::write(&k, text).unwrap();
    let (c, w) = ok(&k);
    assert!(w.is_empty(), "{w:?}");
    let listens: Vec<String> = c
        .virtual_servers
        .iter()
        .map(|v| v.listen.to_string())
        .collect();
    assert_eq!(
        listens,
        [
            "198.18.0.250:80",
            "198.18.0.251:80",
            "198.18.0.252:80",
            "[fd00:18::a]:8080",
            "[fd00:18::b]:8080"
        ]
    );
    for v in &c.virtual_servers {
        assert_eq!(v.name, v.listen.to_string());
        assert_eq!(v.backends.len(), 1);
        // A real server without a port takes its member's port.
        assert_eq!(v.backends[0].address.ip().to_string(), "198.18.0.151");
        assert_eq!(v.backends[0].weight.to_string(), "3");
    }
    assert_eq!(c.virtual_servers[0].backends[0].address.port(), 80);
    // Each member's own port, not the first member's.
    assert_eq!(c.virtual_servers[3].backends[0].address.port(), 8080);
    // The block's scripts run once per event: from the first member that checks each
    // real server (198.18.0.151:80 in the first, :8080 in the fourth).
    let scripts: Vec<bool> = c
        .virtual_servers
        .iter()
        .map(|v| v.backends[0].notify_down.is_some())
        .collect();
    assert_eq!(scripts, [true, false, false, true, false]);
    // Checks that reach the same target (connect_port) whatever the member's port: the
    // scripts run once, from the first member.
    let same_target = "virtual_server_group web {\n    198.18.0.250 80\n    198.18.0.250 8080\n}\nvirtual_server group web {\n    protocol TCP\n    quorum_down /bin/true\n    real_server 198.18.0.151 {\n        notify_down /bin/true\n        TCP_CHECK {\n            connect_port 80\n        }\n    }\n}\n";
    std::fs::write(&k, same_target).unwrap();
    let (c, _) = ok(&k);
    let kept: Vec<(bool, bool)> = c
        .virtual_servers
        .iter()
        .map(|v| (v.backends[0].notify_down.is_some(), v.quorum_down.is_some()))
        .collect();
    assert_eq!(kept, [(true, true), (false, false)]);
    // A bad weight in the block: read once, one error.
    let e = errors("k.conf", &text.replace("weight 3", "weight -1"));
    assert_eq!(e, ["k.conf:9:16: weight \"-1\" is not a whole number"]);
    // A duplicate real server: dropped with a warning at the line written, as keepalived
    // drops it (every member keeps one).
    let dup = text.replace(
        "    real_server 198.18.0.151 {",
        "    real_server 198.18.0.151 80 {\n    }\n    real_server 198.18.0.151 80 {",
    );
    std::fs::write(&k, dup.replace("    fd00:18::a-b 8080\n", "")).unwrap();
    let (c, w) = ok(&k);
    assert!(c.virtual_servers.iter().all(|v| v.backends.len() == 1));
    assert!(
        w.iter().any(|w| w.to_string().contains(
            "k.conf:9:5: warning: real server 198.18.0.151:80 is already in this virtual server"
        )),
        "{w:?}"
    );
    // Ranges, fwmark and unknown groups are checked where written.
    let bad = |group: &str| {
        errors(
            "k.conf",
            &format!("virtual_server_group g {{\n    {group}\n}}\nvirtual_server group g {{\n    protocol TCP\n}}\n"),
        )
    };
    assert!(bad("198.18.0.9-3 80")[0]
        .starts_with("k.conf:2:5: \"198.18.0.9-3\": the range's end must be above its start"));
    assert!(bad("198.18.0.9-9 80")[0].contains("must be above its start"));
    assert!(bad("198.18.0.9-300 80")[0].contains("the range's end is the last octet"));
    assert!(bad("fwmark 1")[0]
        .starts_with("k.conf:2:5: virtual_server_group `fwmark` entries need IPVS"));
    assert!(bad("198.18.0.9 0")[0]
        .starts_with("k.conf:2:16: port 0 (keepalived's service on every port"));
}

/// keepalived's `SMTP_CHECK` (check_smtp.c: `helo_name`, default
/// `smtpchecker.keepalived.org`, and the common keywords) and its TOML twin
/// `type = "smtp"`; the deprecated `host` block is a located error, and a helo_name of
/// several words is refused.
#[test]
fn smtp_check_is_read_from_both_formats() {
    use lb_bins::config::model::SmtpCheck;

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("k.conf");
    std::fs::write(
        &conf,
        "virtual_server 198.18.0.250 25 {\n    protocol TCP\n\
         real_server 198.18.0.151 25 {\n\
         SMTP_CHECK {\n            helo_name lb.example\n            connect_timeout 2\n        }\n\
         SMTP_CHECK {\n            connect_port 587\n        }\n\
         }\n}\n",
    )
    .unwrap();
    let (k, kw) = ok(&conf);
    assert!(kw.is_empty(), "{kw:?}");
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:25\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:25\"\n\
         [[virtual_server.backend.check]]\ntype = \"smtp\"\nhelo_name = \"lb.example\"\nconnect_timeout = 2\n\
         [[virtual_server.backend.check]]\ntype = \"smtp\"\nconnect_port = 587\n",
    );
    let checks = &k.virtual_servers[0].backends[0].checks;
    assert_eq!(checks, &t.virtual_servers[0].backends[0].checks);
    assert_eq!(
        checks[0].kind,
        CheckKind::Smtp(SmtpCheck {
            helo_name: "lb.example".into()
        })
    );
    assert_eq!(
        checks[1].kind,
        CheckKind::Smtp(SmtpCheck {
            helo_name: "smtpchecker.keepalived.org".into()
        })
    );
    let vs = &k.virtual_servers[0];
    assert_eq!(
        (checks[1].retry, checks[1].retry_delay(vs)),
        (1, Duration::from_secs(1))
    );

    let e = errors(
        "bad.conf",
        "virtual_server 198.18.0.250 25 {\n    protocol TCP\n\
         real_server 198.18.0.151 25 {\n\
         SMTP_CHECK {\n            host {\n                connect_ip 198.18.0.152\n            }\n        }\n\
         }\n}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "bad.conf:5:13: SMTP_CHECK's `host` block (deprecated in keepalived) is not supported"
        ),
        "{e:?}"
    );
    for (check, want) in [
        (
            "type = \"smtp\"\nhelo_name = \"two words\"\n",
            "helo_name \"two words\" must be one word",
        ),
        (
            "type = \"tcp\"\nhelo_name = \"x\"\n",
            "helo_name applies to smtp checks, not tcp",
        ),
    ] {
        let text = format!(
            "[[virtual_server]]\nlisten = \"198.18.0.250:25\"\n\
             [[virtual_server.backend]]\naddress = \"198.18.0.151:25\"\n\
             [[virtual_server.backend.check]]\n{check}"
        );
        let e = errors("n.toml", &text).join("\n");
        assert!(e.contains(want), "{check}: {e}");
        assert!(e.starts_with("n.toml:"), "{e}");
    }
}

/// keepalived's `script_user USER [GROUP]` in global_defs (TOML `script_user`,
/// `script_group` in `[global]`) is the user of every script that names none: vrrp_scripts,
/// notify scripts, MISC_CHECK programs; a script's own `user` wins. An unknown user is one
/// located error at `script_user`; a MISC_CHECK's unknown `user` is located at its line.
#[test]
fn script_user_applies_to_scripts_that_name_no_user() {
    let text = "global_defs {\n    script_user nobody nogroup\n}\n\
         vrrp_script own {\n    script /bin/true\n    user root\n}\n\
         vrrp_script inherits {\n    script /bin/true\n}\n\
         vrrp_instance VI_1 {\n    interface lo\n    virtual_router_id 51\n    priority 100\n    virtual_ipaddress {\n        198.18.0.250\n    }\n\
         notify_master /bin/true\n    notify_backup \"/bin/true x\" root\n\
         track_script {\n        own\n        inherits\n    }\n}\n\
         virtual_server 198.18.0.250 80 {\n    protocol TCP\n\
         real_server 198.18.0.151 80 {\n        notify_up /bin/true\n\
         MISC_CHECK {\n            misc_path /bin/true\n        }\n\
         MISC_CHECK {\n            misc_path /bin/true\n            user root root\n        }\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let nobody = (Some("nobody".to_owned()), Some("nogroup".to_owned()));
    let root = |g: Option<&str>| (Some("root".to_owned()), g.map(str::to_owned));
    let s = &k.vrrp_scripts;
    assert_eq!((s[0].user.clone(), s[0].group.clone()), root(None));
    assert_eq!((s[1].user.clone(), s[1].group.clone()), nobody);
    let vi = &k.vrrp_instances[0];
    let n = |x: &Option<config::model::NotifyScript>| {
        let x = x.as_ref().unwrap();
        (x.user.clone(), x.group.clone())
    };
    assert_eq!(n(&vi.notify_master), nobody);
    assert_eq!(n(&vi.notify_backup), root(None));
    let b = &k.virtual_servers[0].backends[0];
    assert_eq!(n(&b.notify_up), nobody);
    let misc = |i: usize| match &b.checks[i].kind {
        CheckKind::Misc(m) => (m.user.clone(), m.group.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(misc(0), nobody);
    assert_eq!(misc(1), root(Some("root")));

    let t = load_toml(
        "[global]\nscript_user = \"nobody\"\nscript_group = \"nogroup\"\n\
         [[vrrp_script]]\nname = \"inherits\"\nscript = \"/bin/true\"\n\
         [[virtual_server]]\nlisten = \"198.18.0.250:80\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
         [[virtual_server.backend.check]]\ntype = \"misc\"\nmisc_path = \"/bin/true\"\n\
         [[virtual_server.backend.check]]\ntype = \"misc\"\nmisc_path = \"/bin/true\"\nuser = \"root\"\ngroup = \"root\"\n",
    );
    assert_eq!(
        (
            t.vrrp_scripts[0].user.clone(),
            t.vrrp_scripts[0].group.clone()
        ),
        nobody
    );
    assert_eq!(
        t.virtual_servers[0].backends[0].checks,
        k.virtual_servers[0].backends[0].checks
    );

    let e = errors(
        "bad.conf",
        "global_defs {\n    script_user no-such-user-lb\n}\n\
         vrrp_script s {\n    script /bin/true\n}\n\
         virtual_server 198.18.0.250 80 {\n    protocol TCP\n\
         real_server 198.18.0.151 80 {\n        MISC_CHECK {\n            misc_path /bin/true\n            user root no-such-group-lb\n        }\n    }\n}\n",
    );
    assert_eq!(
        e,
        [
            "bad.conf:2:17: script_user: unknown user \"no-such-user-lb\"",
            "bad.conf:12:23: MISC_CHECK: unknown group \"no-such-group-lb\"",
        ]
    );
    // A group without a user is an error, script_user or not; keepalived's ':GROUP'
    // (supplementary groups too) is refused by name.
    let e = errors(
        "n.toml",
        "[global]\nscript_user = \"nobody\"\n\
         [[vrrp_script]]\nname = \"g\"\nscript = \"/bin/true\"\ngroup = \"root\"\n\
         [[vrrp_script]]\nname = \"c\"\nscript = \"/bin/true\"\nuser = \"root\"\ngroup = \":root\"\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].ends_with("vrrp_script g: group needs a user"), "{e:?}");
    assert!(
        e[1].ends_with("vrrp_script c: keepalived's \":root\" (a group that also sets the user's supplementary groups) is not supported: lb-node runs scripts with one group and no supplementary group; name the group without ':'"),
        "{e:?}"
    );
    let e = errors(
        "n.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
         [[virtual_server.backend.check]]\ntype = \"tcp\"\nuser = \"root\"\n",
    );
    assert!(
        e[0].contains("user and group apply to misc checks (the program's user), not tcp"),
        "{e:?}"
    );
}

/// keepalived's `regex` in a `url` (with `regex_no_match`, `regex_options`,
/// `regex_min_offset`, `regex_max_offset`) and its TOML twin; a pattern that does not
/// compile, an option lb-node cannot honour and min above max are located errors; options
/// that only tune PCRE2, and regex settings without a regex, are warnings.
#[test]
fn url_regex_is_read_from_both_formats() {
    let text = "virtual_server 198.18.0.250 80 {\n    protocol TCP\n\
         real_server 198.18.0.151 80 {\n        HTTP_GET {\n\
         url {\n                path /health\n                regex \"status: *(ok|up)\"\n\
         regex_no_match\n                regex_options caseless multiline\n\
         regex_min_offset 2\n                regex_max_offset 40\n            }\n\
         url {\n                path /\n            }\n        }\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
         [[virtual_server.backend.check]]\ntype = \"http\"\nurl = [\n\
         { path = \"/health\", regex = \"status: *(ok|up)\", regex_no_match = true, regex_options = [\"caseless\", \"multiline\"], regex_min_offset = 2, regex_max_offset = 40 },\n\
         { path = \"/\" },\n]\n",
    );
    assert_eq!(
        k.virtual_servers[0].backends[0].checks,
        t.virtual_servers[0].backends[0].checks
    );
    let CheckKind::Http(h) = &k.virtual_servers[0].backends[0].checks[0].kind else {
        panic!("not http");
    };
    let u = &h.url[0];
    assert_eq!(u.regex.as_deref(), Some("status: *(ok|up)"));
    assert!(u.regex_no_match);
    assert_eq!(u.regex_options, ["caseless", "multiline"]);
    assert_eq!(
        (u.regex_min_offset, u.regex_max_offset),
        (Some(2), Some(40))
    );
    let (r, no_effect) = u.regex_check().unwrap();
    assert!(no_effect.is_empty());
    let r = r.unwrap();
    // no_match, caseless: "STATUS: OK" at 5 is a match, so the check fails.
    assert!(r.passes(b"xxx, STATUS: OK").is_err());
    assert!(r.passes(b"status: down").is_ok());

    let base = |url: &str| {
        format!(
            "virtual_server 198.18.0.250 80 {{\n    protocol TCP\n    real_server 198.18.0.151 80 {{\n        HTTP_GET {{\n            url {{\n                path /\n{url}            }}\n        }}\n    }}\n}}\n"
        )
    };
    let e = errors("bad.conf", &base("                regex \"(?<=a)b\"\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("bad.conf:7:23: regex \"(?<=a)b\": invalid regex: \"(?<=a)b\" does not compile (Rust regex syntax: no look-around, no back-references)"),
        "{e:?}"
    );
    let e = errors(
        "bad.conf",
        &base("                regex ok\n                regex_options firstline\n"),
    );
    assert_eq!(
        e,
        ["bad.conf:8:31: regex \"ok\": regex option \"firstline\" is not supported: lb-node's regex cannot honour it"]
    );
    let e = errors(
        "bad.conf",
        &base("                regex ok\n                regex_min_offset 9\n                regex_max_offset 3\n"),
    );
    assert_eq!(
        e,
        ["bad.conf:8:34: regex \"ok\": invalid regex_min_offset: 9 is above regex_max_offset 3: no match could start there"]
    );
    let (_, w) = config::keepalived::parse_str(
        &base("                regex ok\n                regex_options no_start_optimize\n                regex_stack 100 1000\n"),
        Path::new("k.conf"),
    )
    .unwrap();
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "k.conf:8:31: warning: regex option \"no_start_optimize\" tunes PCRE2 only: no effect in lb-node",
            "k.conf:9:17: warning: `regex_stack` in url is not supported by lb-node, ignored",
        ]
    );
    let (_, w) = config::keepalived::parse_str(
        &base("                regex_no_match\n"),
        Path::new("k.conf"),
    )
    .unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().contains(
            "regex_no_match, regex_options and the regex offsets are ignored without regex"
        ),
        "{w:?}"
    );
}

/// keepalived's sync-group tracking: `track_interface`, `track_script`, `track_process`
/// and `track_file` in a `vrrp_sync_group` are every member's (an instance that tracks the
/// same object itself takes the group's weight, unless its own is 0, with a warning at the
/// group's line), weighted ones without `sync_group_tracking_weight` warn about nothing (keepalived
/// applies a group's weights), and a mistake there is located at the group's line.
#[test]
fn sync_group_tracks_are_every_members() {
    let text = "vrrp_script chk {\n    script /bin/true\n    weight -5\n}\n\
         vrrp_track_file maint {\n    file /run/lb/maint\n}\n\
         vrrp_sync_group G {\n    group {\n        A\n        B\n    }\n\
         track_interface {\n        eth1\n        eth2 weight -3\n    }\n\
         track_script {\n        chk\n    }\n\
         track_file {\n        maint weight 0\n    }\n\
         sync_group_tracking_weight\n}\n\
         vrrp_instance A {\n    interface lo\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.250\n    }\n\
         track_interface {\n        eth2 weight -7\n    }\n}\n\
         vrrp_instance B {\n    interface lo\n    virtual_router_id 52\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n";
    let (c, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap();
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        ["k.conf:15:9: warning: also tracked by vrrp_instance A itself: the sync group's weight applies, as in keepalived"]
    );
    let ifs = |i: usize| -> Vec<(String, i32)> {
        c.vrrp_instances[i]
            .track_interface
            .iter()
            .map(|t| (t.interface.clone(), t.weight))
            .collect()
    };
    assert_eq!(ifs(0), [("eth2".to_owned(), -3), ("eth1".to_owned(), 0)]);
    // Without sync_group_tracking_weight the group's weighted tracks warn about nothing
    // (keepalived applies a group's weights); the instance's own weighted one still does.
    let (_, w) = config::keepalived::parse_str(
        &text.replace("sync_group_tracking_weight\n", ""),
        Path::new("k.conf"),
    )
    .unwrap();
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("k.conf:15:9: warning: also tracked by vrrp_instance A"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("k.conf:31:9: warning: vrrp_instance A is in vrrp_sync_group G"),
        "the instance's own weighted track: {w:?}"
    );
    assert_eq!(ifs(1), [("eth1".to_owned(), 0), ("eth2".to_owned(), -3)]);
    for vi in &c.vrrp_instances {
        assert_eq!(vi.track_script.len(), 1);
        assert_eq!(vi.track_script[0].script, "chk");
        assert_eq!(vi.track_file.len(), 1);
        assert_eq!(vi.track_file[0].weight, Some(0));
    }
    // An unknown script tracked by the group is an error at the group's line (once per
    // member, each at that line: deduplicated).
    let e = errors(
        "bad.conf",
        "vrrp_sync_group G {\n    group {\n        A\n    }\n    track_script {\n        nope\n    }\n}\n\
         vrrp_instance A {\n    interface lo\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.250\n    }\n}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("bad.conf:6:9: "), "{e:?}");
}

/// keepalived 2.2's `FILE_CHECK { track_file NAME; weight W [reverse] }` and its TOML twin
/// `type = "file"`: the track_file's path, and its weight and reverse unless the check sets
/// its own; no checker option is inherited (retry 0, a 1 s interval); an unknown track_file
/// and a FILE_CHECK without one are located errors.
#[test]
fn file_check_is_read_from_both_formats() {
    use lb_bins::config::model::FileCheck;
    let text = "track_file maint {\n    file /run/lb/maint\n    weight -2 reverse\n}\n\
         virtual_server 198.18.0.250 80 {\n    protocol TCP\n    delay_loop 9\n    retry 4\n\
         real_server 198.18.0.151 80 {\n        FILE_CHECK {\n            track_file maint\n        }\n\
         FILE_CHECK {\n            track_file maint\n            weight 0\n        }\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let t = load_toml(
        "[[track_file]]\nname = \"maint\"\nfile = \"/run/lb/maint\"\nweight = -2\nreverse = true\n\
         [[virtual_server]]\nlisten = \"198.18.0.250:80\"\ndelay_loop = 9\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
         [[virtual_server.backend.check]]\ntype = \"file\"\ntrack_file = \"maint\"\n\
         [[virtual_server.backend.check]]\ntype = \"file\"\ntrack_file = \"maint\"\nweight = 0\nreverse = false\n",
    );
    let checks = &k.virtual_servers[0].backends[0].checks;
    assert_eq!(checks, &t.virtual_servers[0].backends[0].checks);
    let file = |w: i32, r: bool| {
        CheckKind::File(FileCheck {
            track_file: "maint".into(),
            weight: Some(w),
            reverse: Some(r),
            file: Some("/run/lb/maint".into()),
        })
    };
    assert_eq!(checks[0].kind, file(-2, true));
    assert_eq!(checks[1].kind, file(0, false));
    let vs = &k.virtual_servers[0];
    for c in checks {
        assert_eq!((c.retry, c.interval(vs)), (0, Duration::from_secs(1)));
    }

    let e = errors(
        "bad.conf",
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.151 80 {\n\
         FILE_CHECK {\n            track_file nope\n        }\n        FILE_CHECK {\n        }\n    }\n}\n",
    );
    assert_eq!(
        e,
        [
            "bad.conf:5:24: FILE_CHECK: track_file \"nope\" is not defined",
            "bad.conf:7:9: FILE_CHECK has no track_file",
        ]
    );
    let (_, w) = config::keepalived::parse_str(
        "track_file maint {\n    file /run/lb/maint\n}\n\
         virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.151 80 {\n\
         FILE_CHECK {\n            track_file maint\n            connect_timeout 3\n        }\n    }\n}\n",
        Path::new("k.conf"),
    )
    .unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .contains("unknown keyword `connect_timeout` in FILE_CHECK"),
        "{w:?}"
    );
    // TOML: checker options on a file check are warned about, not silently dropped.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lb.toml");
    std::fs::write(
        &p,
        "[[track_file]]\nname = \"maint\"\nfile = \"/run/lb/maint\"\n\
         [[virtual_server]]\nlisten = \"198.18.0.250:80\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
         [[virtual_server.backend.check]]\ntype = \"file\"\ntrack_file = \"maint\"\nrise = 2\n",
    )
    .unwrap();
    let (_, w) = ok(&p);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().contains("do not apply to a file check"),
        "{w:?}"
    );
}

/// keepalived reads `regex` with its own quoting and escapes (check_http.c,
/// `alloc_strvec_quoted_escaped`), as lb-node does now: a backslash escapes the next
/// character outside quotes too, `'…'` quotes, and `"\r\n"` is CR LF.
#[test]
fn url_regex_is_read_with_keepalived_escapes() {
    let base = |re: &str| {
        format!(
            "virtual_server 198.18.0.250 80 {{\n    protocol TCP\n    real_server 198.18.0.151 80 {{\n        HTTP_GET {{\n            url {{\n                path /\n                regex {re}\n            }}\n        }}\n    }}\n}}\n"
        )
    };
    for (written, read) in [
        (r"\\d+", r"\d+"),
        (r#""OK\r\n""#, "OK\r\n"),
        ("'a b'", "a b"),
        ("'a  b\tc'", "a  b\tc"),
        (r#"'<a href="x">'"#, r#"<a href="x">"#),
        (r#""a"b"#, "ab"),
        (r#""status: (ok|up)""#, "status: (ok|up)"),
        ("plain", "plain"),
    ] {
        let (c, w) = config::keepalived::parse_str(&base(written), Path::new("k.conf")).unwrap();
        assert!(w.is_empty(), "{written}: {w:?}");
        let CheckKind::Http(h) = &c.virtual_servers[0].backends[0].checks[0].kind else {
            panic!("not http");
        };
        assert_eq!(h.url[0].regex.as_deref(), Some(read), "{written}");
    }
    assert_eq!(
        errors("bad.conf", &base("a b")),
        ["bad.conf:7:23: regex takes one pattern, not 2 words: quote it (\"a b\" or 'a b')"]
    );
}

/// keepalived's `bfd_instance` (intervals in milliseconds with microsecond decimals, `ttl`
/// and `hoplimit` one setting, `weight W [reverse]`), `track_bfd` in a `vrrp_instance` and
/// a `vrrp_sync_group` (copied into its members), and `BFD_CHECK { name; alpha }` give the
/// model their TOML twins give; unknown names, a second session to one neighbour, bad
/// values and a check on a `vrrp`-only session are located errors.
#[test]
fn bfd_is_read_from_both_formats() {
    use lb_bins::config::model::{BfdCheck, BfdInstance, TrackBfdRef};
    let text = "bfd_instance gw {\n    neighbour_ip 198.18.0.1\n    source_ip 198.18.0.11\n\
         min_rx 3.312\n    min_tx 20\n    idle_tx 2000.5\n    multiplier 3\n    passive\n\
         hoplimit 250\n    max_hops 5\n    weight -30 reverse\n    checker\n}\n\
         bfd_instance peer {\n    neighbor_ip fd00:18::2\n    vrrp\n    max_hops -1\n}\n\
         vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n\
         virtual_ipaddress {\n        198.18.0.250\n    }\n\
         track_bfd {\n        peer weight 10 noreverse\n    }\n}\n\
         vrrp_instance VI_2 {\n    interface eth0\n    virtual_router_id 52\n\
         virtual_ipaddress {\n        198.18.0.249\n    }\n}\n\
         vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n\
         track_bfd {\n        peer weight -20\n    }\n}\n\
         virtual_server 198.18.0.250 80 {\n    protocol TCP\n    alpha\n\
         real_server 198.18.0.151 80 {\n        BFD_CHECK {\n            name gw\n        }\n    }\n\
         real_server 198.18.0.152 80 {\n        BFD_CHECK {\n            name gw\n            alpha off\n        }\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    // The two checks on one session and the group's weight over VI_1's own are warned.
    assert!(
        w.iter()
            .any(|w| w.to_string().contains("also tracked by vrrp_instance VI_1")),
        "{w:?}"
    );
    let mut gw = BfdInstance::new("gw", "198.18.0.1".parse().unwrap());
    gw.source_ip = Some("198.18.0.11".parse().unwrap());
    gw.min_rx = Duration::from_micros(3312);
    gw.min_tx = Duration::from_millis(20);
    gw.idle_tx = Duration::from_micros(2_000_500);
    gw.multiplier = 3;
    gw.passive = true;
    gw.ttl = 250;
    gw.hoplimit = 250;
    gw.max_hops = 5;
    gw.weight = -30;
    gw.reverse = true;
    gw.checker = true;
    let mut peer = BfdInstance::new("peer", "fd00:18::2".parse().unwrap());
    peer.vrrp = true;
    peer.max_hops = 255; // keepalived's -1: no check
    assert_eq!(k.bfd_instances, [gw, peer]);
    // VI_1's own entry takes the group's weight (its own is not 0); VI_2 gets the group's.
    let tb = |weight: Option<i32>, reverse: Option<bool>| TrackBfdRef {
        bfd: "peer".into(),
        weight,
        reverse,
    };
    assert_eq!(k.vrrp_instances[0].track_bfd, [tb(Some(-20), None)]);
    assert_eq!(k.vrrp_instances[1].track_bfd, [tb(Some(-20), None)]);
    let vs = &k.virtual_servers[0];
    let checks: Vec<_> = vs.backends.iter().flat_map(|b| &b.checks).collect();
    assert_eq!(checks.len(), 2);
    for c in &checks {
        assert_eq!(c.kind, CheckKind::Bfd(BfdCheck { name: "gw".into() }));
        assert_eq!(c.retry, 0);
        assert!(
            !c.starts_down(vs),
            "a BFD check's start is applied by the node"
        );
    }
    assert!(checks[0].bfd_starts_down(vs), "the virtual server's alpha");
    assert!(!checks[1].bfd_starts_down(vs), "its own alpha off");

    let t = load_toml(
        "[[bfd_instance]]\nname = \"gw\"\nneighbor_ip = \"198.18.0.1\"\nmin_tx = \"20ms\"\n\
         [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
         virtual_ipaddress = [\"198.18.0.250\"]\ntrack_bfd = [{ bfd = \"gw\", weight = -20 }]\n\
         [[virtual_server]]\nlisten = \"198.18.0.250:80\"\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n\
         [[virtual_server.backend.check]]\ntype = \"bfd\"\nbfd_instance = \"gw\"\nalpha = true\n",
    );
    let mut gw = BfdInstance::new("gw", "198.18.0.1".parse().unwrap());
    gw.min_tx = Duration::from_millis(20);
    assert_eq!(t.bfd_instances, [gw]);
    assert_eq!(
        t.vrrp_instances[0].track_bfd,
        [TrackBfdRef {
            bfd: "gw".into(),
            weight: Some(-20),
            reverse: None
        }]
    );
    let c = &t.virtual_servers[0].backends[0].checks[0];
    assert_eq!(c.kind, CheckKind::Bfd(BfdCheck { name: "gw".into() }));
    assert!(c.bfd_starts_down(&t.virtual_servers[0]));

    let e = errors(
        "bad.conf",
        "bfd_instance a {\n    neighbor_ip 198.18.0.1\n    min_rx 0\n    multiplier 0\n    vrrp\n}\n\
         bfd_instance b {\n    neighbor_ip 198.18.0.1\n    source_ip fd00:18::1\n}\n\
         bfd_instance c {\n    min_tx 1.2345\n}\n\
         vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n\
         virtual_ipaddress {\n        198.18.0.250\n    }\n\
         track_bfd {\n        nope\n        a weight 254\n    }\n}\n\
         virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.151 80 {\n\
         BFD_CHECK {\n            name a\n        }\n        BFD_CHECK {\n        }\n    }\n}\n",
    );
    assert_eq!(
        e,
        [
            "bad.conf:3:12: min_rx 0 ms is out of range (above 0, at most 4294967.295)",
            "bad.conf:4:16: multiplier 0 is out of range 1..=255",
            "bad.conf:8:17: bfd_instance a already has neighbor_ip 198.18.0.1: one session per neighbour",
            "bad.conf:9:15: bfd_instance b: source_ip fd00:18::1 and neighbor_ip 198.18.0.1 are not of the same family",
            "bad.conf:11:1: bfd_instance c has no neighbor_ip",
            "bad.conf:12:12: min_tx \"1.2345\" is not a number of milliseconds (e.g. 10 or 3.312)",
            "bad.conf:21:9: track_bfd names unknown bfd_instance \"nope\"",
            "bad.conf:22:18: weight 254 is out of range -253..=253",
            "bad.conf:29:18: BFD_CHECK: bfd_instance \"a\" says `vrrp`: only track_bfd follows it",
            "bad.conf:31:9: BFD_CHECK has no name",
        ]
    );
    let e = errors(
        "twice.conf",
        "bfd_instance a {\n    neighbor_ip 198.18.0.1\n}\n\
         vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n\
         virtual_ipaddress {\n        198.18.0.250\n    }\n\
         track_bfd {\n        a\n        a weight 10\n    }\n}\n",
    );
    assert_eq!(
        e,
        ["twice.conf:12:9: bfd_instance \"a\" is tracked twice (keepalived ignores the second)"]
    );
}

/// keepalived's `warmup` in a virtual server, a real server and a checker (the nearest
/// wins, as for `delay_loop`) and TOML's check key; none by default.
#[test]
fn warmup_is_inherited_like_delay_loop() {
    let (k, w) = config::keepalived::parse_str(
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    warmup 5\n\
         real_server 198.18.0.151 80 {\n        TCP_CHECK {\n        }\n        TCP_CHECK {\n            warmup 0.5\n        }\n    }\n\
         real_server 198.18.0.152 80 {\n        warmup 3\n        TCP_CHECK {\n        }\n    }\n}\n",
        Path::new("k.conf"),
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    let warmups: Vec<_> = k.virtual_servers[0]
        .backends
        .iter()
        .flat_map(|b| &b.checks)
        .map(|c| c.warmup)
        .collect();
    let s = |ms: u64| Some(Duration::from_millis(ms));
    assert_eq!(warmups, [s(5000), s(500), s(3000)]);
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[[virtual_server.backend]]\n\
         address = \"198.18.0.151:80\"\n[[virtual_server.backend.check]]\ntype = \"tcp\"\nwarmup = \"1.5s\"\n\
         [[virtual_server.backend.check]]\ntype = \"tcp\"\n",
    );
    let checks = &t.virtual_servers[0].backends[0].checks;
    assert_eq!((checks[0].warmup, checks[1].warmup), (s(1500), None));
}

/// keepalived's SSL_GET `enable_sni` (TOML `enable_sni` on ssl checks; refused on others)
/// and `fast_recovery`, which lb-node's checks always do (every url at each run), read
/// without a warning.
#[test]
fn enable_sni_and_fast_recovery_are_read() {
    use lb_bins::config::model::{HealthCheck, HttpCheck};
    let (k, w) = config::keepalived::parse_str(
        "virtual_server 198.18.0.250 443 {\n    protocol TCP\n\
         real_server 198.18.0.151 443 {\n        SSL_GET {\n            url {\n                path /\n            }\n\
         enable_sni\n            fast_recovery\n        }\n        HTTP_GET {\n            url {\n                path /\n            }\n\
         enable_sni\n        }\n    }\n}\n",
        Path::new("k.conf"),
    )
    .unwrap();
    // HTTP_GET has no TLS: keepalived takes `enable_sni` there to no effect; lb-node says so.
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].to_string().contains("enable_sni"), "{w:?}");
    let sni = |c: &HealthCheck| match &c.kind {
        CheckKind::Ssl(HttpCheck { enable_sni, .. })
        | CheckKind::Http(HttpCheck { enable_sni, .. }) => *enable_sni,
        _ => panic!("not an http check"),
    };
    let checks = &k.virtual_servers[0].backends[0].checks;
    assert_eq!((sni(&checks[0]), sni(&checks[1])), (true, false));
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:443\"\n[[virtual_server.backend]]\n\
         address = \"198.18.0.151:443\"\n[[virtual_server.backend.check]]\ntype = \"ssl\"\nenable_sni = true\nurl = [{ path = \"/\" }]\n\
         [[virtual_server.backend.check]]\ntype = \"ssl\"\nurl = [{ path = \"/\" }]\n",
    );
    let checks = &t.virtual_servers[0].backends[0].checks;
    assert_eq!((sni(&checks[0]), sni(&checks[1])), (true, false));
    let e = errors(
        "bad.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[[virtual_server.backend]]\n\
         address = \"198.18.0.151:80\"\n[[virtual_server.backend.check]]\ntype = \"http\"\nenable_sni = true\nurl = [{ path = \"/\" }]\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("enable_sni applies to ssl checks, not http"),
        "{e:?}"
    );
}

/// keepalived's `use_vmac [NAME] [MAC]` and `vmac_xmit_base`, and the TOML keys: default
/// names in keepalived's order (`vrrp.51`, then `vrrp6.51` for the IPv6 instance of the
/// same VRID), a five-octet MAC completed with the VRID, unicast peers forcing
/// `vmac_xmit_base` with a warning (keepalived), the VIPs placed on the VMAC, and located
/// errors.
#[test]
fn use_vmac_is_read_from_both_formats() {
    let text = "vrrp_instance V4 {\n    interface eth0\n    virtual_router_id 51\n    use_vmac\n\
         virtual_ipaddress {\n        198.18.0.250/24 dev eth0\n        198.18.0.249 dev eth1\n    }\n\
         virtual_ipaddress_excluded {\n        fd00:18::249\n    }\n}\n\
         vrrp_instance V6 {\n    interface eth0\n    virtual_router_id 51\n    version 3\n    use_vmac\n\
         virtual_ipaddress {\n        fd00:18::250\n    }\n}\n\
         vrrp_instance N {\n    interface eth0\n    virtual_router_id 52\n\
         use_vmac lbvmac 02:00:5e:00:01\n    vmac_xmit_base\n\
         virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
         vrrp_instance U {\n    interface eth0\n    virtual_router_id 53\n    use_vmac\n\
         unicast_peer {\n        198.18.0.2\n    }\n\
         virtual_ipaddress {\n        198.18.0.252\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .contains("vrrp_instance U: use_vmac with unicast_peer needs vmac_xmit_base, set")
            && w[0].to_string().starts_with("k.conf:31:1"),
        "{w:?}"
    );
    let vi = &k.vrrp_instances;
    let names: Vec<_> = vi.iter().map(|v| v.vmac_name.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some("vrrp.51"),
            Some("vrrp6.51"),
            Some("lbvmac"),
            Some("vrrp.53")
        ]
    );
    assert_eq!(vi[0].vmac_mac().unwrap(), [0, 0, 0x5e, 0, 1, 51]);
    assert_eq!(vi[1].vmac_mac().unwrap(), [0, 0, 0x5e, 0, 2, 51]);
    assert_eq!(vi[2].vmac_mac().unwrap(), [2, 0, 0x5e, 0, 1, 52]);
    assert!(vi[2].vmac_xmit_base && vi[3].vmac_xmit_base && !vi[0].vmac_xmit_base);
    // On the VMAC: the family's addresses on eth0; elsewhere: another dev, the other
    // family.
    let devs: Vec<String> = vi[0]
        .virtual_ipaddress
        .iter()
        .chain(&vi[0].virtual_ipaddress_excluded)
        .map(|v| vi[0].vip_dev(v))
        .collect();
    assert_eq!(devs, ["vrrp.51", "eth1", "eth0"]);

    let t = load_toml(
        "[[vrrp_instance]]\nname = \"N\"\ninterface = \"eth0\"\nvirtual_router_id = 52\n\
         use_vmac = true\nvmac_name = \"lbvmac\"\nvmac_address = \"02:00:5e:00:01\"\n\
         vmac_xmit_base = true\nvirtual_ipaddress = [\"198.18.0.251\"]\n",
    );
    assert_eq!(t.vrrp_instances[0], vi[2]);

    let e = errors(
        "bad.toml",
        "[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 52\n\
         use_vmac = true\nvmac_name = \"a/b\"\nunicast_peer = [\"198.18.0.2\"]\n\
         virtual_ipaddress = [\"198.18.0.251\"]\n\
         [[vrrp_instance]]\nname = \"B\"\ninterface = \"eth0\"\nvirtual_router_id = 53\n\
         vmac_xmit_base = true\nvirtual_ipaddress = [\"198.18.0.252\"]\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("bad.toml:5:") && e[0].contains("needs vmac_xmit_base"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("bad.toml:6:") && e[1].contains("not a valid VMAC name"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("bad.toml:13:") && e[2].contains("vmac_xmit_base needs use_vmac"),
        "{e:?}"
    );
    let e = errors(
        "bad.conf",
        "vrrp_instance A {\n    interface eth0\n    virtual_router_id 52\n    use_vmac vrrp.52 01:00:5e:00:00:01\n\
         virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
         vrrp_instance B {\n    interface eth0\n    virtual_router_id 53\n    use_vmac vrrp.52\n\
         virtual_ipaddress {\n        198.18.0.252\n    }\n}\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("bad.conf:4:22:") && e[0].contains("not a unicast MAC"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("bad.conf:12:14:") && e[1].contains("used by another vrrp_instance"),
        "{e:?}"
    );
    // One MAC twice on an interface; vmac_xmit_base alone is cleared with a warning.
    let e = errors(
        "mac.conf",
        "vrrp_instance A {\n    interface eth0\n    virtual_router_id 52\n    use_vmac va 02:00:00:00:00:01\n\
         virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
         vrrp_instance B {\n    interface eth0\n    virtual_router_id 53\n    use_vmac vb 02:00:00:00:00:01\n\
         virtual_ipaddress {\n        198.18.0.252\n    }\n}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("mac.conf:12:") && e[0].contains("already vrrp_instance A's on eth0"),
        "{e:?}"
    );
    let (k, w) = config::keepalived::parse_str(
        "vrrp_instance A {\n    interface eth0\n    virtual_router_id 52\n    vmac_xmit_base\n\
         virtual_ipaddress {\n        198.18.0.251\n    }\n}\n",
        Path::new("x.conf"),
    )
    .expect("loads");
    assert!(!k.vrrp_instances[0].vmac_xmit_base);
    assert!(
        w.iter().any(|w| w
            .to_string()
            .contains("vmac_xmit_base without use_vmac, ignored")),
        "{w:?}"
    );
}

/// keepalived's `mcast_dst_ip` and global `vrrp_mcast_group4` / `vrrp_mcast_group6`, and
/// `down_timer_adverts`, in both formats, with located errors for a group that is not multicast, an IPv6 group
/// that is not link-local, and a group of the other family.
#[test]
fn mcast_groups_are_read_from_both_formats() {
    let text = "global_defs {\n    vrrp_mcast_group4 224.0.0.119\n    vrrp_mcast_group6 ff02::119\n}\n\
         vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    mcast_dst_ip 224.0.0.120\n\
         down_timer_adverts 5\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).expect("loads");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        k.global.vrrp_mcast_group4,
        Some("224.0.0.119".parse().unwrap())
    );
    assert_eq!(
        k.global.vrrp_mcast_group6,
        Some("ff02::119".parse().unwrap())
    );
    assert_eq!(
        k.vrrp_instances[0].mcast_dst_ip,
        Some("224.0.0.120".parse().unwrap())
    );
    assert_eq!(k.vrrp_instances[0].down_timer_adverts, 5);
    let t = load_toml(
        "[global]\nvrrp_mcast_group4 = \"224.0.0.119\"\nvrrp_mcast_group6 = \"ff02::119\"\n\
         [[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
         mcast_dst_ip = \"224.0.0.120\"\ndown_timer_adverts = 5\nvirtual_ipaddress = [\"198.18.0.251\"]\n",
    );
    assert_eq!(t.global.vrrp_mcast_group4, k.global.vrrp_mcast_group4);
    assert_eq!(t.global.vrrp_mcast_group6, k.global.vrrp_mcast_group6);
    assert_eq!(t.vrrp_instances, k.vrrp_instances);

    let e = errors(
        "bad.conf",
        "global_defs {\n    vrrp_mcast_group4 198.18.0.1\n    vrrp_mcast_group6 fd00:18::1\n}\n\
         vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    mcast_dst_ip ff02::12\n\
         down_timer_adverts 101\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e[0].starts_with("bad.conf:2:") && e[0].contains("not a multicast address"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("bad.conf:3:") && e[1].contains("not a multicast address"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("bad.conf:8:") && e[2].contains("not of the instance's address family"),
        "{e:?}"
    );
    assert!(
        e[3].starts_with("bad.conf:9:") && e[3].contains("down_timer_adverts"),
        "{e:?}"
    );
    // Warned, as keepalived: a global IPv6 group of wider scope (used), and a group with
    // unicast peers (which it does not apply to).
    let (_, w) = config::keepalived::parse_str(
        "global_defs {\n    vrrp_mcast_group6 ff05::12\n}\n\
         vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    mcast_dst_ip 224.0.0.119\n\
         unicast_peer {\n        198.18.0.2\n    }\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n",
        Path::new("w.conf"),
    )
    .expect("loads");
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("w.conf:2:") && w[0].contains("not a link-local multicast"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("w.conf:7:") && w[1].contains("does not apply with unicast_peer"),
        "{w:?}"
    );
}

/// keepalived's `vrrp_startup_delay` and `vrrp_down_timer_adverts` (a default for the
/// instances that do not set their own), and `[global] vrrp_startup_delay` in TOML.
#[test]
fn vrrp_startup_delay_and_global_down_timer_adverts() {
    let text = "global_defs {\n    vrrp_startup_delay 5.5\n    vrrp_down_timer_adverts 4\n}\n\
         vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n\
         virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
         vrrp_instance B {\n    interface eth0\n    virtual_router_id 52\n    down_timer_adverts 6\n\
         virtual_ipaddress {\n        198.18.0.252\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).expect("loads");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(k.global.vrrp_startup_delay, Duration::from_millis(5500));
    let d: Vec<u8> = k
        .vrrp_instances
        .iter()
        .map(|v| v.down_timer_adverts)
        .collect();
    assert_eq!(d, [4, 6]);
    let t = load_toml("[global]\nvrrp_startup_delay = \"5500ms\"\n");
    assert_eq!(t.global.vrrp_startup_delay, k.global.vrrp_startup_delay);
    let e = errors(
        "bad.conf",
        "global_defs {\n    vrrp_down_timer_adverts 0\n}\n",
    );
    assert!(e.len() == 1 && e[0].starts_with("bad.conf:2:"), "{e:?}");
}

/// keepalived's notify FIFOs in both formats: `FIFO [USER [GROUP]]` and `*_script`, the
/// first of a repeated keyword kept (warned), a FIFO named twice warned (one FIFO), a
/// script without its FIFO refused, and the default script user given to both the FIFO
/// and its script.
#[test]
fn notify_fifos_are_read_from_both_formats() {
    use lb_bins::config::model::{NotifyFifo, NotifyScript};
    let text =
        "global_defs {\n    notify_fifo /run/a.fifo nobody nogroup\n    notify_fifo /run/x.fifo\n\
         notify_fifo_script \"/bin/reader --all\"\n    vrrp_notify_fifo /run/a.fifo\n\
         lvs_notify_fifo /run/l.fifo\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).expect("loads");
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("k.conf:3:") && w.contains("first value wins")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("k.conf:5:") && w.contains("is also notify_fifo")),
        "{w:?}"
    );
    let fifo = |path: &str, user: Option<&str>, script: Option<&str>| NotifyFifo {
        path: path.into(),
        user: user.map(str::to_owned),
        group: user.map(|_| "nogroup".to_owned()),
        script: script.map(NotifyScript::new),
    };
    assert_eq!(
        k.global.notify_fifo,
        Some(fifo(
            "/run/a.fifo",
            Some("nobody"),
            Some("/bin/reader --all")
        ))
    );
    assert_eq!(
        k.global.vrrp_notify_fifo,
        Some(fifo("/run/a.fifo", None, None))
    );
    assert_eq!(
        k.global.lvs_notify_fifo,
        Some(fifo("/run/l.fifo", None, None))
    );
    let t = load_toml(
        "[global.notify_fifo]\npath = \"/run/a.fifo\"\nuser = \"nobody\"\ngroup = \"nogroup\"\n\
         script = \"/bin/reader --all\"\n[global.vrrp_notify_fifo]\npath = \"/run/a.fifo\"\n\
         [global.lvs_notify_fifo]\npath = \"/run/l.fifo\"\n",
    );
    assert_eq!(t.global.notify_fifo, k.global.notify_fifo);
    assert_eq!(t.global.vrrp_notify_fifo, k.global.vrrp_notify_fifo);
    assert_eq!(t.global.lvs_notify_fifo, k.global.lvs_notify_fifo);

    let e = errors(
        "bad.conf",
        "global_defs {\n    lvs_notify_fifo_script /bin/reader\n}\n",
    );
    assert!(
        e.len() == 1 && e[0].starts_with("bad.conf:2:") && e[0].contains("needs `lvs_notify_fifo`"),
        "{e:?}"
    );
    // script_user: the FIFO's owner and its script's user.
    let t = load_toml(
        "[global]\nscript_user = \"nobody\"\n[global.notify_fifo]\npath = \"/run/a.fifo\"\n\
         script = \"/bin/reader\"\n",
    );
    let f = t.global.notify_fifo.expect("fifo");
    assert_eq!(f.user.as_deref(), Some("nobody"));
    assert_eq!(f.script.and_then(|s| s.user).as_deref(), Some("nobody"));
}

/// keepalived's `dont_track_primary` is on whatever follows it (its handler reads no
/// argument): an argument is warned about, not read as a boolean.
#[test]
fn dont_track_primary_takes_no_argument() {
    let text = "vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    dont_track_primary off\n\
         virtual_ipaddress {\n        198.18.0.251\n    }\n}\n\
         vrrp_instance B {\n    interface eth0\n    virtual_router_id 52\n\
         virtual_ipaddress {\n        198.18.0.252\n    }\n}\n";
    let (k, w) = config::keepalived::parse_str(text, Path::new("k.conf")).expect("loads");
    assert!(k.vrrp_instances[0].dont_track_primary);
    assert!(!k.vrrp_instances[1].dont_track_primary);
    assert!(
        w.len() == 1 && w[0].to_string().starts_with("k.conf:4:24:"),
        "{w:?}"
    );
    let t = load_toml(
        "[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
         dont_track_primary = true\nvirtual_ipaddress = [\"198.18.0.251\"]\n",
    );
    assert_eq!(t.vrrp_instances[0], k.vrrp_instances[0]);
}

/// Loads keepalived.conf `text` (must be valid); the warnings as `LINE:COLUMN: MESSAGE`.
fn keepalived_ok(text: &str) -> (Config, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.conf");
    std::fs::write(&path, text).unwrap();
    let (cfg, w) = ok(&path);
    let w = w
        .iter()
        .map(|w| {
            let l = w.location.as_ref().expect("warning location");
            format!("{}:{}: {}", l.line, l.column, w.message)
        })
        .collect();
    (cfg, w)
}

/// keepalived's completion of an instance (vrrp.c vrrp_complete_instance): the priority
/// follows `state MASTER` when unwritten and the state the priority, an IPv6 instance is
/// VRRPv3 whatever `vrrp_version` says, nopreempt and preempt_delay are cleared where they
/// cannot work, VRRPv3 drops authentication.
#[test]
fn instances_are_completed_as_keepalived() {
    let inst = |name: &str, vrid: u8, body: &str, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n    interface eth0\n    virtual_router_id {vrid}\n{body}    virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
        )
    };
    let text = "global_defs {\n    vrrp_version 2\n}\n".to_owned()
        + &inst("M", 1, "    state MASTER\n    nopreempt\n", "198.18.0.1")
        + &inst("O", 2, "    priority 255\n", "198.18.0.2")
        + &inst(
            "D",
            3,
            "    state MASTER\n    priority 100\n    preempt_delay 5\n",
            "198.18.0.3",
        )
        + &inst("N", 4, "    nopreempt\n    preempt_delay 5\n", "198.18.0.4")
        + &inst("V6", 5, "", "fd00:18::5")
        + &inst(
            "A3",
            6,
            "    version 3\n    authentication {\n        auth_type PASS\n        auth_pass x\n    }\n",
            "198.18.0.6",
        );
    let (cfg, w) = keepalived_ok(&text);
    let vi = |n: &str| {
        cfg.vrrp_instances
            .iter()
            .find(|v| v.name == n)
            .expect("instance")
    };
    assert_eq!(
        (vi("M").priority, vi("M").state),
        (255, InitialState::Master)
    );
    assert!(!vi("M").nopreempt);
    assert_eq!(vi("O").state, InitialState::Master);
    assert_eq!(
        (vi("D").priority, vi("D").state),
        (100, InitialState::Master)
    );
    assert_eq!(vi("D").preempt_delay, Duration::ZERO);
    assert!(vi("N").nopreempt);
    assert_eq!(vi("N").preempt_delay, Duration::ZERO);
    assert_eq!(vi("V6").version, 3);
    assert_eq!(vi("A3").authentication, None);
    assert!(cfg.vrrp_instances.iter().all(|v| v.accept));
    assert_eq!(
        w,
        [
            "7:11: vrrp_instance M: state MASTER without `priority`: priority 255, the address owner, as keepalived",
            "8:5: vrrp_instance M: nopreempt does not apply to the address owner (priority 255): cleared, as keepalived",
            "26:19: vrrp_instance D: preempt_delay does not apply with state MASTER: cleared, as keepalived",
            "35:19: vrrp_instance N: preempt_delay does not apply with nopreempt: cleared, as keepalived",
            "51:5: vrrp_instance A3: VRRPv3 has no authentication (RFC 5798 §9): ignored, as keepalived",
        ]
    );
}

/// `vrrp_strict` (and an instance's own `strict_mode`): what keepalived 2.2.7 changes,
/// each setting written against it reset with a warning where it is written; the
/// unwritten ones take strict's value over `global_defs`' defaults. Found with the
/// Debian sample configuration (vrrp_strict, state MASTER at priority 100, PASS
/// authentication): read as before, lb-node sent authenticated adverts that a keepalived
/// peer in strict mode drops, and both nodes were master.
#[test]
fn vrrp_strict_is_applied_as_keepalived() {
    let text = "global_defs {\n    vrrp_strict\n    vrrp_garp_lower_prio_repeat 3\n    vrrp_higher_prio_send_advert\n}\n\
        vrrp_instance S {\n    state MASTER\n    interface eth0\n    virtual_router_id 51\n    priority 100\n    advert_int 1\n    authentication {\n        auth_type PASS\n        auth_pass 1111\n    }\n    virtual_ipaddress {\n        198.18.0.16\n    }\n}\n\
        vrrp_instance W {\n    interface eth0\n    virtual_router_id 52\n    priority 100\n    preempt_delay 5\n    down_timer_adverts 5\n    accept\n    garp_lower_prio_repeat 2\n    lower_prio_no_advert off\n    higher_prio_send_advert\n    use_vmac vrrp.52 02:00:00:00:00:52\n    vmac_xmit_base\n    virtual_ipaddress {\n        198.18.0.17\n    }\n}\n\
        vrrp_instance V3 {\n    version 3\n    interface eth0\n    virtual_router_id 53\n    accept\n    virtual_ipaddress {\n        198.18.0.18\n    }\n}\n\
        vrrp_instance L {\n    strict_mode off\n    interface eth0\n    virtual_router_id 54\n    authentication {\n        auth_type PASS\n        auth_pass 1111\n    }\n    virtual_ipaddress {\n        198.18.0.19\n    }\n}\n\
        vrrp_instance S6 {\n    version 2\n    interface eth0\n    virtual_router_id 55\n    virtual_ipaddress {\n        fd00:18::20\n    }\n}\n";
    let (cfg, w) = keepalived_ok(text);
    let vi = |n: &str| {
        cfg.vrrp_instances
            .iter()
            .find(|v| v.name == n)
            .expect("instance")
    };
    let s = vi("S");
    assert_eq!(s.state, InitialState::Backup);
    assert_eq!(s.authentication, None);
    assert!(!s.accept);
    assert_eq!(
        (s.garp_lower_prio_repeat, s.garp_lower_prio_delay),
        (0, Duration::ZERO)
    );
    assert!(s.lower_prio_no_advert && !s.higher_prio_send_advert);
    let wi = vi("W");
    assert_eq!(wi.preempt_delay, Duration::ZERO);
    assert_eq!(wi.down_timer_adverts, 3);
    assert!(!wi.accept, "VRRPv2 has no accept mode");
    assert_eq!(wi.garp_lower_prio_repeat, 0);
    assert!(wi.lower_prio_no_advert && !wi.higher_prio_send_advert);
    assert_eq!(wi.vmac_address, None);
    assert!(wi.use_vmac && !wi.vmac_xmit_base);
    assert!(vi("V3").accept, "VRRPv3 keeps a written accept");
    let l = vi("L");
    assert!(l.authentication.is_some() && l.accept && !l.lower_prio_no_advert);
    assert_eq!(l.garp_lower_prio_repeat, 3);
    assert!(l.higher_prio_send_advert);
    assert_eq!(vi("S6").version, 3);
    let strict_off = "strict mode: accept mode off (RFC 5798 Accept_Mode False): while MASTER this node drops traffic to the virtual addresses (nftables), as keepalived;";
    assert_eq!(
        w,
        [
            format!("6:15: vrrp_instance S: {strict_off} VRRPv2 has no accept mode: without vrrp_strict/strict_mode they are served"),
            "7:11: vrrp_instance S: strict mode: state MASTER is the address owner's (priority 255) only; state BACKUP used, as keepalived".into(),
            "12:5: vrrp_instance S: strict mode has no authentication: ignored, as keepalived".into(),
            "24:19: vrrp_instance W: preempt_delay is not in strict mode: cleared, as keepalived".into(),
            "25:24: vrrp_instance W: strict mode: Master_Down_Interval is RFC 5798's 3 advert intervals; down_timer_adverts 3 used, as keepalived".into(),
            "26:5: vrrp_instance W: strict mode: VRRPv2 (RFC 3768) has no accept mode; no_accept used, as keepalived".into(),
            "27:28: vrrp_instance W: strict mode: `garp_lower_prio_repeat` reset, as keepalived".into(),
            "28:5: vrrp_instance W: strict mode: `lower_prio_no_advert` reset, as keepalived".into(),
            "29:5: vrrp_instance W: strict mode: `higher_prio_send_advert` reset, as keepalived".into(),
            "30:22: vrrp_instance W: strict mode: the VMAC has the virtual router MAC; this MAC is ignored, as keepalived".into(),
            "31:5: vrrp_instance W: strict mode: adverts leave from the VMAC; vmac_xmit_base ignored, as keepalived".into(),
            format!("57:15: vrrp_instance S6: {strict_off} write `accept` to serve on them"),
            "58:13: vrrp_instance S6: strict mode: VRRPv2 carries no IPv6; version 3 used, as keepalived".into(),
            "61:5: vrrp_instance S6: strict mode: the first IPv6 virtual address must be link-local (RFC 5798 §5.2.9), as keepalived warns".into(),
        ]
    );
    // Unicast peers are refused on an interface with multicast, as keepalived refuses to
    // start; on one without (lo), or one that does not exist, they are not.
    let mcast = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| {
            std::fs::read_to_string(format!("/sys/class/net/{n}/flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .is_some_and(|f| f & 0x1000 != 0)
        });
    let unicast = |ifname: &str| {
        format!("global_defs {{\n    vrrp_strict\n}}\nvrrp_instance U {{\n    interface {ifname}\n    virtual_router_id 51\n    unicast_peer {{\n        198.18.0.2\n    }}\n    virtual_ipaddress {{\n        198.18.0.16\n    }}\n}}\n")
    };
    match mcast {
        Some(mcast) => assert_eq!(
            errors("k.conf", &unicast(&mcast)),
            ["k.conf:8:9: vrrp_instance U: unicast peers are not supported in strict mode (keepalived refuses them too): remove vrrp_strict/strict_mode or the peers"]
        ),
        // A machine with loopback only (a sandbox without network): nothing to refuse on.
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true: no interface with multicast (IFF_MULTICAST) to test on")
        }
        None => eprintln!(
            "\n!!!!! SKIPPING the strict unicast refusal: no interface with multicast !!!!!\n"
        ),
    }
    for ifname in ["lo", "nosuchif0"] {
        let (cfg, _) = keepalived_ok(&unicast(ifname));
        assert_eq!(cfg.vrrp_instances[0].unicast_peer.len(), 1);
    }
}

/// keepalived's `vrrp_garp_interval` / `vrrp_gna_interval`: decimal seconds to the
/// microsecond; 0 is none (keepalived calls it invalid and keeps none); out of range or not
/// a number is an error where written.
#[test]
fn garp_and_gna_intervals_are_read() {
    let inst = "vrrp_instance V {\n    interface eth0\n    virtual_router_id 1\n    priority 100\n    virtual_ipaddress {\n        198.18.0.1\n    }\n}\n";
    let (cfg, w) = keepalived_ok(
        &("global_defs {\n    vrrp_garp_interval 0.000250\n    vrrp_gna_interval 0\n}\n"
            .to_owned()
            + inst),
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.global.vrrp_garp_interval, Duration::from_micros(250));
    assert_eq!(cfg.global.vrrp_gna_interval, Duration::ZERO);
    // TOML: to the microsecond too, and the same range.
    let toml = |v: &str| {
        format!("[global]\nvrrp_garp_interval = {v}\n[[vrrp_instance]]\nname = \"V\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = [\"198.18.0.1\"]\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    for (v, want) in [("\"250us\"", 250), ("0.00025", 250), ("\"1ms\"", 1000)] {
        std::fs::write(&path, toml(v)).unwrap();
        assert_eq!(
            ok(&path).0.global.vrrp_garp_interval,
            Duration::from_micros(want),
            "{v}"
        );
    }
    std::fs::write(&path, toml("5000")).unwrap();
    let e = config::load(&path).expect_err("out of range");
    assert!(
        e[0].to_string()
            .contains("vrrp_garp_interval 5000 s is out of range"),
        "{e:?}"
    );
    assert_eq!(
        errors(
            "k.conf",
            &("global_defs {\n    vrrp_garp_interval 5000\n    vrrp_gna_interval x\n}\n"
                .to_owned()
                + inst)
        ),
        [
            "k.conf:2:24: vrrp_garp_interval 5000 is out of range 0..=4294.967295 s",
            "k.conf:3:23: vrrp_gna_interval \"x\" is not a number of seconds",
        ]
    );
}

/// keepalived settings read since the keyword survey of keepalived 2.2.7's parsers:
/// `unicast_ttl`, `vrrp_min_garp` (one gratuitous ARP, no second burst, no refresh, unless
/// written), `check_unicast_src` (what lb-node always does: no warning); keepalived's own
/// tuning knobs are "not supported" instead of "unknown"; the ones that change what
/// keepalived does say what lb-node does; VRF and IPvlan are refused.
#[test]
fn keepalived_keywords_are_read_or_explained() {
    let text = "global_defs {\n    vrrp_min_garp\n    vrrp_garp_master_repeat 2\n    vrrp_check_unicast_src\n    vrrp_rt_priority 50\n    startup_script /bin/true\n}\n\
        vrrp_instance V {\n    interface eth0\n    virtual_router_id 1\n    priority 100\n    unicast_ttl 9\n    check_unicast_src\n    unicast_peer {\n        198.18.0.2\n    }\n    notify_priority_changes\n    virtual_ipaddress {\n        198.18.0.1\n    }\n}\n";
    let (cfg, w) = keepalived_ok(text);
    let v = &cfg.vrrp_instances[0];
    assert_eq!(v.unicast_ttl, 9);
    assert!(v.notify_priority_changes);
    assert_eq!(
        cfg.global
            .startup_script
            .as_ref()
            .map(|s| s.command.as_str()),
        Some("/bin/true")
    );
    assert_eq!(
        (
            v.garp_master_repeat,
            v.garp_master_delay,
            v.garp_master_refresh
        ),
        (2, Duration::ZERO, None)
    );
    assert_eq!(
        (v.garp_lower_prio_repeat, v.garp_lower_prio_delay),
        (2, Duration::ZERO)
    );
    assert_eq!(
        w,
        ["5:5: `vrrp_rt_priority` in global_defs is not supported by lb-node, ignored",]
    );
    assert_eq!(
        errors(
            "k.conf",
            "vrrp_instance V {\n    interface eth0\n    virtual_router_id 1\n    use_ipvlan\n    unicast_ttl 0\n    virtual_ipaddress {\n        198.18.0.1\n    }\n}\n"
        ),
        [
            "k.conf:4:5: `use_ipvlan` is not supported by lb-node",
            "k.conf:5:17: unicast_ttl 0 is out of range 1..=255",
        ]
    );
    assert_eq!(
        errors("k.conf", "net_namespace blue\n"),
        ["k.conf:1:1: `net_namespace` is not supported: run lb-node inside the namespace (ip netns exec NS lb-node …)"]
    );
}

/// keepalived's `notify_priority_changes`: an instance's own, else its sync group's, else
/// `global_defs` `vrrp_notify_priority_changes`.
#[test]
fn notify_priority_changes_defaults_as_keepalived() {
    let inst = |name: &str, vrid: u8, own: &str| {
        format!("vrrp_instance {name} {{\n    interface eth0\n    virtual_router_id {vrid}\n    priority 100\n{own}    virtual_ipaddress {{\n        198.18.0.{vrid}\n    }}\n}}\n")
    };
    let text = "global_defs {\n    vrrp_notify_priority_changes\n}\nvrrp_sync_group G {\n    group {\n        A\n        B\n    }\n    notify_priority_changes off\n}\n".to_owned()
        + &inst("A", 1, "")
        + &inst("B", 2, "    notify_priority_changes\n")
        + &inst("C", 3, "");
    let (cfg, w) = keepalived_ok(&text);
    assert!(w.is_empty(), "{w:?}");
    let npc: Vec<bool> = cfg
        .vrrp_instances
        .iter()
        .map(|v| v.notify_priority_changes)
        .collect();
    assert_eq!(npc, [false, true, true]);
}

/// keepalived's `notify_deleted [SCRIPT [USER [GROUP]]]` (the first one wins, as
/// keepalived's "already specified") and `fifo_write_vrrp_states_on_reload`; the TOML
/// forms: `notify_deleted = false | true | "command" | { command, user }`.
#[test]
fn notify_deleted_and_reload_states_are_read() {
    use lb_bins::config::model::{NotifyDeleted, NotifyScript};
    let inst = |name: &str, vrid: u8, own: &str| {
        format!("vrrp_instance {name} {{\n    interface eth0\n    virtual_router_id {vrid}\n    priority 100\n{own}    virtual_ipaddress {{\n        198.18.0.{vrid}\n    }}\n}}\n")
    };
    let text = "global_defs {\n    fifo_write_vrrp_states_on_reload\n}\n".to_owned()
        + &inst("A", 1, "")
        + &inst("B", 2, "    notify_deleted\n")
        + &inst(
            "C",
            3,
            "    notify_deleted \"/bin/echo gone\" nobody\n    notify_deleted /bin/false\n",
        );
    let (cfg, w) = keepalived_ok(&text);
    assert!(cfg.global.fifo_write_vrrp_states_on_reload);
    let nd: Vec<&NotifyDeleted> = cfg
        .vrrp_instances
        .iter()
        .map(|v| &v.notify_deleted)
        .collect();
    let mut gone = NotifyScript::new("/bin/echo gone");
    gone.user = Some("nobody".into());
    assert_eq!(
        nd,
        [
            &NotifyDeleted::Fault,
            &NotifyDeleted::Deleted(None),
            &NotifyDeleted::Deleted(Some(gone.clone())),
        ]
    );
    assert_eq!(
        w,
        ["26:5: `notify_deleted` is set again; the first value wins, as in keepalived (set at 25:5): this one is ignored"]
    );
    let (cfg2, _) = keepalived_ok(&inst("A", 1, ""));
    assert!(!cfg2.global.fifo_write_vrrp_states_on_reload);

    let toml = |v: &str| {
        format!(
            "[global]\nfifo_write_vrrp_states_on_reload = true\n[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.0.251\"]\n{v}"
        )
    };
    let t = load_toml(&toml(""));
    assert!(t.global.fifo_write_vrrp_states_on_reload);
    assert_eq!(t.vrrp_instances[0].notify_deleted, NotifyDeleted::Fault);
    for (v, want) in [
        ("notify_deleted = false\n", NotifyDeleted::Fault),
        ("notify_deleted = true\n", NotifyDeleted::Deleted(None)),
        (
            "notify_deleted = \"/bin/echo gone\"\n",
            NotifyDeleted::Deleted(Some(NotifyScript::new("/bin/echo gone"))),
        ),
        (
            "notify_deleted = { command = \"/bin/echo gone\", user = \"nobody\" }\n",
            NotifyDeleted::Deleted(Some(gone.clone())),
        ),
    ] {
        assert_eq!(
            load_toml(&toml(v)).vrrp_instances[0].notify_deleted,
            want,
            "{v}"
        );
    }
    let e = errors("lb.toml", &toml("notify_deleted = 3\n")).join("\n");
    assert!(
        e.contains("lb.toml:8:18") && e.contains("expected true, false, a command line"),
        "{e}"
    );
    let e = errors(
        "lb.toml",
        &toml("notify_deleted = { command = \"/bin/true\", user = \"no-such-user-x\" }\n"),
    )
    .join("\n");
    assert!(e.contains("no-such-user-x"), "{e}");
}

/// keepalived's `virtual_routes` block (one route per line, its syntax) and TOML's list of
/// the same strings give the same routes; a route lb does not implement, or a bad one, is
/// an error at its line.
#[test]
fn virtual_routes_are_read_from_both_formats() {
    use lb_vrrp::route::RouteKind;
    let k = "vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.251\n    }\n    virtual_routes {\n        src 198.18.0.251 to 198.18.1.0/24 via 198.18.0.1 dev eth0 table 100\n        blackhole 198.18.2.0/24\n        default via fd00:18::1 metric 7\n    }\n}\n";
    let (kc, w) = keepalived_ok(k);
    assert!(w.is_empty(), "{w:?}");
    let r = &kc.vrrp_instances[0].virtual_routes;
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[0].to_string(),
        "198.18.1.0/24 via 198.18.0.1 dev eth0 src 198.18.0.251 table 100"
    );
    assert_eq!(r[1].kind, RouteKind::Blackhole);
    assert!(r[2].is_v6() && r[2].prefix_len == 0 && r[2].metric == Some(7));
    let t = load_toml(
        "[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.0.251\"]\n\
         virtual_routes = [\"src 198.18.0.251 to 198.18.1.0/24 via 198.18.0.1 dev eth0 table 100\", \"blackhole 198.18.2.0/24\", \"default via fd00:18::1 metric 7\"]\n",
    );
    assert_eq!(t.vrrp_instances[0].virtual_routes, *r);
    // keepalived's rule: a route without `no_track` gets protocol keepalived whatever is
    // written (TOML runs what is written).
    let (kc, w) = keepalived_ok(&k.replace(
        "blackhole 198.18.2.0/24",
        "198.18.2.0/24 dev eth0 protocol static\n        198.18.6.0/24 dev eth0 protocol static no_track",
    ));
    let r = &kc.vrrp_instances[0].virtual_routes;
    assert_eq!((r[1].protocol, r[2].protocol), (18, 4));
    assert_eq!(
        w,
        ["9:9: route protocol 4 replaced by keepalived (18), as keepalived does for a route without `no_track`"]
    );
    assert_eq!(
        errors(
            "k.conf",
            "vrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    virtual_routes {\n        198.18.1.0/24 via 198.18.0.1 or 198.18.0.2\n        198.18.3.0/24 via fd00:18::1\n    }\n    virtual_ipaddress {\n        198.18.0.251\n    }\n}\n"
        ),
        [
            "k.conf:5:9: route \"198.18.1.0/24 via 198.18.0.1 or 198.18.0.2\": `or` is not supported by lb",
            "k.conf:6:9: route \"198.18.3.0/24 via fd00:18::1\": via: IPv4 and IPv6 addresses mixed in one route",
        ]
    );
    let e = errors(
        "lb.toml",
        "[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_routes = [\"198.18.1.0/24 mtu 1400\"]\nvirtual_ipaddress = [\"198.18.0.251\"]\n",
    )
    .join("\n");
    assert!(
        e.contains("lb.toml:5:18") && e.contains("`mtu` is not supported by lb"),
        "{e}"
    );
}

/// keepalived's `static_ipaddress` and `static_routes` (root blocks) and
/// `default_interface`: keepalived.conf defaults the latter to eth0 for an address without
/// `dev`; TOML has no default, and such an address without one is an error.
#[test]
fn static_addresses_and_routes_are_read() {
    let (k, w) = keepalived_ok(
        "static_ipaddress {\n    198.18.0.77/24 dev eth1\n    198.18.0.78/24\n}\nstatic_routes {\n    198.18.9.0/24 via 198.18.0.1 dev eth0\n}\n",
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(k.static_ipaddress.len(), 2);
    assert_eq!(k.static_ipaddress[0].dev.as_deref(), Some("eth1"));
    assert_eq!(k.global.default_interface.as_deref(), Some("eth0"));
    assert_eq!(
        k.static_routes[0].to_string(),
        "198.18.9.0/24 via 198.18.0.1 dev eth0"
    );
    let (k2, _) = keepalived_ok(
        "global_defs {\n    default_interface bond0\n}\nstatic_ipaddress {\n    198.18.0.78/24\n}\n",
    );
    assert_eq!(k2.global.default_interface.as_deref(), Some("bond0"));
    let t = load_toml(
        "static_ipaddress = [\"198.18.0.77/24 dev eth1\", \"198.18.0.78/24\"]\nstatic_routes = [\"198.18.9.0/24 via 198.18.0.1 dev eth0\"]\n[global]\ndefault_interface = \"eth0\"\n",
    );
    assert_eq!(
        (
            &t.static_ipaddress,
            &t.static_routes,
            &t.global.default_interface
        ),
        (
            &k.static_ipaddress,
            &k.static_routes,
            &k.global.default_interface
        )
    );
    assert_eq!(
        errors("lb.toml", "static_ipaddress = [\"198.18.0.78/24\"]\n"),
        ["lb.toml:1:21: static address 198.18.0.78/24 has no `dev`, and there is no global.default_interface"]
    );
    assert_eq!(
        errors("k.conf", "static_routes {\n    198.18.9.0/24 nexthop via 198.18.0.1\n}\n"),
        ["k.conf:2:5: route \"198.18.9.0/24 nexthop via 198.18.0.1\": `nexthop` is not supported by lb"]
    );
}

/// keepalived's `virtual_rules` and `static_rules`: its syntax in both formats; a rule
/// without a preference is numbered down from 16384 per family in keepalived.conf
/// (warned, as keepalived), and refused in TOML; a tracked rule's protocol is keepalived's.
#[test]
fn virtual_and_static_rules_are_read() {
    use lb_vrrp::rule::RuleTarget;
    let k = "static_rules {\n    from 198.18.0.77 table 101\n}\nvrrp_instance A {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.251\n    }\n    virtual_rules {\n        from 198.18.0.251 table 100 priority 100\n        from fd00:18::/64 unreachable\n        to 198.18.6.0/24 lookup main protocol 4\n    }\n}\n";
    let (kc, w) = keepalived_ok(k);
    assert_eq!(
        w,
        [
            "2:5: rule has no preference: 16384, as keepalived gives it (keepalived: \"probably not what you want\")",
            "12:9: rule has no preference: 16384, as keepalived gives it (keepalived: \"probably not what you want\")",
            "13:9: rule protocol 4 replaced by keepalived (18), as keepalived does for a rule without `no_track`",
            "13:9: rule has no preference: 16383, as keepalived gives it (keepalived: \"probably not what you want\")",
        ]
    );
    assert_eq!(kc.static_rules[0].target, RuleTarget::Table(101));
    let r = &kc.vrrp_instances[0].virtual_rules;
    assert_eq!(
        r.iter().map(|r| r.priority).collect::<Vec<_>>(),
        [Some(100), Some(16384), Some(16383)]
    );
    assert!(r[1].v6 && r[1].target == RuleTarget::Unreachable);
    assert_eq!(r[2].protocol, Some(18));
    let t = load_toml(
        "static_rules = [\"from 198.18.0.77 table 101 priority 16384\"]\n[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.0.251\"]\n\
         virtual_rules = [\"from 198.18.0.251 table 100 priority 100\", \"from fd00:18::/64 unreachable priority 16384\", \"to 198.18.6.0/24 lookup main priority 16383\"]\n",
    );
    assert_eq!(t.vrrp_instances[0].virtual_rules, *r);
    assert_eq!(t.static_rules, kc.static_rules);
    let e = errors(
        "lb.toml",
        "static_rules = [\"from 198.18.0.77 table 101\"]\n",
    )
    .join("\n");
    assert!(
        e.contains("lb.toml:1:16") && e.contains("needs a preference"),
        "{e}"
    );
    assert_eq!(
        errors(
            "k.conf",
            "static_rules {\n    from all table 1 sport 80\n    from all\n}\n"
        ),
        [
            "k.conf:2:5: rule \"from all table 1 sport 80\": `sport` is not supported by lb",
            "k.conf:3:5: rule \"from all\": no action (table, goto, nop, blackhole, unreachable or prohibit)",
        ]
    );
}

/// keepalived's `vmac_prefix`: VMACs lb-node names are `<PREFIX>.<VRID>` (then keepalived's
/// `<PREFIX>6.`, `<PREFIX>1.`… on a clash), the prefix shortened to fit 15 bytes; the first
/// one written wins, as keepalived's; TOML's `vmac_prefix` is checked.
#[test]
fn vmac_prefix_names_the_vmacs() {
    let inst = |name: &str, vrid: u8| {
        format!("vrrp_instance {name} {{\n    interface eth0\n    virtual_router_id {vrid}\n    use_vmac\n    virtual_ipaddress {{\n        198.18.0.{vrid}\n    }}\n}}\n")
    };
    let text = "global_defs {\n    vmac_prefix lbv\n    vmac_prefix other\n}\n".to_owned()
        + &inst("A", 51)
        + &inst("B", 200);
    let (k, w) = keepalived_ok(&text);
    assert_eq!(
        w,
        ["3:5: `vmac_prefix` is set again; the first value wins, as in keepalived (set at 2:5): this one is ignored"]
    );
    let names: Vec<Option<&str>> = k
        .vrrp_instances
        .iter()
        .map(|v| v.vmac_name.as_deref())
        .collect();
    assert_eq!(names, [Some("lbv.51"), Some("lbv.200")]);
    let (k, _) = keepalived_ok(
        &("global_defs {\n    vmac_prefix abcdefghijkl\n}\n".to_owned() + &inst("B", 200)),
    );
    assert_eq!(
        k.vrrp_instances[0].vmac_name.as_deref(),
        Some("abcdefghijk.200")
    );
    let toml = |p: &str| {
        format!("[global]\nvmac_prefix = \"{p}\"\n[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nuse_vmac = true\nvirtual_ipaddress = [\"198.18.0.51\"]\n")
    };
    assert_eq!(
        load_toml(&toml("lbv")).vrrp_instances[0]
            .vmac_name
            .as_deref(),
        Some("lbv.51")
    );
    let e = errors("lb.toml", &toml("a b")).join("\n");
    assert!(
        e.contains("lb.toml:2:15") && e.contains("give 1 to 12 ASCII letters"),
        "{e}"
    );
}

/// keepalived 2.2.7 steps over the word after `inet`/`inet6` in a route or rule (a bug):
/// lb-node reads the line as written, and says where the two differ.
#[test]
fn inet_in_routes_and_rules_is_warned() {
    let (k, w) = keepalived_ok(
        "static_routes {\n    inet6 default via fd00:18::1\n}\nstatic_rules {\n    inet6 not from fd00:18::/64 table 9 priority 9\n}\n",
    );
    assert!(k.static_routes[0].is_v6() && k.static_rules[0].not);
    assert_eq!(
        w,
        [
            "2:11: keepalived 2.2.7 skips the word after `inet6` (\"default\"): lb-node reads it; write the family-free form for both",
            "5:11: keepalived 2.2.7 skips the word after `inet6` (\"not\"): lb-node reads it; write the family-free form for both",
        ]
    );
}

/// keepalived's `promote_secondaries`: read in both formats; with `use_vmac` keepalived.conf
/// drops it with a warning (keepalived: "automatically set for vmacs - ignoring") and TOML
/// refuses it.
#[test]
fn promote_secondaries_is_read() {
    let inst = |extra: &str| {
        format!("vrrp_instance A {{\n    interface eth0\n    virtual_router_id 51\n    promote_secondaries\n{extra}    virtual_ipaddress {{\n        198.18.0.51\n    }}\n}}\n")
    };
    let (k, w) = keepalived_ok(&inst(""));
    assert!(
        k.vrrp_instances[0].promote_secondaries && w.is_empty(),
        "{w:?}"
    );
    let (k, w) = keepalived_ok(&inst("    use_vmac\n"));
    assert!(!k.vrrp_instances[0].promote_secondaries);
    assert_eq!(
        w,
        ["1:1: vrrp_instance A: promote_secondaries with use_vmac, ignored (keepalived: automatically set for vmacs)"]
    );
    let toml = |extra: &str| {
        format!("[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npromote_secondaries = true\n{extra}virtual_ipaddress = [\"198.18.0.51\"]\n")
    };
    assert!(load_toml(&toml("")).vrrp_instances[0].promote_secondaries);
    let e = errors("lb.toml", &toml("use_vmac = true\n")).join("\n");
    assert!(
        e.contains("promote_secondaries with use_vmac: the VMAC gets it anyway"),
        "{e}"
    );
}

/// keepalived's `garp_group`: `interface` lines and the `interfaces` block make one group;
/// as keepalived, an interface already in a group is ignored in a later one (warned), a
/// group without an interval is removed (warned), and a bad interval is an error at its
/// value. TOML takes `[[garp_group]]` tables and refuses what keepalived.conf warns about.
#[test]
fn garp_group_is_read() {
    let text = "garp_group {\n    garp_interval 0.001\n    interface eth0\n    interface eth1\n    interfaces {\n        eth2 eth3\n    }\n}\n\
                garp_group {\n    gna_interval 0.000250\n    interfaces {\n        eth2\n        eth4\n    }\n}\n\
                garp_group {\n    interface eth5\n}\n";
    let (k, w) = keepalived_ok(text);
    let ms = Duration::from_millis;
    assert_eq!(k.garp_groups.len(), 2, "{:?}", k.garp_groups);
    assert_eq!(
        k.garp_groups[0].interfaces,
        ["eth0", "eth1", "eth2", "eth3"]
    );
    assert_eq!(
        (
            k.garp_groups[0].garp_interval,
            k.garp_groups[0].gna_interval
        ),
        (Some(ms(1)), None)
    );
    assert_eq!(k.garp_groups[1].interfaces, ["eth4"]);
    assert_eq!(
        k.garp_groups[1].gna_interval,
        Some(Duration::from_micros(250))
    );
    assert_eq!(
        w,
        [
            "12:9: garp_group already given for eth2: this one is ignored, as keepalived ignores it",
            "16:1: garp_group without garp_interval or gna_interval: removed, as keepalived removes it",
        ]
    );
    assert_eq!(
        errors(
            "k.conf",
            "garp_group {\n    garp_interval 2148\n    interface eth0\n}\n"
        ),
        ["k.conf:2:19: garp_group garp_interval 2148 is out of range 0..=2147.483647 s"]
    );

    let t = load_toml(
        "[[garp_group]]\ninterfaces = [\"eth0\", \"eth1\"]\ngarp_interval = \"250us\"\ngna_interval = 0.5\n",
    );
    assert_eq!(
        t.garp_groups,
        [GarpGroup {
            interfaces: vec!["eth0".into(), "eth1".into()],
            garp_interval: Some(Duration::from_micros(250)),
            gna_interval: Some(ms(500)),
        }]
    );
    let e = errors(
        "lb.toml",
        "[[garp_group]]\ninterfaces = [\"eth0\"]\ngarp_interval = \"1ms\"\n\
         [[garp_group]]\ninterfaces = [\"eth0\"]\n\
         [[vrrp_instance]]\nname = \"A\"\ninterface = \"eth1\"\nvirtual_router_id = 51\nuse_vmac = true\nvirtual_ipaddress = [\"198.18.0.51\"]\n\
         [[garp_group]]\ninterfaces = [\"vrrp.51\"]\ngarp_interval = \"1ms\"\n",
    )
    .join("\n");
    for want in [
        "eth0 is already in a garp_group",
        "a garp_group needs garp_interval or gna_interval",
        "vrrp.51 is a VRRP instance's VMAC",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// keepalived's `misc_timeout 0`: no timeout of its own, the virtual server's `delay_loop`
/// (check_misc.c), in both formats — not a run killed at once.
#[test]
fn misc_timeout_zero_is_the_delay_loop() {
    let (k, _) = keepalived_ok(
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    delay_loop 60\n    real_server 198.18.0.151 82 {\n        MISC_CHECK {\n            misc_path /bin/true\n            misc_timeout 0\n        }\n    }\n}\n",
    );
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\ndelay_loop = 60\n\
         [[virtual_server.backend]]\naddress = \"198.18.0.151:82\"\n\
         [[virtual_server.backend.check]]\ntype = \"misc\"\nmisc_path = \"/bin/true\"\nmisc_timeout = 0\n",
    );
    for cfg in [&k, &t] {
        let vs = &cfg.virtual_servers[0];
        assert_eq!(
            vs.backends[0].checks[0].timeout(vs),
            Duration::from_secs(60)
        );
    }
}

/// keepalived.conf: a `garp_group` naming an instance's VMAC loses that interface with a
/// warning, as keepalived ignores it; a group left empty goes with it.
#[test]
fn keepalived_garp_group_ignores_vmacs() {
    let (k, w) = keepalived_ok(
        "garp_group {\n    garp_interval 0.001\n    interfaces {\n        eth0\n        vrrp.51\n    }\n}\n\
         garp_group {\n    garp_interval 0.002\n    interface vrrp.51\n}\n\
         vrrp_instance A {\n    interface eth1\n    virtual_router_id 51\n    use_vmac\n    virtual_ipaddress {\n        198.18.0.51\n    }\n}\n",
    );
    assert_eq!(k.garp_groups.len(), 1, "{:?}", k.garp_groups);
    assert_eq!(k.garp_groups[0].interfaces, ["eth0"]);
    assert!(
        w.iter().any(|w| w.starts_with("5:9: vrrp.51 is a VMAC")),
        "{w:?}"
    );
}

/// keepalived keywords whose handler reads no argument (`nopreempt`, `accept`,
/// `no_accept`, a virtual server's `alpha`, `ops` and `inhibit_on_failure`,
/// `misc_dynamic`, `regex_no_match`, the global `vrrp_skip_check_adv_addr`) are on
/// whatever follows them: `nopreempt off` is nopreempt in keepalived 2.2.7. lb-node used
/// to read `off` as off, the opposite of keepalived on every one. Warned about.
#[test]
fn argument_less_keepalived_flags_are_on_whatever_follows() {
    let text = format!(
        "global_defs {{\n    vrrp_skip_check_adv_addr off\n}}\n{}virtual_server 198.18.0.250 80 {{\n    protocol TCP\n    alpha off\n    inhibit_on_failure no\n    real_server 198.18.0.2 80 {{\n        MISC_CHECK {{\n            misc_path /bin/true\n            misc_dynamic off\n        }}\n    }}\n}}\n",
        BASE_INSTANCE.replace(
            "    priority 100\n",
            "    priority 100\n    nopreempt off\n    accept false\n"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(&p, text).unwrap();
    let (cfg, w) = ok(&p);
    let vi = &cfg.vrrp_instances[0];
    assert!(
        vi.nopreempt && vi.accept && vi.skip_check_adv_addr,
        "{vi:?}"
    );
    let vs = &cfg.virtual_servers[0];
    assert!(vs.alpha);
    let rs = &vs.backends[0];
    assert!(rs.inhibit_on_failure);
    match &rs.checks[0].kind {
        CheckKind::Misc(m) => assert!(m.misc_dynamic, "{m:?}"),
        other => panic!("{other:?}"),
    }
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 6, "{w:#?}");
    assert!(
        w.iter().any(
            |w| w.contains("`nopreempt` takes no argument: \"off\" ignored and the setting on")
        ),
        "{w:#?}"
    );
    // A keyword that takes a <BOOL> compares it exactly, as keepalived's check_true_false.
    assert_eq!(
        errors(
            "k.conf",
            &BASE_INSTANCE.replace("    priority 100\n", "    priority 100\n    lower_prio_no_advert ON\n")
        ),
        ["k.conf:5:26: `lower_prio_no_advert` takes on|off|true|false|yes|no or nothing, not \"ON\""]
    );
}

/// keepalived's `decomment`: `\#` and `\!` outside quotes are the characters; text inside
/// `"…"` is taken as written (`alloc_strvec_r`), backslashes included. lb-node read
/// `auth_pass ab\#cd` as `ab\` (a password keepalived peers would not share) and
/// `router_id "lb\one"` as `lbone`.
#[test]
fn backslashes_read_as_keepalived_reads_them() {
    let text = format!(
        "global_defs {{\n    router_id \"lb\\one\"\n}}\n{}",
        BASE_INSTANCE.replace(
            "    priority 100\n",
            "    priority 100\n    authentication {\n        auth_type PASS\n        auth_pass ab\\#c\\!d # a comment\n    }\n"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(&p, text).unwrap();
    let (cfg, w) = ok(&p);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.global.router_id.as_deref(), Some("lb\\one"));
    let auth = cfg.vrrp_instances[0].authentication.as_ref().unwrap();
    assert_eq!(auth.auth_pass, "ab#c!d");
}

/// Script lines are read as keepalived re-reads them (`alloc_strvec_quoted_escaped`):
/// `'…'` quotes as `"…"` does, and only the first word is the command. A single-quoted
/// `script` used to reach `sh -c` with its quotes (never found: the check always
/// failed), a single-quoted `misc_path` was one program name, and a single-quoted
/// notify script took its second word for a user.
#[test]
fn script_lines_are_read_with_keepalived_quoting() {
    let text = format!(
        "vrrp_script chk {{\n    script '/usr/bin/killall -0 haproxy'\n}}\nvrrp_script chk2 {{\n    script /bin/false --x\n}}\n{}virtual_server 198.18.0.250 80 {{\n    protocol TCP\n    real_server 198.18.0.2 80 {{\n        MISC_CHECK {{\n            misc_path '/bin/test -e \"/etc/a b\"'\n        }}\n    }}\n}}\n",
        BASE_INSTANCE.replace(
            "    priority 100\n",
            "    priority 100\n    notify_master '/bin/echo became master' root\n    notify_backup \"/bin/echo \\\"x y\\\"\"\n"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(&p, text).unwrap();
    let (cfg, w) = ok(&p);
    assert_eq!(cfg.vrrp_scripts[0].script, "/usr/bin/killall -0 haproxy");
    // keepalived runs `/bin/false` alone; warned.
    assert_eq!(cfg.vrrp_scripts[1].script, "/bin/false");
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains(":5:23: warning: keepalived runs only the first word, \"/bin/false\", and ignores \"--x\""),
        "{}",
        w[0]
    );
    let vi = &cfg.vrrp_instances[0];
    let master = vi.notify_master.as_ref().unwrap();
    assert_eq!(master.command, "/bin/echo became master");
    assert_eq!(master.user.as_deref(), Some("root"));
    assert_eq!(
        vi.notify_backup.as_ref().unwrap().command,
        "/bin/echo \"x y\""
    );
    match &cfg.virtual_servers[0].backends[0].checks[0].kind {
        CheckKind::Misc(m) => assert_eq!(m.misc_path, "/bin/test -e \"/etc/a b\""),
        other => panic!("{other:?}"),
    }
    // An unmatched quote is an error at the line, and the only one.
    assert_eq!(
        errors("k.conf", "vrrp_script chk {\n    script '/bin/true\n}\n"),
        ["k.conf:2:12: script: \"'/bin/true\": the ' quote is missing its closing '"]
    );
}

/// `include` globs as glibc's glob(3): `*` matches no leading dot, `**` is `*`, `[^…]`
/// negates; files with an execute permission and directories are skipped (keepalived's
/// `check_glob_file`); the rest of the line is one pattern (`check_include`). lb-node read
/// hidden and executable files, descended into subdirectories for `**`, took `[^` as a
/// literal `^`, and included `a.conf` alone from `include a.conf b.conf`.
#[test]
fn include_globs_as_glibc() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let instance = |name: &str, vrid: u8| {
        BASE_INSTANCE
            .replace("VI_1", name)
            .replace("virtual_router_id 51", &format!("virtual_router_id {vrid}"))
    };
    std::fs::create_dir_all(d.join("conf.d/sub")).unwrap();
    std::fs::write(d.join("conf.d/a.conf"), instance("VI_A", 51)).unwrap();
    std::fs::write(d.join("conf.d/.hidden.conf"), instance("VI_H", 52)).unwrap();
    std::fs::write(d.join("conf.d/x.conf"), instance("VI_X", 53)).unwrap();
    std::fs::write(d.join("conf.d/run.conf"), instance("VI_R", 54)).unwrap();
    std::fs::set_permissions(
        d.join("conf.d/run.conf"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(d.join("conf.d/sub/deep.conf"), instance("VI_D", 55)).unwrap();
    let names = |main: &str| -> (Vec<String>, Vec<String>) {
        std::fs::write(d.join("main.conf"), main).unwrap();
        let (cfg, w) = ok(&d.join("main.conf"));
        (
            cfg.vrrp_instances.iter().map(|v| v.name.clone()).collect(),
            w.iter().map(ToString::to_string).collect(),
        )
    };
    let (n, w) = names("include conf.d/*.conf\n");
    assert_eq!(n, ["VI_A", "VI_X"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("run.conf is executable"), "{w:?}");
    let (n, _) = names("include conf.d/**.conf\n");
    assert_eq!(n, ["VI_A", "VI_X"]);
    let (n, _) = names("include conf.d/**/*.conf\n");
    assert_eq!(n, ["VI_D"]);
    let (n, w) = names("include conf.d/[^xr]*.conf\n");
    assert_eq!(n, ["VI_A"]);
    assert!(w.is_empty(), "{w:?}");
    // Two words: one pattern naming no file, as in keepalived.
    assert_eq!(
        errors_in(d, "main.conf", "include conf.d/a.conf conf.d/x.conf\n"),
        [format!(
            "main.conf:1:9: included file {}/conf.d/a.conf conf.d/x.conf does not exist",
            d.display()
        )]
    );
    // includer refuses the executable file.
    let e = errors_in(d, "main.conf", "includer conf.d/*.conf\n");
    assert!(
        e.iter().any(|e| e.contains("run.conf is executable")),
        "{e:?}"
    );
}

/// `errors` in a given directory (its files stay).
fn errors_in(dir: &Path, name: &str, text: &str) -> Vec<String> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let errs: Vec<ConfigError> = config::load(&path).expect_err("config should be refused");
    let prefix = format!("{}/", dir.display());
    errs.iter()
        .map(|e| e.to_string().replacen(&prefix, "", 1))
        .collect()
}

/// keepalived reads bytes: a Latin-1 comment is fine. lb-node refused the whole file
/// without a line; now a comment that is not UTF-8 is dropped, and anything else not
/// UTF-8 is an error at its line and column.
#[test]
fn non_utf8_bytes_are_fine_in_comments_and_located_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    let mut text = b"! Konfiguration f\xfcr Knoten A\n".to_vec();
    text.extend_from_slice(
        BASE_INSTANCE
            .replace("    priority 100\n", "    priority 100 # für\n")
            .as_bytes(),
    );
    std::fs::write(&p, &text).unwrap();
    let (cfg, w) = ok(&p);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.vrrp_instances[0].priority, 100);
    let mut bad = BASE_INSTANCE.as_bytes().to_vec();
    let at = bad.windows(3).position(|w| w == b"100").unwrap();
    bad.splice(at..at, b"1\xff".iter().copied());
    std::fs::write(&p, &bad).unwrap();
    let errs: Vec<String> = config::load(&p)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].ends_with("k.conf:4:15: not UTF-8 text (keepalived.conf is read as UTF-8; only comments may hold other bytes)"),
        "{errs:?}"
    );
}

/// A `misc_path` that does not read gives one error, not a second "no misc_path"; here
/// the line reads (one quoted word) and the command in it does not (keepalived splits it
/// again).
#[test]
fn an_unreadable_misc_path_is_one_error() {
    assert_eq!(
        errors(
            "k.conf",
            "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.2 80 {\n        MISC_CHECK {\n            misc_path \"/bin/x 'y\"\n        }\n    }\n}\n"
        ),
        ["k.conf:5:23: invalid misc_path: \"/bin/x 'y\": the ' quote is missing its closing '"]
    );
}

/// A `misc_path` line that does not read: one error, at the line.
#[test]
fn an_unterminated_misc_path_line_is_one_error() {
    assert_eq!(
        errors(
            "k.conf",
            "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    real_server 198.18.0.2 80 {\n        MISC_CHECK {\n            misc_path '/bin/x y\n        }\n    }\n}\n"
        ),
        ["k.conf:5:23: misc_path: \"'/bin/x y\": the ' quote is missing its closing '"]
    );
}

/// `maxconn` limits TCP connections only: on a UDP or HTTP virtual server it is warned
/// about as not applied, at the key (it was ignored without a word).
#[test]
fn maxconn_outside_tcp_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.toml");
    std::fs::write(
        &p,
        "[[virtual_server]]\nlisten = \"127.0.0.1:8053\"\nprotocol = \"udp\"\n[[virtual_server.backend]]\naddress = \"127.0.0.1:53\"\nmaxconn = 10\n",
    )
    .unwrap();
    let (_, w) = ok(&p);
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].ends_with("n.toml:6:11: warning: maxconn limits TCP connections only: not applied to this udp virtual server"),
        "{}",
        w[0]
    );
}

/// `slow_start` reaches the pool; with an algorithm that does not ramp it is warned about
/// at the key, and 0 s is refused.
#[test]
fn slow_start_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.toml");
    let vs = |algo: &str, slow: &str| {
        format!("[[virtual_server]]\nlisten = \"127.0.0.1:8080\"\nlb_algo = \"{algo}\"\nslow_start = {slow}\n[[virtual_server.backend]]\naddress = \"127.0.0.1:80\"\n")
    };
    std::fs::write(&p, vs("wlc", "\"20s\"")).unwrap();
    let (cfg, w) = ok(&p);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        cfg.virtual_servers[0].pool_config().slow_start,
        Some(Duration::from_secs(20))
    );
    std::fs::write(&p, vs("sh", "\"20s\"")).unwrap();
    let (_, w) = ok(&p);
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("n.toml:4:14: warning: lb_algo sh does not ramp weights"),
        "{}",
        w[0]
    );
    let e = errors("n.toml", &vs("wrr", "\"0s\""));
    assert!(
        e.len() == 1 && e[0].contains("n.toml:4:14: slow_start must be above 0 s"),
        "{e:?}"
    );
}

/// TOML's BFD intervals keep microseconds, as keepalived.conf's (`min_rx 1.5` is 1.5 ms):
/// `"1.5ms"`, `"1500us"` and `0.0015` were rounded to 2 ms or refused.
#[test]
fn toml_bfd_intervals_keep_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.toml");
    std::fs::write(
        &p,
        "[[bfd_instance]]\nname = \"gw\"\nneighbor_ip = \"198.18.0.1\"\nmin_rx = \"1.5ms\"\nmin_tx = \"1500us\"\nidle_tx = 1.0015\n",
    )
    .unwrap();
    let (cfg, _) = ok(&p);
    let b = &cfg.bfd_instances[0];
    assert_eq!(b.min_rx, Duration::from_micros(1500));
    assert_eq!(b.min_tx, Duration::from_micros(1500));
    assert_eq!(b.idle_tx, Duration::from_micros(1_001_500));
}

/// TOML's `persistence_granularity` on an IPv6 virtual server: a bare number above 32 says
/// how to write an IPv6 prefix ("32,64") instead of only that /64 is too long for IPv4,
/// and a bare number that leaves IPv6 clients ungrouped (/128) is warned about (it was
/// silent).
#[test]
fn toml_granularity_on_an_ipv6_virtual_server() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.toml");
    let vs = |g: &str| {
        format!("[[virtual_server]]\nlisten = \"[fd00:18::250]:80\"\npersistence_timeout = 60\npersistence_granularity = {g}\n[[virtual_server.backend]]\naddress = \"[fd00:18::2]:80\"\n")
    };
    std::fs::write(&p, vs("64")).unwrap();
    let e: Vec<String> = config::load(&p)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(e[0].contains("for an IPv6 one write \"32,64\""), "{e:?}");
    std::fs::write(&p, vs("\"32,64\"")).unwrap();
    let (cfg, w) = ok(&p);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.virtual_servers[0].persistence_granularity.v6_prefix, 64);
    std::fs::write(&p, vs("24")).unwrap();
    let (_, w) = ok(&p);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .contains("the IPv6 prefix (/128 here) groups the clients"),
        "{}",
        w[0]
    );
}

/// What keepalived 2.2.7 does with values it takes but adjusts, or statements it ignores
/// with an error and runs on: lb-node does the same, with a warning where keepalived logs
/// one. It refused these files, or ran them differently (a lowercase `state master` made
/// the node the address owner; a quorum above the real servers' weight kept the sorry
/// server in for good; a virtual server-level `weight` was an unknown keyword).
#[test]
fn keepalived_adjustments_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    let load = |text: &str| -> (Config, Vec<String>) {
        std::fs::write(&p, text).unwrap();
        let (c, w) = ok(&p);
        (c, w.iter().map(ToString::to_string).collect())
    };
    let warned =
        |w: &[String], what: &str| assert!(w.iter().any(|w| w.contains(what)), "{what}: {w:#?}");
    // state: exact capitals; a later BACKUP after MASTER is ignored.
    let (c, w) =
        load(&BASE_INSTANCE.replace("    priority 100\n", "    state master\n    nopreempt\n"));
    let vi = &c.vrrp_instances[0];
    assert_eq!(
        (vi.state, vi.priority, vi.nopreempt),
        (InitialState::Backup, 100, true)
    );
    warned(&w, "unknown state \"master\"");
    let (c, w) =
        load(&BASE_INSTANCE.replace("    priority 100\n", "    state MASTER\n    state BACKUP\n"));
    assert_eq!(
        (c.vrrp_instances[0].state, c.vrrp_instances[0].priority),
        (InitialState::Master, 255)
    );
    warned(&w, "state previously set as MASTER");
    // auth_pass truncated to 8 bytes; advert_int rounded or capped; garp_master_repeat
    // 0 is 1; preempt_delay above 1000 s is 0.
    let (c, w) = load(&BASE_INSTANCE.replace(
        "    priority 100\n",
        "    priority 100\n    authentication {\n        auth_type PASS\n        auth_pass 123456789\n    }\n    advert_int 1.6\n    garp_master_repeat 0\n    preempt_delay 1500\n",
    ));
    let vi = &c.vrrp_instances[0];
    assert_eq!(vi.authentication.as_ref().unwrap().auth_pass, "12345678");
    assert_eq!(vi.advert_int, Duration::from_secs(2));
    assert_eq!(vi.garp_master_repeat, 1);
    assert_eq!(vi.preempt_delay, Duration::ZERO);
    assert_eq!(w.len(), 4, "{w:#?}");
    let v3 = BASE_INSTANCE.replace(
        "    priority 100\n",
        "    priority 100\n    version 3\n    advert_int 50\n",
    );
    let (c, w) = load(&v3);
    assert_eq!(
        c.vrrp_instances[0].advert_int,
        Duration::from_millis(40_950)
    );
    warned(&w, "as keepalived rounds or caps it");
    // Outside 0.01..=255 s keepalived ignores advert_int ("not valid! ... ignoring"): the
    // default 1 s stays, on either version (it was capped to 40.95 s, 255 s or 10 ms).
    for (version, bad) in [("2", "256"), ("3", "300"), ("3", "0.005")] {
        let (c, w) = load(&BASE_INSTANCE.replace(
            "    priority 100\n",
            &format!("    priority 100\n    version {version}\n    advert_int {bad}\n"),
        ));
        assert_eq!(
            c.vrrp_instances[0].advert_int,
            Duration::from_secs(1),
            "{bad}"
        );
        assert!(
            w.iter().any(
                |w| w.starts_with(&format!("{}:6:16: warning: advert_int", p.display()))
                    && w.contains("outside 0.01..=255 s: ignored, 1s used")
            ),
            "{w:#?}"
        );
    }
    // track_interface naming the instance's own interface: dropped with a warning where
    // it was written (keepalived: "Ignoring track_interface lbnet0 since own interface"),
    // its weight not applied; the other entries keep their places and locations.
    let (c, w) = load(&BASE_INSTANCE.replace(
        "    priority 100\n",
        "    priority 100\n    dont_track_primary\n    track_interface {\n        lbnet0 weight 20\n        lbnet1 weight 5\n        lbnet2\n    }\n",
    ));
    let tracked: Vec<(&str, i32)> = c.vrrp_instances[0]
        .track_interface
        .iter()
        .map(|t| (t.interface.as_str(), t.weight))
        .collect();
    assert_eq!(tracked, [("lbnet1", 5), ("lbnet2", 0)]);
    assert!(
        w.iter().any(|w| w.starts_with(&format!("{}:7:9: warning: vrrp_instance VI_1: track_interface lbnet0 is the instance's own interface", p.display()))),
        "{w:#?}"
    );
    // IPVS scheduler flags and other virtual_server keywords keepalived knows: said what
    // lb-node does instead, not called unknown.
    let (_, w) = load(
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    lb_algo sh\n    sh-port\n    sh-fallback\n    mh-port\n    persistence_engine sip\n    snmp_name web\n    real_server 198.18.0.151 80 {\n    }\n}\n",
    );
    for (line, what) in [
        (
            4,
            "`sh-port` in virtual_server is ignored: IPVS hashes the client's port",
        ),
        (
            5,
            "`sh-fallback` in virtual_server is ignored: lb-node's sh and mh always fall back",
        ),
        (6, "`mh-port` in virtual_server is ignored"),
        (7, "`persistence_engine` in virtual_server is ignored"),
        (8, "`snmp_name` in virtual_server is ignored"),
    ] {
        assert!(
            w.iter()
                .any(|w| w.contains(&format!(":{line}:5: warning: {what}"))),
            "{what}: {w:#?}"
        );
    }
    assert!(!w.iter().any(|w| w.contains("unknown keyword")), "{w:#?}");
    // Virtual servers: `weight` is the real servers' default; quorum above their total
    // weight is lowered to it, hysteresis to quorum - 1; retry 0 is ignored; a real
    // server of the other family is skipped; one without real servers is dropped.
    let (c, w) = load(
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    lb_algo RR\n    weight 5\n    retry 0\n    quorum 100\n    hysteresis 200\n    real_server 198.18.0.151 80 {\n    }\n    real_server 198.18.0.152 80 {\n        weight 2\n    }\n    real_server fd00:18::3 80 {\n    }\n}\nvirtual_server 198.18.0.250 81 {\n    protocol TCP\n    sorry_server 198.18.0.200 80\n}\n",
    );
    assert_eq!(
        c.virtual_servers.len(),
        1,
        "the one without real servers is dropped"
    );
    let vs = &c.virtual_servers[0];
    let weights: Vec<u64> = vs
        .backends
        .iter()
        .map(|b| u64::from(b.weight.get()))
        .collect();
    assert_eq!(weights, [5, 2]);
    assert_eq!((vs.quorum, vs.hysteresis), (7, 6));
    warned(&w, "quorum 100 exceeds the real servers' total weight 7");
    warned(&w, "hysteresis 200 is not below quorum 7");
    warned(&w, "retry 0 ignored");
    warned(&w, "is not of the virtual server's address family");
    warned(&w, "virtual server without real servers: ignored");
    warned(&w, "lb_algo \"RR\" is not an IPVS scheduler name");
    // Sync groups: an unknown member, or one already in another group, is ignored.
    let two = BASE_INSTANCE
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id 51", "virtual_router_id 52");
    let three = BASE_INSTANCE
        .replace("VI_1", "VI_3")
        .replace("virtual_router_id 51", "virtual_router_id 53");
    let (c, w) = load(&format!(
        "{BASE_INSTANCE}{two}{three}vrrp_sync_group A {{\n    group {{\n        VI_1\n        VI_9\n        VI_2\n    }}\n}}\nvrrp_sync_group B {{\n    group {{\n        VI_2\n        VI_3\n    }}\n}}\n"
    ));
    assert_eq!(c.sync_groups[0].group, ["VI_1", "VI_2"]);
    assert_eq!(c.sync_groups[1].group, ["VI_3"]);
    warned(&w, "names no vrrp_instance \"VI_9\"");
    warned(&w, "vrrp_instance VI_2 is already in vrrp_sync_group A");
}

/// A sync group with an address owner (priority 255) cannot weight its tracks: keepalived
/// clears the weights (a failure faults the group). lb-node copied them into every member.
#[test]
fn a_sync_group_with_an_owner_clears_its_track_weights() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    let one = BASE_INSTANCE.replace("    priority 100\n", "    priority 255\n");
    let two = BASE_INSTANCE
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id 51", "virtual_router_id 52");
    std::fs::write(
        &p,
        format!("vrrp_script chk {{\n    script /bin/true\n}}\n{one}{two}vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_2\n    }}\n    track_script {{\n        chk weight -20\n    }}\n}}\n"),
    )
    .unwrap();
    let (c, w) = ok(&p);
    for vi in &c.vrrp_instances {
        assert_eq!(vi.track_script[0].weight, Some(0), "{}", vi.name);
    }
    assert!(
        w.iter().any(|w| w
            .to_string()
            .contains("weight -20 cleared: member VI_1 has priority 255")),
        "{w:?}"
    );
}

/// TOML checks take their virtual server's `connect_timeout` when they set none, as
/// keepalived.conf's do (keepalived `validate_check_config`); they kept 5 s, so a
/// keepalived.conf translated key for key into TOML changed its check timeouts.
#[test]
fn toml_checks_inherit_the_virtual_servers_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.toml");
    std::fs::write(
        &p,
        "[[virtual_server]]\nlisten = \"127.0.0.1:80\"\nconnect_timeout = \"1s\"\n[[virtual_server.backend]]\naddress = \"127.0.0.1:81\"\n[[virtual_server.backend.check]]\ntype = \"tcp\"\n[[virtual_server.backend.check]]\ntype = \"http\"\nurl = [{ path = \"/\" }]\nconnect_timeout = \"2s\"\n",
    )
    .unwrap();
    let (c, _) = ok(&p);
    let checks = &c.virtual_servers[0].backends[0].checks;
    assert_eq!(checks[0].connect_timeout, Duration::from_secs(1));
    assert_eq!(checks[1].connect_timeout, Duration::from_secs(2));
    // And the same file in keepalived.conf gives the same model.
    let k = dir.path().join("k.conf");
    std::fs::write(
        &k,
        "virtual_server 127.0.0.1 80 {\n    protocol TCP\n    lb_algo rr\n    connect_timeout 1\n    real_server 127.0.0.1 81 {\n        TCP_CHECK {\n        }\n        HTTP_GET {\n            url {\n                path /\n            }\n            connect_timeout 2\n        }\n    }\n}\n",
    )
    .unwrap();
    let (kc, _) = ok(&k);
    let kchecks = &kc.virtual_servers[0].backends[0].checks;
    assert_eq!(kchecks[0].connect_timeout, Duration::from_secs(1));
    assert_eq!(kchecks[1].connect_timeout, Duration::from_secs(2));
}

/// Where keepalived reads whole seconds only (`vrrp_script interval`, `persistence_timeout`,
/// …), a fraction or a unit is taken as written and warned about: keepalived would refuse
/// it and keep its default. It was taken silently.
#[test]
fn fractions_where_keepalived_reads_whole_seconds_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(
        &p,
        "vrrp_script chk {\n    script /bin/true\n    interval 0.5\n    timeout 2\n}\nvirtual_server 198.18.0.250 80 {\n    protocol TCP\n    persistence_timeout 2m\n    real_server 198.18.0.2 80 {\n    }\n}\n",
    )
    .unwrap();
    let (c, w) = ok(&p);
    assert_eq!(c.vrrp_scripts[0].interval, Duration::from_millis(500));
    assert_eq!(
        c.virtual_servers[0].persistence_timeout,
        Some(Duration::from_secs(120))
    );
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].contains("k.conf:3:14: warning: keepalived reads `interval` in whole seconds and would ignore \"0.5\""), "{}", w[0]);
    assert!(
        w[1].contains("keepalived reads `persistence_timeout` in whole seconds"),
        "{}",
        w[1]
    );
}

/// Backslash pairs are read left to right as keepalived's `decomment` reads them: in
/// `foo\\#bar` the pair is `\\` and the `#` starts a comment (lb-node took `\#` and kept
/// the rest); a sync group left without members is removed, as keepalived removes it (it
/// made the file fail), and a member ignored in a later group keeps its own group's
/// `notify_priority_changes`; an `auth_pass` whose 8 bytes end inside a character is an
/// error (keepalived would send a partial character).
#[test]
fn review_of_the_keepalived_reader_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(
        &p,
        format!("global_defs {{\n    router_id foo\\\\#bar\n}}\n{BASE_INSTANCE}"),
    )
    .unwrap();
    let (c, w) = ok(&p);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.global.router_id.as_deref(), Some("foo\\\\"));

    let two = BASE_INSTANCE
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id 51", "virtual_router_id 52");
    let three = BASE_INSTANCE
        .replace("VI_1", "VI_3")
        .replace("virtual_router_id 51", "virtual_router_id 53");
    std::fs::write(
        &p,
        format!("{BASE_INSTANCE}{two}{three}vrrp_sync_group G0 {{\n    group {{\n        NOPE\n    }}\n}}\nvrrp_sync_group G1 {{\n    group {{\n        VI_1\n        VI_2\n    }}\n}}\nvrrp_sync_group G2 {{\n    group {{\n        VI_1\n        VI_3\n    }}\n    notify_priority_changes\n}}\n"),
    )
    .unwrap();
    let (c, w) = ok(&p);
    let names: Vec<&str> = c.sync_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["G1", "G2"]);
    assert_eq!(c.sync_groups[1].group, ["VI_3"]);
    let npc: Vec<bool> = c
        .vrrp_instances
        .iter()
        .map(|v| v.notify_priority_changes)
        .collect();
    assert_eq!(npc, [false, false, true], "VI_1 is G1's");
    assert!(
        w.iter().any(|w| w
            .to_string()
            .contains("vrrp_sync_group G0 has no member left: removed")),
        "{w:?}"
    );

    let e = errors(
        "k.conf",
        &BASE_INSTANCE.replace(
            "    priority 100\n",
            "    priority 100\n    authentication {\n        auth_type PASS\n        auth_pass abcdefgé\n    }\n",
        ),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("end inside a non-ASCII character"), "{e:?}");
}

/// keepalived's tracking as its code reads it: a `vrrp_track_process` without `weight`
/// has weight 0 (a lost process faults the instance; lb-node gave it 1, costing nothing),
/// `quorum_max 0` makes the quorum 0 (lb-node refused `quorum 1` with it), a tracked
/// interface's or script's weight ±254 is ±253, and a `vrrp_script` weight of ±254 is
/// ignored (0), each with a warning.
#[test]
fn tracking_weights_as_keepalived_sets_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(
        &p,
        format!(
            "vrrp_track_process tp {{\n    process revjproc\n}}\nvrrp_track_process none {{\n    process other\n    quorum 1\n    quorum_max 0\n}}\nvrrp_script chk {{\n    script /bin/true\n    weight 254\n}}\n{}",
            BASE_INSTANCE.replace(
                "    priority 100\n",
                "    priority 100\n    track_process {\n        tp\n    }\n    track_script {\n        chk weight -254\n    }\n    track_interface {\n        lbnet1 weight 254\n    }\n"
            )
        ),
    )
    .unwrap();
    let (c, w) = ok(&p);
    assert_eq!(c.vrrp_track_processes[0].weight, 0);
    assert_eq!(c.vrrp_track_processes[1].quorum, Some(0));
    assert_eq!(c.vrrp_scripts[0].weight, 0);
    let vi = &c.vrrp_instances[0];
    assert_eq!(vi.track_script[0].weight, Some(-253));
    assert_eq!(vi.track_interface[0].weight, 253);
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 3, "{w:#?}");
}

/// A script line with shell syntax outside quotes is warned about: keepalived runs its
/// words without a shell, lb-node with `/bin/sh -c`; a shell named as the program, or
/// syntax inside quotes, reads the same either way and is not.
#[test]
fn shell_syntax_in_scripts_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.conf");
    std::fs::write(
        &p,
        "vrrp_script a {\n    script \"/bin/false || /bin/true\"\n}\nvrrp_script b {\n    script \"/bin/sh -c 'pidof x || exit 1'\"\n}\nvrrp_script c {\n    script \"/usr/bin/grep 'a|b' /etc/hosts\"\n}\n",
    )
    .unwrap();
    let (_, w) = ok(&p);
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains("k.conf:2:12: warning: script: \"/bin/false || /bin/true\" has shell syntax"),
        "{}",
        w[0]
    );
}

/// `[virtual_server.tcp]` parses into lb-proxy's settings, and each bad value names its key.
#[test]
fn tcp_settings_parse_and_each_error_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.tcp]\nsend_proxy = \"v2\"\naccept_proxy = true\nidle_timeout = \"0s\"\nmaxqueue = 0\nsource = \"198.18.0.10\"\nsplice = false\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n",
    )
    .unwrap();
    let vs = &ok(&t).0.virtual_servers[0];
    let mut pc = lb_proxy::tcp::TcpProxyConfig::new(vec![vs.listen]);
    vs.tcp.clone().unwrap().apply(&mut pc);
    assert_eq!(pc.send_proxy, Some(lb_proxy::proxy_protocol::Version::V2));
    assert!(pc.accept_proxy.is_some());
    assert_eq!(pc.idle_timeout, None, "0 s: never idle");
    assert_eq!(pc.maxqueue, 0);
    assert_eq!(pc.source, Some("198.18.0.10".parse().unwrap()));
    assert_eq!(pc.forward_mode, lb_proxy::tcp::ForwardMode::Copy);
    assert_eq!(
        errors(
            "t.toml",
            "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.tcp]\nsend_proxy = \"v3\"\n"
        )
        .len(),
        1
    );
    assert_eq!(
        errors(
            "t.toml",
            "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.tcp]\nmaxconn = 0\ntimeout_queue = \"0s\"\nsource = \"fd00:18::1\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n"
        ),
        [
            "t.toml:4:11: maxconn 0 is outside 1..=4294967295",
            "t.toml:5:17: timeout_queue must be above 0 s",
            "t.toml:6:10: source fd00:18::1 is not of the address family of real server 198.18.0.151:80",
        ]
    );
    let e = errors(
        "t.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\nprotocol = \"udp\"\n[virtual_server.tcp]\nsplice = true\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("applies to protocol = \"tcp\" only"), "{e:?}");
}

/// `usesrc`: read onto lb-proxy's configuration; not with `source`, and not when a real
/// server is of an address family the listener's clients cannot have.
#[test]
fn usesrc_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    for (value, want) in [
        ("clientip", lb_proxy::tcp::UseSrc::ClientIp),
        ("client", lb_proxy::tcp::UseSrc::Client),
    ] {
        std::fs::write(
            &t,
            format!("[[virtual_server]]\nlisten = \"[::]:80\"\n[virtual_server.tcp]\nusesrc = \"{value}\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n"),
        )
        .unwrap();
        let vs = &ok(&t).0.virtual_servers[0];
        let mut pc = lb_proxy::tcp::TcpProxyConfig::new(vec![vs.listen]);
        vs.tcp.clone().unwrap().apply(&mut pc);
        assert_eq!(pc.usesrc, Some(want));
    }
    assert_eq!(
        errors(
            "t.toml",
            "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.tcp]\nusesrc = \"clientip\"\nsource = \"198.18.0.10\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n[[virtual_server.backend]]\naddress = \"[fd00:18::151]:80\"\n"
        ),
        [
            "t.toml:4:10: usesrc connects from the client's address: source cannot be set with it",
            "t.toml:4:10: usesrc: real servers 198.18.0.151:80 and [fd00:18::151]:80 are of two address families; a client reaches only those of its own",
            "t.toml:5:10: source 198.18.0.10 is not of the address family of real server [fd00:18::151]:80",
        ]
    );
    // A dual-stack listener before IPv4 real servers: its IPv6 clients fail, a warning.
    let (_, w) = ok(&t);
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].ends_with("t.toml:4:10: warning: usesrc: [::]:80 also takes IPv6 clients, which cannot reach IPv4 real server 198.18.0.151:80 from their address: their connections fail"),
        "{w:?}"
    );
    let e = errors(
        "t.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.tcp]\nusesrc = \"any\"\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    // UDP too.
    std::fs::write(
        &t,
        "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n[virtual_server.udp]\nusesrc = \"client\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n",
    )
    .unwrap();
    let vs = &ok(&t).0.virtual_servers[0];
    let mut uc = lb_proxy::udp::UdpProxyConfig::new(vec![vs.listen]);
    vs.udp.clone().unwrap().apply(&mut uc);
    assert_eq!(uc.usesrc, Some(lb_proxy::sockopt::UseSrc::Client));
    assert_eq!(
        errors(
            "t.toml",
            "[[virtual_server]]\nlisten = \"[fd00:18::250]:53\"\nprotocol = \"udp\"\n[virtual_server.udp]\nusesrc = \"clientip\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:53\"\n"
        ),
        ["t.toml:5:10: usesrc: real server 198.18.0.151:53 cannot be reached from the address of a client of [fd00:18::250]:53 (another address family)"]
    );
}

/// `[virtual_server.udp]`: read onto lb-proxy's UDP configuration, its values checked
/// where they are written, and only with `protocol = "udp"`.
#[test]
fn udp_settings_are_read_and_checked() {
    let t = load_toml(
        "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n[virtual_server.udp]\nidle_timeout = \"5s\"\nmax_sessions = 20000\n",
    );
    let mut uc = lb_proxy::udp::UdpProxyConfig::new(Vec::new());
    t.virtual_servers[0].udp.clone().unwrap().apply(&mut uc);
    assert_eq!(
        (uc.idle_timeout, uc.max_sessions),
        (Duration::from_secs(5), 20_000)
    );
    assert_eq!(
        errors(
            "t.toml",
            "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n[virtual_server.udp]\nidle_timeout = \"0s\"\nmax_sessions = 0\n"
        ),
        [
            "t.toml:5:16: idle_timeout must be above 0 s",
            "t.toml:6:16: max_sessions 0 is outside 1..=4294967295",
        ]
    );
    let e = errors(
        "t.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[virtual_server.udp]\nmax_sessions = 10\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("applies to protocol = \"udp\" only"), "{e:?}");
    let e = errors(
        "t.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:53\"\nprotocol = \"udp\"\n[virtual_server.udp]\nsessions = 10\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
}

/// Which checks send a PROXY header (HAProxy `check-send-proxy` and its default): those of
/// a `send_proxy` virtual server on its traffic address and port, in its version; with
/// `check_send_proxy = true` any TCP-based check (v1 without `send_proxy`), with `false`
/// none; never a check that opens no TCP connection, where the key is an error.
#[test]
fn checks_send_the_proxy_header_as_haproxy_s_do() {
    use lb_bins::config::model::ProxyVersion;
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    let config = |tcp: &str, checks: &str| {
        std::fs::write(
            &t,
            format!(
                "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n{tcp}\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n{checks}"
            ),
        )
        .unwrap();
        ok(&t).0.virtual_servers[0].clone()
    };
    let check = |body: &str| format!("[[virtual_server.backend.check]]\n{body}\n");
    let checks = [
        check("type = \"tcp\""),
        check("type = \"http\"\nurl = [{ path = \"/\" }]"),
        check("type = \"ssl\"\nurl = [{ path = \"/\" }]\nconnect_port = 443"),
        check("type = \"smtp\"\nconnect_ip = \"198.18.0.152\""),
        check("type = \"tcp\"\ncheck_send_proxy = false"),
        check("type = \"tcp\"\nconnect_port = 81\ncheck_send_proxy = true"),
        check("type = \"udp\""),
        check("type = \"tcp\"\nbindto = \"198.18.0.11\""),
        check("type = \"tcp\"\nconnect_ip = \"fd00:18::151\""),
    ]
    .concat();
    let vs = config(
        "[virtual_server.tcp]\nsend_proxy = \"v2\"\nsource = \"198.18.0.10\"",
        &checks,
    );
    let b = &vs.backends[0];
    let headers: Vec<_> = b.checks.iter().map(|c| c.proxy_header(&vs)).collect();
    let v2 = Some(ProxyVersion::V2);
    assert_eq!(
        headers,
        [v2, v2, None, None, None, v2, None, v2, None],
        "traffic address and port by default; false none; true also elsewhere; udp never"
    );
    // Without send_proxy: none by default, v1 when forced.
    let vs = config(
        "",
        &[
            check("type = \"http\"\nurl = [{ path = \"/\" }]"),
            check("type = \"tcp\"\ncheck_send_proxy = true"),
        ]
        .concat(),
    );
    let headers: Vec<_> = vs.backends[0]
        .checks
        .iter()
        .map(|c| c.proxy_header(&vs))
        .collect();
    assert_eq!(headers, [None, Some(ProxyVersion::V1)]);
    let e = errors(
        "t.toml",
        "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n[[virtual_server.backend.check]]\ntype = \"udp\"\ncheck_send_proxy = true\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("check_send_proxy applies to tcp, http, ssl and smtp checks, not udp"),
        "{e:?}"
    );
}

/// An HTTPS listener's files are read at load: one missing, a key that does not go with the
/// certificate, a certificate file without one and a `tls_key` alone are errors at their
/// key's line; a certificate file holding its key too (HAProxy's `crt`) is enough.
#[test]
fn tls_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // `san`: with a subject alternative name (`req -x509 -subj` alone names none).
    let gen_san = |name: &str, san: bool| {
        let (cert, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        let mut cmd = std::process::Command::new("openssl");
        if san {
            cmd.args(["req", "-addext", "subjectAltName=DNS:api.example.com"]);
        } else {
            cmd.arg("req");
        }
        let out = cmd
            .args([
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args([
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=www.example.com",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (cert, key)
    };
    let gen = |name: &str| gen_san(name, false);
    let (cert, key) = gen("a");
    let (_, other_key) = gen("b");
    let both = dir.path().join("both.pem");
    let mut text = std::fs::read(&cert).unwrap();
    text.extend(std::fs::read(&key).unwrap());
    std::fs::write(&both, text).unwrap();
    let vs = |tls: &str| {
        format!("[[virtual_server]]\nlisten = \"127.0.0.1:443\"\nprotocol = \"http\"\n[virtual_server.http]\n{tls}\n[[virtual_server.backend]]\naddress = \"127.0.0.1:80\"\n")
    };
    let t = dir.path().join("t.toml");
    std::fs::write(&t, vs(&format!("tls_certificate = \"{}\"", both.display()))).unwrap();
    let (c, _) = ok(&t);
    let http = c.virtual_servers[0].http.as_ref().unwrap();
    assert!(http.tls_termination().unwrap().is_some());
    assert!(
        !format!("{http:?}").contains("PRIVATE"),
        "the key's text is not shown by Debug"
    );
    std::fs::write(
        &t,
        vs(&format!(
            "tls_certificate = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        )),
    )
    .unwrap();
    ok(&t);

    let e = errors("t.toml", &vs("tls_certificate = \"/nonexistent/site.pem\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:5:19: tls_certificate /nonexistent/site.pem: No such file"),
        "{e:?}"
    );
    let e = errors(
        "t.toml",
        &vs(&format!(
            "tls_certificate = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            other_key.display()
        )),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:6:11: invalid tls key: does not go with the certificate"),
        "{e:?}"
    );
    let e = errors(
        "t.toml",
        &vs(&format!("tls_certificate = \"{}\"", cert.display())),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("no PEM private key"), "{e:?}");
    let e = errors(
        "t.toml",
        &vs(&format!("tls_certificate = \"{}\"", key.display())),
    );
    assert!(e[0].contains("no PEM certificate"), "{e:?}");
    let e = errors("t.toml", &vs(&format!("tls_key = \"{}\"", key.display())));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].ends_with("tls_key needs tls_certificate"), "{e:?}");
    // An SNI certificate's errors are at its own keys.
    let sni = |extra: &str| {
        format!(
            "[[virtual_server]]\nlisten = \"127.0.0.1:443\"\nprotocol = \"http\"\n[virtual_server.http]\ntls_certificate = \"{}\"\n[[virtual_server.http.tls_sni]]\n{extra}\n[[virtual_server.backend]]\naddress = \"127.0.0.1:80\"\n",
            both.display()
        )
    };
    let e = errors(
        "t.toml",
        &sni(&format!(
            "certificate = \"{}\"\nkey = \"{}\"",
            cert.display(),
            other_key.display()
        )),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:8:7: invalid tls key: does not go with the certificate"),
        "{e:?}"
    );
    // openssl's `req -x509 -subj /CN=…` names no subject alternative name: as a `tls_sni`
    // certificate SNI would never choose it (it was taken and never served).
    let e = errors(
        "t.toml",
        &sni(&format!(
            "certificate = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        )),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:7:15: invalid tls sni certificate: no DNS name in its subject alternative names"
        ),
        "{e:?}"
    );
    let e = errors("t.toml", &sni("certificate = \"/nonexistent/api.pem\""));
    assert!(
        e[0].starts_with("t.toml:7:15: tls_sni[0].certificate /nonexistent/api.pem: No such file"),
        "{e:?}"
    );
    let (api_cert, api_key) = gen_san("api", true);
    std::fs::write(
        &t,
        sni(&format!(
            "certificate = \"{}\"\nkey = \"{}\"",
            api_cert.display(),
            api_key.display()
        )),
    )
    .unwrap();
    ok(&t);
}

/// `redirect_https` reaches lb-proxy with its port; on the HTTPS listener it would redirect
/// to itself, it is an error.
#[test]
fn redirect_https_reaches_the_proxy_and_refuses_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        "[[virtual_server]]\nlisten = \"127.0.0.1:80\"\nprotocol = \"http\"\n[virtual_server.http]\nredirect_https = true\nredirect_https_port = 8443\n",
    )
    .unwrap();
    let c = ok(&t).0;
    let pc = c.virtual_servers[0].http_proxy_config().unwrap();
    assert_eq!(pc.redirect_https, Some(8443));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e = errors(
        "t.toml",
        &format!(
            "[[virtual_server]]\nlisten = \"127.0.0.1:443\"\nprotocol = \"http\"\n[virtual_server.http]\nredirect_https = true\ntls_certificate = \"{}\"\n",
            root.join("conf/tls/api.example.pem").display()
        ),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:5:18: redirect_https on the HTTPS listener"),
        "{e:?}"
    );
}

/// `all_backups` (HAProxy `option allbackups`) reaches the pool; off by default, as
/// HAProxy's.
#[test]
fn all_backups_reaches_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    for (line, want) in [("", false), ("all_backups = true\n", true)] {
        std::fs::write(
            &t,
            format!("[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n{line}[[virtual_server.backend]]\naddress = \"198.18.0.151:80\"\n"),
        )
        .unwrap();
        assert_eq!(ok(&t).0.virtual_servers[0].pool_config().all_backups, want);
    }
    let k = dir.path().join("k.conf");
    std::fs::write(
        &k,
        "virtual_server 198.18.0.250 80 {\n    protocol TCP\n    all_backups\n    real_server 198.18.0.151 80 {\n    }\n}\n",
    )
    .unwrap();
    let (c, w) = ok(&k);
    assert!(w.is_empty(), "{w:?}");
    assert!(c.virtual_servers[0].pool_config().all_backups);
}

/// A TOML number too large for its setting is said as keepalived.conf's reader says it,
/// not in serde's words (`invalid value: integer `300`, expected u8`).
#[test]
fn toml_number_out_of_range_names_the_range() {
    assert_eq!(
        errors(
            "v.toml",
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 300\n"
        ),
        ["v.toml:4:21: 300 is out of range 1..=255"]
    );
    // A priority too large: its own range, as keepalived.conf's reader says it.
    assert_eq!(
        errors(
            "v.toml",
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 3\npriority = 256\n"
        ),
        ["v.toml:5:12: 256 is out of range 1..=255"]
    );
    // Another u8 setting keeps its type's range.
    let e = errors(
        "v.toml",
        "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 3\nunicast_ttl = 300\n",
    );
    assert!(e[0].ends_with("300 is out of range 0..=255"), "{e:?}");
}

/// `type = "grpc"` loads with its options (`grpc_service`, `grpc_tls`, `virtualhost` as
/// the `:authority`); its options on another kind, and another kind's on it, are errors at
/// their line.
#[test]
fn grpc_checks_load_and_their_options_are_checked() {
    let vs = |check: &str| {
        format!(
            "[[virtual_server]]\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:50051\"\n\
             [[virtual_server.backend.check]]\n{check}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        vs("type = \"grpc\"\ngrpc_service = \"echo.Echo\"\ngrpc_tls = true\nvirtualhost = \"echo.internal\""),
    )
    .unwrap();
    let (c, w) = ok(&t);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        c.virtual_servers[0].backends[0].checks[0].kind,
        CheckKind::Grpc(GrpcCheck {
            service: "echo.Echo".into(),
            authority: Some("echo.internal".into()),
            tls: true,
        })
    );
    let e = errors("t.toml", &vs("type = \"tcp\"\ngrpc_service = \"x\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("grpc_service and grpc_tls apply to grpc checks, not tcp"),
        "{e:?}"
    );
    let e = errors("t.toml", &vs("type = \"grpc\"\nvirtualhost = \"a b\""));
    assert!(
        e[0].contains("virtualhost \"a b\" is not an authority (host[:port]) for a grpc check"),
        "{e:?}"
    );
    let e = errors("t.toml", &vs("type = \"grpc\"\nurl = [{ path = \"/\" }]"));
    assert!(
        e[0].contains("url, enable_sni and check_proto apply to http and ssl checks, not grpc"),
        "{e:?}"
    );
}

/// `backend_http2` loads, and `--check` warns about a check that speaks HTTP/1.1 on the
/// port spoken to in HTTP/2 (an HTTP/2-only real server fails it), not about a TCP check
/// or an HTTP check on another port.
#[test]
fn backend_http2_loads_and_warns_about_http1_checks() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    let vs = |check: &str| {
        format!(
            "[[virtual_server]]\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
             [virtual_server.http]\nbackend_http2 = true\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:50051\"\n\
             [[virtual_server.backend.check]]\n{check}\n"
        )
    };
    std::fs::write(&t, vs("type = \"tcp\"")).unwrap();
    let (c, w) = ok(&t);
    assert!(w.is_empty(), "{w:?}");
    assert!(c.virtual_servers[0].http.as_ref().unwrap().backend_http2);
    std::fs::write(
        &t,
        vs("type = \"http\"\nurl = [{ path = \"/\" }]\nconnect_port = 8081"),
    )
    .unwrap();
    let (_, w) = ok(&t);
    assert!(w.is_empty(), "{w:?}");
    std::fs::write(&t, vs("type = \"http\"\nurl = [{ path = \"/\" }]")).unwrap();
    let (_, w) = ok(&t);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().contains(
            "warning: this check speaks HTTP/1.1 to 127.0.0.1:50051, which backend_http2 speaks HTTP/2 to"
        ) && w[0].to_string().contains("add check_proto = \"h2\""),
        "{w:?}"
    );
    // HAProxy's check-proto h2: the check speaks HTTP/2 too, no warning.
    std::fs::write(
        &t,
        vs("type = \"ssl\"\nurl = [{ path = \"/\", virtualhost = \"api.internal:8443\" }]\ncheck_proto = \"H2\""),
    )
    .unwrap();
    let (c, w) = ok(&t);
    assert!(w.is_empty(), "{w:?}");
    let CheckKind::Ssl(h) = &c.virtual_servers[0].backends[0].checks[0].kind else {
        panic!("{:?}", c.virtual_servers[0].backends[0].checks[0].kind);
    };
    assert!(h.http2);
    let e = errors(
        "t.toml",
        &vs("type = \"http\"\nurl = [{ path = \"/\" }]\ncheck_proto = \"h3\""),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("check_proto \"h3\": \"h1\" (HTTP/1.1, the default) or \"h2\" (HTTP/2)"),
        "{e:?}"
    );
    // An HTTP/2 check's Host is its :authority, checked at its line.
    let e = errors(
        "t.toml",
        &vs("type = \"http\"\nurl = [{ path = \"/\", virtualhost = \"a b\" }]\ncheck_proto = \"h2\""),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:10:36: ")
            && e[0].contains(
                "virtualhost \"a b\" is not an authority (host[:port]) for an HTTP/2 check"
            ),
        "{e:?}"
    );
    let e = errors("t.toml", &vs("type = \"tcp\"\ncheck_proto = \"h2\""));
    assert!(
        e[0].contains("check_proto apply to http and ssl checks"),
        "{e:?}"
    );
}

/// `[virtual_server.http] backend_tls` and its settings: the CA file is read at load and
/// relative to the configuration's directory; what cannot work (verifying without a CA, a
/// file with no certificate, a name that can be neither sent nor verified, a setting
/// without `backend_tls`) is an error at its key's line.
#[test]
fn backend_tls_settings_are_checked_at_load() {
    let vs = |keys: &str| {
        format!("[[virtual_server]]\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\n[virtual_server.http]\n{keys}\n[[virtual_server.backend]]\naddress = \"127.0.0.1:443\"\n")
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tls/example.pem"),
        dir.path().join("ca.pem"),
    )
    .unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        vs("backend_tls = true\nbackend_ca_file = \"ca.pem\"\nbackend_sni = \"www.example.com\""),
    )
    .unwrap();
    let (c, w) = ok(&t);
    assert!(w.is_empty(), "{w:?}");
    let tls = c.virtual_servers[0]
        .http
        .as_ref()
        .unwrap()
        .backend_tls()
        .unwrap()
        .expect("backend TLS");
    assert_eq!(
        tls.server_name().map(|n| n.to_str().into_owned()),
        Some("www.example.com".to_owned())
    );
    std::fs::write(
        &t,
        vs("backend_tls = true\nbackend_verify = \"none\"\nbackend_ca_file = \"ca.pem\""),
    )
    .unwrap();
    let (_, w) = ok(&t);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0]
        .to_string()
        .contains("t.toml:7:19: warning: backend_ca_file is not used"));

    let e = errors("t.toml", &vs("backend_tls = true"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:5:15: backend_tls verifies the real servers' certificates")
            && e[0].contains("set it (HAProxy's ca-file), or backend_verify = \"none\""),
        "{e:?}"
    );
    let e = errors(
        "t.toml",
        &vs("backend_tls = true\nbackend_ca_file = \"missing.pem\""),
    );
    assert!(
        e[0].starts_with("t.toml:6:19: backend_ca_file missing.pem: No such file"),
        "{e:?}"
    );
    let e = errors(
        "t.toml",
        &vs("backend_tls = true\nbackend_ca_file = \"/dev/null\""),
    );
    assert_eq!(
        e,
        ["t.toml:6:19: backend_ca_file /dev/null: no PEM certificate found"]
    );
    let e = errors(
        "t.toml",
        &vs("backend_tls = true\nbackend_verify = \"none\"\nbackend_sni = \"not a name\""),
    );
    assert!(
        e[0].starts_with("t.toml:7:15: backend_sni: server name \"not a name\""),
        "{e:?}"
    );
    let e = errors("t.toml", &vs("backend_verify = \"nonee\""));
    assert!(
        e[0].starts_with("t.toml:5:18: unknown variant `nonee`, expected `required` or `none`"),
        "{e:?}"
    );
    // A client certificate: its key must go with it; a key alone, or either without
    // backend_tls, is refused.
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tls");
    for f in ["example.pem", "example.key", "api.example.pem"] {
        std::fs::copy(conf.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        &t,
        vs("backend_tls = true\nbackend_verify = \"none\"\nbackend_certificate = \"example.pem\"\nbackend_key = \"example.key\""),
    )
    .unwrap();
    ok(&t);
    std::fs::write(
        &t,
        vs("backend_tls = true\nbackend_verify = \"none\"\nbackend_certificate = \"api.example.pem\""),
    )
    .unwrap();
    ok(&t);
    let e = errors(
        "t.toml",
        &vs(&format!(
            "backend_tls = true\nbackend_verify = \"none\"\nbackend_certificate = \"{}\"\nbackend_key = \"{}\"",
            conf.join("example.pem").display(),
            conf.join("api.example.pem").display()
        )),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:8:15: backend_key: does not go with the certificate"),
        "{e:?}"
    );
    let e = errors(
        "t.toml",
        &vs("backend_tls = true\nbackend_verify = \"none\"\nbackend_key = \"k.pem\""),
    );
    assert!(
        e.iter()
            .any(|e| e == "t.toml:7:15: backend_key needs backend_certificate"),
        "{e:?}"
    );
    let e = errors("t.toml", &vs("backend_certificate = \"c.pem\""));
    assert!(
        e.iter()
            .any(|e| e.starts_with("t.toml:5:23: backend_certificate needs backend_tls = true")),
        "{e:?}"
    );
    // `required` written out without backend_tls is refused as `none` is.
    let e = errors("t.toml", &vs("backend_verify = \"required\""));
    assert_eq!(
        e,
        ["t.toml:5:18: backend_verify needs backend_tls = true (the real servers are spoken to in plain HTTP)"]
    );
    // A plain HTTP check on the port spoken to in TLS: a warning at its type.
    std::fs::write(
        &t,
        format!(
            "{}[[virtual_server.backend.check]]\ntype = \"http\"\nurl = [{{ path = \"/\" }}]\n\
             [[virtual_server.backend.check]]\ntype = \"http\"\nconnect_port = 8081\nurl = [{{ path = \"/\" }}]\n",
            vs("backend_tls = true\nbackend_verify = \"none\"")
        ),
    )
    .unwrap();
    let (_, w) = ok(&t);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().contains("t.toml:10:8: warning: this http check speaks plain HTTP to 127.0.0.1:443, which backend_tls speaks TLS to"),
        "{w:?}"
    );
    let e = errors("t.toml", &vs("backend_sni = \"api.internal\""));
    assert_eq!(
        e,
        ["t.toml:5:15: backend_sni needs backend_tls = true (the real servers are spoken to in plain HTTP)"]
    );
}

/// `[virtual_server.http] access_log`: a path whose directory does not exist, or that is a
/// directory, and a format without a file are errors at their key.
#[test]
fn access_log_settings_are_checked_at_load() {
    let vs = |keys: &str| {
        format!("[[virtual_server]]\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\n[virtual_server.http]\n{keys}\n[[virtual_server.backend]]\naddress = \"127.0.0.1:80\"\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        vs("access_log = \"web.log\"\naccess_log_format = \"combined\""),
    )
    .unwrap();
    let (c, w) = ok(&t);
    assert!(w.is_empty(), "{w:?}");
    let h = c.virtual_servers[0].http.as_ref().unwrap();
    assert_eq!(
        h.access_log.as_deref(),
        Some(dir.path().join("web.log").as_path())
    );
    assert_eq!(
        h.access_log_format,
        config::model::AccessLogFormat::Combined
    );

    let e = errors("t.toml", &vs("access_log = \"/nonexistent/lb/web.log\""));
    assert_eq!(
        e,
        ["t.toml:5:14: access_log /nonexistent/lb/web.log: no directory /nonexistent/lb"]
    );
    let e = errors("t.toml", &vs("access_log = \"/tmp\""));
    assert_eq!(e, ["t.toml:5:14: access_log /tmp is a directory"]);
    let e = errors("t.toml", &vs("access_log_format = \"combined\""));
    assert_eq!(
        e,
        ["t.toml:5:21: access_log_format needs access_log (the file to write)"]
    );
    let e = errors(
        "t.toml",
        &vs("access_log = \"x.log\"\naccess_log_format = \"clf\""),
    );
    assert!(
        e[0].starts_with("t.toml:6:21: unknown variant `clf`, expected `httplog` or `combined`"),
        "{e:?}"
    );
}

/// keepalived warns of a sync group mixing address owners and other instances ("This won't
/// work"): its members all start as BACKUP, the owner included. lb-node says so where the
/// group is written; a group of owners only, or of none, is quiet.
#[test]
fn a_sync_group_mixing_owners_and_others_warns() {
    let dir = tempfile::tempdir().unwrap();
    let owner = BASE_INSTANCE
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id 51", "virtual_router_id 52")
        .replace("priority 100", "priority 255")
        .replace("198.18.0.250", "198.18.0.251");
    let group = "vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n}\n";
    let p = dir.path().join("k.conf");
    std::fs::write(&p, BASE_INSTANCE.to_owned() + &owner + group).unwrap();
    let (_, w) = ok(&p);
    let mixed: Vec<String> = w
        .iter()
        .map(ToString::to_string)
        .filter(|w| w.contains("some members as address owner"))
        .collect();
    assert_eq!(mixed.len(), 1, "{w:?}");
    assert!(
        mixed[0].contains(":18:5: warning: vrrp_sync_group G has some members as address owner (priority 255) and some not: all start as BACKUP"),
        "{}",
        mixed[0]
    );
    // Both owners: no such warning.
    let both = BASE_INSTANCE.replace("priority 100", "priority 255") + &owner + group;
    std::fs::write(&p, both).unwrap();
    let (_, w) = ok(&p);
    assert!(
        !w.iter().any(|w| w
            .to_string()
            .contains("address owner (priority 255) and some not")),
        "{w:?}"
    );
}
