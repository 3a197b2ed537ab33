//! Pick latency of every algorithm at 10, 100 and 1000 backends, and Maglev table builds,
//! with the `maglev` crate from crates.io measured beside ours in the same run.
//!
//! `cargo bench -p lb-core` (add `-- --quick` for a fast pass). The summary at the end prints
//! our Maglev against the peer crate as ratios (peer time / our time: above 1 means we are
//! faster).
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use lb_core::algo::maglev::Maglev;
use lb_core::{Algorithm, Backend, BackendId, BuildScheduler, Scheduler, SelectContext, Weight};
use maglev::ConsistentHasher;

fn backends(n: u32) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::new([10, 0, (i >> 8) as u8, i as u8].into(), 8080);
            Backend::new(BackendId(i), addr).with_weight(Weight::new(u64::from(i % 5 + 1)).unwrap())
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    for alg in Algorithm::all() {
        let mut g = c.benchmark_group(format!("pick/{}", alg.name()));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_millis(800));
        for n in [10u32, 100, 1000] {
            let set = backends(n);
            let s = alg.build(&set, None).unwrap();
            let mut k = 0u64;
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    k = k.wrapping_add(0x9e37_79b9);
                    let kb = k.to_le_bytes();
                    let ctx = SelectContext::key(&kb);
                    black_box(s.select(black_box(&ctx), &mut |_| true).map(Backend::id))
                })
            });
        }
        g.finish();
    }
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("mh_build");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    for n in [100u32, 1000] {
        let set = backends(n);
        g.bench_with_input(BenchmarkId::new("ours", n), &n, |b, _| {
            b.iter(|| black_box(Maglev::new(black_box(&set), 65_537).unwrap()))
        });
        let addrs: Vec<SocketAddr> = set.iter().map(Backend::addr).collect();
        g.bench_with_input(BenchmarkId::new("maglev-crate", n), &n, |b, _| {
            b.iter(|| {
                black_box(maglev::Maglev::with_capacity(
                    black_box(addrs.clone()),
                    65_537,
                ))
            })
        });
    }
    g.finish();
}

/// Median of `rounds` timings of `f` repeated `iters` times, in ns per iteration.
fn median_ns(rounds: usize, iters: u32, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[rounds / 2]
}

fn summary() {
    println!("\nlb-core Maglev vs the maglev crate (same run, M = 65537, median of 5):");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "figure", "ours", "peer", "ratio"
    );
    for n in [100u32, 1000] {
        let set = backends(n);
        let addrs: Vec<SocketAddr> = set.iter().map(Backend::addr).collect();
        let ours = median_ns(5, 3, || {
            black_box(Maglev::new(&set, 65_537).unwrap());
        });
        let peer = median_ns(5, 3, || {
            black_box(maglev::Maglev::with_capacity(addrs.clone(), 65_537));
        });
        println!(
            "{:<28} {:>9.3} ms {:>9.3} ms {:>7.2}x",
            format!("build, {n} backends"),
            ours / 1e6,
            peer / 1e6,
            peer / ours
        );
        let mh = Maglev::new(&set, 65_537).unwrap();
        let pm = maglev::Maglev::with_capacity(addrs.clone(), 65_537);
        let mut k = 0u64;
        let ours = median_ns(5, 1_000_000, || {
            k = k.wrapping_add(1);
            let kb = k.to_le_bytes();
            black_box(mh.select(&SelectContext::key(&kb), &mut |_| true));
        });
        let peer = median_ns(5, 1_000_000, || {
            k = k.wrapping_add(1);
            black_box(pm.get(&k));
        });
        println!(
            "{:<28} {:>9.1} ns {:>9.1} ns {:>7.2}x",
            format!("lookup, {n} backends"),
            ours,
            peer,
            peer / ours
        );
    }
}

criterion_group!(benches, picks, maglev_build);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
