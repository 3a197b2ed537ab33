//! Several checks of one backend that must all pass: keepalived runs every checker of a
//! `real_server` and keeps it in the pool only while all of them succeed.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::Probe;
use crate::tracker::ProbeOutcome;

/// Runs its probes concurrently, each with its own timeout, and passes only when every one
/// passes. A failing outcome names the first failing probe (in the order given) and its
/// reason; a weight asked for by a probe (keepalived `misc_dynamic`) is passed on when all
/// pass. The latency is the slowest probe's.
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
        Ok(Self { probes })
    }
}

#[async_trait]
impl Probe for AllOf {
    async fn probe(&self, addr: SocketAddr, _timeout: Duration) -> ProbeOutcome {
        let outcomes = futures::future::join_all(self.probes.iter().map(|(p, t)| async move {
            let t = *t;
            // The probe enforces `t` itself; this bound, its longest run (its cleanup grace
            // or its steps), only stops one that does not.
            tokio::time::timeout(p.max_duration(t), p.probe(addr, t))
                .await
                .unwrap_or_else(|_| ProbeOutcome::timed_out(t))
        }))
        .await;
        let latency = outcomes.iter().map(|o| o.latency).max().unwrap_or_default();
        if let Some((i, failed)) = outcomes.iter().enumerate().find(|(_, o)| !o.is_up()) {
            let kind = self.probes[i].0.kind();
            return ProbeOutcome::down(format!("{kind}: {}", failed.reason), latency);
        }
        let mut up = ProbeOutcome::up(
            outcomes
                .iter()
                .zip(&self.probes)
                .map(|(o, (p, _))| format!("{}: {}", p.kind(), o.reason))
                .collect::<Vec<_>>()
                .join("; "),
            latency,
        );
        if let Some(w) = outcomes.iter().find_map(|o| o.weight) {
            up = up.with_weight(w);
        }
        up
    }

    /// The longest of the probes' timeouts: the driver's deadline must let each finish.
    fn timeout(&self) -> Option<Duration> {
        self.probes.iter().map(|(_, t)| *t).max()
    }

    /// The longest of the probes' cleanup graces.
    fn cleanup_grace(&self) -> Duration {
        self.probes
            .iter()
            .map(|(p, _)| p.cleanup_grace())
            .max()
            .unwrap_or_default()
    }

    /// The longest of the probes' runs, each with its own timeout.
    fn max_duration(&self, _timeout: Duration) -> Duration {
        self.probes
            .iter()
            .map(|(p, t)| p.max_duration(*t))
            .max()
            .unwrap_or_default()
    }

    fn kind(&self) -> &'static str {
        "all"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::Weight;

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
