//! Spacing of gratuitous ARPs and unsolicited neighbour advertisements: keepalived's
//! `vrrp_garp_interval` / `vrrp_gna_interval` (vrrp_arp.c, vrrp_ndisc.c).
//!
//! One lane per base interface and family (keepalived paces per `IF_BASE_IFP`: a VMAC's
//! messages count against its parent), or per [`GarpGroup`] and family for the interfaces
//! of a group (keepalived's `garp_group`: its interfaces share one lane and their intervals
//! are the group's). A message leaves at once when its lane is idle and
//! the interval since the lane's last message has passed; otherwise it joins the lane's
//! queue, which one task sends in order, each message its interval after the previous one
//! actually left. A queued message is dropped when its instance's epoch moves (its VIPs
//! were removed, its sockets replaced, the instance stopped). A message already queued for
//! the same address, interface and instance is not queued twice: its remaining repeats
//! become the larger of the two, so the queue holds at most one entry per address
//! (keepalived folds the waiting ones of an address into a single message; here the
//! larger repeat count is kept).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Sends one message; called with the pacer's lock held, so it must not block.
pub(crate) type SendFn = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// Shared spacing of gratuitous ARPs / NAs (cheap to clone: clones share the lanes and
/// the groups). Give every [`super::Speaker`] of a process the same one
/// ([`super::Speaker::set_garp_pacer`]) to space their messages together, as keepalived
/// spaces those of all its instances; by default each speaker has its own.
#[derive(Clone, Default)]
pub struct GarpPacer {
    lanes: Arc<Mutex<HashMap<LaneKey, Lane>>>,
    /// The groups, with the number of the [`GarpPacer::set_groups`] call that set them.
    groups: Arc<Mutex<(u64, Arc<[GarpGroup]>)>>,
}

/// keepalived's `garp_group` (vrrp_parser.c `garp_group_handler`): intervals of their own
/// for some interfaces, in place of the instances' [`super::VrrpInstanceConfig::garp_interval`]
/// and [`super::VrrpInstanceConfig::gna_interval`], counted over all the group's interfaces
/// together (keepalived's aggregation: one `garp_delay` shared by the interfaces, so the
/// group's rate is the total over them).
///
/// An interface is named as the base interface of an instance (its `interface`, also when
/// it uses a VMAC) or as a VIP's `dev`; a VMAC's own name never matches (keepalived refuses
/// a `garp_group` on a VMAC). A family whose interval is `None` or zero is not spaced on
/// these interfaces, whatever the instances' interval (keepalived applies the global
/// intervals only to interfaces without a group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GarpGroup {
    /// The interfaces' names.
    pub interfaces: Vec<String>,
    /// `garp_interval`: the least time between two gratuitous ARPs out of any of the
    /// interfaces (to the microsecond).
    pub garp_interval: Option<Duration>,
    /// `gna_interval`: the same for unsolicited neighbour advertisements.
    pub gna_interval: Option<Duration>,
}

impl std::fmt::Debug for GarpPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarpPacer").finish_non_exhaustive()
    }
}

/// What a lane paces: one base interface (by index) or one [`GarpGroup`] (the
/// [`GarpPacer::set_groups`] call that set it and its position in that list), with the
/// family (IPv6 or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LaneKey {
    /// A base interface's index.
    Interface(u32, bool),
    /// A group: (set_groups call, position).
    Group(u64, usize, bool),
}

#[derive(Default)]
struct Lane {
    /// The earliest time of the lane's next message: its last one's send time plus that
    /// message's interval.
    next: Option<Instant>,
    queue: VecDeque<Queued>,
    /// A task is sending the queue.
    draining: bool,
}

/// A message to send `left` more times.
pub(crate) struct Queued {
    /// The address announced and the interface it leaves from (which identify a message
    /// for folding, with the instance's `epoch`).
    pub(crate) addr: IpAddr,
    pub(crate) ifindex: u32,
    pub(crate) send: SendFn,
    pub(crate) interval: Duration,
    pub(crate) left: u32,
    pub(crate) epoch: Arc<AtomicU64>,
    pub(crate) at_epoch: u64,
    /// The instance's name, for the log.
    pub(crate) instance: Arc<str>,
}

impl Queued {
    fn stale(&self) -> bool {
        self.epoch.load(Ordering::Relaxed) != self.at_epoch
    }

    fn same(&self, o: &Self) -> bool {
        self.addr == o.addr
            && self.ifindex == o.ifindex
            && Arc::ptr_eq(&self.epoch, &o.epoch)
            && self.at_epoch == o.at_epoch
    }
}

impl GarpPacer {
    /// A pacer of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the [`GarpGroup`]s (lb-node: at its start and at each reload). Messages
    /// already waiting keep their lane and interval; those announced from now on follow
    /// the new groups, on lanes of their own (never behind the old groups' queues). An
    /// interface named by two groups belongs to the first.
    pub fn set_groups(&self, groups: Vec<GarpGroup>) {
        let generation = {
            let mut g = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            g.0 += 1;
            g.1 = groups.into();
            g.0
        };
        // The old groups' idle lanes go; a busy one goes once drained and idle at a later
        // call.
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, lane| match k {
                LaneKey::Group(g, ..) if *g != generation => {
                    lane.draining || !lane.queue.is_empty()
                }
                _ => true,
            });
    }

    /// The lane and interval of a message out of the base interface `base` (`ifindex`):
    /// its group's, else `instance`'s interval on the interface's own lane; `None` when
    /// it leaves at once (no interval, or zero).
    pub(crate) fn lane_of(
        &self,
        base: &str,
        ifindex: u32,
        v6: bool,
        instance: Duration,
    ) -> Option<(LaneKey, Duration)> {
        let (generation, groups) = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (key, interval) = match groups
            .iter()
            .position(|g| g.interfaces.iter().any(|i| i == base))
        {
            Some(i) => {
                let g = &groups[i];
                let d = if v6 { g.gna_interval } else { g.garp_interval };
                (LaneKey::Group(generation, i, v6), d?)
            }
            None => (LaneKey::Interface(ifindex, v6), instance),
        };
        (!interval.is_zero()).then_some((key, interval))
    }

    /// Moves `epoch` on (its queued messages are dropped) under the pacer's lock, so that
    /// no drain task sends one of them after this returns.
    pub(crate) fn invalidate(&self, epoch: &AtomicU64) {
        let _lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `msgs` on `key`'s lane (see the module) and starts the lane's task when
    /// idle. Must be called within a tokio runtime.
    pub(crate) fn submit(&self, key: LaneKey, msgs: Vec<Queued>) {
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let lane = lanes.entry(key).or_default();
            lane.queue.retain(|q| !q.stale());
            for m in msgs {
                match lane.queue.iter_mut().find(|q| q.same(&m)) {
                    Some(q) => q.left = q.left.max(m.left),
                    None => lane.queue.push_back(m),
                }
            }
            !lane.queue.is_empty() && !std::mem::replace(&mut lane.draining, true)
        };
        if start {
            tokio::spawn(drain(self.lanes.clone(), key));
        }
    }
}

/// Clears a lane's `draining` when its task ends without doing so itself (cancelled with
/// its runtime, or a panic), so that the next message starts a new one.
struct Reset {
    lanes: Arc<Mutex<HashMap<LaneKey, Lane>>>,
    key: LaneKey,
    armed: bool,
}

impl Drop for Reset {
    fn drop(&mut self) {
        if self.armed {
            let mut all = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(lane) = all.get_mut(&self.key) {
                lane.draining = false;
            }
        }
    }
}

/// Sends `key`'s queue, each message at its turn, until it is empty.
async fn drain(lanes: Arc<Mutex<HashMap<LaneKey, Lane>>>, key: LaneKey) {
    let mut reset = Reset {
        lanes: lanes.clone(),
        key,
        armed: true,
    };
    let mut logged = false;
    loop {
        let at = {
            let mut all = lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(lane) = all.get_mut(&key) else {
                reset.armed = false;
                return;
            };
            lane.queue.retain(|q| !q.stale());
            if lane.queue.is_empty() {
                lane.draining = false;
                reset.armed = false;
                return;
            }
            lane.next
        };
        if let Some(at) = at.filter(|at| *at > Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
        let mut all = lanes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(lane) = all.get_mut(&key) else {
            reset.armed = false;
            return;
        };
        let Some(mut q) = lane.queue.pop_front() else {
            continue;
        };
        if q.stale() {
            tracing::debug!(instance = %q.instance, "VIPs removed: a waiting gratuitous ARP / NA is not sent");
            continue;
        }
        if let Err(e) = (q.send)() {
            if !std::mem::replace(&mut logged, true) {
                tracing::warn!(instance = %q.instance, error = %e, "sending gratuitous ARP / NA");
            }
        }
        let now = Instant::now();
        lane.next = Some(now + q.interval);
        q.left = q.left.saturating_sub(1);
        if q.left > 0 {
            lane.queue.push_back(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    type Log = Arc<Mutex<Vec<(Instant, u8)>>>;

    fn msg(log: &Log, last: u8, left: u32, epoch: &Arc<AtomicU64>) -> Queued {
        let log = log.clone();
        Queued {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
            ifindex: 2,
            send: Arc::new(move || {
                log.lock().unwrap().push((Instant::now(), last));
                Ok(())
            }),
            interval: Duration::from_millis(10),
            left,
            epoch: epoch.clone(),
            at_epoch: epoch.load(Ordering::Relaxed),
            instance: "VI_1".into(),
        }
    }

    /// What `log` recorded: (ms since `t0`, address's last octet).
    fn sent_since(log: &Log, t0: Instant) -> Vec<(u128, u8)> {
        log.lock()
            .unwrap()
            .iter()
            .map(|(t, a)| ((*t - t0).as_millis(), *a))
            .collect()
    }

    /// A group's interfaces share its lane and take its interval for each family (none:
    /// sent at once, whatever the instance's); another interface keeps its own lane and
    /// the instance's interval; an interface in two groups belongs to the first.
    #[test]
    fn groups_choose_lane_and_interval() {
        let pacer = GarpPacer::new();
        let ms = Duration::from_millis;
        pacer.set_groups(vec![
            GarpGroup {
                interfaces: vec!["eth0".into(), "eth1".into()],
                garp_interval: Some(ms(5)),
                gna_interval: None,
            },
            GarpGroup {
                interfaces: vec!["eth1".into(), "eth2".into()],
                garp_interval: Some(ms(7)),
                gna_interval: Some(Duration::ZERO),
            },
        ]);
        let g0 = Some((LaneKey::Group(1, 0, false), ms(5)));
        assert_eq!(pacer.lane_of("eth0", 2, false, ms(1)), g0);
        assert_eq!(pacer.lane_of("eth1", 3, false, ms(1)), g0);
        assert_eq!(pacer.lane_of("eth0", 2, true, ms(1)), None);
        assert_eq!(pacer.lane_of("eth2", 4, true, ms(1)), None);
        assert_eq!(
            pacer.lane_of("eth2", 4, false, ms(1)),
            Some((LaneKey::Group(1, 1, false), ms(7)))
        );
        assert_eq!(
            pacer.lane_of("eth9", 9, true, ms(1)),
            Some((LaneKey::Interface(9, true), ms(1)))
        );
        assert_eq!(pacer.lane_of("eth9", 9, false, Duration::ZERO), None);
        pacer.set_groups(Vec::new());
        assert_eq!(
            pacer.lane_of("eth0", 2, false, ms(1)),
            Some((LaneKey::Interface(2, false), ms(1)))
        );
        // A group set again gets lanes of its own, not the old queue of its position.
        pacer.set_groups(vec![GarpGroup {
            interfaces: vec!["eth0".into()],
            garp_interval: Some(ms(5)),
            gna_interval: None,
        }]);
        assert_eq!(
            pacer.lane_of("eth0", 2, false, ms(1)),
            Some((LaneKey::Group(3, 0, false), ms(5)))
        );
    }

    /// Round robin over the addresses, each message 10 ms after the previous one left;
    /// a second burst while the first waits folds into it; an epoch change drops the rest.
    #[tokio::test(start_paused = true)]
    async fn messages_are_spaced_folded_and_dropped() {
        let pacer = GarpPacer::new();
        let log: Log = Arc::default();
        let epoch = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        pacer.submit(
            LaneKey::Interface(2, false),
            (1..=3).map(|a| msg(&log, a, 2, &epoch)).collect(),
        );
        // Folded: .1 is still queued (second round), .2 asks for 3 repeats.
        tokio::time::sleep(Duration::from_millis(15)).await;
        pacer.submit(LaneKey::Interface(2, false), vec![msg(&log, 2, 3, &epoch)]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = sent_since(&log, t0);
        // .2 had one send left when the second burst asked for 3: it gets 3 more.
        assert_eq!(
            got,
            [
                (0, 1),
                (10, 2),
                (20, 3),
                (30, 1),
                (40, 2),
                (50, 3),
                (60, 2),
                (70, 2)
            ],
            "{got:?}"
        );

        // An epoch change drops what waits; the lane keeps its spacing.
        log.lock().unwrap().clear();
        let t1 = Instant::now();
        pacer.submit(
            LaneKey::Interface(2, false),
            (1..=3).map(|a| msg(&log, a, 5, &epoch)).collect(),
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        epoch.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = sent_since(&log, t1);
        assert_eq!(got, [(0, 1), (10, 2), (20, 3)]);
        // Idle again: the next message leaves at once.
        let t2 = Instant::now();
        pacer.submit(LaneKey::Interface(2, false), vec![msg(&log, 9, 1, &epoch)]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            log.lock().unwrap().last().map(|(t, a)| (*t - t2, *a)),
            Some((Duration::ZERO, 9))
        );
    }
}
