//! Spacing of gratuitous ARPs and unsolicited neighbour advertisements: keepalived's
//! `vrrp_garp_interval` / `vrrp_gna_interval` (vrrp_arp.c, vrrp_ndisc.c).
//!
//! One lane per base interface and family (keepalived paces per `IF_BASE_IFP`: a VMAC's
//! messages count against its parent). A message leaves at once when its lane is idle and
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

/// Shared spacing of gratuitous ARPs / NAs (cheap to clone: clones share the lanes).
/// Give every [`super::Speaker`] of a process the same one
/// ([`super::Speaker::set_garp_pacer`]) to space their messages together, as keepalived
/// spaces those of all its instances; by default each speaker has its own.
#[derive(Clone, Default)]
pub struct GarpPacer {
    lanes: Arc<Mutex<HashMap<LaneKey, Lane>>>,
}

impl std::fmt::Debug for GarpPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarpPacer").finish_non_exhaustive()
    }
}

/// (base interface index, IPv6).
pub(crate) type LaneKey = (u32, bool);

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

    /// Round robin over the addresses, each message 10 ms after the previous one left;
    /// a second burst while the first waits folds into it; an epoch change drops the rest.
    #[tokio::test(start_paused = true)]
    async fn messages_are_spaced_folded_and_dropped() {
        let pacer = GarpPacer::new();
        let log: Log = Arc::default();
        let epoch = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        pacer.submit(
            (2, false),
            (1..=3).map(|a| msg(&log, a, 2, &epoch)).collect(),
        );
        // Folded: .1 is still queued (second round), .2 asks for 3 repeats.
        tokio::time::sleep(Duration::from_millis(15)).await;
        pacer.submit((2, false), vec![msg(&log, 2, 3, &epoch)]);
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
            (2, false),
            (1..=3).map(|a| msg(&log, a, 5, &epoch)).collect(),
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        epoch.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = sent_since(&log, t1);
        assert_eq!(got, [(0, 1), (10, 2), (20, 3)]);
        // Idle again: the next message leaves at once.
        let t2 = Instant::now();
        pacer.submit((2, false), vec![msg(&log, 9, 1, &epoch)]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            log.lock().unwrap().last().map(|(t, a)| (*t - t2, *a)),
            Some((Duration::ZERO, 9))
        );
    }
}
