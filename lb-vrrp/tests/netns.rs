//! Integration tests in network namespaces built by the test: two of our speakers, and
//! interop with real keepalived. Run as root; without root they skip loudly (and fail
//! under `CI=true`). Addresses: 198.18.0.0/24 and fd00:18::/64 inside the namespaces only.
#![allow(clippy::disallowed_methods)] // blocking test code

mod common;

use std::time::Duration;

use common::{lab_available, tool_available, wait_for, Lab};

const VIP: &str = "198.18.0.100";

/// Our speaker with v3 advert_int 0.1 (Master_Down_Interval ≈ 0.36 s at priority 100).
fn ours_v3(prio: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--instance",
        "VI_1",
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--version",
        "3",
        "--advert-int",
        "0.1",
        "--priority",
        prio,
        "--vip",
        "198.18.0.100/24 dev eth0 label eth0:1",
        "--garp-master-delay",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn vip_on_master_only_and_kill9_failover() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3); // 0, 1: routers; 2: client
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &[])));
    let b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some(),
        "VIP not on the master only"
    );
    // Stable: still only on the master a little later.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.holders(&[0, 1], VIP), [0]);
    assert!(lab.has_addr(0, VIP));
    let (_, label) = lab.exec(0, &["ip", "-o", "addr", "show", "label", "eth0:1"]);
    assert!(label.contains(VIP), "label eth0:1 missing: {label}");
    assert!(lab.ping(2, VIP));
    // kill -9 the master: the backup takes over within Master_Down_Interval + margin.
    lab.proc(a).kill9();
    let took = wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP))
        .expect("backup did not take over");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // The client reaches the VIP through the new master (gratuitous ARP moved it).
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    let (_, neigh) = lab.exec(2, &["ip", "neigh", "show", VIP]);
    let (_, link1) = lab.exec(1, &["ip", "-o", "link", "show", "eth0"]);
    let mac1 = link1
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        neigh.contains(&mac1),
        "client's neighbour entry {neigh:?} does not point at the new master {mac1}"
    );
    // Restart the crashed router with a lower priority so that it stays backup: it must
    // remove the VIP its killed predecessor left behind (crash recovery).
    assert!(
        lab.has_addr(0, VIP),
        "kill -9 should have left the stale VIP"
    );
    let a2 = lab.spawn_ours(0, &strs(&ours_v3("50", &[])));
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [1]).is_some(),
        "stale VIP not removed on start"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.holders(&[0, 1], VIP), [1]);
    assert!(lab.proc(a2).stdout().contains("INIT -> BACKUP"));
    // Clean stop of both: no VIP left.
    assert!(lab.proc(a2).term());
    assert!(lab.proc(b).term());
    assert!(lab.holders(&[0, 1], VIP).is_empty());
}

/// keepalived `virtual_ipaddress_excluded`: 300 excluded addresses of both families (more
/// than an advert holds; the lab's 198.18.0.0/24 has room for 154 of them in IPv4, the rest
/// are in fd00:18::/64) follow the master like the VIP but are never advertised, so the
/// master's adverts still go out and the backup stays backup.
#[test]
fn excluded_vips_follow_the_master_unadvertised() {
    if !lab_available() {
        return;
    }
    // 198.18.0.101-254: above the leaves' .1-.2 and the VIP .100 (none is the broadcast).
    let mut excluded: Vec<String> = (101..=254).map(|h| format!("198.18.0.{h}/32")).collect();
    excluded.push("fd00:18::1:0/64".to_owned());
    excluded.extend((1..=145).map(|h| format!("fd00:18::1:{h:x}/128")));
    assert_eq!(excluded.len(), 300);
    // Adverts every 0.5 s (the last --advert-int wins): the master adds 300 addresses one
    // netlink request at a time between two adverts, and with 0.1 s a loaded CI machine
    // (netns tests run in parallel on 2 cores) once let the backup's 0.36 s timer run out.
    let extra: Vec<String> = excluded
        .iter()
        .flat_map(|a| ["--vip-excluded".to_owned(), a.clone()])
        .chain(["--advert-int".to_owned(), "0.5".to_owned()])
        .collect();
    let extra: Vec<&str> = strs(&extra);
    let mut lab = Lab::new(2);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &extra)));
    let b = lab.spawn_ours(1, &strs(&ours_v3("100", &extra)));
    let (first_v4, last_v4, v6) = ("198.18.0.101", "198.18.0.254", "fd00:18::1:0");
    assert!(
        wait_for(Duration::from_secs(10), || {
            lab.holders(&[0, 1], VIP) == [0]
                && lab.holders(&[0, 1], last_v4) == [0]
                && lab.holders(&[0, 1], v6) == [0]
        })
        .is_some(),
        "VIP and excluded addresses not on the master only: {:?} {:?}",
        lab.holders(&[0, 1], VIP),
        lab.holders(&[0, 1], last_v4)
    );
    // Stable: the backup hears the adverts (two masters would show here). Only from now:
    // the skew times of priorities 150 and 100 at 0.5 s differ by 0.1 s, so a backup
    // started ahead of the master may be master for a moment at start-up, as RFC 5798
    // allows, before the higher priority preempts it.
    let b_masters = |lab: &mut Lab| lab.proc(b).stdout().matches("-> MASTER").count();
    let before = b_masters(&mut lab);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(lab.holders(&[0, 1], VIP), [0]);
    assert_eq!(lab.holders(&[0, 1], first_v4), [0]);
    assert_eq!(
        b_masters(&mut lab),
        before,
        "the backup became master again"
    );
    // A clean stop of the master moves everything to the backup.
    assert!(lab.proc(a).term());
    assert!(
        wait_for(Duration::from_secs(5), || lab.has_addr(1, last_v4)
            && lab.has_addr(1, v6)
            && lab.has_addr(1, VIP))
        .is_some(),
        "excluded addresses did not move to the new master"
    );
    assert!(!lab.has_addr(0, last_v4));
    assert!(lab.proc(b).term());
    assert!(lab.holders(&[0, 1], last_v4).is_empty());
}

/// A clean stop (SIGTERM) sends a priority-0 advert: the backup takes over after its
/// Skew_Time, not a Master_Down_Interval. Adverts every 1 s, so the two are far apart:
/// Skew_Time at priority 100 is 0.61 s, while without the priority-0 advert the backup
/// would wait out Master_Down_Interval 3.61 s from the last advert, at least 2.61 s after
/// the stop. A 1.5 s bound tells them apart with ~0.9 s of slack for a loaded machine.
#[test]
fn clean_stop_moves_within_skew_time() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let slow = ["--advert-int", "1"]; // the last --advert-int wins
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &slow)));
    let b = lab.spawn_ours(1, &strs(&ours_v3("100", &slow)));
    // The first master waits out its own Master_Down_Interval (3.41 s) from start-up.
    assert!(wait_for(Duration::from_secs(10), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.holders(&[0, 1], VIP), [0]);
    let start = std::time::Instant::now();
    assert!(lab.proc(a).term(), "SIGTERM did not stop the speaker");
    assert!(!lab.has_addr(0, VIP), "stopped master left its VIP");
    let took = wait_for(Duration::from_secs(6), || lab.has_addr(1, VIP))
        .map(|_| start.elapsed())
        .expect("backup did not take over");
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?} (Skew_Time 0.61 s; Master_Down_Interval >= 2.61 s): not a priority-0 takeover"
    );
    assert!(lab.proc(a).stdout().contains("MASTER -> INIT (Shutdown)"));
    assert!(wait_for(Duration::from_secs(3), || lab
        .proc(b)
        .stdout()
        .contains("BACKUP -> MASTER (MasterStopped)"))
    .is_some());
}

#[test]
fn preempt_and_nopreempt() {
    if !lab_available() {
        return;
    }
    // Adverts every 0.5 s (the later --advert-int wins): a Master_Down_Interval of about
    // 1.7 s, so that a master delayed by a loaded machine does not lose its place to the
    // nopreempt router, which could then keep it.
    for nopreempt in [true, false] {
        let mut lab = Lab::new(2);
        let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &["--advert-int", "0.5"])));
        assert!(wait_for(Duration::from_secs(8), || lab.holders(&[0, 1], VIP) == [1]).is_some());
        let extra: &[&str] = if nopreempt {
            &["--advert-int", "0.5", "--nopreempt"]
        } else {
            &["--advert-int", "0.5"]
        };
        let _a = lab.spawn_ours(0, &strs(&ours_v3("150", extra)));
        if nopreempt {
            // Longer than its Master_Down_Interval: it heard the master and kept quiet.
            std::thread::sleep(Duration::from_millis(3000));
            assert_eq!(lab.holders(&[0, 1], VIP), [1], "nopreempt router took over");
        } else {
            assert!(
                wait_for(Duration::from_secs(6), || lab.holders(&[0, 1], VIP) == [0]).is_some(),
                "higher priority did not preempt"
            );
        }
    }
}

#[test]
fn unicast_with_multicast_blocked() {
    if !lab_available() || !tool_available("nft") {
        return;
    }
    let mut lab = Lab::new(3);
    lab.block_multicast(0);
    lab.block_multicast(1);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &["--unicast-peer", "198.18.0.2"])));
    let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &["--unicast-peer", "198.18.0.1"])));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        lab.holders(&[0, 1], VIP),
        [0],
        "unicast adverts not getting through"
    );
    lab.proc(a).kill9();
    assert!(wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP)).is_some());
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    // A non-peer on the LAN (leaf 2) advertising a higher priority changes nothing.
    let _c = lab.spawn_ours(
        2,
        &strs(&ours_v3(
            "200",
            &["--unicast-peer", "198.18.0.2", "--vip", "198.18.0.101/24"],
        )),
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        lab.has_addr(1, VIP),
        "advert from a non-peer changed the master"
    );
}

#[test]
fn wrong_password_is_ignored() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let base = |prio: &'static str, pass: &'static str| {
        vec![
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--priority",
            prio,
            "--advert-int",
            "1",
            "--auth-pass",
            pass,
            "--vip",
            "198.18.0.100/24",
        ]
    };
    let _a = lab.spawn_ours(0, &base("100", "7road123"));
    assert!(wait_for(Duration::from_secs(6), || lab.has_addr(0, VIP)).is_some());
    // A higher-priority router with the wrong password must not make us yield.
    let _b = lab.spawn_ours(1, &base("200", "wrong"));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        lab.has_addr(0, VIP),
        "advert with a wrong password changed the master"
    );
}

fn keepalived_conf(version: u8, prio: u8, advert_int: &str) -> String {
    let auth = if version == 2 {
        "  authentication {\n    auth_type PASS\n    auth_pass 7road123\n  }\n"
    } else {
        ""
    };
    format!(
        "global_defs {{\n  router_id LBV_TEST\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  version {version}\n  priority {prio}\n  advert_int {advert_int}\n{auth}  virtual_ipaddress {{\n    198.18.0.100/24 dev eth0 label eth0:1\n  }}\n}}\n"
    )
}

fn ours_for(version: u8, prio: &str, advert_int: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "--instance",
        "VI_1",
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--priority",
        prio,
        "--advert-int",
        advert_int,
        "--vip",
        "198.18.0.100/24 dev eth0 label eth0:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if version == 2 {
        v.extend(["--version", "2", "--auth-pass", "7road123"].map(String::from));
    } else {
        v.extend(["--version", "3"].map(String::from));
    }
    v
}

/// keepalived and ours, each as master and as backup, following each other through kill -9
/// and restart.
fn interop(version: u8, advert_int: &str, mdi: Duration) {
    if !lab_available() || !tool_available("keepalived") {
        return;
    }
    let margin = mdi + Duration::from_secs(2);
    // 1. keepalived master (150), ours backup (100).
    let mut lab = Lab::new(3);
    let ka = lab.spawn_keepalived(0, &keepalived_conf(version, 150, advert_int));
    std::thread::sleep(Duration::from_millis(200));
    let ours = lab.spawn_ours(1, &strs(&ours_for(version, "100", advert_int)));
    assert!(
        wait_for(mdi * 3 + margin, || lab.holders(&[0, 1], VIP) == [0]).is_some(),
        "keepalived did not become the only master: {:?}\n{}",
        lab.holders(&[0, 1], VIP),
        lab.proc(ours).stdout()
    );
    std::thread::sleep(mdi);
    assert_eq!(
        lab.holders(&[0, 1], VIP),
        [0],
        "ours does not follow keepalived's adverts"
    );
    lab.proc(ka).kill9();
    assert!(
        wait_for(margin, || lab.has_addr(1, VIP)).is_some(),
        "ours did not take over from keepalived"
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    // keepalived comes back (its stale VIP is still there after kill -9; it cleans up) and preempts.
    let _ka2 = lab.spawn_keepalived(0, &keepalived_conf(version, 150, advert_int));
    assert!(
        wait_for(mdi * 3 + margin, || !lab.has_addr(1, VIP)
            && lab.has_addr(0, VIP))
        .is_some(),
        "restarted keepalived did not preempt ours"
    );
    assert!(lab.proc(ours).stdout().contains("MASTER -> BACKUP"));
    drop(lab);

    // 2. ours master (150), keepalived backup (100).
    let mut lab = Lab::new(3);
    let ours = lab.spawn_ours(0, &strs(&ours_for(version, "150", advert_int)));
    std::thread::sleep(Duration::from_millis(200));
    let ka_b = lab.spawn_keepalived(1, &keepalived_conf(version, 100, advert_int));
    assert!(
        wait_for(mdi * 3 + margin, || lab.has_addr(0, VIP)).is_some(),
        "ours did not become master"
    );
    std::thread::sleep(mdi * 2);
    assert_eq!(
        lab.holders(&[0, 1], VIP),
        [0],
        "keepalived does not follow our adverts"
    );
    lab.proc(ours).kill9();
    assert!(
        wait_for(margin, || lab.has_addr(1, VIP)).is_some(),
        "keepalived did not take over from ours"
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    let ours2 = lab.spawn_ours(0, &strs(&ours_for(version, "150", advert_int)));
    assert!(
        wait_for(mdi * 3 + margin, || lab.holders(&[0, 1], VIP) == [0]).is_some(),
        "restarted ours did not preempt keepalived"
    );
    // A clean stop of ours: keepalived hears priority 0 (it logs so) and takes over after
    // its Skew_Time, well before a Master_Down_Interval.
    std::thread::sleep(mdi);
    let start = std::time::Instant::now();
    assert!(lab.proc(ours2).term());
    let took = wait_for(margin, || lab.has_addr(1, VIP))
        .map(|_| start.elapsed())
        .expect("keepalived did not take over");
    let ka_log = |lab: &mut Lab| {
        let p = lab.proc(ka_b);
        p.stdout() + &p.stderr()
    };
    assert!(
        wait_for(Duration::from_secs(3), || ka_log(&mut lab)
            .contains("Backup received priority 0 advertisement"))
        .is_some(),
        "keepalived did not act on our priority-0 advert: {}",
        ka_log(&mut lab)
    );
    // By the clock too, where Skew_Time and the alternative are far enough apart for a
    // loaded machine: the backup's timer restarts at each advert, so without priority 0 it
    // takes over at least Master_Down_Interval - advert_int after the stop, while
    // Skew_Time is Master_Down_Interval - 3 * advert_int; the bound is halfway. (At
    // advert_int 0.1 s they are 0.2 s apart, within a loaded machine's scheduling noise:
    // there the log line above is the proof.)
    let int = Duration::from_secs_f64(advert_int.parse().expect("advert_int"));
    if int >= Duration::from_secs(1) {
        let bound = mdi - int * 2;
        assert!(
            took < bound,
            "keepalived took {took:?} (bound {bound:?}, Master_Down_Interval {mdi:?}): priority 0 not honoured"
        );
    }
}

#[test]
fn interop_keepalived_v2_pass() {
    interop(2, "1", Duration::from_millis(3610));
}

#[test]
fn interop_keepalived_v3_fast() {
    interop(3, "0.1", Duration::from_millis(361));
}

/// tshark decodes our adverts (v2 PASS, v3 IPv4, v3 IPv6) as VRRP with good checksums
/// and no malformed-packet flag, sent as network control traffic (TOS or traffic class
/// 0xc0), as keepalived sends them.
#[test]
fn tshark_decodes_our_adverts() {
    if !lab_available() || !tool_available("tshark") {
        return;
    }
    let mut lab = Lab::new(2);
    let _v2 = lab.spawn_ours(
        0,
        &[
            "--sync-group",
            "--instance",
            "V2",
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--priority",
            "255",
            "--auth-pass",
            "7road123",
            "--vip",
            "198.18.0.100/24",
            "--instance",
            "V3",
            "--interface",
            "eth0",
            "--vrid",
            "52",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--priority",
            "255",
            "--vip",
            "198.18.0.101/24",
            "--vip",
            "198.18.0.102/24",
        ],
    );
    let _v6 = lab.spawn_ours(
        0,
        &[
            "--instance",
            "V6",
            "--interface",
            "eth0",
            "--vrid",
            "61",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--priority",
            "200",
            "--vip",
            "fd00:18::100/64",
        ],
    );
    let pcap_s = capture(&lab, 1, "ours.pcap", "ip proto 112 or ip6 proto 112", 3);
    let out = common::output_within(
        common::cmd("tshark").args([
            "-r",
            &pcap_s,
            "-T",
            "fields",
            "-e",
            "vrrp.version",
            "-e",
            "vrrp.virt_rtr_id",
            "-e",
            "vrrp.checksum.status",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.severity",
            "-e",
            "ip.dsfield",
            "-e",
            "ipv6.tclass",
        ]),
        common::CMD_TIMEOUT,
    )
    .expect("tshark -r");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert!(rows.len() >= 5, "too few adverts captured: {text}");
    for vrid in ["51", "52", "61"] {
        assert!(
            rows.iter().any(|r| r.get(1) == Some(&vrid)),
            "no advert for VRID {vrid}: {text}"
        );
    }
    for r in &rows {
        // checksum.status 1 = Good (2 = Bad, 0 = Unverified).
        assert_eq!(r.get(2), Some(&"1"), "checksum not good: {r:?}");
        assert!(r.get(3).is_none_or(|m| m.is_empty()), "malformed: {r:?}");
        let class = [r.get(5), r.get(6)]
            .into_iter()
            .flatten()
            .find(|f| !f.is_empty())
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok());
        assert_eq!(class, Some(0xc0), "TOS / traffic class: {r:?}");
    }
    let malformed = common::output_within(
        common::cmd("tshark").args([
            "-r",
            &pcap_s,
            "-Y",
            "_ws.malformed || vrrp.checksum.status == 2",
        ]),
        common::CMD_TIMEOUT,
    )
    .expect("tshark");
    assert!(
        malformed.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&malformed.stdout)
    );
}

#[test]
fn link_down_is_fault_and_recovers() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    // No interface poll for an hour: netlink's notice of the link change is what acts.
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &["--link-poll", "3600"])));
    let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "down"]);
    assert!(wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP)
        && !lab.has_addr(0, VIP))
    .is_some());
    assert!(wait_for(Duration::from_secs(2), || lab
        .proc(a)
        .stdout()
        .contains("MASTER -> FAULT"))
    .is_some());
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "up"]);
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some(),
        "did not recover from fault: {}",
        lab.proc(a).stdout()
    );
    assert!(lab
        .proc(a)
        .stdout()
        .contains("FAULT -> BACKUP (FaultCleared)"));
}

/// keepalived holds an instance in INIT until its weight-0 scripts have reported: an
/// address owner whose weight-0 check fails from the start goes to Fault without ever being
/// Master (it used to take the VIP and announce it first, for the script's first run).
#[test]
fn failing_weight_zero_script_keeps_an_owner_from_ever_being_master() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(1);
    let a = lab.spawn_ours(
        0,
        &strs(&ours_v3(
            "255",
            &[
                "--track-script",
                "sleep 0.3; false",
                "--script-interval",
                "1",
                "--script-weight",
                "0",
            ],
        )),
    );
    let fault = wait_for(Duration::from_secs(5), || {
        lab.proc(a).stdout().contains("-> FAULT")
    });
    assert!(fault.is_some(), "{}", lab.proc(a).stdout());
    std::thread::sleep(Duration::from_millis(500));
    let out = lab.proc(a).stdout();
    assert!(!out.contains("-> MASTER"), "{out}");
    assert!(lab.holders(&[0], VIP).is_empty());
}

#[test]
fn track_script_weight_moves_vip_and_notify_scripts_run() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let ok = lab.dir.join("service-ok");
    std::fs::write(&ok, "").unwrap();
    let check = format!("test -f {}", ok.display());
    let log = lab.dir.join("notify.log");
    let notify_master = format!("echo master >> {}", log.display());
    let notify_stop = format!("echo stop >> {}", log.display());
    let notify_any = format!("echo >> {}", log.display());
    let a = lab.spawn_ours(
        0,
        &strs(&ours_v3(
            "150",
            &[
                "--track-script",
                &check,
                "--script-interval",
                "0.1",
                "--script-weight",
                "-60",
                "--script-fall",
                "2",
                "--notify-master",
                &notify_master,
                "--notify-stop",
                &notify_stop,
                "--notify",
                &notify_any,
            ],
        )),
    );
    let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    // The service dies: 150 - 60 = 90 < 100, the backup preempts.
    std::fs::remove_file(&ok).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [1]).is_some(),
        "failing track script did not give the VIP away"
    );
    // It comes back: 150 again, we preempt back.
    std::fs::write(&ok, "").unwrap();
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    assert!(lab.proc(a).term());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("master\n"),
        "notify_master did not run: {text:?}"
    );
    assert!(
        text.contains("INSTANCE VI_1 MASTER 150"),
        "notify did not run: {text:?}"
    );
    assert!(
        text.contains("INSTANCE VI_1 BACKUP 90"),
        "notify did not run on backup: {text:?}"
    );
    assert!(
        text.trim_end().ends_with("INSTANCE VI_1 STOP 150") || text.contains("stop\n"),
        "{text:?}"
    );
}

/// keepalived starts an instance whose interface holds no IPv4 address yet in FAULT ("no
/// IPv4 address for interface") and carries on once one appears; lb-vrrpd used to refuse
/// to start. When the advert source is later removed, the instance goes to Fault (VIP
/// released) until the interface holds an address again, which becomes the source.
#[test]
fn instance_waits_in_fault_for_an_interface_address() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(1);
    let ip = |lab: &Lab, args: &[&str]| {
        let (ok, out) = lab.exec(0, args);
        assert!(ok, "{args:?}: {out}");
    };
    ip(&lab, &["ip", "-4", "addr", "flush", "dev", "eth0"]);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &[])));
    let fault = wait_for(Duration::from_secs(5), || {
        lab.proc(a).stdout().contains("-> FAULT")
    });
    assert!(
        fault.is_some(),
        "{}{}",
        lab.proc(a).stdout(),
        lab.proc(a).stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.holders(&[0], VIP).is_empty());
    ip(&lab, &["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some(),
        "no master once the address appeared: {}",
        lab.proc(a).stdout()
    );

    // The source goes; another address comes: Fault, then Master advertising from it.
    ip(&lab, &["ip", "addr", "del", "198.18.0.1/24", "dev", "eth0"]);
    assert!(
        wait_for(Duration::from_secs(5), || {
            lab.holders(&[0], VIP).is_empty() && lab.proc(a).stdout().contains("MASTER -> FAULT")
        })
        .is_some(),
        "VIP kept without an advert source: {}",
        lab.proc(a).stdout()
    );
    ip(
        &lab,
        &["ip", "addr", "add", "198.18.0.31/24", "dev", "eth0"],
    );
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some(),
        "{}",
        lab.proc(a).stdout()
    );
    let (_, raw) = lab.exec(0, &["ss", "-wan"]);
    assert!(
        raw.contains("198.18.0.31:"),
        "no socket bound to the new source: {raw}"
    );
    assert!(lab.proc(a).term());
}

#[test]
fn ipv6_v3_failover() {
    if !lab_available() {
        return;
    }
    const VIP6: &str = "fd00:18::100";
    let args = |prio: &'static str| {
        vec![
            "--interface",
            "eth0",
            "--vrid",
            "61",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--priority",
            prio,
            "--vip",
            "fd00:18::100/64",
        ]
    };
    let mut lab = Lab::new(3);
    let a = lab.spawn_ours(0, &args("150"));
    let _b = lab.spawn_ours(1, &args("100"));
    assert!(
        wait_for(Duration::from_secs(6), || lab.holders(&[0, 1], VIP6) == [0]).is_some(),
        "{:?}\n{}",
        lab.holders(&[0, 1], VIP6),
        lab.proc(a).stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.holders(&[0, 1], VIP6), [0]);
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP6)).is_some());
    let (_, neigh) = lab.exec(2, &["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"]);
    assert!(!neigh.contains("router"), "{neigh}");
    // The backup forwards IPv6 (a gateway VIP): its advertisements carry the Router flag
    // (keepalived), so the client marks the entry as a router's (RFC 4861 §7.2.5).
    let (ok, _) = lab.exec(1, &["sysctl", "-qw", "net.ipv6.conf.eth0.forwarding=1"]);
    assert!(ok);
    lab.proc(a).kill9();
    assert!(wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP6)).is_some());
    let router = wait_for(Duration::from_secs(3), || {
        lab.exec(2, &["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"])
            .1
            .contains("router")
    });
    assert!(
        router.is_some(),
        "{}",
        lab.exec(2, &["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"])
            .1
    );
    // The unsolicited NA moved the client's neighbour entry.
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "down"]);
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP6)).is_some());
}

/// keepalived `vrrp_sync_group` (the seeds' NAT setup: external and internal VIPs on the
/// same node): a weight-0 script failing on one instance faults the whole group, so the
/// peer takes both VIPs; recovery brings both back.
#[test]
fn sync_group_moves_both_vips_together() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let ok = lab.dir.join("ok");
    std::fs::write(&ok, "").unwrap();
    let check = format!("test -f {}", ok.display());
    let group = |prio: &'static str, script: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = [
            "--sync-group",
            "--instance",
            "VI_1",
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--priority",
            prio,
            "--vip",
            "198.18.0.100/24",
        ]
        .map(String::from)
        .to_vec();
        if let Some(s) = script {
            v.extend(["--track-script", s, "--script-interval", "0.1"].map(String::from));
        }
        v.extend(
            [
                "--instance",
                "VI_2",
                "--interface",
                "eth0",
                "--vrid",
                "52",
                "--version",
                "3",
                "--advert-int",
                "0.1",
                "--priority",
                prio,
                "--vip",
                "198.18.0.200/24",
            ]
            .map(String::from),
        );
        v
    };
    let a = lab.spawn_ours(0, &strs(&group("150", Some(&check))));
    let _b = lab.spawn_ours(1, &strs(&group("100", None)));
    let both_on = |lab: &Lab, i: usize| lab.has_addr(i, VIP) && lab.has_addr(i, "198.18.0.200");
    let none_on = |lab: &Lab, i: usize| !lab.has_addr(i, VIP) && !lab.has_addr(i, "198.18.0.200");
    assert!(wait_for(Duration::from_secs(5), || both_on(&lab, 0)
        && none_on(&lab, 1))
    .is_some());
    std::fs::remove_file(&ok).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || both_on(&lab, 1)
            && none_on(&lab, 0))
        .is_some(),
        "group did not fail over together:\n{}",
        lab.proc(a).stdout()
    );
    let out = lab.proc(a).stdout();
    assert!(
        out.contains("VI_1 MASTER -> FAULT (TrackFault)")
            && out.contains("VI_2 MASTER -> FAULT (SyncGroup)"),
        "{out}"
    );
    std::fs::write(&ok, "").unwrap();
    assert!(wait_for(Duration::from_secs(5), || both_on(&lab, 0)
        && none_on(&lab, 1))
    .is_some());
}

/// VRRPv3 over IPv6 (link-local sources, ff02::12) against keepalived: each follows the other.
#[test]
fn interop_keepalived_v3_ipv6() {
    if !lab_available() || !tool_available("keepalived") {
        return;
    }
    const VIP6: &str = "fd00:18::100";
    let conf = |prio: u8| {
        format!(
            "global_defs {{\n  router_id LBV_TEST6\n}}\nvrrp_instance VI_6 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 61\n  version 3\n  priority {prio}\n  advert_int 0.1\n  virtual_ipaddress {{\n    fd00:18::100/64\n  }}\n}}\n"
        )
    };
    let ours = |prio: &'static str| {
        vec![
            "--instance",
            "VI_6",
            "--interface",
            "eth0",
            "--vrid",
            "61",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--priority",
            prio,
            "--vip",
            "fd00:18::100/64",
        ]
    };
    let mut lab = Lab::new(3);
    let ka = lab.spawn_keepalived(0, &conf(150));
    std::thread::sleep(Duration::from_millis(200));
    let o = lab.spawn_ours(1, &ours("100"));
    assert!(
        wait_for(Duration::from_secs(6), || lab.holders(&[0, 1], VIP6) == [0]).is_some(),
        "keepalived not sole master: {:?}\n{}",
        lab.holders(&[0, 1], VIP6),
        lab.proc(o).stdout()
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        lab.holders(&[0, 1], VIP6),
        [0],
        "ours does not follow keepalived over IPv6"
    );
    lab.proc(ka).kill9();
    assert!(
        wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP6)).is_some(),
        "ours did not take over"
    );
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "down"]);
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP6)).is_some());
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "up"]);
    // keepalived back with a lower priority: it must follow ours and not take the VIP.
    let _ka2 = lab.spawn_keepalived(0, &conf(50));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        lab.has_addr(1, VIP6),
        "ours lost mastership to a lower-priority keepalived"
    );
    assert!(
        !lab.has_addr(0, VIP6),
        "keepalived does not follow our IPv6 adverts"
    );
}

/// Sends `n` VRRPv3 adverts (VRID 51, `prio`, VIP 198.18.0.100) from leaf 2 with IP TTL `ttl`.
fn forge_adverts(lab: &Lab, prio: u8, ttl: u32, n: usize) {
    use lb_vrrp::wire::{AdvertInterval, AdvertRepr, Auth, Priority, Version, Vrid, VRRP_MCAST_V4};
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let src = Ipv4Addr::new(198, 18, 0, 3);
    let repr = AdvertRepr {
        version: Version::V3,
        vrid: Vrid::new(51).unwrap(),
        priority: Priority(prio),
        interval: AdvertInterval::from_centis(10).unwrap(),
        auth: Auth::None,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
    };
    let bytes = repr
        .to_bytes(IpAddr::V4(src), IpAddr::V4(VRRP_MCAST_V4))
        .unwrap();
    common::in_netns(lab.ns(2), move || {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
        s.set_multicast_ttl_v4(ttl)?;
        s.set_multicast_if_v4(&src)?;
        let to = SockAddr::from(SocketAddr::new(IpAddr::V4(VRRP_MCAST_V4), 0));
        for _ in 0..n {
            s.send_to(&bytes, &to)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })
    .expect("forging adverts");
}

/// RFC 5798 §7.1 at the socket level: an advert whose TTL is not 255 changes nothing and
/// is counted; the same advert with TTL 255 (positive control) takes the VIP away.
#[test]
fn ttl_not_255_is_dropped_and_counted() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &[])));
    assert!(wait_for(Duration::from_secs(5), || lab.has_addr(0, VIP)).is_some());
    forge_adverts(&lab, 200, 254, 20);
    assert!(
        lab.has_addr(0, VIP),
        "an advert with TTL 254 made the master yield"
    );
    let pid = lab.proc(a).pid().to_string();
    let _ = common::output_within(
        common::cmd("kill").args(["-USR1", &pid]),
        common::CMD_TIMEOUT,
    );
    let status = wait_for(Duration::from_secs(2), || {
        lab.proc(a).stdout().contains("STATUS VI_1")
    });
    assert!(status.is_some(), "no STATUS line: {}", lab.proc(a).stdout());
    let out = lab.proc(a).stdout();
    let line = out
        .lines()
        .find(|l| l.starts_with("STATUS VI_1"))
        .unwrap()
        .to_owned();
    assert!(line.contains("MASTER") && line.contains("Ttl=20"), "{line}");
    // Positive control: the same advert with TTL 255 is obeyed. The master yields, and
    // takes over again once the forged adverts stop, some 0.4 s later: its log says so,
    // where polling the address (a process per look) could miss that window on a loaded
    // machine.
    assert!(!lab.proc(a).stdout().contains("MASTER -> BACKUP"));
    forge_adverts(&lab, 200, 255, 3);
    assert!(
        wait_for(Duration::from_secs(2), || lab
            .proc(a)
            .stdout()
            .contains("MASTER -> BACKUP"))
        .is_some(),
        "valid advert ignored: {}",
        lab.proc(a).stdout()
    );
}

/// The speaker needs only CAP_NET_RAW and CAP_NET_ADMIN: as `nobody` with exactly those
/// it elects itself, adds the VIP with its label, answers for it, and cleans up on SIGTERM.
#[test]
fn runs_with_only_net_raw_and_net_admin() {
    if !lab_available() || !tool_available("setpriv") {
        return;
    }
    let mut lab = Lab::new(3);
    std::fs::set_permissions(
        &lab.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let a = lab.spawn_ours_unprivileged(0, &strs(&ours_v3("150", &[])));
    let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some(),
        "unprivileged speaker did not become master: {}",
        lab.proc(a).stderr()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", lab.proc(a).pid())).unwrap();
    let eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .to_owned();
    assert!(
        eff.ends_with("0000000000003000"),
        "unexpected capabilities: {eff}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "not running as nobody"
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    assert!(lab.proc(a).term());
    assert!(wait_for(Duration::from_secs(2), || lab.holders(&[0, 1], VIP) == [1]).is_some());
}

/// The MAC address of `eth0` in leaf `i`.
fn mac_of(lab: &Lab, i: usize) -> String {
    let (ok, out) = lab.exec(i, &["cat", "/sys/class/net/eth0/address"]);
    assert!(ok);
    out.trim().to_owned()
}

/// The MAC address leaf `i`'s neighbour table holds for `addr`, if any.
fn neighbour_mac(lab: &Lab, i: usize, addr: &str) -> Option<String> {
    let (_, out) = lab.exec(i, &["ip", "neigh", "show", addr, "dev", "eth0"]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

/// A backup that stops hearing the master (VRRP from it dropped in the backup only) takes
/// the VIP and points the client's ARP cache at itself. The master, still hearing it, gets
/// adverts of lower priority and answers them with gratuitous ARPs (keepalived's
/// `garp_lower_prio_repeat`, default 5): the client's cache points back at the master.
/// With `--garp-lower-prio-repeat 0` (as this implementation behaved before) it stays on
/// the backup.
#[test]
fn master_hearing_a_lower_priority_master_re_announces_the_vip() {
    if !lab_available() || !tool_available("nft") {
        return;
    }
    for (repeat, back_to_master) in [("5", true), ("0", false)] {
        let mut lab = Lab::new(3);
        let a = lab.spawn_ours(
            0,
            &strs(&ours_v3("150", &["--garp-lower-prio-repeat", repeat])),
        );
        let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
        assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
        assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
        let (mac0, mac1) = (mac_of(&lab, 0), mac_of(&lab, 1));
        assert_eq!(neighbour_mac(&lab, 2, VIP).as_deref(), Some(mac0.as_str()));

        // One-way partition: the backup no longer hears the master's adverts.
        let rules = "table inet lbvtest {\n chain in { type filter hook input priority 0; ip saddr 198.18.0.1 ip protocol vrrp drop; }\n}\n";
        let path = lab.dir.join("oneway.nft");
        std::fs::write(&path, rules).unwrap();
        assert!(lab.exec(1, &["nft", "-f", path.to_str().unwrap()]).0);
        assert!(wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP)).is_some());
        assert!(lab.has_addr(0, VIP), "the master stays master");
        // The backup's GARPs, at once and again after garp_master_delay (1 s), move the
        // client's entry (the neighbour table takes an update at most once a second, its
        // locktime); then only the master's, if any, can move it back.
        std::thread::sleep(Duration::from_millis(3500));
        let now = neighbour_mac(&lab, 2, VIP);
        if back_to_master {
            assert_eq!(
                now.as_deref(),
                Some(mac0.as_str()),
                "the client's ARP cache points at the backup ({mac1}); master log: {}",
                lab.proc(a).stderr()
            );
        } else {
            assert_eq!(
                now.as_deref(),
                Some(mac1.as_str()),
                "without lower-priority GARPs the backup's announcement stands"
            );
        }
    }
}

/// A VIP on another interface than the instance's (`dev eth1`) is announced on that link
/// with that interface's MAC: a client there keeps reaching it. It used to be announced
/// with the instance interface's MAC, which pointed the client's ARP cache at an address
/// not on its link.
#[test]
fn vip_on_another_dev_is_announced_with_that_devs_mac() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    // A second link, eth1, between leaf 0 and leaf 2, on 198.18.0.128/25: the upper half of
    // the lab's 198.18.0.0/24. eth0 keeps its /24 (its addresses, .1-.3 and the VIP .100,
    // are all in the lower half); the /25 is the longer prefix, so traffic to .128-.255
    // goes over eth1 in both leaves.
    const VIP1: &str = "198.18.0.228";
    let (ns0, ns2) = (lab.ns(0).to_owned(), lab.ns(2).to_owned());
    for args in [
        vec![
            "ip", "-n", &ns0, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1",
            "netns", &ns2,
        ],
        vec!["ip", "-n", &ns0, "link", "set", "eth1", "up"],
        vec!["ip", "-n", &ns2, "link", "set", "eth1", "up"],
        vec![
            "ip",
            "-n",
            &ns0,
            "addr",
            "add",
            "198.18.0.129/25",
            "dev",
            "eth1",
        ],
        vec![
            "ip",
            "-n",
            &ns2,
            "addr",
            "add",
            "198.18.0.131/25",
            "dev",
            "eth1",
        ],
    ] {
        common::run(&args);
    }
    let _a = lab.spawn_ours(
        0,
        &strs(&ours_v3(
            "150",
            &[
                "--vip",
                "198.18.0.228/25 dev eth1",
                "--garp-master-refresh",
                "0.5",
            ],
        )),
    );
    let on_eth1 = |lab: &Lab| {
        lab.exec(0, &["ip", "-o", "addr", "show", "dev", "eth1"])
            .1
            .contains("198.18.0.228/25")
    };
    assert!(wait_for(Duration::from_secs(5), || on_eth1(&lab)).is_some());
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP1)).is_some());
    let (_, eth1) = lab.exec(0, &["cat", "/sys/class/net/eth1/address"]);
    let eth1 = eth1.trim().to_owned();
    // Periodic bursts every 0.5 s; the neighbour table takes one update a second at most.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, neigh) = lab.exec(2, &["ip", "neigh", "show", VIP1, "dev", "eth1"]);
    assert!(
        neigh.contains(&eth1),
        "the client's entry is {neigh:?}, leaf 0's eth1 is {eth1}"
    );
    assert!(lab.ping(2, VIP1));
}

/// A VIP removed from the master's interface by someone else (`ip addr del`) is added back
/// at netlink's notice, with its label, and announced again (a client that accepts gratuitous ARPs learns it
/// anew), while the backup stays backup. keepalived 2.2.7 does the same (it resigns and
/// takes over again at once, adding the VIPs back). It used to stay gone.
#[test]
fn vip_removed_by_someone_else_is_added_back() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    // No interface poll for an hour: netlink's notice of the deletion is what acts.
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &["--link-poll", "3600"])));
    // The backup starts once the master holds the VIP: with 0.1 s adverts its
    // Master_Down_Interval is 0.36 s, less than a loaded CI machine may take to start
    // the master.
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some());
    let b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
    assert!(wait_for(Duration::from_secs(5), || lab
        .proc(b)
        .stdout()
        .contains("-> BACKUP"))
    .is_some());
    assert_eq!(lab.holders(&[0, 1], VIP), [0]);
    // After the master's GARP bursts (at once and garp_master_delay 1 s later).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        lab.exec(2, &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
            .0
    );
    assert!(lab.exec(2, &["ip", "neigh", "flush", "dev", "eth0"]).0);
    assert_eq!(neighbour_mac(&lab, 2, VIP), None);
    for round in 0..2 {
        assert!(
            lab.exec(
                0,
                &["ip", "addr", "del", &format!("{VIP}/24"), "dev", "eth0"]
            )
            .0
        );
        assert!(
            wait_for(Duration::from_secs(2), || lab.has_addr(0, VIP)).is_some(),
            "round {round}: VIP not added back; master log: {}",
            lab.proc(a).stderr()
        );
    }
    let (_, label) = lab.exec(0, &["ip", "-o", "addr", "show", "label", "eth0:1"]);
    assert!(label.contains(VIP), "label eth0:1 not restored: {label}");
    let mac0 = mac_of(&lab, 0);
    assert!(
        wait_for(Duration::from_secs(2), || neighbour_mac(&lab, 2, VIP)
            .as_deref()
            == Some(mac0.as_str()))
        .is_some(),
        "no gratuitous ARP for the re-added VIP reached the client"
    );
    assert_eq!(lab.holders(&[0, 1], VIP), [0]);
    assert!(lab.ping(2, VIP));
    // The master never left Master: it did not resign to add the VIP back. (Whether the
    // backup, with a 0.36 s Master_Down_Interval, ever took over is the machine's load as
    // much as ours: a CI run saw it once, preempted back at once.)
    assert!(
        !lab.proc(a).stdout().contains("MASTER ->"),
        "the master resigned: {}; backup: {}",
        lab.proc(a).stdout(),
        lab.proc(b).stdout()
    );
    // Once per deletion: a labelled VIP (eth0:1) is found on eth0 (getifaddrs names it
    // after its label); it was "re-added" and announced on every tick before.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        lab.proc(a).stderr().matches("added back").count(),
        2,
        "{}",
        lab.proc(a).stderr()
    );
}

/// An instance interface deleted and created again (a new index under the same name) is
/// followed, as keepalived's `update_added_interface` does: the master's sockets are
/// opened again on it, it holds the VIP and hears the backup again, and the client
/// reaches the VIP. Its receive and announce sockets stayed bound to the dead index
/// before: it advertised as master (its send socket rebinds by name) but could not add
/// the VIP (ENODEV), so the backup, preempted, gave it up too and nobody held it.
#[test]
fn an_interface_deleted_and_created_again_is_followed() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &["--link-poll", "0.2"])));
    let _b = lab.spawn_ours(1, &strs(&ours_v3("100", &[])));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    lab.recreate_eth0(0);
    // The backup takes over meanwhile, then the master preempts again on the new one.
    let back = wait_for(Duration::from_secs(10), || {
        lab.holders(&[0, 1], VIP) == [0] && lab.ping(2, VIP)
    });
    assert!(
        back.is_some(),
        "holders {:?}; master log:\n{}",
        lab.holders(&[0, 1], VIP),
        lab.proc(a).stderr()
    );
    // And stays so: it hears the backup (no double master).
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(lab.holders(&[0, 1], VIP), [0]);
    assert!(lab
        .proc(a)
        .stderr()
        .contains("interface deleted and created again"));
}

/// Gratuitous ARPs carry the interface's MAC address as it is when they leave: after
/// `ip link set eth0 address …` on the master (a bond following a new active slave),
/// the refresh bursts teach the client the new one. They kept the MAC read at start.
#[test]
fn gratuitous_arps_follow_a_new_mac_address() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    // A VIP without `dev` (one with a `dev` was announced with that interface's MAC read
    // at each send already).
    let mut args = ours_v3("150", &["--garp-master-refresh", "0.3"]);
    let i = args
        .iter()
        .position(|a| a.starts_with("198.18.0.100/24"))
        .unwrap();
    args[i] = "198.18.0.100/24".into();
    let _a = lab.spawn_ours(0, &strs(&args));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some());
    assert!(
        lab.exec(2, &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
            .0
    );
    let new = "02:00:00:00:00:aa";
    assert!(
        lab.exec(0, &["ip", "link", "set", "eth0", "address", new])
            .0
    );
    assert!(
        wait_for(Duration::from_secs(4), || neighbour_mac(&lab, 2, VIP)
            .as_deref()
            == Some(new))
        .is_some(),
        "the client's entry: {:?}",
        neighbour_mac(&lab, 2, VIP)
    );
    // The kernel announces a new address itself (NETDEV_CHANGEADDR); the refresh bursts
    // that follow, every 0.3 s, must not teach the old one back (the neighbour table
    // takes one update a second at most).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(neighbour_mac(&lab, 2, VIP).as_deref(), Some(new));
    assert!(lab.ping(2, VIP));
}

/// An interface marked `arp off` (IFF_NOARP) gets no gratuitous ARP, as keepalived
/// skips it: a client that learns from gratuitous ARPs learns nothing. They went out.
#[test]
fn no_gratuitous_arp_on_an_interface_without_arp() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    assert!(
        lab.exec(2, &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
            .0
    );
    assert!(lab.exec(0, &["ip", "link", "set", "eth0", "arp", "off"]).0);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &["--garp-master-refresh", "0.3"])));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        neighbour_mac(&lab, 2, VIP),
        None,
        "{}",
        lab.proc(a).stderr()
    );
}

/// A VIP whose label does not start with its interface's name (`label vip1`: Linux and
/// keepalived allow it) is found on the interface: added once and announced once, not
/// "added back" at every interface poll with a burst of gratuitous ARPs each time.
#[test]
fn a_vip_with_a_foreign_label_is_not_added_back_in_a_loop() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let mut args = ours_v3("150", &["--link-poll", "0.2"]);
    let i = args
        .iter()
        .position(|a| a.starts_with("198.18.0.100/24"))
        .unwrap();
    args[i] = "198.18.0.100/24 dev eth0 label vip1".into();
    let a = lab.spawn_ours(0, &strs(&args));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some());
    std::thread::sleep(Duration::from_millis(1500));
    let (_, label) = lab.exec(0, &["ip", "-o", "addr", "show", "label", "vip1"]);
    assert!(label.contains(VIP), "{label}");
    assert_eq!(
        lab.proc(a).stderr().matches("added back").count(),
        0,
        "{}",
        lab.proc(a).stderr()
    );
}

/// Removing a VIP removes that address with its prefix length only, as keepalived's
/// `RTM_DELADDR` does: a VIP equal to the host's own address (`198.18.0.1`, /32, an
/// address owner at priority 255) leaves the host's `198.18.0.1/24` in place, at the
/// start's clean-up of stale VIPs and at the stop. Every address with that IP went
/// before, the host's included.
#[test]
fn removing_a_vip_keeps_the_hosts_address_of_another_prefix() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let mut args = ours_v3("255", &[]);
    let i = args
        .iter()
        .position(|a| a.starts_with("198.18.0.100/24"))
        .unwrap();
    args[i] = "198.18.0.1".into();
    let a = lab.spawn_ours(0, &strs(&args));
    let has24 = |lab: &Lab| {
        lab.exec(0, &["ip", "-o", "addr", "show", "dev", "eth0"])
            .1
            .contains("198.18.0.1/24")
    };
    // It starts (cleaning up stale VIPs first) and, with no other address to send
    // from, sits in FAULT, as keepalived does with this configuration.
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .proc(a)
            .stdout()
            .contains("FAULT"))
        .is_some(),
        "{}",
        lab.proc(a).stderr()
    );
    assert!(has24(&lab), "the start removed the host's address");
    assert!(lab.proc(a).term());
    let (_, addrs) = lab.exec(0, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains("198.18.0.1/24"),
        "the host's address went: {addrs}"
    );
    assert!(!addrs.contains("198.18.0.1/32"), "the VIP stayed: {addrs}");
}

/// The sockets an instance only sends on queue nothing: with unicast adverts every
/// 0.1 s for 2 s, no raw socket of the protocol VRRP (112) holds received data
/// (keepalived attaches a drop-all filter to them). The send socket's queue grew by every
/// advert the peer sent before.
#[test]
fn send_only_sockets_queue_nothing() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let unicast = |me: usize, peer: usize, prio: &str| {
        ours_v3(
            prio,
            &[
                "--unicast-src-ip",
                &format!("198.18.0.{}", me + 1),
                "--unicast-peer",
                &format!("198.18.0.{}", peer + 1),
            ],
        )
    };
    let _a = lab.spawn_ours(0, &strs(&unicast(0, 1, "150")));
    let _b = lab.spawn_ours(1, &strs(&unicast(1, 0, "100")));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    std::thread::sleep(Duration::from_secs(2));
    // /proc/net/raw: "sl local_address rem_address st tx_queue:rx_queue ...", the local
    // port is the protocol (0070 = 112).
    let (_, raw) = lab.exec(1, &["cat", "/proc/net/raw"]);
    let queued: Vec<u64> = raw
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1)?.ends_with(":0070"))
                .then(|| u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok())?
        })
        .collect();
    assert!(queued.len() >= 2, "{raw}");
    assert!(
        queued.iter().all(|&q| q < 0x1000),
        "receive queues {queued:x?}:\n{raw}"
    );
}

/// A master whose only address is removed goes to FAULT and says so with a priority-0
/// advert from the address it had (keepalived sends one as it leaves MASTER): the backup
/// takes over after Skew_Time ("MasterStopped") instead of waiting out
/// Master_Down_Interval. The kernel refused the send before (ENETUNREACH from a source no
/// interface holds), so the backup's reason was "MasterDown". With an address back, the
/// higher priority preempts again.
#[test]
fn master_losing_its_address_sends_priority_zero() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(3);
    // Adverts every 0.5 s: the backup waits about 1.6 s before it takes over by itself,
    // so that a master delayed by a loaded machine still gets its priority-0 advert there
    // first (at 0.1 s, 0.26 s of delay was enough to make this fail).
    let slow = ["--advert-int", "0.5"];
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &slow)));
    let b = lab.spawn_ours(1, &strs(&ours_v3("100", &slow)));
    assert!(wait_for(Duration::from_secs(8), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = lab.exec(0, &["ip", "addr", "del", "198.18.0.1/24", "dev", "eth0"]);
    assert!(ok, "{out}");
    assert!(
        wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [1]).is_some(),
        "backup did not take over: {}",
        lab.proc(b).stdout()
    );
    assert!(
        lab.proc(a).stdout().contains("MASTER -> FAULT (NoAddress)"),
        "{}",
        lab.proc(a).stdout()
    );
    assert!(
        lab.proc(b)
            .stdout()
            .contains("BACKUP -> MASTER (MasterStopped)"),
        "the backup did not hear a priority-0 advert: {}{}",
        lab.proc(b).stdout(),
        lab.proc(a).stderr()
    );
    let (ok, out) = lab.exec(0, &["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    assert!(ok, "{out}");
    assert!(
        wait_for(Duration::from_secs(8), || lab.holders(&[0, 1], VIP) == [0]).is_some(),
        "no preemption once the address is back: {}",
        lab.proc(a).stdout()
    );
}

/// `--no-accept` (keepalived `no_accept`, RFC 5798 Accept_Mode False): the Master drops
/// traffic to its VIPs (a ping goes unanswered) but still answers ARP and Neighbor
/// Discovery for them (the client learns both addresses' MAC); the backup, which holds no
/// VIP, drops nothing. After a clean stop the master's table is gone, and the new master
/// drops in its turn. The option was accepted and ignored before.
#[test]
fn no_accept_drops_traffic_to_the_vips_but_not_arp_or_nd() {
    if !lab_available() || !tool_available("nft") {
        return;
    }
    const VIP6: &str = "fd00:18::100";
    let mut lab = Lab::new(3);
    let extra = ["--no-accept", "--vip-excluded", "fd00:18::100/64"];
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &extra)));
    let b = lab.spawn_ours(1, &strs(&ours_v3("100", &extra)));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [0]).is_some());
    assert!(wait_for(Duration::from_secs(3), || lab.has_addr(0, VIP6)).is_some());
    let set = |lab: &Lab, i: usize, family: &str| {
        lab.exec(i, &["nft", "list", "set", "inet", "lb_vrrp", family])
            .1
    };
    assert!(
        set(&lab, 0, "vips4").contains(VIP),
        "{}",
        set(&lab, 0, "vips4")
    );
    assert!(set(&lab, 0, "vips6").contains(VIP6));
    assert!(
        !set(&lab, 1, "vips4").contains(VIP),
        "the backup drops nothing"
    );
    assert!(
        !lab.ping(2, VIP),
        "Accept_Mode False: the VIP must not answer"
    );
    assert!(!lab.ping(2, VIP6));
    let mac0 = mac_of(&lab, 0);
    assert_eq!(
        neighbour_mac(&lab, 2, VIP).as_deref(),
        Some(mac0.as_str()),
        "ARP answered"
    );
    let (_, neigh6) = lab.exec(2, &["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"]);
    assert!(
        neigh6.contains(&mac0) && !neigh6.contains("FAILED"),
        "ND not answered: {neigh6:?}"
    );
    // The node's own address still answers: only the VIPs are dropped.
    assert!(lab.ping(2, "198.18.0.1"));

    // A crash leaves the drop rule behind (and the VIP); the new master drops in its turn.
    lab.proc(a).kill9();
    assert!(wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP)).is_some());
    assert!(wait_for(Duration::from_secs(2), || set(&lab, 1, "vips4")
        .contains(VIP))
    .is_some());
    assert!(!lab.ping(2, VIP));
    assert!(set(&lab, 0, "vips4").contains(VIP));
    // Restarted as a backup, without --no-accept now, it clears both (the element although
    // none of its instances needs the table), and leaves the table to whoever uses it.
    let a2 = lab.spawn_ours(0, &strs(&ours_v3("50", &extra[1..])));
    assert!(
        wait_for(Duration::from_secs(3), || !set(&lab, 0, "vips4")
            .contains(VIP)
            && !set(&lab, 0, "vips6").contains(VIP6)
            && !lab.has_addr(0, VIP))
        .is_some(),
        "stale drop rule kept: {}",
        set(&lab, 0, "vips4")
    );
    assert!(lab.proc(a2).term());
    // A --no-accept master's clean stop takes its elements out and removes the emptied
    // table.
    assert!(lab.proc(b).term());
    let (_, tables) = lab.exec(1, &["nft", "list", "tables"]);
    assert!(
        !tables.contains("lb_vrrp"),
        "table left after a clean stop: {tables}"
    );
}

/// Without `--no-accept` (keepalived's default, `accept`) no table is installed and the
/// VIP answers.
#[test]
fn accept_is_the_default_and_installs_nothing() {
    if !lab_available() || !tool_available("nft") {
        return;
    }
    let mut lab = Lab::new(3);
    let _a = lab.spawn_ours(0, &strs(&ours_v3("150", &[])));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0], VIP) == [0]).is_some());
    assert!(lab.ping(2, VIP));
    let (_, tables) = lab.exec(0, &["nft", "list", "tables"]);
    assert!(!tables.contains("lb_vrrp"), "{tables}");
}

/// The MAC address of interface `dev` in leaf `i`, if it exists.
fn dev_mac(lab: &Lab, i: usize, dev: &str) -> Option<String> {
    let (ok, out) = lab.exec(i, &["cat", &format!("/sys/class/net/{dev}/address")]);
    ok.then(|| out.trim().to_owned())
}

/// True if `dev` in leaf `i` carries `addr`.
fn dev_has_addr(lab: &Lab, i: usize, dev: &str, addr: &str) -> bool {
    let (_, out) = lab.exec(i, &["ip", "-o", "addr", "show", "dev", dev]);
    out.split_whitespace()
        .any(|w| w.split('/').next() == Some(addr))
}

/// keepalived's `use_vmac` against ours (RFC 5798 §7.3, the virtual router MAC): each
/// router has a private macvlan `vrrp.51` with MAC 00:00:5e:00:01:33 on its eth0, the
/// VIP on the Master's. Ours, as Backup, hears keepalived's adverts on its own VMAC (the
/// kernel delivers frames from the shared MAC to that macvlan only) and stays Backup;
/// its joins of the VRRP group do not leave from the virtual MAC (they would teach the
/// bridge that the Master's MAC is behind the Backup). After keepalived's kill -9 ours
/// takes the VIP onto its VMAC and the client keeps the same MAC for the VIP; a
/// restarted keepalived preempts; a clean stop of ours
/// deletes its VMAC and puts eth0's ARP settings back.
#[test]
fn use_vmac_interop_with_keepalived() {
    if !lab_available() || !tool_available("keepalived") || !tool_available("tshark") {
        return;
    }
    const VMAC: &str = "00:00:5e:00:01:33";
    let conf = |prio: u8| vmac_keepalived_conf("use_vmac", prio);
    let mut lab = Lab::new(3);
    let ka = keepalived_vmac_master(&mut lab, &conf(150));
    assert_eq!(dev_mac(&lab, 0, "vrrp.51").as_deref(), Some(VMAC));
    let (_, before) = lab.exec(1, &["cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"]);
    assert_eq!(before.trim(), "0");

    // Our joins, captured on the client from before ours starts.
    let pcap = lab.dir.join("joins.pcap");
    let pcap_s = pcap.to_str().unwrap().to_owned();
    let client_ns = lab.ns(2).to_owned();
    let joins = {
        let pcap_s = pcap_s.clone();
        std::thread::spawn(move || {
            common::output_within(
                common::cmd("ip")
                    .args(["netns", "exec", &client_ns, "tshark", "-q", "-i", "eth0"])
                    .args(["-a", "duration:5", "-f", "igmp", "-w", &pcap_s]),
                common::CMD_TIMEOUT,
            )
            .expect("tshark")
        })
    };
    // Strict reverse-path filtering: the kernel takes the higher of `all` and the VMAC's
    // own rp_filter, and the Master's adverts arrive on the VMAC from an address routed
    // through eth0; without lowering `all` (keepalived's clear_rp_filter) both would be
    // Master.
    assert!(
        lab.exec(1, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
            .0
    );
    std::thread::sleep(Duration::from_millis(1500));
    let ours = lab.spawn_ours(1, &strs(&ours_v3("100", &["--use-vmac"])));
    assert!(
        wait_for(Duration::from_secs(5), || dev_mac(&lab, 1, "vrrp.51")
            .is_some())
        .is_some(),
        "no VMAC in ours: {}",
        lab.proc(ours).stderr()
    );
    assert_eq!(dev_mac(&lab, 1, "vrrp.51").as_deref(), Some(VMAC));
    let (_, ignore) = lab.exec(1, &["cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"]);
    assert_eq!(ignore.trim(), "1", "eth0 must not answer ARP for the VIP");
    let (_, announce) = lab.exec(1, &["cat", "/proc/sys/net/ipv4/conf/eth0/arp_announce"]);
    assert_eq!(
        announce.trim(),
        "2",
        "eth0 must not ask with the VIP as sender"
    );
    let (_, rp) = lab.exec(
        1,
        &[
            "sysctl",
            "-n",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.eth0.rp_filter",
        ],
    );
    assert_eq!(
        rp.split_whitespace().collect::<Vec<_>>(),
        ["0", "1"],
        "all.rp_filter not moved onto the interfaces"
    );
    // Backup: it hears keepalived through its VMAC (Master_Down_Interval is 0.36 s).
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !dev_has_addr(&lab, 1, "vrrp.51", VIP) && dev_has_addr(&lab, 0, "vrrp.51", VIP),
        "ours did not stay Backup: {}",
        lab.proc(ours).stderr()
    );
    // keepalived as Master asks for the client's MAC with the VIP as sender from its
    // eth0, so the client's entry may hold keepalived's eth0 MAC here; ours must not.
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());

    let out = joins.join().expect("capture thread");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = pcap_fields(&pcap_s, None, &["eth.src", "igmp.maddr"]);
    let base = mac_of(&lab, 1);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&base) && l.contains("224.0.0.18")),
        "ours did not join 224.0.0.18 from eth0 ({base}): {text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with(VMAC)),
        "an IGMP report left from the virtual MAC: {text}"
    );

    // keepalived dies: ours takes the VIP onto its VMAC; the client's entry stays.
    kill_keepalived_vmac(&mut lab, ka);
    assert!(
        wait_for(Duration::from_secs(5), || dev_has_addr(
            &lab, 1, "vrrp.51", VIP
        ))
        .is_some(),
        "ours did not take over: {}",
        lab.proc(ours).stderr()
    );
    assert!(
        !lab.has_addr(1, VIP),
        "the VIP must be on the VMAC, not on eth0"
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    assert_eq!(neighbour_mac(&lab, 2, VIP).as_deref(), Some(VMAC));
    // Our adverts leave from the virtual MAC (RFC 5798 §7.2), with eth0's address.
    let adverts_s = capture(&lab, 2, "adverts.pcap", "ip proto 112", 1);
    let text = pcap_fields(&adverts_s, None, &["eth.src", "ip.src"]);
    assert!(text.lines().count() >= 5, "too few adverts: {text}");
    assert!(
        text.lines().all(|l| l == format!("{VMAC}\t198.18.0.2")),
        "adverts not from the virtual MAC and eth0's address: {text}"
    );

    // Someone deletes our VMAC: it comes back, with the VIP, as keepalived recreates its.
    assert!(lab.exec(1, &["ip", "link", "del", "vrrp.51"]).0);
    assert!(
        wait_for(Duration::from_secs(3), || dev_has_addr(
            &lab, 1, "vrrp.51", VIP
        ))
        .is_some(),
        "VMAC not recreated with the VIP: {}",
        lab.proc(ours).stderr()
    );
    assert_eq!(dev_mac(&lab, 1, "vrrp.51").as_deref(), Some(VMAC));
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());

    // keepalived back: it preempts, ours goes back to Backup.
    let ka2 = lab.spawn_keepalived(0, &conf(150));
    assert!(
        wait_for(Duration::from_secs(10), || {
            dev_has_addr(&lab, 0, "vrrp.51", VIP) && !dev_has_addr(&lab, 1, "vrrp.51", VIP)
        })
        .is_some(),
        "keepalived did not preempt: {}",
        lab.proc(ka2).stderr()
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());

    // A clean stop deletes our VMAC and restores eth0's ARP settings.
    assert!(lab.proc(ours).term(), "ours did not exit on SIGTERM");
    assert_eq!(dev_mac(&lab, 1, "vrrp.51"), None, "VMAC left behind");
    let (_, after) = lab.exec(
        1,
        &[
            "sysctl",
            "-n",
            "net.ipv4.conf.eth0.arp_ignore",
            "net.ipv4.conf.eth0.arp_filter",
            "net.ipv4.conf.eth0.arp_announce",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.eth0.rp_filter",
        ],
    );
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0", "1", "0"],
        "ARP and rp_filter settings not restored"
    );
    assert!(lab.proc(ours).stdout().contains("VI_1 BACKUP -> MASTER"));
}

/// `use_vmac` over IPv6 against keepalived's: the VMAC has MAC 00:00:5e:00:02:3d, no
/// address generated from it, and a copy of eth0's link-local address, which adverts come
/// from. Ours as Backup hears keepalived through its VMAC and sends no MLD report from
/// the virtual MAC; after keepalived's kill -9 it takes the VIP onto its VMAC, the client
/// reaches it with the virtual MAC, and a clean stop deletes the VMAC.
#[test]
fn use_vmac_ipv6_interop_with_keepalived() {
    if !lab_available() || !tool_available("keepalived") || !tool_available("tshark") {
        return;
    }
    const VIP6: &str = "fd00:18::100";
    const VMAC6: &str = "00:00:5e:00:02:3d";
    let conf = |prio: u8| {
        format!(
            "global_defs {{\n  router_id LBV_VMAC6\n}}\nvrrp_instance VI_6 {{\n  state BACKUP\n  interface eth0\n  use_vmac\n  virtual_router_id 61\n  version 3\n  priority {prio}\n  advert_int 0.1\n  virtual_ipaddress {{\n    fd00:18::100/64\n  }}\n}}\n"
        )
    };
    let mut lab = Lab::new(3);
    let ka = lab.spawn_keepalived(0, &conf(150));
    assert!(
        wait_for(Duration::from_secs(10), || dev_has_addr(
            &lab, 0, "vrrp.61", VIP6
        ))
        .is_some(),
        "keepalived did not put the VIP on its VMAC: {}",
        lab.proc(ka).stderr()
    );
    let pcap = lab.dir.join("mld.pcap");
    let pcap_s = pcap.to_str().unwrap().to_owned();
    let client_ns = lab.ns(2).to_owned();
    let joins = {
        let pcap_s = pcap_s.clone();
        std::thread::spawn(move || {
            common::output_within(
                common::cmd("ip")
                    .args(["netns", "exec", &client_ns, "tshark", "-q", "-i", "eth0"])
                    .args(["-a", "duration:5", "-f", "ip6 multicast", "-w", &pcap_s]),
                common::CMD_TIMEOUT,
            )
            .expect("tshark")
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let ours = lab.spawn_ours(
        1,
        &[
            "--instance",
            "VI_6",
            "--interface",
            "eth0",
            "--vrid",
            "61",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--priority",
            "100",
            "--vip",
            "fd00:18::100/64",
            "--use-vmac",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(5), || dev_mac(&lab, 1, "vrrp.61")
            .is_some())
        .is_some(),
        "no VMAC in ours: {}",
        lab.proc(ours).stderr()
    );
    assert_eq!(dev_mac(&lab, 1, "vrrp.61").as_deref(), Some(VMAC6));
    let link_local = |dev: &str| -> Vec<String> {
        let (_, out) = lab.exec(
            1,
            &[
                "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link",
            ],
        );
        out.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .map(|a| vec![a.to_owned()])
            .unwrap_or_default()
    };
    let base_ll = link_local("eth0");
    assert_eq!(base_ll.len(), 1, "eth0 has no link-local address");
    assert!(
        wait_for(Duration::from_secs(3), || link_local("vrrp.61") == base_ll).is_some(),
        "the VMAC does not carry eth0's link-local {base_ll:?}: {}",
        lab.exec(1, &["ip", "-6", "addr", "show", "dev", "vrrp.61"])
            .1
    );
    let (_, all6) = lab.exec(1, &["ip", "-6", "-o", "addr", "show", "dev", "vrrp.61"]);
    assert!(
        !all6.contains("fe80::200:5eff"),
        "an address generated from the virtual MAC: {all6}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !dev_has_addr(&lab, 1, "vrrp.61", VIP6),
        "ours did not stay Backup: {}",
        lab.proc(ours).stderr()
    );

    let out = joins.join().expect("capture thread");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = pcap_fields(
        &pcap_s,
        Some("icmpv6.type == 143 || icmpv6.type == 131"),
        &["eth.src"],
    );
    let base = mac_of(&lab, 1);
    assert!(
        text.lines().any(|l| l == base),
        "no MLD report from eth0 ({base}): {text}"
    );
    assert!(
        !text.lines().any(|l| l == VMAC6),
        "an MLD report left from the virtual MAC: {text}"
    );

    kill_keepalived_vmac(&mut lab, ka);
    assert!(
        wait_for(Duration::from_secs(5), || dev_has_addr(
            &lab, 1, "vrrp.61", VIP6
        ))
        .is_some(),
        "ours did not take over: {}",
        lab.proc(ours).stderr()
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP6)).is_some());
    let (_, neigh) = lab.exec(2, &["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"]);
    assert!(neigh.contains(VMAC6), "{neigh}");
    let adverts_s = capture(&lab, 2, "adverts6.pcap", "ip6 proto 112", 1);
    let text = pcap_fields(&adverts_s, None, &["eth.src", "ipv6.src"]);
    let ll = base_ll[0].split('/').next().unwrap_or_default().to_owned();
    assert!(text.lines().count() >= 5, "too few adverts: {text}");
    assert!(
        text.lines().all(|l| l == format!("{VMAC6}\t{ll}")),
        "adverts not from the virtual MAC and eth0's link-local {ll}: {text}"
    );

    assert!(lab.proc(ours).term(), "ours did not exit on SIGTERM");
    assert_eq!(dev_mac(&lab, 1, "vrrp.61"), None, "VMAC left behind");
}

/// `vmac_xmit_base` against keepalived's: adverts leave from eth0 with its MAC and are
/// read there, while the VIP and its gratuitous ARPs stay on the VMAC. Ours follows
/// keepalived as Backup, takes over after its kill -9, and its adverts carry eth0's MAC.
#[test]
fn vmac_xmit_base_interop_with_keepalived() {
    if !lab_available() || !tool_available("keepalived") || !tool_available("tshark") {
        return;
    }
    const VMAC: &str = "00:00:5e:00:01:33";
    let mut lab = Lab::new(3);
    let ka = keepalived_vmac_master(
        &mut lab,
        &vmac_keepalived_conf("use_vmac\n  vmac_xmit_base", 150),
    );
    let ours = lab.spawn_ours(
        1,
        &strs(&ours_v3("100", &["--use-vmac", "--vmac-xmit-base"])),
    );
    assert!(
        wait_for(Duration::from_secs(5), || dev_mac(&lab, 1, "vrrp.51")
            .is_some())
        .is_some(),
        "no VMAC in ours: {}",
        lab.proc(ours).stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !dev_has_addr(&lab, 1, "vrrp.51", VIP),
        "ours did not stay Backup: {}",
        lab.proc(ours).stderr()
    );
    kill_keepalived_vmac(&mut lab, ka);
    assert!(
        wait_for(Duration::from_secs(5), || dev_has_addr(
            &lab, 1, "vrrp.51", VIP
        ))
        .is_some(),
        "ours did not take over: {}",
        lab.proc(ours).stderr()
    );
    assert!(wait_for(Duration::from_secs(3), || lab.ping(2, VIP)).is_some());
    assert_eq!(neighbour_mac(&lab, 2, VIP).as_deref(), Some(VMAC));
    let pcap_s = capture(&lab, 2, "xmit.pcap", "ip proto 112", 1);
    let text = pcap_fields(&pcap_s, None, &["eth.src", "ip.src"]);
    let base = mac_of(&lab, 1);
    assert!(text.lines().count() >= 5, "too few adverts: {text}");
    assert!(
        text.lines().all(|l| l == format!("{base}\t198.18.0.2")),
        "adverts not from eth0's MAC ({base}): {text}"
    );
    assert!(lab.proc(ours).term(), "ours did not exit on SIGTERM");
    assert_eq!(dev_mac(&lab, 1, "vrrp.51"), None, "VMAC left behind");
}

/// keepalived's `mcast_dst_ip`: ours and keepalived on 224.0.0.119 follow each other,
/// while another VRRP domain with the same VRID and a higher priority runs on RFC 5798's
/// group (leaf 2, and a second speaker of ours in leaf 1 that joins 224.0.0.18 there). Ours
/// reads only its group's adverts (`IP_MULTICAST_ALL` off): after keepalived's kill -9 it
/// becomes Master, where hearing the other domain's priority 200 would keep it Backup.
#[test]
fn mcast_dst_ip_keeps_vrrp_domains_apart() {
    if !lab_available() || !tool_available("keepalived") || !tool_available("tshark") {
        return;
    }
    let conf = |prio: u8| {
        format!("global_defs {{\n  router_id LBV_GROUP\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  mcast_dst_ip 224.0.0.119\n  virtual_router_id 51\n  version 3\n  priority {prio}\n  advert_int 0.1\n  virtual_ipaddress {{\n    198.18.0.100/24\n  }}\n}}\n")
    };
    let mut lab = Lab::new(3);
    // The other domain: RFC 5798's group, the same VRID and VIP, priority 200.
    let _other = lab.spawn_ours(2, &strs(&ours_v3("200", &[])));
    let ka = lab.spawn_keepalived(0, &conf(150));
    let ours = lab.spawn_ours(
        1,
        &strs(&ours_v3("100", &["--mcast-dst-ip", "224.0.0.119"])),
    );
    // A speaker of ours in leaf 1 on RFC 5798's group: leaf 1 takes 224.0.0.18 traffic in.
    let _joiner = lab.spawn_ours(
        1,
        &[
            "--interface",
            "eth0",
            "--vrid",
            "52",
            "--version",
            "3",
            "--advert-int",
            "0.1",
            "--vip",
            "198.18.0.102/24",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(10), || lab.holders(&[0, 1, 2], VIP)
            == [0, 2])
        .is_some(),
        "{:?}\nkeepalived: {}\nours: {}",
        lab.holders(&[0, 1, 2], VIP),
        lab.proc(ka).stderr(),
        lab.proc(ours).stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lab.holders(&[0, 1, 2], VIP),
        [0, 2],
        "ours did not follow keepalived on 224.0.0.119"
    );
    lab.proc(ka).kill9();
    assert!(
        wait_for(Duration::from_secs(3), || lab.has_addr(1, VIP)).is_some(),
        "ours did not take over: it heard the other domain\n{}",
        lab.proc(ours).stderr()
    );
    let pcap_s = capture(
        &lab,
        2,
        "group.pcap",
        "ip proto 112 and src host 198.18.0.2",
        1,
    );
    let text = pcap_fields(&pcap_s, None, &["ip.dst", "vrrp.virt_rtr_id"]);
    let ours_51: Vec<&str> = text.lines().filter(|l| l.ends_with("\t51")).collect();
    assert!(ours_51.len() >= 5, "too few adverts: {text}");
    assert!(
        ours_51.iter().all(|l| l.starts_with("224.0.0.119\t")),
        "adverts not sent to 224.0.0.119: {text}"
    );
    // keepalived back at priority 50: it hears ours on 224.0.0.119 (the v3 checksum covers
    // the group) and stays Backup.
    let ka2 = lab.spawn_keepalived(0, &conf(50));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.holders(&[0, 1, 2], VIP),
        [1, 2],
        "keepalived did not follow ours on 224.0.0.119: {}",
        lab.proc(ka2).stderr()
    );
}

/// keepalived's `vrrp_startup_delay`: the instance starts at once as Backup, but takes
/// over only after the delay (an address owner, which otherwise becomes Master at once,
/// holds no VIP before its end).
#[test]
fn startup_delay_holds_the_instances() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(2);
    let started = std::time::Instant::now();
    let ours = lab.spawn_ours(
        0,
        &[
            "--startup-delay",
            "2",
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--priority",
            "255",
            "--vip",
            "198.18.0.100/24",
        ],
    );
    let took = wait_for(Duration::from_secs(6), || lab.has_addr(0, VIP))
        .map(|_| started.elapsed())
        .unwrap_or_else(|| panic!("no VIP: {}", lab.proc(ours).stderr()));
    assert!(
        took >= Duration::from_millis(1900),
        "the owner took the VIP after {took:?}, inside its 2 s startup delay"
    );
    assert!(lab.proc(ours).stderr().contains("vrrp_startup_delay"));
    // The transition's line may follow the VIP by a moment (a CI run read the output
    // before it).
    let transitions = wait_for(Duration::from_secs(5), || {
        let out = lab.proc(ours).stdout();
        out.contains("INIT -> BACKUP") && out.contains("BACKUP -> MASTER")
    });
    assert!(transitions.is_some(), "{}", lab.proc(ours).stdout());
}

/// Captures `filter` (a capture filter) on leaf `i`'s eth0 for `secs` seconds into `name`
/// in the lab's directory; returns the file's path.
fn capture(lab: &Lab, i: usize, name: &str, filter: &str, secs: u32) -> String {
    let path = lab.dir.join(name).to_str().expect("utf8 path").to_owned();
    let duration = format!("duration:{secs}");
    let (ok, _) = lab.exec(
        i,
        &[
            "tshark", "-q", "-i", "eth0", "-a", &duration, "-f", filter, "-w", &path,
        ],
    );
    assert!(ok, "tshark capture failed");
    path
}

/// tshark's `fields` of the packets of `pcap` (passing the display filter `filter`, if
/// any): one line per packet, tab-separated.
fn pcap_fields(pcap: &str, filter: Option<&str>, fields: &[&str]) -> String {
    let mut cmd = common::cmd("tshark");
    cmd.args(["-r", pcap]);
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    cmd.args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = common::output_within(&mut cmd, common::CMD_TIMEOUT).expect("tshark -r");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// keepalived.conf for VI_1 (VRID 51, v3, advert_int 0.1, VIP 198.18.0.100/24 on eth0)
/// with `vmac` (its use_vmac lines) and `prio`.
fn vmac_keepalived_conf(vmac: &str, prio: u8) -> String {
    format!(
        "global_defs {{\n  router_id LBV_VMAC\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  {vmac}\n  virtual_router_id 51\n  version 3\n  priority {prio}\n  advert_int 0.1\n  virtual_ipaddress {{\n    198.18.0.100/24\n  }}\n}}\n"
    )
}

/// Starts keepalived with `conf` in leaf 0 and waits until it is Master with the VIP on
/// its VMAC `vrrp.51`; returns its process.
fn keepalived_vmac_master(lab: &mut Lab, conf: &str) -> usize {
    let ka = lab.spawn_keepalived(0, conf);
    assert!(
        wait_for(Duration::from_secs(10), || dev_has_addr(
            lab, 0, "vrrp.51", VIP
        ))
        .is_some(),
        "keepalived did not put the VIP on its VMAC: {}",
        lab.proc(ka).stderr()
    );
    ka
}

/// keepalived dies (kill -9 of its process group) and its node with it: the VMAC it left,
/// VIP and all, is deleted too, so that the stale node neither answers for the VIP nor
/// asks the client for its MAC with the VIP as sender (keepalived does not set
/// `arp_announce`).
fn kill_keepalived_vmac(lab: &mut Lab, ka: usize) {
    lab.proc(ka).kill9();
    let _ = lab.exec(0, &["ip", "link", "del", "vrrp.51"]);
    let _ = lab.exec(0, &["ip", "link", "del", "vrrp.61"]);
}

/// keepalived's `dont_track_primary`: the Master whose eth0 goes down stays Master (no
/// Fault, the VIP kept); without it, the same step is Fault
/// (`link_down_is_fault_and_recovers`).
#[test]
fn dont_track_primary_ignores_the_link() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::new(1);
    let a = lab.spawn_ours(0, &strs(&ours_v3("150", &["--dont-track-primary"])));
    assert!(wait_for(Duration::from_secs(5), || lab.has_addr(0, VIP)).is_some());
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "down"]);
    std::thread::sleep(Duration::from_secs(1));
    let out = lab.proc(a).stdout();
    assert!(!out.contains("FAULT"), "{out}");
    assert!(lab.has_addr(0, VIP), "the Master dropped its VIP: {out}");
    let _ = lab.exec(0, &["ip", "link", "set", "eth0", "up"]);
}

/// The gratuitous ARPs leaf 0 (`mac`, if given) sent, as seen in `pcap`: their capture
/// times in seconds, sorted.
fn garp_times(pcap: &str, mac: Option<&str>) -> Vec<f64> {
    let mut filter = "arp.opcode == 1 && arp.src.proto_ipv4 == arp.dst.proto_ipv4".to_owned();
    if let Some(m) = mac {
        filter.push_str(&format!(" && eth.src == {m}"));
    }
    let mut t: Vec<f64> = pcap_fields(pcap, Some(&filter), &["frame.time_relative"])
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// Waits (15 s at most) for the capture process `cap` to end.
fn wait_capture(lab: &mut Lab, cap: usize) {
    assert!(
        wait_for(Duration::from_secs(15), || lab
            .proc(cap)
            .child
            .try_wait()
            .ok()
            .flatten()
            .is_some())
        .is_some(),
        "the capture ended"
    );
}

/// Starts a capture of ARP in leaf 2 for `secs` seconds; returns its process and file.
fn capture_arp(lab: &mut Lab, secs: u32) -> (usize, String) {
    let path = lab.dir.join("arp.pcap").to_str().expect("utf8").to_owned();
    let duration = format!("duration:{secs}");
    let p = lab.spawn_in(
        2,
        "tshark",
        &[
            "tshark", "-q", "-i", "eth0", "-a", &duration, "-f", "arp", "-w", &path,
        ],
    );
    // tshark takes a moment to start capturing.
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::metadata(&path)
            .is_ok_and(|m| m.len() > 0))
        .is_some(),
        "tshark started"
    );
    std::thread::sleep(Duration::from_millis(300));
    (p, path)
}

/// keepalived's `vrrp_garp_interval`: with 0.05 s the 24 gratuitous ARPs of two bursts (4
/// VIPs, `garp_master_repeat 3`, the second burst 1 s later) leave at least 50 ms apart;
/// without it each burst leaves at once. Messages still waiting when the instance loses
/// Master (a higher priority appears) are not sent: they would point the neighbours back
/// at a backup.
#[test]
fn garp_interval_spaces_the_gratuitous_arps() {
    if !lab_available() || !tool_available("tshark") {
        return;
    }
    let vips = ["198.18.0.101/24", "198.18.0.102/24", "198.18.0.103/24"];
    for interval in [None, Some("0.05")] {
        let mut lab = Lab::new(3);
        let (cap, pcap) = capture_arp(&mut lab, 5);
        let mut extra = vec!["--garp-master-repeat", "3"];
        for v in vips {
            extra.extend(["--vip", v]);
        }
        if let Some(i) = interval {
            extra.extend(["--garp-interval", i]);
        }
        lab.spawn_ours(0, &strs(&ours_v3("150", &extra)));
        wait_capture(&mut lab, cap);
        let t = garp_times(&pcap, None);
        assert_eq!(t.len(), 24, "two bursts of 4 VIPs × 3: {t:?}");
        let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let min = gaps.iter().copied().fold(f64::MAX, f64::min);
        // Stamped on arrival one bridge away: a busy machine shifts single packets by a
        // few ms, not a burst's span.
        match interval {
            Some(_) => {
                assert!(min >= 0.03, "about 50 ms apart: {gaps:?}");
                assert!(
                    t[11] - t[0] >= 0.5,
                    "the first burst spread over 11 × 50 ms: {t:?}"
                );
            }
            None => assert!(t[11] - t[0] < 0.2, "one burst at once: {t:?}"),
        }
    }

    // 4 VIPs × 5 at 0.2 s: 4 s of messages. A higher priority takes over after ~1 s; the
    // waiting ones are dropped.
    let mut lab = Lab::new(3);
    let mac0 = mac_of(&lab, 0);
    let mac1 = mac_of(&lab, 1);
    let (cap, pcap) = capture_arp(&mut lab, 6);
    let mut extra = vec![
        "--garp-master-repeat",
        "5",
        "--garp-master-delay",
        "0",
        "--garp-interval",
        "0.2",
    ];
    for v in vips {
        extra.extend(["--vip", v]);
    }
    let a = lab.spawn_ours(0, &strs(&ours_v3("100", &extra)));
    assert!(wait_for(Duration::from_secs(5), || lab.has_addr(0, VIP)).is_some());
    std::thread::sleep(Duration::from_secs(1));
    let mut same = Vec::new();
    for v in vips {
        same.extend(["--vip", v]);
    }
    lab.spawn_ours(1, &strs(&ours_v3("200", &same)));
    assert!(wait_for(Duration::from_secs(5), || lab.holders(&[0, 1], VIP) == [1]).is_some());
    wait_capture(&mut lab, cap);
    let ours = garp_times(&pcap, Some(&mac0));
    let theirs = garp_times(&pcap, Some(&mac1));
    assert!(
        (3..20).contains(&ours.len()),
        "leaf 0 sent some, not all 20: {ours:?}\n{}",
        lab.proc(a).stderr()
    );
    let took_over = theirs.first().copied().expect("leaf 1 announced the VIPs");
    let last = ours.last().copied().unwrap_or_default();
    // One 0.2 s interval of slack: a loaded machine can delay leaf 0's handling of the
    // new master's advert while a queued gratuitous ARP goes out; the count above already
    // shows that the rest of the queue was dropped.
    assert!(
        last < took_over + 0.35,
        "leaf 0 stopped announcing when it lost Master: its last at {last}, leaf 1's first at {took_over}: {ours:?}"
    );
}

/// keepalived's `unicast_ttl`: unicast adverts leave with that TTL (255 otherwise).
#[test]
fn unicast_ttl_sets_the_adverts_ttl() {
    if !lab_available() || !tool_available("tshark") {
        return;
    }
    for (ttl, want) in [(None, "255"), (Some("7"), "7")] {
        let mut lab = Lab::new(2);
        let mut extra = vec!["--unicast-peer", "198.18.0.2"];
        if let Some(t) = ttl {
            extra.extend(["--unicast-ttl", t]);
        }
        lab.spawn_ours(0, &strs(&ours_v3("150", &extra)));
        assert!(wait_for(Duration::from_secs(5), || lab.has_addr(0, VIP)).is_some());
        let (ok, out) = lab.exec(
            1,
            &[
                "tshark",
                "-l",
                "-i",
                "eth0",
                "-a",
                "duration:2",
                "-f",
                "ip proto 112",
                "-T",
                "fields",
                "-e",
                "ip.ttl",
            ],
        );
        assert!(ok, "tshark");
        let ttls: Vec<&str> = out.lines().collect();
        assert!(
            !ttls.is_empty() && ttls.iter().all(|t| *t == want),
            "TTL {want}: {ttls:?}"
        );
    }
}
