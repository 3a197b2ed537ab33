// cargo run -p lb-vrrp --example two_routers
//! Two sans-IO virtual routers exchanging real advert bytes in virtual time: election,
//! a clean stop (priority 0, takeover after Skew_Time) and the return of the master.
//! No sockets, no privileges: this is what the tokio driver does, minus the IO.
#![allow(clippy::disallowed_methods)] // one Instant to start virtual time from

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lb_vrrp::machine::{Action, Config, RxMeta, VirtualRouter};
use lb_vrrp::wire::{Auth, Priority, Vrid, VRRP_MCAST_V4};

fn router(last_octet: u8, priority: u8) -> VirtualRouter {
    let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, last_octet));
    let mut cfg = Config::new(
        Vrid::new(51).expect("valid VRID"),
        ip,
        vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
    );
    cfg.priority = Priority(priority);
    cfg.auth = Auth::password("7road123");
    VirtualRouter::new(cfg)
}

/// Drains `from`'s actions, delivering its adverts to `to`.
fn pump(now: Instant, t0: Instant, name: &str, from: &mut VirtualRouter, to: &mut VirtualRouter) {
    let src = from.config().primary_addr;
    let dst = IpAddr::V4(VRRP_MCAST_V4);
    while let Some(action) = from.poll_action() {
        match action {
            Action::SendAdvert(repr) => {
                let bytes = repr.to_bytes(src, dst).expect("encodable advert");
                to.handle_packet(now, RxMeta { src, dst, ttl: 255 }, &bytes);
            }
            Action::Transition {
                from: old,
                to: new,
                reason,
            } => {
                println!(
                    "{:>8.3}s {name}: {old} -> {new} ({reason:?})",
                    (now - t0).as_secs_f64()
                );
            }
            other => println!("{:>8.3}s {name}: {other:?}", (now - t0).as_secs_f64()),
        }
    }
}

fn run_until(
    t0: Instant,
    now: &mut Instant,
    until: Instant,
    a: &mut VirtualRouter,
    b: &mut VirtualRouter,
) {
    for _ in 0..100_000 {
        pump(*now, t0, "A", a, b);
        pump(*now, t0, "B", b, a);
        let next = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= until => {
                *now = (*now).max(t);
                a.handle_timeout(*now);
                b.handle_timeout(*now);
            }
            _ => {
                *now = until;
                return;
            }
        }
    }
}

fn main() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut a = router(1, 150);
    let mut b = router(2, 100);
    a.start(now);
    b.start(now + Duration::from_millis(10));
    run_until(t0, &mut now, t0 + Duration::from_secs(6), &mut a, &mut b);
    println!(
        "-- A stops cleanly (priority 0); B takes over after Skew_Time {:?}",
        b.skew_time()
    );
    a.shutdown(now);
    let until = now + Duration::from_secs(2);
    run_until(t0, &mut now, until, &mut a, &mut b);
    println!("-- A starts again and preempts");
    a.start(now);
    let until = now + Duration::from_secs(6);
    run_until(t0, &mut now, until, &mut a, &mut b);
    println!("A: {:?}, B: {:?}", a.counters(), b.counters());
}
