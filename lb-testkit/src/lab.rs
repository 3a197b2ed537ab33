//! [`Lab`]: namespaces on a bridge.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{run_bounded, run_ok, Proc};

/// The only network a lab uses: 198.18.0.0/24 (RFC 2544 benchmarking space).
pub const LAB_NET: [u8; 3] = [198, 18, 0];

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
struct Host {
    name: String,
    ns: String,
    addr: Ipv4Addr,
}

/// A bridge namespace and host namespaces, each host with `eth0` (a veth whose peer is on
/// the bridge) at `198.18.0.N/24` and `lo` up. Everything it created — namespaces (and so
/// their interfaces and addresses) and its log directory — is removed on drop, even when a
/// test panics; it never touches a namespace it did not create (an existing name is an
/// error, not a reuse). Set `LB_LAB_KEEP_LOGS=1` to keep the log directory.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    bridge_ns: Option<String>,
    hosts: Vec<Host>,
    /// Namespaces this lab created, in creation order.
    created: Vec<String>,
    dir: PathBuf,
}

impl Lab {
    /// Builds a lab named `PREFIX<pid>x<counter>` with one host namespace per `(name,
    /// last_octet)`: host `name` gets `198.18.0.<last_octet>/24` on `eth0`.
    ///
    /// # Errors
    /// An `ip` command failed (everything created so far is removed again), a namespace of
    /// that name already exists, or a host name or address is given twice or is invalid.
    pub fn new(prefix: &str, hosts: &[(&str, u8)]) -> io::Result<Self> {
        let tag = format!(
            "{prefix}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Self {
            tag,
            bridge_ns: None,
            hosts: Vec::new(),
            created: Vec::new(),
            dir,
        };
        for (i, (name, octet)) in hosts.iter().enumerate() {
            if *octet == 0 || *octet == 255 {
                return Err(invalid(format!("198.18.0.{octet} is not a host address")));
            }
            if hosts[..i].iter().any(|(n, o)| n == name || o == octet) {
                return Err(invalid(format!("host {name} or .{octet} given twice")));
            }
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(format!("host name {name:?}: use [A-Za-z0-9]+")));
            }
        }
        let br = format!("{}-br", lab.tag);
        lab.add_ns(&br)?;
        lab.bridge_ns = Some(br.clone());
        run_ok("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        // No IGMP snooping: VRRP multicast (224.0.0.18) must reach every port.
        run_ok(
            "ip",
            &[
                "-n",
                &br,
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        run_ok("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        for (i, (name, octet)) in hosts.iter().enumerate() {
            let ns = format!("{}-{name}", lab.tag);
            lab.add_ns(&ns)?;
            let port = format!("p{i}");
            run_ok(
                "ip",
                &[
                    "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run_ok(
                "ip",
                &["-n", &br, "link", "set", &port, "master", "br0", "up"],
            )?;
            run_ok("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let addr = Ipv4Addr::new(LAB_NET[0], LAB_NET[1], LAB_NET[2], *octet);
            run_ok(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run_ok("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            lab.hosts.push(Host {
                name: (*name).to_owned(),
                ns,
                addr,
            });
        }
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> io::Result<()> {
        if Path::new("/var/run/netns").join(ns).exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("namespace {ns} exists and is not ours"),
            ));
        }
        run_ok("ip", &["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        Ok(())
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} in lab {}", self.tag))
    }

    /// The lab's unique tag (prefix + pid + counter); every namespace name starts with it.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The lab's directory (logs, configuration files, sockets); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host names, in creation order.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(|h| h.name.as_str())
    }

    /// The namespace of host `name`. Panics on an unknown host.
    pub fn ns(&self, name: &str) -> &str {
        &self.host(name).ns
    }

    /// The `eth0` address of host `name`. Panics on an unknown host.
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.host(name).addr
    }

    /// `ip netns exec NS program`: add arguments and spawn it yourself, or pass it to
    /// [`Proc::spawn`].
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = crate::command("ip");
        cmd.args(["netns", "exec", self.ns(host)]).arg(program);
        cmd
    }

    /// `keepalived -n -l -D -f CONF` inside host `host` (foreground, logging to stderr),
    /// with its pid files (`-p`, `-r`, `-c`, `-b`) named `TAG-*.pid` in
    /// [`dir`](Self::dir) and removed first, so that several keepalived of one lab, and
    /// the machine's own, never share one. Spawn it with [`Proc::spawn`] (its own
    /// process group: [`Proc::kill9`] is a crash of the whole daemon).
    pub fn keepalived(&self, host: &str, conf: &Path, tag: &str) -> Command {
        let pid = |what: &str| {
            let p = self.dir.join(format!("{tag}-{what}.pid"));
            let _ = std::fs::remove_file(&p);
            p
        };
        let mut cmd = self.command(host, "keepalived");
        cmd.args(["-n", "-l", "-D", "-f"])
            .arg(conf)
            .arg("-p")
            .arg(pid("main"))
            .arg("-r")
            .arg(pid("vrrp"))
            .arg("-c")
            .arg(pid("checkers"))
            .arg("-b")
            .arg(pid("bfd"));
        cmd
    }

    /// Starts `program args…` inside host `host` as a [`Proc`] named `name` (logs in
    /// [`dir`](Self::dir)).
    ///
    /// # Errors
    /// The spawn failed.
    pub fn spawn<I, S>(
        &self,
        host: &str,
        name: &str,
        program: impl AsRef<OsStr>,
        args: I,
    ) -> io::Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(host, program);
        cmd.args(args);
        Proc::spawn(cmd, &self.dir, name)
    }

    /// Runs `args` inside host `host` to completion (killed after 10 s).
    ///
    /// # Errors
    /// The spawn failed or the command timed out.
    pub fn exec(&self, host: &str, args: &[&str]) -> io::Result<Output> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| invalid("empty command".into()))?;
        let mut cmd = self.command(host, program);
        cmd.args(rest);
        run_bounded(cmd, Duration::from_secs(10))
    }

    /// The addresses on host `host`'s `eth0` (`ip -n NS -o addr show dev eth0`).
    pub fn addrs(&self, host: &str) -> Vec<IpAddr> {
        let mut cmd = crate::command("ip");
        cmd.args(["-n", self.ns(host), "-o", "addr", "show", "dev", "eth0"]);
        let Ok(out) = run_bounded(cmd, Duration::from_secs(5)) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut addrs = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "inet" || w == "inet6" {
                    if let Some(a) = words
                        .next()
                        .and_then(|a| a.split('/').next())
                        .and_then(|a| a.parse().ok())
                    {
                        addrs.push(a);
                    }
                }
            }
        }
        addrs
    }

    /// True if host `host`'s `eth0` carries `addr`.
    pub fn has_addr(&self, host: &str, addr: IpAddr) -> bool {
        self.addrs(host).contains(&addr)
    }

    /// The hosts among `of` whose `eth0` carries `addr`.
    pub fn holders<'a>(&self, of: &[&'a str], addr: IpAddr) -> Vec<&'a str> {
        of.iter()
            .copied()
            .filter(|h| self.has_addr(h, addr))
            .collect()
    }

    /// Binds a TCP listener inside host `host` (the socket lives in that namespace and can
    /// be used from any thread).
    ///
    /// # Errors
    /// Entering the namespace or binding failed.
    pub fn bind(&self, host: &str, addr: SocketAddr) -> io::Result<TcpListener> {
        in_netns(self.ns(host), move || TcpListener::bind(addr))
    }

    /// Connects from inside host `host` to `addr` within `timeout`; read and write
    /// timeouts are set to `timeout` as well.
    ///
    /// # Errors
    /// Entering the namespace or connecting failed.
    pub fn connect(
        &self,
        host: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let s = in_netns(self.ns(host), move || {
            TcpStream::connect_timeout(&addr, timeout)
        })?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(s)
    }

    /// `GET /` over HTTP/1.0 from inside host `host`; returns the body of a 200 response,
    /// trimmed. Every step is bounded by `timeout`.
    ///
    /// # Errors
    /// The connection failed or timed out, or the answer was not a 200.
    pub fn http_get(&self, host: &str, addr: SocketAddr, timeout: Duration) -> io::Result<String> {
        let mut s = self.connect(host, addr, timeout)?;
        write!(
            s,
            "GET / HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lb-testkit\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::other(format!("no HTTP head in {text:?}")))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!(
                "not a 200: {}",
                head.lines().next().unwrap_or("")
            )));
        }
        Ok(body.trim().to_owned())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Runs `f` on a fresh thread that has entered network namespace `ns` (by name, as in
/// `ip netns`), and returns its result. Sockets `f` opens stay in that namespace.
///
/// # Errors
/// The namespace cannot be opened or entered, or `f`'s error.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = File::open(path)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("thread in the namespace panicked"))?
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Hosts first, the bridge last; only names this lab created.
        for ns in self.created.iter().rev() {
            let mut ok = false;
            // `ip netns del` can fail while a process of ours is still leaving the
            // namespace; retry a few times (bounded).
            for _ in 0..5 {
                let mut cmd = crate::command("ip");
                cmd.args(["netns", "del", ns]);
                if run_bounded(cmd, Duration::from_secs(5)).is_ok_and(|o| o.status.success()) {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !ok {
                eprintln!("lb-testkit: could not delete namespace {ns}");
            }
        }
        if std::env::var_os("LB_LAB_KEEP_LOGS").is_some() {
            eprintln!("lb-testkit: logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
