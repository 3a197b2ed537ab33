//! Several checks of one backend that must all pass: keepalived runs every checker of a
//! `real_server` and keeps it in the pool only while all of them succeed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::Probe;
use crate::tracker::ProbeOutcome;

/// Runs its probes, each with its own timeout, and passes only when every one passes. A
/// failing outcome names the first failing probe (in the order given) and its reason; a
/// weight asked for by a probe (keepalived `misc_dynamic`) is passed on when all pass.
///
/// Two ways to run them:
/// * [`AllOf::new`]: concurrently; the latency is the slowest probe's;
/// * [`AllOf::in_order`]: one after another, stopping at the first that fails, and the
///   next run starts with the one that failed (then goes on with the others, wrapping
///   around), as keepalived's `HTTP_GET` fetches its `url`s and retries its failed url
///   first (check_http.c). The backend gets one request at a time; the latency is the sum.
///
/// One schedule (interval, rise, fall, retries) drives them all: that of the check the
/// caller configures the combined probe with.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_health::probe::{AllOf, ExecProbe, Probe, TcpProbe};
///
/// let both = AllOf::new(vec![
///     (Box::new(TcpProbe::new()) as Box<dyn Probe + Send + Sync>, Duration::from_secs(3)),
///     (Box::new(ExecProbe::new("/bin/true")), Duration::from_secs(5)),
/// ])?;
/// assert_eq!(both.timeout(), Some(Duration::from_secs(5)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AllOf {
    probes: Vec<(Box<dyn Probe + Send + Sync>, Duration)>,
    /// `Some`: run in order, starting with this index (the last to fail).
    in_order: Option<AtomicUsize>,
}

impl AllOf {
    /// Probes with the timeout each runs with.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] (setting `checks`) for an empty list.
    pub fn new(probes: Vec<(Box<dyn Probe + Send + Sync>, Duration)>) -> crate::Result<Self> {
        if probes.is_empty() {
            return Err(crate::Error::InvalidConfig {
                setting: "checks",
                reason: "AllOf needs at least one probe".into(),
            });
        }
        Ok(Self {
            probes,
            in_order: None,
        })
    }

    /// Probes with the timeout each runs with, run one after another (see the type's
    /// docs): keepalived's `HTTP_GET` with several `url`s.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] (setting `checks`) for an empty list.
    pub fn in_order(probes: Vec<(Box<dyn Probe + Send + Sync>, Duration)>) -> crate::Result<Self> {
        let mut all = Self::new(probes)?;
        all.in_order = Some(AtomicUsize::new(0));
        Ok(all)
    }

    /// The probes' kinds, in order.
    fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.probes.iter().map(|(p, _)| p.kind())
    }

    /// Runs probe `i` with its own timeout.
    async fn run_one(&self, i: usize, addr: SocketAddr) -> ProbeOutcome {
        let (p, t) = &self.probes[i];
        // The probe enforces `t` itself; this bound, its longest run (its cleanup grace
        // or its steps), only stops one that does not.
        tokio::time::timeout(p.max_duration(*t), p.probe(addr, *t))
            .await
            .unwrap_or_else(|_| ProbeOutcome::timed_out(*t))
    }

    /// Runs the probes one after another from the last to fail; the first failure ends
    /// the run.
    async fn run_in_order(&self, start: &AtomicUsize, addr: SocketAddr) -> ProbeOutcome {
        let n = self.probes.len();
        let first = start.load(Ordering::Relaxed) % n;
        let mut outcomes: Vec<Option<ProbeOutcome>> = vec![None; n];
        let mut latency = Duration::ZERO;
        for i in (first..n).chain(0..first) {
            let o = self.run_one(i, addr).await;
            latency = latency.saturating_add(o.latency);
            if !o.is_up() {
                start.store(i, Ordering::Relaxed);
                let kind = self.probes[i].0.kind();
                return ProbeOutcome::down(format!("{kind}: {}", o.reason), latency);
            }
            outcomes[i] = Some(o);
        }
        start.store(0, Ordering::Relaxed);
        Self::all_up(
            outcomes.into_iter().flatten().zip(self.kinds()).collect(),
            latency,
        )
    }

    /// The outcome when every probe passed: their reasons in order, the weight one asked
    /// for.
    fn all_up(outcomes: Vec<(ProbeOutcome, &'static str)>, latency: Duration) -> ProbeOutcome {
        let mut up = ProbeOutcome::up(
            outcomes
                .iter()
                .map(|(o, kind)| format!("{kind}: {}", o.reason))
                .collect::<Vec<_>>()
                .join("; "),
            latency,
        );
        if let Some(w) = outcomes.iter().find_map(|(o, _)| o.weight) {
            up = up.with_weight(w);
        }
        up
    }
}

#[async_trait]
impl Probe for AllOf {
    async fn probe(&self, addr: SocketAddr, _timeout: Duration) -> ProbeOutcome {
        if let Some(start) = &self.in_order {
            return self.run_in_order(start, addr).await;
        }
        let outcomes =
            futures::future::join_all((0..self.probes.len()).map(|i| self.run_one(i, addr))).await;
        let latency = outcomes.iter().map(|o| o.latency).max().unwrap_or_default();
        if let Some((i, failed)) = outcomes.iter().enumerate().find(|(_, o)| !o.is_up()) {
            let kind = self.probes[i].0.kind();
            return ProbeOutcome::down(format!("{kind}: {}", failed.reason), latency);
        }
        Self::all_up(outcomes.into_iter().zip(self.kinds()).collect(), latency)
    }

    /// The longest of the probes' timeouts (concurrent) or their sum (in order): the
    /// driver's deadline must let each finish.
    fn timeout(&self) -> Option<Duration> {
        let each = self.probes.iter().map(|(_, t)| *t);
        if self.in_order.is_some() {
            Some(each.fold(Duration::ZERO, Duration::saturating_add))
        } else {
            each.max()
        }
    }

    /// The longest of the probes' cleanup graces.
    fn cleanup_grace(&self) -> Duration {
        self.probes
            .iter()
            .map(|(p, _)| p.cleanup_grace())
            .max()
            .unwrap_or_default()
    }

    /// The longest of the probes' runs, each with its own timeout (in order: their sum).
    fn max_duration(&self, _timeout: Duration) -> Duration {
        let each = self.probes.iter().map(|(p, t)| p.max_duration(*t));
        if self.in_order.is_some() {
            each.fold(Duration::ZERO, Duration::saturating_add)
        } else {
            each.max().unwrap_or_default()
        }
    }

    fn kind(&self) -> &'static str {
        "all"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::Weight;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    #[derive(Debug)]
    struct Fixed(ProbeOutcome, &'static str, Duration);

    #[async_trait]
    impl Probe for Fixed {
        async fn probe(&self, _: SocketAddr, _: Duration) -> ProbeOutcome {
            tokio::time::sleep(self.2).await;
            self.0.clone()
        }
        fn kind(&self) -> &'static str {
            self.1
        }
    }

    fn fixed(
        up: bool,
        kind: &'static str,
        takes_ms: u64,
    ) -> (Box<dyn Probe + Send + Sync>, Duration) {
        let d = Duration::from_millis(takes_ms);
        let o = if up {
            ProbeOutcome::up("ok", d)
        } else {
            ProbeOutcome::down("refused", d)
        };
        (Box::new(Fixed(o, kind, d)), Duration::from_secs(1))
    }

    /// Logs each call by name; passes while its switch is on.
    #[derive(Debug)]
    struct Logged {
        name: &'static str,
        up: Arc<AtomicBool>,
        log: Arc<Mutex<Vec<&'static str>>>,
        running: Arc<AtomicUsize>,
        most_running: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Probe for Logged {
        async fn probe(&self, _: SocketAddr, _: Duration) -> ProbeOutcome {
            self.log.lock().unwrap().push(self.name);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.up.load(Ordering::SeqCst) {
                ProbeOutcome::up("200", Duration::from_millis(10))
            } else {
                ProbeOutcome::down("503", Duration::from_millis(10))
            }
        }
        fn kind(&self) -> &'static str {
            self.name
        }
    }

    /// keepalived's `HTTP_GET` with three urls: one request at a time, the run stops at
    /// the failing url, and the next run (a retry) starts with it.
    #[tokio::test(start_paused = true)]
    async fn in_order_fetches_one_at_a_time_and_retries_the_failed_one_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let most_running = Arc::new(AtomicUsize::new(0));
        let b_up = Arc::new(AtomicBool::new(false));
        let probe = |name, up: &Arc<AtomicBool>| {
            (
                Box::new(Logged {
                    name,
                    up: Arc::clone(up),
                    log: Arc::clone(&log),
                    running: Arc::clone(&running),
                    most_running: Arc::clone(&most_running),
                }) as Box<dyn Probe + Send + Sync>,
                Duration::from_secs(2),
            )
        };
        let on = Arc::new(AtomicBool::new(true));
        let all =
            AllOf::in_order(vec![probe("a", &on), probe("b", &b_up), probe("c", &on)]).unwrap();
        assert_eq!(all.timeout(), Some(Duration::from_secs(6)), "the sum");
        assert!(all.max_duration(Duration::ZERO) >= Duration::from_secs(6));

        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(!o.is_up());
        assert_eq!(o.reason, "b: 503");
        assert_eq!(
            *log.lock().unwrap(),
            ["a", "b"],
            "c not fetched after b failed"
        );
        log.lock().unwrap().clear();

        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(!o.is_up());
        assert_eq!(
            *log.lock().unwrap(),
            ["b"],
            "the retry starts at the failed url"
        );
        log.lock().unwrap().clear();

        b_up.store(true, Ordering::SeqCst);
        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(o.is_up(), "{}", o.reason);
        assert_eq!(*log.lock().unwrap(), ["b", "c", "a"]);
        assert_eq!(o.reason, "a: 200; b: 200; c: 200");
        assert_eq!(o.latency, Duration::from_millis(30), "the sum");
        log.lock().unwrap().clear();

        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(o.is_up());
        assert_eq!(
            *log.lock().unwrap(),
            ["a", "b", "c"],
            "from the first again"
        );
        assert_eq!(most_running.load(Ordering::SeqCst), 1, "never two at once");

        // Concurrent (`new`): all at once.
        most_running.store(0, Ordering::SeqCst);
        let all = AllOf::new(vec![probe("a", &on), probe("b", &on)]).unwrap();
        assert!(all.probe(ADDR, Duration::from_secs(1)).await.is_up());
        assert_eq!(most_running.load(Ordering::SeqCst), 2);
    }

    const ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[tokio::test(start_paused = true)]
    async fn up_only_when_every_probe_is_up() {
        let all = AllOf::new(vec![fixed(true, "tcp", 10), fixed(true, "exec", 30)]).unwrap();
        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(o.is_up());
        assert_eq!(
            o.latency,
            Duration::from_millis(30),
            "concurrent: the slowest, not the sum"
        );

        let all = AllOf::new(vec![fixed(true, "tcp", 10), fixed(false, "exec", 30)]).unwrap();
        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(!o.is_up());
        assert_eq!(o.reason, "exec: refused");
    }

    #[tokio::test(start_paused = true)]
    async fn each_probe_has_its_own_timeout_and_a_weight_is_passed_on() {
        let slow = (
            Box::new(Fixed(
                ProbeOutcome::up("ok", Duration::ZERO),
                "http",
                Duration::from_secs(10),
            )) as Box<dyn Probe + Send + Sync>,
            Duration::from_millis(500),
        );
        let all = AllOf::new(vec![fixed(true, "tcp", 1), slow]).unwrap();
        let o = all.probe(ADDR, Duration::from_secs(60)).await;
        assert!(!o.is_up());
        assert!(o.reason.starts_with("http: timed out"), "{}", o.reason);

        let weighted = (
            Box::new(Fixed(
                ProbeOutcome::up("exit 7", Duration::ZERO).with_weight(Weight::new(5).unwrap()),
                "exec",
                Duration::ZERO,
            )) as Box<dyn Probe + Send + Sync>,
            Duration::from_secs(1),
        );
        let all = AllOf::new(vec![fixed(true, "tcp", 1), weighted]).unwrap();
        let o = all.probe(ADDR, Duration::from_secs(1)).await;
        assert!(o.is_up());
        assert_eq!(o.weight, Some(Weight::new(5).unwrap()));
        assert!(AllOf::new(Vec::new()).is_err());
    }
}
