//! Property tests: the keepalived.conf and TOML front ends never panic, and every error they
//! report carries a position inside the input.

use std::path::Path;

use proptest::prelude::*;

const WORDS: &[&str] = &[
    "{",
    "}",
    "\n",
    "\"",
    "\"q w\"",
    "#",
    "!",
    "\\",
    "global_defs",
    "router_id",
    "vrrp_script",
    "script",
    "weight",
    "-20",
    "vrrp_instance",
    "VI_1",
    "state",
    "MASTER",
    "interface",
    "eth0",
    "virtual_router_id",
    "51",
    "priority",
    "256",
    "0",
    "advert_int",
    "0.5",
    "version",
    "3",
    "authentication",
    "auth_type",
    "PASS",
    "auth_pass",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "198.18.0.1/24",
    "dev",
    "label",
    "unicast_peer",
    "track_script",
    "track_service",
    "vrrp_sync_group",
    "group",
    "virtual_server",
    "198.18.0.250",
    "80",
    "lb_algo",
    "rr",
    "lb_kind",
    "DR",
    "NAT",
    "protocol",
    "UDP",
    "persistence_granularity",
    "255.255.255.0",
    "real_server",
    "sorry_server",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "url",
    "path",
    "/",
    "status_code",
    "digest",
    "misc_path",
    "connect_timeout",
    "retry",
    "é",
    "$X",
    "@m",
];

fn keepalived_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..120).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn keepalived_never_panics_and_locates_errors(text in keepalived_text()) {
        let lines = text.lines().count().max(1);
        if let Err(errors) = lb_bins::config::keepalived::parse_str(&text, Path::new("p.conf")) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                let l = e.location.expect("every keepalived error has a position");
                prop_assert!(l.line >= 1 && l.line <= lines + 1, "{l} outside {lines} lines");
                prop_assert!(l.column >= 1);
            }
        }
    }

    #[test]
    fn keepalived_lexer_survives_any_text(text in "\\PC*") {
        let _ = lb_bins::config::keepalived::parse_str(&text, Path::new("p.conf"));
    }

    #[test]
    fn toml_never_panics(text in "[\\[\\]a-z_=\" .0-9\n{},]*") {
        let _ = lb_bins::config::toml::parse_str(&text, Path::new("p.toml"));
    }
}
