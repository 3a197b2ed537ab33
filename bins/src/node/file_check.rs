//! keepalived's `FILE_CHECK` (check_file.c, track_file.c): a real server follows the number
//! in a `track_file`. With weight 0, any value but 0 (with `reverse`: 0) takes it down;
//! with another weight, value × weight (negated with `reverse`) is added to its configured
//! weight (limited to IPVS's 0..=65535; 0 takes no new connection but stays up).
//!
//! The file is read at each run of the check, every second by default (keepalived reacts
//! to inotify events at once); a missing file, or one without a number, reads as 0, as
//! keepalived reads a deleted file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lb_core::Weight;
use lb_health::{Probe, ProbeOutcome};
use tokio::io::AsyncReadExt;

/// The probe of one `FILE_CHECK` of a real server.
#[derive(Debug, Clone)]
pub(crate) struct FileProbe {
    /// The tracked file.
    pub(crate) file: PathBuf,
    /// Multiplier of the value; 0: any value but 0 is down.
    pub(crate) weight: i32,
    /// Negate the product (with weight 0: a value of 0 is down).
    pub(crate) reverse: bool,
    /// The real server's configured weight, which the product is added to.
    pub(crate) base: Weight,
}

impl FileProbe {
    /// The verdict for `value` (`how` says where it came from, for the reason).
    pub(crate) fn judge(&self, value: i64, how: &str) -> ProbeOutcome {
        let file = self.file.display();
        if self.weight == 0 {
            return if (value != 0) != self.reverse {
                ProbeOutcome::down(format!("{file}: {how} {value}: fault"), Duration::ZERO)
            } else {
                ProbeOutcome::up(format!("{file}: {how} {value}"), Duration::ZERO)
            };
        }
        let sign: i128 = if self.reverse { -1 } else { 1 };
        let delta = i128::from(value) * i128::from(self.weight) * sign;
        // keepalived: a product at INT_MIN (its FAULT value) takes the real server down.
        if delta <= i128::from(i32::MIN) {
            return ProbeOutcome::down(
                format!("{file}: {how} {value}: weight change {delta} is a fault"),
                Duration::ZERO,
            );
        }
        let w = (i128::from(self.base.get()) + delta).clamp(0, i128::from(Weight::MAX.get()));
        // In range by the clamp.
        let weight = Weight::new(w as u64).unwrap_or(Weight::MAX);
        ProbeOutcome::up(
            format!(
                "{file}: {how} {value}: weight {} {delta:+} = {}",
                self.base.get(),
                weight.get()
            ),
            Duration::ZERO,
        )
        .with_weight(weight)
    }
}

#[async_trait]
impl Probe for FileProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped read closes the file.
    async fn probe(&self, _addr: SocketAddr, _timeout: Duration) -> ProbeOutcome {
        let mut buf = Vec::with_capacity(128);
        let read = match tokio::fs::File::open(&self.file).await {
            Ok(f) => f.take(127).read_to_end(&mut buf).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match read {
            Ok(()) => match lb_vrrp::track::parse_file_number(&buf) {
                Ok(v) => self.judge(v, "value"),
                Err(_) => self.judge(0, "no number, read as"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.judge(0, "absent, read as"),
            Err(e) => self.judge(0, &format!("unreadable ({e}), read as")),
        }
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(weight: i32, reverse: bool, base: u64) -> FileProbe {
        FileProbe {
            file: PathBuf::from("/run/lb/maint"),
            weight,
            reverse,
            base: Weight::new(base).unwrap(),
        }
    }

    #[test]
    fn weight_zero_faults_on_any_value_but_zero() {
        let p = probe(0, false, 3);
        assert!(p.judge(0, "value").is_up());
        assert_eq!(p.judge(0, "value").weight, None);
        assert!(!p.judge(1, "value").is_up());
        assert!(!p.judge(-5, "value").is_up());
        let r = probe(0, true, 3);
        assert!(!r.judge(0, "value").is_up());
        assert!(r.judge(7, "value").is_up());
    }

    #[test]
    fn a_weight_adds_the_product_within_ipvs_range() {
        let w = |p: &FileProbe, v: i64| p.judge(v, "value").weight.map(Weight::get);
        let p = probe(2, false, 3);
        assert_eq!(w(&p, 0), Some(3));
        assert_eq!(w(&p, 5), Some(13));
        assert_eq!(w(&p, -1), Some(1));
        assert_eq!(w(&p, -10), Some(0), "below 0: weight 0, still up");
        assert!(p.judge(-10, "value").is_up());
        assert_eq!(w(&p, 1_000_000), Some(65_535));
        let r = probe(2, true, 3);
        assert_eq!(w(&r, 1), Some(1));
        assert!(!probe(1, false, 3)
            .judge(i64::from(i32::MIN), "value")
            .is_up());
        assert_eq!(
            p.judge(5, "value").reason,
            "/run/lb/maint: value 5: weight 3 +10 = 13"
        );
    }

    #[tokio::test]
    async fn the_file_is_read_as_keepalived_reads_it() {
        let dir = std::env::temp_dir().join(format!("lb-file-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = probe(0, false, 1);
        p.file = dir.join("maint");
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Duration::from_secs(1);
        let out = p.probe(addr, t).await;
        assert!(out.is_up(), "absent: 0");
        assert!(out.reason.ends_with("absent, read as 0"), "{}", out.reason);
        std::fs::write(&p.file, "1\n").unwrap();
        assert!(!p.probe(addr, t).await.is_up());
        std::fs::write(&p.file, "maintenance\n").unwrap();
        let out = p.probe(addr, t).await;
        assert!(
            out.is_up() && out.reason.ends_with("no number, read as 0"),
            "{}",
            out.reason
        );
        std::fs::write(&p.file, "0x10").unwrap();
        p.weight = 1;
        assert_eq!(
            p.probe(addr, t).await.weight,
            Some(Weight::new(17).unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
