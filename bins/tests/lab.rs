//! End to end: the seed's two-node keepalived setup run by two `lb-node` processes in a lab
//! of network namespaces (`lb-testkit`), with a client and three real servers, addresses
//! from 198.18.0.0/24 only (issue 5, "What it must show").
//!
//! * `seed_pair_end_to_end`: VIPs on exactly one node; round robin over the three real
//!   servers; SIGHUP with a changed weight keeps an established connection and the VRRP
//!   state; a stopped real server is reported down and no request fails afterwards; `kill
//!   -9` of the master → the client is served through the backup; the master restarted
//!   preempts; SIGTERM → exit 0 and the VIPs leave; `lbctl status --json` checked at every
//!   step.
//! * `nopreempt_pair`: with `nopreempt` on both nodes the restarted master stays backup.
//! * `track_interface_lowers_priority_or_faults`: a tracked veth link set down lowers VI_1's
//!   effective priority by its weight (-10), and with weight 0 faults the instance (and, by
//!   the sync group, VI_2); set up again, both recover.
//! * `track_process_and_track_file_change_priority`: keepalived's `vrrp_track_process` (a
//!   tracked process killed lowers VI_1's priority by its weight, started again restores
//!   it) and `track_file` (a value written is added, -254 faults the sync group, deleting the
//!   file restores it), through `lbctl status`.
//! * `lbctl_admin_and_track_service`: `lbctl backend drain` keeps established connections
//!   and takes no new ones; `maint` on every backend of the master faults its instances
//!   through `track_service` (an lb extension) so the backup takes the VIPs; `ready` brings
//!   it back.
//! * `ping_check_follows_icmp_reachability`: keepalived's `PING_CHECK` takes a real server
//!   whose namespace drops ICMP echo requests (nftables) down, and back up once it answers.
//! * `reload_of_vrrp_mcast_group4_moves_the_adverts`: a reload changing only the global
//!   advert group moves a MASTER's adverts to it.
//! * `vrrp_strict_sample_config_pairs_with_keepalived`: keepalived's sample configuration
//!   (`vrrp_strict`, PASS authentication) on lb-node and on a real keepalived: one master,
//!   the VIP's traffic dropped by the master (strict mode's accept mode off).
//!
//! Needs root; skips loudly without it, fails under `CI=true` (STYLE.md §10.5). Every
//! namespace, process and file is removed by guards, also when an assertion fails (the
//! nodes' logs are printed then). `LB_LAB_KEEP_LOGS=1` keeps the lab directory.
#![allow(clippy::disallowed_methods)] // a blocking test harness: reads the clock, sleeps between polls

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lb_bins::admin::{Health, Status, VrrpState};
use lb_testkit::server::{EchoConn, TcpServer};
use lb_testkit::{lab_available, run_bounded, wait_until, Lab, Proc};

const LB_NODE: &str = env!("CARGO_BIN_EXE_lb-node");
const LBCTL: &str = env!("CARGO_BIN_EXE_lbctl");

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
/// Real servers: host, port, page.
const REAL: &[(&str, u16, &str)] = &[
    ("rs1", 82, "real server 1"),
    ("rs2", 83, "real server 2"),
    ("rs3", 84, "real server 3"),
];

fn vip() -> IpAddr {
    VIP.parse().expect("vip")
}

fn vip2() -> IpAddr {
    VIP2.parse().expect("vip2")
}

fn vs_addr() -> SocketAddr {
    SocketAddr::new(vip(), 80)
}

/// A FIFO at `LAB/vrrp.fifo`, made here (so that no daemon removes it at its stop), and a
/// reader appending what it gets to `LAB/fifo.log`, which it returns with the reader. The
/// reader holds the FIFO open for writing too, so it never sees the end when a daemon
/// reopens the FIFO at a reload.
fn fifo_reader(lab: &Lab) -> (PathBuf, Proc) {
    let fifo = lab.dir().join("vrrp.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    let log = lab.dir().join("fifo.log");
    let mut cmd = lb_testkit::command("sh");
    cmd.arg("-c").arg(format!(
        "exec cat 0<>{} >> {}",
        fifo.display(),
        log.display()
    ));
    (
        log,
        Proc::spawn(cmd, lab.dir(), "fifo-reader").expect("reader"),
    )
}

/// The lines of file `p` so far (none before it exists).
fn file_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn t0() -> Instant {
    Instant::now()
}

/// Prints a step with the time since the test started.
fn step(start: Instant, msg: &str) {
    eprintln!("[{:6.2}s] {msg}", start.elapsed().as_secs_f64());
}

/// Knobs of the generated keepalived.conf.
#[derive(Clone, Copy)]
struct Conf<'a> {
    master: bool,
    nopreempt: bool,
    /// Weights of rs1, rs2, rs3.
    weights: [u32; 3],
    /// `delay_loop` in seconds (seed: 6).
    delay_loop: u32,
    /// Overrides the priority of both instances (default: 100 on the master, 80).
    priority: Option<u8>,
    /// `track_service { 198.18.0.250:80 [weight W] }` in VI_1 (an lb extension): no live
    /// backend → FAULT (no weight), or priority + W (negative W).
    track_service: Option<i32>,
    /// `track_interface { trk0 [weight W] }` in VI_1: a veth link the test sets down/up.
    track_interface: Option<i32>,
    socket: &'a Path,
}

/// The seed's keepalived.conf with lab addresses, `eth0`, a short `delay_loop`,
/// `delay_before_retry 1` (seed: 6 and 3, to keep the test short), an admin socket per node,
/// and a third real server.
fn keepalived_conf(c: Conf<'_>) -> String {
    let (router_id, state, prio) = match (c.master, c.nopreempt) {
        (true, false) => ("LVS_MASTER", "MASTER", 100),
        // keepalived: nopreempt needs state BACKUP.
        (true, true) => ("LVS_MASTER", "BACKUP", 100),
        (false, _) => ("LVS_BACKUP", "BACKUP", 80),
    };
    let prio = c.priority.unwrap_or(prio);
    let nopreempt = if c.nopreempt { "nopreempt\n" } else { "" };
    let track = match c.track_service {
        Some(0) => format!("track_service {{\n{VIP}:80\n}}\n"),
        Some(w) => format!("track_service {{\n{VIP}:80 weight {w}\n}}\n"),
        None => String::new(),
    };
    let track_if = match c.track_interface {
        Some(0) => "track_interface {\ntrk0\n}\n".to_owned(),
        Some(w) => format!("track_interface {{\ntrk0 weight {w}\n}}\n"),
        None => String::new(),
    };
    let mut real = String::new();
    for ((host, port, _), w) in REAL.iter().zip(c.weights) {
        let octet = HOSTS.iter().find(|(h, _)| h == host).map_or(0, |(_, o)| *o);
        real.push_str(&format!(
            "real_server 198.18.0.{octet} {port} {{
weight {w}
TCP_CHECK {{
connect_timeout 3
retry 3
delay_before_retry 1
connect_port {port}
}}
}}
"
        ));
    }
    let instance = |name: &str, vrid: u8, vip: &str| {
        let track = if name == "VI_1" {
            format!("{track}{track_if}")
        } else {
            String::new()
        };
        format!(
            "vrrp_instance {name} {{
state {state}
interface eth0
virtual_router_id {vrid}
priority {prio}
advert_int 1
{nopreempt}authentication {{
auth_type PASS
auth_pass 7road123
}}
virtual_ipaddress {{
{vip}
}}
{track}}}
"
        )
    };
    format!(
        "! Configuration File for keepalived
global_defs {{
router_id {router_id}
admin_socket {socket}
}}
{vi1}{vi2}vrrp_sync_group VG_1 {{
group {{
VI_1
VI_2
}}
}}
virtual_server {VIP} 80 {{
delay_loop {delay_loop}
lb_algo rr
lb_kind NAT
protocol TCP
{real}}}
",
        socket = c.socket.display(),
        delay_loop = c.delay_loop,
        vi1 = instance("VI_1", 51, VIP),
        vi2 = instance("VI_2", 52, VIP2),
    )
}

/// One `lb-node` of the lab.
struct Node {
    host: &'static str,
    conf: PathBuf,
    socket: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl Node {
    fn new(lab: &Lab, host: &'static str) -> Self {
        Self {
            host,
            conf: lab.dir().join(format!("{host}.conf")),
            socket: lab.dir().join(format!("{host}.sock")),
            proc: None,
            starts: 0,
        }
    }

    fn write_conf(&self, c: Conf<'_>) {
        std::fs::write(&self.conf, keepalived_conf(c)).expect("write config");
    }

    fn start(&mut self, lab: &Lab) {
        assert!(self.proc.is_none(), "{} already runs", self.host);
        self.starts += 1;
        let mut cmd = lab.command(self.host, LB_NODE);
        // Plain logs: lb-node colours its log even when stderr is a file.
        // One pid file per node: the lab's nodes share this host's file system.
        cmd.arg("--pid-file")
            .arg(lab.dir().join(format!("{}.pid", self.host)))
            .arg(&self.conf)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let name = format!("{}-{}", self.host, self.starts);
        self.proc = Some(Proc::spawn(cmd, lab.dir(), &name).expect("spawn lb-node"));
    }

    fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("node runs")
    }

    /// `lbctl --socket S status --json`, parsed; `None` while the socket does not answer.
    fn status(&self) -> Option<Status> {
        let mut cmd = Command::new(LBCTL);
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(["status", "--json"]);
        let out = run_bounded(cmd, Duration::from_secs(5)).ok()?;
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("lbctl status --json is a Status"))
    }

    fn status_ok(&self) -> Status {
        self.status()
            .unwrap_or_else(|| panic!("{}: lbctl status failed", self.host))
    }

    /// `lbctl --socket S backend ACTION 198.18.0.250:80 BACKEND`; returns the exit code.
    fn backend_admin(&self, action: &str, backend: SocketAddr) -> i32 {
        let mut cmd = Command::new(LBCTL);
        cmd.arg("--socket").arg(&self.socket).args([
            "backend",
            action,
            &vs_addr().to_string(),
            &backend.to_string(),
        ]);
        let out = run_bounded(cmd, Duration::from_secs(5)).expect("lbctl backend");
        out.status.code().unwrap_or(-1)
    }

    fn logs(&self) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(80))
            .unwrap_or_default()
    }
}

/// How many times `n` logged a VRRP transition to Master.
fn to_master(n: &mut Node) -> usize {
    n.proc()
        .stderr()
        .lines()
        .filter(|l| l.contains("VRRP transition") && l.contains("to=Master"))
        .count()
}

fn vrrp_states(s: &Status) -> Vec<(String, VrrpState)> {
    s.vrrp.iter().map(|v| (v.name.clone(), v.state)).collect()
}

fn all_in(s: &Status, state: VrrpState) -> bool {
    s.vrrp.len() == 2 && s.vrrp.iter().all(|v| v.state == state)
}

/// Total connections the node's virtual server has forwarded.
fn forwarded(s: &Status) -> u64 {
    s.virtual_servers
        .iter()
        .flat_map(|v| &v.backends)
        .map(|b| b.total_connections)
        .sum()
}

fn backend(s: &Status, port: u16) -> &lb_bins::admin::BackendStatus {
    s.virtual_servers[0]
        .backends
        .iter()
        .find(|b| b.address.port() == port)
        .unwrap_or_else(|| panic!("no backend on port {port}"))
}

fn get(lab: &Lab) -> std::io::Result<String> {
    lab.http_get("client", vs_addr(), Duration::from_secs(2))
}

/// Checks what `lbctl status --json` says about a node: its instances, their VIPs and sync
/// group, its virtual server and backends.
fn check_status(s: &Status, state: VrrpState, prio: u8, router_id: &str) {
    assert_eq!(s.node.router_id.as_deref(), Some(router_id));
    assert_eq!(s.vrrp.len(), 2, "{s:#?}");
    for (v, (name, vrid, vip)) in s.vrrp.iter().zip([("VI_1", 51, VIP), ("VI_2", 52, VIP2)]) {
        assert_eq!(v.name, name);
        assert_eq!(v.virtual_router_id, vrid);
        assert_eq!(v.interface, "eth0");
        assert_eq!(v.state, state, "{}: {s:#?}", v.name);
        assert_eq!(v.base_priority, prio);
        assert_eq!(v.effective_priority, prio);
        assert_eq!(v.sync_group.as_deref(), Some("VG_1"));
        assert_eq!(v.virtual_ips.len(), 1);
        assert!(v.virtual_ips[0].starts_with(vip), "{:?}", v.virtual_ips);
    }
    assert_eq!(s.virtual_servers.len(), 1);
    let vs = &s.virtual_servers[0];
    assert_eq!(vs.listen, vs_addr());
    assert_eq!(vs.scheduler, "rr");
    assert_eq!(vs.backends.len(), 3);
    for (b, (host, port, _)) in vs.backends.iter().zip(REAL) {
        let octet = HOSTS.iter().find(|(h, _)| h == host).map_or(0, |(_, o)| *o);
        assert_eq!(b.address, SocketAddr::from(([198, 18, 0, octet], *port)));
        assert!(!b.backup);
    }
}

#[test]
fn seed_pair_end_to_end() {
    if !lab_available() {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbl", HOSTS).expect("lab");
    step(start, &format!("lab {} up", lab.tag()));
    let mut servers: Vec<TcpServer> = REAL
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    let (lb1_socket, lb2_socket) = (lb1.socket.clone(), lb2.socket.clone());
    assert_ne!(lb1_socket, lb2_socket);
    let conf1 = |weights, delay_loop| Conf {
        master: true,
        nopreempt: false,
        weights,
        delay_loop,
        priority: None,
        track_service: None,
        track_interface: None,
        socket: &lb1_socket,
    };
    lb1.write_conf(conf1([3, 3, 3], 1));
    lb2.write_conf(Conf {
        master: false,
        nopreempt: false,
        weights: [3, 3, 3],
        delay_loop: 1,
        priority: None,
        track_service: None,
        track_interface: None,
        socket: &lb2_socket,
    });
    lb1.start(&lab);
    lb2.start(&lab);
    let nodes = ["lb1", "lb2"];

    // 1. The VIPs end up on exactly one node, the master (lb1, priority 100 vs 80).
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb1"]
            && lab.holders(&nodes, vip2()) == ["lb1"]
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(
        took.is_some(),
        "VIPs on lb1 only, lb1 MASTER, lb2 BACKUP: holders {:?}/{:?}, lb1 {:?}, lb2 {:?}\n{}{}",
        lab.holders(&nodes, vip()),
        lab.holders(&nodes, vip2()),
        lb1.status().map(|s| vrrp_states(&s)),
        lb2.status().map(|s| vrrp_states(&s)),
        lb1.logs(),
        lb2.logs()
    );
    step(start, &format!("VIPs on lb1 only after {took:?}"));
    // Stays so: the backup does not grab them a moment later.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.holders(&nodes, vip()), ["lb1"]);
    assert_eq!(lab.holders(&nodes, vip2()), ["lb1"]);
    let s1 = lb1.status_ok();
    let s2 = lb2.status_ok();
    check_status(&s1, VrrpState::Master, 100, "LVS_MASTER");
    check_status(&s2, VrrpState::Backup, 80, "LVS_BACKUP");
    for v in &s1.vrrp {
        assert_eq!(
            v.master_address,
            Some(lab.addr("lb1").into()),
            "the master reports itself as master: {v:?}"
        );
    }
    for v in &s2.vrrp {
        assert_eq!(
            v.master_address,
            Some(lab.addr("lb1").into()),
            "the backup reports the master it hears: {v:?}"
        );
    }
    for s in [&s1, &s2] {
        for b in &s.virtual_servers[0].backends {
            assert_eq!(b.health, Health::Up, "{b:?}");
            assert_eq!((b.weight, b.effective_weight), (3, 3), "{b:?}");
            assert!(b.is_live());
        }
    }

    // 2. Round robin: the client's requests reach rs1, rs2, rs3 in turn, through lb1.
    let before = forwarded(&s1);
    let answers: Vec<String> = (0..9)
        .map(|i| get(&lab).unwrap_or_else(|e| panic!("GET #{i}: {e}\n{}", lb1.logs())))
        .collect();
    step(start, &format!("round robin: {answers:?}"));
    let mut first3 = answers[..3].to_vec();
    first3.sort();
    assert_eq!(
        first3,
        ["real server 1", "real server 2", "real server 3"],
        "{answers:?}"
    );
    for i in 3..answers.len() {
        assert_eq!(answers[i], answers[i - 3], "round-robin order: {answers:?}");
    }
    for srv in &servers {
        assert_eq!(srv.requests(), 3, "{}", srv.page());
    }
    let s1 = lb1.status_ok();
    assert_eq!(
        forwarded(&s1) - before,
        9,
        "lb1 (the master) forwarded them"
    );
    assert_eq!(forwarded(&lb2.status_ok()), 0, "nothing went through lb2");

    // 3. SIGHUP with a changed weight on the node that serves: an established connection
    //    survives, the new weight shows, the VRRP state does not flap.
    let mut conn = EchoConn::open(&lab, "client", vs_addr(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("echo connection: {e}\n{}", lb1.logs()));
    conn.ping("before reload").expect("echo before the reload");
    let active = |s: &Status| -> u64 {
        s.virtual_servers[0]
            .backends
            .iter()
            .map(|b| b.active_connections)
            .sum()
    };
    assert_eq!(active(&lb1.status_ok()), 1, "the echo connection is active");
    lb1.write_conf(conf1([5, 3, 3], 1));
    assert!(lb1.proc().sighup());
    let applied = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lb1.status()
            .is_some_and(|s| backend(&s, 82).weight == 5 && backend(&s, 82).effective_weight == 5)
    });
    assert!(
        applied.is_some(),
        "weight 5 after SIGHUP: {:?}\n{}",
        lb1.status().map(|s| s.virtual_servers),
        lb1.logs()
    );
    step(start, &format!("SIGHUP applied weight 5 in {applied:?}"));
    for i in 0..5 {
        conn.ping(&format!("after reload {i}")).unwrap_or_else(|e| {
            panic!("echo connection dropped by the reload: {e}\n{}", lb1.logs())
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    let s1 = lb1.status_ok();
    assert!(
        all_in(&s1, VrrpState::Master),
        "no VRRP flap: {:?}",
        vrrp_states(&s1)
    );
    assert_eq!(active(&s1), 1, "still established after the reload");
    assert_eq!(backend(&s1, 83).weight, 3);
    assert!(lb1.proc().is_running());
    assert_eq!(lab.holders(&nodes, vip()), ["lb1"]);
    assert!(lb1
        .proc
        .as_ref()
        .is_some_and(|p| p.stderr().contains("reload done")));

    // 3b. A configuration with an error is rejected on SIGHUP; the running one stays.
    std::fs::write(
        &lb1.conf,
        "virtual_server 198.18.0.250 80 {\nlb_algo nosuch\n",
    )
    .expect("write");
    assert!(lb1.proc().sighup());
    let rejected = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lb1.proc
            .as_ref()
            .is_some_and(|p| p.stderr().contains("reload rejected"))
    });
    assert!(rejected.is_some(), "bad config rejected\n{}", lb1.logs());
    let s1 = lb1.status_ok();
    assert!(all_in(&s1, VrrpState::Master));
    assert_eq!(
        backend(&s1, 82).weight,
        5,
        "the running configuration stays"
    );
    conn.ping("after a rejected reload")
        .expect("echo after a rejected reload");
    get(&lab).expect("served after a rejected reload");

    // 3c. Changes that restart the virtual server (delay_loop): the established
    //     connection drains on the old one, new connections go to the new one, every
    //     time (binding the replacement used to race with the old listener's close and
    //     lose the virtual server on about a third of such reloads).
    let reloads = |n: &Node| {
        n.proc
            .as_ref()
            .map_or(0, |p| p.stderr().matches("reload done").count())
    };
    for (i, delay_loop) in [2, 1, 2, 1, 2, 1, 2, 1, 2].into_iter().enumerate() {
        lb1.write_conf(conf1([5, 3, 3], delay_loop));
        let done_before = reloads(&lb1);
        assert!(lb1.proc().sighup());
        let applied = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            reloads(&lb1) > done_before
        });
        assert!(applied.is_some(), "reload #{i} done\n{}", lb1.logs());
        get(&lab)
            .unwrap_or_else(|e| panic!("GET after restarting reload #{i}: {e}\n{}", lb1.logs()));
    }
    conn.ping("after restarting reloads").unwrap_or_else(|e| {
        panic!(
            "echo connection dropped by a restarting reload: {e}\n{}",
            lb1.logs()
        )
    });
    assert!(
        !lb1.proc
            .as_ref()
            .is_some_and(|p| p.stderr().contains("virtual server not started")),
        "{}",
        lb1.logs()
    );
    let s1 = lb1.status_ok();
    assert!(
        all_in(&s1, VrrpState::Master),
        "no VRRP flap: {:?}",
        vrrp_states(&s1)
    );
    assert_eq!(s1.virtual_servers.len(), 1, "{s1:#?}");
    assert_eq!(backend(&s1, 82).weight, 5);
    step(
        start,
        "SIGHUP: bad config rejected; restarting reload kept the connection",
    );
    drop(conn);

    // 4. A real server stops: both nodes report it down, and from then on no request fails.
    servers[2].stop();
    let stopped = t0();
    let down = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        [&lb1, &lb2].iter().all(|n| {
            n.status()
                .is_some_and(|s| backend(&s, 84).health == Health::Down)
        })
    });
    assert!(
        down.is_some(),
        "rs3 reported down: {:?}\n{}",
        lb1.status().map(|s| s.virtual_servers),
        lb1.logs()
    );
    step(
        start,
        &format!("rs3 stopped, reported Down after {:?}", stopped.elapsed()),
    );
    let s1 = lb1.status_ok();
    assert!(!backend(&s1, 84).is_live());
    assert!(backend(&s1, 82).is_live() && backend(&s1, 83).is_live());
    for i in 0..12 {
        let body = get(&lab).unwrap_or_else(|e| {
            panic!(
                "GET #{i} failed after rs3's Down was reported: {e}\n{}",
                lb1.logs()
            )
        });
        assert_ne!(body, "real server 3");
    }
    // It comes back: up again on both nodes.
    servers[2] = TcpServer::start(
        &lab,
        "rs3",
        SocketAddr::new(lab.addr("rs3").into(), 84),
        "real server 3",
    )
    .expect("restart rs3");
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        [&lb1, &lb2].iter().all(|n| {
            n.status()
                .is_some_and(|s| backend(&s, 84).health == Health::Up)
        })
    });
    assert!(up.is_some(), "rs3 up again\n{}", lb1.logs());
    step(start, "rs3 restarted and reported Up");

    // 5. kill -9 of the master: lb2 takes the VIPs and the client is served through it.
    let lb2_before = forwarded(&lb2.status_ok());
    let killed = t0();
    let st = lb1.proc().kill9();
    assert!(st.is_some());
    let lb1_dead = lb1.proc.take().expect("lb1 proc");
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.has_addr("lb2", vip())
            && lab.has_addr("lb2", vip2())
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Master))
    });
    assert!(
        took.is_some(),
        "lb2 takes over after kill -9 of lb1: {:?}\n{}",
        lb2.status().map(|s| vrrp_states(&s)),
        lb2.logs()
    );
    step(
        start,
        &format!(
            "kill -9 lb1: lb2 MASTER with the VIPs after {:?}",
            killed.elapsed()
        ),
    );
    let served = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        get(&lab).is_ok()
    });
    assert!(
        served.is_some(),
        "client served after failover\n{}",
        lb2.logs()
    );
    for i in 0..6 {
        get(&lab).unwrap_or_else(|e| panic!("GET #{i} through the backup: {e}\n{}", lb2.logs()));
    }
    step(
        start,
        &format!(
            "client served through lb2 {:?} after the kill",
            killed.elapsed()
        ),
    );
    let s2 = lb2.status_ok();
    assert!(
        forwarded(&s2) >= lb2_before + 7,
        "lb2 forwarded the client's requests"
    );
    for v in &s2.vrrp {
        assert_eq!(v.master_address, Some(lab.addr("lb2").into()));
    }
    drop(lb1_dead);

    // 6. The master comes back and preempts (priority 100 > 80, preemption on).
    lb1.start(&lab);
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb1"]
            && lab.holders(&nodes, vip2()) == ["lb1"]
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(
        took.is_some(),
        "lb1 preempts after restart: holders {:?}, lb1 {:?}, lb2 {:?}\n{}{}",
        lab.holders(&nodes, vip()),
        lb1.status().map(|s| vrrp_states(&s)),
        lb2.status().map(|s| vrrp_states(&s)),
        lb1.logs(),
        lb2.logs()
    );
    step(
        start,
        &format!("lb1 restarted and preempted after {took:?}"),
    );
    check_status(&lb1.status_ok(), VrrpState::Master, 100, "LVS_MASTER");
    let served = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        get(&lab).is_ok() && lb1.status().is_some_and(|s| forwarded(&s) > 0)
    });
    assert!(
        served.is_some(),
        "client served by lb1 again\n{}",
        lb1.logs()
    );

    // 7. SIGTERM: exit 0, the VIPs leave lb1 at once, lb2 takes over.
    let termed = t0();
    assert!(lb1.proc().sigterm());
    let st = lb1.proc().wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "lb1 exits 0 on SIGTERM: {st:?}\n{}",
        lb1.logs()
    );
    assert!(
        !lab.has_addr("lb1", vip()) && !lab.has_addr("lb1", vip2()),
        "VIPs removed on SIGTERM: {:?}",
        lab.addrs("lb1")
    );
    assert!(!lb1_socket.exists(), "admin socket removed");
    let took = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb2"]
    });
    assert!(
        took.is_some(),
        "lb2 takes over after SIGTERM of lb1\n{}",
        lb2.logs()
    );
    step(
        start,
        &format!(
            "SIGTERM lb1: exit 0, lb2 has the VIPs {:?} after",
            termed.elapsed()
        ),
    );
    get(&lab).expect("served through lb2 after SIGTERM of lb1");

    assert!(lb2.proc().sigterm());
    let st = lb2.proc().wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "lb2 exits 0: {st:?}\n{}",
        lb2.logs()
    );
    assert!(lab.holders(&nodes, vip()).is_empty() && lab.holders(&nodes, vip2()).is_empty());
    step(start, "SIGTERM lb2: exit 0, no VIP left");
}

#[test]
fn nopreempt_pair() {
    if !lab_available() {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbn", HOSTS).expect("lab");
    let _servers: Vec<TcpServer> = REAL
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    for (n, master) in [(&lb1, true), (&lb2, false)] {
        n.write_conf(Conf {
            master,
            nopreempt: true,
            weights: [3, 3, 3],
            delay_loop: 1,
            priority: None,
            track_service: None,
            track_interface: None,
            socket: &n.socket,
        });
    }
    lb1.start(&lab);
    lb2.start(&lab);
    let nodes = ["lb1", "lb2"];
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb1"]
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(
        took.is_some(),
        "lb1 (priority 100) wins the first election\n{}{}",
        lb1.logs(),
        lb2.logs()
    );
    step(start, &format!("nopreempt: lb1 MASTER after {took:?}"));

    lb1.proc().kill9();
    lb1.proc = None;
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.has_addr("lb2", vip()) && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Master))
    });
    assert!(took.is_some(), "lb2 takes over\n{}", lb2.logs());
    step(
        start,
        &format!("nopreempt: kill -9 lb1, lb2 MASTER after {took:?}"),
    );

    lb1.start(&lab);
    let backup = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(backup.is_some(), "restarted lb1 is BACKUP\n{}", lb1.logs());
    // Longer than master_down_interval (3 × 1 s + skew): a preempting node would have
    // taken over by now.
    std::thread::sleep(Duration::from_secs(5));
    let (s1, s2) = (lb1.status_ok(), lb2.status_ok());
    assert!(
        all_in(&s1, VrrpState::Backup),
        "lb1 does not preempt: {:?}\n{}",
        vrrp_states(&s1),
        lb1.logs()
    );
    assert!(
        all_in(&s2, VrrpState::Master),
        "lb2 stays master: {:?}",
        vrrp_states(&s2)
    );
    assert_eq!(lab.holders(&nodes, vip()), ["lb2"]);
    assert_eq!(lab.holders(&nodes, vip2()), ["lb2"]);
    get(&lab).expect("served through lb2");
    step(
        start,
        "nopreempt: restarted lb1 stayed BACKUP, lb2 kept the VIPs",
    );

    for n in [&mut lb1, &mut lb2] {
        assert!(n.proc().sigterm());
        let st = n.proc().wait_exit(Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "{}: {st:?}", n.host);
    }
    assert!(lab.holders(&nodes, vip()).is_empty());
}

/// keepalived 2.x's `state MASTER`: a hint, not a takeover. lb1 (`state MASTER`, priority
/// 100) starting while lb2 (`state BACKUP`, priority 150) is master waits as Backup and
/// never becomes Master, not even for a moment: it used to take the VIPs and send gratuitous
/// ARPs at once, until lb2's answer sent it back.
#[test]
fn state_master_below_the_running_master_does_not_take_over() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbs", HOSTS).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    for (n, master, priority) in [(&lb1, true, 100), (&lb2, false, 150)] {
        n.write_conf(Conf {
            master,
            nopreempt: false,
            weights: [1, 1, 1],
            delay_loop: 1,
            priority: Some(priority),
            track_service: None,
            track_interface: None,
            socket: &n.socket,
        });
    }
    lb2.start(&lab);
    let nodes = ["lb1", "lb2"];
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb2.status().is_some_and(|s| all_in(&s, VrrpState::Master))
    });
    assert!(took.is_some(), "lb2 alone becomes master\n{}", lb2.logs());
    lb1.start(&lab);
    let backup = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(backup.is_some(), "lb1 runs\n{}", lb1.logs());
    // Longer than lb1's Master_Down_Interval (3 × 1 s + skew).
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !lb1.logs().contains("to=Master"),
        "lb1 was Master for a moment:\n{}",
        lb1.logs()
    );
    assert!(all_in(&lb2.status_ok(), VrrpState::Master));
    assert_eq!(lab.holders(&nodes, vip()), ["lb2"]);
    // The counters in `lbctl status` (keepalived's stats dump): lb1 heard lb2's adverts
    // (one a second for 5 s) and dropped none; lb2 became Master once and sends them.
    let (s1, s2) = (lb1.status_ok(), lb2.status_ok());
    for v in &s1.vrrp {
        assert!(v.counters.adverts_in >= 4, "{:?}", v.counters);
        assert_eq!(v.counters.became_master, 0, "{:?}", v.counters);
        assert_eq!(v.counters.dropped_total(), 0, "{:?}", v.counters);
    }
    for v in &s2.vrrp {
        assert!(v.counters.adverts_out >= 4, "{:?}", v.counters);
        assert_eq!(v.counters.became_master, 1, "{:?}", v.counters);
    }
    for n in [&mut lb1, &mut lb2] {
        assert!(n.proc().sigterm());
        let st = n.proc().wait_exit(Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "{}: {st:?}", n.host);
    }
}

/// The pid file (keepalived's `-p`): a second lb-node started on the same one, with the
/// same configuration but another admin socket, stops at once (exit 3, naming the file and
/// the running daemon's pid) before it changes anything: the first stays Master with its
/// VIP, its admin socket answers, and the file keeps its pid. The first one's stop removes
/// the file.
#[test]
fn a_second_node_on_the_same_pid_file_stops_before_changing_anything() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbp", HOSTS).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let second_socket = lab.dir().join("second.sock");
    let second_conf = lab.dir().join("second.conf");
    for (conf, socket) in [(&lb1.conf, &lb1.socket), (&second_conf, &second_socket)] {
        let c = Conf {
            master: true,
            nopreempt: false,
            weights: [1, 1, 1],
            delay_loop: 1,
            priority: None,
            track_service: None,
            track_interface: None,
            socket,
        };
        std::fs::write(conf, keepalived_conf(c)).expect("write config");
    }
    lb1.start(&lab);
    let master = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
    });
    assert!(master.is_some(), "lb1 becomes master\n{}", lb1.logs());
    let pid_file = lab.dir().join("lb1.pid");
    let first_pid = lb1.proc().pid();
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file"),
        format!("{first_pid}\n")
    );

    let mut cmd = lab.command("lb1", LB_NODE);
    cmd.arg("--pid-file")
        .arg(&pid_file)
        .arg(&second_conf)
        .env("NO_COLOR", "1");
    let mut second = Proc::spawn(cmd, lab.dir(), "second").expect("spawn lb-node");
    let st = second.wait_exit(Duration::from_secs(10));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(3),
        "the second lb-node: {st:?}\n{}",
        second.log_tail(40)
    );
    let err = second.stderr();
    assert!(
        err.contains(&format!("pid file {}", pid_file.display()))
            && err.contains(&format!("(pid {first_pid})")),
        "{err}"
    );
    assert!(
        !second_socket.exists(),
        "the second one made its admin socket"
    );
    assert!(
        !err.contains("VRRP transition") && !err.contains("listening"),
        "the second one started something:\n{err}"
    );
    // Nothing of the first one's was touched.
    assert!(all_in(&lb1.status_ok(), VrrpState::Master));
    assert_eq!(lab.holders(&["lb1", "lb2"], vip()), ["lb1"]);
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file"),
        format!("{first_pid}\n")
    );

    assert!(lb1.proc().sigterm());
    let st = lb1.proc().wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    assert!(!pid_file.exists(), "the pid file outlived its daemon");
}

#[test]
fn lbctl_admin_and_track_service() {
    if !lab_available() {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbt", HOSTS).expect("lab");
    let servers: Vec<TcpServer> = REAL
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    for (n, master) in [(&lb1, true), (&lb2, false)] {
        n.write_conf(Conf {
            master,
            nopreempt: false,
            weights: [3, 3, 3],
            delay_loop: 1,
            priority: None,
            track_service: Some(0),
            track_interface: None,
            socket: &n.socket,
        });
    }
    lb1.start(&lab);
    lb2.start(&lab);
    let nodes = ["lb1", "lb2"];
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb1"]
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(took.is_some(), "lb1 MASTER\n{}{}", lb1.logs(), lb2.logs());

    // drain: no new connections to that backend, the established one continues.
    let mut conn = EchoConn::open(&lab, "client", vs_addr(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("echo connection: {e}\n{}", lb1.logs()));
    let (host, port, page) = REAL
        .iter()
        .find(|(_, _, p)| *p == conn.server)
        .expect("a known server answered");
    let drained = SocketAddr::new(lab.addr(host).into(), *port);
    assert_eq!(lb1.backend_admin("drain", drained), 0);
    let s1 = lb1.status_ok();
    let b = backend(&s1, *port);
    assert_eq!(b.admin, lb_bins::admin::AdminState::Drain);
    assert!(!b.is_live());
    assert_eq!(b.active_connections, 1);
    for i in 0..6 {
        let body = get(&lab).unwrap_or_else(|e| panic!("GET #{i} with a drained backend: {e}"));
        assert_ne!(&body, page, "a drained backend takes no new connection");
    }
    conn.ping("while drained")
        .expect("the drained backend's connection continues");
    drop(conn);
    // Unknown backend: refused with exit code 1.
    assert_eq!(
        lb1.backend_admin("drain", "198.18.0.9:82".parse().expect("addr")),
        1
    );
    step(
        start,
        &format!("lbctl drain {drained}: no new connection, the established one kept"),
    );

    // A reload that restarts lb1's virtual server (delay_loop 1 → 2) keeps the VRRP group
    // running; track_service must follow the new virtual server (it used to stay wired
    // to the retired one, and so stopped tracking anything).
    let done = |n: &Node| {
        n.proc
            .as_ref()
            .map_or(0, |p| p.stderr().matches("reload done").count())
    };
    lb1.write_conf(Conf {
        master: true,
        nopreempt: false,
        weights: [3, 3, 3],
        delay_loop: 2,
        priority: None,
        track_service: Some(0),
        track_interface: None,
        socket: &lb1.socket.clone(),
    });
    assert!(lb1.proc().sighup());
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || done(
            &lb1
        ) > 0)
        .is_some(),
        "reload done\n{}",
        lb1.logs()
    );
    assert!(all_in(&lb1.status_ok(), VrrpState::Master));

    // maint on every backend of lb1: its virtual server has no live backend, so VI_1 (and,
    // by the sync group, VI_2) go to FAULT and lb2 takes the VIPs and serves.
    for srv in &servers {
        assert_eq!(lb1.backend_admin("maint", srv.addr()), 0);
    }
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb2"]
            && lab.holders(&nodes, vip2()) == ["lb2"]
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Fault))
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Master))
    });
    assert!(
        took.is_some(),
        "track_service: lb1 FAULT, lb2 MASTER: holders {:?}, lb1 {:?}, lb2 {:?}\n{}",
        lab.holders(&nodes, vip()),
        lb1.status().map(|s| vrrp_states(&s)),
        lb2.status().map(|s| vrrp_states(&s)),
        lb1.logs()
    );
    step(
        start,
        &format!("lb1 without a live backend: FAULT, lb2 has the VIPs after {took:?}"),
    );
    let served = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        get(&lab).is_ok()
    });
    assert!(served.is_some(), "served through lb2\n{}", lb2.logs());
    let s1 = lb1.status_ok();
    assert_eq!(s1.virtual_servers[0].live_backends(), 0);

    // ready again: lb1 leaves FAULT and preempts.
    for srv in &servers {
        assert_eq!(lb1.backend_admin("ready", srv.addr()), 0);
    }
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb1"]
            && lab.holders(&nodes, vip2()) == ["lb1"]
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(took.is_some(), "lb1 back to MASTER\n{}", lb1.logs());
    assert_eq!(lb1.status_ok().virtual_servers[0].live_backends(), 3);
    get(&lab).expect("served through lb1 again");
    step(
        start,
        &format!("lbctl ready: lb1 MASTER again after {took:?}"),
    );

    // SIGHUP with only a new priority applies it in place: the master (100 → 110) keeps
    // its state, the backup never becomes master; then the backup (80 → 120) preempts.
    let transitions = |n: &Node, to: &str| {
        n.proc.as_ref().map_or(0, |p| {
            p.stderr().matches(&format!("Entering {to} STATE")).count()
        })
    };
    let not_master =
        |n: &Node| transitions(n, "BACKUP") + transitions(n, "INIT") + transitions(n, "FAULT");
    let (lb2_masters, lb1_changes) = (transitions(&lb2, "MASTER"), not_master(&lb1));
    let reloads = done(&lb1);
    lb1.write_conf(Conf {
        master: true,
        nopreempt: false,
        weights: [3, 3, 3],
        delay_loop: 2,
        priority: Some(110),
        track_service: Some(0),
        track_interface: None,
        socket: &lb1.socket.clone(),
    });
    assert!(lb1.proc().sighup());
    let applied = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        done(&lb1) > reloads
            && lb1.status().is_some_and(|s| {
                s.vrrp
                    .iter()
                    .all(|v| (v.base_priority, v.effective_priority) == (110, 110))
            })
    });
    assert!(applied.is_some(), "priority 110 applied\n{}", lb1.logs());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(all_in(&lb1.status_ok(), VrrpState::Master));
    assert_eq!(lab.holders(&nodes, vip()), ["lb1"]);
    assert_eq!(
        transitions(&lb2, "MASTER"),
        lb2_masters,
        "no flap to lb2\n{}",
        lb2.logs()
    );
    assert_eq!(
        not_master(&lb1),
        lb1_changes,
        "lb1 kept its state\n{}",
        lb1.logs()
    );
    lb2.write_conf(Conf {
        master: false,
        nopreempt: false,
        weights: [3, 3, 3],
        delay_loop: 1,
        priority: Some(120),
        track_service: Some(0),
        track_interface: None,
        socket: &lb2.socket.clone(),
    });
    assert!(lb2.proc().sighup());
    let took = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb2"]
            && lb2.status().is_some_and(|s| all_in(&s, VrrpState::Master))
            && lb1.status().is_some_and(|s| all_in(&s, VrrpState::Backup))
    });
    assert!(
        took.is_some(),
        "lb2 (120) preempts lb1 (110): {:?} {:?}\n{}",
        lb1.status().map(|s| vrrp_states(&s)),
        lb2.status().map(|s| vrrp_states(&s)),
        lb2.logs()
    );
    step(
        start,
        &format!("SIGHUP priority only: in place, no flap; lb2 at 120 preempted after {took:?}"),
    );

    for n in [&mut lb1, &mut lb2] {
        assert!(n.proc().sigterm());
        let st = n.proc().wait_exit(Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "{}: {st:?}", n.host);
    }
}

#[test]
fn track_service_weight_shows_in_status() {
    if !lab_available() {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbw", HOSTS).expect("lab");
    let servers: Vec<TcpServer> = REAL
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    let mut lb1 = Node::new(&lab, "lb1");
    lb1.write_conf(Conf {
        master: true,
        nopreempt: false,
        weights: [3, 3, 3],
        delay_loop: 1,
        priority: None,
        track_service: Some(-10),
        track_interface: None,
        socket: &lb1.socket.clone(),
    });
    lb1.start(&lab);
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| all_in(&s, VrrpState::Master))
    });
    assert!(up.is_some(), "lb1 MASTER\n{}", lb1.logs());
    // No live backend: VI_1's priority drops by 10 (it stays MASTER, alone on the LAN);
    // the sync group does not change VI_2's priority.
    for srv in &servers {
        assert_eq!(lb1.backend_admin("maint", srv.addr()), 0);
    }
    let prio = |s: &Status| -> Vec<u8> { s.vrrp.iter().map(|v| v.effective_priority).collect() };
    let lowered = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| prio(&s) == [90, 100])
    });
    assert!(
        lowered.is_some(),
        "effective priority 90 while the service is dead: {:?}\n{}",
        lb1.status().map(|s| s.vrrp),
        lb1.logs()
    );
    let s = lb1.status_ok();
    assert!(all_in(&s, VrrpState::Master));
    assert_eq!(s.vrrp[0].base_priority, 100);
    for srv in &servers {
        assert_eq!(lb1.backend_admin("ready", srv.addr()), 0);
    }
    let restored = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| prio(&s) == [100, 100])
    });
    assert!(restored.is_some(), "priority back to 100\n{}", lb1.logs());
    step(
        start,
        "track_service weight -10: effective priority 90 shown, then 100 again",
    );
    assert!(lb1.proc().sigterm());
    assert!(lb1
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

#[test]
fn track_interface_lowers_priority_or_faults() {
    if !lab_available() {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbi", HOSTS).expect("lab");
    let _servers: Vec<TcpServer> = REAL
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    // A veth pair inside lb1's namespace (the kernel has no dummy driver); removed with the
    // namespace.
    let ip = |args: &[&str]| {
        let out = lab.exec("lb1", args).expect("ip");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&[
        "ip", "link", "add", "trk0", "type", "veth", "peer", "name", "trk1",
    ]);
    ip(&["ip", "link", "set", "trk1", "up"]);
    ip(&["ip", "link", "set", "trk0", "up"]);
    let prio = |s: &Status| -> Vec<u8> { s.vrrp.iter().map(|v| v.effective_priority).collect() };
    // (weight, reverse, in the sync group rather than VI_1, what, priority of VI_1 while
    // trk0 is up / down; FAULT as 0).
    for (weight, reverse, in_group, what, when_up, when_down) in [
        (-10, false, false, "weight -10", 100, 90),
        (0, false, false, "weight 0", 100, 0),
        (10, true, false, "weight 10 reverse", 90, 100),
        (0, false, true, "in the sync group", 100, 0),
    ] {
        let mut lb1 = Node::new(&lab, "lb1");
        lb1.write_conf(Conf {
            master: true,
            nopreempt: false,
            weights: [3, 3, 3],
            delay_loop: 1,
            priority: None,
            track_service: None,
            track_interface: Some(weight),
            socket: &lb1.socket.clone(),
        });
        if reverse {
            let conf = std::fs::read_to_string(&lb1.conf).unwrap().replace(
                &format!("trk0 weight {weight}\n"),
                &format!("trk0 weight {weight} reverse\n"),
            );
            std::fs::write(&lb1.conf, conf).unwrap();
        }
        // The group's notify_stop appends a line here: once, at SIGTERM.
        let group_stopped = lab.dir().join("group-stopped");
        if in_group {
            // keepalived's sync-group tracking: the group's track_interface is every
            // member's.
            let conf = std::fs::read_to_string(&lb1.conf)
                .unwrap()
                .replace("track_interface {\ntrk0\n}\n", "")
                .replace(
                    "vrrp_sync_group VG_1 {\n",
                    &format!(
                        "vrrp_sync_group VG_1 {{\ntrack_interface {{\ntrk0\n}}\nnotify_stop \"echo stop >> {}\"\n",
                        group_stopped.display()
                    ),
                );
            std::fs::write(&lb1.conf, conf).unwrap();
        }
        lb1.start(&lab);
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            lb1.status()
                .is_some_and(|s| all_in(&s, VrrpState::Master) && prio(&s) == [when_up, 100])
        });
        if in_group {
            let s = lb1.status_ok();
            for v in &s.vrrp {
                assert!(
                    v.tracks
                        .iter()
                        .any(|t| t.kind == "interface" && t.name == "trk0" && t.weight == 0),
                    "{} does not track trk0: {:?}",
                    v.name,
                    v.tracks
                );
            }
        }
        assert!(
            up.is_some(),
            "{what}: lb1 MASTER at {when_up} with trk0 up: {:?}\n{}",
            lb1.status().map(|s| s.vrrp),
            lb1.logs()
        );
        ip(&["ip", "link", "set", "trk0", "down"]);
        let reacted = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            lb1.status().is_some_and(|s| {
                if when_down == 0 {
                    all_in(&s, VrrpState::Fault)
                } else {
                    all_in(&s, VrrpState::Master) && prio(&s) == [when_down, 100]
                }
            })
        });
        assert!(
            reacted.is_some(),
            "{what}: trk0 down not applied: {:?}\n{}",
            lb1.status().map(|s| s.vrrp),
            lb1.logs()
        );
        ip(&["ip", "link", "set", "trk0", "up"]);
        let back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            lb1.status()
                .is_some_and(|s| all_in(&s, VrrpState::Master) && prio(&s) == [when_up, 100])
        });
        assert!(
            back.is_some(),
            "{what}: trk0 up again: MASTER at {when_up}\n{}",
            lb1.logs()
        );
        step(
            start,
            &format!("track_interface {what}: down applied, up restored"),
        );
        if in_group {
            assert!(!group_stopped.exists(), "the group's notify_stop ran early");
        }
        assert!(lb1.proc().sigterm());
        assert!(lb1
            .proc()
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
        if in_group {
            // Started before the node exited; it may finish just after.
            let ran = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                group_stopped.exists()
            });
            assert!(
                ran.is_some(),
                "the group's notify_stop at SIGTERM\n{}",
                lb1.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                std::fs::read_to_string(&group_stopped).unwrap(),
                "stop\n",
                "once for the group, not once per member"
            );
        }
    }
}

/// keepalived's `vrrp_track_process` and `track_file` end to end. lb-node runs in a network
/// namespace, where the kernel's process events do not reach: it scans /proc each second.
#[test]
fn track_process_and_track_file_change_priority() {
    if !lab_available() {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbk", HOSTS).expect("lab");
    let _servers: Vec<TcpServer> = REAL
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    // A copy of `sleep` under a name no other process has: the tracked process.
    let name = format!("lbtrk{}", std::process::id() % 100_000);
    let bin = lab.dir().join(&name);
    std::fs::copy("/bin/sleep", &bin).expect("copy sleep");
    struct Kill(Option<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(c) = &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    // Retried while the copy is busy (ETXTBSY: another test's fork can hold its write
    // descriptor for a moment).
    let run = || {
        for _ in 0..100 {
            match Command::new(&bin).arg("300").spawn() {
                Ok(c) => return Kill(Some(c)),
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("spawn: {e}"),
            }
        }
        panic!("{} stayed busy", bin.display())
    };
    let mut tracked = run();
    let file = lab.dir().join("maint");
    let mut lb1 = Node::new(&lab, "lb1");
    lb1.write_conf(Conf {
        master: true,
        nopreempt: false,
        weights: [3, 3, 3],
        delay_loop: 1,
        priority: None,
        track_service: None,
        track_interface: None,
        socket: &lb1.socket.clone(),
    });
    let conf = std::fs::read_to_string(&lb1.conf).unwrap().replacen(
        "vrrp_instance VI_1 {\n",
        &format!(
            "vrrp_track_process p {{\nprocess {name}\nweight -30\n}}\ntrack_file f {{\nfile {}\n}}\nvrrp_instance VI_1 {{\ntrack_process {{\np\n}}\ntrack_file {{\nf\n}}\n",
            file.display()
        ),
        1,
    );
    std::fs::write(&lb1.conf, conf).unwrap();
    lb1.start(&lab);
    let prio = |s: &Status| -> Vec<u8> { s.vrrp.iter().map(|v| v.effective_priority).collect() };
    let wait = |lb1: &Node, what: &str, f: &dyn Fn(&Status) -> bool| {
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            lb1.status().is_some_and(|s| f(&s))
        });
        assert!(
            ok.is_some(),
            "{what}: {:?}\n{}",
            lb1.status().map(|s| s.vrrp),
            lb1.logs()
        );
        step(start, what);
    };
    wait(
        &lb1,
        "MASTER at 100 with the process running, no file",
        &|s| all_in(s, VrrpState::Master) && prio(s) == [100, 100],
    );
    drop(tracked);
    // `lbctl status` says why: the process is down and takes 30 off.
    let track = |s: &Status, kind: &str| -> Option<(String, i32, bool)> {
        s.vrrp[0]
            .tracks
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| (t.state.clone(), t.priority_change, t.fault))
    };
    wait(&lb1, "process gone: VI_1 at 70", &|s| {
        all_in(s, VrrpState::Master)
            && prio(s) == [70, 100]
            && track(s, "process") == Some(("down".into(), -30, false))
    });
    tracked = run();
    wait(&lb1, "process back: VI_1 at 100", &|s| {
        all_in(s, VrrpState::Master) && prio(s) == [100, 100]
    });
    std::fs::write(&file, "-15\n").unwrap();
    wait(&lb1, "file -15: VI_1 at 85", &|s| {
        all_in(s, VrrpState::Master)
            && prio(s) == [85, 100]
            && track(s, "file") == Some(("ok".into(), -15, false))
            && track(s, "process") == Some(("up".into(), 0, false))
    });
    std::fs::write(&file, "-254\n").unwrap();
    wait(&lb1, "file -254: FAULT (the whole sync group)", &|s| {
        all_in(s, VrrpState::Fault) && track(s, "file") == Some(("fault".into(), 0, true))
    });
    std::fs::remove_file(&file).unwrap();
    wait(&lb1, "file deleted: MASTER at 100 again", &|s| {
        all_in(s, VrrpState::Master) && prio(s) == [100, 100]
    });
    drop(tracked);
    assert!(lb1.proc().sigterm());
    assert!(lb1
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// A reload changing one VRRP instance leaves an unrelated one running: VI_1 (not in a sync
/// group) sees no transition while VI_2 moves to an interface that does not exist yet and
/// fails to start; once the interface exists, SIGHUP with the same file starts VI_2 there
/// (keepalived restarts only what changed; a group that failed is tried again).
#[test]
fn reload_restarts_only_the_changed_vrrp_instance() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbv", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let (conf_path, socket) = (lb1.conf.clone(), lb1.socket.clone());
    // VI_1's notify_stop leaves this file: it must appear at SIGTERM, not at the reloads.
    let stopped = lab.dir().join("vi1-stopped");
    let conf = |vi2_interface: &str| {
        let instance = |name: &str, vrid: u8, interface: &str, vip: &str| {
            let notify = if name == "VI_1" {
                format!("notify_stop \"/usr/bin/touch {}\"\n", stopped.display())
            } else {
                String::new()
            };
            format!(
                "vrrp_instance {name} {{
state MASTER
interface {interface}
virtual_router_id {vrid}
priority 100
advert_int 1
{notify}virtual_ipaddress {{
{vip}
}}
}}
"
            )
        };
        format!(
            "global_defs {{\nrouter_id LB1\nadmin_socket {}\n}}\n{}{}",
            socket.display(),
            instance("VI_1", 61, "eth0", "198.18.0.240"),
            instance("VI_2", 62, vi2_interface, "198.18.0.241"),
        )
    };
    std::fs::write(&conf_path, conf("eth0")).expect("write config");
    lb1.start(&lab);
    let states = |lb1: &Node| lb1.status().map(|s| vrrp_states(&s)).unwrap_or_default();
    let masters = |lb1: &Node, n: usize| {
        let s = states(lb1);
        s.len() == n && s.iter().all(|(_, st)| *st == VrrpState::Master)
    };
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        masters(&lb1, 2)
    });
    assert!(
        up.is_some(),
        "both MASTER: {:?}\n{}",
        states(&lb1),
        lb1.logs()
    );
    let vi1_transitions = |lb1: &mut Node| {
        lb1.proc()
            .stderr()
            .lines()
            .filter(|l| l.contains("VRRP transition") && l.contains("VI_1"))
            .count()
    };
    let reloads = |lb1: &mut Node| lb1.proc().stderr().matches("reload done").count();
    let before = vi1_transitions(&mut lb1);

    // VI_2 moves to trk9, which does not exist: it cannot start; VI_1 is untouched.
    std::fs::write(&conf_path, conf("trk9")).expect("write config");
    assert!(lb1.proc().sighup());
    let done = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        reloads(&mut lb1) == 1
    });
    assert!(done.is_some(), "reload done\n{}", lb1.logs());
    assert!(
        lb1.proc().stderr().contains("VRRP group not started"),
        "{}",
        lb1.logs()
    );
    let s = states(&lb1);
    assert!(
        s.iter()
            .any(|(n, st)| n == "VI_1" && *st == VrrpState::Master),
        "{s:?}"
    );
    assert!(lab.has_addr("lb1", "198.18.0.240".parse().expect("vip")));

    // trk9 appears (a veth pair inside lb1's namespace, removed with it): the same file,
    // reloaded, starts VI_2 on it.
    for args in [
        &[
            "ip", "link", "add", "trk9", "type", "veth", "peer", "name", "trk9p",
        ][..],
        &["ip", "addr", "add", "198.18.0.201/32", "dev", "trk9"],
        &["ip", "link", "set", "trk9p", "up"],
        &["ip", "link", "set", "trk9", "up"],
    ] {
        let out = lab.exec("lb1", args).expect("ip");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    assert!(lb1.proc().sighup());
    let started = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        masters(&lb1, 2)
    });
    assert!(
        started.is_some(),
        "VI_2 started on trk9: {:?}\n{}",
        states(&lb1),
        lb1.logs()
    );
    assert_eq!(reloads(&mut lb1), 2, "{}", lb1.logs());
    let vip2: IpAddr = "198.18.0.241".parse().expect("vip");
    let on_trk9 = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lab.exec("lb1", &["ip", "-o", "addr", "show", "dev", "trk9"])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&vip2.to_string()))
    });
    assert!(on_trk9.is_some(), "VI_2's VIP on trk9\n{}", lb1.logs());
    assert_eq!(
        vi1_transitions(&mut lb1),
        before,
        "VI_1 restarted by reloads that did not change it\n{}",
        lb1.logs()
    );
    assert!(!stopped.exists(), "VI_1's notify_stop ran before SIGTERM");
    assert!(lb1.proc().sigterm());
    assert!(lb1
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    // The script was started before the node exited; it may finish just after.
    let ran = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        stopped.exists()
    });
    assert!(
        ran.is_some(),
        "VI_1's notify_stop at SIGTERM\n{}",
        lb1.logs()
    );
}

/// A reload that changes a running instance in other ways than its priority (a VIP removed
/// and one added, a notify script changed) hands it over to a new speaker as keepalived's
/// reload does: the Master stays Master throughout (no priority-0 advert, so the backup
/// never takes over), the kept VIP never leaves, the removed one goes, the added one comes,
/// and no notify script runs. It used to stop the instance with a priority-0 advert: the
/// backup took the VIPs, and the restarted master took them back a Master_Down_Interval
/// later.
#[test]
fn reload_keeps_a_changed_master_master() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbh", &[("lb1", 11), ("lb2", 12)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    let notified = lab.dir().join("notified");
    let (kept, dropped, added) = ("198.18.0.230", "198.18.0.231", "198.18.0.232");
    // The changing VIPs are excluded ones: adverts carry only the kept one, so lb2, not
    // reloaded, still takes lb1's adverts (a different advertised list is dropped). A
    // weight-0 script that takes 4 s holds a fresh instance in INIT that long; a resumed
    // Master must not wait for it (lb2 would take over after 3.6 s).
    let conf = |socket: &Path, prio: u8, excluded: &str, notify: &str| {
        format!(
            "global_defs {{\nrouter_id R{prio}\nadmin_socket {}\n}}\n\
             vrrp_script chk {{\nscript \"/bin/sleep 4\"\ninterval 30\ntimeout 10\nweight 0\n}}\n\
             vrrp_instance VI_1 {{\ninterface eth0\nvirtual_router_id 71\npriority {prio}\n\
             advert_int 1\nnotify_master \"/usr/bin/touch {}\"\n\
             notify_backup \"/usr/bin/touch {}\"\ntrack_script {{\nchk\n}}\n\
             virtual_ipaddress {{\n{kept}\n}}\n\
             virtual_ipaddress_excluded {{\n{excluded}\n}}\n}}\n",
            socket.display(),
            notified.with_extension(notify).display(),
            notified
                .with_extension(format!("backup-{notify}"))
                .display(),
        )
    };
    std::fs::write(&lb1.conf, conf(&lb1.socket, 150, dropped, "a")).expect("conf");
    std::fs::write(&lb2.conf, conf(&lb2.socket, 100, dropped, "a")).expect("conf");
    lb1.start(&lab);
    lb2.start(&lab);
    let state = |n: &Node| n.status().map(|s| vrrp_states(&s)).unwrap_or_default();
    let settled = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        state(&lb1) == [("VI_1".to_owned(), VrrpState::Master)]
            && state(&lb2) == [("VI_1".to_owned(), VrrpState::Backup)]
    });
    assert!(
        settled.is_some(),
        "{:?} {:?}\n{}",
        state(&lb1),
        state(&lb2),
        lb1.logs()
    );
    let ip = |a: &str| -> IpAddr { a.parse().expect("ip") };
    assert!(lab.has_addr("lb1", ip(dropped)));
    // The first notify_master ran (at the start); the reload's must not.
    let first = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        notified.with_extension("a").exists()
    });
    assert!(first.is_some());
    let lb2_before = to_master(&mut lb2);

    assert!(notified.with_extension("backup-a").exists());

    std::fs::write(&lb1.conf, conf(&lb1.socket, 150, added, "b")).expect("conf");
    assert!(lb1.proc().sighup());
    // Watch the kept VIP through the reload and past a Master_Down_Interval after it.
    let start = Instant::now();
    let mut kept_gone = 0;
    while start.elapsed() < Duration::from_secs(6) {
        if !lab.has_addr("lb1", ip(kept)) {
            kept_gone += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        lb1.proc().stderr().contains("reload done"),
        "{}",
        lb1.logs()
    );
    assert_eq!(
        kept_gone,
        0,
        "the kept VIP left lb1 during the reload\n{}",
        lb1.logs()
    );
    assert_eq!(
        to_master(&mut lb2),
        lb2_before,
        "lb2 took over during lb1's reload\n{}\n{}",
        lb1.logs(),
        lb2.logs()
    );
    assert_eq!(lab.holders(&["lb1", "lb2"], ip(kept)), ["lb1"]);
    assert!(!lab.has_addr("lb1", ip(dropped)), "{}", lb1.logs());
    assert!(lab.has_addr("lb1", ip(added)), "{}", lb1.logs());
    assert_eq!(state(&lb1), [("VI_1".to_owned(), VrrpState::Master)]);
    assert!(
        !notified.with_extension("b").exists(),
        "notify_master ran at the reload"
    );
    // The backup reloads too: it stays BACKUP without running its (new) notify_backup.
    std::fs::write(&lb2.conf, conf(&lb2.socket, 100, added, "b")).expect("conf");
    assert!(lb2.proc().sighup());
    let reloaded = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb2.proc
            .as_ref()
            .is_some_and(|p| p.stderr().contains("reload done"))
            && state(&lb2) == [("VI_1".to_owned(), VrrpState::Backup)]
    });
    assert!(reloaded.is_some(), "{:?}\n{}", state(&lb2), lb2.logs());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !notified.with_extension("backup-b").exists(),
        "notify_backup ran at the backup's reload"
    );
}

/// A reload that renames an instance (same interface and VRID) keeps its state, as
/// keepalived's `vrrp_exist` matches old and new instances by VRID: the Master stays
/// Master under its new name, the VIP never leaves, the backup never takes over and no
/// notify script runs. It used to stop the old instance with a priority-0 advert (the
/// backup took the VIP) and start the renamed one as BACKUP.
#[test]
fn reload_renaming_an_instance_keeps_its_state() {
    renaming_an_instance(false);
}

/// The same rename while a new instance on another VRID takes the old name, written first
/// in the file: the renamed instance is still the one that goes on (keepalived's
/// `vrrp_exist` matches by VRID, not name). The old name used to take the running
/// instance, which then stopped with priority 0 and lost the VIP to the backup.
#[test]
fn reload_renaming_an_instance_whose_name_is_reused_keeps_its_state() {
    renaming_an_instance(true);
}

/// lb1 Master of VRID 73 as `VI_1`, renamed `VI_web` by a reload; with `reuse`, a new
/// `VI_1` on VRID 74 comes first in the new file.
fn renaming_an_instance(reuse: bool) {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbn", &[("lb1", 11), ("lb2", 12)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    let notified = lab.dir().join("notified");
    let vip = "198.18.0.233";
    let conf = |socket: &Path, name: &str, prio: u8| {
        format!(
            "global_defs {{\nrouter_id R{prio}\nadmin_socket {}\n}}\n\
             vrrp_instance {name} {{\ninterface eth0\nvirtual_router_id 73\npriority {prio}\n\
             advert_int 1\nnotify_master \"/usr/bin/touch {}\"\n\
             virtual_ipaddress {{\n{vip}\n}}\n}}\n",
            socket.display(),
            notified.with_extension(name).display(),
        )
    };
    std::fs::write(&lb1.conf, conf(&lb1.socket, "VI_1", 150)).expect("conf");
    std::fs::write(&lb2.conf, conf(&lb2.socket, "VI_1", 100)).expect("conf");
    lb1.start(&lab);
    lb2.start(&lab);
    let state = |n: &Node| n.status().map(|s| vrrp_states(&s)).unwrap_or_default();
    let settled = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        state(&lb1) == [("VI_1".to_owned(), VrrpState::Master)]
            && state(&lb2) == [("VI_1".to_owned(), VrrpState::Backup)]
    });
    assert!(
        settled.is_some(),
        "{:?} {:?}\n{}",
        state(&lb1),
        state(&lb2),
        lb1.logs()
    );
    let ip: IpAddr = vip.parse().expect("ip");
    let lb2_before = to_master(&mut lb2);

    let mut renamed = conf(&lb1.socket, "VI_web", 150);
    if reuse {
        let other = "vrrp_instance VI_1 {\ninterface eth0\nvirtual_router_id 74\npriority 150\n\
                     advert_int 1\nvirtual_ipaddress {\n198.18.0.235\n}\n}\n";
        let at = renamed.find("vrrp_instance").expect("an instance");
        renamed.insert_str(at, other);
    }
    std::fs::write(&lb1.conf, renamed).expect("conf");
    assert!(lb1.proc().sighup());
    // Watch the VIP through the reload and past a Master_Down_Interval after it.
    let start = Instant::now();
    let mut gone = 0;
    while start.elapsed() < Duration::from_secs(5) {
        if !lab.has_addr("lb1", ip) {
            gone += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        lb1.proc().stderr().contains("reload done"),
        "{}",
        lb1.logs()
    );
    assert_eq!(
        gone,
        0,
        "the VIP left lb1 during the reload\n{}",
        lb1.logs()
    );
    assert_eq!(
        to_master(&mut lb2),
        lb2_before,
        "lb2 took over during lb1's reload\n{}\n{}",
        lb1.logs(),
        lb2.logs()
    );
    assert!(
        state(&lb1).contains(&("VI_web".to_owned(), VrrpState::Master)),
        "{:?}",
        state(&lb1)
    );
    assert_eq!(state(&lb1).len(), if reuse { 2 } else { 1 });
    assert!(
        !notified.with_extension("VI_web").exists(),
        "notify_master ran at the reload"
    );
}

/// A reload hand-over carries the scripts' last results (keepalived keeps a script's state
/// across a reload). lb1 (priority 100) is Master thanks to a +50 script that takes 4 s to
/// answer; lb2 has 120. Without the carried result, the resumed Master advertised 100 until
/// its script's next answer, long enough for lb2 to take over.
#[test]
fn reload_carries_the_scripts_last_results() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbc", &[("lb1", 11), ("lb2", 12)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let mut lb2 = Node::new(&lab, "lb2");
    let conf = |socket: &Path, prio: u8, excluded: &str| {
        format!(
            "global_defs {{\nrouter_id R{prio}\nadmin_socket {}\n}}\n\
             vrrp_script chk {{\nscript \"/bin/sleep 4\"\ninterval 30\ntimeout 10\nweight 50\n}}\n\
             vrrp_instance VI_1 {{\ninterface eth0\nvirtual_router_id 72\npriority {prio}\n\
             advert_int 1\ntrack_script {{\nchk\n}}\n\
             virtual_ipaddress {{\n198.18.0.233\n}}\n\
             virtual_ipaddress_excluded {{\n{excluded}\n}}\n}}\n",
            socket.display(),
        )
    };
    std::fs::write(&lb1.conf, conf(&lb1.socket, 100, "198.18.0.234")).expect("conf");
    std::fs::write(&lb2.conf, conf(&lb2.socket, 120, "198.18.0.234")).expect("conf");
    // lb2's script never answers in time: its 120 stays 120 (no +50 before 4 s, and
    // lb1's answer comes first).
    let lb2_conf = std::fs::read_to_string(&lb2.conf)
        .unwrap()
        .replace("weight 50", "weight 0\n")
        .replace("track_script {\nchk\n}\n", "");
    std::fs::write(&lb2.conf, lb2_conf).expect("conf");
    lb1.start(&lab);
    lb2.start(&lab);
    let status = |n: &Node| {
        n.status()
            .map(|s| (vrrp_states(&s), s.vrrp[0].effective_priority))
            .unwrap_or_default()
    };
    let master = |n: &Node| status(n).0 == [("VI_1".to_owned(), VrrpState::Master)];
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        master(&lb1) && status(&lb1).1 == 150 && !master(&lb2)
    });
    assert!(
        settled.is_some(),
        "lb1 {:?} lb2 {:?}\n{}",
        status(&lb1),
        status(&lb2),
        lb1.logs()
    );
    let lb2_before = to_master(&mut lb2);
    // A changed excluded VIP: the instance is handed over, not kept.
    std::fs::write(&lb1.conf, conf(&lb1.socket, 100, "198.18.0.235")).expect("conf");
    assert!(lb1.proc().sighup());
    let start = Instant::now();
    let mut lowest = 255;
    while start.elapsed() < Duration::from_secs(6) {
        if let Some(p) = lb1.status().map(|s| s.vrrp[0].effective_priority) {
            lowest = lowest.min(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lb1.proc().stderr().contains("reload done"),
        "{}",
        lb1.logs()
    );
    assert_eq!(
        lowest,
        150,
        "the resumed Master lost its script's +50\n{}",
        lb1.logs()
    );
    assert_eq!(
        to_master(&mut lb2),
        lb2_before,
        "lb2 took over during the reload\n{}",
        lb2.logs()
    );
    assert!(master(&lb1));
}

/// keepalived's `PING_CHECK`, end to end: lb-node in lb1's namespace pings its real servers
/// (the namespace keeps the default `ping_group_range`, so from a raw socket); ICMP echo
/// requests dropped on rs2 (an nftables rule in rs2's namespace) take rs2 down and every
/// client request goes to rs1; the rule removed, rs2 comes back and serves again.
#[test]
fn ping_check_follows_icmp_reachability() {
    if !lab_available() || !lb_testkit::tool_available("nft") {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbp", HOSTS).expect("lab");
    let _servers: Vec<TcpServer> = REAL[..2]
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    let mut lb1 = Node::new(&lab, "lb1");
    let listen = SocketAddr::new(lab.addr("lb1").into(), 80);
    let real_servers: String = REAL[..2]
        .iter()
        .map(|(h, port, _)| {
            format!(
                "    real_server {} {port} {{\n        PING_CHECK {{\n            connect_timeout 0.3\n        }}\n    }}\n",
                lab.addr(h)
            )
        })
        .collect();
    std::fs::write(
        &lb1.conf,
        format!(
            "global_defs {{\n    admin_socket {}\n}}\n\
             virtual_server {} {} {{\n    protocol TCP\n    lb_algo rr\n    delay_loop 0.2\n    delay_before_retry 0.2\n{real_servers}}}\n",
            lb1.socket.display(),
            listen.ip(),
            listen.port()
        ),
    )
    .expect("write config");
    lb1.start(&lab);
    let health = |s: &Status, port: u16| backend(s, port).health;
    let pages = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                lab.http_get("client", listen, Duration::from_secs(2))
                    .expect("every request is served")
            })
            .collect()
    };
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status()
            .is_some_and(|s| health(&s, 82) == Health::Up && health(&s, 83) == Health::Up)
    });
    assert!(
        up.is_some(),
        "lb1 up with both real servers\n{}",
        lb1.logs()
    );
    let mut seen = pages(4);
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["real server 1", "real server 2"]);

    let rules = lab.dir().join("drop-echo.nft");
    std::fs::write(
        &rules,
        "table inet lbping {\n  chain input {\n    type filter hook input priority 0;\n    icmp type echo-request drop\n  }\n}\n",
    )
    .expect("write rules");
    let out = lab
        .exec("rs2", &["nft", "-f", &rules.display().to_string()])
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| health(&s, 83) == Health::Down)
    });
    assert!(
        down.is_some(),
        "rs2 down while it drops pings\n{}",
        lb1.logs()
    );
    step(start, "PING_CHECK: rs2 dropping echo requests is down");
    assert!(
        lb1.logs()
            .contains("no echo reply from 198.18.0.152 within 300ms"),
        "{}",
        lb1.logs()
    );
    assert_eq!(pages(4), ["real server 1"; 4]);
    assert_eq!(health(&lb1.status_ok(), 82), Health::Up);

    let out = lab
        .exec("rs2", &["nft", "delete", "table", "inet", "lbping"])
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| health(&s, 83) == Health::Up)
    });
    assert!(back.is_some(), "rs2 up again\n{}", lb1.logs());
    step(start, "PING_CHECK: rs2 answering again is up");
    let mut seen = pages(4);
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["real server 1", "real server 2"]);
    assert!(lb1.proc().sigterm());
    assert!(lb1
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// keepalived's `bfd_instance`, `track_bfd` and `BFD_CHECK` against keepalived's own BFD
/// daemon (the Debian package's, `keepalived -n -l -D` in rs3's namespace, in its own
/// process group):
/// * before keepalived runs, the session is Down: VI_1, which tracks it with weight 0, is in
///   FAULT, and rs1, whose `BFD_CHECK` says `alpha`, is down with the reason;
/// * keepalived started: the session comes Up, VI_1 becomes MASTER and rs1 serves;
/// * keepalived's process group killed (a crash): the detection time expires, VI_1 goes to
///   FAULT and rs1 down ("Control Detection Time Expired"), requests go to rs2 only;
/// * keepalived started again: all back; reloads, one unchanged and one changing the
///   session's timers, keep the session (keepalived logs no Down); then SIGTERM to
///   keepalived: its silence takes the session down again;
/// * `lbctl status` shows the session in its BFD table.
#[test]
fn bfd_follows_keepalived_bfd() {
    if !lab_available() || !lb_testkit::tool_available("keepalived") {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbb", HOSTS).expect("lab");
    let _servers: Vec<TcpServer> = REAL[..2]
        .iter()
        .map(|(h, port, page)| {
            TcpServer::start(&lab, h, SocketAddr::new(lab.addr(h).into(), *port), page)
                .expect("real server")
        })
        .collect();
    let peer = lab.addr("rs3");
    let mut lb1 = Node::new(&lab, "lb1");
    let listen = SocketAddr::new(lab.addr("lb1").into(), 80);
    // Multiplier 10 each way (500 ms detection): the session must stay Up through two
    // reloads on a loaded machine.
    std::fs::write(
        &lb1.conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             bfd_instance gw {{\n    neighbor_ip {peer}\n    source_ip {me}\n    min_rx 50\n    min_tx 50\n    idle_tx 1000\n    multiplier 10\n}}\n\
             vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 61\n    priority 100\n    advert_int 1\n\
             virtual_ipaddress {{\n        {VIP}\n    }}\n    track_bfd {{\n        gw\n    }}\n}}\n\
             virtual_server {ip} {port} {{\n    protocol TCP\n    lb_algo rr\n    delay_loop 1\n\
             real_server {rs1} 82 {{\n        BFD_CHECK {{\n            name gw\n            alpha\n        }}\n    }}\n\
             real_server {rs2} 83 {{\n    }}\n}}\n",
            sock = lb1.socket.display(),
            me = lab.addr("lb1"),
            ip = listen.ip(),
            port = listen.port(),
            rs1 = lab.addr("rs1"),
            rs2 = lab.addr("rs2"),
        ),
    )
    .expect("write config");
    lb1.start(&lab);
    let session = |s: &Status| s.bfd.first().map(|b| b.state.clone()).unwrap_or_default();
    let vi1 = |s: &Status| s.vrrp.first().map(|v| v.state);
    let rs1 = |s: &Status| backend(s, 82).clone();
    let pages = |n: usize| -> Vec<String> {
        let mut v: Vec<String> = (0..n)
            .map(|_| {
                lab.http_get("client", listen, Duration::from_secs(2))
                    .expect("every request is served")
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let ready = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status()
            .is_some_and(|s| vi1(&s) == Some(VrrpState::Fault) && rs1(&s).health == Health::Down)
    });
    assert!(
        ready.is_some(),
        "without its BFD peer, VI_1 in FAULT and rs1 down\n{:#?}\n{}",
        lb1.status(),
        lb1.logs()
    );
    let s = lb1.status_ok();
    assert_eq!(session(&s), "Down");
    assert!(
        rs1(&s)
            .health_reason
            .is_some_and(|r| r.contains("BFD session gw has not been Up yet")),
        "{s:#?}"
    );
    assert_eq!(pages(4), ["real server 2"]);
    step(start, "BFD: no peer yet, VI_1 FAULT, rs1 down (alpha)");

    // keepalived's BFD daemon, alone (no VRRP, no checker), in rs3's namespace.
    let ka_conf = lab.dir().join("ka-bfd.conf");
    std::fs::write(
        &ka_conf,
        format!(
            "global_defs {{\n    router_id ka_bfd\n}}\n\
             bfd_instance lb1 {{\n    neighbor_ip {me}\n    source_ip {peer}\n    min_rx 50\n    min_tx 50\n    idle_tx 1000\n    multiplier 10\n}}\n",
            me = lab.addr("lb1"),
        ),
    )
    .expect("write keepalived config");
    // In its own process group (`Proc`), killed whole when dropped.
    let spawn_ka = |n: u32| {
        let cmd = lab.keepalived("rs3", &ka_conf, &format!("ka{n}"));
        Proc::spawn(cmd, lab.dir(), &format!("keepalived-{n}")).expect("spawn keepalived")
    };
    let mut ka = spawn_ka(1);
    let up = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| {
            session(&s) == "Up"
                && vi1(&s) == Some(VrrpState::Master)
                && rs1(&s).health == Health::Up
        })
    });
    assert!(
        up.is_some(),
        "BFD Up with keepalived: VI_1 MASTER, rs1 up\n{:#?}\n{}\n{}",
        lb1.status(),
        lb1.logs(),
        ka.log_tail(40)
    );
    assert_eq!(pages(6), ["real server 1", "real server 2"]);
    let table = {
        let mut cmd = Command::new(LBCTL);
        cmd.arg("--socket").arg(&lb1.socket).arg("status");
        let out = run_bounded(cmd, Duration::from_secs(5)).expect("lbctl status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(table.contains("BFD sessions"), "{table}");
    let s = lb1.status_ok();
    assert!(
        s.bfd[0].packets_in > 0 && s.bfd[0].packets_out > 0 && s.bfd[0].dropped == 0,
        "{s:#?}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("gw") && l.contains(&peer.to_string()) && l.contains("Up")),
        "{table}"
    );
    step(
        start,
        "BFD: Up with keepalived's BFD, VI_1 MASTER, rs1 serving",
    );

    // A crash: the whole process group (killing only the parent makes its BFD child stop
    // cleanly).
    ka.kill9();
    let down = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        lb1.status().is_some_and(|s| {
            session(&s) == "Down"
                && vi1(&s) == Some(VrrpState::Fault)
                && rs1(&s).health == Health::Down
        })
    });
    assert!(
        down.is_some(),
        "keepalived crashed: BFD Down, VI_1 FAULT, rs1 down\n{:#?}\n{}",
        lb1.status(),
        lb1.logs()
    );
    let s = lb1.status_ok();
    assert_eq!(
        s.bfd[0].diagnostic, "Control Detection Time Expired",
        "{s:#?}"
    );
    assert!(
        rs1(&s)
            .health_reason
            .is_some_and(|r| r.contains("BFD session gw is Down (Control Detection Time Expired)")),
        "{s:#?}"
    );
    assert_eq!(pages(4), ["real server 2"]);
    step(
        start,
        "BFD: keepalived crashed, detection time expired, VI_1 FAULT, rs1 down",
    );

    let mut ka = spawn_ka(2);
    let back = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        lb1.status().is_some_and(|s| {
            session(&s) == "Up"
                && vi1(&s) == Some(VrrpState::Master)
                && rs1(&s).health == Health::Up
        })
    });
    assert!(
        back.is_some(),
        "keepalived restarted: all back\n{:#?}\n{}",
        lb1.status(),
        lb1.logs()
    );
    assert_eq!(pages(6), ["real server 1", "real server 2"]);
    step(start, "BFD: keepalived restarted, Up again");

    // A reload that keeps the bfd_instance keeps the session: keepalived sees no change.
    // keepalived -l -D logs to stderr.
    let ups = |ka: &Proc| ka.stderr().matches("(lb1) Entering Up state").count();
    let before = ups(&ka);
    assert!(before >= 1, "{}", ka.log_tail(40));
    assert!(lb1.proc().sighup());
    std::thread::sleep(Duration::from_millis(1500));
    let s = lb1.status_ok();
    assert_eq!(session(&s), "Up", "{s:#?}");
    assert!(
        s.bfd[0].since_secs >= 1,
        "the session was not restarted: {s:#?}"
    );
    assert_eq!(ups(&ka), before, "{}", ka.log_tail(40));
    assert!(!ka.stderr().contains("(lb1) Entering Down state"));
    // One that changes its timers keeps it too, as keepalived (the new values go through
    // a Poll Sequence): no Down on either side, VI_1 and rs1 untouched.
    let since = s.bfd[0].since_secs;
    let conf = std::fs::read_to_string(&lb1.conf).expect("read config");
    std::fs::write(
        &lb1.conf,
        conf.replace("multiplier 10", "multiplier 12")
            .replace("min_tx 50", "min_tx 40"),
    )
    .expect("write");
    assert!(lb1.proc().sighup());
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || lb1
            .logs()
            .contains("bfd_instances changed"))
        .is_some(),
        "{}",
        lb1.logs()
    );
    std::thread::sleep(Duration::from_millis(1000));
    let s = lb1.status_ok();
    assert_eq!(session(&s), "Up", "{s:#?}");
    assert_eq!(vi1(&s), Some(VrrpState::Master), "{s:#?}");
    assert_eq!(rs1(&s).health, Health::Up, "{s:#?}");
    assert!(
        s.bfd[0].since_secs > since,
        "the session was not restarted: {s:#?}"
    );
    assert_eq!(ups(&ka), before, "{}", ka.log_tail(40));
    assert!(
        !ka.stderr().contains("(lb1) Entering Down state"),
        "{}",
        ka.log_tail(40)
    );
    step(start, "BFD: reloads keep the session, with new timers too");

    assert!(ka.sigterm());
    let down = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        lb1.status()
            .is_some_and(|s| session(&s) == "Down" && rs1(&s).health == Health::Down)
    });
    assert!(
        down.is_some(),
        "keepalived stopped: BFD Down\n{:#?}\n{}\n{}",
        lb1.status(),
        lb1.logs(),
        ka.log_tail(40)
    );
    ka.wait_exit(Duration::from_secs(10));
    step(start, "BFD: keepalived stopped, session down");

    // lb-node's own SIGTERM: keepalived hears AdminDown ("Neighbor Signaled Session Down"),
    // while rs1, whose virtual server still accepts until the node is gone, is not failed
    // by it.
    let ka = spawn_ka(3);
    let up = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        lb1.status()
            .is_some_and(|s| session(&s) == "Up" && rs1(&s).health == Health::Up)
    });
    assert!(up.is_some(), "{:#?}\n{}", lb1.status(), lb1.logs());
    let full = |n: &Node| n.proc.as_ref().map(Proc::stderr).unwrap_or_default();
    let checks_before = full(&lb1).matches("BFD check").count();
    assert!(lb1.proc().sigterm());
    assert!(lb1
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || ka
            .stderr()
            .contains(
                "(lb1) Entering Down state (Local diagnostic - Neighbor Signaled Session Down"
            ))
        .is_some(),
        "{}",
        ka.log_tail(40)
    );
    assert_eq!(
        full(&lb1).matches("BFD check").count(),
        checks_before,
        "the node's exit failed rs1:\n{}",
        lb1.logs()
    );
    step(
        start,
        "BFD: lb-node's SIGTERM sends AdminDown and fails no real server",
    );
}

/// keepalived's `use_vmac` in lb-node: the Master's VIP lives on `vrrp.72`, a macvlan with
/// the virtual router MAC 00:00:5e:00:01:48 (RFC 5798 §7.3), and a client reaches it with
/// that MAC. A reload that changes the instance hands the VMAC over (same interface,
/// the VIP never leaves it); one that turns `use_vmac` off deletes it and puts the VIP
/// on eth0; SIGTERM leaves nothing behind.
#[test]
fn use_vmac_is_handed_over_by_a_reload() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbm", &[("lb1", 11), ("client", 21)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let vip: IpAddr = "198.18.0.233".parse().expect("ip");
    let socket = lb1.socket.clone();
    let conf = |vmac: bool, repeat: u32| {
        format!(
            "global_defs {{\nadmin_socket {}\n}}\n\
             vrrp_instance VI_1 {{\ninterface eth0\nvirtual_router_id 72\npriority 150\n\
             advert_int 1\ngarp_master_repeat {repeat}\n{}\
             virtual_ipaddress {{\n{vip}/24\n}}\n}}\n",
            socket.display(),
            if vmac { "use_vmac\n" } else { "" },
        )
    };
    let on_vmac = |lab: &Lab| {
        lab.exec("lb1", &["ip", "-o", "addr", "show", "dev", "vrrp.72"])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("198.18.0.233/24"))
    };
    let vmac_index = |lab: &Lab| {
        lab.exec("lb1", &["cat", "/sys/class/net/vrrp.72/ifindex"])
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let path = lb1.conf.clone();
    std::fs::write(&path, conf(true, 1)).expect("conf");
    lb1.start(&lab);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            on_vmac(&lab)
        })
        .is_some(),
        "{}",
        lb1.logs()
    );
    assert!(!lab.has_addr("lb1", vip), "the VIP belongs on the VMAC");
    let mac = lab
        .exec("lb1", &["cat", "/sys/class/net/vrrp.72/address"])
        .expect("cat");
    assert_eq!(
        String::from_utf8_lossy(&mac.stdout).trim(),
        "00:00:5e:00:01:48"
    );
    let ping = |lab: &Lab| {
        lab.exec("client", &["ping", "-c", "1", "-W", "1", "198.18.0.233"])
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || ping(
            &lab
        ))
        .is_some()
    );
    let neigh = lab
        .exec("client", &["ip", "neigh", "show", "198.18.0.233"])
        .expect("ip neigh");
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains("00:00:5e:00:01:48"),
        "{}",
        String::from_utf8_lossy(&neigh.stdout)
    );
    let index = vmac_index(&lab).expect("VMAC index");
    assert_eq!(vmac_traces(&lab), "1 1 2 +");

    // A changed instance: the successor takes the VMAC over, the VIP stays on it.
    std::fs::write(&path, conf(true, 2)).expect("conf");
    assert!(lb1.proc().sighup());
    let mut gone = 0;
    let reloaded = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        if !on_vmac(&lab) {
            gone += 1;
        }
        lb1.proc
            .as_ref()
            .is_some_and(|p| p.stderr().contains("reload done"))
    });
    assert!(reloaded.is_some(), "{}", lb1.logs());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        gone,
        0,
        "the VIP left the VMAC during the reload\n{}",
        lb1.logs()
    );
    assert!(on_vmac(&lab));
    assert_eq!(vmac_index(&lab), Some(index), "the VMAC was recreated");
    assert!(
        lb1.logs().contains("taking over the VMAC"),
        "{}",
        lb1.logs()
    );

    // use_vmac off: the VMAC goes, the VIP comes back on eth0.
    std::fs::write(&path, conf(false, 2)).expect("conf");
    assert!(lb1.proc().sighup());
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            vmac_index(&lab).is_none() && lab.has_addr("lb1", vip)
        })
        .is_some(),
        "{}",
        lb1.logs()
    );
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || ping(
            &lab
        ))
        .is_some()
    );
    assert_eq!(
        vmac_traces(&lab),
        "0 0 0 -",
        "settings or nftables elements left behind"
    );

    // On again, then SIGTERM: nothing left.
    std::fs::write(&path, conf(true, 2)).expect("conf");
    assert!(lb1.proc().sighup());
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            on_vmac(&lab)
        })
        .is_some(),
        "{}",
        lb1.logs()
    );
    assert!(lb1.proc().sigterm());
    assert!(lb1.proc().wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(vmac_index(&lab), None, "VMAC left behind");
    assert!(!lab.has_addr("lb1", vip));
    assert_eq!(
        vmac_traces(&lab),
        "0 0 0 -",
        "settings or nftables elements left behind"
    );
}

/// lb1's eth0 `arp_ignore`, `arp_filter`, `arp_announce`, and whether the nftables tables
/// that move IGMP/MLD reports off VMACs are there, naming `vrrp.72` (`+`), or not (`-`).
fn vmac_traces(lab: &Lab) -> String {
    let out = lab
        .exec(
            "lb1",
            &[
                "sysctl",
                "-n",
                "net.ipv4.conf.eth0.arp_ignore",
                "net.ipv4.conf.eth0.arp_filter",
                "net.ipv4.conf.eth0.arp_announce",
            ],
        )
        .expect("sysctl");
    let mut words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let maps = lab.exec("lb1", &["nft", "list", "ruleset"]).expect("nft");
    let ruleset = String::from_utf8_lossy(&maps.stdout);
    // While it runs: its element; after: no table at all (keepalived's nft_cleanup).
    let listed = ruleset.contains("lb_vrrp_vmac");
    assert_eq!(listed, ruleset.contains("\"vrrp.72\""), "{ruleset}");
    words.push(if listed { "+" } else { "-" }.to_owned());
    words.join(" ")
}

/// keepalived's `vrrp_startup_delay`: lb-node's instances start at once as BACKUP, and
/// none becomes MASTER before the delay ends (an address owner holds no VIP before); a
/// reload after it starts a new instance's takeover at once.
#[test]
fn vrrp_startup_delay_holds_the_instances_at_start_only() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbd", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let socket = lb1.socket.clone();
    let conf = |second: bool| {
        let instance = |name: &str, vrid: u8, vip: &str| {
            format!(
                "vrrp_instance {name} {{\ninterface eth0\nvirtual_router_id {vrid}\npriority 255\n\
                 advert_int 1\nvirtual_ipaddress {{\n{vip}/24\n}}\n}}\n"
            )
        };
        format!(
            "global_defs {{\nadmin_socket {}\nvrrp_startup_delay 4\n}}\n{}{}",
            socket.display(),
            instance("VI_1", 73, "198.18.0.234"),
            if second {
                instance("VI_2", 74, "198.18.0.235")
            } else {
                String::new()
            },
        )
    };
    let path = lb1.conf.clone();
    std::fs::write(&path, conf(false)).expect("conf");
    let started = Instant::now();
    lb1.start(&lab);
    let first: IpAddr = "198.18.0.234".parse().expect("ip");
    let backup = wait_until(
        Duration::from_millis(3000),
        Duration::from_millis(20),
        || {
            lb1.status()
                .is_some_and(|s| vrrp_states(&s) == [("VI_1".to_owned(), VrrpState::Backup)])
        },
    );
    assert!(
        backup.is_some(),
        "not BACKUP within the delay: {:?}\n{}",
        lb1.status().map(|s| vrrp_states(&s)),
        lb1.logs()
    );
    assert!(!lab.has_addr("lb1", first), "MASTER within the delay");
    assert!(
        wait_until(Duration::from_secs(8), Duration::from_millis(20), || lab
            .has_addr("lb1", first))
        .is_some(),
        "{}",
        lb1.logs()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3900),
        "VIP after {took:?}, inside the 4 s delay"
    );
    // A reload after the delay: the new instance (an owner) starts at once.
    std::fs::write(&path, conf(true)).expect("conf");
    let reload = Instant::now();
    assert!(lb1.proc().sighup());
    let second: IpAddr = "198.18.0.235".parse().expect("ip");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || lab
            .has_addr("lb1", second))
        .is_some(),
        "{}",
        lb1.logs()
    );
    // Well under the 4 s delay it would have waited again (a loaded machine's reload
    // takes its time too).
    assert!(
        reload.elapsed() < Duration::from_millis(3000),
        "the reloaded instance waited {:?}",
        reload.elapsed()
    );
}

/// Ends, on drop, the `sleep <arg>` whose PID a notify script wrote to `pidfile`, if it
/// still runs (checked by its command line, so that a PID reused since is left alone).
struct SleeperGuard {
    pidfile: PathBuf,
    arg: String,
}

impl SleeperGuard {
    /// The sleeper's PID while it runs.
    fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let want = format!("sleep\0{}\0", self.arg);
        (cmdline == want.as_bytes()).then_some(pid)
    }
}

impl Drop for SleeperGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// keepalived's notify FIFOs: `notify_fifo` (every line) read by its `notify_fifo_script`
/// (which keeps reading after SIGTERM, as keepalived's sample script does), and
/// `vrrp_notify_fifo` / `lvs_notify_fifo` split by kind. lb-node creates the FIFOs,
/// writes `INSTANCE` lines for the owner's transitions (and STOP at the end), `VS`
/// (quorum) and `RS` lines when the real server's TCP_CHECK fails and recovers, and
/// removes the FIFOs at the stop.
#[test]
fn notify_fifos_carry_keepalived_lines() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbf", &[("lb1", 11), ("web", 31)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let dir = lab.dir().to_owned();
    let (all, vrrp_fifo, lvs_fifo) = (
        dir.join("all.fifo"),
        dir.join("vrrp.fifo"),
        dir.join("lvs.fifo"),
    );
    let (all_log, vrrp_log, lvs_log) = (
        dir.join("all.log"),
        dir.join("vrrp.log"),
        dir.join("lvs.log"),
    );
    // The readers read to the end (lb-node closes the FIFO first); the vrrp one then
    // sleeps for an hour, unless its process group gets SIGTERM at the stop. It writes its
    // PID first (the sleep keeps it: `exec`), for the guard that ends it should the test
    // fail before the stop.
    let reader = |log: &Path| {
        format!(
            "\"sh -c 'trap \\\"\\\" TERM; exec cat \\\"$0\\\" >> {}'\"",
            log.display()
        )
    };
    let sleeper = format!("3600.{}", std::process::id());
    let sleeper_pid = dir.join("sleeper.pid");
    let vrrp_reader = format!(
        "\"sh -c 'cat \\\"$0\\\" >> {}; echo $$ > {}; exec sleep {sleeper}'\"",
        vrrp_log.display(),
        sleeper_pid.display()
    );
    let sleeper_guard = SleeperGuard {
        pidfile: sleeper_pid,
        arg: sleeper.clone(),
    };
    let real = SocketAddr::new(lab.addr("web").into(), 8080);
    let mut server = TcpServer::start(&lab, "web", real, "web").expect("real server");
    let socket = lb1.socket.clone();
    let conf_path = lb1.conf.clone();
    let conf = |all_reader: String| {
        format!(
            "global_defs {{\nadmin_socket {}\nnotify_fifo {}\nnotify_fifo_script {}\n\
             vrrp_notify_fifo {} nobody nogroup\nvrrp_notify_fifo_script {}\n\
             lvs_notify_fifo {}\nlvs_notify_fifo_script {}\n}}\n\
             vrrp_sync_group VG_1 {{\ngroup {{\nVI_1\n}}\n}}\n\
             vrrp_instance VI_1 {{\ninterface eth0\nvirtual_router_id 75\npriority 255\n\
             advert_int 1\nvirtual_ipaddress {{\n198.18.0.236/24\n}}\n}}\n\
             virtual_server 198.18.0.236 80 {{\ndelay_loop 1\nlb_algo rr\nprotocol TCP\n\
             real_server {real_ip} 8080 {{\nTCP_CHECK {{\nconnect_timeout 1\nretry 0\n}}\n}}\n}}\n",
            socket.display(),
            all.display(),
            all_reader,
            vrrp_fifo.display(),
            vrrp_reader,
            lvs_fifo.display(),
            reader(&lvs_log),
            real_ip = real.ip(),
        )
    };
    std::fs::write(&conf_path, conf(reader(&all_log))).expect("conf");
    lb1.start(&lab);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let has = |p: &Path, line: &str| read(p).lines().any(|l| l == line);
    let master = "INSTANCE \"VI_1\" MASTER 255";
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || has(
            &all_log, master
        )
            && has(&vrrp_log, master))
        .is_some(),
        "{:?} {:?}\n{}",
        read(&all_log),
        read(&vrrp_log),
        lb1.logs()
    );
    let group = "GROUP \"VG_1\" MASTER 0";
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || has(
            &vrrp_log, group
        ))
        .is_some(),
        "{:?}",
        read(&vrrp_log)
    );
    {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
        let m = std::fs::metadata(&all).expect("the FIFO");
        assert!(m.file_type().is_fifo());
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
        // vrrp_notify_fifo's owner: nobody (65534).
        assert_eq!(
            std::fs::metadata(&vrrp_fifo).expect("the FIFO").uid(),
            65534
        );
    }
    // The real server dies: its check fails it, the pool loses quorum.
    server.stop();
    let rs_down = "RS [198.18.0.31]:tcp:8080 [198.18.0.236]:tcp:80 DOWN";
    let vs_down = "VS [198.18.0.236]:tcp:80 DOWN";
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || has(
            &lvs_log, rs_down
        )
            && has(&lvs_log, vs_down)
            && has(&all_log, rs_down))
        .is_some(),
        "{:?}\n{}",
        read(&lvs_log),
        lb1.logs()
    );
    let _server = TcpServer::start(&lab, "web", real, "web").expect("real server back");
    let rs_up = "RS [198.18.0.31]:tcp:8080 [198.18.0.236]:tcp:80 UP";
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || has(
            &lvs_log, rs_up
        )
            && has(&lvs_log, "VS [198.18.0.236]:tcp:80 UP"))
        .is_some(),
        "{:?}\n{}",
        read(&lvs_log),
        lb1.logs()
    );
    // Each FIFO has its kind only.
    assert!(!read(&vrrp_log).contains("RS "), "{}", read(&vrrp_log));
    assert!(!read(&lvs_log).contains("INSTANCE"), "{}", read(&lvs_log));
    // A reload that changes only notify_fifo's script: the FIFO stays where it is (the
    // retired version must not remove it) and the new script reads the next lines.
    let all2_log = dir.join("all2.log");
    std::fs::write(&conf_path, conf(reader(&all2_log))).expect("conf");
    assert!(lb1.proc().sighup());
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || lb1
            .proc
            .as_ref()
            .is_some_and(|p| p.stderr().contains("reload done")))
        .is_some(),
        "{}",
        lb1.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(all.exists(), "the reload removed notify_fifo's path");
    drop(_server);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            // RS DOWN, or VS DOWN alone if the reload restarted the virtual server after
            // the real server was gone (its start state runs no RS line).
            has(&all2_log, rs_down) || has(&all2_log, vs_down)
        })
        .is_some(),
        "the new script read nothing: {:?}\n{}",
        read(&all2_log),
        lb1.logs()
    );
    assert!(lb1.proc().sigterm());
    assert!(lb1.proc().wait_exit(Duration::from_secs(10)).is_some());
    let stop = "INSTANCE \"VI_1\" STOP 255";
    let group_stop = "GROUP \"VG_1\" STOP 0";
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || has(
            &all2_log, stop
        )
            && has(&all2_log, group_stop))
        .is_some(),
        "{:?}",
        read(&all2_log)
    );
    let ended = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        sleeper_guard.pid().is_none()
    });
    // Ours, by PID, if the stop left it.
    drop(sleeper_guard);
    assert!(
        ended.is_some(),
        "the vrrp FIFO's script was not stopped (SIGTERM, then SIGKILL)"
    );
    for f in [&all, &vrrp_fifo, &lvs_fifo] {
        assert!(!f.exists(), "{} left behind", f.display());
    }
}

/// keepalived's sample configuration (Debian's keepalived.conf.sample: `vrrp_strict`,
/// `state MASTER` at priority 100, PASS authentication) run by lb-node on lb1 (at
/// priority 150) and by keepalived on lb2: strict mode drops the authentication on both
/// sides, so each accepts the other's adverts and one holds the VIP. Before lb-node read
/// `vrrp_strict` it sent authenticated adverts, keepalived dropped them ("invalid auth
/// type"), and both were master. Strict mode also turns accept mode off: lb1, master,
/// drops traffic to the VIP (a client's ping goes unanswered) while it answers on its own
/// address.
#[test]
fn vrrp_strict_sample_config_pairs_with_keepalived() {
    if !lab_available() || !lb_testkit::tool_available("keepalived") {
        return;
    }
    let start = t0();
    let lab = Lab::new("lbs", HOSTS).expect("lab");
    let nodes = ["lb1", "lb2"];
    let conf = |prio: u8, extra: &str| {
        format!(
            "global_defs {{\n    router_id LVS_DEVEL\n    vrrp_skip_check_adv_addr\n    vrrp_strict\n    vrrp_garp_interval 0\n    vrrp_gna_interval 0\n{extra}}}\n\
             vrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 51\n    priority {prio}\n    advert_int 1\n\
             authentication {{\n        auth_type PASS\n        auth_pass 1111\n    }}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
        )
    };
    let mut lb1 = Node::new(&lab, "lb1");
    std::fs::write(
        &lb1.conf,
        conf(150, &format!("    admin_socket {}\n", lb1.socket.display())),
    )
    .expect("write config");
    let ka_conf = lab.dir().join("ka-strict.conf");
    std::fs::write(&ka_conf, conf(100, "")).expect("write keepalived config");
    let vi1 = |n: &Node| n.status().and_then(|s| s.vrrp.first().map(|v| v.state));

    lb1.start(&lab);
    let master = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        vi1(&lb1) == Some(VrrpState::Master) && lab.holders(&nodes, vip()) == ["lb1"]
    });
    assert!(
        master.is_some(),
        "lb1 alone becomes master\n{:#?}\n{}",
        lb1.status(),
        lb1.logs()
    );
    step(start, "strict: lb1 (lb-node) master alone");

    let ka = Proc::spawn(
        lab.keepalived("lb2", &ka_conf, "ka1"),
        lab.dir(),
        "keepalived-1",
    )
    .expect("spawn keepalived");
    let backup = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        ka.log_tail(200).contains("(VI_1) Entering BACKUP STATE")
    });
    assert!(backup.is_some(), "keepalived starts\n{}", ka.log_tail(60));
    // keepalived would take over after its Master_Down_Interval (3.6 s) if it dropped
    // lb1's adverts; watch for twice that.
    let split = wait_until(Duration::from_secs(8), Duration::from_millis(100), || {
        lab.holders(&nodes, vip()) != ["lb1"] || vi1(&lb1) != Some(VrrpState::Master)
    });
    assert!(
        split.is_none(),
        "keepalived (strict) stays backup under lb1: holders {:?}, lb1 {:?}\n{}\n{}",
        lab.holders(&nodes, vip()),
        lb1.status(),
        lb1.logs(),
        ka.log_tail(60)
    );
    let ka_log = ka.log_tail(400);
    assert!(!ka_log.contains(" auth, expecting "), "{ka_log}");
    step(
        start,
        "strict: keepalived backup under lb1 for 8 s, VIP on lb1 only",
    );

    // Accept mode off: the master drops traffic to the VIP, not to its own address.
    let ping = |to: &str| {
        lab.exec("client", &["ping", "-c", "1", "-W", "1", to])
            .expect("ping")
            .status
            .success()
    };
    assert!(
        ping(&lab.addr("lb1").to_string()),
        "lb1 answers on its own address"
    );
    let set = lab
        .exec("lb1", &["nft", "list", "set", "inet", "lb_vrrp", "vips4"])
        .expect("nft");
    assert!(
        String::from_utf8_lossy(&set.stdout).contains(VIP),
        "the VIP is in lb1's Accept_Mode drop set: {}",
        String::from_utf8_lossy(&set.stdout)
    );
    assert!(
        !ping(VIP),
        "strict mode: lb1, master, drops traffic to the VIP\n{}",
        lb1.logs()
    );
    step(
        start,
        "strict: ping to the VIP dropped by lb1, to lb1's address answered",
    );

    // SIGTERM: lb1 sends priority 0 and keepalived takes over at once; lb1 back preempts
    // it (keepalived accepts its adverts).
    assert!(lb1.proc().sigterm());
    let st = lb1.proc().wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", lb1.logs());
    lb1.proc = None;
    let took = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb2"]
    });
    assert!(took.is_some(), "keepalived takes over\n{}", ka.log_tail(60));
    step(start, "strict: lb1 stopped, keepalived master");
    lb1.start(&lab);
    let back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders(&nodes, vip()) == ["lb1"] && vi1(&lb1) == Some(VrrpState::Master)
    });
    assert!(
        back.is_some(),
        "lb1 restarted preempts keepalived: holders {:?}\n{}\n{}",
        lab.holders(&nodes, vip()),
        lb1.logs(),
        ka.log_tail(60)
    );
    step(start, "strict: lb1 restarted preempts keepalived");
}

/// A reload that changes only `global_defs` `vrrp_mcast_group4` moves the running
/// instance's adverts to the new group (through a hand-over: it stays MASTER with its VIP).
/// Reloads compared only the instances' own settings before, and the adverts stayed on the
/// old group.
#[test]
fn reload_of_vrrp_mcast_group4_moves_the_adverts() {
    if !lab_available() || !lb_testkit::tool_available("tshark") {
        return;
    }
    let lab = Lab::new("lbg", &[("lb1", 11), ("lb2", 12)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let socket = lb1.socket.clone();
    let conf = |group: &str| {
        format!(
            "global_defs {{\n    admin_socket {}\n    vrrp_mcast_group4 {group}\n}}\n\
             vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 61\n    priority 100\n    advert_int 1\n\
             virtual_ipaddress {{\n        {VIP}\n    }}\n}}\n",
            socket.display()
        )
    };
    std::fs::write(&lb1.conf, conf("224.0.0.18")).expect("write config");
    lb1.start(&lab);
    let master = |lb1: &Node| {
        lb1.status()
            .is_some_and(|s| s.vrrp.first().is_some_and(|v| v.state == VrrpState::Master))
    };
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            master(&lb1)
        })
        .is_some(),
        "{}",
        lb1.logs()
    );
    // The adverts' destinations seen from lb2 over 2.5 s (2 or 3 adverts).
    let groups = || {
        let out = lab
            .exec(
                "lb2",
                &[
                    "tshark",
                    "-l",
                    "-i",
                    "eth0",
                    "-a",
                    "duration:3",
                    "-f",
                    "ip proto 112",
                    "-T",
                    "fields",
                    "-e",
                    "ip.dst",
                ],
            )
            .expect("tshark");
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        v.dedup();
        v
    };
    assert_eq!(groups(), ["224.0.0.18"]);
    std::fs::write(&lb1.conf, conf("224.0.0.119")).expect("write config");
    assert!(lb1.proc().sighup());
    let done = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        lb1.proc().stderr().contains("reload done")
    });
    assert!(done.is_some(), "reload done\n{}", lb1.logs());
    assert_eq!(groups(), ["224.0.0.119"], "{}", lb1.logs());
    assert!(
        master(&lb1) && lab.has_addr("lb1", vip()),
        "still MASTER with the VIP"
    );
}

/// keepalived's notify FIFO lines besides transitions: with `vrrp_notify_priority_changes`
/// a change of the effective priority (a track_file's value) writes
/// `INSTANCE "VI_1" MASTER_PRIORITY 130`; a master hearing a lower-priority master (a
/// keepalived on lb2 that no longer hears lb1: nftables drops lb1's adverts there) writes
/// `INSTANCE "VI_1" MASTER_RX_LOWER_PRI 140` and runs `notify_master_rx_lower_pri`.
#[test]
fn notify_fifo_priority_and_lower_priority_master_lines() {
    if !lab_available() || !lb_testkit::tool_available("keepalived") {
        return;
    }
    let lab = Lab::new("lbp", &[("lb1", 11), ("lb2", 12)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let dir = lab.dir().to_owned();
    let (fifo, log, tracked, touched) = (
        dir.join("vrrp.fifo"),
        dir.join("vrrp.log"),
        dir.join("tracked"),
        dir.join("rx_lower"),
    );
    let conf = format!(
        "global_defs {{\n    admin_socket {sock}\n    vrrp_notify_fifo {fifo}\n    vrrp_notify_fifo_script \"sh -c 'trap \\\"\\\" TERM; exec cat \\\"$0\\\" >> {log}'\"\n    vrrp_notify_priority_changes\n}}\n\
         track_file tf {{\n    file {tracked}\n    weight 1\n}}\n\
         vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 77\n    priority 150\n    advert_int 1\n    track_file {{\n        tf\n    }}\n\
         notify_master_rx_lower_pri \"/usr/bin/touch {touched}\"\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\
         vrrp_instance VI_2 {{\n    interface eth0\n    virtual_router_id 78\n    priority 150\n    advert_int 1\n    track_file {{\n        tf\n    }}\n\
         notify_priority_changes off\n    virtual_ipaddress {{\n        {VIP2}/24\n    }}\n}}\n",
        sock = lb1.socket.display(),
        fifo = fifo.display(),
        log = log.display(),
        tracked = tracked.display(),
        touched = touched.display(),
    );
    std::fs::write(&lb1.conf, conf).expect("conf");
    lb1.start(&lab);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let has = |line: &str| read().lines().any(|l| l == line);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || has(
            "INSTANCE \"VI_1\" MASTER 150"
        )
            && has("INSTANCE \"VI_2\" MASTER 150"))
        .is_some(),
        "{:?}\n{}",
        read(),
        lb1.logs()
    );
    std::fs::write(&tracked, "-20\n").expect("track file");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || has(
            "INSTANCE \"VI_1\" MASTER_PRIORITY 130"
        ))
        .is_some(),
        "{:?}\n{}",
        read(),
        lb1.logs()
    );
    // VI_2 tracks the same file with notify_priority_changes off: its priority changes
    // (lbctl status shows it) without a line.
    let vi2_priority = || {
        lb1.status().and_then(|s| {
            s.vrrp
                .iter()
                .find(|v| v.name == "VI_2")
                .map(|v| v.effective_priority)
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            vi2_priority() == Some(130)
        })
        .is_some(),
        "{:?}",
        lb1.status()
    );
    // A second change: once VI_1's line for it is written, VI_2's for the first would
    // have been too.
    std::fs::write(&tracked, "-10\n").expect("track file");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || has(
            "INSTANCE \"VI_1\" MASTER_PRIORITY 140"
        ))
        .is_some(),
        "{:?}",
        read()
    );
    assert!(
        !read().contains("\"VI_2\" MASTER_PRIORITY"),
        "no priority line for VI_2: {:?}",
        read()
    );
    step(
        t0(),
        "notify FIFO: MASTER_PRIORITY 130 after the track file's -20",
    );
    assert!(!touched.exists());

    // keepalived on lb2 stops hearing lb1 and becomes master at priority 100.
    let rules = lab.dir().join("deaf.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet lbtest {{\n chain in {{ type filter hook input priority 0; ip saddr {} ip protocol vrrp drop; }}\n}}\n",
            lab.addr("lb1")
        ),
    )
    .expect("rules");
    let out = lab
        .exec("lb2", &["nft", "-f", rules.to_str().expect("utf8")])
        .expect("nft");
    assert!(out.status.success(), "{out:?}");
    let ka_conf = lab.dir().join("ka-lower.conf");
    std::fs::write(
        &ka_conf,
        format!(
            "vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 77\n    priority 100\n    advert_int 1\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
        ),
    )
    .expect("keepalived conf");
    let ka = Proc::spawn(
        lab.keepalived("lb2", &ka_conf, "ka1"),
        lab.dir(),
        "keepalived-1",
    )
    .expect("spawn keepalived");
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(50), || has(
            "INSTANCE \"VI_1\" MASTER_RX_LOWER_PRI 140"
        )
            && touched.exists())
        .is_some(),
        "{:?}\n{}\n{}",
        read(),
        lb1.logs(),
        ka.log_tail(40)
    );
    step(
        t0(),
        "notify FIFO: MASTER_RX_LOWER_PRI, notify_master_rx_lower_pri ran",
    );
}

/// keepalived.conf's notifications around a reload and a sync group, side by side with
/// keepalived 2.2.7 running the same file (each in a lab of its own, so that they do not
/// hear each other):
/// - a reload that removes instances notifies a master without `notify_deleted` as FAULT
///   (`notify … FAULT`, the FIFO line, but not its notify_fault), one with `notify_deleted SCRIPT` as
///   DELETED (and runs the script), and nothing for one already in FAULT;
/// - `fifo_write_vrrp_states_on_reload` writes the kept states (lb-node also a master's,
///   which keepalived 2.2.7 leaves out);
/// - a sync group's scripts run once per change of the group's state, `GROUP NAME STATE 0`,
///   and once at the stop.
#[test]
fn reload_removal_and_group_notifications_match_keepalived() {
    if !lab_available() || !lb_testkit::tool_available("keepalived") {
        return;
    }
    let lab_lb = Lab::new("lbd", &[("lb1", 11)]).expect("lab");
    let lab_ka = Lab::new("lbk", &[("ka1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab_lb, "lb1");

    // Per side: its FIFO (made here, so that neither daemon removes it at its stop), a
    // reader that never sees the end (it holds the FIFO open for writing too: the daemons
    // may reopen theirs at a reload), a notify script's log, and a down interface.
    struct Side {
        fifo_log: PathBuf,
        notify_log: PathBuf,
        conf: PathBuf,
        _reader: Proc,
    }
    let side = |lab: &Lab, host: &str, conf: PathBuf| -> Side {
        let dir = lab.dir();
        let (fifo_log, reader) = fifo_reader(lab);
        let notify_log = dir.join("notify.log");
        let script = dir.join("n.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$*\" >> {}\n", notify_log.display()),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let out = lab
            .exec(
                host,
                &[
                    "ip", "link", "add", "dn0", "type", "veth", "peer", "name", "dn1",
                ],
            )
            .expect("ip");
        assert!(out.status.success(), "{out:?}");
        Side {
            fifo_log,
            notify_log,
            conf,
            _reader: reader,
        }
    };
    let conf_text = |lab: &Lab, admin: Option<&Path>, full: bool| -> String {
        let dir = lab.dir();
        let n = dir.join("n.sh");
        let n = n.display();
        let admin = admin
            .map(|a| format!("    admin_socket {}\n", a.display()))
            .unwrap_or_default();
        let instance = |name: &str, vrid: u8, prio: u8, octet: u8, extra: &str| {
            format!(
                "vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority {prio}\n    advert_int 1\n{extra}    notify {n}\n    virtual_ipaddress {{\n        198.18.0.{octet}/24\n    }}\n}}\n"
            )
        };
        let mut c = format!(
            "global_defs {{\n{admin}    script_user root\n    vrrp_notify_fifo {}\n    fifo_write_vrrp_states_on_reload\n}}\n\
             vrrp_sync_group VG {{\n    group {{\n        A\n        B\n    }}\n    notify {n}\n    notify_master \"{n} group-master\"\n    notify_stop \"{n} group-stop\"\n}}\n",
            dir.join("vrrp.fifo").display()
        );
        c += &instance("A", 51, 200, 100, "");
        c += &instance("B", 52, 100, 101, "");
        c += &instance(
            "F",
            56,
            100,
            105,
            "    track_interface {\n        dn0\n    }\n",
        );
        if full {
            c += &instance(
                "C",
                53,
                100,
                102,
                &format!("    notify_deleted \"{n} C-deleted\"\n"),
            );
            c += &instance(
                "D",
                54,
                100,
                103,
                &format!("    notify_fault \"{n} D-fault\"\n"),
            );
            c += &instance(
                "E",
                55,
                100,
                104,
                "    track_interface {\n        dn0\n    }\n",
            );
        }
        c
    };
    let lb = side(&lab_lb, "lb1", lb1.conf.clone());
    let ka = side(&lab_ka, "ka1", lab_ka.dir().join("keepalived.conf"));
    std::fs::write(&lb.conf, conf_text(&lab_lb, Some(&lb1.socket), true)).expect("conf");
    std::fs::write(&ka.conf, conf_text(&lab_ka, None, true)).expect("conf");
    lb1.start(&lab_lb);
    let mut kad = Proc::spawn(
        lab_ka.keepalived("ka1", &ka.conf, "ka"),
        lab_ka.dir(),
        "keepalived",
    )
    .expect("spawn keepalived");
    let settled = [
        "INSTANCE \"A\" MASTER 200",
        "INSTANCE \"B\" MASTER 100",
        "INSTANCE \"C\" MASTER 100",
        "INSTANCE \"D\" MASTER 100",
        "INSTANCE \"E\" FAULT 100",
        "INSTANCE \"F\" FAULT 100",
        "GROUP \"VG\" MASTER 0",
    ];
    for s in [&lb, &ka] {
        assert!(
            wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
                let l = file_lines(&s.fifo_log);
                settled.iter().all(|w| l.iter().any(|x| x == w))
            })
            .is_some(),
            "{:?}\n{}\n{}",
            file_lines(&s.fifo_log),
            lb1.logs(),
            kad.log_tail(40)
        );
    }
    // Anything late (a second group line, a script still starting).
    std::thread::sleep(Duration::from_millis(1500));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let group_lines = |v: &[String]| -> Vec<String> {
        sorted(
            v.iter()
                .filter(|l| l.starts_with("GROUP") || l.starts_with("group"))
                .cloned()
                .collect(),
        )
    };
    // The group: BACKUP then MASTER, each once; its scripts once each.
    let (lb_fifo0, ka_fifo0) = (file_lines(&lb.fifo_log), file_lines(&ka.fifo_log));
    let (lb_notify0, ka_notify0) = (file_lines(&lb.notify_log), file_lines(&ka.notify_log));
    assert_eq!(
        group_lines(&ka_fifo0),
        ["GROUP \"VG\" BACKUP 0", "GROUP \"VG\" MASTER 0"],
        "keepalived's own lines changed: {ka_fifo0:?}"
    );
    assert_eq!(
        group_lines(&lb_fifo0),
        group_lines(&ka_fifo0),
        "{lb_fifo0:?}"
    );
    assert_eq!(
        group_lines(&ka_notify0),
        ["GROUP VG BACKUP 0", "GROUP VG MASTER 0", "group-master"],
        "keepalived's own runs changed: {ka_notify0:?}"
    );
    assert_eq!(
        group_lines(&lb_notify0),
        group_lines(&ka_notify0),
        "{lb_notify0:?}"
    );
    step(t0(), "sync group notified once per state, as keepalived");

    // The reload: C, D, E removed.
    std::fs::write(&lb.conf, conf_text(&lab_lb, Some(&lb1.socket), false)).expect("conf");
    std::fs::write(&ka.conf, conf_text(&lab_ka, None, false)).expect("conf");
    assert!(lb1.proc().sighup());
    assert!(kad.sighup());
    let after = |s: &Side, fifo0: usize, notify0: usize| {
        (
            sorted(file_lines(&s.fifo_log)[fifo0..].to_vec()),
            sorted(file_lines(&s.notify_log)[notify0..].to_vec()),
        )
    };
    for s in [&lb, &ka] {
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                let l = file_lines(&s.fifo_log);
                l.iter().any(|x| x == "INSTANCE \"C\" DELETED 100")
                    && l.iter().any(|x| x == "INSTANCE \"D\" FAULT 100")
            })
            .is_some(),
            "{:?}\n{}\n{}",
            file_lines(&s.fifo_log),
            lb1.logs(),
            kad.log_tail(40)
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (lb_fifo1, lb_notify1) = after(&lb, lb_fifo0.len(), lb_notify0.len());
    let (ka_fifo1, ka_notify1) = after(&ka, ka_fifo0.len(), ka_notify0.len());
    assert_eq!(
        lb_fifo1,
        [
            "GROUP \"VG\" MASTER 0",
            "INSTANCE \"A\" MASTER 200",
            "INSTANCE \"B\" MASTER 100",
            "INSTANCE \"C\" DELETED 100",
            "INSTANCE \"D\" FAULT 100",
            "INSTANCE \"F\" FAULT 100",
        ],
        "{}",
        lb1.logs()
    );
    // keepalived 2.2.7 writes no line for an instance that stays MASTER.
    let ka_expected: Vec<String> = lb_fifo1
        .iter()
        .filter(|l| !l.ends_with(" MASTER 200") && !l.starts_with("INSTANCE \"B\""))
        .cloned()
        .collect();
    assert_eq!(ka_fifo1, ka_expected, "{}", kad.log_tail(40));
    assert_eq!(
        lb_notify1,
        [
            "C-deleted",
            "INSTANCE C DELETED 100",
            "INSTANCE D FAULT 100"
        ],
        "{}",
        lb1.logs()
    );
    assert_eq!(ka_notify1, lb_notify1, "{}", kad.log_tail(40));
    // The removed masters' VIPs are gone (C's and D's); the kept ones stay.
    for (lab, host) in [(&lab_lb, "lb1"), (&lab_ka, "ka1")] {
        for (octet, held) in [(100, true), (101, true), (102, false), (103, false)] {
            let a: IpAddr = format!("198.18.0.{octet}").parse().expect("addr");
            assert_eq!(lab.has_addr(host, a), held, "{host} {a}");
        }
    }
    step(t0(), "reload: removed instances notified as keepalived");

    // Two more reloads with fifo_write_vrrp_states_on_reload: one of the same file (keepalived
    // writes the states at every reload), one that changes A's VIP (lb-node hands the group
    // over to a new speaker, whose members resume their states). Each writes the states it
    // kept; keepalived leaves out the instances that stay MASTER.
    let kept = [
        "GROUP \"VG\" MASTER 0",
        "INSTANCE \"A\" MASTER 200",
        "INSTANCE \"B\" MASTER 100",
        "INSTANCE \"F\" FAULT 100",
    ];
    for (what, lb_text, ka_text) in [
        (
            "the same file",
            conf_text(&lab_lb, Some(&lb1.socket), false),
            conf_text(&lab_ka, None, false),
        ),
        (
            "A's VIP changed",
            conf_text(&lab_lb, Some(&lb1.socket), false)
                .replace("198.18.0.100/24", "198.18.0.110/24"),
            conf_text(&lab_ka, None, false).replace("198.18.0.100/24", "198.18.0.110/24"),
        ),
    ] {
        let (lf, ln) = (
            file_lines(&lb.fifo_log).len(),
            file_lines(&lb.notify_log).len(),
        );
        let (kf, kn) = (
            file_lines(&ka.fifo_log).len(),
            file_lines(&ka.notify_log).len(),
        );
        std::fs::write(&lb.conf, lb_text).expect("conf");
        std::fs::write(&ka.conf, ka_text).expect("conf");
        assert!(lb1.proc().sighup());
        assert!(kad.sighup());
        for s in [(&lb, lf), (&ka, kf)] {
            assert!(
                wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                    file_lines(&s.0.fifo_log)[s.1..]
                        .iter()
                        .any(|x| x == "INSTANCE \"F\" FAULT 100")
                })
                .is_some(),
                "{what}: {:?}\n{}\n{}",
                file_lines(&s.0.fifo_log),
                lb1.logs(),
                kad.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
        let (lb_fifo, lb_notify) = after(&lb, lf, ln);
        let (ka_fifo, ka_notify) = after(&ka, kf, kn);
        assert_eq!(lb_fifo, kept, "{what}\n{}", lb1.logs());
        let ka_expected: Vec<&str> = kept
            .iter()
            .copied()
            .filter(|l| !l.starts_with("INSTANCE") || !l.contains(" MASTER "))
            .collect();
        assert_eq!(ka_fifo, ka_expected, "{what}\n{}", kad.log_tail(40));
        // No script runs: no state changed.
        assert_eq!(lb_notify, Vec::<String>::new(), "{what}");
        assert_eq!(ka_notify, lb_notify, "{what}");
    }
    step(t0(), "reloads: kept states written as keepalived");

    // The stop: every instance STOP, the group's STOP and its scripts once.
    let (lb_fifo1n, lb_notify1n) = (
        file_lines(&lb.fifo_log).len(),
        file_lines(&lb.notify_log).len(),
    );
    let (ka_fifo1n, ka_notify1n) = (
        file_lines(&ka.fifo_log).len(),
        file_lines(&ka.notify_log).len(),
    );
    assert!(lb1.proc().sigterm());
    assert!(kad.sigterm());
    assert!(lb1.proc().wait_exit(Duration::from_secs(10)).is_some());
    assert!(kad.wait_exit(Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(1000));
    let (lb_fifo2, lb_notify2) = after(&lb, lb_fifo1n, lb_notify1n);
    let (ka_fifo2, ka_notify2) = after(&ka, ka_fifo1n, ka_notify1n);
    assert_eq!(
        lb_fifo2,
        [
            "GROUP \"VG\" STOP 0",
            "INSTANCE \"A\" STOP 200",
            "INSTANCE \"B\" STOP 100",
            "INSTANCE \"F\" STOP 100",
        ],
    );
    assert_eq!(ka_fifo2, lb_fifo2);
    assert_eq!(
        lb_notify2,
        [
            "GROUP VG STOP 0",
            "INSTANCE A STOP 200",
            "INSTANCE B STOP 100",
            "INSTANCE F STOP 100",
            "group-stop",
        ],
    );
    assert_eq!(ka_notify2, lb_notify2);
}

/// A reload that moves an address from `static_ipaddress` into the VIPs of an instance that
/// is Master, and a route from `static_routes` into its `virtual_routes`, keeps them
/// throughout (`ip monitor` sees no deletion): the statics' diff deleted them after the
/// hand-over, and the speaker put them back a moment later.
#[test]
fn an_address_moved_from_static_to_a_masters_vip_stays() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbm", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let socket = lb1.socket.clone();
    let conf = |moved: bool| {
        let route = "198.18.5.0/24 via 198.18.0.1 dev eth0";
        let (statics, vips, routes) = if moved {
            (
                String::new(),
                "        198.18.0.100/24\n        198.18.0.50/24\n",
                format!("    virtual_routes {{\n        {route}\n    }}\n"),
            )
        } else {
            (
                format!("static_ipaddress {{\n    198.18.0.50/24 dev eth0\n}}\nstatic_routes {{\n    {route}\n}}\n"),
                "        198.18.0.100/24\n",
                String::new(),
            )
        };
        format!(
            "global_defs {{\n    admin_socket {}\n}}\n{statics}vrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 93\n    priority 200\n    advert_int 1\n    virtual_ipaddress {{\n{vips}    }}\n{routes}}}\n",
            socket.display()
        )
    };
    std::fs::write(&lb1.conf, conf(false)).expect("conf");
    lb1.start(&lab);
    let moved: IpAddr = "198.18.0.50".parse().unwrap();
    let master = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status()
            .is_some_and(|s| s.vrrp.iter().all(|v| v.state == VrrpState::Master))
            && lab.has_addr("lb1", moved)
    });
    assert!(master.is_some(), "{}", lb1.logs());
    let mut cmd = lab.command("lb1", "ip");
    cmd.args(["-o", "monitor", "address", "route"]);
    let mut monitor = Proc::spawn(cmd, lab.dir(), "monitor").expect("ip monitor");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&lb1.conf, conf(true)).expect("conf");
    assert!(lb1.proc().sighup());
    let reloaded = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.proc()
            .stderr()
            .lines()
            .any(|l| l.contains("reload") && (l.contains("done") || l.contains("applied")))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let seen = monitor.stdout();
    monitor.kill9();
    assert!(reloaded.is_some(), "{}", lb1.logs());
    assert!(
        !seen.lines().any(|l| l.starts_with("Deleted")
            && (l.contains("198.18.0.50/") || l.contains("198.18.5.0/24"))),
        "a moved address or route was deleted:\n{seen}\n{}",
        lb1.logs()
    );
    assert!(lab.has_addr("lb1", moved));
    let routes = lab.exec("lb1", &["ip", "route"]).expect("ip route");
    assert!(
        String::from_utf8_lossy(&routes.stdout).contains("198.18.5.0/24 via 198.18.0.1"),
        "{routes:?}"
    );
    assert!(lb1.proc().sigterm());
    let st = lb1.proc().wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    // Now a VIP: removed with the instance at the stop.
    assert!(!lab.has_addr("lb1", moved));
}

/// keepalived's `virtual_routes`, `virtual_rules`, `static_routes`, `static_rules` and
/// `static_ipaddress`, side by side with keepalived 2.2.7 running the same file (each in a
/// lab of its own): as MASTER both install the same routes (`ip route show table all`:
/// gateway, source VIP, table, metric, blackhole / unreachable, scope, protocol), the same
/// rules (`ip rule`: selectors, actions, keepalived's numbering of a rule without a
/// preference, protocol) and the static address; a reload that changes them leaves both
/// with the same new set; the stop deletes them.
#[test]
fn virtual_routes_match_keepalived() {
    if !lab_available() || !lb_testkit::tool_available("keepalived") {
        return;
    }
    let lab_lb = Lab::new("lbr", &[("lb1", 11)]).expect("lab");
    let lab_ka = Lab::new("lbq", &[("ka1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab_lb, "lb1");
    let ka_conf = lab_ka.dir().join("keepalived.conf");
    let conf = |admin: Option<&Path>,
                routes: &[&str],
                static_route: &str,
                rules: &[&str]|
     -> String {
        let admin = admin
            .map(|a| format!("global_defs {{\n    admin_socket {}\n}}\n", a.display()))
            .unwrap_or_default();
        format!(
            "{admin}static_ipaddress {{\n    198.18.0.77/24 dev eth0\n}}\nstatic_routes {{\n    {static_route}\n}}\nstatic_rules {{\n    from 198.18.0.77 table 101 priority 110\n}}\nvrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 91\n    priority 255\n    advert_int 1\n    virtual_ipaddress {{\n        198.18.0.100/24\n    }}\n    virtual_routes {{\n{}    }}\n    virtual_rules {{\n{}    }}\n}}\n",
            routes
                .iter()
                .map(|r| format!("        {r}\n"))
                .collect::<String>(),
            rules
                .iter()
                .map(|r| format!("        {r}\n"))
                .collect::<String>()
        )
    };
    let first = [
        "src 198.18.0.100 198.18.1.0/24 via 198.18.0.1 dev eth0",
        "198.18.2.0/24 via 198.18.0.1 table 100 metric 7",
        "blackhole 198.18.3.0/24",
        "unreachable fd00:18:3::/64",
        "198.18.4.0/24 dev eth0 scope link protocol static",
    ];
    let second = [
        "src 198.18.0.100 198.18.1.0/24 via 198.18.0.2 dev eth0",
        "198.18.2.0/24 via 198.18.0.1 table 100 metric 9",
        "198.18.5.0/24 via 198.18.0.1",
        "unreachable fd00:18:3::/64",
    ];
    let (static1, static2) = (
        "198.18.7.0/24 via 198.18.0.1 dev eth0",
        "198.18.8.0/24 via 198.18.0.1 dev eth0",
    );
    let first_rules = [
        "from 198.18.0.100 table 100 priority 100",
        "from fd00:18::/64 unreachable priority 101",
        "not to 198.18.6.0/24 fwmark 0x10/0xff iif eth0 lookup main priority 102",
        "from all table 100",
    ];
    let second_rules = [
        "from 198.18.0.100 table 100 priority 105",
        "not to 198.18.6.0/24 fwmark 0x10/0xff iif eth0 lookup main priority 102",
        "from all table 100",
    ];
    std::fs::write(
        &lb1.conf,
        conf(Some(&lb1.socket), &first, static1, &first_rules),
    )
    .expect("conf");
    std::fs::write(&ka_conf, conf(None, &first, static1, &first_rules)).expect("conf");
    // The routes of the test's prefixes, as `ip route` shows them, sorted.
    let routes = |lab: &Lab, host: &str| -> Vec<String> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let o = lab
                .exec(host, &["ip", fam, "route", "show", "table", "all"])
                .expect("ip route");
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| {
                        [
                            "198.18.1.",
                            "198.18.2.",
                            "198.18.3.",
                            "198.18.4.",
                            "198.18.5.",
                            "198.18.7.",
                            "198.18.8.",
                            "fd00:18:3:",
                        ]
                        .iter()
                        .any(|p| l.contains(p))
                    })
                    .map(|l| l.trim().to_owned()),
            );
            // The rules, but the kernel's own three.
            let o = lab
                .exec(host, &["ip", fam, "rule", "show"])
                .expect("ip rule");
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !["0:", "32766:", "32767:"].iter().any(|p| l.starts_with(p)))
                    .map(|l| format!("rule {fam} {}", l.trim())),
            );
        }
        out.sort();
        out
    };
    // The host's own route to one of the prefixes (another gateway, protocol boot): it
    // stays, and the daemons' route is added beside it (keepalived adds without
    // NLM_F_EXCL).
    let own = "198.18.1.0/24 via 198.18.0.3 dev eth0";
    // And one equal to a virtual route, there before the daemons: both take it for theirs
    // (keepalived counts the kernel's EEXIST as added) and delete it at the reload that
    // drops it from the file.
    let before_us = "blackhole 198.18.3.0/24 proto keepalived";
    for (lab, host) in [(&lab_lb, "lb1"), (&lab_ka, "ka1")] {
        for r in [own, before_us] {
            let mut args = vec!["ip", "route", "add"];
            args.extend(r.split(' '));
            let out = lab.exec(host, &args).expect("ip route add");
            assert!(out.status.success(), "{out:?}");
        }
    }
    lb1.start(&lab_lb);
    let mut kad = Proc::spawn(
        lab_ka.keepalived("ka1", &ka_conf, "ka"),
        lab_ka.dir(),
        "keepalived",
    )
    .expect("spawn keepalived");
    let settle = |want: usize, lb1: &Node, kad: &Proc| {
        assert!(
            wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                routes(&lab_lb, "lb1").len() == want && routes(&lab_ka, "ka1").len() == want
            })
            .is_some(),
            "lb-node: {:?}\nkeepalived: {:?}\n{}\n{}",
            routes(&lab_lb, "lb1"),
            routes(&lab_ka, "ka1"),
            lb1.logs(),
            kad.log_tail(30)
        );
    };
    settle(first.len() + 2 + first_rules.len() + 1, &lb1, &kad);
    let static_addr: IpAddr = "198.18.0.77".parse().expect("addr");
    assert!(lab_lb.has_addr("lb1", static_addr) && lab_ka.has_addr("ka1", static_addr));
    let ka_routes = routes(&lab_ka, "ka1");
    assert!(
        ka_routes.iter().any(|r| r.contains("proto keepalived")),
        "{ka_routes:?}"
    );
    assert_eq!(routes(&lab_lb, "lb1"), ka_routes);
    step(t0(), "virtual routes as MASTER: the same as keepalived's");

    std::fs::write(
        &lb1.conf,
        conf(Some(&lb1.socket), &second, static2, &second_rules),
    )
    .expect("conf");
    std::fs::write(&ka_conf, conf(None, &second, static2, &second_rules)).expect("conf");
    assert!(lb1.proc().sighup());
    assert!(kad.sighup());
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            let (l, k) = (routes(&lab_lb, "lb1"), routes(&lab_ka, "ka1"));
            l.len() == second.len() + 2 + second_rules.len() + 1
                && l == k
                && l.iter().any(|r| r.contains("via 198.18.0.2"))
                && l.iter().any(|r| r.starts_with("rule -4 105:"))
                && l.iter().any(|r| r.contains("metric 9"))
                && l.iter().any(|r| r.starts_with("198.18.8.0/24"))
        })
        .is_some(),
        "lb-node: {:?}\nkeepalived: {:?}\n{}\n{}",
        routes(&lab_lb, "lb1"),
        routes(&lab_ka, "ka1"),
        lb1.logs(),
        kad.log_tail(30)
    );
    step(
        t0(),
        "virtual routes after a reload: the same as keepalived's",
    );

    // Tracking: someone deletes a virtual route with a `dev`, a virtual rule, a static
    // route with a `dev` and the static address; both daemons put them back (keepalived by
    // leaving MASTER and taking it again at once: the address owner). Then a route
    // without `dev` (not tracked): it stays deleted in both.
    let before = (routes(&lab_lb, "lb1"), routes(&lab_ka, "ka1"));
    assert_eq!(before.0, before.1);
    // keepalived, leaving MASTER at the first deletion, may have deleted the next entry
    // itself: "No such …" is fine there. lb-node puts back only what was deleted.
    let del = |lab: &Lab, host: &str, args: &str| {
        let out = lab
            .exec(host, &args.split(' ').collect::<Vec<_>>())
            .expect("ip");
        let gone = host == "ka1" && String::from_utf8_lossy(&out.stderr).contains("No such");
        assert!(out.status.success() || gone, "{host}: {args}: {out:?}");
    };
    for (lab, host) in [(&lab_lb, "lb1"), (&lab_ka, "ka1")] {
        del(
            lab,
            host,
            "ip route del 198.18.1.0/24 via 198.18.0.2 dev eth0 proto keepalived",
        );
        del(lab, host, "ip rule del pref 105");
        del(
            lab,
            host,
            "ip route del 198.18.8.0/24 via 198.18.0.1 dev eth0 proto keepalived",
        );
        del(lab, host, "ip addr del 198.18.0.77/24 dev eth0");
    }
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            routes(&lab_lb, "lb1") == before.0
                && routes(&lab_ka, "ka1") == before.1
                && lab_lb.has_addr("lb1", static_addr)
                && lab_ka.has_addr("ka1", static_addr)
        })
        .is_some(),
        "lb-node: {:?}\nkeepalived: {:?}\nwanted: {:?}\n{}\n{}",
        routes(&lab_lb, "lb1"),
        routes(&lab_ka, "ka1"),
        before.0,
        lb1.logs(),
        kad.log_tail(30)
    );
    for (lab, host) in [(&lab_lb, "lb1"), (&lab_ka, "ka1")] {
        del(
            lab,
            host,
            "ip route del 198.18.5.0/24 via 198.18.0.1 proto keepalived",
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    let untracked: Vec<String> = before
        .0
        .iter()
        .filter(|r| !r.starts_with("198.18.5.0/24"))
        .cloned()
        .collect();
    assert_eq!(routes(&lab_lb, "lb1"), untracked, "{}", lb1.logs());
    assert_eq!(routes(&lab_ka, "ka1"), untracked, "{}", kad.log_tail(30));
    step(
        t0(),
        "tracked routes, rules and static entries put back as keepalived",
    );

    assert!(lb1.proc().sigterm());
    assert!(kad.sigterm());
    assert!(lb1.proc().wait_exit(Duration::from_secs(10)).is_some());
    assert!(kad.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(routes(&lab_lb, "lb1"), [own]);
    assert_eq!(routes(&lab_ka, "ka1"), [own]);
    // The kernel's own rules are untouched.
    for (lab, host) in [(&lab_lb, "lb1"), (&lab_ka, "ka1")] {
        let o = lab.exec(host, &["ip", "rule", "show"]).expect("ip rule");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        for pref in ["0:", "32766:", "32767:"] {
            assert!(text.lines().any(|l| l.starts_with(pref)), "{host}: {text}");
        }
    }
    assert!(!lab_lb.has_addr("lb1", static_addr) && !lab_ka.has_addr("ka1", static_addr));
}

/// A reload whose VRRP instance cannot start (its interface does not exist) ends
/// "partial" in `lbctl status`, naming the instance and why; the other instance runs on.
/// It said "done" while the instance had stopped.
#[test]
fn a_reload_whose_vrrp_instance_cannot_start_is_partial() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbvp", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let socket = lb1.socket.clone();
    let conf = |second_if: &str| {
        let inst = |name: &str, vrid: u8, interface: &str| {
            format!("vrrp_instance {name} {{\n    state MASTER\n    interface {interface}\n    virtual_router_id {vrid}\n    priority 100\n    advert_int 1\n    virtual_ipaddress {{\n        198.18.0.{vrid}/24\n    }}\n}}\n")
        };
        format!(
            "global_defs {{\n    admin_socket {}\n}}\n",
            socket.display()
        ) + &inst("A", 61, "eth0")
            + &inst("B", 62, second_if)
    };
    std::fs::write(&lb1.conf, conf("eth0")).expect("conf");
    lb1.start(&lab);
    let masters = |n: usize| {
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            lb1.status().is_some_and(|s| {
                s.vrrp
                    .iter()
                    .filter(|v| v.state == VrrpState::Master)
                    .count()
                    == n
            })
        })
        .is_some()
    };
    assert!(masters(2), "{}", lb1.logs());
    std::fs::write(&lb1.conf, conf("nosuch0")).expect("conf");
    assert!(lb1.proc().sighup());
    let reloaded = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status()
            .and_then(|s| s.node.last_reload)
            .is_some_and(|r| r.result != "done" || !r.errors.is_empty())
    });
    let status = lb1.status().expect("status");
    let last = status.node.last_reload.clone().expect("last reload");
    assert!(reloaded.is_some(), "{last:?}\n{}", lb1.logs());
    assert_eq!(last.result, "partial", "{last:?}");
    assert!(
        last.errors
            .iter()
            .any(|e| e.starts_with("vrrp_instance B: ") && e.contains("nosuch0")),
        "{last:?}"
    );
    let a = status.vrrp.iter().find(|v| v.name == "A").expect("A");
    assert_eq!(a.state, VrrpState::Master, "{status:?}");

    // A moves into a sync group with C, which cannot start: the group's failure is one
    // line (it was two, the check before A's hand-over and the start, each naming it).
    let grouped = conf("eth0")
        + "vrrp_instance C {\n    state MASTER\n    interface nosuch0\n    virtual_router_id 63\n    priority 100\n    advert_int 1\n    virtual_ipaddress {\n        198.18.0.63/24\n    }\n}\nvrrp_sync_group G {\n    group {\n        A\n        C\n    }\n}\n";
    std::fs::write(&lb1.conf, grouped).expect("conf");
    assert!(lb1.proc().sighup());
    let reloaded = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lb1.status()
            .and_then(|s| s.node.last_reload)
            .is_some_and(|r| r.errors.iter().any(|e| e.contains("vrrp_instance A, C")))
    });
    let last = lb1
        .status()
        .and_then(|s| s.node.last_reload)
        .expect("last reload");
    assert!(reloaded.is_some(), "{last:?}\n{}", lb1.logs());
    assert_eq!(last.result, "partial", "{last:?}");
    assert_eq!(
        last.errors
            .iter()
            .filter(|e| e.contains("vrrp_instance A, C"))
            .count(),
        1,
        "{last:?}"
    );
}

/// A `vrrp_script` tracked by two instances that are not in a sync group (each has a
/// speaker of its own) runs once per `interval` for both, as keepalived runs it, and
/// both see its result together: a failing run takes the weight off both priorities.
/// It ran once per instance, each copy with its own rise/fall count.
#[test]
fn a_script_tracked_by_two_instances_runs_once_per_interval() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbsc", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let runs = lab.dir().join("runs");
    let fail = lab.dir().join("fail");
    let script = lab.dir().join("chk.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho x >> {}\n[ ! -e {} ]\n",
            runs.display(),
            fail.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let inst = |name: &str, vrid: u8| {
        format!("vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority 100\n    advert_int 1\n    track_script {{\n        chk\n    }}\n    virtual_ipaddress {{\n        198.18.0.{vrid}/24\n    }}\n}}\n")
    };
    std::fs::write(
        &lb1.conf,
        format!(
            "global_defs {{\n    admin_socket {}\n    script_user root\n}}\n\
             vrrp_script chk {{\n    script {}\n    interval 0.25\n    weight -10\n}}\n",
            lb1.socket.display(),
            script.display()
        ) + &inst("A", 61)
            + &inst("B", 62),
    )
    .expect("conf");
    lb1.start(&lab);
    let prios = |want: u8| {
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            lb1.status().is_some_and(|s| {
                s.vrrp.len() == 2 && s.vrrp.iter().all(|v| v.effective_priority == want)
            })
        })
        .is_some()
    };
    assert!(prios(100), "{}", lb1.logs());
    let count = || {
        std::fs::read_to_string(&runs)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let before = count();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let ran = count() - before;
    // One run every 250 ms at most: about 10 in 2.5 s (20 with a run per instance). A
    // loaded machine runs fewer, never more.
    let most = usize::try_from(started.elapsed().as_millis() / 250).unwrap_or(usize::MAX) + 2;
    assert!(
        (1..=most).contains(&ran),
        "{ran} runs in {:?} (one runner: {most} at most)",
        started.elapsed()
    );
    std::fs::write(&fail, "").expect("fail");
    assert!(prios(90), "both instances lose the weight: {}", lb1.logs());
}

/// keepalived's `vrrp_script … init_fail`, side by side with keepalived 2.2.7 running the
/// same file. lb-node follows keepalived's documentation: an instance tracking (weight 0)
/// a script with `init_fail` starts in FAULT and leaves it once the script has succeeded
/// `rise` times;
/// one tracking a script without it waits in INIT for the first result, as keepalived's
/// (the same FIFO lines, in order). keepalived 2.2.7 itself loses `init_fail` when an
/// instance tracks the script (`alloc_track_script` resets the state the keyword set):
/// its A starts as B does.
#[test]
fn vrrp_script_init_fail_starts_in_fault() {
    if !lab_available() || !lb_testkit::tool_available("keepalived") {
        return;
    }
    let lab_lb = Lab::new("lbi", &[("lb1", 11)]).expect("lab");
    let lab_ka = Lab::new("lbj", &[("ka1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab_lb, "lb1");
    let ka_conf = lab_ka.dir().join("keepalived.conf");
    let conf = |lab: &Lab, admin: Option<&Path>| -> String {
        let admin = admin
            .map(|a| format!("    admin_socket {}\n", a.display()))
            .unwrap_or_default();
        let inst = |name: &str, vrid: u8, script: &str| {
            format!("vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority 100\n    advert_int 1\n    track_script {{\n        {script}\n    }}\n    virtual_ipaddress {{\n        198.18.0.{vrid}/24\n    }}\n}}\n")
        };
        format!(
            "global_defs {{\n{admin}    script_user root\n    vrrp_notify_fifo {}\n}}\n\
             vrrp_script failing_first {{\n    script /bin/true\n    interval 1\n    rise 2\n    init_fail\n}}\n\
             vrrp_script plain {{\n    script /bin/true\n    interval 1\n    rise 2\n}}\n",
            lab.dir().join("vrrp.fifo").display()
        ) + &inst("A", 61, "failing_first")
            + &inst("B", 62, "plain")
    };
    let (lb_log, _lb_reader) = fifo_reader(&lab_lb);
    let (ka_log, _ka_reader) = fifo_reader(&lab_ka);
    std::fs::write(&lb1.conf, conf(&lab_lb, Some(&lb1.socket))).expect("conf");
    std::fs::write(&ka_conf, conf(&lab_ka, None)).expect("conf");
    lb1.start(&lab_lb);
    // lb-node: A's first state is FAULT (it needs two successes, a second apart), B's
    // is not.
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.is_none() && Instant::now() < deadline {
        first = lb1.status().filter(|s| {
            s.vrrp.len() == 2
                && s.vrrp
                    .iter()
                    .find(|v| v.name == "A")
                    .is_some_and(|v| v.state != VrrpState::Init)
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = first.expect("lbctl status");
    let state = |n: &str| {
        first
            .vrrp
            .iter()
            .find(|v| v.name == n)
            .map(|v| v.state)
            .expect("instance")
    };
    assert_eq!(state("A"), VrrpState::Fault, "{first:?}");
    assert_ne!(state("B"), VrrpState::Fault, "{first:?}");
    let kad = Proc::spawn(
        lab_ka.keepalived("ka1", &ka_conf, "ka"),
        lab_ka.dir(),
        "keepalived",
    )
    .expect("spawn keepalived");
    let of = |v: &[String], name: &str| -> Vec<String> {
        let prefix = format!("INSTANCE \"{name}\" ");
        v.iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    };
    for log in [&lb_log, &ka_log] {
        assert!(
            wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
                let l = file_lines(log);
                of(&l, "A").last().is_some_and(|x| x.contains(" MASTER "))
                    && of(&l, "B").last().is_some_and(|x| x.contains(" MASTER "))
            })
            .is_some(),
            "{:?}\n{}\n{}",
            file_lines(log),
            lb1.logs(),
            kad.log_tail(40)
        );
    }
    let (l, k) = (file_lines(&lb_log), file_lines(&ka_log));
    assert_eq!(
        of(&k, "A"),
        ["INSTANCE \"A\" BACKUP 100", "INSTANCE \"A\" MASTER 100"],
        "keepalived's own lines changed: {k:?}"
    );
    assert_eq!(
        of(&k, "B"),
        ["INSTANCE \"B\" BACKUP 100", "INSTANCE \"B\" MASTER 100"],
        "keepalived's own lines changed: {k:?}"
    );
    // A: FAULT at the start, then as keepalived (which ignored init_fail).
    assert_eq!(
        of(&l, "A"),
        [
            "INSTANCE \"A\" FAULT 100",
            "INSTANCE \"A\" BACKUP 100",
            "INSTANCE \"A\" MASTER 100"
        ],
        "{}",
        lb1.logs()
    );
    assert_eq!(of(&l, "B"), of(&k, "B"), "{}", lb1.logs());
}

/// keepalived's `promote_secondaries`: lb-node sets the interface's
/// `net.ipv4.conf.eth0.promote_secondaries` while it runs and puts it back at its stop.
#[test]
fn promote_secondaries_is_set_while_lb_node_runs() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbs", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let read = || {
        let out = lab
            .exec(
                "lb1",
                &["cat", "/proc/sys/net/ipv4/conf/eth0/promote_secondaries"],
            )
            .expect("cat");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Off to begin with (a new namespace may inherit the host's setting).
    let out = lab
        .exec(
            "lb1",
            &[
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries",
            ],
        )
        .expect("sh");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(), "0");
    std::fs::write(
        &lb1.conf,
        format!(
            "global_defs {{\n    admin_socket {}\n}}\nvrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 93\n    priority 255\n    advert_int 1\n    promote_secondaries\n    virtual_ipaddress {{\n        198.18.0.93/24\n    }}\n}}\n",
            lb1.socket.display()
        ),
    )
    .expect("conf");
    lb1.start(&lab);
    let vip: IpAddr = "198.18.0.93".parse().expect("addr");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            read() == "1" && lab.has_addr("lb1", vip)
        })
        .is_some(),
        "{}",
        lb1.logs()
    );
    assert!(lb1.proc().sigterm());
    assert!(lb1.proc().wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(read(), "0", "put back at the stop\n{}", lb1.logs());
}

/// keepalived's `garp_group`: the interfaces of a group share one spacing (the group's
/// `garp_interval` counts over eth0 and g1 together), and a family the group gives no
/// interval is not spaced there even with a global one (`vrrp_gna_interval`). The same
/// file under lb-node and under keepalived, each in a lab of its own with a second
/// interface (a veth pair), captured on both interfaces from the daemon's start. The
/// IPv6 `virtual_ipaddress_excluded` of this IPv4 instance are announced too (lb-node sent
/// their NAs through its ARP socket, and so never, until this test).
#[test]
fn garp_group_spaces_like_keepalived() {
    if !lab_available()
        || !lb_testkit::tool_available("keepalived")
        || !lb_testkit::tool_available("tshark")
    {
        return;
    }
    let lab_lb = Lab::new("lbw", &[("lb1", 11)]).expect("lab");
    let lab_ka = Lab::new("lbx", &[("ka1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab_lb, "lb1");
    let ka_conf = lab_ka.dir().join("keepalived.conf");
    for (lab, host) in [(&lab_lb, "lb1"), (&lab_ka, "ka1")] {
        // Removed with the host's namespace.
        for args in [
            &[
                "ip", "link", "add", "g1", "type", "veth", "peer", "name", "g1p",
            ][..],
            &["ip", "link", "set", "g1", "up"],
            &["ip", "link", "set", "g1p", "up"],
        ] {
            let out = lab.exec(host, args).expect("ip");
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
    }
    let conf = |admin: Option<&Path>| -> String {
        let admin = admin
            .map(|a| format!("    admin_socket {}\n", a.display()))
            .unwrap_or_default();
        format!(
            "global_defs {{\n{admin}    vrrp_gna_interval 0.3\n}}\n\
             garp_group {{\n    garp_interval 0.15\n    interface eth0\n    interfaces {{\n        g1\n    }}\n}}\n\
             vrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 94\n    priority 255\n    advert_int 1\n    garp_master_delay 0\n    garp_master_repeat 1\n\
             virtual_ipaddress {{\n        198.18.0.94/24\n        198.18.0.95/24\n        198.18.0.96/32 dev g1\n        198.18.0.97/32 dev g1\n    }}\n\
             virtual_ipaddress_excluded {{\n        fd00:18::94/64\n        fd00:18::95/64\n    }}\n}}\n"
        )
    };
    std::fs::write(&lb1.conf, conf(Some(&lb1.socket))).expect("conf");
    std::fs::write(&ka_conf, conf(None)).expect("conf");
    // (time, interface, address) of each gratuitous ARP and NA for the VIPs over 5 s.
    let capture = |lab: &Lab, host: &str, start: &mut dyn FnMut()| -> Vec<(f64, String, String)> {
        let mut cmd = lab.command(host, "tshark");
        cmd.args([
            "-l",
            "-n",
            "-i",
            "eth0",
            "-i",
            "g1",
            "-a",
            "duration:5",
            "-f",
            "arp or icmp6",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_name",
            "-e",
            "arp.src.proto_ipv4",
            "-e",
            "icmpv6.nd.na.target_address",
        ]);
        let mut cap = Proc::spawn(cmd, lab.dir(), &format!("tshark-{host}")).expect("tshark");
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                cap.stderr().matches("Capturing on").count() > 0
            })
            .is_some(),
            "tshark started: {}",
            cap.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
        start();
        assert!(
            cap.wait_exit(Duration::from_secs(15)).is_some(),
            "tshark ended"
        );
        let vips = [
            "198.18.0.94",
            "198.18.0.95",
            "198.18.0.96",
            "198.18.0.97",
            "fd00:18::94",
            "fd00:18::95",
        ];
        cap.stdout()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let addr = f
                    .get(2..)
                    .into_iter()
                    .flatten()
                    .find(|a| vips.contains(a))?;
                Some((
                    f[0].parse().ok()?,
                    f.get(1)?.to_string(),
                    (*addr).to_owned(),
                ))
            })
            .collect()
    };
    let ours = capture(&lab_lb, "lb1", &mut || lb1.start(&lab_lb));
    let mut kad = None;
    let theirs = capture(&lab_ka, "ka1", &mut || {
        kad = Some(
            Proc::spawn(
                lab_ka.keepalived("ka1", &ka_conf, "ka"),
                lab_ka.dir(),
                "keepalived",
            )
            .expect("spawn keepalived"),
        );
    });
    let logs = format!(
        "lb-node: {ours:?}\nkeepalived: {theirs:?}\n{}\n{}",
        lb1.logs(),
        kad.as_ref().map(|k| k.log_tail(40)).unwrap_or_default()
    );
    // The gaps between the ARPs over both interfaces, and the NAs' span.
    let summary = |msgs: &[(f64, String, String)]| {
        let arps: Vec<&(f64, String, String)> =
            msgs.iter().filter(|m| !m.2.contains(':')).collect();
        let nas: Vec<f64> = msgs
            .iter()
            .filter(|m| m.2.contains(':'))
            .map(|m| m.0)
            .collect();
        let on = |i: &str| arps.iter().filter(|m| m.1 == i).count();
        let gap = arps
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .fold(f64::MAX, f64::min);
        let na_span = nas.iter().copied().fold(f64::MIN, f64::max)
            - nas.iter().copied().fold(f64::MAX, f64::min);
        (on("eth0"), on("g1"), nas.len(), gap, na_span)
    };
    let (o, k) = (summary(&ours), summary(&theirs));
    // keepalived: two ARPs on each interface, at least ~0.15 s apart whichever interface;
    // the NAs at once.
    assert_eq!(
        (k.0, k.1, k.2),
        (2, 2, 2),
        "keepalived's own behaviour changed\n{logs}"
    );
    assert!(
        k.3 >= 0.1 && k.4 < 0.1,
        "keepalived's own behaviour changed: {k:?}\n{logs}"
    );
    assert_eq!((o.0, o.1, o.2), (k.0, k.1, k.2), "{logs}");
    assert!(
        o.3 >= 0.1,
        "one spacing over both interfaces: {o:?}\n{logs}"
    );
    assert!(
        o.4 < 0.1,
        "NAs not spaced (the group has no gna_interval): {o:?}\n{logs}"
    );
}

/// keepalived's `track_src_ip`, as its documentation describes it: an instance whose
/// `unicast_src_ip` is not on its interface is in FAULT — from the start, and again when
/// the address is deleted — and leaves FAULT when the address is there. (keepalived 2.2.7
/// does not: tried side by side, it fails to bind at the start, "src address not
/// configured", and stays in FAULT for good, and it ignores the deletion of a secondary
/// address; the deletion of an interface's last address takes its VIPs with it, so it
/// resigns and becomes MASTER again a second later, never FAULT.)
#[test]
fn track_src_ip_faults_while_the_source_is_missing() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbt", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let (log, _reader) = fifo_reader(&lab);
    std::fs::write(
        &lb1.conf,
        format!(
            "global_defs {{\n    admin_socket {}\n    vrrp_notify_fifo {}\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 95\n    priority 100\n    advert_int 1\n    unicast_src_ip 198.18.0.61\n    track_src_ip\n    unicast_peer {{\n        198.18.0.99\n    }}\n    virtual_ipaddress {{\n        198.18.0.95/24\n    }}\n}}\n",
            lb1.socket.display(),
            lab.dir().join("vrrp.fifo").display()
        ),
    )
    .expect("conf");
    let ip = |verb: &str| {
        let out = lab
            .exec(
                "lb1",
                &["ip", "addr", verb, "198.18.0.61/24", "dev", "eth0"],
            )
            .expect("ip");
        assert!(out.status.success(), "{out:?}");
    };
    lb1.start(&lab);
    let wait_last = |state: &str, lb1: &Node| {
        assert!(
            wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                file_lines(&log)
                    .last()
                    .is_some_and(|l| l.starts_with(&format!("INSTANCE \"VI_1\" {state}")))
            })
            .is_some(),
            "{state}: {:?}\n{}",
            file_lines(&log),
            lb1.logs()
        );
    };
    wait_last("FAULT", &lb1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        file_lines(&log),
        ["INSTANCE \"VI_1\" FAULT 100"],
        "{}",
        lb1.logs()
    );
    ip("add");
    wait_last("MASTER", &lb1);
    assert!(lab.has_addr("lb1", "198.18.0.95".parse().expect("ip")));
    ip("del");
    wait_last("FAULT", &lb1);
    assert!(!lab.has_addr("lb1", "198.18.0.95".parse().expect("ip")));
    assert_eq!(
        file_lines(&log),
        [
            "INSTANCE \"VI_1\" FAULT 100",
            "INSTANCE \"VI_1\" BACKUP 100",
            "INSTANCE \"VI_1\" MASTER 100",
            "INSTANCE \"VI_1\" FAULT 100"
        ],
        "{}",
        lb1.logs()
    );
}

/// A reload that only regroups instances — two lone MASTER instances put into a new
/// `vrrp_sync_group`, then the group dissolved again — hands them over as keepalived keeps
/// an instance's state whatever its group: they stay MASTER, their VIPs never leave, and
/// no notify_stop runs. (They went through a stop before: a priority-0 advert, the VIPs
/// gone for a Master_Down_Interval, notify_stop.)
#[test]
fn reload_that_regroups_instances_keeps_their_state() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbv", &[("lb1", 11)]).expect("lab");
    let mut lb1 = Node::new(&lab, "lb1");
    let stopped = lab.dir().join("stopped");
    let socket = lb1.socket.clone();
    let conf = |grouped: bool| {
        let inst = |name: &str, vrid: u8| {
            format!(
                "vrrp_instance {name} {{\n    state MASTER\n    interface eth0\n    virtual_router_id {vrid}\n    priority 255\n    advert_int 1\n    notify_stop \"/usr/bin/touch {}\"\n    virtual_ipaddress {{\n        198.18.0.{vrid}/24\n    }}\n}}\n",
                stopped.display()
            )
        };
        format!(
            "global_defs {{\n    admin_socket {}\n}}\n{}{}{}",
            socket.display(),
            inst("VI_1", 71),
            inst("VI_2", 72),
            if grouped {
                "vrrp_sync_group VG_1 {\n    group {\n        VI_1\n        VI_2\n    }\n}\n"
            } else {
                ""
            }
        )
    };
    std::fs::write(&lb1.conf, conf(false)).expect("conf");
    lb1.start(&lab);
    let vips: [IpAddr; 2] = [
        "198.18.0.71".parse().expect("ip"),
        "198.18.0.72".parse().expect("ip"),
    ];
    let masters = |lb1: &Node| {
        lb1.status().is_some_and(|s| {
            s.vrrp.len() == 2 && s.vrrp.iter().all(|v| v.state == VrrpState::Master)
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            masters(&lb1) && vips.iter().all(|v| lab.has_addr("lb1", *v))
        })
        .is_some(),
        "{}",
        lb1.logs()
    );
    for (round, grouped) in [(1, true), (2, false)] {
        std::fs::write(&lb1.conf, conf(grouped)).expect("conf");
        assert!(lb1.proc().sighup());
        // Every 20 ms until the reload is done and a second after: the VIPs stay.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done_at = None;
        while Instant::now() < deadline {
            for v in &vips {
                assert!(
                    lab.has_addr("lb1", *v),
                    "reload {round}: {v} left\n{}",
                    lb1.logs()
                );
            }
            let reloads = lb1.proc().stderr().matches("reload done").count();
            if done_at.is_none() && reloads >= round {
                done_at = Some(Instant::now());
            }
            if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(done_at.is_some(), "reload {round} done\n{}", lb1.logs());
        assert!(masters(&lb1), "reload {round}: both MASTER\n{}", lb1.logs());
        assert!(
            !stopped.exists(),
            "reload {round}: notify_stop ran\n{}",
            lb1.logs()
        );
        let groups: Vec<Option<String>> = lb1
            .status()
            .map(|s| s.vrrp.iter().map(|v| v.sync_group.clone()).collect())
            .unwrap_or_default();
        let want = if grouped {
            Some("VG_1".to_owned())
        } else {
            None
        };
        assert!(
            groups.iter().all(|g| *g == want),
            "reload {round}: {groups:?}"
        );
    }
}

/// A TCP server in a lab host that answers each connection with the address it came from,
/// then closes it; stopped (and joined) on drop. Bounded: it stops by itself after 60 s.
struct PeerEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerEcho {
    fn start(lab: &Lab, host: &str, addr: SocketAddr) -> Self {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = lab.bind(host, addr).expect("bind the peer echo");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = write!(s, "{peer}");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl PeerEcho {
    /// The same over UDP: each datagram is answered with its source address.
    fn start_udp(lab: &Lab, host: &str, addr: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let socket = lb_testkit::in_netns(lab.ns(host), move || std::net::UdpSocket::bind(addr))
            .expect("bind the UDP peer echo");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(peer.to_string().as_bytes(), peer);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `usesrc`: the real server sees the client's address, as behind LVS NAT, with the
/// routing an operator sets up for it (the real server's route to the client via lb1;
/// on lb1, replies to transparent sockets marked and routed locally, as the README says).
/// With `"clientip"` the port is the node's choice; with `"client"` the client's own. The
/// virtual server without `usesrc` shows the real server lb1's address.
#[test]
fn usesrc_shows_the_real_server_the_client_address() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("lbts", &[("client", 2), ("lb1", 11), ("web", 21)]).expect("lab");
    let (client, lb1, web) = (lab.addr("client"), lab.addr("lb1"), lab.addr("web"));
    let setup: &[(&str, &[&str])] = &[
        (
            "web",
            &[
                "ip",
                "route",
                "add",
                &format!("{client}/32"),
                "via",
                &lb1.to_string(),
            ],
        ),
        ("lb1", &["nft", "add", "table", "inet", "lb_tproxy"]),
        (
            "lb1",
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "lb_tproxy",
                "prerouting",
                "{ type filter hook prerouting priority mangle; }",
            ],
        ),
        (
            "lb1",
            &[
                "nft",
                "add",
                "rule",
                "inet",
                "lb_tproxy",
                "prerouting",
                "socket",
                "transparent",
                "1",
                "meta",
                "mark",
                "set",
                "1",
            ],
        ),
        (
            "lb1",
            &["ip", "rule", "add", "fwmark", "1", "lookup", "100"],
        ),
        (
            "lb1",
            &[
                "ip",
                "route",
                "add",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                "100",
            ],
        ),
    ];
    for (host, args) in setup {
        let out = lab.exec(host, args).expect("run");
        assert!(out.status.success(), "{host}: {args:?}: {out:?}");
    }
    let real = SocketAddr::new(web.into(), 8080);
    let _echo = PeerEcho::start(&lab, "web", real);
    let _udp_echo = PeerEcho::start_udp(&lab, "web", real);
    let mut node = Node::new(&lab, "lb1");
    node.conf = lab.dir().join("lb1.toml");
    let vs = |name: &str, port: u16, usesrc: &str| {
        format!("[[virtual_server]]\nname = \"{name}\"\nlisten = \"{lb1}:{port}\"\nlb_algo = \"rr\"\n{usesrc}[[virtual_server.backend]]\naddress = \"{real}\"\n\n")
    };
    let conf = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}{}{}",
        node.socket.display(),
        vs("ip", 80, "[virtual_server.tcp]\nusesrc = \"clientip\"\n"),
        vs("port", 81, "[virtual_server.tcp]\nusesrc = \"client\"\n"),
        vs("plain", 82, ""),
    ) + &vs(
        "dns",
        53,
        "protocol = \"udp\"\n[virtual_server.udp]\nusesrc = \"client\"\n",
    );
    std::fs::write(&node.conf, conf).expect("conf");
    node.start(&lab);
    // What the real server says the connection came from, and the client's own address.
    let ask = |port: u16| -> Option<(String, SocketAddr)> {
        use std::io::Read;
        let mut s = lab
            .connect(
                "client",
                SocketAddr::new(lb1.into(), port),
                Duration::from_secs(3),
            )
            .ok()?;
        let local = s.local_addr().ok()?;
        let mut seen = String::new();
        s.read_to_string(&mut seen).ok()?;
        (!seen.is_empty()).then_some((seen, local))
    };
    let mut first = None;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        first = ask(80);
        first.is_some()
    });
    let (seen, _) =
        first.unwrap_or_else(|| panic!("no answer through usesrc clientip\n{}", node.logs()));
    let seen: SocketAddr = seen.parse().expect("an address");
    assert_eq!(seen.ip(), IpAddr::from(client), "{}", node.logs());
    let (seen, local) = ask(81).unwrap_or_else(|| panic!("usesrc client\n{}", node.logs()));
    assert_eq!(seen, local.to_string(), "the client's address and port");
    let (seen, _) = ask(82).unwrap_or_else(|| panic!("plain\n{}", node.logs()));
    let seen: SocketAddr = seen.parse().expect("an address");
    assert_eq!(seen.ip(), IpAddr::from(lb1));
    // UDP: the real server answers the client's own address and port.
    let vip53 = SocketAddr::new(lb1.into(), 53);
    let udp = lb_testkit::in_netns(lab.ns("client"), || std::net::UdpSocket::bind("0.0.0.0:0"))
        .expect("client socket");
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let local = SocketAddr::new(client.into(), udp.local_addr().expect("local").port());
    let mut answer = None;
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let _ = udp.send_to(b"who am i", vip53);
        let mut buf = [0u8; 512];
        answer = udp
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (String::from_utf8_lossy(&buf[..n]).into_owned(), from));
        answer.is_some()
    });
    let (seen, from) = answer.unwrap_or_else(|| panic!("no UDP answer\n{}", node.logs()));
    assert_eq!(from, vip53, "the answer comes from the virtual server");
    assert_eq!(seen, local.to_string(), "the client's address and port");
    assert!(node.proc().sigterm());
    assert!(node
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
