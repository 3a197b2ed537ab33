// cargo run -p lb-examples --example conformance
//
// A user's own schedulers held to the invariants lb-core's algorithms pass, with the public
// conformance kit (lb-core's `testing` feature):
//
// * `LeastLoadedLocal` — prefers backends in the client's /24 (a locality-aware pick), least
//   active connections first — passes;
// * `AlwaysFirst` — ignores `accept` and always answers its first candidate — is caught, and
//   the kit prints the shrunk counterexample. The example asserts that it is caught.

use lb_core::testing::{check_scheduler, Claims};
use lb_core::{Backend, BuildScheduler, Result, Scheduler, SelectContext};

/// Least active connections, preferring backends whose address shares the client's /24.
#[derive(Debug)]
struct LeastLoadedLocal {
    backends: Vec<Backend>,
}

impl Scheduler for LeastLoadedLocal {
    fn select(
        &self,
        ctx: &SelectContext<'_>,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        let local = |b: &Backend| match (ctx.client.map(|c| c.ip()), b.addr().ip()) {
            (Some(std::net::IpAddr::V4(c)), std::net::IpAddr::V4(a)) => {
                c.octets()[..3] == a.octets()[..3]
            }
            _ => false,
        };
        let mut best: Option<&Backend> = None;
        for b in &self.backends {
            let better = match best {
                None => true,
                Some(cur) => (!local(b), b.stats().active()) < (!local(cur), cur.stats().active()),
            };
            if better && accept(b) {
                best = Some(b);
            }
        }
        best
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[derive(Debug)]
struct LeastLoadedLocalBuilder;

impl BuildScheduler for LeastLoadedLocalBuilder {
    type Scheduler = LeastLoadedLocal;
    fn build(
        &self,
        candidates: &[Backend],
        _previous: Option<&LeastLoadedLocal>,
    ) -> Result<LeastLoadedLocal> {
        Ok(LeastLoadedLocal {
            backends: candidates.to_vec(),
        })
    }
}

/// Broken on purpose: ignores `accept`.
#[derive(Debug)]
struct AlwaysFirst {
    backends: Vec<Backend>,
}

impl Scheduler for AlwaysFirst {
    fn select(
        &self,
        _: &SelectContext<'_>,
        _accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        self.backends.first()
    }

    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[derive(Debug)]
struct AlwaysFirstBuilder;

impl BuildScheduler for AlwaysFirstBuilder {
    type Scheduler = AlwaysFirst;
    fn build(
        &self,
        candidates: &[Backend],
        _previous: Option<&AlwaysFirst>,
    ) -> Result<AlwaysFirst> {
        Ok(AlwaysFirst {
            backends: candidates.to_vec(),
        })
    }
}

fn main() {
    match check_scheduler(&LeastLoadedLocalBuilder, Claims::ANY, 64) {
        Ok(()) => println!("LeastLoadedLocal: passes every invariant that applies"),
        Err(e) => panic!("LeastLoadedLocal should pass: {e}"),
    }
    match check_scheduler(&AlwaysFirstBuilder, Claims::ANY, 64) {
        Ok(()) => panic!("AlwaysFirst ignores `accept`, yet the kit did not catch it"),
        Err(e) => println!("AlwaysFirst: caught, as it should be.\n{e}"),
    }
}
