//! An arbitrary sequence of events never breaks the machine's invariants: a Master has an
//! armed Adver_Timer and holds its VIPs, a Backup has an armed Master_Down_Timer, Fault
//! and Initialize have no timers, and AddVips / RemoveVips alternate.
#![no_main]
#![allow(clippy::disallowed_methods)] // one Instant to start virtual time from

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use lb_vrrp::machine::{Action, Config, RxMeta, State, Timer, TrackId, TrackWeight, VirtualRouter};
use lb_vrrp::wire::{AdvertInterval, AdvertRepr, Auth, Priority, Version, Vrid, VRRP_MCAST_V4};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Event {
    Advance(u16),
    Timeout,
    Advert {
        src: u8,
        ttl: u8,
        prio: u8,
        vrid: u8,
        secs: u8,
        good_pass: bool,
    },
    Raw {
        src: u8,
        bytes: Vec<u8>,
    },
    Link(bool),
    Track(u8, bool),
    SetPriority(u8),
    Shutdown,
    Start,
}

fuzz_target!(|input: (bool, u8, Vec<Event>)| {
    let (preempt, prio, events) = input;
    let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 0, d));
    let mut cfg = Config::new(Vrid::new(51).unwrap(), ip(1), vec![ip(100)]);
    cfg.priority = Priority(prio.max(1));
    cfg.preempt = preempt;
    cfg.auth = Auth::password("7road123");
    cfg.tracks = vec![TrackWeight(-20), TrackWeight(0), TrackWeight(30)];
    let mut vr = VirtualRouter::new(cfg);
    let mut now = Instant::now();
    let mut vips = false;
    vr.start(now);
    for ev in events.into_iter().take(256) {
        match ev {
            Event::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            Event::Timeout => {
                if let Some(t) = vr.poll_timeout() {
                    now = now.max(t);
                }
                vr.handle_timeout(now)
            }
            Event::Advert {
                src,
                ttl,
                prio,
                vrid,
                secs,
                good_pass,
            } => {
                let Some(vrid) = Vrid::new(vrid) else {
                    continue;
                };
                let Some(interval) = AdvertInterval::from_secs(secs) else {
                    continue;
                };
                let adv = AdvertRepr {
                    version: Version::V2,
                    vrid,
                    priority: Priority(prio),
                    interval,
                    auth: Auth::password(if good_pass { "7road123" } else { "x" }),
                    addresses: vec![ip(100)],
                };
                vr.handle_advert(
                    now,
                    RxMeta {
                        src: ip(src),
                        dst: IpAddr::V4(VRRP_MCAST_V4),
                        ttl,
                    },
                    &adv,
                );
            }
            Event::Raw { src, bytes } => vr.handle_packet(
                now,
                RxMeta {
                    src: ip(src),
                    dst: IpAddr::V4(VRRP_MCAST_V4),
                    ttl: 255,
                },
                &bytes,
            ),
            Event::Link(up) => vr.handle_link(now, up),
            Event::Track(i, ok) => vr.handle_track(now, TrackId(usize::from(i % 4)), ok),
            Event::SetPriority(p) => vr.set_priority(now, Priority(p.max(1))),
            Event::Shutdown => vr.shutdown(now),
            Event::Start => vr.start(now),
        }
        while let Some(a) = vr.poll_action() {
            match a {
                Action::AddVips => {
                    assert!(!vips, "AddVips twice");
                    vips = true;
                }
                Action::RemoveVips => {
                    assert!(vips, "RemoveVips without AddVips");
                    vips = false;
                }
                _ => {}
            }
        }
        match vr.state() {
            State::Master => {
                assert!(vips);
                assert!(vr.timer(Timer::Advert).is_some());
            }
            State::Backup => {
                assert!(!vips);
                assert!(vr.timer(Timer::MasterDown).is_some());
            }
            State::Fault | State::Initialize => {
                assert!(!vips);
                assert!(vr.poll_timeout().is_none());
            }
        }
        let p = vr.effective_priority().get();
        assert!(p >= 1 && (p <= 254 || vr.base_priority().is_owner()));
    }
});
