//! Virtual time for the model tests (`rfc_model`, `sync_model`): how an event moves the
//! clock, and when it wakes the machine under test and its model.

use std::time::{Duration, Instant};

use proptest::prelude::*;

/// A step of virtual time.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tick {
    /// Time passes; nobody wakes the routers.
    Advance(Duration),
    /// A wake-up now: early (spurious), or late after an `Advance`.
    Wake,
    /// A wake-up exactly at the earliest `poll_timeout()` (or now, if that is past).
    AtDeadline,
    /// A wake-up 1 µs before the earliest `poll_timeout()`, if that is not past.
    JustBefore,
}

impl Tick {
    /// Advances of up to 5 s (weight 3), wake-ups now (1), at the deadline (`at_deadline`)
    /// and just before it (1).
    pub(super) fn strategy(at_deadline: u32) -> impl Strategy<Value = Self> {
        prop_oneof![
            3 => (0..5_000_000u64).prop_map(|us| Self::Advance(Duration::from_micros(us))),
            1 => Just(Self::Wake),
            at_deadline => Just(Self::AtDeadline),
            1 => Just(Self::JustBefore),
        ]
    }

    /// Moves `now` as this step says, given the machine's next `deadline`; whether the
    /// machine and its model are to be woken at the new `now`.
    pub(super) fn apply(self, now: &mut Instant, deadline: Option<Instant>) -> bool {
        match self {
            Self::Advance(d) => {
                *now += d;
                false
            }
            Self::Wake => true,
            Self::AtDeadline => deadline.is_some_and(|t| {
                *now = (*now).max(t);
                true
            }),
            Self::JustBefore => {
                let before = deadline.map(|t| t - Duration::from_micros(1));
                before.filter(|t| *t >= *now).is_some_and(|t| {
                    *now = t;
                    true
                })
            }
        }
    }
}
