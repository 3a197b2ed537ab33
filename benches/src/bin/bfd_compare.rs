// cargo run -p lb-benches --release --bin bfd_compare -- [--rounds N]
//
// BFD failure detection, ours (lb-health's `BfdSpeaker`) against keepalived 2.2's BFD
// daemon, each watching the other over one session with the same settings: min_rx and
// min_tx 50 ms, multiplier 3 (a detection time of 150 ms), idle_tx 1 s. The two run in two
// network namespaces of a lab bridge (198.18.0.1 ours, 198.18.0.2 keepalived's). Each
// round, with both sides Up:
//
// * ours dies: our speaker stops without a word (no AdminDown, as a crashed process), and
//   the time until keepalived logs its session Down is keepalived's detection time;
// * keepalived dies: its whole process group is killed (kill -9), and the time until our
//   session reports Down is ours.
//
// keepalived's log lines are read from its stderr as they are written and timestamped on
// arrival; ours are timestamped as our status channel changes. Each death comes at a
// different phase of the transmit cycle.
//
// Output: one `RESULT\tfigure\tside\tvalue\tunit` line per measurement (the suite aggregates
// them), then a summary. Needs root (namespaces) and keepalived; traffic only inside the
// lab's namespaces (198.18.0.0/24); every process started here is killed by its process
// group on exit, every wait is bounded.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock and sleeps

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lb_benches::arg;
use lb_health::bfd::{BfdConfig, BfdHandle, BfdSpeaker, SessionState, SessionStatus};
use lb_testkit::Lab;
use tokio::sync::watch;

const FIGURE: &str = "bfd: peer death to Down (50 ms x 3)";

/// keepalived's BFD daemon in the lab, its log lines timestamped as they arrive; its
/// process group is killed when dropped.
struct Keepalived {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Keepalived {
    fn start(lab: &Lab, conf: &std::path::Path, n: u32) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = lab.keepalived("ka", conf, &format!("ka{n}"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .expect("start keepalived (apt-get install keepalived)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Self { child, lines }
    }

    /// Waits (at most `within`) for a log line containing `what`; when it arrived.
    fn wait_line(&self, what: &str, within: Duration) -> Option<Instant> {
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(what) => return Some(at),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// kill -9 of its whole process group (a crash: killing only the parent makes its BFD
    /// child stop cleanly); reaps the parent.
    fn crash(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Our speaker, run on a thread inside the lab's `lb` namespace.
struct Ours {
    handle: BfdHandle,
    status: watch::Receiver<SessionStatus>,
    thread: std::thread::JoinHandle<()>,
}

impl Ours {
    fn start(lab: &Lab, peer: IpAddr, me: IpAddr) -> Self {
        let ns = std::path::Path::new("/var/run/netns").join(lab.ns("lb"));
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&ns).expect("namespace");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut c = BfdConfig::new(peer);
                c.source_ip = Some(me);
                c.min_rx = Duration::from_millis(50);
                c.min_tx = Duration::from_millis(50);
                c.multiplier = 3;
                let speaker = BfdSpeaker::new(vec![("ka".to_owned(), c)]).expect("speaker");
                let status = speaker.subscribe("ka").expect("session");
                tx.send((speaker.handle(), status)).expect("send");
                let _ = speaker.run().await;
            });
        });
        let (handle, status) = rx.recv_timeout(Duration::from_secs(10)).expect("speaker");
        Self {
            handle,
            status,
            thread,
        }
    }

    /// Waits (at most `within`) until our session is in `state`; when it was seen.
    fn wait_state(&mut self, state: SessionState, within: Duration) -> Option<Instant> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.status.borrow_and_update().state == state {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }

    /// Stops without a word (no AdminDown), as a crash would.
    fn die(self) {
        self.handle.stop();
        let _ = self.thread.join();
    }
}

fn main() {
    let rounds = arg("--rounds", 5).max(1);
    let lab = Lab::new("lbbfd", &[("lb", 1), ("ka", 2)]).expect("lab (needs root)");
    let (me, peer) = (IpAddr::from(lab.addr("lb")), IpAddr::from(lab.addr("ka")));
    let conf = lab.dir().join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    router_id bench\n}}\nbfd_instance lb {{\n    neighbor_ip {me}\n    source_ip {peer}\n    min_rx 50\n    min_tx 50\n    idle_tx 1000\n    multiplier 3\n}}\n"
        ),
    )
    .expect("keepalived.conf");
    let (mut ours_ms, mut theirs_ms) = (Vec::new(), Vec::new());
    let up_within = Duration::from_secs(15);
    for round in 0..rounds {
        let mut ka = Keepalived::start(&lab, &conf, round as u32);
        let mut us = Ours::start(&lab, peer, me);
        assert!(
            ka.wait_line("(lb) Entering Up state", up_within).is_some()
                && us.wait_state(SessionState::Up, up_within).is_some(),
            "round {round}: the session did not come Up"
        );
        // A phase of the 50 ms transmit cycle that differs each round.
        let phase = |k: u64| Duration::from_millis(300 + (k * 17) % 50);
        std::thread::sleep(phase(2 * round));
        // Ours dies: keepalived's detection.
        let t0 = Instant::now();
        us.die();
        let t_ka = ka
            .wait_line("(lb) Entering Down state", Duration::from_secs(10))
            .expect("keepalived notices our death within 10 s");
        let theirs = t_ka.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        // Ours again, then keepalived dies: our detection.
        let mut us = Ours::start(&lab, peer, me);
        assert!(
            ka.wait_line("(lb) Entering Up state", up_within).is_some()
                && us.wait_state(SessionState::Up, up_within).is_some(),
            "round {round}: the session did not come Up again"
        );
        std::thread::sleep(phase(2 * round + 1));
        let t0 = Instant::now();
        ka.crash();
        let t_us = us
            .wait_state(SessionState::Down, Duration::from_secs(10))
            .expect("we notice keepalived's death within 10 s");
        let ours = t_us.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        us.die();
        println!("RESULT\t{FIGURE}\tours\t{ours:.1}\tms");
        println!("RESULT\t{FIGURE}\tkeepalived\t{theirs:.1}\tms");
        ours_ms.push(ours);
        theirs_ms.push(theirs);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mo, mk) = (med(&mut ours_ms), med(&mut theirs_ms));
    println!(
        "\npeer death → session Down (detection time 150 ms), median of {rounds}: ours {mo:.1} ms, keepalived {mk:.1} ms (ours/keepalived {:.2}x)",
        mo / mk
    );
}
