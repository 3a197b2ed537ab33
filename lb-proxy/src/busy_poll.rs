//! Busy polling (HAProxy's `busy-polling`): while any connection is open (busy or idle),
//! the event loop never sleeps in `epoll_wait(2)`; it polls again at once, with a zero
//! timeout.
//!
//! On a virtual machine an idle vCPU halts, and every wake-up of the proxy (a segment
//! arrived, a send buffer emptied) is then an inter-processor interrupt and a VM exit: tens
//! of microseconds that a busy proxy pays many times per megabyte. HAProxy's documentation
//! gives the same reason ("each time the process waits for an I/O using the poller, the
//! processor goes back to sleep or is offered to another VM for a long time"). The price is
//! one CPU held at 100 % while there is traffic, so it is off by default and meant for a
//! proxy pinned to a CPU of its own; HAProxy warns the same.
//!
//! How: the first [`BusyPolling::hold`] spawns a spinner task on the current tokio runtime.
//! The spinner yields (`tokio::task::yield_now`) as long as a [`BusyGuard`] is alive; a
//! runtime with a yielded task polls its I/O driver with a zero timeout instead of parking.
//! When the last guard drops, the spinner ends and the runtime sleeps in `epoll_wait` again,
//! so a proxy without connections costs nothing.
//!
//! Two differences from HAProxy, which spins in every poll whatever it has:
//! - The first connection after a time without any still finds the loop asleep.
//! - A connection that stays open while idle (a keep-alive client, a database pool) keeps
//!   the CPU at 100 % for as long as it lasts.
//!
//! It is meant for tokio's **current-thread** runtime (one event loop, `lb-node`'s
//! `nbthread = 1`). On a multi-thread runtime an idle worker parks inside `epoll_wait`
//! holding the I/O driver, and the spinning worker's zero-timeout poll then finds the driver
//! taken: it spins without polling, and events still wake the parked worker. `lb-node`
//! refuses `busy_polling` without `nbthread = 1`.
//!
//! One [`BusyPolling`] is shared (cloned) by every proxy of a runtime: `lb-node` makes one
//! when `[global] busy_polling = true`, and gives it to each virtual server
//! ([`crate::tcp::TcpProxyConfig::busy_polling`], `HttpProxyConfig::busy_polling`,
//! [`crate::udp::UdpProxyConfig::busy_polling`]).
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use lb_proxy::busy_poll::BusyPolling;
//!
//! let busy = BusyPolling::new();
//! let guard = busy.hold(); // a connection opened: the spinner starts
//! tokio::task::yield_now().await;
//! tokio::task::yield_now().await;
//! assert!(busy.spins() > 0);
//! drop(guard); // the last one closed: the spinner ends at its next turn
//! tokio::task::yield_now().await;
//! let after = busy.spins();
//! tokio::task::yield_now().await;
//! assert_eq!(busy.spins(), after);
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The busy-polling switch of one runtime; cloning shares it. See the [module
/// docs](self).
#[derive(Debug, Clone, Default)]
pub struct BusyPolling(Arc<Inner>);

/// Two switches are equal when they are the same one (clones of each other).
impl PartialEq for BusyPolling {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Live [`BusyGuard`]s: open connections (UDP: sessions).
    holders: AtomicUsize,
    /// A spinner task exists (it may be about to end; see [`spin`]).
    spinning: AtomicBool,
    /// Spinner turns so far, each one zero-timeout poll of the runtime's driver.
    spins: AtomicU64,
}

impl BusyPolling {
    /// A switch with nothing held: nothing spins until [`BusyPolling::hold`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks one connection open; the runtime busy-polls until the returned guard, and
    /// every other, is dropped. Call it inside a tokio runtime: the spinner is spawned on the
    /// current one (outside a runtime nothing spins).
    pub fn hold(&self) -> BusyGuard {
        self.0.holders.fetch_add(1, Ordering::SeqCst);
        // On `spinning` alone, not on the first hold: a spinner lost with its runtime, or
        // never started outside one, is started by the next hold, whatever is held then.
        if !self.0.spinning.load(Ordering::SeqCst) && !self.0.spinning.swap(true, Ordering::SeqCst)
        {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(spin(Arc::clone(&self.0)));
                }
                Err(_) => self.0.spinning.store(false, Ordering::SeqCst),
            }
        }
        BusyGuard(Arc::clone(&self.0))
    }

    /// Connections holding the runtime busy now.
    pub fn holders(&self) -> usize {
        self.0.holders.load(Ordering::Relaxed)
    }

    /// Spinner turns so far: on a current-thread runtime, each one zero-timeout poll of the
    /// I/O driver. For tests and `lbctl status`.
    pub fn spins(&self) -> u64 {
        self.0.spins.load(Ordering::Relaxed)
    }
}

/// One open connection's hold on busy polling ([`BusyPolling::hold`]); dropping it lets
/// the loop sleep again once no other guard is left.
#[derive(Debug)]
#[must_use = "busy polling lasts only as long as the guard"]
pub struct BusyGuard(Arc<Inner>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The spinner: yields while anything is held. `hold` spawns one only when none exists, so
/// the hand-over at the end is careful: after clearing `spinning`, a `hold` that came in
/// meanwhile (and saw `spinning` still set, so spawned nothing) is served by going on. A
/// spinner dropped unfinished (its runtime shut down) clears `spinning` too, so the next
/// `hold` starts another.
async fn spin(inner: Arc<Inner>) {
    let mut owner = Owner(Some(Arc::clone(&inner)));
    loop {
        while inner.holders.load(Ordering::SeqCst) > 0 {
            inner.spins.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
        inner.spinning.store(false, Ordering::SeqCst);
        if inner.holders.load(Ordering::SeqCst) == 0 || inner.spinning.swap(true, Ordering::SeqCst)
        {
            // `spinning` is no longer this spinner's to clear.
            owner.0 = None;
            return;
        }
    }
}

/// Clears `spinning` when a spinner is dropped while it still owns the flag.
struct Owner(Option<Arc<Inner>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(inner) = &self.0 {
            inner.spinning.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn turns(n: usize) {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spins_only_while_held() {
        let busy = BusyPolling::new();
        turns(5).await;
        assert_eq!(busy.spins(), 0, "nothing held, nothing spins");
        let a = busy.hold();
        let b = busy.clone().hold();
        turns(10).await;
        let held = busy.spins();
        assert!(held >= 5, "spun {held} times in 10 turns");
        drop(a);
        turns(10).await;
        assert!(busy.spins() > held, "one guard left: still spinning");
        drop(b);
        turns(2).await;
        let stopped = busy.spins();
        turns(10).await;
        assert_eq!(busy.spins(), stopped, "no guard left: the spinner ended");
        assert_eq!(busy.holders(), 0);
        // Held again: a new spinner starts.
        let _c = busy.hold();
        turns(5).await;
        assert!(busy.spins() > stopped);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_spinner_however_many_holds() {
        let busy = BusyPolling::new();
        let guards: Vec<_> = (0..50).map(|_| busy.hold()).collect();
        // Drop and take again in the same turn, many times: never two spinners.
        for _ in 0..20 {
            drop(busy.hold());
        }
        turns(20).await;
        // One spinner makes at most one turn per turn of ours (plus the first).
        assert!(busy.spins() <= 21, "{} spins in 20 turns", busy.spins());
        drop(guards);
        turns(2).await;
        let s = busy.spins();
        turns(5).await;
        assert_eq!(busy.spins(), s);
    }

    #[test]
    fn a_spinner_lost_with_its_runtime_is_replaced() {
        let busy = BusyPolling::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let held = rt.block_on(async {
            let g = busy.hold();
            turns(3).await;
            g
        });
        drop(rt); // the spinner task goes with it, still owning the flag
        let _still = held; // and something is still held
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let before = busy.spins();
        rt.block_on(async {
            let _g = busy.hold();
            turns(3).await;
        });
        assert!(busy.spins() > before, "a new spinner started");
    }

    #[test]
    fn a_hold_outside_a_runtime_does_not_keep_later_ones_from_spinning() {
        let busy = BusyPolling::new();
        let g = busy.hold();
        assert_eq!(busy.holders(), 1);
        // Still held: a hold inside a runtime starts the spinner all the same.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let _g = busy.hold();
            turns(3).await;
            assert!(busy.spins() > 0);
        });
        drop(g);
        assert_eq!(busy.holders(), 0);
    }
}
