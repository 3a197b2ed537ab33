//! Network-namespace lab for integration tests and the failover bench: a bridge namespace
//! and N leaf namespaces each with `eth0` on the bridge, addresses from 198.18.0.0/24 and
//! fd00:18::/64 only. Everything it creates (namespaces, processes, listeners, files) is
//! removed by `Drop`, even when a test panics; it never touches a namespace it did not
//! create. Every wait, and every command it runs, is bounded.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::disallowed_methods)] // blocking test harness: std::thread::sleep is fine here

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The time limit of a helper command (`ip`, `sysctl`, `nft`, `kill`, a tshark capture of
/// a few seconds): generous for a loaded machine, but a hung command fails the test.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a [`Lab::tcp_listener`] accepts at most, should its lab never be dropped.
const LISTENER_MAX: Duration = Duration::from_secs(600);

/// Runs `cmd` (stdin null, stdout and stderr captured) for at most `timeout`. Past it, the
/// child is killed by its PID and reaped, and this returns a `TimedOut` error.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Both pipes drained while the child runs, so a chatty child cannot block on a full one.
    let (tx, rx) = mpsc::channel();
    let readers = drain(child.stdout.take(), 0, &tx) + drain(child.stderr.take(), 1, &tx);
    let timed_out = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{cmd:?}: {what} after {timeout:?}"),
        )
    };
    let Some(status) = wait_child(&mut child, deadline)? else {
        let _ = child.kill(); // SIGKILL to the PID we spawned
        let _ = wait_child(&mut child, Instant::now() + Duration::from_secs(5));
        return Err(timed_out("killed, still running"));
    };
    let mut out = [Vec::new(), Vec::new()];
    for _ in 0..readers {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let (which, buf) = rx
            .recv_timeout(left)
            .map_err(|_| timed_out("output still open (held by a grandchild?)"))?;
        out[which] = buf;
    }
    let [stdout, stderr] = out;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Reads `pipe` to its end on a thread and sends `(which, bytes)` on `tx`; returns the
/// number of threads started (0 without a pipe).
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    which: usize,
    tx: &mpsc::Sender<(usize, Vec<u8>)>,
) -> usize {
    let Some(mut pipe) = pipe else { return 0 };
    let tx = tx.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send((which, buf));
    });
    1
}

/// Polls `child` until it exits or `deadline` passes (`None`).
fn wait_child(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    for _ in 0..10_000_000 {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

/// A `Command` whose PATH also has the sbin directories (`ip`, `nft`, `keepalived` live
/// there on Debian), whatever the environment the tests run in.
pub fn cmd(program: &str) -> Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut c = Command::new(program);
    c.env(
        "PATH",
        format!("{path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    c
}

/// The lb-vrrpd binary under test.
pub const LB_VRRPD: &str = env!("CARGO_BIN_EXE_lb-vrrpd");

/// Returns true if the lab can run. Without root (or `ip netns`), skips loudly, except
/// under `CI=true` where a missing capability is a failure.
pub fn lab_available() -> bool {
    let uid = output_within(cmd("id").arg("-u"), CMD_TIMEOUT)
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let ok = uid.as_deref() == Some("0")
        && output_within(cmd("ip").args(["netns", "list"]), CMD_TIMEOUT)
            .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: network-namespace tests need root and iproute2; refusing to skip");
        }
        // Straight to stderr, past the test harness's output capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPING network-namespace test: needs root and `ip netns` (run as root, or CI=true to fail) !!!!!\n"
        );
    }
    ok
}

/// True if `tool` is on PATH. Under `CI=true` a missing tool fails the test.
pub fn tool_available(tool: &str) -> bool {
    let ok = output_within(
        cmd("sh").args(["-c", &format!("command -v {tool}")]),
        CMD_TIMEOUT,
    )
    .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: test needs `{tool}` (install the Debian package)");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPING: `{tool}` is not installed !!!!!\n"
        );
    }
    ok
}

/// Runs `args` (bounded by [`CMD_TIMEOUT`]) and panics unless it succeeds.
pub fn run(args: &[&str]) {
    let out = output_within(cmd(args[0]).args(&args[1..]), CMD_TIMEOUT)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process we started, killed on drop.
pub struct Proc {
    pub child: Child,
    /// Leader of its own process group (keepalived: parent + VRRP child).
    pub group: bool,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// SIGKILL (the whole group for a group leader).
    pub fn kill9(&mut self) {
        let target = if self.group {
            format!("-{}", self.pid())
        } else {
            self.pid().to_string()
        };
        let _ = output_within(cmd("kill").args(["-9", "--", &target]), CMD_TIMEOUT);
        let _ = wait_child(&mut self.child, Instant::now() + Duration::from_secs(10));
    }
    /// SIGTERM and wait (bounded) for exit.
    pub fn term(&mut self) -> bool {
        let _ = output_within(
            cmd("kill").args(["-TERM", &self.pid().to_string()]),
            CMD_TIMEOUT,
        );
        matches!(
            wait_child(&mut self.child, Instant::now() + Duration::from_secs(5)),
            Ok(Some(_))
        )
    }
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// The lab. Leaf `i` is namespace `ns(i)` with `eth0` = 198.18.0.(i+1)/24 and
/// fd00:18::(i+1)/64.
pub struct Lab {
    pub tag: String,
    bridge: String,
    leaves: Vec<String>,
    /// The namespaces this lab created (`ip netns add` succeeded): the only ones it deletes.
    created: Vec<String>,
    pub dir: PathBuf,
    procs: Vec<Proc>,
    listeners: Vec<Listener>,
}

/// A [`Lab::tcp_listener`]'s accept thread. Dropping it stops the thread and closes the
/// socket (which would otherwise keep its namespace, and the lab's links, alive).
#[derive(Debug)]
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Lab {
    /// Creates the bridge and `n` leaves.
    pub fn new(n: usize) -> Self {
        let tag = format!(
            "lbv{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&tag);
        // Not create_dir_all: a directory that is already there is not ours to delete.
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("temp dir {}: {e}", dir.display()));
        let mut lab = Self {
            bridge: format!("{tag}-br"),
            leaves: Vec::new(),
            created: Vec::new(),
            tag,
            dir,
            procs: Vec::new(),
            listeners: Vec::new(),
        };
        let bridge = lab.bridge.clone();
        lab.add_netns(&bridge);
        run(&[
            "ip",
            "-n",
            &lab.bridge,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        run(&["ip", "-n", &lab.bridge, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{}-{i}", lab.tag);
            lab.add_netns(&ns);
            lab.leaves.push(ns.clone());
            // No IPv6 duplicate address detection: a tentative link-local address cannot
            // source VRRPv3 adverts (keepalived's sendmsg fails with EINVAL meanwhile).
            for conf in ["all", "default"] {
                let key = format!("net.ipv6.conf.{conf}.accept_dad=0");
                run(&["ip", "netns", "exec", &ns, "sysctl", "-qw", &key]);
            }
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            lab.add_eth0(i);
        }
        lab
    }

    /// `ip netns add NAME`, refused (a panic) if a namespace `NAME` exists already: this lab
    /// deletes what it creates, and only that.
    fn add_netns(&mut self, name: &str) {
        let path = Path::new("/var/run/netns").join(name);
        assert!(
            !path.exists(),
            "network namespace {name} exists already: not ours, refusing to use it"
        );
        // `ip netns add` itself fails on an existing name (O_EXCL), so this cannot race into
        // taking over someone else's namespace either.
        run(&["ip", "netns", "add", name]);
        self.created.push(name.to_owned());
    }

    /// Leaf `i`'s `eth0`: a veth to the bridge (port `p{i}`), up, no IPv6 duplicate address
    /// detection, with 198.18.0.(i+1)/24 and fd00:18::(i+1)/64.
    fn add_eth0(&self, i: usize) {
        let ns = self.leaves[i].clone();
        let port = format!("p{i}");
        run(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.eth0.accept_dad=0",
        ]);
        run(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("198.18.0.{}/24", i + 1),
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("fd00:18::{}/64", i + 1),
            "dev",
            "eth0",
            "nodad",
        ]);
    }

    /// Deletes leaf `i`'s `eth0` (with its bridge port) and creates it again ([`Lab::add_eth0`]):
    /// a new interface index under the same name.
    pub fn recreate_eth0(&self, i: usize) {
        run(&["ip", "-n", &self.bridge, "link", "del", &format!("p{i}")]);
        self.add_eth0(i);
    }

    pub fn ns(&self, i: usize) -> &str {
        &self.leaves[i]
    }

    /// Starts `lb-vrrpd ARGS` in leaf `i`.
    pub fn spawn_ours(&mut self, i: usize, args: &[&str]) -> usize {
        let name = format!("ours{}-{i}", self.procs.len());
        let mut cmd = cmd("ip");
        cmd.args(["netns", "exec", &self.leaves[i], LB_VRRPD])
            .args(args)
            .env("RUST_LOG", "lb_vrrp=debug");
        self.spawn(cmd, &name, false)
    }

    /// Starts `lb-vrrpd ARGS` in leaf `i` as user `nobody` with only CAP_NET_RAW and
    /// CAP_NET_ADMIN (ambient), from a copy of the binary that `nobody` can execute.
    pub fn spawn_ours_unprivileged(&mut self, i: usize, args: &[&str]) -> usize {
        let bin = self.dir.join("lb-vrrpd");
        std::fs::copy(LB_VRRPD, &bin).expect("copy binary");
        let mut cmd = cmd("ip");
        cmd.args([
            "netns",
            "exec",
            &self.leaves[i],
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args([
            "--inh-caps=-all,+net_raw,+net_admin",
            "--ambient-caps=+net_raw,+net_admin",
            "--bounding-set=-all,+net_raw,+net_admin",
        ])
        .arg(&bin)
        .args(args);
        let name = format!("nobody{}-{i}", self.procs.len());
        self.spawn(cmd, &name, false)
    }

    /// Starts `args` (a program and its arguments) in leaf `i`, killed on drop.
    pub fn spawn_in(&mut self, i: usize, name: &str, args: &[&str]) -> usize {
        let mut cmd = cmd("ip");
        cmd.args(["netns", "exec", &self.leaves[i]]).args(args);
        self.spawn(cmd, name, false)
    }

    /// Starts keepalived in the foreground in leaf `i` with `conf`, in its own process group.
    pub fn spawn_keepalived(&mut self, i: usize, conf: &str) -> usize {
        let n = self.procs.len();
        let conf_path = self.dir.join(format!("ka{n}.conf"));
        std::fs::write(&conf_path, conf).expect("write conf");
        let pid = self.dir.join(format!("ka{n}.pid"));
        let vpid = self.dir.join(format!("ka{n}-vrrp.pid"));
        let _ = std::fs::remove_file(&pid);
        let _ = std::fs::remove_file(&vpid);
        let mut cmd = cmd("ip");
        cmd.args([
            "netns",
            "exec",
            &self.leaves[i],
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
        ])
        .arg(&conf_path)
        .arg("-p")
        .arg(&pid)
        .arg("-r")
        .arg(&vpid)
        .process_group(0);
        self.spawn(cmd, &format!("ka{n}-{i}"), true)
    }

    fn spawn(&mut self, mut cmd: Command, name: &str, group: bool) -> usize {
        let stdout = self.dir.join(format!("{name}.out"));
        let stderr = self.dir.join(format!("{name}.err"));
        cmd.stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("spawn");
        self.procs.push(Proc {
            child,
            group,
            stdout,
            stderr,
        });
        self.procs.len() - 1
    }

    pub fn proc(&mut self, p: usize) -> &mut Proc {
        &mut self.procs[p]
    }

    /// Runs a command inside leaf `i` (bounded by [`CMD_TIMEOUT`]: past it, a panic) and
    /// returns (success, stdout).
    pub fn exec(&self, i: usize, args: &[&str]) -> (bool, String) {
        let out = output_within(
            cmd("ip")
                .args(["netns", "exec", &self.leaves[i]])
                .args(args),
            CMD_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", self.leaves[i]));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// True if leaf `i`'s eth0 carries `addr`.
    pub fn has_addr(&self, i: usize, addr: &str) -> bool {
        let (_, out) = self.exec(i, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        out.split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    /// The leaves (among `of`) that hold `addr`.
    pub fn holders(&self, of: &[usize], addr: &str) -> Vec<usize> {
        of.iter()
            .copied()
            .filter(|&i| self.has_addr(i, addr))
            .collect()
    }

    /// One ping from leaf `i` to `addr` (1 s timeout).
    pub fn ping(&self, i: usize, addr: &str) -> bool {
        self.exec(i, &["ping", "-c", "1", "-W", "1", addr]).0
    }

    /// Blocks the VRRP multicast group in leaf `i` (nftables, both directions).
    pub fn block_multicast(&self, i: usize) {
        let rules = "table inet lbvtest {\n chain in { type filter hook input priority 0; ip daddr 224.0.0.18 drop; }\n chain out { type filter hook output priority 0; ip daddr 224.0.0.18 drop; }\n}\n";
        let path = self.dir.join(format!("nft{i}.conf"));
        std::fs::write(&path, rules).expect("write nft");
        let (ok, _) = self.exec(i, &["nft", "-f", path.to_str().expect("utf8 path")]);
        assert!(ok, "nft -f failed");
    }

    /// Binds a TCP listener inside leaf `i` (the calling thread enters the namespace only
    /// for the bind) and accepts (and closes) connections in a background thread, until the
    /// lab is dropped (at most [`LISTENER_MAX`]).
    pub fn tcp_listener(&mut self, i: usize, addr: SocketAddr) {
        let l = in_netns(&self.leaves[i], move || {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .expect("bind in netns");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LISTENER_MAX;
            for _ in 0..10_000_000 {
                if flag.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                // Drain the pending connections, then a short nap.
                for _ in 0..1000 {
                    match l.accept() {
                        Ok((stream, _)) => drop(stream),
                        Err(_) => break, // WouldBlock: none pending
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        self.listeners.push(Listener {
            stop,
            thread: Some(thread),
        });
    }

    /// One TCP connect from leaf `i` with `timeout`.
    pub fn tcp_connect(&self, i: usize, addr: SocketAddr, timeout: Duration) -> bool {
        in_netns(&self.leaves[i], move || {
            TcpStream::connect_timeout(&addr, timeout)
        })
        .is_ok()
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(path)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        f()
    })
    .join()
    .expect("netns thread panicked")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.child.try_wait() {
                p.kill9();
            }
        }
        // keepalived's VRRP child: the group kill above covers it.
        // Listener sockets keep their namespace (and its links) alive: close them first.
        self.listeners.clear();
        // Only the namespaces this lab created; leaves first, the bridge last.
        for ns in self.created.iter().rev() {
            let _ = output_within(cmd("ip").args(["netns", "del", ns]), CMD_TIMEOUT);
        }
        if std::env::var_os("LBV_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns the elapsed time
/// when it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    for _ in 0..100_000 {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
