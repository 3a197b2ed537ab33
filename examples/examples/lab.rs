// cargo run -p lb-examples --example lab          (as root: it builds network namespaces)
// sudo -E env "PATH=$PATH" cargo run -p lb-examples --example lab     (from a user shell)
//
// The seed's two-node keepalived setup, run by two `lb-node`s in a lab of network
// namespaces: a bridge, two LB nodes (lb1, lb2), a client and three real servers with
// distinct pages on ports 82, 83 and 84, addresses from 198.18.0.0/24 only. The nodes read
// keepalived.conf files adapted from the seed (addresses, interface names, a short
// delay_loop, a third real server — the seed has two, on ports 82 and 83 — and, an lb
// extension, one admin socket per node): a sync group of two
// VRRP instances with VIPs 198.18.0.250 and 198.18.0.249, and `virtual_server 198.18.0.250
// 80` with `lb_algo rr`, `lb_kind NAT` and three `real_server`s with `TCP_CHECK`.
//
// It drives client traffic through the VIP, stops a real server (the health checks take it
// out and back in), kills the master with `kill -9`, shows the backup take over while the
// client keeps working, restarts the old master (it preempts), stops everything and removes
// the lab. It prints what happens as it happens and takes about 20 seconds after the build.
//
// Binaries: the example runs `cargo build -p lb-bins --bin lb-node --bin lbctl` into its own
// target directory and profile (found from its own path, TARGET/PROFILE/examples/lab), so
// one command is enough. `LB_NODE_BIN` and `LBCTL_BIN` point it at prebuilt binaries instead.
// `LB_LAB_KEEP_LOGS=1` keeps the lab directory (configs, node logs) for a look afterwards.
#![allow(clippy::disallowed_methods)] // an example program: reads the clock, sleeps between polls

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use lb_bins::admin::client::Client;
use lb_bins::admin::Health;
use lb_testkit::server::TcpServer;
use lb_testkit::{lab_available, run_bounded, wait_until, Lab, Proc};

const VIP: &str = "198.18.0.250";
const VIP2: &str = "198.18.0.249";
const HOSTS: &[(&str, u8)] = &[
    ("lb1", 11),
    ("lb2", 12),
    ("client", 100),
    ("rs1", 151),
    ("rs2", 152),
    ("rs3", 153),
];
const REAL_SERVERS: &[(&str, u16, &str)] = &[
    ("rs1", 82, "real server 1"),
    ("rs2", 83, "real server 2"),
    ("rs3", 84, "real server 3"),
];

type Error = Box<dyn std::error::Error>;

/// Prints with the time since start.
struct Log(Instant);

impl Log {
    fn say(&self, msg: impl AsRef<str>) {
        println!("[{:6.2}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

fn main() -> ExitCode {
    if !lab_available() {
        eprintln!("lab: needs root (network namespaces); nothing was done");
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `lb-node` and `lbctl`: from the environment, or built with cargo next to this example.
fn binaries() -> Result<(PathBuf, PathBuf), Error> {
    if let (Some(n), Some(c)) = (
        std::env::var_os("LB_NODE_BIN"),
        std::env::var_os("LBCTL_BIN"),
    ) {
        return Ok((n.into(), c.into()));
    }
    // TARGET/PROFILE/examples/lab
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory from the example's path")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("cannot locate the target directory from the example's path")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(p) => p.to_owned(),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "building lb-node and lbctl (cargo build -p lb-bins --profile {profile}) into {}",
        target_dir.display()
    );
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build", "-q", "-p", "lb-bins", "--bin", "lb-node", "--bin", "lbctl",
        ])
        .args(["--profile", &profile])
        .arg("--target-dir")
        .arg(target_dir)
        .status()?;
    if !status.success() {
        return Err(format!("cargo build failed: {status}").into());
    }
    Ok((profile_dir.join("lb-node"), profile_dir.join("lbctl")))
}

/// The seed's keepalived.conf, with lab addresses, `eth0`, `delay_loop 1` and an admin
/// socket per node.
fn keepalived_conf(master: bool, socket: &Path) -> String {
    let (router_id, state, prio) = if master {
        ("LVS_MASTER", "MASTER", 100)
    } else {
        ("LVS_BACKUP", "BACKUP", 80)
    };
    let mut real_servers = String::new();
    for (host, port, _) in REAL_SERVERS {
        let octet = HOSTS.iter().find(|(h, _)| h == host).map_or(0, |(_, o)| *o);
        real_servers.push_str(&format!(
            "real_server 198.18.0.{octet} {port} {{
weight 3
TCP_CHECK {{
connect_timeout 3
retry 3
delay_before_retry 3
connect_port {port}
}}
}}
"
        ));
    }
    format!(
        "! Configuration File for keepalived (seed 001, lab addresses)
global_defs {{
router_id {router_id}
admin_socket {socket}   # lb extension: one admin socket per node in the lab
}}
vrrp_instance VI_1 {{
state {state}
interface eth0
virtual_router_id 51
priority {prio}
advert_int 1
authentication {{
auth_type PASS
auth_pass 7road123
}}
virtual_ipaddress {{
{VIP}
}}
}}
vrrp_instance VI_2 {{
state {state}
interface eth0
virtual_router_id 52
priority {prio}
advert_int 1
authentication {{
auth_type PASS
auth_pass 7road123
}}
virtual_ipaddress {{
{VIP2}
}}
}}
vrrp_sync_group VG_1 {{
group {{
VI_1
VI_2
}}
}}
virtual_server {VIP} 80 {{
delay_loop 1 # seed: 6
lb_algo rr
lb_kind NAT
protocol TCP
{real_servers}}}
",
        socket = socket.display()
    )
}

struct Node {
    name: &'static str,
    conf: PathBuf,
    socket: PathBuf,
    proc: Option<Proc>,
}

impl Node {
    fn start(&mut self, lab: &Lab, lb_node: &Path, log: &Log) -> Result<(), Error> {
        let mut cmd = lab.command(self.name, lb_node);
        // Plain logs: lb-node colours its log even when stderr is a file.
        // One pid file per node: the lab's nodes share this host's file system.
        cmd.arg("--pid-file")
            .arg(lab.dir().join(format!("{}.pid", self.name)))
            .arg(&self.conf)
            .env("NO_COLOR", "1");
        let p = Proc::spawn(cmd, lab.dir(), self.name)?;
        log.say(format!(
            "{}: lb-node {} started (pid {}), log {}",
            self.name,
            self.conf.display(),
            p.pid(),
            p.stderr_path().display()
        ));
        self.proc = Some(p);
        Ok(())
    }

    fn status(&self, lbctl: &Path) -> String {
        let mut cmd = Command::new(lbctl);
        cmd.arg("--socket").arg(&self.socket).arg("status");
        match run_bounded(cmd, Duration::from_secs(5)) {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => format!("lbctl failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("lbctl failed: {e}"),
        }
    }
}

fn print_status(log: &Log, node: &Node, lbctl: &Path) {
    log.say(format!(
        "$ lbctl --socket {} status      # {}",
        node.socket.display(),
        node.name
    ));
    for line in node.status(lbctl).lines() {
        println!("           {line}");
    }
}

/// The health lb-node reports for its backend on `port`, through the admin socket.
fn backend_health(socket: &Path, port: u16) -> Option<Health> {
    backend_state(socket, port).map(|(h, _)| h)
}

/// A backend's health and why it is failed, as `lbctl status` says.
fn backend_state(socket: &Path, port: u16) -> Option<(Health, Option<String>)> {
    let status = Client::connect(socket).ok()?.status().ok()?;
    status
        .virtual_servers
        .first()?
        .backends
        .iter()
        .find(|b| b.address.port() == port)
        .map(|b| (b.health, b.health_reason.clone()))
}

fn holders(lab: &Lab, ip: IpAddr) -> String {
    let h = lab.holders(&["lb1", "lb2"], ip);
    if h.is_empty() {
        "nobody".into()
    } else {
        h.join(" and ")
    }
}

fn run() -> Result<(), Error> {
    let (lb_node, lbctl) = binaries()?;
    let log = Log(Instant::now());
    let vip: IpAddr = VIP.parse()?;
    let vs: SocketAddr = SocketAddr::new(vip, 80);

    let lab = Lab::new("lbx", HOSTS)?;
    log.say(format!(
        "lab {}: bridge namespace {}-br, hosts {}",
        lab.tag(),
        lab.tag(),
        lab.hosts()
            .map(|h| format!("{h}={}", lab.addr(h)))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let mut servers: Vec<TcpServer> = Vec::new();
    for (host, port, page) in REAL_SERVERS {
        let addr = SocketAddr::new(lab.addr(host).into(), *port);
        servers.push(TcpServer::start(&lab, host, addr, page)?);
        log.say(format!("{host}: serving {page:?} on {addr}"));
    }

    let mut nodes = [
        Node {
            name: "lb1",
            conf: lab.dir().join("lb1.conf"),
            socket: lab.dir().join("lb1.sock"),
            proc: None,
        },
        Node {
            name: "lb2",
            conf: lab.dir().join("lb2.conf"),
            socket: lab.dir().join("lb2.sock"),
            proc: None,
        },
    ];
    for (i, n) in nodes.iter().enumerate() {
        std::fs::write(&n.conf, keepalived_conf(i == 0, &n.socket))?;
    }
    log.say(format!(
        "wrote {} (state MASTER, priority 100) and {} (BACKUP, 80):",
        nodes[0].conf.display(),
        nodes[1].conf.display()
    ));
    for line in std::fs::read_to_string(&nodes[0].conf)?.lines() {
        println!("           | {line}");
    }
    for n in &mut nodes {
        n.start(&lab, &lb_node, &log)?;
    }
    let took = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        lab.holders(&["lb1", "lb2"], vip) == ["lb1"]
            && lab.holders(&["lb1", "lb2"], VIP2.parse().expect("VIP2")) == ["lb1"]
    })
    .ok_or("lb1 did not take the VIPs within 15 s")?;
    log.say(format!(
        "VIP {VIP} and {VIP2} are on {} ({:.1}s after start)",
        holders(&lab, vip),
        took.as_secs_f64()
    ));
    // Health checks run every second; wait until both nodes answer on the admin socket.
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        nodes
            .iter()
            .all(|n| !n.status(&lbctl).starts_with("lbctl failed"))
    });
    print_status(&log, &nodes[0], &lbctl);
    print_status(&log, &nodes[1], &lbctl);

    log.say(format!(
        "client: 6 requests to http://{vs}/ (round robin over 3 real servers)"
    ));
    for i in 1..=6 {
        match lab.http_get("client", vs, Duration::from_secs(2)) {
            Ok(body) => log.say(format!(
                "client: GET #{i} -> {body:?} (VIP on {})",
                holders(&lab, vip)
            )),
            Err(e) => log.say(format!("client: GET #{i} FAILED: {e}")),
        }
    }

    // Steady client traffic on a thread while the master dies.
    log.say("client: one request every 200 ms from now on");
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let last_ok = Mutex::new(None::<Instant>);
    let (tx, rx) = mpsc::channel::<String>();
    let traffic = {
        let (stop_r, ok_r, failed_r, last_ok_r, lab_r) = (&stop, &ok, &failed, &last_ok, &lab);
        std::thread::scope(|scope| -> Result<(), Error> {
            let h = scope.spawn(move || {
                for i in 1..=500u32 {
                    if stop_r.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    match lab_r.http_get("client", vs, Duration::from_millis(500)) {
                        Ok(body) => {
                            ok_r.fetch_add(1, Ordering::Relaxed);
                            *last_ok_r.lock().expect("lock") = Some(Instant::now());
                            let _ = tx.send(format!("client: #{i} -> {body:?}"));
                        }
                        Err(e) => {
                            failed_r.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send(format!("client: #{i} failed: {e}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200).saturating_sub(t.elapsed()));
                }
            });
            // However this closure ends (an error returned by `?` too), the client stops
            // before the scope waits for it.
            struct StopOnExit<'a>(&'a AtomicBool);
            impl Drop for StopOnExit<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop_on_exit = StopOnExit(stop_r);
            let drain = |log: &Log, rx: &mpsc::Receiver<String>| {
                while let Ok(m) = rx.try_recv() {
                    log.say(m);
                }
            };
            let pause = |log: &Log, rx: &mpsc::Receiver<String>, d: Duration| {
                let end = Instant::now() + d;
                while Instant::now() < end {
                    if let Ok(m) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                        log.say(m);
                    }
                }
            };
            pause(&log, &rx, Duration::from_secs(1));

            // A real server stops. Whichever comes first takes it out of the rotation: its
            // TCP_CHECK (the seed's connect_timeout 3, delay_before_retry 3; `retry 3`, as
            // keepalived 2.2.7 ignores the seed's `nb_get_retry` in TCP_CHECK) or passive
            // health (the client's connections to it are refused: five in a row eject it;
            // on for every virtual server, keepalived.conf ones included). lbctl says which.
            let stopped_at = Instant::now();
            servers[2].stop();
            log.say("rs3: real server stopped (its port now refuses connections)");
            let down = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
                drain(&log, &rx);
                backend_health(&nodes[0].socket, 84) == Some(Health::Down)
            });
            match down {
                Some(_) => log.say(format!(
                    "lb1 reports 198.18.0.153:84 down {:.1}s after it stopped ({}); the client now gets rs1 and rs2 only",
                    stopped_at.elapsed().as_secs_f64(),
                    backend_state(&nodes[0].socket, 84)
                        .and_then(|(_, why)| why)
                        .unwrap_or_else(|| "no reason given".into())
                )),
                None => log.say("lb1 did NOT report rs3 down within 20 s"),
            }
            pause(&log, &rx, Duration::from_millis(1200));
            servers[2] = TcpServer::start(
                &lab,
                "rs3",
                SocketAddr::new(lab.addr("rs3").into(), 84),
                "real server 3",
            )?;
            let restarted_at = Instant::now();
            log.say("rs3: real server started again");
            let up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                drain(&log, &rx);
                backend_health(&nodes[0].socket, 84) == Some(Health::Up)
            });
            if up.is_some() {
                log.say(format!(
                    "lb1 reports 198.18.0.153:84 up again {:.1}s later",
                    restarted_at.elapsed().as_secs_f64()
                ));
            }
            pause(&log, &rx, Duration::from_millis(800));

            // kill -9 the master.
            let killed_at = Instant::now();
            if let Some(p) = nodes[0].proc.as_mut() {
                log.say(format!("lb1: kill -9 {} (the master)", p.pid()));
                p.kill9();
            }
            let mut last = String::new();
            let moved = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                drain(&log, &rx);
                let h = holders(&lab, vip);
                if h != last {
                    log.say(format!(
                        "VIP {VIP} on {h}{}",
                        if h.contains("lb1") {
                            " (lb1's process is dead: a stale address, the backup's gratuitous ARPs redirect the client)"
                        } else {
                            ""
                        }
                    ));
                    last = h;
                }
                lab.has_addr("lb2", vip)
            });
            match moved {
                Some(d) => log.say(format!(
                    "lb2 took over {VIP} {:.1}s after the kill",
                    d.as_secs_f64()
                )),
                None => log.say("lb2 did NOT take over within 10 s"),
            }
            let served = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                drain(&log, &rx);
                last_ok.lock().expect("lock").is_some_and(|t| t > killed_at)
            });
            if let Some(t) = *last_ok.lock().expect("lock") {
                if served.is_some() {
                    log.say(format!(
                        "client served through lb2: first answer {:.1}s after the kill",
                        t.duration_since(killed_at).as_secs_f64()
                    ));
                }
            }
            pause(&log, &rx, Duration::from_secs(1));
            print_status(&log, &nodes[1], &lbctl);

            // The old master comes back and preempts (priority 100 > 80).
            nodes[0].start(&lab, &lb_node, &log)?;
            let back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                drain(&log, &rx);
                lab.holders(&["lb1", "lb2"], vip) == ["lb1"]
            });
            match back {
                Some(d) => log.say(format!(
                    "lb1 preempted: VIP {VIP} on {} {:.1}s after its restart",
                    holders(&lab, vip),
                    d.as_secs_f64()
                )),
                None => log.say(format!(
                    "lb1 did NOT preempt within 10 s (VIP on {})",
                    holders(&lab, vip)
                )),
            }
            pause(&log, &rx, Duration::from_secs(1));
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
            drain(&log, &rx);
            Ok(())
        })
    };
    traffic?;
    log.say(format!(
        "client: {} requests answered, {} failed during the failover and preemption",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    ));
    print_status(&log, &nodes[0], &lbctl);

    // Clean stop: SIGTERM, VIPs leave, exit 0.
    for n in nodes.iter_mut().rev() {
        if let Some(mut p) = n.proc.take() {
            p.sigterm();
            let st = p.wait_exit(Duration::from_secs(10));
            log.say(format!(
                "{}: SIGTERM -> {}; VIP {VIP} now on {}",
                n.name,
                st.map_or_else(|| "still running".into(), |s| s.to_string()),
                holders(&lab, vip)
            ));
        }
    }
    drop(servers);
    let tag = lab.tag().to_owned();
    drop(lab);
    let left = lb_testkit::command("ip").args(["netns", "list"]).output()?;
    let left = String::from_utf8_lossy(&left.stdout)
        .lines()
        .filter(|l| l.starts_with(&tag))
        .count();
    log.say(format!(
        "lab removed: {left} namespace(s) named {tag}* left, no process left"
    ));
    Ok(())
}
