//! `BfdSpeaker` against real peers in network namespaces: Debian's keepalived (its BFD
//! process) and another `BfdSpeaker`. Each test builds its own [`Lab`] (a bridge and hosts
//! at 198.18.0.x, removed by a guard even when the test fails); keepalived runs inside a
//! host namespace as the leader of its own process group and is killed with it. Our speaker
//! runs on a thread that entered the other host's namespace, with its own tokio runtime.
//! Every wait is bounded (at most 10 s, polling every 20 ms).
//!
//! They need root (`ip netns`). Without root they skip loudly, except under `CI=true`,
//! where a missing capability or keepalived fails them.

// Real processes and sockets: the wall clock bounds every wait.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use lb_health::bfd::{BfdConfig, BfdHandle, BfdSpeaker, Diagnostic, SessionState, SessionStatus};
use lb_testkit::{lab_available, tool_available, wait_until, Lab, Proc};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// A `BfdSpeaker` running on its own thread inside a namespace.
struct Speaker {
    handle: BfdHandle,
    status: Vec<(String, watch::Receiver<SessionStatus>)>,
    /// Each instance's send socket address.
    sources: Vec<SocketAddr>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Speaker {
    fn start(ns: &str, instances: Vec<(String, BfdConfig)>) -> Self {
        let path = Path::new("/var/run/netns").join(ns);
        let names: Vec<String> = instances.iter().map(|(n, _)| n.clone()).collect();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let run = || -> Result<_, String> {
                let file = File::open(&path).map_err(|e| e.to_string())?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string())?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let speaker = rt
                    .block_on(async { BfdSpeaker::new(instances) })
                    .map_err(|e| e.to_string())?;
                Ok((rt, speaker))
            };
            match run() {
                Ok((rt, speaker)) => {
                    let status: Vec<_> = names
                        .iter()
                        .map(|n| (n.clone(), speaker.subscribe(n).expect("subscribed")))
                        .collect();
                    let sources: Vec<_> = names
                        .iter()
                        .map(|n| speaker.source_addr(n).expect("bound"))
                        .collect();
                    let _ = tx.send(Ok((speaker.handle(), status, sources)));
                    rt.block_on(speaker.run()).map_err(|e| e.to_string())
                }
                Err(e) => {
                    let _ = tx.send(Err(e.clone()));
                    Err(e)
                }
            }
        });
        let (handle, status, sources) = rx
            .recv_timeout(WAIT)
            .expect("speaker thread answers")
            .unwrap_or_else(|e| panic!("speaker in {ns}: {e}"));
        Self {
            handle,
            status,
            sources,
            thread: Some(thread),
        }
    }

    fn status(&self, name: &str) -> SessionStatus {
        *self
            .status
            .iter()
            .find(|(n, _)| n == name)
            .expect("known instance")
            .1
            .borrow()
    }

    /// Waits (bounded) until instance `name` satisfies `f`; panics with its status if not.
    fn wait_for(&self, name: &str, what: &str, f: impl Fn(&SessionStatus) -> bool) {
        let ok = wait_until(WAIT, POLL, || f(&self.status(name)));
        assert!(
            ok.is_some(),
            "{name}: not {what} within {WAIT:?}: {:?}",
            self.status(name)
        );
    }

    /// Subscribes to an instance added by `reconfigure` (through the handle).
    fn subscribe(&mut self, name: &str) {
        let rx = self
            .handle
            .subscribe(name)
            .expect("instance known to the handle");
        self.status.retain(|(n, _)| n != name);
        self.status.push((name.to_owned(), rx));
    }

    /// `handle.reconfigure(instances)`, waited for from this (non-async) thread; the
    /// future only needs channels, not the speaker's runtime.
    fn reconfigure(&self, instances: Vec<(String, BfdConfig)>) -> Result<(), lb_health::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(WAIT, self.handle.reconfigure(instances))
                .await
                .expect("reconfigure answers within the bound")
        })
    }

    /// Waits (bounded) for `run` to return.
    fn join(&mut self) -> Result<(), String> {
        let t = self.thread.take().expect("joined once");
        assert!(
            wait_until(WAIT, POLL, || t.is_finished()).is_some(),
            "speaker did not return"
        );
        t.join().expect("speaker thread panicked")
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            if wait_until(WAIT, POLL, || t.is_finished()).is_some() {
                let _ = t.join();
            }
        }
    }
}

/// keepalived with one `bfd_instance NAME` towards `neighbor`, from `source`.
struct Keepalived {
    conf: PathBuf,
    runs: u32,
}

impl Keepalived {
    fn new(lab: &Lab, name: &str, neighbor: IpAddr, source: IpAddr) -> Self {
        Self::with(lab, name, neighbor, source, "")
    }

    /// Like [`new`](Self::new), with `extra` lines in the `bfd_instance` block.
    fn with(lab: &Lab, name: &str, neighbor: IpAddr, source: IpAddr, extra: &str) -> Self {
        Self::instances(lab, &[(name, neighbor, source)], extra)
    }

    /// Several `bfd_instance NAME` blocks towards `neighbor` from `source`, each with
    /// `extra` lines.
    fn instances(lab: &Lab, instances: &[(&str, IpAddr, IpAddr)], extra: &str) -> Self {
        let conf = lab.dir().join("keepalived.conf");
        let mut text = "global_defs {\n    router_id lbtest\n}\n".to_owned();
        for (name, neighbor, source) in instances {
            text += &format!(
                "bfd_instance {name} {{\n    neighbor_ip {neighbor}\n    source_ip {source}\n\
                 \x20   min_rx 10\n    min_tx 10\n    idle_tx 1000\n    multiplier 5\n{extra}}}\n"
            );
        }
        std::fs::write(&conf, text).expect("write keepalived.conf");
        Self { conf, runs: 0 }
    }

    /// Starts keepalived in `host` (its own process group, pid files in the lab dir).
    fn spawn(&mut self, lab: &Lab, host: &str) -> Proc {
        self.runs += 1;
        let cmd = lab.keepalived(host, &self.conf, "ka");
        Proc::spawn(cmd, lab.dir(), &format!("keepalived{}", self.runs)).expect("spawn keepalived")
    }
}

/// Waits (bounded) until keepalived's log (`-l` writes it to stderr) has `needle` at least
/// `n` times.
fn wait_log(ka: &Proc, needle: &str, n: usize) {
    let ok = wait_until(WAIT, POLL, || {
        ka.stderr().matches(needle).count() + ka.stdout().matches(needle).count() >= n
    });
    assert!(
        ok.is_some(),
        "keepalived did not log {needle:?} {n} time(s):\n{}",
        ka.log_tail(40)
    );
}

fn lab_ready() -> bool {
    lab_available() && tool_available("keepalived")
}

#[test]
fn keepalived_peer_up_crash_restart_stop_and_our_shutdown() {
    if !lab_ready() {
        return;
    }
    let lab = Lab::new("bfdka", &[("lb", 1), ("ka", 2)]).expect("lab");
    let (lb_ip, ka_ip) = (IpAddr::V4(lab.addr("lb")), IpAddr::V4(lab.addr("ka")));
    let mut kconf = Keepalived::new(&lab, "to_lb", lb_ip, ka_ip);
    let mut ka = kconf.spawn(&lab, "ka");

    let mut cfg = BfdConfig::new(ka_ip);
    cfg.source_ip = Some(lb_ip);
    let mut speaker = Speaker::start(lab.ns("lb"), vec![("to_ka".into(), cfg)]);

    // 1. Up on both sides.
    speaker.wait_for("to_ka", "Up", |s| s.state == SessionState::Up);
    wait_log(&ka, "(to_lb) Entering Up state", 1);
    let s = speaker.status("to_ka");
    assert_eq!(s.remote_state, SessionState::Up);
    assert_ne!(s.remote_discriminator, 0);
    // keepalived went to min_tx (10 ms) with a Poll Sequence: our detection time is 5 x 10 ms.
    speaker.wait_for("to_ka", "on the fast detection time", |s| {
        s.detection_time == Some(Duration::from_millis(50))
    });
    assert_eq!(s.counters.dropped(), 0, "{s:?}");

    // 2. keepalived crashes (kill -9 of its whole process group): our detection time runs out.
    ka.kill9();
    speaker.wait_for("to_ka", "Down after detection expiry", |s| {
        s.state == SessionState::Down
            && s.local_diag == Diagnostic::ControlDetectionTimeExpired
            && s.remote_discriminator == 0
    });

    // 3. keepalived restarts: Up again.
    let mut ka = kconf.spawn(&lab, "ka");
    speaker.wait_for("to_ka", "Up again", |s| s.state == SessionState::Up);
    wait_log(&ka, "(to_lb) Entering Up state", 1);

    // 4. keepalived stops cleanly (SIGTERM).
    assert!(ka.sigterm());
    assert!(ka.wait_exit(WAIT).is_some(), "keepalived did not exit");
    speaker.wait_for("to_ka", "Down after keepalived stopped", |s| {
        s.state == SessionState::Down
    });
    let diag = speaker.status("to_ka").local_diag;
    eprintln!("keepalived SIGTERM: our session went Down with diag {diag}");
    assert_eq!(
        diag,
        Diagnostic::ControlDetectionTimeExpired,
        "keepalived 2.2.7 sends no AdminDown on stop"
    );

    // 5. Up once more, then our shutdown: keepalived hears AdminDown.
    let ka = kconf.spawn(&lab, "ka");
    speaker.wait_for("to_ka", "Up a third time", |s| s.state == SessionState::Up);
    wait_log(&ka, "(to_lb) Entering Up state", 1);
    speaker.handle.shutdown();
    assert_eq!(speaker.join(), Ok(()));
    assert_eq!(speaker.status("to_ka").state, SessionState::AdminDown);
    assert_eq!(
        speaker.status("to_ka").local_diag,
        Diagnostic::AdministrativelyDown
    );
    wait_log(
        &ka,
        "(to_lb) Entering Down state (Local diagnostic - Neighbor Signaled Session Down",
        1,
    );
}

/// Adds `addr/64` to host `host`'s eth0 without duplicate address detection (usable at
/// once). Only fd00:18::/64 addresses inside the lab's namespaces.
fn add_v6(lab: &Lab, host: &str, addr: &str) -> IpAddr {
    let out = lab
        .exec(
            host,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )
        .expect("ip -6 addr add");
    assert!(out.status.success(), "{out:?}");
    addr.parse().expect("IPv6 address")
}

#[test]
fn keepalived_peer_over_ipv6() {
    if !lab_ready() {
        return;
    }
    let lab = Lab::new("bfdka6", &[("lb", 1), ("ka", 2)]).expect("lab");
    let lb_ip = add_v6(&lab, "lb", "fd00:18::1");
    let ka_ip = add_v6(&lab, "ka", "fd00:18::2");
    let mut kconf = Keepalived::new(&lab, "to_lb6", lb_ip, ka_ip);
    let ka = kconf.spawn(&lab, "ka");
    let mut cfg = BfdConfig::new(ka_ip);
    cfg.source_ip = Some(lb_ip);
    let mut speaker = Speaker::start(lab.ns("lb"), vec![("to_ka6".into(), cfg)]);
    // keepalived checks our hop limit (64 by default on both sides, max_hops 0).
    speaker.wait_for("to_ka6", "Up", |s| s.state == SessionState::Up);
    wait_log(&ka, "(to_lb6) Entering Up state", 1);
    speaker.wait_for("to_ka6", "on the fast detection time", |s| {
        s.detection_time == Some(Duration::from_millis(50))
    });
    speaker.handle.shutdown();
    assert_eq!(speaker.join(), Ok(()));
    wait_log(
        &ka,
        "(to_lb6) Entering Down state (Local diagnostic - Neighbor Signaled Session Down",
        1,
    );
}

#[test]
fn lb_to_lb_active_and_passive() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("bfdlb", &[("a", 1), ("b", 2)]).expect("lab");
    let (a_ip, b_ip) = (IpAddr::V4(lab.addr("a")), IpAddr::V4(lab.addr("b")));
    // Detection times of 100 ms (B's of A) and 150 ms (A's of B) rather than 50 and 30:
    // the session must stay Up for seconds on a loaded CI machine that can delay a sender
    // by 50 ms (it did so to a keepalived peer at 5 x 10 ms).
    let mut to_b = BfdConfig::new(b_ip);
    to_b.source_ip = Some(a_ip);
    to_b.multiplier = 10;
    let mut to_a = BfdConfig::new(a_ip);
    to_a.source_ip = Some(b_ip);
    to_a.passive = true;
    to_a.multiplier = 15;
    // The passive side starts first and stays silent; then the active one starts.
    let b = Speaker::start(lab.ns("b"), vec![("to_a".into(), to_a)]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        b.status("to_a").counters.tx,
        0,
        "passive sent before hearing its peer"
    );
    let started = std::time::Instant::now();
    let mut a = Speaker::start(lab.ns("a"), vec![("to_b".into(), to_b.clone())]);
    // Its first packet leaves at once: it was dropped (tokio's try_send_to before the
    // reactor polled the new socket), and the first to arrive was the next, ~1 s later.
    let mut heard = None;
    for _ in 0..100 {
        if b.status("to_a").counters.rx >= 1 {
            heard = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        heard.is_some_and(|t| t < Duration::from_millis(400)),
        "the passive side first heard the active one after {heard:?}"
    );
    // RFC 5881 §4: sent from the source address, from a port in 49152-65535.
    for src in a.sources.iter().chain(&b.sources) {
        assert!((49152..=65535).contains(&src.port()), "{src}");
    }
    assert_eq!(a.sources[0].ip(), a_ip);
    a.wait_for("to_b", "Up", |s| s.state == SessionState::Up);
    b.wait_for("to_a", "Up", |s| s.state == SessionState::Up);
    // Both on the fast timers after the Poll Sequences: A's detection time is B's
    // multiplier (15) x 10 ms, B's is A's (10) x 10 ms.
    a.wait_for("to_b", "fast", |s| {
        s.detection_time == Some(Duration::from_millis(150))
            && s.tx_interval == Duration::from_millis(10)
    });
    b.wait_for("to_a", "fast", |s| {
        s.detection_time == Some(Duration::from_millis(100))
    });
    // Stays up for a while (about 50 packets each way).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.status("to_b").state, SessionState::Up);
    assert_eq!(b.status("to_a").state, SessionState::Up);
    let rx = b.status("to_a").counters.rx;
    assert!(rx >= 20, "B received only {rx} packets in 0.5 s at 10 ms");
    // A changes the session's ttl to 254: that session alone is replaced. B hears
    // AdminDown from the old one and goes Down, then drops the new one's packets (B wants
    // TTL 255).
    let old = a.status("to_b");
    a.reconfigure(vec![(
        "to_b".into(),
        BfdConfig {
            ttl: 254,
            ..to_b.clone()
        },
    )])
    .expect("replace");
    b.wait_for("to_a", "Down (neighbor signaled)", |s| {
        s.state == SessionState::Down
            && s.local_diag == Diagnostic::NeighborSignaledSessionDown
            && s.remote_state == SessionState::AdminDown
    });
    b.wait_for("to_a", "dropping the new session's packets", |s| {
        s.counters.dropped_ttl >= 1
    });
    // Back to ttl 255: replaced again, and Up with a new discriminator. A's status channel
    // stayed open and follows the new session.
    a.reconfigure(vec![("to_b".into(), to_b.clone())])
        .expect("replace back");
    a.wait_for("to_b", "Up with a new session", |s| {
        s.state == SessionState::Up && s.local_discriminator != old.local_discriminator
    });
    b.wait_for("to_a", "Up again", |s| {
        s.state == SessionState::Up
            && s.remote_discriminator == a.status("to_b").local_discriminator
    });
    a.wait_for("to_b", "fast again", |s| {
        s.tx_interval == Duration::from_millis(10)
    });
    // The replaced sessions finish their AdminDown (at most 2 s) meanwhile, so that
    // `run` below waits for the new one only.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.status("to_a").state, SessionState::Up);

    // A shuts down: B sees Neighbor Signaled Session Down, not a timeout.
    let rx_before = b.status("to_a").counters.rx;
    let t = std::time::Instant::now();
    a.handle.shutdown();
    assert_eq!(a.join(), Ok(()));
    let took = t.elapsed();
    b.wait_for("to_a", "Down (neighbor signaled)", |s| {
        s.state == SessionState::Down
            && s.local_diag == Diagnostic::NeighborSignaledSessionDown
            && s.remote_state == SessionState::AdminDown
    });
    // AdminDown goes on at A's 10 ms interval (less 0-25 % jitter) for B's detection time
    // of A (10 x 10 ms), not in a back-to-back burst: 10-14 copies (one lost on the veth
    // is tolerated; the old burst was 3), and `run` returns after about 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let admin_downs = b.status("to_a").counters.rx - rx_before;
    eprintln!("A's shutdown: B received {admin_downs} packets; run returned after {took:?}");
    assert!(
        (8..=16).contains(&admin_downs),
        "{admin_downs} packets after shutdown"
    );
    assert!(
        took >= Duration::from_millis(75) && took < Duration::from_millis(600),
        "{took:?}"
    );
    // Once `run` has returned, the handle refuses to reconfigure.
    assert_eq!(
        a.reconfigure(Vec::new()),
        Err(lb_health::Error::BfdSpeakerNotRunning)
    );
}

/// Counts `needle` in keepalived's log.
fn log_count(ka: &Proc, needle: &str) -> usize {
    ka.stderr().matches(needle).count() + ka.stdout().matches(needle).count()
}

/// Reconfiguration against keepalived (two `bfd_instance`s, `to_lb` and `to_lb2`, towards
/// our two addresses): the same config, new timers, an added instance and a removed one
/// each leave the other sessions alone.
#[test]
fn keepalived_peer_through_reconfigure() {
    if !lab_ready() {
        return;
    }
    let lab = Lab::new("bfdrc", &[("lb", 1), ("ka", 2)]).expect("lab");
    let (lb_ip, ka_ip) = (IpAddr::V4(lab.addr("lb")), IpAddr::V4(lab.addr("ka")));
    let lb_ip2: IpAddr = "198.18.0.11".parse().unwrap();
    let out = lab
        .exec(
            "lb",
            &["ip", "addr", "add", "198.18.0.11/24", "dev", "eth0"],
        )
        .expect("ip addr add");
    assert!(out.status.success(), "{out:?}");
    let mut kconf = Keepalived::instances(
        &lab,
        &[("to_lb", lb_ip, ka_ip), ("to_lb2", lb_ip2, ka_ip)],
        "",
    );
    let ka = kconf.spawn(&lab, "ka");
    // keepalived detects us after our multiplier × 10 ms: 20 (200 ms) rather than the
    // default 5, so that this test's steps, which must leave keepalived's session Up, do
    // not fail on a loaded machine that delays our sends (CI saw a 70 ms gap against 50).
    let to_ka = BfdConfig {
        source_ip: Some(lb_ip),
        multiplier: 20,
        ..BfdConfig::new(ka_ip)
    };
    let mut speaker = Speaker::start(lab.ns("lb"), vec![("to_ka".into(), to_ka.clone())]);
    speaker.wait_for("to_ka", "Up", |s| s.state == SessionState::Up);
    wait_log(&ka, "(to_lb) Entering Up state", 1);
    speaker.wait_for("to_ka", "on the fast detection time", |s| {
        s.detection_time == Some(Duration::from_millis(50))
    });
    let up = speaker.status("to_ka");
    let quiet = |ka: &Proc, what: &str| {
        assert_eq!(
            log_count(ka, "(to_lb) Entering Up state"),
            1,
            "{what}:\n{}",
            ka.log_tail(40)
        );
        assert_eq!(
            log_count(ka, "(to_lb) Entering Down state"),
            0,
            "{what}:\n{}",
            ka.log_tail(40)
        );
    };
    let unchanged = |speaker: &Speaker, what: &str| {
        let s = speaker.status("to_ka");
        assert_eq!(
            (
                s.state,
                s.since,
                s.local_discriminator,
                s.remote_discriminator
            ),
            (
                SessionState::Up,
                up.since,
                up.local_discriminator,
                up.remote_discriminator
            ),
            "{what}: {s:?}"
        );
    };

    // (a) The same configuration: nothing happens on either side.
    speaker
        .reconfigure(vec![("to_ka".into(), to_ka.clone())])
        .expect("same config");
    std::thread::sleep(Duration::from_millis(500));
    quiet(&ka, "same config");
    unchanged(&speaker, "same config");
    assert_eq!(
        speaker.status("to_ka").tx_interval,
        Duration::from_millis(10)
    );

    // (b) Slower timers (50 ms each way): a Poll Sequence, no Down anywhere, and
    // keepalived follows our new Required Min RX.
    let slow = BfdConfig {
        min_tx: Duration::from_millis(50),
        min_rx: Duration::from_millis(50),
        ..to_ka.clone()
    };
    speaker
        .reconfigure(vec![("to_ka".into(), slow.clone())])
        .expect("new timers");
    speaker.wait_for("to_ka", "on the slow timers", |s| {
        s.tx_interval == Duration::from_millis(50)
            && s.detection_time == Some(Duration::from_millis(250))
    });
    let rx0 = speaker.status("to_ka").counters.rx;
    std::thread::sleep(Duration::from_secs(1));
    let rx = speaker.status("to_ka").counters.rx - rx0;
    // keepalived at 50 ms less 10-25 % jitter: 22-27 a second (110 at 10 ms).
    eprintln!("keepalived sent {rx} packets in 1 s after our min_rx went to 50 ms");
    assert!(
        (15..=32).contains(&rx),
        "{rx} packets from keepalived in 1 s"
    );
    quiet(&ka, "new timers");
    unchanged(&speaker, "new timers");

    // (c) A second instance (from our second address): Up, the first untouched. The
    // receive socket, bound to 198.18.0.1 so far, is rebound to the wildcard address.
    // Multiplier 20 as for `to_ka` (CI saw keepalived expire a 5 x 10 ms detection time
    // on this one the instant it came Up).
    let to_ka2 = BfdConfig {
        source_ip: Some(lb_ip2),
        multiplier: 20,
        ..BfdConfig::new(ka_ip)
    };
    speaker
        .reconfigure(vec![
            ("to_ka".into(), slow.clone()),
            ("to_ka2".into(), to_ka2.clone()),
        ])
        .expect("instance added");
    speaker.subscribe("to_ka2");
    speaker.wait_for("to_ka2", "Up", |s| s.state == SessionState::Up);
    wait_log(&ka, "(to_lb2) Entering Up state", 1);
    std::thread::sleep(Duration::from_millis(300));
    quiet(&ka, "instance added");
    unchanged(&speaker, "instance added");

    // A refused configuration changes nothing.
    let err = speaker
        .reconfigure(vec![(
            "to_ka".into(),
            BfdConfig {
                source_ip: Some("fe80::1".parse().unwrap()),
                ..BfdConfig::new("fe80::2".parse().unwrap())
            },
        )])
        .unwrap_err();
    assert!(err.to_string().contains("bfd_instance to_ka"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    unchanged(&speaker, "refused config");
    assert_eq!(speaker.status("to_ka2").state, SessionState::Up);

    // (d) The first instance removed: keepalived hears AdminDown on that one only; our
    // status channel for it closes.
    let mut rx_ka = speaker.handle.subscribe("to_ka").expect("still there");
    let up2 = speaker.status("to_ka2");
    speaker
        .reconfigure(vec![("to_ka2".into(), to_ka2)])
        .expect("instance removed");
    wait_log(
        &ka,
        "(to_lb) Entering Down state (Local diagnostic - Neighbor Signaled Session Down",
        1,
    );
    assert!(
        wait_until(WAIT, POLL, || rx_ka.has_changed().is_err()).is_some(),
        "to_ka's status channel did not close"
    );
    assert_eq!(rx_ka.borrow_and_update().state, SessionState::AdminDown);
    assert!(speaker.handle.subscribe("to_ka").is_none());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        log_count(&ka, "(to_lb2) Entering Down state"),
        0,
        "{}",
        ka.log_tail(40)
    );
    let s2 = speaker.status("to_ka2");
    assert_eq!(
        (s2.state, s2.since),
        (SessionState::Up, up2.since),
        "{s2:?}"
    );

    speaker.handle.shutdown();
    assert_eq!(speaker.join(), Ok(()));
    wait_log(
        &ka,
        "(to_lb2) Entering Down state (Local diagnostic - Neighbor Signaled Session Down",
        1,
    );
}

#[test]
fn two_sessions_to_one_neighbor_are_told_apart_by_destination() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("bfddst", &[("a", 1), ("b", 2)]).expect("lab");
    let a1 = IpAddr::V4(lab.addr("a"));
    let a2: IpAddr = "198.18.0.11".parse().unwrap();
    let out = lab
        .exec("a", &["ip", "addr", "add", "198.18.0.11/24", "dev", "eth0"])
        .expect("ip addr add");
    assert!(out.status.success(), "{out:?}");
    let b = IpAddr::V4(lab.addr("b"));
    // On A, two sessions to B from two sources: A's receive socket is the wildcard, and
    // B's packets with Your Discriminator 0 only differ in their destination.
    // Multiplier 20 (200 ms detection): all four must stay Up on a loaded machine.
    let a_side = |src: IpAddr| BfdConfig {
        source_ip: Some(src),
        multiplier: 20,
        ..BfdConfig::new(b)
    };
    let b_side = |dst: IpAddr| BfdConfig {
        source_ip: Some(b),
        multiplier: 20,
        ..BfdConfig::new(dst)
    };
    let sb = Speaker::start(
        lab.ns("b"),
        vec![("to_a1".into(), b_side(a1)), ("to_a2".into(), b_side(a2))],
    );
    let sa = Speaker::start(
        lab.ns("a"),
        vec![
            ("from_a1".into(), a_side(a1)),
            ("from_a2".into(), a_side(a2)),
        ],
    );
    for (s, name) in [
        (&sa, "from_a1"),
        (&sa, "from_a2"),
        (&sb, "to_a1"),
        (&sb, "to_a2"),
    ] {
        s.wait_for(name, "Up", |s| s.state == SessionState::Up);
    }
    // Each of A's sessions is paired with its own counterpart on B.
    let (f1, f2) = (sa.status("from_a1"), sa.status("from_a2"));
    let (t1, t2) = (sb.status("to_a1"), sb.status("to_a2"));
    assert_eq!(f1.remote_discriminator, t1.local_discriminator);
    assert_eq!(f2.remote_discriminator, t2.local_discriminator);
    assert_eq!(t1.remote_discriminator, f1.local_discriminator);
    assert_eq!(t2.remote_discriminator, f2.local_discriminator);
    // And they stay up (no flapping between two remote discriminators).
    std::thread::sleep(Duration::from_millis(300));
    for (s, name) in [
        (&sa, "from_a1"),
        (&sa, "from_a2"),
        (&sb, "to_a1"),
        (&sb, "to_a2"),
    ] {
        let st = s.status(name);
        assert_eq!(st.state, SessionState::Up, "{name}: {st:?}");
        assert_eq!(st.counters.dropped(), 0, "{name}: {st:?}");
    }
}

#[test]
fn keepalived_drops_our_packets_below_its_ttl() {
    if !lab_ready() {
        return;
    }
    let lab = Lab::new("bfdttl", &[("lb", 1), ("ka", 2)]).expect("lab");
    let (lb_ip, ka_ip) = (IpAddr::V4(lab.addr("lb")), IpAddr::V4(lab.addr("ka")));
    let mut kconf = Keepalived::new(&lab, "to_lb", lb_ip, ka_ip);
    let ka = kconf.spawn(&lab, "ka");
    // keepalived (ttl 255, max_hops 0) requires a received TTL of 255 (RFC 5881 §5).
    let mut cfg = BfdConfig::new(ka_ip);
    cfg.source_ip = Some(lb_ip);
    cfg.ttl = 254;
    let speaker = Speaker::start(lab.ns("lb"), vec![("to_ka".into(), cfg)]);
    wait_log(&ka, "Packet ttl(254) < 255 - discarding", 2);
    // We hear keepalived's Down packets (Init), keepalived never hears us.
    speaker.wait_for("to_ka", "Init", |s| s.state == SessionState::Init);
    let log = ka.stderr() + &ka.stdout();
    assert!(!log.contains("(to_lb) Entering Up state"), "{log}");
    assert_ne!(speaker.status("to_ka").state, SessionState::Up);
}

#[test]
fn we_drop_keepalived_packets_below_our_ttl() {
    if !lab_ready() {
        return;
    }
    let lab = Lab::new("bfdttl2", &[("lb", 1), ("ka", 2), ("x", 3)]).expect("lab");
    let (lb_ip, ka_ip) = (IpAddr::V4(lab.addr("lb")), IpAddr::V4(lab.addr("ka")));
    // keepalived sends with TTL 254; we accept 255 only (ttl 255, max_hops 0).
    let mut kconf = Keepalived::with(&lab, "to_lb", lb_ip, ka_ip, "    ttl 254\n");
    let ka = kconf.spawn(&lab, "ka");
    let mut cfg = BfdConfig::new(ka_ip);
    cfg.source_ip = Some(lb_ip);
    // Another instance without a TTL check (max_hops 255) must not weaken this one's: the
    // kernel filter checks each neighbor against its own floor.
    let unchecked = BfdConfig {
        source_ip: Some(lb_ip),
        max_hops: 255,
        ..BfdConfig::new(IpAddr::V4(lab.addr("x")))
    };
    let strict = Speaker::start(
        lab.ns("lb"),
        vec![("to_ka".into(), cfg.clone()), ("to_x".into(), unchecked)],
    );
    strict.wait_for("to_ka", "dropping low-TTL packets", |s| {
        s.counters.dropped_ttl >= 2
    });
    let s = strict.status("to_ka");
    assert_eq!((s.state, s.counters.rx), (SessionState::Down, 0), "{s:?}");
    drop(strict);
    // With max_hops 1 the same packets are accepted and the session comes up.
    cfg.max_hops = 1;
    let lenient = Speaker::start(lab.ns("lb"), vec![("to_ka".into(), cfg)]);
    lenient.wait_for("to_ka", "Up", |s| s.state == SessionState::Up);
    assert_eq!(lenient.status("to_ka").counters.dropped_ttl, 0);
    wait_log(&ka, "(to_lb) Entering Up state", 1);
}

#[test]
fn ipv6_hop_limit_below_ours_is_dropped() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("bfdhl", &[("a", 1), ("b", 2)]).expect("lab");
    let a_ip = add_v6(&lab, "a", "fd00:18::1");
    let b_ip = add_v6(&lab, "b", "fd00:18::2");
    // A sends with hop limit 63; B accepts 64 and above (hoplimit 64, max_hops 0).
    let a = Speaker::start(
        lab.ns("a"),
        vec![(
            "to_b".into(),
            BfdConfig {
                source_ip: Some(a_ip),
                hoplimit: 63,
                max_hops: 255,
                ..BfdConfig::new(b_ip)
            },
        )],
    );
    let b = Speaker::start(
        lab.ns("b"),
        vec![(
            "to_a".into(),
            BfdConfig {
                source_ip: Some(b_ip),
                ..BfdConfig::new(a_ip)
            },
        )],
    );
    b.wait_for("to_a", "dropping low hop-limit packets", |s| {
        s.counters.dropped_ttl >= 2
    });
    assert_eq!(b.status("to_a").counters.rx, 0);
    // A (no check) hears B and goes Init; B never hears A, so neither comes up.
    a.wait_for("to_b", "Init", |s| s.state == SessionState::Init);
    assert_ne!(b.status("to_a").state, SessionState::Up);
}

/// `reconfigure` between two speakers: an IPv6 instance added to an IPv4-only speaker
/// gets its receive socket bound on the way and comes Up; the IPv4 session is untouched.
#[test]
fn lb_to_lb_reconfigure_adds_a_family() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("bfdfam", &[("a", 1), ("b", 2)]).expect("lab");
    let (a_ip, b_ip) = (IpAddr::V4(lab.addr("a")), IpAddr::V4(lab.addr("b")));
    let a6 = add_v6(&lab, "a", "fd00:18::1");
    let b6 = add_v6(&lab, "b", "fd00:18::2");
    // Multiplier 20 (200 ms detection): the sessions must stay Up through both
    // reconfigurations on a loaded machine.
    let v4 = |from: IpAddr, to: IpAddr| BfdConfig {
        source_ip: Some(from),
        multiplier: 20,
        ..BfdConfig::new(to)
    };
    let mut a = Speaker::start(lab.ns("a"), vec![("v4".into(), v4(a_ip, b_ip))]);
    let mut b = Speaker::start(lab.ns("b"), vec![("v4".into(), v4(b_ip, a_ip))]);
    a.wait_for("v4", "Up", |s| s.state == SessionState::Up);
    b.wait_for("v4", "Up", |s| s.state == SessionState::Up);
    let before = (a.status("v4"), b.status("v4"));
    // Before the new instance exists, the handle knows nothing of it.
    assert!(a.handle.subscribe("v6").is_none());
    a.reconfigure(vec![
        ("v4".into(), v4(a_ip, b_ip)),
        ("v6".into(), v4(a6, b6)),
    ])
    .expect("A: IPv6 added");
    b.reconfigure(vec![
        ("v4".into(), v4(b_ip, a_ip)),
        ("v6".into(), v4(b6, a6)),
    ])
    .expect("B: IPv6 added");
    a.subscribe("v6");
    b.subscribe("v6");
    a.wait_for("v6", "Up", |s| s.state == SessionState::Up);
    b.wait_for("v6", "Up", |s| s.state == SessionState::Up);
    std::thread::sleep(Duration::from_millis(300));
    for (s, old) in [(&a, before.0), (&b, before.1)] {
        let now = s.status("v4");
        assert_eq!(
            (now.state, now.since, now.local_discriminator),
            (SessionState::Up, old.since, old.local_discriminator),
            "{now:?}"
        );
        assert_eq!(now.counters.dropped(), 0, "{now:?}");
    }
    // Duplicate names are refused as by `BfdSpeaker::new`, changing nothing.
    assert_eq!(
        a.reconfigure(vec![
            ("v4".into(), v4(a_ip, b_ip)),
            ("v4".into(), v4(a6, b6)),
        ]),
        Err(lb_health::Error::DuplicateBfdInstance("v4".into()))
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.status("v6").state, SessionState::Up);
    assert_eq!(b.status("v6").state, SessionState::Up);
    a.handle.shutdown();
    assert_eq!(a.join(), Ok(()));
    b.wait_for("v6", "Down (neighbor signaled)", |s| {
        s.local_diag == Diagnostic::NeighborSignaledSessionDown
    });
}

/// A session whose `source_ip` is not on an interface yet (an IPv6 address still tentative
/// at boot, one a network manager adds later) does not stop the speaker, the other
/// sessions or lb-node's start: it comes up once the address is there. The bind failed
/// (EADDRNOTAVAIL) and took every session, and lb-node, down with it.
#[test]
fn a_source_address_that_appears_later_does_not_stop_the_speaker() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new("bfdfb", &[("a", 1), ("b", 2)]).expect("lab");
    let b_ip = IpAddr::V4(lab.addr("b"));
    let later: IpAddr = "198.18.0.77".parse().unwrap();
    let mut to_b = BfdConfig::new(b_ip);
    to_b.source_ip = Some(later);
    let mut to_a = BfdConfig::new(later);
    to_a.source_ip = Some(b_ip);
    let a = Speaker::start(lab.ns("a"), vec![("to_b".into(), to_b)]);
    let b = Speaker::start(lab.ns("b"), vec![("to_a".into(), to_a)]);
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(a.status("to_b").state, SessionState::Up);
    let out = lab
        .exec("a", &["ip", "addr", "add", "198.18.0.77/24", "dev", "eth0"])
        .expect("ip addr add");
    assert!(out.status.success(), "{out:?}");
    a.wait_for("to_b", "Up", |s| s.state == SessionState::Up);
    b.wait_for("to_a", "Up", |s| s.state == SessionState::Up);
}
