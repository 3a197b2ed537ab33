// cargo run -p lb-health --release --example checker_load
//
// A measurement, not a test: 1000 TCP backends on 127.0.0.1 checked every 1 s (fall 2,
// timeout 500 ms). Reports
//
// 1. the CPU the checker uses (getrusage of the checker's thread, which runs the driver on a
//    current-thread runtime; the backends run on another thread), and
// 2. the time from a backend's death to its `Down` event, for two kinds of death:
//    "refuse" (the listener closes: connects are refused at once) and "hang" (the backend
//    stops accepting and its accept queue is full: connects get no answer and time out).
//    Expected: at most fall × interval (refuse) and fall × (interval + timeout) (hang: each
//    timed-out probe is followed by a full interval, as in HAProxy and keepalived).
//
// Options: `--backends N` (default 1000), `--window S` CPU window in seconds (default 20).
// Only loopback traffic; every loop is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{BackendId, Health};
use lb_health::probe::TcpProbe;
use lb_health::{HealthCheckConfig, HealthDriver};
use nix::sys::resource::{getrusage, UsageWho};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const DEATHS_PER_KIND: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    Refuse,
    Hang,
}

fn cpu(who: UsageWho) -> Duration {
    let u = getrusage(who).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The backends: one listener and accept loop each, on their own thread and runtime. Returns
/// their addresses; `kill` commands end one backend the given way and report when.
fn spawn_backends(
    n: u32,
    mut kill: mpsc::UnboundedReceiver<(u32, Death)>,
    deaths: Arc<Mutex<HashMap<u32, Instant>>>,
) -> Vec<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut stops = Vec::new();
            let mut addrs = Vec::new();
            for _ in 0..n {
                let sock = TcpSocket::new_v4().expect("socket");
                sock.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
                let listener = sock.listen(4).expect("listen");
                addrs.push(listener.local_addr().unwrap());
                let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<Death>();
                stops.push(stop_tx);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            r = listener.accept() => { drop(r); }
                            d = stop_rx.recv() => {
                                if d == Some(Death::Hang) {
                                    // Stop accepting; fill the accept queue so new SYNs go
                                    // unanswered. Keep the listener and fillers open.
                                    let addr = listener.local_addr().unwrap();
                                    let mut fillers = Vec::new();
                                    for _ in 0..16 {
                                        match tokio::time::timeout(
                                            Duration::from_millis(50),
                                            TcpStream::connect(addr),
                                        ).await {
                                            Ok(Ok(s)) => fillers.push(s),
                                            _ => break, // no answer: the queue is full
                                        }
                                    }
                                    let _ = stop_rx.recv().await; // until the runtime ends
                                    drop((listener, fillers));
                                }
                                return; // Refuse: the listener closes here
                            }
                        }
                    }
                });
            }
            tx.send(addrs).unwrap();
            while let Some((i, how)) = kill.recv().await {
                let _ = stops[i as usize].send(how);
                // The hang filler takes a little while; time the death when it is complete.
                if how == Death::Hang {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                deaths.lock().unwrap().insert(i, Instant::now());
            }
        });
    });
    rx.recv().expect("backends started")
}

fn stats(label: &str, v: &mut [Duration]) {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
    println!(
        "  {label:6} n={:2}  min {:>6.0} ms  mean {:>6.0} ms  max {:>6.0} ms",
        v.len(),
        v[0].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
}

fn main() {
    let n = arg("--backends", 1000) as u32;
    let window = Duration::from_secs(arg("--window", 20));
    let deaths = Arc::new(Mutex::new(HashMap::new()));
    let (kill_tx, kill_rx) = mpsc::unbounded_channel();
    let addrs = spawn_backends(n, kill_rx, Arc::clone(&deaths));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let config = HealthCheckConfig::haproxy()
            .inter(INTERVAL)
            .rise(2)
            .fall(FALL)
            .timeout(TIMEOUT)
            .warmup(INTERVAL) // spread the first checks over one interval
            .build()
            .expect("config");
        let mut driver = HealthDriver::new(4 * n as usize);
        let mut events = driver.subscribe();
        for (i, addr) in addrs.iter().enumerate() {
            driver
                .add(
                    BackendId(i as u32),
                    *addr,
                    Box::new(TcpProbe::new()),
                    config.clone(),
                )
                .expect("add");
        }
        println!(
            "{n} TCP backends on 127.0.0.1, interval {INTERVAL:?}, fall {FALL}, timeout {TIMEOUT:?}"
        );

        // Warm up, then measure CPU over the window with every backend up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (t0, thread0, proc0) = (
            Instant::now(),
            cpu(UsageWho::RUSAGE_THREAD),
            cpu(UsageWho::RUSAGE_SELF),
        );
        let mut spurious = 0;
        let end = t0 + window;
        loop {
            tokio::select! {
                e = events.recv() => { let _ = e; spurious += 1; }
                () = tokio::time::sleep_until(end) => break,
            }
        }
        let wall = t0.elapsed();
        let thread = cpu(UsageWho::RUSAGE_THREAD) - thread0;
        let process = cpu(UsageWho::RUSAGE_SELF) - proc0;
        let checks = f64::from(n) * wall.as_secs_f64() / INTERVAL.as_secs_f64();
        println!("CPU over {:.1} s ({checks:.0} checks, {spurious} events while all up):", wall.as_secs_f64());
        println!(
            "  checker thread: {:.3} s = {:.1}% of one core, {:.1} µs per check",
            thread.as_secs_f64(),
            100.0 * thread.as_secs_f64() / wall.as_secs_f64(),
            thread.as_secs_f64() * 1e6 / checks
        );
        println!(
            "  whole process (checker + 1000 backends' accept loops + kernel loopback): {:.3} s = {:.1}% of one core",
            process.as_secs_f64(),
            100.0 * process.as_secs_f64() / wall.as_secs_f64()
        );

        // Timestamp Down events as they are published, while the kills go on.
        let (down_tx, mut down_rx) = mpsc::unbounded_channel();
        let collector = tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                if e.new == Health::Down {
                    let _ = down_tx.send((e, Instant::now()));
                }
            }
        });
        // Kill backends at staggered moments (so deaths fall at every phase of the
        // interval), alternating the two kinds.
        let mut kinds = HashMap::new();
        for k in 0..2 * DEATHS_PER_KIND {
            let id = 7 + k * (n / (2 * DEATHS_PER_KIND + 1)).max(1);
            let how = if k % 2 == 0 { Death::Refuse } else { Death::Hang };
            kinds.insert(id, how);
            kill_tx.send((id, how)).unwrap();
            tokio::time::sleep(Duration::from_millis(370)).await;
        }
        let mut refuse = Vec::new();
        let mut hang = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while refuse.len() + hang.len() < kinds.len() {
            let Ok(Some((e, at))) = tokio::time::timeout_at(deadline, down_rx.recv()).await else {
                break;
            };
            let Some(&how) = kinds.get(&e.backend.0) else {
                println!("  unexpected: {e:?}");
                continue;
            };
            let died = deaths.lock().unwrap()[&e.backend.0];
            let d = at.saturating_duration_since(died);
            match how {
                Death::Refuse => refuse.push(d),
                Death::Hang => hang.push(d),
            }
        }
        collector.abort();
        println!("death → Down event (interval {INTERVAL:?}, fall {FALL}, timeout {TIMEOUT:?}):");
        stats("refuse", &mut refuse);
        println!("         bound fall × interval = {:?}", INTERVAL * FALL);
        stats("hang", &mut hang);
        println!("         bound fall × (interval + timeout) = {:?}", (INTERVAL + TIMEOUT) * FALL);
        driver.shutdown().await;
    });
}
