// cargo run -p lb-benches --release --bin health_compare -- [--rounds N]
//
// Time from a backend's death to its removal, ours (lb-health, TCP check) against HAProxy
// `check` with the same settings: inter 1 s, fall 2, rise 2, timeout 1 s. One backend on
// 127.0.0.1 (an in-process listener), both checkers watching it; the backend is closed at a
// random phase of the check cycle (connects are then refused), and each checker's Down is
// timestamped as it arrives (ours: the driver's event; HAProxy: its "is DOWN" log line on
// stderr, read as it is written).
//
// keepalived's TCP_CHECK cannot take part on this machine: its checker process needs the
// kernel's IPVS, which is absent here, and exits at start-up ("IPVS: Can't initialize ipvs").
//
// Output: one `RESULT\tfigure\tside\tvalue\tunit` line per measurement (the suite aggregates
// them), then a summary. Only loopback traffic; every wait is bounded.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock and sleeps

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lb_benches::arg;
use lb_core::{BackendId, Health};
use lb_health::probe::TcpProbe;
use lb_health::{HealthCheckConfig, HealthDriver};

/// A backend that accepts and closes, until dropped.
struct Backend {
    addr: SocketAddr,
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Backend {
    fn start(port: u16) -> Self {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let (stop, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || loop {
            if rx.try_recv().is_ok() {
                return; // drops the listener: connects are refused from now on
            }
            match l.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        Self { addr, stop, thread }
    }

    fn kill(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn main() {
    let rounds = arg("--rounds", 5).max(1);
    let dir = std::env::temp_dir().join(format!("lb-health-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds {
        let backend = Backend::start(0);
        let addr = backend.addr;
        // HAProxy watching the same backend.
        let cfg = dir.join("haproxy.cfg");
        let mut f = std::fs::File::create(&cfg).expect("cfg");
        // HAProxy needs a listener; a free loopback port, found by binding port 0.
        let fe_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        writeln!(
            f,
            "global\n  log stderr format raw local0\n  pidfile {}/haproxy.pid\ndefaults\n  mode tcp\n  log global\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend f\n  bind 127.0.0.1:{fe_port}\n  default_backend b\nbackend b\n  timeout check 1s\n  server s1 {addr} check inter 1s fall 2 rise 2\n",
            dir.display()
        )
        .expect("write cfg");
        let mut ha = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy (apt-get install haproxy)");
        let (down_tx, down_rx) = mpsc::channel::<Instant>();
        let stderr = ha.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("is DOWN") {
                    let _ = down_tx.send(Instant::now());
                }
            }
        });
        // Ours.
        let (t_ours, t_kill) = rt.block_on(async {
            let mut driver = HealthDriver::new(16);
            let mut events = driver.subscribe();
            let hc = HealthCheckConfig::haproxy()
                .inter(Duration::from_secs(1))
                .rise(2)
                .fall(2)
                .timeout(Duration::from_secs(1))
                .build()
                .expect("config");
            driver
                .add(BackendId(1), addr, Box::new(TcpProbe::new()), hc)
                .expect("add");
            // Steady state, then a death at a different phase each round.
            let phase = Duration::from_millis(2500 + 1000 * round / rounds);
            tokio::time::sleep(phase).await;
            let t_kill = Instant::now();
            backend.kill();
            let t = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match events.recv().await {
                        Ok(e) if e.new == Health::Down => return Instant::now(),
                        Ok(_) => {}
                        Err(_) => return Instant::now() + Duration::from_secs(3600),
                    }
                }
            })
            .await
            .expect("our Down within 10 s");
            driver.shutdown().await;
            (t, t_kill)
        });
        let t_ha = down_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("HAProxy DOWN within 10 s");
        let _ = ha.kill();
        let _ = ha.wait();
        let _ = reader.join();
        let o = t_ours.duration_since(t_kill).as_secs_f64() * 1000.0;
        let h = t_ha.saturating_duration_since(t_kill).as_secs_f64() * 1000.0;
        println!("RESULT\thealth: backend death to Down (inter 1s, fall 2)\tours\t{o:.0}\tms");
        println!("RESULT\thealth: backend death to Down (inter 1s, fall 2)\thaproxy\t{h:.0}\tms");
        ours.push(o);
        theirs.push(h);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mo, mh) = (med(&mut ours), med(&mut theirs));
    println!("\nbackend death → Down, median of {rounds}: ours {mo:.0} ms, HAProxy {mh:.0} ms (HAProxy/ours {:.2}x)", mh / mo);
    println!("keepalived TCP_CHECK: not measurable here (its checker needs the kernel's IPVS, which this machine lacks)");
}
