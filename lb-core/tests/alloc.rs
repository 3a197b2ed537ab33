//! Zero heap allocations per pick, for every algorithm, through the scheduler and through
//! the pool (persistence off), measured with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use lb_core::{
    Algorithm, Backend, BackendId, BackendSet, BuildScheduler, Pool, PoolConfig, Scheduler,
    SelectContext, Weight,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`; the wrapper only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNT_HERE.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNT_HERE.with(|c| c.set(true));
    let r = f();
    COUNT_HERE.with(|c| c.set(false));
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

#[test]
fn zero_allocations_per_pick() {
    let backends: Vec<Backend> = (0..100u32)
        .map(|i| {
            Backend::new(
                BackendId(i),
                format!("198.18.0.{}:{}", i % 250, 8000 + i)
                    .parse()
                    .unwrap(),
            )
            .with_weight(Weight::new(u64::from(i % 7 + 1)).unwrap())
        })
        .collect();
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    for alg in Algorithm::all() {
        let s = alg.build(&backends, None).unwrap();
        let pool = Pool::new(
            alg.clone(),
            BackendSet::new(backends.clone()).unwrap(),
            PoolConfig::default(),
        )
        .unwrap();
        // Warm up (arc-swap's thread-local debt slots are set up on first use).
        let _ = pool.select(now, &SelectContext::default(), &mut |_| true);
        let ((), n) = counted(|| {
            for k in 0..10_000u32 {
                let kb = k.to_le_bytes();
                let ctx = SelectContext {
                    client: Some(std::net::SocketAddr::new(k.to_be_bytes().into(), 1)),
                    destination: None,
                    hash_key: (k % 2 == 0).then_some(&kb[..]),
                };
                let b = s.select(&ctx, &mut |b| b.id().0 != k % 100);
                assert!(b.is_some());
                let p = pool.select(now, &ctx, &mut |_| true);
                assert!(p.is_some());
            }
        });
        assert_eq!(n, 0, "{}: {n} allocations in 10 000 picks", alg.name());
    }
}
