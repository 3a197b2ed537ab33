// cargo run -p lb-examples --example schedulers
//
// The seed's LVS NAT virtual server (`virtual_server … 80 { lb_algo rr; real_server … 82
// { weight 3 } real_server … 83 { weight 3 } }`) with a third, lighter real server and a
// sorry server, scheduled by every algorithm lb-core knows. Shows the first picks of each,
// then what happens when a real server fails its health check and when one is drained.
#![allow(clippy::disallowed_methods)] // an example program reads the clock

use std::time::Instant;

use lb_core::{
    AdminState, Algorithm, Backend, BackendId, BackendSet, Health, Pool, PoolConfig, SelectContext,
    Weight,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = Instant::now();
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), "198.18.0.151:82".parse()?).with_weight(Weight::new(3)?),
        Backend::new(BackendId(2), "198.18.0.153:83".parse()?).with_weight(Weight::new(3)?),
        Backend::new(BackendId(3), "198.18.0.155:84".parse()?).with_weight(Weight::new(1)?),
        Backend::new(BackendId(9), "198.18.0.200:80".parse()?).with_backup(true),
    ])?;
    let name = |p: &Pool, id: BackendId| {
        p.backends()
            .get(id)
            .map(|b| b.addr().to_string())
            .unwrap_or_default()
    };

    println!(
        "first 7 picks per algorithm (clients 203.0.113.1..7, each keeping its connection open):"
    );
    for alg in Algorithm::all() {
        let pool = Pool::new(alg.clone(), set.clone(), PoolConfig::default())?;
        let mut open = Vec::new(); // connections stay open, so lc/wlc/sed/nq see the load
        let picks: Vec<String> = (1..=7u8)
            .map(|c| {
                let client = std::net::SocketAddr::new([203, 0, 113, c].into(), 40000);
                let b = pool
                    .select(now, &SelectContext::client(client), &mut |_| true)
                    .expect("eligible backends exist");
                open.push(b.stats().connection());
                format!(":{}", b.addr().port())
            })
            .collect();
        println!("  {:<10} {}", alg.name(), picks.join(" "));
    }

    let pool = Pool::new(Algorithm::WeightedRoundRobin, set, PoolConfig::default())?;
    let ctx = SelectContext::default();
    pool.set_health(BackendId(1), Health::Down, now)?;
    println!("\nwrr after {} fails TCP_CHECK:", name(&pool, BackendId(1)));
    for _ in 0..4 {
        println!(
            "  -> {}",
            pool.select(now, &ctx, &mut |_| true)
                .map(|b| b.addr().to_string())
                .unwrap_or_default()
        );
    }
    pool.set_admin(BackendId(2), AdminState::Drain, now)?;
    pool.set_health(BackendId(3), Health::Down, now)?;
    println!(
        "after draining {} and losing {}: the sorry server takes over",
        name(&pool, BackendId(2)),
        name(&pool, BackendId(3))
    );
    println!(
        "  -> {}",
        pool.select(now, &ctx, &mut |_| true)
            .map(|b| b.addr().to_string())
            .unwrap_or_default()
    );
    Ok(())
}
