//! Property: whatever the configuration, a tracker flips only after `rise`/`fall`
//! consecutive check results (keepalived retries, taken only while up, folded into one
//! check), and always does; a fresh start up falls at its first failed check (HAProxy).
#![allow(clippy::disallowed_methods)] // a fixed origin for virtual time

use std::time::{Duration, Instant};

use lb_core::{BackendId, Health};
use lb_health::{HealthCheckConfig, HealthTracker, ProbeOutcome, StartState, StatusSet};
use proptest::prelude::*;

fn config() -> impl Strategy<Value = (HealthCheckConfig, u32, u32, u32, bool)> {
    (
        1u32..6,
        1u32..6,
        0u32..4,
        any::<bool>(),
        0u8..=50,
        1u64..20_000,
    )
        .prop_map(|(rise, fall, retries, alpha, spread, inter_ms)| {
            let c = HealthCheckConfig::haproxy()
                .rise(rise)
                .fall(fall)
                .retry(retries)
                .alpha(alpha)
                .spread_checks(spread)
                .inter(Duration::from_millis(inter_ms))
                .fastinter(Duration::from_millis(inter_ms / 2 + 1))
                .build()
                .unwrap();
            (c, rise, fall, retries, alpha)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flips_only_after_rise_or_fall_consecutive_checks(
        (config, rise, fall, retries, alpha) in config(),
        results in proptest::collection::vec(any::<bool>(), 0..120),
    ) {
        let t0 = Instant::now();
        let mut tracker = HealthTracker::new(BackendId(3), config, t0);
        let mut health = if alpha { Health::Down } else { Health::Up };
        prop_assert_eq!(tracker.health(), health);
        prop_assert_eq!(tracker.config().start(), if alpha { StartState::Down } else { StartState::Up });
        // Check results after folding retries, and the run of opposite results.
        let mut checks: Vec<bool> = Vec::new();
        // Until its first check result, a fresh start up needs one failure, not `fall`.
        let mut fresh = !alpha;
        let mut attempt = 0;
        let mut now = t0;
        for up in results {
            now = tracker.poll_timeout().unwrap().max(now);
            let req = tracker.poll_probe(now).unwrap();
            prop_assert!(req.attempt <= retries);
            let outcome = if up {
                ProbeOutcome::up("ok", Duration::ZERO)
            } else {
                ProbeOutcome::down("fail", Duration::ZERO)
            };
            let t = tracker.handle_result(now, outcome);
            // Fold retries as keepalived does: while up, a failure with retries left is not a
            // result; while down there are no retries, nor before a fresh start's first
            // result ("one failure is enough initially").
            if !up && health == Health::Up && !fresh && attempt < retries {
                attempt += 1;
                prop_assert!(t.is_none());
                continue;
            }
            attempt = 0;
            checks.push(up);
            let fall = if std::mem::take(&mut fresh) { 1 } else { fall };
            match t {
                Some(t) => {
                    prop_assert!(t.is_health_change());
                    prop_assert_eq!(t.old, health);
                    let need = if health == Health::Up { fall } else { rise } as usize;
                    // The last `need` checks all disagreed with the old state...
                    prop_assert!(checks.len() >= need);
                    let tail = &checks[checks.len() - need..];
                    prop_assert!(tail.iter().all(|&c| c == (health == Health::Down)));
                    health = t.new;
                    checks.clear(); // a run starts afresh after a flip
                }
                None => {
                    // ...and without a flip, fewer than `need` trailing checks disagree.
                    let need = if health == Health::Up { fall } else { rise } as usize;
                    let run = checks
                        .iter()
                        .rev()
                        .take_while(|&&c| c == (health == Health::Down))
                        .count();
                    prop_assert!(run < need, "run {} reached {} without a flip", run, need);
                }
            }
            prop_assert_eq!(tracker.health(), health);
        }
    }

    #[test]
    fn status_lists_never_panic_and_round_trip(s in "[0-9, -]{0,24}") {
        if let Ok(set) = s.parse::<StatusSet>() {
            let again: StatusSet = set.to_string().parse().unwrap();
            prop_assert_eq!(again, set);
        }
    }
}
