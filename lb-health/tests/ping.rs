//! `PingProbe` against real sockets: loopback on the host, and network namespaces the tests
//! create themselves (`lbping-<pid>-<n>`, removed by a guard even when a test fails) to
//! choose between ping and raw sockets (`net.ipv4.ping_group_range` is per namespace), to
//! have no route, and to drop echo requests with nftables. Only loopback addresses and
//! addresses inside those namespaces are used; every wait is bounded.
//!
//! They need root (raw sockets, `ip netns`, `nft`). Without root they skip loudly, except
//! under `CI=true`, where a missing capability or tool fails them.

// Real sockets on blocking threads in namespaces: the wall clock bounds the whole probe,
// thread and runtime included.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lb_health::probe::{PingProbe, Probe};
use lb_health::ProbeOutcome;
use lb_testkit::{command, in_netns, lab_available, run_bounded, tool_available};

const T: Duration = Duration::from_secs(2);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `program args…` (with the sbin directories on `PATH`) within 10 s and panics
/// unless it succeeds.
fn run(program: &str, args: &[&str]) {
    let mut cmd = command(program);
    cmd.args(args);
    let out = run_bounded(cmd, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A network namespace with only `lo` (up), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        let name = format!(
            "lbping-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        // From here on the guard deletes it, whatever fails next.
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Lets every group open ping sockets in this namespace.
    fn allow_ping_sockets(&self) {
        self.exec(&["sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647"]);
    }

    /// Applies `v4` and `v6` (nftables verdicts) to ICMP and ICMPv6 echo requests on input.
    fn filter_echo_requests(&self, v4: &str, v6: &str) {
        let rules = format!(
            "table inet lbping {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0;\n\
             \t\ticmp type echo-request {v4};\n\
             \t\ticmpv6 type echo-request {v6};\n\
             \t}}\n\
             }}\n"
        );
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, rules).expect("write the nft rules");
        let file = path.to_string_lossy().into_owned();
        // Removed whether nft took it or not (a failing `exec` panics).
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.exec(&["nft", "-f", &file])
        }));
        let _ = std::fs::remove_file(&path);
        if let Err(panic) = applied {
            std::panic::resume_unwind(panic);
        }
    }

    /// Probes `addr` from a thread inside the namespace, on a current-thread runtime.
    fn probe(&self, probe: PingProbe, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        in_netns(&self.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(probe.probe(addr, timeout)))
        })
        .unwrap_or_else(|e| panic!("probe in {}: {e}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut cmd = command("ip");
        cmd.args(["netns", "del", &self.name]);
        match run_bounded(cmd, Duration::from_secs(10)) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("could not delete namespace {}: {e}", self.name),
        }
    }
}

fn sa(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 0)
}

fn assert_up(o: &ProbeOutcome, socket: &str) {
    assert!(o.is_up(), "expected up: {}", o.reason);
    assert!(o.reason.starts_with("echo reply from "), "{}", o.reason);
    assert!(o.reason.contains(socket), "expected {socket}: {}", o.reason);
}

#[tokio::test(flavor = "current_thread")]
async fn loopback_answers_on_the_host() {
    if !lab_available() {
        return;
    }
    for ip in ["127.0.0.1", "::1"] {
        let o = PingProbe::new().probe(sa(ip), T).await;
        // Whichever socket the host allows (raw here: Debian's ping_group_range is `1 0`).
        assert_up(&o, "socket)");
        assert!(o.reason.contains(ip), "{}", o.reason);
        assert!(o.latency < T);
    }
    // connect_ip replaces the address, the port is ignored, bindto sets the source.
    let o = PingProbe::new()
        .connect_ip("127.0.0.1".parse().unwrap())
        .bindto("127.0.0.1".parse().unwrap())
        .probe("198.18.0.77:8080".parse().unwrap(), T)
        .await;
    assert_up(&o, "socket)");
    assert!(o.reason.contains("127.0.0.1"), "{}", o.reason);
    let o = PingProbe::new()
        .bindto("::1".parse().unwrap())
        .probe("[::1]:53".parse().unwrap(), T)
        .await;
    assert_up(&o, "socket)");
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_probes_each_get_their_reply() {
    if !lab_available() {
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let ip = if i % 2 == 0 { "127.0.0.1" } else { "::1" };
        set.spawn(async move { PingProbe::new().probe(sa(ip), T).await });
    }
    let mut n = 0;
    while let Some(o) = set.join_next().await {
        assert_up(&o.unwrap(), "socket)");
        n += 1;
    }
    assert_eq!(n, 40);
}

#[test]
fn ping_sockets_are_used_where_the_group_range_allows() {
    if !lab_available() {
        return;
    }
    let ns = Netns::new();
    ns.allow_ping_sockets();
    for ip in ["127.0.0.1", "::1"] {
        let o = ns.probe(PingProbe::new(), sa(ip), T);
        assert_up(&o, "(ping socket)");
    }
}

#[test]
fn raw_sockets_are_the_fallback_with_the_default_group_range() {
    if !lab_available() {
        return;
    }
    let ns = Netns::new();
    for ip in ["127.0.0.1", "::1"] {
        let o = ns.probe(PingProbe::new(), sa(ip), T);
        assert_up(&o, "(raw socket)");
    }
}

#[test]
fn no_route_is_down_at_once_with_the_error() {
    if !lab_available() {
        return;
    }
    for allow_ping in [false, true] {
        let ns = Netns::new();
        if allow_ping {
            ns.allow_ping_sockets();
        }
        for ip in ["198.18.0.77", "fd00:18::77"] {
            let timeout = Duration::from_secs(5);
            let start = Instant::now();
            let o = ns.probe(PingProbe::new(), sa(ip), timeout);
            assert!(!o.is_up(), "{ip}: {}", o.reason);
            assert!(
                o.reason.contains("unreachable"),
                "{ip}: expected the routing error: {}",
                o.reason
            );
            assert!(o.reason.contains(ip), "{}", o.reason);
            let kind = if allow_ping {
                "(ping socket)"
            } else {
                "(raw socket)"
            };
            assert!(o.reason.contains(kind), "{}", o.reason);
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{ip}: took {:?}",
                start.elapsed()
            );
        }
    }
}

#[test]
fn dropped_echo_requests_time_out() {
    if !lab_available() || !tool_available("nft") {
        return;
    }
    for allow_ping in [false, true] {
        let ns = Netns::new();
        if allow_ping {
            ns.allow_ping_sockets();
        }
        ns.filter_echo_requests("drop", "drop");
        for ip in ["127.0.0.1", "::1"] {
            let timeout = Duration::from_millis(300);
            let start = Instant::now();
            let o = ns.probe(PingProbe::new(), sa(ip), timeout);
            let took = start.elapsed();
            assert!(!o.is_up(), "{ip}: {}", o.reason);
            let kind = if allow_ping {
                "(ping socket)"
            } else {
                "(raw socket)"
            };
            assert_eq!(
                o.reason,
                format!("no echo reply from {ip} within 300ms {kind}")
            );
            assert!(
                o.latency >= Duration::from_millis(290),
                "{ip}: {:?}",
                o.latency
            );
            assert!(took < Duration::from_secs(2), "{ip}: took {took:?}");
        }
    }
}

/// Host unreachable (ICMP) and address unreachable (ICMPv6) are errors Linux reports on a
/// connected socket only with `IP_RECVERR`/`IPV6_RECVERR`: without them the probe would
/// wait for its timeout.
#[test]
fn icmp_errors_fail_the_check_at_once() {
    if !lab_available() || !tool_available("nft") {
        return;
    }
    for allow_ping in [false, true] {
        let ns = Netns::new();
        if allow_ping {
            ns.allow_ping_sockets();
        }
        ns.filter_echo_requests(
            "reject with icmp type host-unreachable",
            "reject with icmpv6 type addr-unreachable",
        );
        for ip in ["127.0.0.1", "::1"] {
            let timeout = Duration::from_secs(5);
            let start = Instant::now();
            let o = ns.probe(PingProbe::new(), sa(ip), timeout);
            let took = start.elapsed();
            assert!(!o.is_up(), "{ip}: {}", o.reason);
            let kind = if allow_ping {
                "(ping socket)"
            } else {
                "(raw socket)"
            };
            assert!(
                o.reason
                    .starts_with(&format!("echo request to {ip} {kind}: No route to host")),
                "{}",
                o.reason
            );
            assert!(took < Duration::from_secs(2), "{ip}: took {took:?}");
        }
    }
}

/// Without `CAP_NET_RAW` and outside `ping_group_range`, neither socket opens: down at once,
/// naming both remedies. The test runs itself again in a fresh namespace (default range
/// `1 0`) as root without `CAP_NET_RAW` (`setpriv` drops it from the bounding set before
/// the exec).
#[test]
fn without_privileges_the_reason_names_both_remedies() {
    const CHILD: &str = "LB_HEALTH_PING_TEST_CHILD";
    const NAME: &str = "without_privileges_the_reason_names_both_remedies";
    if std::env::var_os(CHILD).is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for ip in ["127.0.0.1", "::1"] {
            let o = rt.block_on(PingProbe::new().probe(sa(ip), T));
            println!("child outcome: {}", o.reason);
            assert!(!o.is_up(), "{}", o.reason);
            assert!(
                o.reason.starts_with(&format!(
                    "cannot open an ICMP socket to ping {ip}: ping socket: Permission denied"
                )),
                "{}",
                o.reason
            );
            assert!(
                o.reason.contains("net.ipv4.ping_group_range"),
                "{}",
                o.reason
            );
            assert!(
                o.reason.contains(
                    "raw socket: Operation not permitted (os error 1) (needs CAP_NET_RAW)"
                ),
                "{}",
                o.reason
            );
            assert!(o.latency < Duration::from_millis(500), "{:?}", o.latency);
        }
        return;
    }
    if !lab_available() || !tool_available("setpriv") {
        return;
    }
    let ns = Netns::new();
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = command("ip");
    cmd.args(["netns", "exec", &ns.name, "setpriv", "--inh-caps=-all"])
        .args(["--bounding-set=-net_raw", "--"])
        .arg(exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1");
    let out = run_bounded(cmd, Duration::from_secs(30)).expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("child outcome: ").count(),
        2,
        "the child ran the test: {stdout}"
    );
}
