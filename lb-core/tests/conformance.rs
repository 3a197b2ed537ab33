//! Every built-in algorithm through the public conformance kit (`testing` feature): one
//! source of truth for the invariants, shared with users' own schedulers.

use lb_core::testing::{check_scheduler, Claims, Consistency};
use lb_core::Algorithm;

fn claims(a: &Algorithm) -> Claims {
    match a.name() {
        "wrr" | "swrr" | "random" | "p2c" | "sh" | "dh" => Claims::WEIGHTED,
        "mh" => Claims {
            weighted: true,
            consistent: Some(Consistency::Bounded {
                max_reshuffle: 0.05,
            }),
        },
        "ring_hash" => Claims {
            weighted: false,
            consistent: Some(Consistency::Strict),
        },
        _ => Claims::ANY,
    }
}

#[test]
fn every_builtin_algorithm_passes_the_suite() {
    for a in Algorithm::all() {
        if let Err(e) = check_scheduler(&a, claims(&a), 48) {
            panic!("{}: {e}", a.name());
        }
    }
}
