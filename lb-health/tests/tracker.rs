//! Paused-clock tests of the tracker's cadence and thresholds, through the real driver with a
//! scripted probe: the runtime's clock only moves when every task sleeps, so timestamps are
//! exact.
#![allow(clippy::disallowed_methods)] // tests read tokio's paused clock only

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lb_core::{BackendId, Health, Weight};
use lb_health::{HealthCheckConfig, HealthDriver, HealthEvent, Probe, ProbeOutcome};
use tokio::time::Instant;

/// What the scripted backend does on one probe.
#[derive(Debug, Clone, Copy)]
enum Step {
    Up,
    Down,
    /// Never answers within any timeout used here.
    Hang,
    /// Passes and asks for a weight (misc_dynamic).
    UpWeight(u64),
}

#[derive(Debug, Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    last: Mutex<Option<Step>>,
    calls: Mutex<Vec<Duration>>,
}

#[derive(Debug)]
struct ScriptedProbe {
    script: Arc<Script>,
    t0: Instant,
}

#[async_trait]
impl Probe for ScriptedProbe {
    async fn probe(&self, _addr: SocketAddr, _timeout: Duration) -> ProbeOutcome {
        self.script.calls.lock().unwrap().push(self.t0.elapsed());
        let step = {
            let mut steps = self.script.steps.lock().unwrap();
            let mut last = self.script.last.lock().unwrap();
            let s = steps.pop_front().or(*last).unwrap_or(Step::Up);
            *last = Some(s);
            s
        };
        match step {
            Step::Up => ProbeOutcome::up("ok", Duration::ZERO),
            Step::Down => ProbeOutcome::down("refused", Duration::ZERO),
            Step::UpWeight(w) => {
                ProbeOutcome::up("dynamic", Duration::ZERO).with_weight(Weight::new(w).unwrap())
            }
            Step::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ProbeOutcome::up("late", Duration::ZERO)
            }
        }
    }

    fn kind(&self) -> &'static str {
        "scripted"
    }
}

struct Run {
    driver: HealthDriver,
    events: tokio::sync::broadcast::Receiver<HealthEvent>,
    script: Arc<Script>,
    t0: Instant,
}

fn start(config: HealthCheckConfig, steps: &[Step]) -> Run {
    let t0 = Instant::now();
    let script = Arc::new(Script::default());
    script.steps.lock().unwrap().extend(steps.iter().copied());
    let mut driver = HealthDriver::new(1024);
    let events = driver.subscribe();
    let probe = ScriptedProbe {
        script: Arc::clone(&script),
        t0,
    };
    driver
        .add(
            BackendId(1),
            "127.0.0.1:1".parse().unwrap(),
            Box::new(probe),
            config,
        )
        .unwrap();
    Run {
        driver,
        events,
        script,
        t0,
    }
}

impl Run {
    /// Lets virtual time run for `d`, then returns the probe call times and the events with
    /// their arrival times.
    async fn run_for(&mut self, d: Duration) -> (Vec<Duration>, Vec<(Duration, HealthEvent)>) {
        let deadline = self.t0 + d;
        let mut got = Vec::new();
        loop {
            tokio::select! {
                e = self.events.recv() => got.push((self.t0.elapsed(), e.unwrap())),
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        (self.script.calls.lock().unwrap().clone(), got)
    }
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|&s| Duration::from_secs_f64(s)).collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn flips_only_after_exactly_rise_and_fall() {
    use Step::{Down as D, Up as U};
    let config = HealthCheckConfig::haproxy()
        .rise(3)
        .fall(2)
        .inter(Duration::from_secs(1))
        .build()
        .unwrap();
    // Probe 6 (0-based) completes fall=2 failures in a row; probe 12 completes rise=3 successes.
    let mut run = start(config, &[U, D, U, D, U, D, D, U, U, D, U, U, U, D, U]);
    let (calls, events) = run.run_for(Duration::from_secs_f64(14.5)).await;
    assert_eq!(calls.len(), 15);
    let flips: Vec<_> = events
        .iter()
        .map(|(t, e)| (*t, e.old, e.new, e.reason.clone()))
        .collect();
    assert_eq!(
        flips,
        [
            (calls[6], Health::Up, Health::Down, "refused".into()),
            (calls[12], Health::Down, Health::Up, "ok".into()),
        ]
    );
    run.driver.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keepalived_retries_and_delay_before_retry() {
    // The TCP_CHECK of shared/seeds/001: delay_loop 6, connect_timeout 3, nb_get_retry 3,
    // delay_before_retry 3.
    let config = HealthCheckConfig::keepalived()
        .delay_loop(Duration::from_secs(6))
        .connect_timeout(Duration::from_secs(3))
        .nb_get_retry(3)
        .delay_before_retry(Duration::from_secs(3))
        .build()
        .unwrap();
    // Up once, then down: while up, one check = 1 try + 3 retries, 3 s apart. Once down,
    // keepalived retries no more (check_tcp.c retries only `if (checker->is_up)`): one try
    // every delay_loop, 6 s after the last try began.
    let mut run = start(config.clone(), &[Step::Up, Step::Down]);
    let (calls, events) = run.run_for(Duration::from_secs(31)).await;
    assert_eq!(calls, secs(&[0., 6., 9., 12., 15., 21., 27.]));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, Duration::from_secs(15));
    assert_eq!(events[0].1.new, Health::Down);
    run.driver.shutdown().await;

    // A fresh start's first check takes no retries: keepalived starts retry_it at retry
    // ("one failure is enough initially", check_api.c), so a real server dead at start-up
    // is down after one try, then tried every delay_loop.
    let mut run = start(config, &[Step::Down]);
    let (calls, events) = run.run_for(Duration::from_secs(13)).await;
    assert_eq!(calls, secs(&[0., 6., 12.]));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, Duration::ZERO);
    assert_eq!(events[0].1.new, Health::Down);
    run.driver.shutdown().await;

    // A retry that passes ends the check as a success: no flip, the normal cadence resumes.
    let config = HealthCheckConfig::keepalived()
        .delay_loop(Duration::from_secs(6))
        .retry(3)
        .delay_before_retry(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut run = start(config, &[Step::Up, Step::Down, Step::Down, Step::Up]);
    let (calls, events) = run.run_for(Duration::from_secs(19)).await;
    assert_eq!(calls, secs(&[0., 6., 9., 12., 18.]));
    assert!(events.is_empty(), "{events:?}");
    run.driver.shutdown().await;
}

/// A fresh start up is not established until its first check result, whether or not that
/// result changes the verdict: what a reload carries over (an established verdict needs
/// `fall` failures and takes retries; a fresh one falls at its first failure).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_fresh_start_is_established_by_its_first_result() {
    let config = HealthCheckConfig::keepalived()
        .delay_loop(Duration::from_secs(6))
        .build()
        .unwrap();
    let mut run = start(config, &[Step::Up]);
    let state = |run: &Run| run.driver.states().get(BackendId(1)).unwrap();
    assert_eq!(state(&run).health, Health::Up);
    assert!(!state(&run).established, "no check has run yet");
    let (calls, events) = run.run_for(Duration::from_secs(1)).await;
    assert_eq!(calls.len(), 1);
    assert!(events.is_empty(), "a passing first check flips nothing");
    assert!(state(&run).established);
    run.driver.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hung_probe_times_out_and_down_within_fall_timeouts_and_intervals() {
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_secs(1))
        .fall(2)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut run = start(config, &[Step::Up, Step::Hang]);
    let (calls, events) = run.run_for(Duration::from_secs(4)).await;
    // The backend hangs from t=1: the probe at 1 times out at 1.5 (plus the driver's grace g
    // for a probe that ignores its own timeout: this scripted one does, the real probes
    // return at their timeout), the next starts inter after that (HAProxy and keepalived
    // reschedule from a check's end) and times out too: down at 1 + fall × timeout +
    // (fall − 1) × inter + 2g.
    let g = lb_health::driver::BACKSTOP_GRACE;
    assert_eq!(
        &calls[..3],
        &[
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_millis(2500) + g
        ][..]
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, Duration::from_millis(3000) + 2 * g);
    assert!(events[0].1.reason.contains("timed out"), "{:?}", events[0]);
    assert_eq!(events[0].1.latency, Duration::from_millis(500));
    run.driver.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fastinter_and_downinter_change_the_cadence() {
    use Step::{Down as D, Up as U};
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_secs(10))
        .fastinter(Duration::from_secs(1))
        .downinter(Duration::from_secs(30))
        .rise(2)
        .fall(3)
        .build()
        .unwrap();
    let mut run = start(config, &[U, D, D, D, D, U, U, U]);
    let (calls, events) = run.run_for(Duration::from_secs(84)).await;
    // steady up: inter; going down: fastinter; down: downinter; going up: fastinter.
    assert_eq!(calls, secs(&[0., 10., 11., 12., 42., 72., 73., 83.]));
    let at: Vec<_> = events.iter().map(|(t, e)| (*t, e.new)).collect();
    assert_eq!(
        at,
        [
            (Duration::from_secs(12), Health::Down),
            (Duration::from_secs(73), Health::Up)
        ]
    );
    run.driver.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn jitter_stays_within_its_bound() {
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_secs(10))
        .spread_checks(20)
        .build()
        .unwrap();
    let mut run = start(config, &[]);
    let (calls, _) = run.run_for(Duration::from_secs(600)).await;
    assert!(calls.len() >= 50, "{}", calls.len());
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    for g in &gaps {
        assert!(
            *g >= Duration::from_secs(8) && *g <= Duration::from_secs(12),
            "{g:?}"
        );
    }
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(distinct.len() > gaps.len() / 2, "jitter actually varies");
    run.driver.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn alpha_starts_down_and_dynamic_weight_is_reported() {
    let config = HealthCheckConfig::keepalived()
        .alpha(true)
        .delay_loop(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut run = start(
        config,
        &[
            Step::Down,
            Step::UpWeight(5),
            Step::UpWeight(5),
            Step::UpWeight(2),
        ],
    );
    let (_, events) = run.run_for(Duration::from_secs_f64(3.5)).await;
    let seen: Vec<_> = events
        .iter()
        .map(|(t, e)| (t.as_secs(), e.old, e.new, e.weight.map(Weight::get)))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Health::Down, Health::Up, Some(5)),
            (3, Health::Up, Health::Up, Some(2)),
        ]
    );
    run.driver.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn thousands_of_checks_and_a_clean_stop() {
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_secs(1))
        .fall(2)
        .warmup(Duration::from_secs(1))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let script = Arc::new(Script::default());
    script.steps.lock().unwrap().push_back(Step::Down);
    let mut driver = HealthDriver::new(8192);
    let mut rx_a = driver.subscribe();
    let mut rx_b = driver.subscribe();
    for i in 0..3000 {
        let probe = ScriptedProbe {
            script: Arc::clone(&script),
            t0,
        };
        driver
            .add(
                BackendId(i),
                "127.0.0.1:1".parse().unwrap(),
                Box::new(probe),
                config.clone(),
            )
            .unwrap();
    }
    assert_eq!(driver.len(), 3000);
    assert!(driver
        .add(
            BackendId(0),
            "127.0.0.1:1".parse().unwrap(),
            Box::new(ScriptedProbe {
                script: Arc::clone(&script),
                t0
            }),
            config.clone()
        )
        .is_err());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut down = std::collections::HashSet::new();
    while let Ok(e) = rx_a.try_recv() {
        assert_eq!(e.new, Health::Down);
        down.insert(e.backend);
        assert_eq!(
            rx_b.try_recv().unwrap(),
            e,
            "every subscriber sees every event"
        );
    }
    assert_eq!(down.len(), 3000);
    assert_eq!(driver.health(BackendId(42)), Some(Health::Down));
    assert!(driver.snapshot().values().all(|h| *h == Health::Down));
    assert!(driver.remove(BackendId(7)));
    assert_eq!(driver.health(BackendId(7)), None);
    assert!(!driver.remove(BackendId(7)));
    driver.shutdown().await;
    let after = script.calls.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        script.calls.lock().unwrap().len(),
        after,
        "no probe after shutdown"
    );
    assert!(rx_a.recv().await.is_err(), "channel closed after shutdown");
}

/// A probe timeout of `Duration::MAX` (the builder accepts it): the driver's backstop
/// deadline saturates instead of overflowing, and the check runs on its cadence. The
/// driver's task used to panic on `timeout + BACKSTOP_GRACE` before the first probe.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn duration_max_timeout_does_not_stop_the_checks() {
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_secs(1))
        .timeout(Duration::MAX)
        .fall(1)
        .build()
        .unwrap();
    let mut run = start(config, &[Step::Up, Step::Down]);
    let (calls, events) = run.run_for(Duration::from_millis(2500)).await;
    assert_eq!(calls, secs(&[0., 1., 2.]));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1.new, Health::Down);
    run.driver.shutdown().await;
}

/// `CheckState::last_failure` follows what a down backend fails with now (the transition's
/// reason was "refused", the next failure a timeout), and clears at a pass; the changed
/// failure is no new event.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn last_failure_follows_a_down_backend() {
    let config = HealthCheckConfig::haproxy()
        .inter(Duration::from_secs(1))
        .fall(1)
        .rise(1)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut run = start(config, &[Step::Down, Step::Hang, Step::Up]);
    let failure = |run: &Run| {
        let s = run.driver.states().get(BackendId(1)).unwrap();
        (s.health, s.last_failure.map(|f| f.to_string()))
    };
    let (_, events) = run.run_for(Duration::from_millis(500)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(failure(&run), (Health::Down, Some("refused".into())));
    let (_, events) = run.run_for(Duration::from_millis(2000)).await;
    assert_eq!(events.len(), 0, "a new reason is no transition");
    let (health, reason) = failure(&run);
    assert_eq!(health, Health::Down);
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("timed out")),
        "{reason:?}"
    );
    let (_, events) = run.run_for(Duration::from_millis(3000)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(failure(&run), (Health::Up, None));
    run.driver.shutdown().await;
}

/// Two checks on one backend run each on its own schedule, as keepalived's checkers do: the
/// one with `retry 0` takes the backend down at its first failure although the other has
/// `retry 3` (one combined probe on the first check's schedule waited for its retries),
/// and the backend is up again once every check is.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn several_checks_each_on_its_own_schedule() {
    let t0 = Instant::now();
    let script = |steps: &[Step]| {
        let s = Arc::new(Script::default());
        s.steps.lock().unwrap().extend(steps.iter().copied());
        s
    };
    let (a, b) = (
        script(&[Step::Up]),
        script(&[Step::Up, Step::Up, Step::Down, Step::Up]),
    );
    let config = |retry: u32| {
        HealthCheckConfig::keepalived()
            .interval(Duration::from_secs(1))
            .retry(retry)
            .delay_before_retry(Duration::from_secs(2))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap()
    };
    let mut driver = HealthDriver::new(16);
    let mut events = driver.subscribe();
    let probe = |s: &Arc<Script>| -> Box<dyn Probe + Send + Sync> {
        Box::new(ScriptedProbe {
            script: Arc::clone(s),
            t0,
        })
    };
    driver
        .add_checks(
            BackendId(1),
            "127.0.0.1:1".parse().unwrap(),
            vec![(probe(&a), config(3)), (probe(&b), config(0))],
        )
        .unwrap();
    let mut got = Vec::new();
    let deadline = t0 + Duration::from_secs(5);
    loop {
        tokio::select! {
            e = events.recv() => got.push((t0.elapsed(), e.unwrap())),
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let seen: Vec<(Duration, Health, String)> = got
        .iter()
        .map(|(t, e)| (*t, e.new, e.reason.to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Duration::from_secs(2),
                Health::Down,
                "scripted: refused".into()
            ),
            (Duration::from_secs(3), Health::Up, "scripted: ok".into()),
        ]
    );
    assert_eq!(a.calls.lock().unwrap().len(), 5, "a keeps its own cadence");
    driver.shutdown().await;
}
