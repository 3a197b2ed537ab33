//! Failover measurement (a bench, not a timed test), ours vs keepalived:
//!
//!     sudo cargo bench -p lb-vrrp --bench failover            # LBV_TRIALS=5 by default
//!
//! For each implementation and each of v2 `advert_int 1`, v3 `0.1` and v3 `0.01`: a master
//! (priority 150) and a backup (100) of the same implementation, and a client, in network
//! namespaces on one bridge. Two ways to lose the master:
//!
//! - `kill -9`: TCP listeners on port 8080 in both routers; the master node "crashes" (its
//!   link goes down and its speaker gets `kill -9`, process group for keepalived);
//! - clean stop: a listener on the backup only; the master's speaker gets SIGTERM and
//!   announces priority 0 (both implementations do), its link stays up.
//!
//! Each trial measures the time to the first successful TCP connect from the client to the
//! VIP. Needs root, `keepalived`, and addresses only from 198.18.0.0/24.
//!
//! Environment: `LBV_TRIALS` (default 5), `LBV_CASES` (default `2:1,3:0.1,3:0.01`: version
//! and advert_int), `LBV_STOPS` (default `kill,clean`), `LBV_VMAC` (`1`: both
//! implementations with keepalived's `use_vmac`, the VIP on `vrrp.51` with the virtual
//! router MAC). Besides the summary table, every trial prints a
//! `RESULT\tfigure\tside\tvalue\tunit` line for benches/run.sh.
#![allow(clippy::disallowed_methods)] // a blocking measurement program

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{wait_for, Lab};

const VIP: &str = "198.18.0.100";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// Link down and `kill -9` of the master's speaker.
    Kill9,
    /// SIGTERM: the speaker resigns with a priority-0 advert.
    Clean,
}

impl Stop {
    const fn figure(self) -> &'static str {
        match self {
            Self::Kill9 => "kill -9",
            Self::Clean => "clean stop (prio 0)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Ours,
    Keepalived,
}

/// `LBV_VMAC=1`: both implementations with `use_vmac`.
fn vmac() -> bool {
    std::env::var("LBV_VMAC").as_deref() == Ok("1")
}

/// The leaves (of `of`) holding the VIP, on eth0 or (with `LBV_VMAC`) on `vrrp.51`.
fn holders(lab: &Lab, of: &[usize]) -> Vec<usize> {
    of.iter()
        .copied()
        .filter(|&i| {
            let dev = if vmac() { "vrrp.51" } else { "eth0" };
            let (_, out) = lab.exec(i, &["ip", "-o", "addr", "show", "dev", dev]);
            out.split_whitespace()
                .any(|w| w.split('/').next() == Some(VIP))
        })
        .collect()
}

fn start(
    lab: &mut Lab,
    which: Impl,
    leaf: usize,
    version: u8,
    advert_int: &str,
    prio: u8,
) -> usize {
    match which {
        Impl::Ours => {
            let prio = prio.to_string();
            let mut args = vec![
                "--interface",
                "eth0",
                "--vrid",
                "51",
                "--priority",
                &prio,
                "--advert-int",
                advert_int,
                "--vip",
                "198.18.0.100/24 dev eth0",
            ];
            if version == 2 {
                args.extend(["--version", "2", "--auth-pass", "7road123"]);
            } else {
                args.extend(["--version", "3"]);
            }
            if vmac() {
                args.push("--use-vmac");
            }
            lab.spawn_ours(leaf, &args)
        }
        Impl::Keepalived => {
            let auth = if version == 2 {
                "authentication {\n auth_type PASS\n auth_pass 7road123\n }\n"
            } else {
                ""
            };
            let use_vmac = if vmac() { "use_vmac\n" } else { "" };
            let conf = format!(
                "global_defs {{\n router_id BENCH\n}}\nvrrp_instance VI_1 {{\n state BACKUP\n interface eth0\n {use_vmac} virtual_router_id 51\n version {version}\n priority {prio}\n advert_int {advert_int}\n {auth} virtual_ipaddress {{\n 198.18.0.100/24 dev eth0\n }}\n}}\n"
            );
            lab.spawn_keepalived(leaf, &conf)
        }
    }
}

fn trial(which: Impl, stop: Stop, version: u8, advert_int: &str, seed: u64) -> Option<Duration> {
    let mut lab = Lab::new(3);
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
    if stop == Stop::Kill9 {
        lab.tcp_listener(0, addr);
    }
    // A clean stop leaves the old master's link up: only the backup serves, so a connect
    // succeeds only once the VIP has moved.
    lab.tcp_listener(1, addr);
    let vip: SocketAddr = format!("{VIP}:8080").parse().ok()?;
    let master = start(&mut lab, which, 0, version, advert_int, 150);
    std::thread::sleep(Duration::from_millis(100));
    let _backup = start(&mut lab, which, 1, version, advert_int, 100);
    if wait_for(Duration::from_secs(15), || holders(&lab, &[0, 1]) == [0]).is_none() {
        eprintln!("{which:?} v{version} {advert_int}: no single master");
        return None;
    }
    // Let the backup settle, then stop at a pseudo-random point of the advert cycle.
    let int_ms = (advert_int.parse::<f64>().ok()? * 1000.0) as u64;
    std::thread::sleep(Duration::from_millis(
        3 * int_ms + 200 + (seed * 7919) % int_ms.max(1),
    ));
    let reachable = match stop {
        Stop::Kill9 => lab.tcp_connect(2, vip, Duration::from_millis(500)),
        Stop::Clean => lab.ping(2, VIP),
    };
    if !reachable {
        eprintln!("{which:?}: client cannot reach the VIP before the stop");
        return None;
    }
    let t0 = Instant::now();
    match stop {
        Stop::Kill9 => {
            let _ = lab.exec(0, &["ip", "link", "set", "eth0", "down"]);
            lab.proc(master).kill9();
        }
        Stop::Clean => {
            // keepalived: its parent forwards SIGTERM to the VRRP child.
            let pid = lab.proc(master).pid().to_string();
            let _ = common::output_within(
                common::cmd("kill").args(["-TERM", &pid]),
                common::CMD_TIMEOUT,
            );
        }
    }
    // Refused connects (clean stop, VIP still on the old master) return at once: pace them.
    for _ in 0..100_000 {
        if lab.tcp_connect(2, vip, Duration::from_millis(5)) {
            let took = t0.elapsed();
            if stop == Stop::Clean {
                let _ = lab.proc(master).term();
            }
            return Some(took);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "failover: run with `cargo bench -p lb-vrrp --bench failover` (needs root); skipped"
        );
        return;
    }
    if !common::lab_available() || !common::tool_available("keepalived") {
        return;
    }
    let trials: u64 = std::env::var("LBV_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cases: Vec<(u8, String)> = std::env::var("LBV_CASES")
        .unwrap_or_else(|_| "2:1,3:0.1,3:0.01".into())
        .split(',')
        .filter_map(|c| {
            let (v, i) = c.trim().split_once(':')?;
            Some((v.parse().ok()?, i.to_string()))
        })
        .collect();
    let stops_env = std::env::var("LBV_STOPS").unwrap_or_else(|_| "kill,clean".into());
    let stops: Vec<Stop> = [("kill", Stop::Kill9), ("clean", Stop::Clean)]
        .into_iter()
        .filter(|(name, _)| stops_env.split(',').any(|s| s.trim() == *name))
        .map(|(_, s)| s)
        .collect();
    println!("master lost -> first TCP connect to the VIP from the client ({trials} trials each)");
    println!(
        "{:<20} {:<11} {:>2} {:>10} {:>9} {:>9} {:>9} {:>5}",
        "stop", "impl", "v", "advert_int", "min ms", "median", "max ms", "ok"
    );
    for stop in stops {
        for (version, advert_int) in &cases {
            let (version, advert_int) = (*version, advert_int.as_str());
            for which in [Impl::Ours, Impl::Keepalived] {
                let side = match which {
                    Impl::Ours => "ours",
                    Impl::Keepalived => "keepalived",
                };
                let figure = format!(
                    "failover {} -> connect, v{version} advert_int {advert_int}{}",
                    stop.figure(),
                    if vmac() { ", use_vmac" } else { "" }
                );
                let mut ms: Vec<f64> = Vec::new();
                for s in 0..trials {
                    match trial(which, stop, version, advert_int, s) {
                        Some(d) => {
                            let v = d.as_secs_f64() * 1000.0;
                            println!("RESULT\t{figure}\t{side}\t{v:.1}\tms");
                            ms.push(v);
                        }
                        None => println!("RESULT\t{figure}\t{side}\tfailed\tms"),
                    }
                }
                ms.sort_by(f64::total_cmp);
                if ms.is_empty() {
                    println!(
                        "{:<20} {:<11} {version:>2} {advert_int:>10} {:>9}",
                        stop.figure(),
                        side,
                        "failed"
                    );
                    continue;
                }
                println!(
                    "{:<20} {:<11} {version:>2} {advert_int:>10} {:>9.1} {:>9.1} {:>9.1} {:>2}/{trials}",
                    stop.figure(),
                    side,
                    ms[0],
                    ms[ms.len() / 2],
                    ms[ms.len() - 1],
                    ms.len()
                );
            }
        }
    }
}
