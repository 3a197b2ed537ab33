//! Simulation: N sans-IO virtual routers on an in-memory LAN with virtual time, seeded
//! loss and latency, and partitions (a harness modelled on quinn's `Pair`).
#![allow(clippy::disallowed_methods)] // one Instant to start virtual time from

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lb_vrrp::machine::{Action, Config, RxMeta, State, VirtualRouter};
use lb_vrrp::wire::{AdvertInterval, Auth, Priority, Version, Vrid, VRRP_MCAST_V4};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn ip(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, d))
}

struct Node {
    vr: VirtualRouter,
    alive: bool,
    has_vips: bool,
    side: u8,
}

/// A packet in flight: (deliver_at, seq, to, from, bytes).
type InFlight = Reverse<(Instant, u64, usize, usize, Vec<u8>)>;

/// The in-memory LAN.
struct Lan {
    now: Instant,
    nodes: Vec<Node>,
    in_flight: BinaryHeap<InFlight>,
    seq: u64,
    rng: SmallRng,
    loss: f64,
    latency: Duration,
    transitions: Vec<(Instant, usize, State)>,
}

impl Lan {
    fn new(seed: u64, version: Version, interval_cs: u16, prios: &[u8]) -> Self {
        let nodes = prios
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut c = Config::new(Vrid::new(51).unwrap(), ip(i as u8 + 1), vec![ip(100)]);
                c.version = version;
                c.priority = Priority(p);
                c.advert_interval = AdvertInterval::from_centis(interval_cs).unwrap();
                if version == Version::V2 {
                    c.auth = Auth::password("7road123");
                }
                Node {
                    vr: VirtualRouter::new(c),
                    alive: true,
                    has_vips: false,
                    side: 0,
                }
            })
            .collect();
        Self {
            now: Instant::now(),
            nodes,
            in_flight: BinaryHeap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            loss: 0.0,
            latency: Duration::from_micros(200),
            transitions: Vec::new(),
        }
    }

    fn start(&mut self) {
        self.start_with_jitter(50);
    }

    /// Routers boot up to `max_ms` apart, as real ones do.
    fn start_with_jitter(&mut self, max_ms: u64) {
        for i in 0..self.nodes.len() {
            let jitter = Duration::from_millis(self.rng.gen_range(0..=max_ms));
            self.nodes[i].vr.start(self.now + jitter);
            self.flush(i);
        }
    }

    fn flush(&mut self, i: usize) {
        while let Some(a) = self.nodes[i].vr.poll_action() {
            match a {
                Action::SendAdvert(repr) => {
                    let src = self.nodes[i].vr.config().primary_addr;
                    let bytes = repr.to_bytes(src, IpAddr::V4(VRRP_MCAST_V4)).unwrap();
                    for j in 0..self.nodes.len() {
                        if j == i || self.nodes[j].side != self.nodes[i].side {
                            continue;
                        }
                        if self.rng.gen_bool(self.loss) {
                            continue;
                        }
                        self.seq += 1;
                        self.in_flight.push(Reverse((
                            self.now + self.latency,
                            self.seq,
                            j,
                            i,
                            bytes.clone(),
                        )));
                    }
                }
                Action::AddVips => self.nodes[i].has_vips = true,
                Action::RemoveVips => self.nodes[i].has_vips = false,
                Action::AnnounceVips { .. } => {}
                Action::Transition { to, .. } => self.transitions.push((self.now, i, to)),
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.vr.poll_timeout())
            .min();
        let pkt = self.in_flight.peek().map(|Reverse(p)| p.0);
        [timers, pkt].into_iter().flatten().min()
    }

    /// One event; false if nothing is scheduled.
    fn step(&mut self) -> bool {
        let Some(t) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(t);
        if self
            .in_flight
            .peek()
            .is_some_and(|Reverse(p)| p.0 <= self.now)
        {
            let Reverse((_, _, to, from, bytes)) = self.in_flight.pop().unwrap();
            if self.nodes[to].alive {
                let meta = RxMeta {
                    src: self.nodes[from].vr.config().primary_addr,
                    dst: IpAddr::V4(VRRP_MCAST_V4),
                    ttl: 255,
                };
                self.nodes[to].vr.handle_packet(self.now, meta, &bytes);
                self.flush(to);
            }
        } else {
            for i in 0..self.nodes.len() {
                if self.nodes[i].alive
                    && self.nodes[i]
                        .vr
                        .poll_timeout()
                        .is_some_and(|d| d <= self.now)
                {
                    self.nodes[i].vr.handle_timeout(self.now);
                    self.flush(i);
                }
            }
        }
        true
    }

    /// Runs until virtual time passes `dur`, bounded in steps.
    fn drive_for(&mut self, dur: Duration) {
        let until = self.now + dur;
        for _ in 0..2_000_000 {
            match self.next_event() {
                Some(t) if t <= until => {
                    self.step();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("drive_for did not finish within the step bound");
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.nodes[i].vr.state() == State::Master)
            .collect()
    }

    fn vip_holders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.nodes[i].has_vips)
            .collect()
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].has_vips = false;
    }

    fn highest_alive(&self) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .max_by_key(|&i| {
                (
                    self.nodes[i].vr.effective_priority(),
                    self.nodes[i].vr.config().primary_addr,
                )
            })
            .unwrap()
    }
}

#[test]
fn converges_to_one_master_with_loss() {
    for seed in 0..20 {
        let mut lan = Lan::new(seed, Version::V2, 100, &[50, 100, 200, 150, 120]);
        lan.loss = 0.05;
        lan.start();
        lan.drive_for(Duration::from_secs(30));
        assert_eq!(lan.masters(), vec![2], "seed {seed}");
        assert_eq!(lan.vip_holders(), vec![2], "seed {seed}");
    }
}

#[test]
fn equal_priorities_break_ties_on_address() {
    for seed in 0..10 {
        // Booting apart: the first to time out wins and equal-priority backups follow it
        // (RFC 5798 §6.4.2 accepts priority >= its own).
        let mut lan = Lan::new(seed, Version::V3, 10, &[100, 100, 100, 100]);
        lan.start();
        lan.drive_for(Duration::from_secs(5));
        assert_eq!(lan.masters().len(), 1, "seed {seed}");
        // Booting together: all time out at once, become masters, and the masters break
        // the tie on the higher primary address (RFC 5798 §6.4.3).
        let mut lan = Lan::new(seed, Version::V3, 10, &[100, 100, 100, 100]);
        lan.start_with_jitter(0);
        lan.drive_for(Duration::from_secs(5));
        assert_eq!(lan.masters(), vec![3], "seed {seed}");
    }
}

#[test]
fn failover_within_master_down_interval() {
    for (version, cs) in [
        (Version::V2, 100),
        (Version::V3, 100),
        (Version::V3, 10),
        (Version::V3, 1),
    ] {
        for seed in 0..5 {
            let mut lan = Lan::new(seed, version, cs, &[100, 200, 150]);
            lan.start();
            lan.drive_for(Duration::from_secs(10));
            assert_eq!(lan.masters(), vec![1]);
            // Crash the master at a random point of its advert cycle.
            let offset = lan.rng.gen_range(0..u64::from(cs) * 10_000);
            lan.drive_for(Duration::from_micros(offset));
            let crashed_at = lan.now;
            lan.crash(1);
            let mdi = lan.nodes[2].vr.master_down_interval();
            lan.drive_for(mdi + lan.latency);
            assert_eq!(lan.masters(), vec![2], "{version:?} {cs}cs seed {seed}");
            let took = lan
                .transitions
                .iter()
                .rev()
                .find(|(_, i, s)| *i == 2 && *s == State::Master)
                .unwrap()
                .0
                - crashed_at;
            // The last advert may still have been in flight when the master died.
            assert!(
                took <= mdi + lan.latency,
                "{version:?} {cs}cs: took {took:?} > {mdi:?}"
            );
            lan.drive_for(Duration::from_secs(5));
            assert_eq!(lan.masters(), vec![2]);
        }
    }
}

#[test]
fn clean_stop_moves_within_skew_time() {
    let mut lan = Lan::new(7, Version::V2, 100, &[100, 200, 150]);
    lan.start();
    lan.drive_for(Duration::from_secs(10));
    let stopped_at = lan.now;
    lan.nodes[1].vr.shutdown(lan.now);
    lan.flush(1);
    lan.nodes[1].alive = false;
    let skew = lan.nodes[2].vr.skew_time();
    lan.drive_for(skew + lan.latency);
    assert_eq!(lan.masters(), vec![2]);
    let took = lan.transitions.last().unwrap().0 - stopped_at;
    assert!(took <= skew + lan.latency, "took {took:?}");
    assert!(!lan.nodes[1].has_vips);
}

#[test]
fn healed_partition_returns_to_one_master() {
    for seed in 0..10 {
        let mut lan = Lan::new(seed, Version::V3, 20, &[100, 200, 150, 120]);
        lan.loss = 0.02;
        lan.start();
        lan.drive_for(Duration::from_secs(5));
        assert_eq!(lan.masters(), vec![1]);
        // Split {0, 2} from {1, 3}: each side elects its own master.
        lan.nodes[0].side = 1;
        lan.nodes[2].side = 1;
        lan.drive_for(Duration::from_secs(5));
        assert_eq!(lan.masters(), vec![1, 2], "seed {seed}");
        // Heal.
        for n in &mut lan.nodes {
            n.side = 0;
        }
        lan.drive_for(Duration::from_secs(5));
        assert_eq!(lan.masters(), vec![lan.highest_alive()], "seed {seed}");
        assert_eq!(lan.vip_holders(), vec![1], "seed {seed}");
    }
}

#[test]
fn restarted_higher_priority_preempts_only_with_preempt() {
    for preempt in [true, false] {
        let mut lan = Lan::new(3, Version::V2, 100, &[100, 200]);
        let mut c = lan.nodes[1].vr.config().clone();
        c.preempt = preempt;
        lan.nodes[1].vr = VirtualRouter::new(c.clone());
        lan.start();
        lan.drive_for(Duration::from_secs(10));
        assert_eq!(lan.masters(), vec![1]);
        lan.crash(1);
        lan.drive_for(Duration::from_secs(5));
        assert_eq!(lan.masters(), vec![0]);
        // The higher-priority router comes back.
        lan.nodes[1] = Node {
            vr: VirtualRouter::new(c.clone()),
            alive: true,
            has_vips: false,
            side: 0,
        };
        lan.nodes[1].vr.start(lan.now);
        lan.flush(1);
        lan.drive_for(Duration::from_secs(10));
        assert_eq!(
            lan.masters(),
            vec![if preempt { 1 } else { 0 }],
            "preempt={preempt}"
        );
    }
}
