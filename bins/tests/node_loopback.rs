//! `lb-node` on loopback, no VRRP and no root needed: a TCP virtual server over two real
//! servers without active checks. When one real server dies, the proxy's retries keep every
//! client connection working and passive health (outlier detection) ejects the dead one
//! after five consecutive failures, which `lbctl status --json` shows; HTTP mode serves and
//! counts per backend.
#![allow(clippy::disallowed_methods)] // a blocking test harness reads the clock and sleeps

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_testkit::dns::Dnsmasq;
use lb_testkit::nginx::Nginx;
use lb_testkit::smtp::Aiosmtpd;

const LB_NODE: &str = env!("CARGO_BIN_EXE_lb-node");
const LBCTL: &str = env!("CARGO_BIN_EXE_lbctl");

/// A real server answering one HTTP/1.0-style response per connection, until dropped.
/// The body is its name, followed (for an echoing server) by a newline and the request
/// head it received.
struct RealServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RealServer {
    fn start(body: &'static str) -> Self {
        Self::start_with(body, false)
    }

    /// A server whose body is `name`, a newline and the request head it received.
    fn echo(name: &'static str) -> Self {
        Self::start_with(name, true)
    }

    fn start_with(name: &'static str, echo: bool) -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").unwrap(), name, echo)
    }

    /// A server at `addr` (a port another one had: std sets SO_REUSEADDR).
    fn start_on(addr: SocketAddr, name: &'static str) -> Self {
        Self::serve(TcpListener::bind(addr).unwrap(), name, false)
    }

    fn serve(l: TcpListener, name: &'static str, echo: bool) -> Self {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = [0u8; 2048];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let body = if echo {
                            format!("{name}\n{}", String::from_utf8_lossy(&got))
                        } else {
                            name.to_owned()
                        };
                        let _ = write!(
                            c,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The daemon, started in a process group of its own, killed on drop with what it started
/// (check, notify and startup scripts).
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        use nix::sys::wait::{waitid, Id, WaitPidFlag};
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        // Not reaped yet (running, or a zombie): its PID, and so its group's id, is still
        // ours. Once a test reaped it, the group is left alone (lb-node stopped its
        // scripts, and the id may be another's by now).
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        if waitid(Id::Pid(pid), flags).is_ok() {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lb-node` in a process group of its own (see [`Node`]).
fn lb_node_command() -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(LB_NODE);
    cmd.process_group(0);
    cmd
}

/// A loopback port free when asked, that no parallel test's `bind(…:0)` or connection can
/// take before lb-node listens on it (below the ephemeral range).
fn free_port() -> u16 {
    lb_testkit::ports::unused_port()
}

/// A loopback UDP port free when asked (see [`free_port`]).
fn free_udp_port() -> u16 {
    lb_testkit::ports::unused_port()
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    request(addr, "t", "/")
}

/// `GET path` with `Host: host`; the whole response.
fn request(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

/// The body of a response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn status(sock: &Path) -> serde_json::Value {
    let out = Command::new(LBCTL)
        .arg("--socket")
        .arg(sock)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lbctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `lbctl status`'s text.
fn status_text(sock: &Path) -> String {
    let out = Command::new(LBCTL)
        .arg("--socket")
        .arg(sock)
        .arg("status")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Whether `what`, written on `c`, comes back (an [`echo_until_eof`] backend).
fn echoes(c: &mut TcpStream, what: &[u8]) -> bool {
    let mut buf = [0u8; 64];
    c.write_all(what).is_ok() && c.read(&mut buf).is_ok_and(|n| &buf[..n] == what)
}

/// A backend that echoes each of its first `connections` connections until EOF (or 30 s
/// without data); its address.
fn echo_until_eof(connections: usize) -> SocketAddr {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in echo.incoming().take(connections) {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = [0u8; 64];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn start_node(dir: &Path, toml: &str) -> (Node, std::path::PathBuf) {
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, toml).unwrap();
    start_node_with(dir, &cfg)
}

/// Starts lb-node on the configuration file `cfg` (TOML or keepalived.conf) whose admin
/// socket is `dir/admin.sock`, and waits until `lbctl status` answers.
fn start_node_with(dir: &Path, cfg: &Path) -> (Node, std::path::PathBuf) {
    start_node_args(dir, cfg, &[])
}

/// [`start_node_with`], with more command-line arguments before the file.
fn start_node_args(
    dir: &Path,
    cfg: &Path,
    args: &[&std::ffi::OsStr],
) -> (Node, std::path::PathBuf) {
    let sock = dir.join("admin.sock");
    let child = lb_node_command()
        .arg("--pid-file")
        .arg(dir.join("lb-node.pid"))
        .args(args)
        .arg(cfg)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let node = Node(child);
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()
            && Command::new(LBCTL)
                .arg("--socket")
                .arg(&sock)
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success())),
        "lb-node did not come up: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    (node, sock)
}

/// Writes `toml` as the node's configuration and sends it SIGHUP (a reload).
fn reload_node(node: &Node, dir: &Path, toml: &str) {
    std::fs::write(dir.join("node.toml"), toml).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
}

/// `lbctl backend STATE VIRTUAL_SERVER BACKEND`, which must succeed.
fn lbctl_backend(sock: &Path, state: &str, virtual_server: &str, backend: SocketAddr) {
    let out = Command::new(LBCTL)
        .arg("--socket")
        .arg(sock)
        .args(["backend", state, virtual_server, &backend.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (5 s at most) until the first virtual server runs scheduler `algo`: a reload
/// that restarts it has been applied. Fails with the node's log.
fn wait_scheduler(sock: &Path, dir: &Path, algo: &str) {
    assert!(
        wait_until(Duration::from_secs(5), || status(sock)["virtual_servers"]
            [0]["scheduler"]
            == algo),
        "scheduler {algo} not applied: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
}

/// A test's directory, removed on drop (also when the test fails).
struct TestDir(tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

fn tempdir() -> TestDir {
    TestDir(
        tempfile::Builder::new()
            .prefix(&format!("lb-node-loopback-{}-", std::process::id()))
            .tempdir()
            .unwrap(),
    )
}

/// `lbctl weight` (HAProxy `set weight`): weight 0 takes no new connection while the
/// backend stays up; 3 against 1 gives it three requests in four (wrr); a check that fails
/// and recovers keeps the weight set (the applier holds it as the configured weight);
/// `lbctl status` shows it; a refused weight or backend exits 1 and changes nothing.
#[test]
fn lbctl_weight_changes_a_backends_weight() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let flag = dir.join("fail_a");
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
lb_algo = "wrr"
delay_loop = "0.2s"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend.check]]
type = "misc"
misc_path = "/bin/sh -c '! test -e {flag}'"
misc_timeout = "2s"

[[virtual_server.backend]]
address = "{b}"
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
        b = b.addr,
        flag = flag.display(),
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let bodies = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| body(&get(vip).unwrap()).to_owned())
            .collect()
    };
    let weight = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["weight"].clone();
    let lbctl = |args: &[&str]| {
        Command::new(LBCTL)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let a_addr = a.addr.to_string();
    let out = lbctl(&["weight", "web", &a_addr, "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(5), || weight(0) == 0));
    assert_eq!(
        status(&sock)["virtual_servers"][0]["backends"][0]["health"],
        "up"
    );
    assert!(bodies(6).iter().all(|b| b == "b"));
    let out = lbctl(&["weight", "web", &a_addr, "3"]);
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(5), || weight(0) == 3));
    let got = bodies(8);
    assert_eq!(got.iter().filter(|b| *b == "a").count(), 6, "{got:?}");
    // The check fails and recovers: the weight set stays.
    std::fs::write(&flag, "").unwrap();
    assert!(wait_until(Duration::from_secs(5), || status(&sock)
        ["virtual_servers"][0]["backends"][0]["health"]
        == "down"));
    // The log names the real server by its address (it said `backend=#1`).
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("backend={} from=up to=down", a.addr)),
        "{log}"
    );
    std::fs::remove_file(&flag).unwrap();
    assert!(wait_until(Duration::from_secs(5), || status(&sock)
        ["virtual_servers"][0]["backends"][0]["health"]
        == "up"));
    assert_eq!(weight(0), 3);
    // Refusals change nothing.
    let out = lbctl(&["weight", "web", "127.0.0.1:1", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let out = lbctl(&["weight", "nope", &a_addr, "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(weight(0), 3);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /` from loopback source `src` (127.0.0.0/8 is all local), whole response.
fn get_from(src: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    let mut c: TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(c, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut r = String::new();
    c.read_to_string(&mut r)?;
    Ok(r)
}

/// With `persistence_timeout`, `lbctl backend drain` sends a backend no new client while
/// clients whose entry names it keep reaching it (HAProxy's drain, IPVS's weight 0);
/// `maint` moves them. `expire_quiescent_template = true` (IPVS's sysctl) moves them at
/// the drain. The drain used to drop the entries: its clients moved at once.
#[test]
fn lbctl_drain_keeps_persistent_clients() {
    for expire in [false, true] {
        let dir = tempdir();
        let servers = [
            RealServer::start("a"),
            RealServer::start("b"),
            RealServer::start("c"),
        ];
        let port = free_port();
        let mut toml = format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"rr\"\npersistence_timeout = 300\nexpire_quiescent_template = {expire}\n",
            dir.join("admin.sock").display()
        );
        for s in &servers {
            toml.push_str(&format!(
                "[[virtual_server.backend]]\naddress = \"{}\"\n",
                s.addr
            ));
        }
        let (node, sock) = start_node(&dir, &toml);
        let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let from = |base: u8| -> Vec<String> {
            (0..9u8)
                .map(|i| {
                    let src = std::net::Ipv4Addr::new(127, 0, 0, base + i).into();
                    body(&get_from(src, vip).unwrap()).to_owned()
                })
                .collect()
        };
        let first = from(10);
        assert_eq!(first.iter().filter(|b| *b == "a").count(), 3, "{first:?}");
        assert_eq!(from(10), first, "persistence");
        lbctl_backend(&sock, "drain", "web", servers[0].addr);
        assert!(wait_until(Duration::from_secs(5), || status(&sock)
            ["virtual_servers"][0]["backends"][0]["admin"]
            == "drain"));
        let again = from(10);
        for (f, g) in first.iter().zip(&again) {
            if f == "a" && expire {
                assert_ne!(g, "a", "expire_quiescent_template: moved: {again:?}");
            } else {
                assert_eq!(f, g, "expire {expire}: {first:?} then {again:?}");
            }
        }
        let new = from(40);
        assert!(new.iter().all(|b| b != "a"), "no new client: {new:?}");
        lbctl_backend(&sock, "maint", "web", servers[0].addr);
        assert!(wait_until(Duration::from_secs(5), || status(&sock)
            ["virtual_servers"][0]["backends"][0]["admin"]
            == "maint"));
        let moved = from(10);
        assert!(
            moved.iter().all(|b| b != "a"),
            "maint moves them: {moved:?}"
        );
        drop(node);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `maxconn` is each backend's own (HAProxy `server … maxconn`, keepalived
/// `uthreshold`): with a at 1 and b unlimited, four held connections are one on a and
/// three on b. The largest maxconn of the virtual server used to cap every backend: b
/// took one too and the other two waited in the queue until they timed out.
/// A `source` address this host lacks (a floating address it does not hold now): each
/// client connection is closed, counted as the node's own error (`local_errors`), not as
/// the backend's; `lbctl status` shows it in text and JSON, and the backend stays up.
#[test]
fn a_source_address_the_host_lacks_shows_as_local_errors() {
    let dir = tempdir();
    let backend = echo_until_eof(1);
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"rr\"\n[virtual_server.tcp]\nsource = \"198.18.0.77\"\n[[virtual_server.backend]]\naddress = \"{backend}\"\n",
        dir.join("admin.sock").display()
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..2 {
        let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = c.write_all(b"x");
        let mut buf = [0u8; 1];
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "served through a source the host lacks"
        );
    }
    let l4 = |s: &serde_json::Value| s["virtual_servers"][0]["l4"].clone();
    assert!(
        wait_until(Duration::from_secs(5), || l4(&status(&sock))
            ["local_errors"]
            == 2),
        "{}",
        status(&sock)
    );
    let s = status(&sock);
    assert_eq!(
        (l4(&s)["connect_failures"].clone(), l4(&s)["failed"].clone()),
        (0.into(), 2.into()),
        "{s}"
    );
    assert_eq!(
        s["virtual_servers"][0]["backends"][0]["health"], "up",
        "{s}"
    );
    let text = status_text(&sock);
    assert!(text.contains("; local errors 2"), "{text}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection the previous version of a restarted virtual server still carries is
/// open on that virtual server: `lbctl status` counts it (as `ipvsadm -ln` counts a kept
/// service's connections after a keepalived reload) until it closes. It showed 0.
#[test]
fn connections_a_reload_drains_are_counted_open() {
    let dir = tempdir();
    let backend = echo_until_eof(2);
    let port = free_port();
    let toml = |algo: &str| {
        format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"30s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"{algo}\"\n[[virtual_server.backend]]\naddress = \"{backend}\"\n",
            dir.join("admin.sock").display()
        )
    };
    let (node, sock) = start_node(&dir, &toml("rr"));
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(echoes(&mut c, b"a"));
    let open = || status(&sock)["virtual_servers"][0]["l4"]["active_connections"].clone();
    assert_eq!(open(), 1);
    reload_node(&node, &dir, &toml("wlc"));
    wait_scheduler(&sock, &dir, "wlc");
    assert!(echoes(&mut c, b"b"), "the drained connection still works");
    assert_eq!(open(), 1, "{}", status(&sock));
    drop(c);
    assert!(
        wait_until(Duration::from_secs(5), || open() == 0),
        "{}",
        status(&sock)
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lbctl backend` and `lbctl weight` name a virtual server by its name or, as ipvsadm
/// names a service, by its listen address (`/udp` or `/tcp` after it where both
/// protocols share it); a name that matches none says which there are.
#[test]
fn lbctl_finds_a_virtual_server_by_its_listen_address() {
    let dir = tempdir();
    let backend = echo_until_eof(1);
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n[[virtual_server.backend]]\naddress = \"{backend}\"\n\n[[virtual_server]]\nname = \"dns\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"udp\"\n[[virtual_server.backend]]\naddress = \"{backend}\"\n",
        dir.join("admin.sock").display()
    );
    let (node, sock) = start_node(&dir, &toml);
    let lbctl = |args: &[&str]| {
        Command::new(LBCTL)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let vip = format!("127.0.0.1:{port}");
    let b = backend.to_string();
    // Both listen there: ambiguous without the protocol.
    let out = lbctl(&["backend", "drain", &vip, &b]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("several virtual servers (web, dns)"), "{err}");
    let out = lbctl(&["backend", "drain", &format!("{vip}/tcp"), &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = |i: usize| status(&sock)["virtual_servers"][i]["backends"][0]["admin"].clone();
    assert_eq!(admin(0), "drain", "{}", status(&sock));
    assert_eq!(admin(1), "ready", "{}", status(&sock));
    let out = lbctl(&["weight", &format!("{vip}/udp"), &b, "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status(&sock)["virtual_servers"][1]["backends"][0]["weight"],
        3
    );
    let out = lbctl(&["backend", "ready", "nope", &b]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(virtual servers: web, dns)"), "{err}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGUSR1 and SIGUSR2 (keepalived's data and stats dumps) write `lbctl status`'s text and
/// JSON to `--data-file` and `--stats-file`, and the node runs on (without handlers they
/// ended it like a crash, its VIPs left behind).
#[test]
fn sigusr1_and_sigusr2_write_the_dumps_and_the_node_runs_on() {
    let dir = tempdir();
    let backend = echo_until_eof(1);
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n[[virtual_server.backend]]\naddress = \"{backend}\"\n",
        dir.join("admin.sock").display()
    );
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, toml).unwrap();
    let (data, stats) = (dir.join("lb.data"), dir.join("lb.stats"));
    let (mut node, sock) = start_node_args(
        &dir,
        &cfg,
        &[
            "--data-file".as_ref(),
            data.as_os_str(),
            "--stats-file".as_ref(),
            stats.as_os_str(),
        ],
    );
    let signal = |name: &str| {
        let ok = Command::new("kill")
            .args([name, &node.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-USR1");
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&data)
                .is_ok_and(|t| t.contains(&format!("TCP  127.0.0.1:{port} rr web")))
        }),
        "{:?}; log: {}",
        std::fs::read_to_string(&data),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    signal("-USR2");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&stats)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["virtual_servers"][0]["name"] == "web")),
        "{:?}",
        std::fs::read_to_string(&stats)
    );
    // Still running and answering.
    std::thread::sleep(Duration::from_millis(200));
    assert!(node.0.try_wait().unwrap().is_none(), "lb-node ended");
    assert_eq!(status(&sock)["virtual_servers"][0]["name"], "web");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn maxconn_is_per_backend() {
    let dir = tempdir();
    let a = echo_until_eof(4);
    let b = echo_until_eof(4);
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"rr\"\n[[virtual_server.backend]]\naddress = \"{a}\"\nmaxconn = 1\n[[virtual_server.backend]]\naddress = \"{b}\"\n",
        dir.join("admin.sock").display()
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..4u8 {
        let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(&[i]).unwrap();
        let mut got = [0u8; 1];
        c.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: {e}: {}", status(&sock)));
        held.push(c);
    }
    let active =
        |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["active_connections"].clone();
    assert_eq!(
        (active(0), active(1)),
        (1.into(), 3.into()),
        "{}",
        status(&sock)
    );
    // Without router_id the node is named after the host, as keepalived names it (it
    // showed nothing).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(status(&sock)["node"]["router_id"], host.trim());
    drop(held);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn passive_health_ejects_a_dead_backend_without_client_errors() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let (a_addr, b_addr) = (a.addr, b.addr);
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "rr"
retries = 2
connect_timeout = "1s"

[[virtual_server.backend]]
address = "{a_addr}"

[[virtual_server.backend]]
address = "{b_addr}"
"#,
        sock = dir.join("admin.sock").display()
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = get(vip).unwrap();
        seen.insert(r.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned());
    }
    assert_eq!(
        seen.len(),
        2,
        "round robin reaches both real servers: {seen:?}"
    );

    drop(b); // the real server dies; there is no active check
    let mut failures = 0;
    for _ in 0..20 {
        match get(vip) {
            Ok(r) if r.ends_with("\r\n\r\na") => {}
            other => {
                failures += 1;
                eprintln!("client saw {other:?}");
            }
        }
    }
    assert_eq!(failures, 0, "retries on the live backend hide the dead one");
    let ejected = wait_until(Duration::from_secs(5), || {
        let s = status(&sock);
        s["virtual_servers"][0]["backends"][1]["health"] == "down"
    });
    assert!(
        ejected,
        "passive health did not eject {b_addr}: {}",
        status(&sock)
    );
    let s = status(&sock);
    assert_eq!(s["virtual_servers"][0]["backends"][0]["health"], "up");
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Real servers a (on a port below the ephemeral range: no other test's bind or connect
/// takes it while a is away, so it can come back on it) and b behind virtual server "web"
/// (rr, connect_timeout 1 s, passive health on): the test's directory, a, b, the node, its
/// admin socket and the virtual server's address.
fn node_before_a_and_b() -> (
    TestDir,
    RealServer,
    RealServer,
    Node,
    std::path::PathBuf,
    SocketAddr,
) {
    let dir = tempdir();
    let a = RealServer::start_on(
        SocketAddr::from(([127, 0, 0, 1], lb_testkit::ports::unused_port())),
        "a",
    );
    let b = RealServer::start("b");
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"rr\"\nconnect_timeout = \"1s\"\n[[virtual_server.backend]]\naddress = \"{}\"\n[[virtual_server.backend]]\naddress = \"{}\"\n",
        dir.join("admin.sock").display(),
        a.addr,
        b.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    (dir, a, b, node, sock, vip)
}

/// Passive health does not eject the last backend that serves: with b drained (lbctl),
/// a that refuses connections for a while stays in, so the virtual server serves again as
/// soon as a is back. It was ejected (the ceiling, half of two backends, counted the
/// drained one as in) and the virtual server served nothing for base_ejection_time, 30 s.
#[test]
fn passive_health_keeps_the_last_serving_backend() {
    let (dir, a, b, node, sock, vip) = node_before_a_and_b();
    let (a_addr, b_addr) = (a.addr, b.addr);
    lbctl_backend(&sock, "drain", "web", b_addr);
    assert!(get(vip).is_ok_and(|r| r.ends_with("\r\n\r\na")));
    drop(a);
    // Well past consecutive_failures (5): every connect to a is refused.
    for _ in 0..10 {
        assert!(!get(vip).is_ok_and(|r| r.ends_with("\r\n\r\na")));
    }
    let a = RealServer::start_on(a_addr, "a");
    assert!(
        wait_until(Duration::from_secs(3), || get(vip)
            .is_ok_and(|r| r.ends_with("\r\n\r\na"))),
        "a is back but not served: {}",
        status(&sock)
    );
    let s = status(&sock);
    assert_eq!(
        s["virtual_servers"][0]["backends"][0]["health"], "up",
        "{s}"
    );
    drop(node);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ejection ends when nothing else serves: a, refusing connections, is ejected while
/// b serves; then b is drained (lbctl), and a comes back in at once rather than after
/// base_ejection_time (30 s), in which the virtual server would have served nothing.
#[test]
fn passive_health_takes_an_ejected_backend_back_when_nothing_else_serves() {
    let (dir, a, b, node, sock, vip) = node_before_a_and_b();
    let (a_addr, b_addr) = (a.addr, b.addr);
    drop(a);
    // Redispatched to b, each; a's refused connects eject it (consecutive_failures 5).
    let ejected = wait_until(Duration::from_secs(5), || {
        assert!(get(vip).is_ok_and(|r| r.ends_with("\r\n\r\nb")));
        status(&sock)["virtual_servers"][0]["backends"][0]["health"] == "down"
    });
    assert!(ejected, "a was not ejected: {}", status(&sock));
    let a = RealServer::start_on(a_addr, "a");
    lbctl_backend(&sock, "drain", "web", b_addr);
    assert!(
        wait_until(Duration::from_secs(3), || get(vip)
            .is_ok_and(|r| r.ends_with("\r\n\r\na"))),
        "b is drained and a is up, but a is not served: {}",
        status(&sock)
    );
    assert_eq!(
        status(&sock)["virtual_servers"][0]["backends"][0]["health"],
        "up"
    );
    drop(node);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn http_mode_balances_per_request_and_counts_per_backend() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"
# One event loop, as the HTTP benchmark runs it (HAProxy `nbthread 1`).
nbthread = 1

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "http"
lb_algo = "rr"

[[virtual_server.backend]]
address = "{a}"

[[virtual_server.backend]]
address = "{b}"
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
        b = b.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let bodies: Vec<String> = (0..6)
        .map(|_| {
            get(vip)
                .unwrap()
                .rsplit("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(bodies, ["a", "b", "a", "b", "a", "b"]);
    let s = status(&sock);
    for i in 0..2 {
        let backend = &s["virtual_servers"][0]["backends"][i];
        let http = &backend["http"];
        assert_eq!(http["requests"], 3, "{s}");
        assert_eq!(http["responses_2xx"], 3, "{s}");
        // Requests are what an HTTP backend's connection columns count (HAProxy's stot and
        // scur in `mode http`); they stayed 0, so a drain's end could not be seen.
        assert_eq!(
            (
                backend["total_connections"].as_u64(),
                backend["active_connections"].as_u64()
            ),
            (Some(3), Some(0)),
            "{s}"
        );
    }
    // The virtual server's own HTTP counters: six connections (`Connection: close`), six
    // requests, no error.
    let vs = &s["virtual_servers"][0]["http"];
    assert_eq!(
        (vs["connections"].as_u64(), vs["requests"].as_u64()),
        (Some(6), Some(6)),
        "{s}"
    );
    assert_eq!(vs["bad_gateway"], 0, "{s}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two HTTP virtual servers: `web` on `web` (port, backend) with `web_http` (its HTTP table
/// and routes), and `api` on `api` (port, backend); the admin socket in `dir`.
fn web_routing_to_api(
    dir: &Path,
    web: (u16, SocketAddr),
    api: (u16, SocketAddr),
    web_http: &str,
) -> String {
    format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{}"
protocol = "http"

{web_http}
[[virtual_server.backend]]
address = "{}"

[[virtual_server]]
name = "api"
listen = "127.0.0.1:{}"
protocol = "http"

[[virtual_server.backend]]
address = "{}"
"#,
        web.0,
        web.1,
        api.0,
        api.1,
        sock = dir.join("admin.sock").display(),
    )
}

/// A reload that restarts a route target (`api`, its backend moved) and gives the router
/// (`web`) a new address it cannot bind: `web` keeps its previous configuration, started
/// anew with `api`'s new pool, so routed requests follow `api`'s new backend and `lbctl` on
/// it. It went on with its previous version, which held the retired `api`'s pool (the old
/// backend, checks stopped, deaf to `lbctl`).
#[test]
fn a_router_that_cannot_restart_follows_its_restarted_target() {
    let dir = tempdir();
    let a = RealServer::echo("a");
    let b = RealServer::echo("b");
    let c = RealServer::echo("c");
    let (front_port, api_port) = (free_port(), free_port());
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let config = |web_port: u16, api_backend: SocketAddr| {
        web_routing_to_api(
            &dir,
            (web_port, a.addr),
            (api_port, api_backend),
            "[[virtual_server.http.route]]\npath_prefix = \"/api\"\nvirtual_server = \"api\"\n",
        )
    };
    let (node, sock) = start_node(&dir, &config(front_port, b.addr));
    let front: SocketAddr = format!("127.0.0.1:{front_port}").parse().unwrap();
    assert!(body(&request(front, "t", "/api/x").unwrap()).starts_with("b\n"));

    reload_node(&node, &dir, &config(busy_port, c.addr));
    assert!(
        wait_until(Duration::from_secs(10), || status(&sock)["node"]
            ["last_reload"]["result"]
            == "partial"),
        "{}\n{}",
        status(&sock),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    // Still on its old address, routing to api's new backend.
    let r = request(front, "t", "/api/x").unwrap();
    assert!(
        body(&r).starts_with("c\n"),
        "the router kept the retired target's pool: {r}\n{}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    assert!(body(&request(front, "t", "/").unwrap()).starts_with("a\n"));
    lbctl_backend(&sock, "maint", "api", c.addr);
    let r = request(front, "t", "/api/x").unwrap();
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    drop(busy);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP front virtual server routes `/api` and `Host: api.example.com` to a second HTTP
/// virtual server's backend, everything else to its own; its `forwardfor = false` applies to
/// every request it forwards (the target, reached directly, still adds X-Forwarded-For);
/// `lbctl status` counts the routed requests on the target's backend, and `lbctl backend
/// maint` on it steers routed requests too. A reload that changes
/// the target's backend restarts the front too, which then routes to the new backend.
#[test]
fn http_routes_send_requests_to_another_virtual_servers_backends() {
    let dir = tempdir();
    let a = RealServer::echo("a");
    let b = RealServer::echo("b");
    let c = RealServer::echo("c");
    let (front_port, api_port) = (free_port(), free_port());
    let config = |api_backend: SocketAddr| {
        web_routing_to_api(
            &dir,
            (front_port, a.addr),
            (api_port, api_backend),
            r#"[virtual_server.http]
forwardfor = false
timeout_server = "2s"

[[virtual_server.http.route]]
path_prefix = "/api"
virtual_server = "api"

[[virtual_server.http.route]]
host = "api.example.com"
virtual_server = "api"
"#,
        )
    };
    let (node, sock) = start_node(&dir, &config(b.addr));
    let front: SocketAddr = format!("127.0.0.1:{front_port}").parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();

    let routed = request(front, "www.example.com", "/api/x").unwrap();
    let routed = body(&routed).to_ascii_lowercase();
    assert!(routed.starts_with("b\nget /api/x "), "{routed}");
    assert!(
        !routed.contains("x-forwarded-for:"),
        "forwardfor = false: {routed}"
    );
    assert!(routed.contains("x-forwarded-proto: http"), "{routed}");

    let by_host = request(front, "API.example.com:8080", "/").unwrap();
    assert!(body(&by_host).starts_with("b\n"), "{by_host}");

    let own = request(front, "www.example.com", "/other").unwrap();
    let own = body(&own).to_ascii_lowercase();
    assert!(own.starts_with("a\nget /other "), "{own}");
    assert!(!own.contains("x-forwarded-for:"), "{own}");

    // The target's own listener has the default settings: X-Forwarded-For is added.
    let direct = request(api, "t", "/api/x").unwrap();
    let direct = body(&direct).to_ascii_lowercase();
    assert!(direct.starts_with("b\n"), "{direct}");
    assert!(direct.contains("x-forwarded-for: 127.0.0.1"), "{direct}");

    // lbctl: the two routed requests and the direct one count on api's backend, the other
    // on web's own.
    let s = status(&sock);
    let vs = |name: &str| {
        s["virtual_servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {s}"))
    };
    let web_a = &vs("web")["backends"][0];
    assert_eq!(web_a["address"], a.addr.to_string(), "{s}");
    assert_eq!(web_a["http"]["requests"], 1, "{s}");
    assert_eq!(vs("web")["backends"].as_array().unwrap().len(), 1, "{s}");
    let api_b = &vs("api")["backends"][0];
    assert_eq!(api_b["address"], b.addr.to_string(), "{s}");
    assert_eq!(api_b["http"]["requests"], 3, "{s}");
    assert_eq!(api_b["http"]["responses_2xx"], 3, "{s}");

    // The front uses api's pool itself: taking api's backend out of service with lbctl
    // steers routed requests at once (no backend left: 503), and back.
    let lbctl_backend = |action: &str| lbctl_backend(&sock, action, "api", b.addr);
    lbctl_backend("maint");
    let r = request(front, "www.example.com", "/api/x").unwrap();
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(body(&request(front, "t", "/").unwrap()).starts_with("a\n"));
    lbctl_backend("ready");
    let r = request(front, "www.example.com", "/api/x").unwrap();
    assert!(body(&r).starts_with("b\n"), "{r}");

    // Reload with api's backend moved to c: api restarts, and so does web (it routes to
    // api), so /api on the front reaches c, not a stale pool.
    reload_node(&node, &dir, &config(c.addr));
    let mut last = String::new();
    let moved = wait_until(Duration::from_secs(10), || {
        last = request(front, "www.example.com", "/api/x").unwrap_or_default();
        body(&last).starts_with("c\n")
    });
    assert!(
        moved,
        "front still routes to the old pool: {last}\n{}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    assert!(body(&request(front, "t", "/").unwrap()).starts_with("a\n"));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `timeout_server` takes effect: against a backend that accepts (the kernel completes the
/// handshake) but never answers, the client gets 504 after the configured 300 ms, not
/// lb-proxy's default 30 s.
#[test]
fn http_timeout_server_gives_504_against_a_silent_backend() {
    let dir = tempdir();
    // Bound and listening, never accepted: connects succeed, no response ever comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "slow"
listen = "127.0.0.1:{port}"
protocol = "http"
retries = 0

[virtual_server.http]
timeout_server = "300ms"

[[virtual_server.backend]]
address = "{backend}"
"#,
        sock = dir.join("admin.sock").display(),
        backend = silent.local_addr().unwrap(),
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    let r = get(vip).unwrap();
    let took = t.elapsed();
    assert!(r.starts_with("HTTP/1.1 504"), "{r}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "504 after {took:?}"
    );
    // The request reached the backend; the 504 is the proxy's, not a backend response.
    let s = status(&sock);
    let http = &s["virtual_servers"][0]["backends"][0]["http"];
    assert_eq!(
        (&http["requests"], &http["responses_5xx"], &http["timeouts"]),
        (&1.into(), &0.into(), &1.into()),
        "{s}"
    );
    drop(node);
    drop(silent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that restarts virtual servers (a new `lb_algo` needs a new proxy) refuses no
/// client connection: the replacement accepts on a duplicate of the running listening
/// socket before the old proxy stops, for TCP and HTTP virtual servers alike. Two client
/// threads connect in a loop through six reloads; every request must get its 200.
#[test]
fn reload_restarting_virtual_servers_refuses_no_connection() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let (tcp_port, http_port) = (free_port(), free_port());
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "tcp"
listen = "127.0.0.1:{tcp_port}"
protocol = "tcp"
lb_algo = "{algo}"
[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend]]
address = "{b}"

[[virtual_server]]
name = "http"
listen = "127.0.0.1:{http_port}"
protocol = "http"
lb_algo = "{algo}"
[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend]]
address = "{b}"
"#,
            sock = dir.join("admin.sock").display(),
            a = a.addr,
            b = b.addr
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [tcp_port, http_port]
        .into_iter()
        .map(|port| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                let (mut ok, mut failed) = (0u32, Vec::new());
                let started = Instant::now();
                // Bounded: stops when told, after 60 s, or after 100 000 requests.
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(60)
                    && ok < 100_000
                {
                    match get(addr) {
                        Ok(r) if r.starts_with("HTTP/1.1 200") => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (port, ok, failed)
            })
        })
        .collect();

    for algo in ["wrr", "rr", "wrr", "rr", "wrr", "rr"] {
        std::thread::sleep(Duration::from_millis(150));
        reload_node(&node, &dir, &config(algo));
        let applied = wait_until(Duration::from_secs(10), || {
            let s = status(&sock);
            (0..2).all(|i| s["virtual_servers"][i]["scheduler"] == algo)
        });
        assert!(applied, "reload to {algo} not applied: {}", status(&sock));
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let (port, ok, failed) = c.join().unwrap();
        assert!(ok > 0, "no request through port {port}");
        assert!(
            failed.is_empty(),
            "port {port}: {} of {} requests failed across reloads, first: {}\n{}",
            failed.len(),
            ok as usize + failed.len(),
            failed[0],
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several checks of one real server all run, and it stays up only while every one passes
/// (keepalived): a TCP check that passes with a MISC_CHECK that fails takes it down; with a
/// MISC_CHECK that passes it stays up.
#[test]
fn every_check_of_a_backend_must_pass() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "rr"
delay_loop = "100ms"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend.check]]
type = "tcp"
[[virtual_server.backend.check]]
type = "misc"
misc_path = "/bin/true"

[[virtual_server.backend]]
address = "{b}"
[[virtual_server.backend.check]]
type = "tcp"
[[virtual_server.backend.check]]
type = "misc"
misc_path = "/bin/false"
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
        b = b.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let down = wait_until(Duration::from_secs(10), || {
        status(&sock)["virtual_servers"][0]["backends"][1]["health"] == "down"
    });
    let s = status(&sock);
    assert!(down, "b's failing MISC_CHECK did not take it down: {s}");
    // a: both pass, over several rounds.
    std::thread::sleep(Duration::from_millis(500));
    let s = status(&sock);
    assert_eq!(
        s["virtual_servers"][0]["backends"][0]["health"], "up",
        "{s}"
    );
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..4 {
        assert_eq!(body(&get(vip).unwrap()), "a");
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[virtual_server.tcp]` in TOML: `accept_proxy` takes the client address from the PROXY
/// header another load balancer sent, and `send_proxy = "v1"` tells the backend (HAProxy
/// `accept-proxy` + `send-proxy`); a client without a header is closed. The backend here
/// answers with the first line it received.
#[test]
fn tcp_virtual_server_sends_and_accepts_the_proxy_protocol() {
    let dir = tempdir();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    backend.set_nonblocking(true).unwrap();
    let b_addr = backend.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            match backend.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut got = Vec::new();
                    let mut byte = [0u8; 1];
                    while !got.ends_with(b"\r\n") && got.len() < 256 {
                        match c.read(&mut byte) {
                            Ok(1) => got.push(byte[0]),
                            _ => break,
                        }
                    }
                    let _ = c.write_all(&got);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\n[virtual_server.tcp]\nsend_proxy = \"v1\"\naccept_proxy = true\naccept_proxy_timeout = \"1s\"\n[[virtual_server.backend]]\naddress = \"{b_addr}\"\n",
        dir.join("admin.sock").display(),
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"PROXY TCP4 203.0.113.7 198.18.0.250 5555 80\r\n")
        .unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert_eq!(
        got,
        "PROXY TCP4 203.0.113.7 198.18.0.250 5555 80\r\n",
        "{}",
        log()
    );
    // Without a header: closed when its time is up, the backend never reached.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // lbctl status counts it (and the connection that got through).
    let l4 = status(&sock)["virtual_servers"][0]["l4"].clone();
    assert_eq!(
        (
            l4["connections"].as_u64(),
            l4["proxy_header_errors"].as_u64()
        ),
        (Some(2), Some(1)),
        "{l4}"
    );
    drop(node);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A daemon that stops removes its admin socket only if it is still the one it made: when
/// the file was deleted and another lb-node took the path meanwhile, the first one's stop
/// left that one running without a socket (unreachable by lbctl).
#[test]
fn a_stopping_node_leaves_another_nodes_admin_socket_alone() {
    let dir = tempdir();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n",
        dir.join("admin.sock").display()
    );
    let (mut first, sock) = start_node(&dir, &toml);
    std::fs::remove_file(&sock).unwrap();
    let second = Node(
        lb_node_command()
            .arg("--pid-file")
            .arg(dir.join("second.pid"))
            .arg(dir.join("node.toml"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("second.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "{}",
        std::fs::read_to_string(dir.join("second.log")).unwrap_or_default()
    );
    let term = Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exited = wait_until(Duration::from_secs(10), || {
        first.0.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the first node did not stop");
    assert!(sock.exists(), "the second node's socket was deleted");
    assert_eq!(status(&sock)["node"]["version"], "0.1.0");
    drop(second);
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `set_backend_weight` is answered once the weight is applied: a `status` right after it
/// on the same admin connection shows it (it showed the previous weight, as the health
/// applier task had not run yet), with one event-loop thread as with several.
#[test]
fn a_weight_change_is_answered_once_applied() {
    use std::io::BufRead;
    for threads in [1, 2] {
        let dir = tempdir();
        let port = free_port();
        let toml = format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\nnbthread = {threads}\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n[[virtual_server.backend]]\naddress = \"127.0.0.1:9\"\nweight = 50\n",
            dir.join("admin.sock").display()
        );
        let (node, sock) = start_node(&dir, &toml);
        let c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = c.try_clone().unwrap();
        let mut r = std::io::BufReader::new(c);
        let mut answer = || {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        };
        for weight in [7, 8, 9] {
            // Both lines at once, as a client that pipelines them.
            let set = format!(
                r#"{{"command":"set_backend_weight","virtual_server":"web","backend":"127.0.0.1:9","weight":{weight}}}"#
            );
            let status = r#"{"command":"status"}"#;
            w.write_all(format!("{set}\n{status}\n").as_bytes())
                .unwrap();
            let set = answer();
            assert_eq!(set["result"], "ok", "{set}");
            let st = answer();
            assert_eq!(
                st["status"]["virtual_servers"][0]["backends"][0]["weight"], weight,
                "nbthread {threads}: {st}"
            );
        }
        drop(node);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A reload that moves five virtual servers to addresses another program holds waits for
/// the binds once, not 2 s for each one after another: a SIGTERM sent during it stopped
/// the node after about 10 s.
#[test]
fn a_reload_waits_for_busy_addresses_once_in_all() {
    let dir = tempdir();
    let held: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind(("127.0.0.1", free_port())).unwrap())
        .collect();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let config = |ports: &[u16]| {
        let mut t = format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n",
            dir.join("admin.sock").display()
        );
        for (i, p) in ports.iter().enumerate() {
            t.push_str(&format!(
                "[[virtual_server]]\nname = \"v{i}\"\nlisten = \"127.0.0.1:{p}\"\n[[virtual_server.backend]]\naddress = \"127.0.0.1:9\"\n"
            ));
        }
        t
    };
    let (mut node, sock) = start_node(&dir, &config(&ports));
    let busy: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    reload_node(&node, &dir, &config(&busy));
    std::thread::sleep(Duration::from_millis(200));
    let term = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(
        wait_until(Duration::from_secs(20), || node
            .0
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "the node did not stop"
    );
    let took = term.elapsed();
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after SIGTERM:\n{log}"
    );
    assert!(log.contains("v4"), "{log}");
    drop(held);
    drop(sock);
    let _ = std::fs::remove_dir_all(&dir);
}

/// HAProxy's `check-send-proxy` behind nginx's `listen … proxy_protocol`, which takes
/// only connections that open with a PROXY header. A virtual server with `send_proxy`
/// sends one on its checks too when they go to the traffic port (v2 `LOCAL`, v1 `PROXY
/// UNKNOWN`), so its HTTP check passes and clients reach nginx with their own address;
/// `check_send_proxy = false` sends none (nginx refuses the check); a check on another
/// port (`connect_port`, a plain listener) sends none by default.
#[test]
fn checks_send_the_proxy_header_of_a_send_proxy_virtual_server() {
    let dir = tempdir();
    let (pp, plain) = (free_port(), free_port());
    let nginx = Nginx::start(
        &dir.join("nginx"),
        &format!(
            "  server {{ listen 127.0.0.1:{pp} proxy_protocol; location / {{ return 200 \"pp=$proxy_protocol_addr\\n\"; }} }}\n\
               server {{ listen 127.0.0.1:{plain}; location / {{ return 200 \"plain\\n\"; }} }}"
        ),
        &[pp, plain],
    )
    .expect("nginx (Debian's nginx-light, installed by .ci/run)");
    let (v2, v1_off, v1_port) = (free_port(), free_port(), free_port());
    let vs = |name: &str, port: u16, version: &str, check: &str| {
        format!(
            "[[virtual_server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\ndelay_loop = \"200ms\"\nalpha = true\n\
             [virtual_server.tcp]\nsend_proxy = \"{version}\"\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:{pp}\"\n\
             [[virtual_server.backend.check]]\ntype = \"http\"\nurl = [{{ path = \"/\" }}]\nconnect_timeout = \"1s\"\n{check}\n"
        )
    };
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}{}{}",
        dir.join("admin.sock").display(),
        vs("v2", v2, "v2", ""),
        vs("v1-off", v1_off, "v1", "check_send_proxy = false"),
        vs("v1-port", v1_port, "v1", &format!("connect_port = {plain}")),
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default() + &nginx.log();
    let health = |i: usize| status(&sock)["virtual_servers"][i]["backends"][0]["health"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health(0) == "up"
            && health(2) == "up"),
        "{}",
        log()
    );
    // Its checks keep failing: nginx closes a connection without a header.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(health(1), "down", "{}", log());
    let reason = status(&sock)["virtual_servers"][1]["backends"][0]["health_reason"].clone();
    assert!(
        reason.as_str().is_some_and(|r| r.contains("closed")),
        "{reason}"
    );
    // Traffic: nginx learns the client's address from the header of each connection.
    let vip: SocketAddr = format!("127.0.0.1:{v2}").parse().unwrap();
    assert_eq!(body(&get(vip).unwrap()), "pp=127.0.0.1\n", "{}", log());
    drop(node);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a fresh self-signed EC certificate for `name` (and its key) with the openssl
/// command (Debian's `openssl`, installed by .ci/run).
fn self_signed(cert: &Path, key: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl https://www.example.com:PORT/` to 127.0.0.1, trusting only `ca`: the response
/// (headers and body), or curl's error.
fn curl_https(port: u16, ca: &Path) -> Result<String, String> {
    curl_https_to("www.example.com", port, ca)
}

/// `curl https://HOST:PORT/` to 127.0.0.1, trusting only `ca`.
fn curl_https_to(host: &str, port: u16, ca: &Path) -> Result<String, String> {
    curl(&[
        "--cacert",
        &ca.display().to_string(),
        "--resolve",
        &format!("{host}:{port}:127.0.0.1"),
        &format!("https://{host}:{port}/"),
    ])
}

/// An HTTPS listener (`tls_certificate`, `tls_key`, a `tls_sni` certificate): curl gets the
/// backend's answer over TLS, the backend sees `X-Forwarded-Proto: https`; a client asking
/// for the SNI certificate's name gets that one; a renewed certificate written over the old
/// files is served after SIGHUP (the old one no longer); a plain HTTP client is closed and
/// counted in `lbctl status`.
#[test]
fn https_virtual_server_terminates_tls_and_takes_a_renewed_certificate() {
    let dir = tempdir();
    let (cert, key) = (dir.join("site.pem"), dir.join("site.key"));
    self_signed(&cert, &key, "www.example.com");
    let (api, api_key) = (dir.join("api.pem"), dir.join("api.key"));
    self_signed(&api, &api_key, "api.example.com");
    let first = dir.join("first.pem");
    std::fs::copy(&cert, &first).unwrap();
    let a = RealServer::echo("a");
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n\
         [[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
         [virtual_server.http]\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n\
         [[virtual_server.http.tls_sni]]\ncertificate = \"api.pem\"\nkey = \"api.key\"\n\
         [[virtual_server.backend]]\naddress = \"{}\"\n",
        dir.join("admin.sock").display(),
        cert.display(),
        key.display(),
        a.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let got = curl_https(port, &first).unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let head = got.to_ascii_lowercase();
    assert!(head.contains("x-forwarded-proto: https\r\n"), "{got}");
    assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n"), "{got}");
    // SNI: the other certificate (its paths relative to the configuration's directory).
    let got = curl_https_to("api.example.com", port, &api).unwrap_or_else(|e| panic!("{e}"));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(curl_https_to("api.example.com", port, &first).is_err());

    // Plain HTTP to the HTTPS port: no HTTP answer, counted.
    let plain: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(!get(plain).unwrap_or_default().starts_with("HTTP"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            // That one, and the curl above that did not trust the SNI certificate.
            status(&sock)["virtual_servers"][0]["http"]["tls_handshake_errors"] == 2
        }),
        "{}",
        status(&sock)
    );

    // Renewal: new files at the same paths, then a reload.
    self_signed(&cert, &key, "www.example.com");
    reload_node(&node, &dir, &toml);
    assert!(
        wait_until(Duration::from_secs(10), || curl_https(port, &cert).is_ok()),
        "the renewed certificate is not served: {}",
        log()
    );
    assert!(
        curl_https(port, &first).is_err(),
        "the old certificate is still served"
    );
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `curl ARGS…` with a 5 s bound: the response (headers and body), or curl's error.
fn curl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `http2 = true`: curl (nghttp2) speaks HTTP/2 to an HTTPS virtual server (ALPN `h2`) and,
/// with prior knowledge, to a plain one; the real server gets each request in HTTP/1.1 with
/// the `Host` from `:authority`, the forwarded headers and curl's two cookies on one
/// `Cookie` line (whether curl sends them as one field or two); an HTTP/1.1
/// client is still served; `lbctl status` counts the HTTP/2 connections.
#[test]
fn http2_virtual_servers_serve_http2_clients() {
    let dir = tempdir();
    let (cert, key) = (dir.join("site.pem"), dir.join("site.key"));
    self_signed(&cert, &key, "www.example.com");
    let a = RealServer::echo("a");
    let (secure, plain) = (free_port(), free_port());
    let vs = |name: &str, port: u16, tls: &str| {
        format!(
            "[[virtual_server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
             [virtual_server.http]\nhttp2 = true\n{tls}\n\
             [[virtual_server.backend]]\naddress = \"{}\"\n\n",
            a.addr
        )
    };
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}{}",
        dir.join("admin.sock").display(),
        vs(
            "secure",
            secure,
            &format!(
                "tls_certificate = \"{}\"\ntls_key = \"{}\"",
                cert.display(),
                key.display()
            )
        ),
        vs("plain", plain, ""),
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();

    let resolve = format!("www.example.com:{secure}:127.0.0.1");
    let url = format!("https://www.example.com:{secure}/s");
    let cacert = cert.display().to_string();
    let got = curl(&[
        "--http2",
        "--cacert",
        &cacert,
        "--resolve",
        &resolve,
        "-H",
        "cookie: a=1",
        "-H",
        "cookie: b=2",
        &url,
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert!(got.starts_with("HTTP/2 200"), "{got}");
    // The echo body: the head the real server got.
    let head = got.to_ascii_lowercase();
    assert!(head.contains("\nget /s http/1.1\r\n"), "{got}");
    assert!(
        head.contains(&format!("\r\nhost: www.example.com:{secure}\r\n")),
        "{got}"
    );
    assert!(head.contains("\r\nx-forwarded-proto: https\r\n"), "{got}");
    assert!(head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{got}");
    assert!(head.contains("\r\ncookie: a=1; b=2\r\n"), "{got}");
    // HTTP/1.1 on the same listener.
    let got = curl(&[
        "--http1.1",
        "--cacert",
        &cacert,
        "--resolve",
        &resolve,
        &url,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    let got = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{plain}/p"),
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert!(got.starts_with("HTTP/2 200"), "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains("\r\nx-forwarded-proto: http\r\n"),
        "{got}"
    );
    let st = status(&sock);
    let http = |i: usize| st["virtual_servers"][i]["http"].clone();
    assert_eq!(
        (
            http(0)["http2_connections"].as_u64(),
            http(0)["connections"].as_u64()
        ),
        (Some(1), Some(2)),
        "{st}"
    );
    assert_eq!(http(1)["http2_connections"].as_u64(), Some(1), "{st}");
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `backend_http2 = true` against nginx's HTTP/2 listeners (`listen … http2`: h2c with
/// prior knowledge in plain TCP, ALPN `h2` over TLS with `backend_tls`): HTTP/1.1 clients'
/// requests reach nginx in HTTP/2 with their Host as `:authority` and the forwarded
/// headers, and requests from three client connections share one connection to nginx
/// (its `$connection` serial number). Their HTTP checks, `check_proto = "h2"` (HAProxy's
/// `check-proto h2`), take the real servers up from `alpha`; an HTTP/1.1 check of the same
/// h2c port keeps its real server down.
#[test]
fn backend_http2_speaks_http2_to_nginx() {
    let dir = tempdir();
    let (cert, key) = (dir.join("backend.pem"), dir.join("backend.key"));
    self_signed(&cert, &key, "backend.internal");
    let (h2c, h2tls) = (free_port(), free_port());
    let body =
        "return 200 \"$server_protocol conn=$connection host=$host xff=$http_x_forwarded_for\\n\";";
    let nginx = Nginx::start(
        &dir.join("nginx"),
        &format!(
            "  server {{ listen 127.0.0.1:{h2c} http2; location / {{ {body} }} }}\n             server {{ listen 127.0.0.1:{h2tls} ssl http2; ssl_certificate {}; ssl_certificate_key {}; \
             location / {{ {body} }} }}",
            cert.display(),
            key.display()
        ),
        &[h2c, h2tls],
    )
    .expect("nginx (Debian's nginx-light, installed by .ci/run)");
    let (plain, secure, h1check) = (free_port(), free_port(), free_port());
    let vs = |name: &str, port: u16, backend: u16, extra: &str, check: &str| {
        format!(
            "[[virtual_server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
             delay_loop = \"100ms\"\n\
             [virtual_server.http]\nbackend_http2 = true\n{extra}\n\
             [[virtual_server.backend]]\naddress = \"127.0.0.1:{backend}\"\n\
             [[virtual_server.backend.check]]\n{check}\nalpha = true\n\
             url = [{{ path = \"/x\", virtualhost = \"hc.internal\" }}]\n\n"
        )
    };
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}{}{}",
        dir.join("admin.sock").display(),
        vs(
            "h2c",
            plain,
            h2c,
            "",
            "type = \"http\"\ncheck_proto = \"h2\""
        ),
        vs(
            "h2tls",
            secure,
            h2tls,
            "backend_tls = true\nbackend_verify = \"none\"",
            "type = \"ssl\"\ncheck_proto = \"h2\""
        ),
        // An HTTP/1.1 check against nginx's HTTP/2-only port fails.
        vs("h1check", h1check, h2c, "", "type = \"http\""),
    );
    let (node, sock) = start_node(&dir, &toml);
    // The checks start down (alpha): the first two pass over HTTP/2; the third never does.
    let health_of = |i: usize| status(&sock)["virtual_servers"][i]["backends"][0].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health_of(0)["health"] == "up"
            && health_of(1)["health"] == "up"),
        "{} {}",
        health_of(0),
        health_of(1)
    );
    assert!(
        wait_until(Duration::from_secs(10), || health_of(2)
            .to_string()
            .contains("invalid HTTP response")),
        "{}",
        health_of(2)
    );
    assert_eq!(health_of(2)["health"], "down", "{}", health_of(2));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    for port in [plain, secure] {
        let mut serials = Vec::new();
        for _ in 0..3 {
            let got = curl(&[
                "--http1.1",
                "-H",
                "host: api.example",
                &format!("http://127.0.0.1:{port}/x"),
            ])
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", log(), nginx.log()));
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
            let line = got.lines().last().unwrap_or_default().to_owned();
            assert!(
                line.starts_with("HTTP/2.0 conn=")
                    && line.ends_with(" host=api.example xff=127.0.0.1"),
                "{got}\n{}",
                nginx.log()
            );
            serials.push(line);
        }
        assert!(
            serials.iter().all(|l| *l == serials[0]),
            "one connection to nginx: {serials:?}"
        );
    }
    drop(node);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// gRPC end to end through lb-node, both peers gRPC's own C core (Debian's python3-grpcio):
/// a client on one HTTP/2 connection to a virtual server with `http2 = true` and
/// `backend_http2 = true` in front of two gRPC servers. Each call is balanced on its own
/// (both servers answer), initial and trailing metadata pass, an error status in a
/// Trailers-Only response reaches the client as the server sent it, and a bidirectional
/// stream flows.
#[test]
fn grpc_calls_pass_through_http2_virtual_servers() {
    if !lb_testkit::grpc::available() {
        return;
    }
    let dir = tempdir();
    let s1 = lb_testkit::grpc::GrpcServer::start("s1", None).unwrap();
    let s2 = lb_testkit::grpc::GrpcServer::start("s2", None).unwrap();
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n\
         [[virtual_server]]\nname = \"grpc\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
         [virtual_server.http]\nhttp2 = true\nbackend_http2 = true\n\
         [[virtual_server.backend]]\naddress = \"{}\"\n\
         [[virtual_server.backend]]\naddress = \"{}\"\n",
        dir.join("admin.sock").display(),
        s1.addr(),
        s2.addr()
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let out = lb_testkit::grpc::client(SocketAddr::from(([127, 0, 0, 1], port)), 6)
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    let mut servers = std::collections::BTreeSet::new();
    for (i, l) in lines[..6].iter().enumerate() {
        let f: Vec<&str> = l.split(' ').collect();
        // say ID:helloN ID t-ID: the answer, its initial and trailing metadata from one
        // server.
        let id = f[2];
        assert_eq!(
            f,
            ["say", &format!("{id}:hello{i}"), id, &format!("t-{id}")],
            "{out}"
        );
        servers.insert(id.to_owned());
    }
    assert_eq!(servers.len(), 2, "both servers answered: {out}");
    assert_eq!(lines[6], "fail INVALID_ARGUMENT told to fail", "{out}");
    assert!(
        ["chat s1:a s1:b s1:c", "chat s2:a s2:b s2:c"].contains(&lines[7]),
        "{out}"
    );
    let st = status(&sock);
    let http = &st["virtual_servers"][0]["http"];
    assert_eq!(http["http2_connections"].as_u64(), Some(1), "{st}");
    assert_eq!(http["bad_gateway"].as_u64(), Some(0), "{st}");
    drop(node);
    drop((s1, s2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `type = "grpc"` checks ask gRPC servers' health service (gRPC's own, Debian's
/// python3-grpcio): a server whose service turns NOT_SERVING is taken out and its calls go
/// to the other, and it is taken back once it serves again; `lbctl status` gives the
/// reason.
#[test]
fn grpc_health_checks_follow_the_servers_health_service() {
    if !lb_testkit::grpc::available() {
        return;
    }
    let dir = tempdir();
    let health = dir.join("s2.not-serving");
    let s1 = lb_testkit::grpc::GrpcServer::start("s1", None).unwrap();
    let s2 = lb_testkit::grpc::GrpcServer::start("s2", Some(&health)).unwrap();
    let port = free_port();
    let backend = |addr: SocketAddr| {
        format!(
            "[[virtual_server.backend]]\naddress = \"{addr}\"\n\
             [[virtual_server.backend.check]]\ntype = \"grpc\"\ngrpc_service = \"echo.Echo\"\n\
             virtualhost = \"echo.internal\"\n"
        )
    };
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n\
         [[virtual_server]]\nname = \"grpc\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
         delay_loop = \"100ms\"\n\
         [virtual_server.http]\nhttp2 = true\nbackend_http2 = true\n{}{}",
        dir.join("admin.sock").display(),
        backend(s1.addr()),
        backend(s2.addr()),
    );
    let (node, sock) = start_node(&dir, &toml);
    let health_of = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health_of(0)["health"] == "up"
            && health_of(1)["health"] == "up"),
        "{} {}",
        health_of(0),
        health_of(1)
    );
    std::fs::write(&health, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || health_of(1)["health"] == "down"),
        "{}",
        health_of(1)
    );
    assert!(
        health_of(1).to_string().contains("NOT_SERVING"),
        "the reason names the status: {}",
        health_of(1)
    );
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let out = lb_testkit::grpc::client(vip, 4).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("say s1:")).count(),
        4,
        "every call to s1 while s2 is out: {out}"
    );
    std::fs::remove_file(&health).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || health_of(1)["health"] == "up"),
        "{}",
        health_of(1)
    );
    drop(node);
    drop((s1, s2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each check of a real server runs on its own schedule, as keepalived's checkers: a
/// MISC_CHECK with `retry` 0 takes it down at its first failure although the TCP check
/// before it has `retry` 3 with `delay_before_retry` 2 s (one combined check on the first
/// one's schedule took 6 s), and the reason names the check.
#[test]
fn each_check_of_a_backend_keeps_its_own_retries() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let flag = dir.join("flag");
    std::fs::write(&flag, "").unwrap();
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
delay_loop = "200ms"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend.check]]
type = "tcp"
retry = 3
delay_before_retry = "2s"
[[virtual_server.backend.check]]
type = "misc"
misc_path = "test -e {flag}"
retry = 0
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
        flag = flag.display(),
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let backend = || status(&sock)["virtual_servers"][0]["backends"][0].clone();
    // Established: both checks have passed.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(backend()["health"], "up", "{}", log());
    std::fs::remove_file(&flag).unwrap();
    let removed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || backend()["health"] == "down"),
        "{}",
        log()
    );
    let took = removed.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "down {took:?} after the MISC_CHECK began failing: {}",
        log()
    );
    assert!(
        backend()["health_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("exec: ")),
        "{}",
        backend()
    );
    std::fs::write(&flag, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || backend()["health"] == "up"),
        "{}",
        log()
    );
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[virtual_server.outlier_detection]` takes effect: with `consecutive_failures = 2` a dead
/// real server is ejected after its second failed connection; with `enabled = false` the
/// same failures eject nothing, even at `consecutive_failures = 1` (clients are still
/// served, by retries).
#[test]
fn outlier_detection_settings_apply() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let (two, off) = (free_port(), free_port());
    let vs = |name: &str, port: u16, table: &str| {
        format!(
            "[[virtual_server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nlb_algo = \"rr\"\nretries = 2\nconnect_timeout = \"1s\"\n[virtual_server.outlier_detection]\n{table}\n[[virtual_server.backend]]\naddress = \"{}\"\n[[virtual_server.backend]]\naddress = \"{}\"\n",
            a.addr, b.addr
        )
    };
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}\n{}",
        dir.join("admin.sock").display(),
        vs("two", two, "consecutive_failures = 2"),
        // With detection on, one failure would eject here.
        vs("off", off, "enabled = false\nconsecutive_failures = 1"),
    );
    let (node, sock) = start_node(&dir, &toml);
    drop(b);
    for port in [two, off] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Three requests: at most three failures for b, fewer than the default five.
        for _ in 0..3 {
            assert_eq!(
                body(&get(addr).unwrap()),
                "a",
                "retries hide the dead server"
            );
        }
    }
    let ejected = wait_until(Duration::from_secs(5), || {
        status(&sock)["virtual_servers"][0]["backends"][1]["health"] == "down"
    });
    let s = status(&sock);
    assert!(ejected, "consecutive_failures = 2 did not eject: {s}");
    assert_eq!(s["virtual_servers"][1]["name"], "off");
    assert_eq!(
        s["virtual_servers"][1]["backends"][1]["health"], "up",
        "enabled = false ejected anyway: {s}"
    );
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real server that accepts every connection, reads the request and resets the
/// connection (`SO_LINGER` 0, then close: an RST), until dropped.
struct ResettingServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResettingServer {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                while !s.load(Ordering::Relaxed) {
                    if let Ok(Ok((mut c, _))) =
                        tokio::time::timeout(Duration::from_millis(20), l.accept()).await
                    {
                        // The request first: the connection is well established, and the
                        // proxy has reported its connect, when it breaks.
                        let mut buf = [0u8; 512];
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            tokio::io::AsyncReadExt::read(&mut c, &mut buf),
                        )
                        .await;
                        // Zero linger: the close below sends an RST instead of a FIN.
                        c.set_zero_linger().unwrap();
                        drop(c);
                    }
                }
            });
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ResettingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A real server that accepts every connection and then resets it is ejected by passive
/// health after `consecutive_failures` of them, although every connect succeeds: the
/// connect is not the connection's final result (Envoy's `LocalOriginConnectSuccess` is not
/// `LocalOriginConnectSuccessFinal`), so it does not end the run of resets. The good real
/// server stays up.
#[test]
fn passive_health_ejects_a_backend_that_accepts_and_resets() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let r = ResettingServer::start();
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nlb_algo = \"rr\"\nconnect_timeout = \"1s\"\n[virtual_server.outlier_detection]\nconsecutive_failures = 3\nmax_ejection_percent = 50\n[[virtual_server.backend]]\naddress = \"{}\"\n[[virtual_server.backend]]\naddress = \"{}\"\n",
        dir.join("admin.sock").display(),
        a.addr,
        r.addr,
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Round robin: about half of these reach the resetting server, more than three times.
    let mut reset = 0;
    for _ in 0..10 {
        if !get(vip).is_ok_and(|r| r.ends_with("\r\n\r\na")) {
            reset += 1;
        }
    }
    assert!(
        reset >= 3,
        "only {reset} connections reached the resetting server: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    let ejected = wait_until(Duration::from_secs(5), || {
        status(&sock)["virtual_servers"][0]["backends"][1]["health"] == "down"
    });
    let s = status(&sock);
    assert!(
        ejected,
        "accept-then-reset backend not ejected after {reset} resets: {s}\n{}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    assert_eq!(s["virtual_servers"][0]["backends"][0]["health"], "up");
    drop(node);
    drop(a);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Envoy's failure-percentage ejection, switched on in TOML: among five real servers, the
/// one that resets every connection is ejected at the end of the interval in which it
/// failed them all, although `consecutive_failures` is never reached; `lbctl status` says
/// why. The four good ones stay up.
#[test]
fn passive_health_failure_percentage_ejects_the_failing_backend() {
    let dir = tempdir();
    let good: Vec<RealServer> = ["a", "b", "c", "d"].map(RealServer::start).into();
    let r = ResettingServer::start();
    let port = free_port();
    let mut toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nlb_algo = \"rr\"\nconnect_timeout = \"1s\"\n[virtual_server.outlier_detection]\nconsecutive_failures = 1000\ninterval = \"2s\"\nenforcing_failure_percentage = 100\nfailure_percentage_request_volume = 4\n",
        dir.join("admin.sock").display(),
    );
    for addr in good.iter().map(|g| g.addr).chain([r.addr]) {
        toml.push_str(&format!(
            "[[virtual_server.backend]]\naddress = \"{addr}\"\n"
        ));
    }
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Round robin over five: 25 connections give each real server 5, within one interval.
    let mut reset = 0;
    for _ in 0..25 {
        // A good real server's answer ends with its name; a reset leaves none.
        if !get(vip).is_ok_and(|r| ["a", "b", "c", "d"].iter().any(|n| r.ends_with(n))) {
            reset += 1;
        }
    }
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(reset >= 4, "only {reset} connections were reset: {}", log());
    let ejected = wait_until(Duration::from_secs(6), || {
        status(&sock)["virtual_servers"][0]["backends"][4]["health"] == "down"
    });
    let s = status(&sock);
    assert!(ejected, "failing backend not ejected: {s}\n{}", log());
    let backends = s["virtual_servers"][0]["backends"].as_array().unwrap();
    assert!(
        backends[4]["health_reason"]
            .as_str()
            .is_some_and(|r| r.contains("of its requests failed")),
        "{s}"
    );
    for b in &backends[..4] {
        assert_eq!(b["health"], "up", "{s}");
    }
    drop(node);
    drop(good);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP real server answering every datagram with the same bytes `delay` after it came
/// (its replies are in flight while a reload hands the virtual server over), until dropped.
struct SlowUdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowUdpEcho {
    fn start(delay: Duration) -> Self {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut due: std::collections::VecDeque<(Instant, SocketAddr, Vec<u8>)> =
                std::collections::VecDeque::new();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    due.push_back((Instant::now() + delay, from, buf[..n].to_vec()));
                }
                while due.front().is_some_and(|(t, _, _)| *t <= Instant::now()) {
                    let (_, to, data) = due.pop_front().unwrap();
                    let _ = s.send_to(&data, to);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowUdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reloads that restart a UDP virtual server (its scheduler changes) while a client sends
/// a datagram every millisecond to a backend that answers 30 ms later: every datagram gets
/// its reply. The replacement receives on a duplicate of the running socket, and the old
/// proxy's session carries the replies to what it forwarded.
#[test]
fn reload_restarting_a_udp_virtual_server_loses_no_datagram() {
    let dir = tempdir();
    let echo = SlowUdpEcho::start(Duration::from_millis(30));
    let port = free_udp_port();
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "dns"
listen = "127.0.0.1:{port}"
protocol = "udp"
lb_algo = "{algo}"
[[virtual_server.backend]]
address = "{echo}"
"#,
            sock = dir.join("admin.sock").display(),
            echo = echo.addr
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let receiver = {
        let client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = std::collections::BTreeSet::new();
            let mut errors = Vec::new();
            let mut buf = [0u8; 64];
            // Bounded: ends after 2 s without a reply or 100 errors.
            while errors.len() < 100 {
                match client.recv(&mut buf) {
                    Ok(n) => {
                        got.insert(String::from_utf8_lossy(&buf[..n]).parse::<u32>().unwrap());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                    // ECONNREFUSED: a datagram met a closed port.
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (got, errors)
        })
    };
    let sender = {
        let client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(2500) {
                if client.send(sent.to_string().as_bytes()).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    for algo in ["wrr", "rr", "wrr"] {
        std::thread::sleep(Duration::from_millis(400));
        reload_node(&node, &dir, &config(algo));
        let applied = wait_until(Duration::from_secs(5), || {
            status(&sock)["virtual_servers"][0]["scheduler"] == algo
        });
        assert!(applied, "reload to {algo} not applied: {}", status(&sock));
    }
    let sent = sender.join().unwrap();
    let (got, errors) = receiver.join().unwrap();
    let missing: Vec<u32> = (0..sent).filter(|s| !got.contains(s)).collect();
    assert!(
        missing.is_empty() && errors.is_empty(),
        "{} of {sent} datagrams got no reply across reloads ({missing:?}); errors: {errors:?}\n{}",
        missing.len(),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that restarts a UDP virtual server keeps each client flow on its real server
/// (stateful UDP — QUIC, DTLS, SIP, VPNs — must not move; IPVS's connection table outlives a
/// keepalived reload): four clients on a, b, a, b by round robin ask again after the reload
/// in reverse order, where fresh picks would swap them. Each real server answers with its
/// name and the address the datagram came from, which stays the same too: the new version
/// takes each flow's session socket over (before, it opened its own, and a real server
/// that knows its peers by address saw a new port).
#[test]
fn reload_restarting_a_udp_virtual_server_keeps_each_flow_on_its_real_server_and_port() {
    let dir = tempdir();
    let named = |name: &'static str| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !st.load(Ordering::Relaxed) {
                if let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(format!("{name}|{from}").as_bytes(), from);
                }
            }
        });
        (addr, stop, t)
    };
    let (a, b) = (named("a"), named("b"));
    let port = free_udp_port();
    let config = |algo: &str| {
        format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"q\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"udp\"\nlb_algo = \"{algo}\"\n[[virtual_server.backend]]\naddress = \"{}\"\n[[virtual_server.backend]]\naddress = \"{}\"\n",
            dir.join("admin.sock").display(),
            a.0,
            b.0
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let ask = |c: &std::net::UdpSocket| {
        c.send(b"?").unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).expect("a reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let clients: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| {
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            c.connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c
        })
        .collect();
    let before: Vec<String> = clients.iter().map(ask).collect();
    assert_eq!(
        before.iter().map(|r| &r[..1]).collect::<Vec<_>>(),
        ["a", "b", "a", "b"]
    );
    reload_node(&node, &dir, &config("wrr"));
    assert!(
        wait_until(Duration::from_secs(5), || status(&sock)["virtual_servers"]
            [0]["scheduler"]
            == "wrr"),
        "{}",
        status(&sock)
    );
    let mut after: Vec<String> = clients.iter().rev().map(ask).collect();
    after.reverse();
    assert_eq!(
        after,
        before,
        "{}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    drop(node);
    for (_, stop, t) in [a, b] {
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `ops` on a UDP virtual server: one client's datagrams are scheduled one by
/// one, round robin over both real servers (lbctl counts two sessions and the bytes on
/// each), and every reply reaches the client.
#[test]
fn ops_spreads_one_clients_datagrams_over_the_real_servers() {
    let dir = tempdir();
    let (a, b) = (
        SlowUdpEcho::start(Duration::ZERO),
        SlowUdpEcho::start(Duration::ZERO),
    );
    let port = free_udp_port();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\nvirtual_server 127.0.0.1 {port} {{\n    protocol UDP\n    lb_algo rr\n    ops\n    real_server {} {} {{\n    }}\n    real_server {} {} {{\n    }}\n}}\n",
            a.addr.ip(),
            a.addr.port(),
            b.addr.ip(),
            b.addr.port(),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    for i in 0..6 {
        client.send(format!("q{i}").as_bytes()).unwrap();
        let n = client.recv(&mut buf).expect("a reply to every datagram");
        assert_eq!(&buf[..n], format!("q{i}").as_bytes());
    }
    let s = status(&sock);
    for i in 0..2 {
        let backend = &s["virtual_servers"][0]["backends"][i];
        assert_eq!(backend["total_connections"], 1, "one session each: {s}");
        assert_eq!(
            backend["bytes_to_backend"], 6,
            "three 2-byte datagrams each: {s}"
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[virtual_server.udp]`: with `max_sessions = 2` a third client's datagram is dropped
/// and counted ("sessions refused" in `lbctl status`); with `idle_timeout = "1s"` the
/// sessions go after that long idle and a new client is served again. One-query clients
/// on new ports, as DNS resolvers send.
#[test]
fn udp_idle_timeout_and_max_sessions_apply() {
    let dir = tempdir();
    let echo = SlowUdpEcho::start(Duration::ZERO);
    let port = free_udp_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"dns\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"udp\"\nlb_algo = \"rr\"\n[virtual_server.udp]\nidle_timeout = \"1s\"\nmax_sessions = 2\n[[virtual_server.backend]]\naddress = \"{}\"\n",
        dir.join("admin.sock").display(),
        echo.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let query = |what: &str| -> bool {
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.send(what.as_bytes()).unwrap();
        let mut buf = [0u8; 16];
        c.recv(&mut buf).is_ok_and(|n| &buf[..n] == what.as_bytes())
    };
    assert!(query("a1"), "{}", status(&sock));
    assert!(query("a2"), "{}", status(&sock));
    assert!(!query("a3"), "a third session opened: {}", status(&sock));
    let l4 = |s: &serde_json::Value| s["virtual_servers"][0]["l4"].clone();
    assert_eq!(
        l4(&status(&sock))["sessions_refused"],
        1,
        "{}",
        status(&sock)
    );
    // Idle for longer than idle_timeout: both sessions gone, room again; within about
    // 1 s of the last reply, not the default 5 s.
    let idle = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || l4(&status(&sock))
            ["active_connections"]
            == 0),
        "{}",
        status(&sock)
    );
    assert!(
        idle.elapsed() < Duration::from_secs(3),
        "{:?}",
        idle.elapsed()
    );
    assert!(query("b1"), "{}", status(&sock));
    let s = status(&sock);
    assert!(l4(&s)["idle_timeouts"].as_u64() >= Some(2), "{s}");
    let text = status_text(&sock);
    assert!(text.contains("; sessions refused 1"), "{text}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a reload restarted a UDP virtual server (its predecessor draining for up to
/// `drain_deadline`, here 30 s), a reload that removes it refuses the port at once, as
/// keepalived does for a removed IPVS service; adding it back on the wildcard address, and
/// then moving it to the loopback address (overlapping binds), serves at once each time.
#[test]
fn reload_removing_re_adding_and_moving_a_udp_virtual_server() {
    let dir = tempdir();
    let echo = SlowUdpEcho::start(Duration::ZERO);
    let other = RealServer::start("other");
    let (port, tcp_port) = (free_udp_port(), free_port());
    // `udp`: None for no UDP virtual server, else (listen address, lb_algo).
    let config = |udp: Option<(&str, &str)>| {
        let mut c = format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "30s"

[[virtual_server]]
name = "other"
listen = "127.0.0.1:{tcp_port}"
protocol = "tcp"
[[virtual_server.backend]]
address = "{other}"
"#,
            sock = dir.join("admin.sock").display(),
            other = other.addr
        );
        if let Some((ip, algo)) = udp {
            c += &format!(
                r#"
[[virtual_server]]
name = "dns"
listen = "{ip}:{port}"
protocol = "udp"
lb_algo = "{algo}"
[[virtual_server.backend]]
address = "{echo}"
"#,
                echo = echo.addr
            );
        }
        c
    };
    let (node, sock) = start_node(&dir, &config(Some(("127.0.0.1", "rr"))));
    // Writes `udp`'s configuration, sends SIGHUP, waits until `lbctl status` shows it.
    let reload = |udp: Option<(&str, &str)>| {
        reload_node(&node, &dir, &config(udp));
        let want = udp.map(|(ip, algo)| (format!("{ip}:{port}"), algo.to_owned()));
        assert!(
            wait_until(Duration::from_secs(5), || {
                let s = status(&sock);
                let dns = s["virtual_servers"].as_array().and_then(|a| {
                    a.iter().find(|v| v["name"] == "dns").map(|v| {
                        (
                            v["listen"].as_str().unwrap_or_default().to_owned(),
                            v["scheduler"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                });
                dns == want
            }),
            "reload to {want:?} not applied: {}",
            status(&sock)
        );
    };
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // How long until `what` comes back (at most 3 s; a refusal in between is retried).
    let served = |what: &str| -> Option<Duration> {
        let mut buf = [0u8; 64];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let _ = client.send(what.as_bytes());
            if client
                .recv(&mut buf)
                .is_ok_and(|n| &buf[..n] == what.as_bytes())
            {
                return Some(t.elapsed());
            }
        }
        None
    };
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(served("a").is_some(), "served at start\n{}", log());
    // A restart: the predecessor drains (its session is recent).
    reload(Some(("127.0.0.1", "wrr")));
    assert!(served("b").is_some(), "served after a restart\n{}", log());
    // Removed: refused at once, though the predecessor's drain has 30 s to go.
    reload(None);
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let refused = loop {
        let _ = client.send(b"c");
        match client.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
            // A late echo of "b" (`served` resends every 100 ms on a slow machine).
            Ok(n) if &buf[..n] == b"b" && t.elapsed() < Duration::from_secs(3) => {}
            Ok(_) => break false,
            Err(_) if t.elapsed() > Duration::from_secs(3) => break false,
            Err(_) => {}
        }
    };
    assert!(
        refused,
        "a removed UDP virtual server's port is refused\n{}",
        log()
    );
    // Added back on the wildcard address, then moved to the loopback one.
    reload(Some(("0.0.0.0", "rr")));
    assert!(served("d").is_some(), "served on 0.0.0.0\n{}", log());
    reload(Some(("127.0.0.1", "rr")));
    assert!(
        served("e").is_some(),
        "served after moving to 127.0.0.1\n{}",
        log()
    );
    assert!(!log().contains("not started"), "{}", log());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload whose new version of a virtual server cannot bind (its new port is taken by
/// another program) keeps the running version serving on its old address, as HAProxy's old
/// process outlives a failed reload; a virtual server added on a taken port is not started
/// and disturbs nothing. Once the ports are free, SIGHUP with the same file applies both.
#[test]
fn reload_keeps_a_virtual_server_whose_replacement_cannot_bind() {
    let dir = tempdir();
    let web = RealServer::start("web");
    let old_port = free_port();
    // Another program's listeners on the ports the new configuration wants.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_api = TcpListener::bind("127.0.0.1:0").unwrap();
    let (new_port, api_port) = (
        taken.local_addr().unwrap().port(),
        taken_api.local_addr().unwrap().port(),
    );
    let config = |port: u16, api: bool| {
        let mut c = format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
[[virtual_server.backend]]
address = "{web}"
"#,
            sock = dir.join("admin.sock").display(),
            web = web.addr
        );
        if api {
            c += &format!(
                "\n[[virtual_server]]\nname = \"api\"\nlisten = \"127.0.0.1:{api_port}\"\n\
                 protocol = \"tcp\"\n[[virtual_server.backend]]\naddress = \"{}\"\n",
                web.addr
            );
        }
        c
    };
    let (node, sock) = start_node(&dir, &config(old_port, false));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(body(&get(at(old_port)).unwrap()), "web");
    // Listens of the running virtual servers, by name.
    let listens = || {
        let s = status(&sock);
        let mut v: Vec<(String, String)> = s["virtual_servers"]
            .as_array()
            .map(|a| {
                // Those that do not run are listed with an `error`.
                a.iter()
                    .filter(|v| v.get("error").is_none())
                    .map(|v| {
                        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                        (text("name"), text("listen"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };

    // "web" moves to a taken port, "api" is added on another: neither can bind.
    reload_node(&node, &dir, &config(new_port, true));
    assert!(
        wait_until(Duration::from_secs(10), || log().contains("reload done")),
        "{}",
        log()
    );
    assert!(
        log().contains("keeps running with its previous configuration"),
        "{}",
        log()
    );
    assert!(log().contains("virtual_server api"), "{}", log());
    assert_eq!(
        listens(),
        vec![("web".to_owned(), format!("127.0.0.1:{old_port}"))]
    );
    // "api" is listed as not running, with why; the reload's end says both.
    let s = status(&sock);
    assert_eq!(s["node"]["last_reload"]["result"], "partial", "{s}");
    let errors = s["node"]["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("virtual server web keeps its previous configuration")
            && errors.contains("virtual server api"),
        "{errors}"
    );
    assert!(
        s["virtual_servers"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&api_port.to_string())),
        "{s}"
    );
    for _ in 0..5 {
        assert_eq!(body(&get(at(old_port)).unwrap()), "web", "{}", log());
    }

    // The ports are free now: the same file, reloaded, applies.
    drop((taken, taken_api));
    reload_node(&node, &dir, &config(new_port, true));
    let want = vec![
        ("api".to_owned(), format!("127.0.0.1:{api_port}")),
        ("web".to_owned(), format!("127.0.0.1:{new_port}")),
    ];
    assert!(
        wait_until(Duration::from_secs(10), || listens() == want),
        "{:?}\n{}",
        listens(),
        log()
    );
    assert_eq!(body(&get(at(new_port)).unwrap()), "web");
    assert_eq!(body(&get(at(api_port)).unwrap()), "web");
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(at(old_port))
            .is_err()),
        "the old address is closed once the virtual server moved"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP virtual server moved between overlapping addresses (`0.0.0.0:P` to
/// `127.0.0.1:P`, then back) serves at once after each reload: the old proxy stops
/// accepting before the new one binds (it used to keep its duplicate of the socket
/// listening, so the bind failed and the virtual server was lost).
#[test]
fn reload_moving_an_http_virtual_server_between_overlapping_addresses() {
    let dir = tempdir();
    let web = RealServer::start("web");
    let port = free_port();
    let config = |ip: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "{ip}:{port}"
protocol = "http"
[[virtual_server.backend]]
address = "{web}"
"#,
            sock = dir.join("admin.sock").display(),
            web = web.addr
        )
    };
    let (node, sock) = start_node(&dir, &config("0.0.0.0"));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(body(&get(at).unwrap()), "web");
    // IPv4-mapped spellings bind the same IPv4 sockets: `[::ffff:127.0.0.1]` is
    // `127.0.0.1` and `[::ffff:0.0.0.0]` the IPv4 wildcard.
    for ip in [
        "127.0.0.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "127.0.0.1",
        "[::ffff:0.0.0.0]",
        "127.0.0.1",
    ] {
        reload_node(&node, &dir, &config(ip));
        let want = format!("{ip}:{port}");
        assert!(
            wait_until(Duration::from_secs(5), || status(&sock)["virtual_servers"]
                [0]["listen"]
                == want.as_str()),
            "reload to {want} not applied: {}\n{}",
            status(&sock),
            log()
        );
        assert_eq!(body(&get(at).unwrap()), "web", "{}", log());
    }
    assert!(!log().contains("not started"), "{}", log());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real server that starts down (`alpha`) and whose check never passes has had no
/// transition, yet `lbctl status` says what its check fails with (it said nothing), and the
/// log says it once (keepalived logs an alpha checker's first failure).
#[test]
fn an_alpha_backend_that_never_comes_up_shows_why() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let dead = lb_testkit::ports::dead_addr();
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
delay_loop = "100ms"
alpha = true

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend.check]]
type = "tcp"

[[virtual_server.backend]]
address = "{dead}"
[[virtual_server.backend.check]]
type = "tcp"
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let backend = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i].clone();
    assert!(
        wait_until(Duration::from_secs(10), || backend(0)["health"] == "up"
            && backend(1)["health_reason"]
                .as_str()
                .is_some_and(|r| r.contains("refused"))),
        "{}\n{}",
        status(&sock),
        log()
    );
    assert_eq!(backend(1)["health"], "down");
    // Several checks later, the failure was logged once.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(log().matches("check failed").count(), 1, "{}", log());
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that changes only a weight applies it in place through the health applier:
/// an `inhibit_on_failure` real server whose check fails stays at weight 0 (it used to be
/// given the new weight, and so traffic, until its next health transition), and takes the
/// new weight once it comes back.
#[test]
fn reload_weight_change_keeps_a_failed_inhibited_backend_out() {
    let dir = tempdir();
    let a = RealServer::start("a");
    // Nothing listens here until the test starts a server on it.
    let b_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = free_port();
    let config = |b_weight: u32| {
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "wrr"
delay_loop = "100ms"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend.check]]
type = "tcp"

[[virtual_server.backend]]
address = "{b_addr}"
weight = {b_weight}
inhibit_on_failure = true
[[virtual_server.backend.check]]
type = "tcp"
"#,
            sock = dir.join("admin.sock").display(),
            a = a.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config(1));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let b_weight = || status(&sock)["virtual_servers"][0]["backends"][1]["weight"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || b_weight() == 0),
        "b's failing check did not inhibit it: {}\n{}",
        status(&sock),
        log()
    );
    // Up at weight 0, and lbctl says why.
    let b = status(&sock)["virtual_servers"][0]["backends"][1].clone();
    assert_eq!(b["health"], "up", "{b}");
    assert!(
        b["health_reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{b}"
    );
    let text = status_text(&sock);
    assert!(
        text.contains("       failed, inhibited at weight 0: connect to"),
        "{text}"
    );
    reload_node(&node, &dir, &config(5));
    assert!(
        wait_until(Duration::from_secs(5), || log()
            .contains("weight changed by reload")),
        "{}",
        log()
    );
    // A few applier rounds later, still inhibited.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b_weight(), 0, "{}\n{}", status(&sock), log());
    // b comes up: the new weight, not the start-up one.
    let listener = TcpListener::bind(b_addr).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || b_weight() == 5),
        "{}\n{}",
        status(&sock),
        log()
    );
    // Nothing fails it any more: no reason.
    assert!(
        status(&sock)["virtual_servers"][0]["backends"][1]["health_reason"].is_null(),
        "{}",
        status(&sock)
    );
    drop(listener);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A virtual server that a reload restarts (a new `lb_algo`) keeps what its predecessor
/// knew of each real server: the admin state set with `lbctl` (maint stays maint) and the
/// checks' verdict (a dead real server stays down instead of starting up again until its
/// check fails `retry` times, 2 s here), as keepalived keeps its checkers' state; and its
/// connection counts go on from the predecessor's totals.
#[test]
fn reload_restart_keeps_admin_state_and_health() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    // Nothing listens here: its check fails.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = free_port();
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"
delay_loop = "100ms"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend]]
address = "{b}"
[[virtual_server.backend]]
address = "{dead}"
[[virtual_server.backend.check]]
type = "tcp"
retry = 3
delay_before_retry = "1s"
"#,
            sock = dir.join("admin.sock").display(),
            a = a.addr,
            b = b.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let backend = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i].clone();
    lbctl_backend(&sock, "maint", "web", b.addr);
    assert!(
        wait_until(Duration::from_secs(10), || backend(2)["health"] == "down"),
        "the dead real server's check: {}\n{}",
        status(&sock),
        log()
    );

    let why = backend(2)["health_reason"].clone();
    assert!(
        why.as_str().is_some_and(|w| w.contains("refused")),
        "{}",
        status(&sock)
    );
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..3 {
        assert_eq!(body(&get(vip).unwrap()), "a");
    }
    assert_eq!(backend(0)["total_connections"], 3);

    reload_node(&node, &dir, &config("wrr"));
    wait_scheduler(&sock, &dir, "wrr");
    // Still down, with no new transition: the reason it went down is carried.
    assert_eq!(backend(2)["health_reason"], why, "{}", status(&sock));
    // The counters' totals go on (IPVS keeps a kept service's).
    assert_eq!(backend(0)["total_connections"], 3, "{}", status(&sock));
    // For a second (half the 2 s a fresh check needs to fail), every look agrees.
    for _ in 0..10 {
        assert_eq!(backend(1)["admin"], "maint", "{}", status(&sock));
        assert_eq!(backend(2)["health"], "down", "{}\n{}", status(&sock), log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..4 {
        assert_eq!(body(&get(vip).unwrap()), "a");
    }
    assert_eq!(backend(0)["total_connections"], 7);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that changes what a real server's check probes (here its port) does not carry
/// the old check's verdict, as keepalived's `migrate_checkers` carries a checker's state
/// only when it compares equal: the real server starts as a new one, up and falling at
/// the new check's first failure, instead of keeping an established "up" that needs its
/// `retry` 3 failures, 1 s apart, to fall.
#[test]
fn reload_changing_a_check_starts_its_verdict_afresh() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let dead = free_port();
    let port = free_port();
    let config = |check_port: &str| {
        format!(
            "[global]\nadmin_socket = \"{sock}\"\n\n[[virtual_server]]\nname = \"web\"\n\
             listen = \"127.0.0.1:{port}\"\ndelay_loop = \"100ms\"\n\
             [[virtual_server.backend]]\naddress = \"{a}\"\n\
             [[virtual_server.backend.check]]\ntype = \"tcp\"\nretry = 3\ndelay_before_retry = \"1s\"\n{check_port}\n",
            sock = dir.join("admin.sock").display(),
            a = a.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config(""));
    let backend = || status(&sock)["virtual_servers"][0]["backends"][0].clone();
    // Established: its check has passed.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(backend()["health"], "up", "{}", backend());
    reload_node(&node, &dir, &config(&format!("connect_port = {dead}")));
    let reloaded = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || backend()["health"] == "down"),
        "{}",
        backend()
    );
    let took = reloaded.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "down {took:?} after the reload: the old verdict was carried"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same when what changes is the PROXY header the checks send: a reload that gives the
/// virtual server `send_proxy` (and so its checks, which leave `check_send_proxy` unset;
/// they send `PROXY UNKNOWN`, as HAProxy's checks do) starts the verdict afresh. An echoing
/// backend shows the header to an HTTP check that fails on it (`regex_no_match`). The
/// header used to be compared as written in the check only, so the old verdict was carried.
#[test]
fn reload_giving_checks_a_proxy_header_starts_their_verdict_afresh() {
    let dir = tempdir();
    let a = RealServer::start_with("a", true);
    let port = free_port();
    let config = |tcp: &str| {
        format!(
            "[global]\nadmin_socket = \"{sock}\"\n\n[[virtual_server]]\nname = \"web\"\n\
             listen = \"127.0.0.1:{port}\"\ndelay_loop = \"100ms\"\n{tcp}\n\
             [[virtual_server.backend]]\naddress = \"{a}\"\n\
             [[virtual_server.backend.check]]\ntype = \"http\"\nretry = 3\ndelay_before_retry = \"1s\"\n\
             url = [{{ path = \"/\", regex = \"^a\\nPROXY \", regex_no_match = true }}]\n",
            sock = dir.join("admin.sock").display(),
            a = a.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config(""));
    let backend = || status(&sock)["virtual_servers"][0]["backends"][0].clone();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(backend()["health"], "up", "{}", backend());
    reload_node(
        &node,
        &dir,
        &config("[virtual_server.tcp]\nsend_proxy = \"v1\""),
    );
    let reloaded = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || backend()["health"] == "down"),
        "{}",
        backend()
    );
    let took = reloaded.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "down {took:?} after the reload: the old verdict was carried"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A weight set with `lbctl weight` holds through a reload that restarts the virtual
/// server (a new `lb_algo`) while the file keeps that real server's weight, as admin
/// states do; a reload that changes the real server's weight in the file applies the
/// file's (HAProxy's `set weight` lasts until the next change in the file), restarting or
/// not. It used to be lost at any restart: weight 0 set for a maintenance came back.
#[test]
fn reload_restart_keeps_lbctl_weights_until_the_file_changes_them() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let config = |algo: &str, weight_a: u32| {
        format!(
            "[global]\nadmin_socket = \"{sock}\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"{algo}\"\n[[virtual_server.backend]]\naddress = \"{a}\"\nweight = {weight_a}\n[[virtual_server.backend]]\naddress = \"{b}\"\n",
            sock = dir.join("admin.sock").display(),
            a = a.addr,
            b = b.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config("rr", 1));
    let weight = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["weight"].clone();
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let bodies = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| body(&get(vip).unwrap()).to_owned())
            .collect()
    };
    let out = Command::new(LBCTL)
        .arg("--socket")
        .arg(&sock)
        .args(["weight", "web", &a.addr.to_string(), "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(5), || weight(0) == 0));
    // A restart that keeps a's weight in the file: the operator's 0 holds.
    reload_node(&node, &dir, &config("wrr", 1));
    wait_scheduler(&sock, &dir, "wrr");
    assert_eq!(weight(0), 0, "{}", status(&sock));
    let got = bodies(6);
    assert!(got.iter().all(|b| b == "b"), "{got:?}");
    // Another restart, same file weight: still held.
    reload_node(&node, &dir, &config("wlc", 1));
    wait_scheduler(&sock, &dir, "wlc");
    assert_eq!(weight(0), 0, "{}", status(&sock));
    // The file changes a's weight (and restarts): the file's applies.
    reload_node(&node, &dir, &config("rr", 2));
    wait_scheduler(&sock, &dir, "rr");
    assert!(
        wait_until(Duration::from_secs(5), || weight(0) == 2),
        "{}",
        status(&sock)
    );
    let got = bodies(6);
    assert_eq!(got.iter().filter(|b| *b == "a").count(), 3, "{got:?}");
    // And the operator's record went with it: a restart back to weight... 2 stays 2.
    reload_node(&node, &dir, &config("wrr", 2));
    wait_scheduler(&sock, &dir, "wrr");
    assert_eq!(weight(0), 2, "{}", status(&sock));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM drains the connections of a virtual server that an earlier reload replaced, up
/// to `drain_deadline`, like those of the running ones: a connection still open through
/// the replaced version keeps working after SIGTERM (the node used to exit at once,
/// resetting it), and the node exits once it closes.
#[test]
fn sigterm_drains_virtual_servers_replaced_by_a_reload() {
    let dir = tempdir();
    let echo_addr = echo_until_eof(4);
    let port = free_port();
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "20s"

[[virtual_server]]
name = "echo"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"
[[virtual_server.backend]]
address = "{echo_addr}"
"#,
            sock = dir.join("admin.sock").display(),
        )
    };
    let (mut node, sock) = start_node(&dir, &config("rr"));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(echoes(&mut held, b"one"), "{}", log());
    // A restart: the held connection stays with the replaced version, draining.
    reload_node(&node, &dir, &config("wrr"));
    wait_scheduler(&sock, &dir, "wrr");
    assert!(echoes(&mut held, b"two"), "{}", log());
    let term = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.0.try_wait().unwrap().is_none(),
        "exited while a connection drained\n{}",
        log()
    );
    assert!(echoes(&mut held, b"three"), "{}", log());
    drop(held);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "did not exit once the drained connection closed\n{}",
        log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A virtual server a reload adds but cannot start (its port taken by another program) is
/// listed by `lbctl status` with why (it was missing from the status altogether, the log
/// saying "reload done"); the next reload, the file unchanged, starts it once the port is
/// free, and the error goes.
#[test]
fn a_virtual_server_a_reload_cannot_start_is_listed_with_why() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let port = free_port();
    // Below the ephemeral range: once freed, no parallel test's bind(:0) takes it.
    let taken = TcpListener::bind(lb_testkit::ports::dead_addr()).unwrap();
    let busy = taken.local_addr().unwrap();
    let one = format!(
        "[global]\nadmin_socket = \"{sock}\"\ndrain_deadline = \"1s\"\n\n\
         [[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n\
         [[virtual_server.backend]]\naddress = \"{a}\"\n",
        sock = dir.join("admin.sock").display(),
        a = a.addr,
    );
    let two = format!(
        "{one}\n[[virtual_server]]\nname = \"busy\"\nlisten = \"{busy}\"\n\
         [[virtual_server.backend]]\naddress = \"{a}\"\n",
        a = a.addr,
    );
    let (node, sock) = start_node(&dir, &one);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    reload_node(&node, &dir, &two);
    let listed = |want_error: bool| {
        let s = status(&sock);
        let vss = s["virtual_servers"].as_array().cloned().unwrap_or_default();
        vss.len() == 2
            && vss[1]["name"] == "busy"
            && vss[1].get("error").is_some_and(|e| e.is_string()) == want_error
    };
    assert!(
        wait_until(Duration::from_secs(10), || listed(true)),
        "{}\n{}",
        status(&sock),
        log()
    );
    let s = status(&sock);
    let why = s["virtual_servers"][1]["error"].as_str().unwrap();
    assert!(why.contains(&busy.to_string()), "{why}");
    // The reload's own end says so too.
    let reload = |s: &serde_json::Value| s["node"]["last_reload"]["result"].clone();
    assert_eq!(reload(&s), "partial", "{s}");
    drop(taken);
    reload_node(&node, &dir, &two);
    assert!(
        wait_until(Duration::from_secs(10), || listed(false)),
        "{}\n{}",
        status(&sock),
        log()
    );
    assert!(wait_until(Duration::from_secs(5), || reload(&status(
        &sock
    )) == "done"));
    // A file that does not load: rejected, with where.
    reload_node(&node, &dir, &format!("{two}\nlb_algo = 3\n"));
    assert!(
        wait_until(Duration::from_secs(5), || reload(&status(&sock))
            == "rejected"),
        "{}",
        status(&sock)
    );
    let s = status(&sock);
    let errors = s["node"]["last_reload"]["errors"][0]
        .as_str()
        .unwrap_or_default();
    assert!(errors.contains("node.toml:"), "{s}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that restarts a virtual server leaves the old version's connections alone until
/// they end, as a keepalived reload leaves IPVS's (they used to be cut at `drain_deadline`,
/// 30 s by default, the backends they were on untouched by the change); with
/// `reload_drain_deadline` set they are closed past it, as HAProxy's `hard-stop-after`.
#[test]
fn a_reload_restart_leaves_established_connections_alone() {
    let dir = tempdir();
    let echo_addr = echo_until_eof(4);
    let port = free_port();
    let config = |algo: &str, limit: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"
{limit}

[[virtual_server]]
name = "echo"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"
[[virtual_server.backend]]
address = "{echo_addr}"
"#,
            sock = dir.join("admin.sock").display(),
        )
    };
    let (node, sock) = start_node(&dir, &config("rr", ""));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let connect = || {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c
    };
    let mut held = connect();
    assert!(echoes(&mut held, b"one"), "{}", log());
    reload_node(&node, &dir, &config("wrr", ""));
    wait_scheduler(&sock, &dir, "wrr");
    // Well past drain_deadline: still served by the replaced version.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(echoes(&mut held, b"two"), "{}", log());
    // With a limit, the next restart closes what its old version holds past it.
    let mut limited = connect();
    assert!(echoes(&mut limited, b"three"), "{}", log());
    reload_node(
        &node,
        &dir,
        &config("wlc", "reload_drain_deadline = \"1s\""),
    );
    wait_scheduler(&sock, &dir, "wlc");
    assert!(
        wait_until(Duration::from_secs(10), || !echoes(&mut limited, b"x")),
        "not closed at reload_drain_deadline\n{}",
        log()
    );
    assert!(echoes(&mut held, b"four"), "{}", log());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second SIGTERM (or SIGINT) during the drain closes what is left and exits at once, as
/// a second Ctrl-C does elsewhere (it was ignored: only SIGKILL ended the wait).
#[test]
fn a_second_stop_signal_ends_the_drain() {
    let dir = tempdir();
    let echo_addr = echo_until_eof(2);
    let port = free_port();
    let toml = format!(
        "[global]\nadmin_socket = \"{sock}\"\ndrain_deadline = \"60s\"\n\n\
         [[virtual_server]]\nname = \"echo\"\nlisten = \"127.0.0.1:{port}\"\n\
         [[virtual_server.backend]]\naddress = \"{echo_addr}\"\n",
        sock = dir.join("admin.sock").display(),
    );
    let (mut node, _sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    held.write_all(b"one").unwrap();
    assert_eq!(held.read(&mut buf).unwrap(), 3, "{}", log());
    let signal = |sig: &str, pid: u32| {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    let pid = node.0.id();
    signal("-TERM", pid);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.0.try_wait().unwrap().is_none(),
        "exited while draining\n{}",
        log()
    );
    signal("-INT", pid);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "still draining after a second signal\n{}",
        log()
    );
    // The node closed what was left itself (not an exit at the deadline, 60 s away).
    assert!(
        log().contains("second stop signal: open connections closed now"),
        "{}",
        log()
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lbctl backend drain|ready` sent while a SIGHUP reload is starting the replacement of a
/// virtual server takes effect on the replacement, the version that ends up serving (it used
/// to land on the retired version only and was lost with it). The reload is held in that
/// window by the virtual server's new port, which another program holds until the command
/// is in (the reload retries the bind for 2 s).
#[test]
fn lbctl_command_during_a_reload_reaches_the_replacement() {
    let dir = tempdir();
    let x = RealServer::start("x");
    let y = RealServer::start("y");
    let old_port = free_port();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let new_port = taken.local_addr().unwrap().port();
    let config = |port: u16| {
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
[[virtual_server.backend]]
address = "{x}"
[[virtual_server.backend]]
address = "{y}"
"#,
            sock = dir.join("admin.sock").display(),
            x = x.addr,
            y = y.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config(old_port));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let lbctl = |state: &str, backend: SocketAddr| lbctl_backend(&sock, state, "web", backend);
    let admin = |s: &serde_json::Value| -> Vec<String> {
        s["virtual_servers"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["admin"].as_str().unwrap().to_owned())
            .collect()
    };
    lbctl("maint", x.addr);

    reload_node(&node, &dir, &config(new_port));
    assert!(
        wait_until(Duration::from_secs(5), || log().contains("reloading")),
        "{}",
        log()
    );
    // The replacement waits for its port: the old version is still shown, and takes the
    // commands.
    lbctl("ready", x.addr);
    lbctl("drain", y.addr);
    let s = status(&sock);
    assert_eq!(
        s["virtual_servers"][0]["listen"],
        format!("127.0.0.1:{old_port}")
    );
    assert_eq!(admin(&s), ["ready", "drain"], "{s}");
    assert!(!log().contains("reload done"), "{}", log());
    drop(taken);

    let moved = format!("127.0.0.1:{new_port}");
    assert!(
        wait_until(Duration::from_secs(10), || status(&sock)["virtual_servers"]
            [0]["listen"]
            == moved.as_str()),
        "{}",
        log()
    );
    let s = status(&sock);
    assert_eq!(admin(&s), ["ready", "drain"], "{s}\n{}", log());
    // The replacement serves accordingly: x only, y drained.
    let vip = SocketAddr::from(([127, 0, 0, 1], new_port));
    for _ in 0..4 {
        assert_eq!(body(&get(vip).unwrap()), "x", "{}", log());
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that restarts a virtual server with `persistence_timeout` (a real server added
/// in front, renumbering the others) keeps each persistent client on its real server, as
/// IPVS's persistence templates outlive a keepalived reload: twelve clients (their own
/// loopback addresses) before and after; they were scheduled afresh. The TCP proxy's
/// counters go on from the old version's.
#[test]
fn reload_keeps_persistent_clients_on_their_real_servers() {
    let dir = tempdir();
    let servers = [
        RealServer::start("a"),
        RealServer::start("b"),
        RealServer::start("c"),
    ];
    let port = free_port();
    let config = |with_c: bool| {
        let mut t = format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nlb_algo = \"rr\"\npersistence_timeout = \"300s\"\n",
            dir.join("admin.sock").display()
        );
        let addrs: Vec<SocketAddr> = if with_c {
            vec![servers[2].addr, servers[0].addr, servers[1].addr]
        } else {
            vec![servers[0].addr, servers[1].addr]
        };
        for a in addrs {
            t.push_str(&format!("[[virtual_server.backend]]\naddress = \"{a}\"\n"));
        }
        t
    };
    let (node, sock) = start_node(&dir, &config(false));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let clients: Vec<std::net::IpAddr> = (2..14).map(|i| [127, 0, 0, i].into()).collect();
    let get = |c: std::net::IpAddr| body(&get_from(c, vip).unwrap()).to_owned();
    let before: Vec<String> = clients.iter().map(|&c| get(c)).collect();
    assert!(
        before.iter().any(|b| b == "a") && before.iter().any(|b| b == "b"),
        "{before:?}"
    );
    reload_node(&node, &dir, &config(true));
    assert!(
        wait_until(Duration::from_secs(10), || log().contains("reload done")),
        "{}",
        log()
    );
    let after: Vec<String> = clients.iter().map(|&c| get(c)).collect();
    assert_eq!(after, before, "{}", log());
    assert!(
        log().contains("persistence entries carried over"),
        "{}",
        log()
    );
    // The proxy's own counters went on too: 12 connections before, 12 after.
    assert_eq!(
        status(&sock)["virtual_servers"][0]["l4"]["connections"].as_u64(),
        Some(24),
        "{}",
        log()
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A quorum lost and regained by two `lbctl` commands in a row (admin states, then
/// weights), faster than the liveness task looks (200 ms), still runs `quorum_down` then
/// `quorum_up`, as keepalived notifies each change: they ran neither while the sorry
/// server took the clients in between.
#[test]
fn quorum_scripts_run_for_a_quick_lbctl_flip() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let sorry = RealServer::start("sorry");
    let port = free_port();
    let log = dir.join("quorum.log");
    let toml = format!(
        "[global]\nadmin_socket = \"{sock}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nquorum = 2\nquorum_up = \"echo up >> {log}\"\nquorum_down = \"echo down >> {log}\"\n[[virtual_server.backend]]\naddress = \"{a}\"\n[[virtual_server.backend]]\naddress = \"{b}\"\n[[virtual_server.backend]]\naddress = \"{s}\"\nbackup = true\n",
        sock = dir.join("admin.sock").display(),
        log = log.display(),
        a = a.addr,
        b = b.addr,
        s = sorry.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let scripts = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || scripts() == "up\n"),
        "{:?}",
        scripts()
    );
    lbctl_backend(&sock, "maint", "web", a.addr);
    lbctl_backend(&sock, "ready", "web", a.addr);
    assert!(
        wait_until(Duration::from_secs(5), || scripts() == "up\ndown\nup\n"),
        "{:?}",
        scripts()
    );
    // The same with weights, which go through the health applier.
    for w in ["0", "1"] {
        let out = Command::new(LBCTL)
            .arg("--socket")
            .arg(&sock)
            .args(["weight", "web", &a.addr.to_string(), w])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert!(
        wait_until(Duration::from_secs(5), || scripts()
            == "up\ndown\nup\ndown\nup\n"),
        "{:?}",
        scripts()
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived `quorum`: with quorum 2 over two primaries of weight 1 and a sorry server,
/// one primary out (by `lbctl backend maint`, then by its failing TCP check) loses quorum:
/// the sorry server takes every connection although the other primary is up, `lbctl
/// status` says so and `quorum_down` runs; back in, quorum returns with `quorum_up`. The
/// real server whose check fails runs its `notify_down`.
#[test]
fn quorum_loss_hands_over_to_the_sorry_server_and_runs_the_scripts() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let sorry = RealServer::start("sorry");
    let port = free_port();
    let log = dir.join("quorum.log");
    let rs_log = dir.join("real_server.log");
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "rr"
quorum = 2
quorum_up = "echo up >> {log}"
quorum_down = "echo down >> {log}"

[[virtual_server.backend]]
address = "{a}"
check = [{{ type = "tcp", connect_timeout = "500ms", inter = "100ms" }}]

[[virtual_server.backend]]
address = "{b}"
check = [{{ type = "tcp", connect_timeout = "500ms", inter = "100ms" }}]
notify_up = "echo b-up >> {rs_log}"
notify_down = "echo b-down >> {rs_log}"

[[virtual_server.backend]]
address = "{s}"
backup = true
"#,
        sock = dir.join("admin.sock").display(),
        log = log.display(),
        rs_log = rs_log.display(),
        a = a.addr,
        b = b.addr,
        s = sorry.addr
    );
    let (node, sock) = start_node(&dir, &toml);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let bodies = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| body(&get(vip).unwrap()).to_owned())
            .collect()
    };
    let scripts = || std::fs::read_to_string(&log).unwrap_or_default();
    let quorum = || status(&sock)["virtual_servers"][0]["quorum"] == true;
    assert!(quorum());
    assert!(!bodies(4).contains(&"sorry".to_owned()));
    // keepalived's "Starting with quorum up" runs quorum_up.
    assert!(
        wait_until(Duration::from_secs(5), || scripts() == "up\n"),
        "quorum_up at start: {:?}",
        scripts()
    );

    let lbctl = |state: &str| lbctl_backend(&sock, state, "web", a.addr);
    lbctl("maint");
    assert!(!quorum(), "weight 1 of 2");
    assert_eq!(
        bodies(4),
        ["sorry"; 4],
        "b is up, but without quorum the sorry server serves"
    );
    assert!(
        wait_until(Duration::from_secs(5), || scripts() == "up\ndown\n"),
        "quorum_down: {:?}",
        scripts()
    );
    lbctl("ready");
    assert!(quorum());
    assert!(!bodies(4).contains(&"sorry".to_owned()));
    assert!(
        wait_until(Duration::from_secs(5), || scripts() == "up\ndown\nup\n"),
        "quorum_up: {:?}",
        scripts()
    );

    drop(b); // its TCP check fails within about 100 ms
    assert!(
        wait_until(Duration::from_secs(5), || !quorum()),
        "{}",
        status(&sock)
    );
    assert_eq!(bodies(4), ["sorry"; 4]);
    assert!(
        wait_until(Duration::from_secs(5), || scripts()
            == "up\ndown\nup\ndown\n"),
        "{:?}",
        scripts()
    );
    // The real server's own notify_down ran once; lbctl's maint/ready of `a` ran nothing
    // (keepalived runs them on checker results only).
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&rs_log)
            .is_ok_and(|s| s == "b-down\n")),
        "{:?}",
        std::fs::read_to_string(&rs_log)
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived `connect_ip`: a real server whose check answers on another address is
/// checked there (its own address has nothing on the check port).
#[test]
fn connect_ip_checks_another_address() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let health = TcpListener::bind("127.0.0.2:0").unwrap();
    let check = health.local_addr().unwrap();
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"

[[virtual_server.backend]]
address = "{a}"
check = [{{ type = "tcp", connect_timeout = "500ms", inter = "100ms", delay_before_retry = "50ms", connect_ip = "{ip}", connect_port = {cport} }}]
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
        ip = check.ip(),
        cport = check.port(),
    );
    let (node, sock) = start_node(&dir, &toml);
    let health_of = || status(&sock)["virtual_servers"][0]["backends"][0]["health"].clone();
    // Ten check intervals: a check of the real server's own address would have failed.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(health_of(), "up", "checked on {check}");
    drop(health);
    assert!(
        wait_until(Duration::from_secs(5), || health_of() == "down"),
        "the check does not follow connect_ip"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived keeps a virtual server's quorum across a reload. With quorum 2 and
/// hysteresis 1, three primaries of weight 1 have quorum; a reload that removes one and
/// restarts the virtual server (its scheduler changes) must not start it afresh, where
/// 2 < 2 + 1 would mean no quorum, the sorry server serving and quorum_down running:
/// 2 is not below 2 - 1.
#[test]
fn reload_keeps_quorum_inside_the_hysteresis_band() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let c = RealServer::start("c");
    let sorry = RealServer::start("sorry");
    let port = free_port();
    let log = dir.join("quorum.log");
    let config = |algo: &str, with_c: bool| {
        let third = if with_c {
            format!("[[virtual_server.backend]]\naddress = \"{}\"\n", c.addr)
        } else {
            String::new()
        };
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"
quorum = 2
hysteresis = 1
quorum_up = "echo up >> {log}"
quorum_down = "echo down >> {log}"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend]]
address = "{b}"
{third}
[[virtual_server.backend]]
address = "{s}"
backup = true
"#,
            sock = dir.join("admin.sock").display(),
            log = log.display(),
            a = a.addr,
            b = b.addr,
            s = sorry.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config("rr", true));
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let scripts = || std::fs::read_to_string(&log).unwrap_or_default();
    let quorum = || status(&sock)["virtual_servers"][0]["quorum"] == true;
    assert!(quorum(), "3 >= 2 + 1 at start");

    reload_node(&node, &dir, &config("wrr", false));
    wait_scheduler(&sock, &dir, "wrr");
    assert!(quorum(), "the reload dropped quorum: {}", status(&sock));
    for _ in 0..4 {
        assert_ne!(body(&get(vip).unwrap()), "sorry");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(scripts(), "up\n", "quorum scripts run");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real server whose check starts down (`alpha`) and that was up before a reload that
/// restarts its virtual server stays up: the check's verdict is carried (the tracker starts
/// up, so no transition ever tells the pool otherwise), and so is quorum, whose scripts do
/// not run. It used to stay down for good, the virtual server losing quorum (quorum_down
/// ran and the sorry server served).
#[test]
fn reload_keeps_alpha_real_servers_up_and_quorum() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let sorry = RealServer::start("sorry");
    let port = free_port();
    let log = dir.join("quorum.log");
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"
delay_loop = "100ms"
alpha = true
quorum = 2
quorum_up = "echo up >> {log}"
quorum_down = "echo down >> {log}"

[[virtual_server.backend]]
address = "{a}"
[[virtual_server.backend.check]]
type = "tcp"
[[virtual_server.backend]]
address = "{b}"
[[virtual_server.backend.check]]
type = "tcp"
[[virtual_server.backend]]
address = "{s}"
backup = true
"#,
            sock = dir.join("admin.sock").display(),
            log = log.display(),
            a = a.addr,
            b = b.addr,
            s = sorry.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let scripts = || std::fs::read_to_string(&log).unwrap_or_default();
    let vs = || status(&sock)["virtual_servers"][0].clone();
    assert!(
        wait_until(Duration::from_secs(30), || vs()["quorum"] == true),
        "{}\n{}",
        vs(),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    // At start (the real servers start down, so does quorum): down, then up.
    std::thread::sleep(Duration::from_millis(300));
    let ran = scripts();

    reload_node(&node, &dir, &config("wrr"));
    wait_scheduler(&sock, &dir, "wrr");
    // A few check intervals: the checks pass, which is no transition.
    std::thread::sleep(Duration::from_millis(500));
    let s = vs();
    assert_eq!(s["backends"][0]["health"], "up", "{s}");
    assert_eq!(s["backends"][1]["health"], "up", "{s}");
    assert_eq!(s["quorum"], true, "{s}");
    for _ in 0..4 {
        assert_ne!(body(&get(vip).unwrap()), "sorry");
    }
    assert_eq!(scripts(), ran, "quorum scripts ran at the reload");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restarted virtual server's counters go on from its predecessor's totals as they are
/// when the predecessor stops accepting, not as they were when the replacement started:
/// until the reload ends `lbctl` shows the predecessor, which still counts (here a
/// connection it accepted before the reload ends during it, while another virtual server
/// waits to bind), and the numbers must not go back once the replacement shows.
#[test]
fn reload_restart_counters_do_not_go_back() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let port = free_port();
    // Held by the test: the virtual server added by the reload waits to bind (2 s) and
    // fails, after "web" restarted.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = |algo: &str, blocked: bool| {
        let blocker = if blocked {
            format!(
                "[[virtual_server]]\nname = \"z\"\nlisten = \"{}\"\nprotocol = \"tcp\"\n[[virtual_server.backend]]\naddress = \"{}\"\n",
                taken.local_addr().unwrap(),
                a.addr
            )
        } else {
            String::new()
        };
        format!(
            r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"

[[virtual_server.backend]]
address = "{a}"

{blocker}"#,
            sock = dir.join("admin.sock").display(),
            a = a.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config("rr", false));
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let vs = || status(&sock)["virtual_servers"][0].clone();
    // Accepted by the running version.
    let mut held = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(wait_until(Duration::from_secs(5), || vs()["backends"][0]
        ["active_connections"]
        == 1));

    reload_node(&node, &dir, &config("wrr", true));
    // "web" has restarted; "z" waits to bind.
    std::thread::sleep(Duration::from_millis(500));
    write!(
        held,
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(body(&s), "a");
    drop(held);
    let mut before = 0;
    assert!(
        wait_until(Duration::from_secs(1), || {
            let s = vs();
            before = s["backends"][0]["bytes_to_client"].as_u64().unwrap_or(0);
            s["scheduler"] == "rr" && before > 0
        }),
        "the retired version shows until the reload ends: {}",
        vs()
    );
    wait_scheduler(&sock, &dir, "wrr");
    let s = vs();
    assert!(
        s["backends"][0]["bytes_to_client"].as_u64().unwrap() >= before,
        "went back from {before}: {s}"
    );
    assert_eq!(s["backends"][0]["total_connections"], 1, "{s}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP virtual server restarted by a reload goes on from its predecessor's counters:
/// its own (requests) and its backends' (requests by backend).
#[test]
fn reload_restart_keeps_http_counters() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "http"
lb_algo = "{algo}"

[[virtual_server.backend]]
address = "{a}"

[[virtual_server.backend]]
address = "{b}"
"#,
            sock = dir.join("admin.sock").display(),
            a = a.addr,
            b = b.addr
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..4 {
        get(vip).unwrap();
    }
    let requests = |s: &serde_json::Value| {
        let vs = &s["virtual_servers"][0];
        let by_backend: u64 = (0..2)
            .map(|i| vs["backends"][i]["http"]["requests"].as_u64().unwrap_or(0))
            .sum();
        (vs["http"]["requests"].as_u64(), by_backend)
    };
    assert_eq!(requests(&status(&sock)), (Some(4), 4));
    reload_node(&node, &dir, &config("wrr"));
    wait_scheduler(&sock, &dir, "wrr");
    let s = status(&sock);
    assert_eq!(requests(&s), (Some(4), 4), "{s}");
    for _ in 0..2 {
        get(vip).unwrap();
    }
    assert_eq!(requests(&status(&sock)), (Some(6), 6));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[global] busy_polling = true` (HAProxy `busy-polling`): `lbctl status` says it is on,
/// and its count of zero-timeout polls stands still while the node is idle, climbs while a
/// connection is open, and stands still again once it has closed.
#[test]
fn busy_polling_spins_while_a_connection_is_open() {
    let dir = tempdir();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"
nbthread = 1
busy_polling = true

[[virtual_server]]
name = "tcp"
listen = "127.0.0.1:{port}"
protocol = "tcp"

[[virtual_server.backend]]
address = "{b}"
"#,
        sock = dir.join("admin.sock").display(),
        b = backend.local_addr().unwrap(),
    );
    let (node, sock) = start_node(&dir, &toml);
    let polls = || {
        let s = status(&sock);
        assert_eq!(s["node"]["busy_polling"], true);
        s["node"]["busy_polls"].as_u64().unwrap()
    };
    let idle = polls();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(polls(), idle, "idle: no busy polling");

    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
    let (mut server, _) = backend.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert!(
        wait_until(Duration::from_secs(5), || polls() > idle + 1_000),
        "not busy polling with a connection open"
    );
    let text = status_text(&sock);
    assert!(text.contains("busy-polling on ("), "{text}");

    drop((client, server));
    assert!(wait_until(Duration::from_secs(5), || status(&sock)
        ["virtual_servers"][0]["backends"][0]["active_connections"]
        == 0));
    std::thread::sleep(Duration::from_millis(100));
    let after = polls();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(polls(), after, "closed: busy polling stopped");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that restarts a virtual server keeps passive health's ejections (Envoy keeps a
/// host's outlier state across cluster updates): the dead real server ejected before the
/// reload is still out after it, and comes back when its ejection time is over, as it
/// would have. It used to start afresh, taking traffic again until re-ejected.
#[test]
fn reload_restart_keeps_outlier_ejections() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let (a_addr, b_addr) = (a.addr, b.addr);
    let port = free_port();
    let config = |algo: &str| {
        format!(
            r#"
[global]
admin_socket = "{sock}"
drain_deadline = "1s"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
protocol = "tcp"
lb_algo = "{algo}"
retries = 2
connect_timeout = "1s"

[virtual_server.outlier_detection]
base_ejection_time = "6s"

[[virtual_server.backend]]
address = "{a_addr}"

[[virtual_server.backend]]
address = "{b_addr}"
"#,
            sock = dir.join("admin.sock").display()
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let b_health = || status(&sock)["virtual_servers"][0]["backends"][1]["health"].clone();
    drop(b); // dies; no active check: only passive health sees it
    for _ in 0..20 {
        let r = get(vip).unwrap();
        assert!(r.ends_with("\r\n\r\na"), "{r}");
        if b_health() == "down" {
            break;
        }
    }
    assert_eq!(b_health(), "down", "not ejected: {}", status(&sock));
    let ejected_at = Instant::now();

    reload_node(&node, &dir, &config("wrr")); // a new scheduler: the virtual server restarts
    wait_scheduler(&sock, &dir, "wrr");
    assert!(
        ejected_at.elapsed() < Duration::from_secs(5),
        "the reload took too long for this test's 6 s ejection"
    );
    assert_eq!(
        b_health(),
        "down",
        "the restarted virtual server forgot the ejection: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    for _ in 0..5 {
        assert!(get(vip).unwrap().ends_with("\r\n\r\na"));
    }
    // Back when its first ejection's time is over (6 s after it), not stuck out.
    assert!(
        wait_until(Duration::from_secs(15), || b_health() == "up"),
        "the carried ejection never ended: {}",
        status(&sock)
    );
    assert!(ejected_at.elapsed() >= Duration::from_secs(5));
    drop(node);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `UDP_CHECK { require_reply }` on a UDP virtual server written in
/// keepalived.conf: the real server that echoes goes up (its check starts down with
/// `alpha`, so only a passing check brings it up), the one on a dead port (ICMP port
/// unreachable) goes down from up, and datagrams through the virtual server reach only the
/// live one. A third real server that never answers goes down too: `require_reply` reached
/// the probe (without it, silence passes).
#[test]
fn udp_check_require_reply_finds_the_dead_real_server() {
    let dir = tempdir();
    let live = SlowUdpEcho::start(Duration::ZERO);
    // Bound, then closed: nothing listens there.
    let dead = {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap()
    };
    // Bound and never read: no reply, no ICMP error.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let port = free_udp_port();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol UDP\n    lb_algo rr\n    delay_loop 0.2\n\
             real_server {} {} {{\n        UDP_CHECK {{\n            require_reply\n            connect_timeout 1\n            alpha\n        }}\n    }}\n\
             real_server {} {} {{\n        UDP_CHECK {{\n            require_reply\n            connect_timeout 1\n        }}\n    }}\n\
             real_server {} {} {{\n        UDP_CHECK {{\n            require_reply\n            connect_timeout 1\n        }}\n    }}\n}}\n",
            live.addr.ip(),
            live.addr.port(),
            dead.ip(),
            dead.port(),
            silent_addr.ip(),
            silent_addr.port(),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let health = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["health"].clone();
    // The dead and silent ones start up (no alpha): their first failure, then one retry
    // after delay_before_retry (1 s), take them down (the silent one after two 1 s
    // timeouts).
    let settled = wait_until(Duration::from_secs(15), || {
        health(0) == "up" && health(1) == "down" && health(2) == "down"
    });
    assert!(
        settled,
        "live not up, or dead or silent not down: {}\n{}",
        status(&sock),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    let mut buf = [0u8; 16];
    for i in 0..6 {
        // A new client (a new session, scheduled afresh) for every datagram.
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send(format!("q{i}").as_bytes()).unwrap();
        let n = client.recv(&mut buf).expect("a reply to every datagram");
        assert_eq!(&buf[..n], format!("q{i}").as_bytes());
    }
    let s = status(&sock);
    let backends = &s["virtual_servers"][0]["backends"];
    assert_eq!(backends[0]["total_connections"], 6, "{s}");
    assert_eq!(backends[1]["total_connections"], 0, "{s}");
    assert_eq!(backends[2]["total_connections"], 0, "{s}");
    assert_eq!(
        (health(0), health(1), health(2)),
        ("up".into(), "down".into(), "down".into()),
        "{s}"
    );
    drop(node);
    drop(silent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `virtual_server_group`: every member address (a range included) serves
/// the block's real servers, each member a virtual server of its own in `lbctl status`.
#[test]
fn virtual_server_group_serves_every_member() {
    let dir = tempdir();
    let backend = RealServer::start("grouped");
    let port = free_port();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\nvirtual_server_group vsg {{\n    127.0.0.1 {port}\n    127.0.0.2-3 {port}\n}}\nvirtual_server group vsg {{\n    protocol TCP\n    lb_algo rr\n    real_server {} {} {{\n    }}\n}}\n",
            backend.addr.ip(),
            backend.addr.port(),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    for last in 1..=3 {
        let addr = SocketAddr::from(([127, 0, 0, last], port));
        let answer = get(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(body(&answer), "grouped", "{addr}");
    }
    let s = status(&sock);
    let names: Vec<&str> = s["virtual_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            format!("127.0.0.1:{port}"),
            format!("127.0.0.2:{port}"),
            format!("127.0.0.3:{port}")
        ]
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend ejected by passive health while its active check keeps passing is back at
/// the next pass (Envoy's successful_active_health_check_uneject_host, its default), and
/// with the option off serves out its ejection (30 s here).
#[test]
fn a_passing_active_check_ends_an_ejection() {
    for uneject in [true, false] {
        let dir = tempdir();
        let a = RealServer::start("a");
        // Accepts (so its TCP check passes) and resets every connection it is given.
        let r = ResettingServer::start();
        let port = free_port();
        let toml = format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nlb_algo = \"rr\"\ndelay_loop = \"200ms\"\n[virtual_server.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"30s\"\nsuccessful_active_health_check_uneject_host = {uneject}\n[[virtual_server.backend]]\naddress = \"{}\"\n[[virtual_server.backend.check]]\ntype = \"tcp\"\n[[virtual_server.backend]]\naddress = \"{}\"\n[[virtual_server.backend.check]]\ntype = \"tcp\"\n",
            dir.join("admin.sock").display(),
            a.addr,
            r.addr,
        );
        let (node, sock) = start_node(&dir, &toml);
        let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let health =
            |sock: &Path| status(sock)["virtual_servers"][0]["backends"][1]["health"].clone();
        assert!(wait_until(Duration::from_secs(5), || health(&sock) == "up"));
        let ejected = wait_until(Duration::from_secs(5), || {
            let _ = get(vip);
            health(&sock) == "down"
        });
        assert!(ejected, "uneject {uneject}: not ejected: {}", status(&sock));
        if uneject {
            let back = wait_until(Duration::from_secs(5), || health(&sock) == "up");
            assert!(back, "not back after a passing check: {}", status(&sock));
        } else {
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(
                health(&sock),
                "down",
                "the option off: the ejection runs its 30 s"
            );
        }
        drop(node);
        drop(a);
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// keepalived's `DNS_CHECK` on a UDP virtual server in front of real DNS servers
/// (dnsmasq), as the seeds' users run a DNS service behind LVS: the two servers that answer
/// the question go up and share the queries; the one that refuses it (RCODE REFUSED: it
/// serves other names only) goes down, and the log says why; a server killed under load
/// goes down (ICMP port unreachable, after keepalived's 3 retries) and every later query is
/// answered by the live one.
#[test]
fn dns_check_follows_real_dns_servers() {
    if !Dnsmasq::available() {
        return;
    }
    let dir = tempdir();
    let one = Dnsmasq::start(&[("example.test", "198.18.0.1".parse().unwrap())]).unwrap();
    let mut two = Dnsmasq::start(&[("example.test", "198.18.0.2".parse().unwrap())]).unwrap();
    let refusing = Dnsmasq::start(&[("other.test", "198.18.0.3".parse().unwrap())]).unwrap();
    let port = free_udp_port();
    let conf = dir.join("keepalived.conf");
    let real_server = |addr: SocketAddr| {
        format!(
            "    real_server {} {} {{\n        DNS_CHECK {{\n            name example.test\n            type A\n            connect_timeout 1\n        }}\n    }}\n",
            addr.ip(),
            addr.port()
        )
    };
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol UDP\n    lb_algo rr\n    delay_loop 0.2\n{}{}{}}}\n",
            real_server(one.addr()),
            real_server(two.addr()),
            real_server(refusing.addr()),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let health = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["health"].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || {
            health(0) == "up" && health(1) == "up" && health(2) == "down"
        }),
        "not up, up, down: {}\n{}",
        status(&sock),
        log()
    );
    assert!(
        log().contains("REFUSED (5) to example.test. A from"),
        "{}",
        log()
    );
    // lbctl status says why it is down (HAProxy's check_desc), and since when.
    let s = status(&sock);
    let refused = &s["virtual_servers"][0]["backends"][2];
    assert!(
        refused["health_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("REFUSED (5) to example.test. A from")),
        "{s}"
    );
    assert!(
        refused["health_changed"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000),
        "{s}"
    );
    let text = status_text(&sock);
    assert!(
        text.contains("       down: REFUSED (5) to example.test. A from"),
        "{text}"
    );
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let ask = || {
        lb_testkit::dns::query(vip, "example.test", 1, Duration::from_secs(2))
            .expect("every query through the virtual server is answered")
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let a = ask();
        assert_eq!(a.rcode, 0, "{a:?}");
        seen.insert(a.a.unwrap().to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["198.18.0.1", "198.18.0.2"]
    );

    two.stop();
    assert!(
        wait_until(Duration::from_secs(10), || health(1) == "down"),
        "the killed server is still up: {}\n{}",
        status(&sock),
        log()
    );
    for _ in 0..6 {
        let a = ask();
        assert_eq!((a.rcode, a.a), (0, Some("198.18.0.1".parse().unwrap())));
    }
    assert_eq!(health(0), "up");
    drop(node);
    drop(one);
    drop(refusing);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `SMTP_CHECK` on a TCP virtual server in front of real SMTP servers
/// (aiosmtpd): both go up and greet through the virtual server, while a third real server
/// that accepts connections but speaks HTTP goes down (the check holds a conversation, not
/// just a connect); one SMTP server killed goes down and every later conversation goes to
/// the live one.
#[test]
fn smtp_check_follows_real_smtp_servers() {
    if !Aiosmtpd::available() {
        return;
    }
    let dir = tempdir();
    let one = Aiosmtpd::start().unwrap();
    let mut two = Aiosmtpd::start().unwrap();
    let web = RealServer::start("not smtp");
    let port = free_port();
    let conf = dir.join("keepalived.conf");
    let real_server = |addr: SocketAddr| {
        format!(
            "    real_server {} {} {{\n        SMTP_CHECK {{\n            helo_name lb.example\n            connect_timeout 1\n        }}\n    }}\n",
            addr.ip(),
            addr.port()
        )
    };
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    lb_algo rr\n    delay_loop 0.2\n    delay_before_retry 0.2\n{}{}{}}}\n",
            real_server(one.addr()),
            real_server(two.addr()),
            real_server(web.addr),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let backend = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let greeting = || {
        let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap();
        c.write_all(b"QUIT\r\n").unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || backend(2)["health"] == "down"),
        "the HTTP server passes an SMTP_CHECK: {}\n{}",
        status(&sock),
        log()
    );
    assert!(
        log().contains("no SMTP conversation within 1s"),
        "{}",
        log()
    );
    for _ in 0..4 {
        assert!(greeting().starts_with("220 "));
    }
    assert_eq!(backend(0)["health"], "up", "{}", log());
    assert_eq!(backend(1)["health"], "up", "{}", log());
    two.stop();
    assert!(
        wait_until(Duration::from_secs(10), || backend(1)["health"] == "down"),
        "the killed server is still up: {}\n{}",
        status(&sock),
        log()
    );
    let before = backend(1)["total_connections"].clone();
    for _ in 0..4 {
        assert!(greeting().starts_with("220 "));
    }
    assert_eq!(backend(1)["total_connections"], before, "{}", status(&sock));
    assert_eq!(backend(0)["health"], "up");
    drop(node);
    drop(one);
    drop(web);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `script_user` and `MISC_CHECK { user … }` (keepalived.conf): a check
/// program that passes only when it runs as `nobody` passes for the real server whose
/// check names no user (it runs as the global `script_user nobody`) and fails for the one
/// whose check says `user root`. Needs root (lb-node changes user); skipped loudly
/// without it, and fails under `CI=true`.
#[test]
fn misc_check_runs_as_script_user_or_its_own_user() {
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok()
        != Some(0)
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: changing a check's user needs root"
        );
        eprintln!(
            "\n!!!!! SKIPPING misc_check_runs_as_script_user_or_its_own_user: not root !!!!!\n"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    // Readable and executable by nobody: the directory and the script.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.join("as-nobody.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$(id -u)\" = \"$(id -u nobody)\" ]\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n    script_user nobody\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    lb_algo rr\n    delay_loop 0.2\n\
             real_server {} {} {{\n        MISC_CHECK {{\n            misc_path {script}\n        }}\n    }}\n\
             real_server {} {} {{\n        MISC_CHECK {{\n            misc_path {script}\n            user root\n        }}\n    }}\n}}\n",
            a.addr.ip(),
            a.addr.port(),
            b.addr.ip(),
            b.addr.port(),
            sock = dir.join("admin.sock").display(),
            script = script.display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let health = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["health"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health(1) == "down"),
        "the check run as root passes: {}\n{}",
        status(&sock),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    // Checks run every 0.2 s: a check failing as root would have taken it down by now.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(health(0), "up", "{}", status(&sock));
    for _ in 0..3 {
        assert_eq!(
            body(&get(SocketAddr::from(([127, 0, 0, 1], port))).unwrap()),
            "a"
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that answers 200 to `GET path` only with the `Host` given for that path in
/// `allowed`, 404 otherwise; one response per connection, until the test ends.
fn host_checking_server(allowed: &'static [(&'static str, &'static str)]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(10_000) {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16 * 1024 {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&got).to_lowercase();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let host = head
                .lines()
                .find_map(|l| l.strip_prefix("host:"))
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            let ok = allowed.iter().any(|(p, h)| *p == path && *h == host);
            let status = if ok { "200 OK" } else { "404 Not Found" };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    addr
}

/// keepalived's `virtualhost` inside `url`: each URL of an HTTP_GET is fetched with its
/// own Host header, else the check's. A server that serves /a only for a.example and /b
/// only for b.example passes the check that sends those, and fails the one that sends
/// the check's Host for both.
#[test]
fn http_get_sends_each_urls_own_virtualhost() {
    let dir = tempdir();
    const ALLOWED: &[(&str, &str)] = &[("/a", "a.example"), ("/b", "b.example")];
    let right = host_checking_server(ALLOWED);
    let wrong = host_checking_server(ALLOWED);
    let port = free_port();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    delay_loop 0.2\n\
             real_server {} {} {{\n        HTTP_GET {{\n            url {{\n                path /a\n                virtualhost a.example\n            }}\n            url {{\n                path /b\n            }}\n            virtualhost b.example\n            connect_timeout 1\n        }}\n    }}\n\
             real_server {} {} {{\n        HTTP_GET {{\n            url {{\n                path /a\n            }}\n            url {{\n                path /b\n            }}\n            virtualhost b.example\n            connect_timeout 1\n        }}\n    }}\n}}\n",
            right.ip(),
            right.port(),
            wrong.ip(),
            wrong.port(),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let health = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["health"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health(1) == "down"),
        "{}\n{}",
        status(&sock),
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(health(0), "up", "{}", status(&sock));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `regex` in an HTTP_GET url, end to end: real servers answering 200 with
/// their name as the body; the check wants the body to match `^a` (caseless), so the one
/// answering "a" stays up and the one answering "b" — a 200 that keepalived without the
/// regex would take as healthy — goes down and gets no request.
#[test]
fn http_get_regex_judges_the_body() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let conf = dir.join("keepalived.conf");
    let real_server = |addr: SocketAddr| {
        format!(
            "    real_server {} {} {{\n        HTTP_GET {{\n            url {{\n                path /\n                regex \"^A\"\n                regex_options caseless\n            }}\n            connect_timeout 1\n        }}\n    }}\n",
            addr.ip(),
            addr.port()
        )
    };
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    lb_algo rr\n    delay_loop 0.2\n{}{}}}\n",
            real_server(a.addr),
            real_server(b.addr),
            sock = dir.join("admin.sock").display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let health = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["health"].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || health(1) == "down"),
        "b passes the regex: {}\n{}",
        status(&sock),
        log()
    );
    assert!(log().contains("regex \"^A\" did not match"), "{}", log());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(health(0), "up", "{}", status(&sock));
    for _ in 0..3 {
        assert_eq!(
            body(&get(SocketAddr::from(([127, 0, 0, 1], port))).unwrap()),
            "a"
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `FILE_CHECK`, end to end. Real server a has a TCP_CHECK first (every
/// 60 s) and a FILE_CHECK on `maint_a` with weight 0: the file, 1 before the node starts,
/// keeps a out from the first connection on; 0 brings it back within about a second, and
/// 1 again takes it out, whatever the TCP_CHECK's schedule. Real server b follows `boost`
/// (weight 2) and `extra` (weight 1), which add up: its weight becomes 1 + 2 × boost +
/// extra in `lbctl status`, 0 when that is below 0 (still up); a reload changing only b's
/// configured weight keeps the files' offset on top of the new weight.
#[test]
fn file_check_follows_the_files() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let (maint, boost, extra) = (dir.join("maint_a"), dir.join("boost"), dir.join("extra"));
    let notified = dir.join("notified");
    std::fs::write(&maint, "1\n").unwrap();
    let conf = dir.join("keepalived.conf");
    let write_conf = |b_weight: u32| {
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n    admin_socket {sock}\n}}\n\
                 track_file maint_a {{\n    file {maint}\n    weight 0\n}}\n\
                 track_file boost {{\n    file {boost}\n    weight 2\n}}\n\
                 track_file extra {{\n    file {extra}\n}}\n\
                 virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    lb_algo wrr\n    delay_loop 60\n\
                 real_server {} {} {{\n        notify_up \"echo up >> {notified}\"\n        notify_down \"echo down >> {notified}\"\n        TCP_CHECK {{\n        }}\n        FILE_CHECK {{\n            track_file maint_a\n        }}\n    }}\n\
                 real_server {} {} {{\n        weight {b_weight}\n        FILE_CHECK {{\n            track_file boost\n        }}\n        FILE_CHECK {{\n            track_file extra\n        }}\n    }}\n}}\n",
                a.addr.ip(),
                a.addr.port(),
                b.addr.ip(),
                b.addr.port(),
                sock = dir.join("admin.sock").display(),
                maint = maint.display(),
                boost = boost.display(),
                extra = extra.display(),
                notified = notified.display(),
            ),
        )
        .unwrap();
    };
    write_conf(1);
    let (node, sock) = start_node_with(&dir, &conf);
    let backend = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    // maint_a read 1 before the first connection: a takes none.
    assert_eq!(backend(0)["health"], "down", "{}", status(&sock));
    for _ in 0..3 {
        assert_eq!(body(&get(vip).unwrap()), "b");
    }
    std::fs::write(&maint, "0\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || backend(0)["health"] == "up"),
        "a not back with maint_a at 0: {}\n{}",
        status(&sock),
        log()
    );
    std::fs::write(&maint, "1\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || backend(0)["health"] == "down"),
        "a not down again (the TCP_CHECK's 60 s schedule must not hold the file back): {}\n{}",
        status(&sock),
        log()
    );
    assert!(
        backend(0)["health_reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("maint_a reads 1: fault")),
        "{}",
        status(&sock)
    );
    // The file's transitions ran a's notify scripts (not the state read at start).
    assert!(
        // One of each; the two scripts run as separate processes 10 ms apart, so their
        // lines may land in either order.
        wait_until(Duration::from_secs(3), || {
            std::fs::read_to_string(&notified).is_ok_and(|n| {
                let mut lines: Vec<&str> = n.lines().collect();
                lines.sort_unstable();
                lines == ["down", "up"]
            })
        }),
        "notify scripts: {:?}\n{}",
        std::fs::read_to_string(&notified),
        log()
    );

    std::fs::write(&boost, "3\n").unwrap();
    std::fs::write(&extra, "4\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || backend(1)["weight"] == 11),
        "b's weight not 1 + 2 x 3 + 4: {}\n{}",
        status(&sock),
        log()
    );
    // A reload changing only b's configured weight: 5 + 6 + 4.
    write_conf(5);
    let hup = Command::new("kill")
        .args(["-HUP", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(5), || backend(1)["weight"] == 15),
        "b's weight not 5 + 2 x 3 + 4 after the reload: {}\n{}",
        status(&sock),
        log()
    );
    assert!(
        log().contains("weight changed by reload"),
        "the reload changed the weight in place: {}",
        log()
    );
    std::fs::write(&boost, "-9\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || backend(1)["weight"] == 0),
        "b's weight not 0: {}\n{}",
        status(&sock),
        log()
    );
    assert_eq!(backend(1)["health"], "up");
    std::fs::remove_file(&boost).unwrap();
    std::fs::remove_file(&extra).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || backend(1)["weight"] == 5),
        "b's weight not back to 5 with the files gone: {}",
        status(&sock)
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A FILE_CHECK follows its file through inotify, as keepalived: with the check's own
/// `delay_loop` at 60 s (its file read every minute otherwise), a write, a rename into
/// place and a deletion each reach the real server within seconds.
#[test]
fn file_check_follows_inotify_between_reads() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let maint = dir.join("maint");
    let conf = dir.join("lb.toml");
    std::fs::write(
        &conf,
        format!(
            "[global]\nadmin_socket = \"{sock}\"\n\
             [[track_file]]\nname = \"maint\"\nfile = \"{maint}\"\nweight = 0\n\
             [[virtual_server]]\nlisten = \"127.0.0.1:{port}\"\n\
             [[virtual_server.backend]]\naddress = \"{a}\"\n\
             [[virtual_server.backend.check]]\ntype = \"file\"\ntrack_file = \"maint\"\ndelay_loop = 60\n\
             [[virtual_server.backend]]\naddress = \"{b}\"\n",
            sock = dir.join("admin.sock").display(),
            maint = maint.display(),
            a = a.addr,
            b = b.addr,
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let health = || status(&sock)["virtual_servers"][0]["backends"][0]["health"].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert_eq!(health(), "up", "{}", status(&sock));
    // A write (closed after writing).
    std::fs::write(&maint, "1\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || health() == "down"),
        "a written 1 did not take a down before the 60 s read: {}\n{}",
        status(&sock),
        log()
    );
    // A rename into place.
    let tmp = dir.join("maint.tmp");
    std::fs::write(&tmp, "0\n").unwrap();
    std::fs::rename(&tmp, &maint).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || health() == "up"),
        "a 0 renamed into place did not bring a back: {}\n{}",
        status(&sock),
        log()
    );
    std::fs::write(&maint, "1\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || health() == "down"));
    // A deletion reads as 0.
    std::fs::remove_file(&maint).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || health() == "up"),
        "a deleted file did not read as 0: {}\n{}",
        status(&sock),
        log()
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived runs a real server's notify scripts when the real server's state changes,
/// checks and tracked files together: a MISC_CHECK failing and recovering while a file
/// holds the real server down runs nothing; the file's fault and its end run notify_down
/// and notify_up once each.
#[test]
fn notify_scripts_follow_the_real_servers_combined_state() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let port = free_port();
    let (maint, flag, notified) = (dir.join("maint"), dir.join("flag"), dir.join("notified"));
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    admin_socket {sock}\n}}\n\
             track_file maint {{\n    file {maint}\n    weight 0\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    delay_loop 0.2\n\
             real_server {} {} {{\n        notify_up \"echo up >> {notified}\"\n        notify_down \"echo down >> {notified}\"\n\
             MISC_CHECK {{\n            misc_path \"/bin/sh -c '! test -e {flag}'\"\n            misc_timeout 2\n        }}\n\
             FILE_CHECK {{\n            track_file maint\n        }}\n    }}\n}}\n",
            a.addr.ip(),
            a.addr.port(),
            sock = dir.join("admin.sock").display(),
            maint = maint.display(),
            flag = flag.display(),
            notified = notified.display(),
        ),
    )
    .unwrap();
    let (node, sock) = start_node_with(&dir, &conf);
    let backend = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let notes = || std::fs::read_to_string(&notified).unwrap_or_default();
    std::fs::write(&maint, "1\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || notes() == "down\n"),
        "file fault: {:?}\n{}",
        notes(),
        log()
    );
    // The check fails and recovers under the file's fault: no script.
    std::fs::write(&flag, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || log().contains("exit 1")),
        "the MISC_CHECK did not fail: {}",
        log()
    );
    std::fs::remove_file(&flag).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(notes(), "down\n", "{}", log());
    assert_eq!(backend(0)["health"], "down");
    std::fs::write(&maint, "0\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || notes() == "down\nup\n"),
        "file fault ended: {:?}\n{}",
        notes(),
        log()
    );
    assert_eq!(backend(0)["health"], "up");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `startup_script` runs to its end before lb-node starts anything (the admin
/// socket is not there yet while it runs); `shutdown_script` runs once lb-node has
/// stopped everything (the listener is closed); a startup script still running at
/// `startup_script_timeout` is killed with its process group and the start goes on.
#[test]
fn startup_and_shutdown_scripts_run_around_the_node() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let port = free_port();
    let sock = dir.join("admin.sock");
    let conf = |startup: &str, timeout: u32| {
        format!(
            "global_defs {{\n    admin_socket {sock}\n    drain_deadline 1s\n    startup_script \"{startup}\"\n    startup_script_timeout {timeout}\n    shutdown_script \"/bin/bash -c 'if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo listening; else echo closed; fi > {d}/stop'\"\n}}\n\
             virtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    lb_algo rr\n    real_server {ip} {rp} {{\n    }}\n}}\n",
            sock = sock.display(),
            d = dir.display(),
            ip = a.addr.ip(),
            rp = a.addr.port(),
        )
    };
    let cfg = dir.join("keepalived.conf");
    let startup = format!(
        "/bin/sh -c 'sleep 0.5; test -e {sock} && echo early > {d}/start || echo before > {d}/start'",
        sock = sock.display(),
        d = dir.display()
    );
    std::fs::write(&cfg, conf(&startup, 10)).unwrap();
    let (mut node, _) = start_node_with(&dir, &cfg);
    assert_eq!(
        std::fs::read_to_string(dir.join("start")).unwrap_or_default(),
        "before\n",
        "the startup script ran, before the admin socket existed"
    );
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(body(&get(vip).unwrap()), "a");
    // A reload that changes the shutdown script: the new one runs at the stop (keepalived
    // runs its last reload's).
    let text = std::fs::read_to_string(&cfg).unwrap();
    let moved = text.replace("/stop'", "/stop-reloaded'");
    assert_ne!(text, moved);
    std::fs::write(&cfg, moved).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            dir.join("node.log")
        )
        .unwrap_or_default()
        .contains("reload done")),
        "reload done: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    let term = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(wait_until(Duration::from_secs(10), || node
        .0
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    assert_eq!(
        std::fs::read_to_string(dir.join("stop-reloaded")).unwrap_or_default(),
        "closed\n",
        "the shutdown script ran after the listener closed: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );

    // A startup script that outlives its timeout: SIGTERM to its group, then SIGKILL to
    // what is left of it (its child, which ignores SIGTERM), and the node starts.
    // The scripts' `sleep`s, killed by PID if a failed assertion leaves them running.
    // Only while it is still that `sleep 300` (a PID reused since is not ours).
    struct KillPid(std::path::PathBuf);
    impl Drop for KillPid {
        fn drop(&mut self) {
            let Some(pid) = std::fs::read_to_string(&self.0)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            else {
                return;
            };
            if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x00300\x00")
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let pidfile = dir.join("sleep.pid");
    let _kill1 = KillPid(pidfile.clone());
    let hang = format!(
        "/bin/sh -c '(trap \\\"\\\" TERM; exec sleep 300) & echo $! > {}; wait'",
        pidfile.display()
    );
    std::fs::write(&cfg, conf(&hang, 1)).unwrap();
    let started = Instant::now();
    let (node, _) = start_node_with(&dir, &cfg);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the node waited for the startup script"
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    // Gone, or a zombie nobody reaped yet.
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    };
    assert!(
        wait_until(Duration::from_secs(5), || !alive(&pid)),
        "the startup script's child, deaf to SIGTERM, is killed with its group"
    );
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(log.contains("startup script timed out"), "{log}");
    drop(node);

    // SIGTERM while the startup script runs: the script is killed, nothing starts, exit 0.
    let pidfile = dir.join("sleep2.pid");
    let _kill2 = KillPid(pidfile.clone());
    let _ = std::fs::remove_file(&sock);
    let hang = format!(
        "/bin/sh -c 'sleep 300 & echo $! > {}; wait'",
        pidfile.display()
    );
    std::fs::write(&cfg, conf(&hang, 100)).unwrap();
    let mut node = Node(
        lb_node_command()
            .arg("--pid-file")
            .arg(dir.join("lb-node.pid"))
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| !p.trim().is_empty())
    }));
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let term = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(
        wait_until(Duration::from_secs(5), || node
            .0
            .try_wait()
            .ok()
            .flatten()
            .is_some_and(|s| s.success())),
        "lb-node exits 0 at once: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(&pid)),
        "the startup script is killed with its group"
    );
    assert!(!sock.exists(), "nothing started");
    assert!(get(vip).is_err(), "the virtual server never listened");
    // Each pid file names a process that is gone by now: nothing for the guards to kill
    // (a PID reused meanwhile is not ours).
    std::fs::remove_file(dir.join("sleep.pid")).unwrap();
    std::fs::remove_file(&pidfile).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived's `rs_init_notifies`: the real servers that start up with their virtual
/// server run notify_up (an `alpha` one starts down and runs it when its first check
/// passes, with or without), and a reload that adds a real server runs its notify_up only;
/// without it only the alpha one's change runs one. A virtual server a reload adds that
/// cannot bind runs none (they ran before its bind).
#[test]
fn rs_init_notifies_runs_notify_up_for_the_first_state() {
    let dir = tempdir();
    let (a, b, c) = (
        RealServer::start("a"),
        RealServer::start("b"),
        RealServer::start("c"),
    );
    let port = free_port();
    let notified = dir.join("notified");
    let conf = dir.join("keepalived.conf");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let write3 = |init: bool, with_c: bool, with_busy: bool| {
        let rs = |s: &RealServer, name: &str, alpha: bool| {
            format!(
                "    real_server {} {} {{\n        notify_up \"echo {name}-up >> {}\"\n        TCP_CHECK {{\n{}        }}\n    }}\n",
                s.addr.ip(),
                s.addr.port(),
                notified.display(),
                if alpha { "            alpha\n" } else { "" }
            )
        };
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n    admin_socket {}\n{}}}\nvirtual_server 127.0.0.1 {port} {{\n    protocol TCP\n    delay_loop 30\n{}{}{}}}\n{}",
                dir.join("admin.sock").display(),
                if init { "    rs_init_notifies\n" } else { "" },
                rs(&a, "a", false),
                rs(&b, "b", true),
                if with_c { rs(&c, "c", false) } else { String::new() },
                if with_busy {
                    format!(
                        "virtual_server 127.0.0.1 {busy_port} {{\n    protocol TCP\n    delay_loop 30\n{}}}\n",
                        rs(&a, "busy", false)
                    )
                } else {
                    String::new()
                },
            ),
        )
        .unwrap();
    };
    let write = |init: bool, with_c: bool| write3(init, with_c, false);
    // The lines so far, sorted (scripts run concurrently).
    let notes = || {
        let mut v: Vec<String> = std::fs::read_to_string(&notified)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v.join(" ")
    };
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    // Without it: only b's change (alpha: down until its first check passes).
    write(false, false);
    let (node, sock) = start_node_with(&dir, &conf);
    assert!(
        wait_until(Duration::from_secs(5), || notes() == "b-up"),
        "{:?}\n{}",
        notes(),
        log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(notes(), "b-up", "{}", log());
    drop(node);
    std::fs::remove_file(&notified).unwrap();
    write(true, false);
    let (node, sock2) = start_node_with(&dir, &conf);
    assert_eq!(sock, sock2);
    assert!(
        wait_until(Duration::from_secs(5), || notes() == "a-up b-up"),
        "{:?}\n{}",
        notes(),
        log()
    );
    write(true, true);
    let hup = Command::new("kill")
        .args(["-HUP", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(5), || notes() == "a-up b-up c-up"),
        "{:?}\n{}",
        notes(),
        log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(notes(), "a-up b-up c-up", "{}", log());
    write3(true, true, true);
    let hup = Command::new("kill")
        .args(["-HUP", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(5), || status(&sock)["node"]
            ["last_reload"]["result"]
            == "partial"),
        "{}",
        log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(notes(), "a-up b-up c-up", "{}", log());
    drop(busy);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection the retired version of a virtual server still drains after a restarting
/// reload counts as open in `lbctl status` (and for the scheduler): an operator who
/// drains a backend and waits for `active_connections` 0 does not cut it. It showed 0,
/// as IPVS's connection entries, which outlive a keepalived reload, never do.
#[test]
fn reload_restart_still_counts_the_draining_connections() {
    let dir = tempdir();
    // Holds each connection open until its client closes it.
    let baddr = echo_until_eof(1);
    let port = free_port();
    let config = |algo: &str| {
        format!(
            "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"30s\"\n\n[[virtual_server]]\nname = \"echo\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nlb_algo = \"{algo}\"\n\n[[virtual_server.backend]]\naddress = \"{baddr}\"\n",
            dir.join("admin.sock").display()
        )
    };
    let (node, sock) = start_node(&dir, &config("rr"));
    let vip = SocketAddr::from(([127, 0, 0, 1], port));
    let active =
        || status(&sock)["virtual_servers"][0]["backends"][0]["active_connections"].clone();
    let held = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || active() == 1),
        "{}",
        active()
    );
    reload_node(&node, &dir, &config("wrr"));
    wait_scheduler(&sock, &dir, "wrr");
    assert_eq!(active(), 1, "the draining connection still counts");
    drop(held);
    assert!(
        wait_until(Duration::from_secs(5), || active() == 0),
        "{}",
        active()
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A start-only setting (`log_level`, `nbthread`, `admin_socket`) changed by a reload is
/// warned about and the running value stays the one compared with: a reload back to it is
/// "nothing changed", a reload to a third value warns again. The new value used to be
/// kept: reverting warned, and changing it once more did not.
#[test]
fn start_only_settings_are_compared_with_the_running_value() {
    let dir = tempdir();
    let port = free_port();
    let config = |level: &str| {
        format!(
            "[global]\nadmin_socket = \"{}\"\nlog_level = \"{level}\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n[[virtual_server.backend]]\naddress = \"127.0.0.1:1\"\n",
            dir.join("admin.sock").display()
        )
    };
    let (node, _sock) = start_node(&dir, &config("info"));
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let reloads =
        || log().matches("reload done").count() + log().matches("reload: nothing changed").count();
    let warned = || log().matches("log_level changed").count();
    for (level, want) in [("debug", 1), ("info", 1), ("warn", 2)] {
        let before = reloads();
        reload_node(&node, &dir, &config(level));
        assert!(
            wait_until(Duration::from_secs(5), || reloads() > before),
            "reload to {level} not done: {}",
            log()
        );
        assert_eq!(warned(), want, "after the reload to {level}: {}", log());
    }
    assert!(log().contains("reload: nothing changed"), "{}", log());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload whose restart fails (its new address is taken) leaves the running version's
/// lbctl weights on record: the next restarting reload, back to the file the running
/// version has, still holds the operator's weight. The failed start used to drop from the
/// record the weights its file changed.
#[test]
fn a_failed_restart_keeps_the_lbctl_weights_on_record() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let config = |algo: &str, listen_port: u16, weight_a: u32| {
        format!(
            "[global]\nadmin_socket = \"{sock}\"\n\n[[virtual_server]]\nname = \"web\"\nlisten = \"127.0.0.1:{listen_port}\"\nlb_algo = \"{algo}\"\n[[virtual_server.backend]]\naddress = \"{a}\"\nweight = {weight_a}\n[[virtual_server.backend]]\naddress = \"{b}\"\n",
            sock = dir.join("admin.sock").display(),
            a = a.addr,
            b = b.addr,
        )
    };
    let (node, sock) = start_node(&dir, &config("rr", port, 1));
    let weight = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["weight"].clone();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let out = Command::new(LBCTL)
        .arg("--socket")
        .arg(&sock)
        .args(["weight", "web", &a.addr.to_string(), "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(5), || weight(0) == 0));
    // A restart to a taken port, with a's weight changed: it fails, the old one runs on.
    reload_node(&node, &dir, &config("wrr", taken_port, 2));
    assert!(
        wait_until(Duration::from_secs(15), || log()
            .contains("keeps running with its previous configuration")),
        "{}",
        log()
    );
    assert_eq!(weight(0), 0);
    // Back to the running file, restarting (another lb_algo): the operator's 0 holds.
    reload_node(&node, &dir, &config("wlc", port, 1));
    wait_scheduler(&sock, &dir, "wlc");
    assert_eq!(weight(0), 0, "{}", status(&sock));
    drop(taken);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `slow_start` (HAProxy `slowstart`): a backend taken out of service and put back ramps
/// from weight 1 up to its weight over the window, step by step, and `lbctl status` shows
/// its effective weight along the way; the other backend keeps its weight throughout.
#[test]
fn slow_start_ramps_a_returning_backend() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let b = RealServer::start("b");
    let port = free_port();
    let toml = format!(
        r#"
[global]
admin_socket = "{sock}"

[[virtual_server]]
name = "web"
listen = "127.0.0.1:{port}"
lb_algo = "wrr"
slow_start = "4s"

[[virtual_server.backend]]
address = "{a}"
weight = 10
[[virtual_server.backend]]
address = "{b}"
weight = 10
"#,
        sock = dir.join("admin.sock").display(),
        a = a.addr,
        b = b.addr,
    );
    let (node, sock) = start_node(&dir, &toml);
    let effective = |i: usize| {
        status(&sock)["virtual_servers"][0]["backends"][i]["effective_weight"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        (effective(0), effective(1)),
        (10, 10),
        "no ramp at start-up"
    );
    lbctl_backend(&sock, "maint", "web", b.addr);
    lbctl_backend(&sock, "ready", "web", b.addr);
    // Steps of 1 s (a twentieth of 4 s is less): 1, then 3, 5, 8 and 10.
    let mut seen = vec![effective(1)];
    let done = wait_until(Duration::from_secs(15), || {
        let w = effective(1);
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        w == 10
    });
    assert!(
        done,
        "the ramp did not end: {seen:?}\n{}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    assert_eq!(seen[0], 1, "back in service at weight 1: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]) && seen.len() >= 3,
        "ramped in steps: {seen:?}"
    );
    assert_eq!(effective(0), 10);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr when it fails.
fn openssl_in(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA (`ca.pem`), a certificate it issued for `web.internal` (`web.pem`,
/// `web.key`) and a client certificate for `lb.internal` (`client.pem`, `client.key`),
/// written into `dir`, as a site's internal PKI gives its real servers and proxies.
fn private_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let req = |extra: &[&str]| openssl_in(dir, &[&["req"][..], &ec, extra].concat());
    // Signs `name.csr` with the CA, with the extensions in `ext` (X.509 v3), into
    // `name.pem`.
    let sign = |name: &str, ext: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (csr, ext, pem) = (
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        openssl_in(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    };
    req(&[
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=lb test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    req(&[
        "-subj",
        "/CN=web.internal",
        "-keyout",
        "web.key",
        "-out",
        "web.csr",
    ]);
    sign("web", "subjectAltName=DNS:web.internal\n");
    // A client certificate for lb-node itself (mutual TLS).
    req(&[
        "-subj",
        "/CN=lb.internal",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ]);
    sign("client", "extendedKeyUsage=clientAuth\n");
}

/// `[virtual_server.http] backend_tls` against nginx real servers speaking HTTPS with a
/// certificate from a private CA: requests are spread per request and re-encrypted with
/// the configured SNI (nginx's `$ssl_server_name`), the real servers' `ssl` checks find
/// them up, and a virtual server that expects another name in their certificates gets
/// 502 for every request, counted (`bad_gateway`, the real servers' connect failures). A
/// real server that requires a client certificate (nginx `ssl_verify_client on`) takes
/// lb-node's `backend_certificate`.
#[test]
fn http_mode_reencrypts_to_https_real_servers() {
    let dir = tempdir();
    private_pki(&dir);
    let (a, b, m) = (free_port(), free_port(), free_port());
    let server = |name: &str, port: u16| {
        format!(
            "  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/web.pem; ssl_certificate_key {d}/web.key;\n\
                 location / {{ return 200 \"{name} $ssl_server_name $ssl_protocol $http_x_forwarded_for\\n\"; }} }}\n",
            d = dir.display()
        )
    };
    let mtls = format!(
        "  server {{ listen 127.0.0.1:{m} ssl; ssl_certificate {d}/web.pem; ssl_certificate_key {d}/web.key;\n\
             ssl_client_certificate {d}/ca.pem; ssl_verify_client on;\n\
             location / {{ return 200 \"m $ssl_client_s_dn\\n\"; }} }}\n",
        d = dir.display()
    );
    let nginx = Nginx::start(
        &dir.join("nginx"),
        &(server("a", a) + &server("b", b) + &mtls),
        &[a, b, m],
    )
    .expect("nginx (Debian's nginx-light, installed by .ci/run)");
    let (web, strict, front, mutual) = (free_port(), free_port(), free_port(), free_port());
    let vs = |name: &str, port: u16, sni: &str, check: &str| {
        let backend =
            |p: u16| format!("[[virtual_server.backend]]\naddress = \"127.0.0.1:{p}\"\n{check}");
        format!(
            "[[virtual_server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
             lb_algo = \"rr\"\ndelay_loop = \"200ms\"\n\
             [virtual_server.http]\nbackend_tls = true\nbackend_ca_file = \"ca.pem\"\nbackend_sni = \"{sni}\"\n{}{}",
            backend(a),
            backend(b)
        )
    };
    let ssl_check = "[[virtual_server.backend.check]]\ntype = \"ssl\"\nurl = [{ path = \"/\" }]\nconnect_timeout = \"1s\"\n";
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}{}\
         [[virtual_server]]\nname = \"front\"\nlisten = \"127.0.0.1:{front}\"\nprotocol = \"http\"\n\
         [[virtual_server.http.route]]\npath_prefix = \"/\"\nvirtual_server = \"web\"\n\
         [[virtual_server.backend]]\naddress = \"127.0.0.1:9\"\n\
         [[virtual_server]]\nname = \"mutual\"\nlisten = \"127.0.0.1:{mutual}\"\nprotocol = \"http\"\n\
         [virtual_server.http]\nbackend_tls = true\nbackend_ca_file = \"ca.pem\"\nbackend_sni = \"web.internal\"\n\
         backend_certificate = \"client.pem\"\nbackend_key = \"client.key\"\n\
         [[virtual_server.backend]]\naddress = \"127.0.0.1:{m}\"\n",
        dir.join("admin.sock").display(),
        vs("web", web, "web.internal", ssl_check),
        vs("strict", strict, "other.internal", ""),
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default() + &nginx.log();
    let health = |i: usize| status(&sock)["virtual_servers"][0]["backends"][i]["health"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health(0) == "up"
            && health(1) == "up"),
        "{}",
        log()
    );
    let vip: SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let bodies: Vec<String> = (0..4)
        .map(|_| body(&get(vip).unwrap_or_else(|e| panic!("{e}\n{}", log()))).to_owned())
        .collect();
    for (i, got) in bodies.iter().enumerate() {
        let name = if i % 2 == 0 { "a" } else { "b" };
        // TLS 1.3 or 1.2, whichever nginx's OpenSSL and rustls agree on.
        assert!(
            got.starts_with(&format!("{name} web.internal TLSv1."))
                && got.ends_with(" 127.0.0.1\n"),
            "{bodies:?}\n{}",
            log()
        );
    }
    // Mutual TLS: nginx verified lb-node's client certificate.
    let vip: SocketAddr = format!("127.0.0.1:{mutual}").parse().unwrap();
    let got = get(vip).unwrap();
    assert_eq!(body(&got), "m CN=lb.internal\n", "{got}\n{}", log());

    // A plain virtual server routing to web: its requests are re-encrypted too.
    let vip: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    let got = get(vip).unwrap();
    assert!(body(&got).starts_with("a web.internal TLSv1."), "{got}");
    let s = status(&sock);
    assert_eq!(s["virtual_servers"][0]["http"]["bad_gateway"], 0, "{s}");

    // Certificates that do not name other.internal: no request reaches a real server.
    let vip: SocketAddr = format!("127.0.0.1:{strict}").parse().unwrap();
    for _ in 0..2 {
        let got = get(vip).unwrap();
        assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    }
    let s = status(&sock);
    let strict = &s["virtual_servers"][1];
    // Each request tried both real servers (a failed handshake is retried as a failed
    // connect); none answered.
    assert_eq!(
        (
            strict["http"]["bad_gateway"].as_u64(),
            strict["http"]["retries"].as_u64()
        ),
        (Some(2), Some(2)),
        "{s}"
    );
    for i in 0..2 {
        let http = &strict["backends"][i]["http"];
        assert_eq!(
            (http["requests"].as_u64(), http["responses_2xx"].as_u64()),
            (Some(2), Some(0)),
            "{s}"
        );
    }
    // Why, once in the log at WARN.
    assert!(
        wait_until(Duration::from_secs(5), || log()
            .matches("backend TLS handshake failed")
            .count()
            == 1),
        "{}",
        log()
    );
    assert!(
        log().contains("certificate not valid for name \"other.internal\""),
        "{}",
        log()
    );
    drop(node);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[virtual_server.http] access_log`: two virtual servers write one file (relative to the
/// configuration), one in HAProxy's httplog layout, the other in nginx's combined, and a
/// TCP virtual server's `[virtual_server.tcp] access_log` its tcplog lines there too; after
/// logrotate moves the file away, SIGHUP reopens it and the next lines go to a new file at
/// the path.
#[test]
fn access_log_lines_follow_requests_and_a_reload_reopens_the_file() {
    let dir = tempdir();
    let a = RealServer::start("a");
    let (web, api, tcp) = (free_port(), free_port(), free_port());
    let vs = |name: &str, port: u16, format: &str| {
        format!(
            "[[virtual_server]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
             [virtual_server.http]\naccess_log = \"access.log\"\naccess_log_format = \"{format}\"\n\
             [[virtual_server.backend]]\naddress = \"{}\"\n",
            a.addr
        )
    };
    let toml = format!(
        "[global]\nadmin_socket = \"{}\"\ndrain_deadline = \"1s\"\n\n{}{}\
         [[virtual_server]]\nname = \"tcp\"\nlisten = \"127.0.0.1:{tcp}\"\n\
         [virtual_server.tcp]\naccess_log = \"access.log\"\n\
         [[virtual_server.backend]]\naddress = \"{}\"\n",
        dir.join("admin.sock").display(),
        vs("web", web, "httplog"),
        vs("api", api, "combined"),
        a.addr,
    );
    let (node, sock) = start_node(&dir, &toml);
    let log = dir.join("access.log");
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let wait_lines = |p: &Path, n: usize| {
        assert!(
            wait_until(Duration::from_secs(5), || lines(p).len() >= n),
            "{:?}\n{}",
            lines(p),
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
    };
    let web_vip: SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let api_vip: SocketAddr = format!("127.0.0.1:{api}").parse().unwrap();
    assert_eq!(body(&request(web_vip, "w", "/x?y=1").unwrap()), "a");
    wait_lines(&log, 1);
    // A quote the client sent cannot end the field early.
    assert_eq!(body(&request(api_vip, "w", "/v1/\"q\"").unwrap()), "a");
    assert_eq!(body(&request(api_vip, "w", "/v1/items").unwrap()), "a");
    wait_lines(&log, 3);
    let got = lines(&log);
    assert!(got[0].starts_with("127.0.0.1:"), "{got:?}");
    assert!(
        got[0].contains(&format!("] web web/{} ", a.addr))
            && got[0].ends_with(" 200 1 - - ---- 0 \"GET /x?y=1 HTTP/1.1\""),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("127.0.0.1 - - [")
            && got[1].ends_with(" +0000] \"GET /v1/\\x22q\\x22 HTTP/1.1\" 200 1 \"-\" \"-\""),
        "{got:?}"
    );
    assert!(
        got[2].contains("\"GET /v1/items HTTP/1.1\" 200 1 "),
        "{got:?}"
    );
    // The TCP virtual server: one line for the connection, once it closed.
    let tcp_vip: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let answer = request(tcp_vip, "w", "/").unwrap();
    assert_eq!(body(&answer), "a");
    wait_lines(&log, 4);
    let got = lines(&log);
    let sent = "GET / HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n".len();
    assert!(
        got[3].contains(&format!("] tcp tcp/{} ", a.addr))
            && got[3].ends_with(&format!(" {} -- 0 {sent}", answer.len())),
        "{got:?}"
    );
    // lbctl status counts the file's lines: one file, shared by the three.
    let st = status(&sock);
    assert_eq!(st["access_logs"].as_array().map(Vec::len), Some(1), "{st}");
    let file = &st["access_logs"][0];
    assert!(
        file["path"].as_str().unwrap().ends_with("/access.log"),
        "{st}"
    );
    assert_eq!(
        (
            file["lines_written"].as_u64(),
            file["lines_dropped"].as_u64(),
            file["lines_lost"].as_u64()
        ),
        (Some(4), Some(0), Some(0)),
        "{st}"
    );

    // logrotate: move the file, HUP, and the next lines start a new file.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let before = lines(&rotated).len();
    reload_node(&node, &dir, &toml);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = request(web_vip, "w", "/after");
            lines(&log).iter().any(|l| l.contains("/after"))
        }),
        "{:?}",
        lines(&log)
    );
    assert_eq!(
        lines(&rotated).len(),
        before,
        "nothing more in the rotated file"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
