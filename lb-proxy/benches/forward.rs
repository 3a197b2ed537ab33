// cargo bench -p lb-proxy --bench forward
//! Forwarding throughput on loopback: `splice(2)` (splice-auto) against copying through
//! user space, 64 MiB per iteration through a running `TcpProxy` to a sink backend.

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::tcp::{ForwardMode, TcpProxy, TcpProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BYTES: usize = 64 << 20;

/// Reads each connection to EOF, then answers with one byte.
async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while s.read(&mut buf).await.unwrap_or(0) > 0 {}
                let _ = s.write_all(b"k").await;
            });
        }
    });
    addr
}

fn forward(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = rt.block_on(sink());
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Bytes(BYTES as u64));
    group.sample_size(10);
    for (name, mode) in [("splice", ForwardMode::Auto), ("copy", ForwardMode::Copy)] {
        let proxy = rt.block_on(async {
            let set = BackendSet::new(vec![Backend::new(BackendId(1), backend)]).unwrap();
            let pool =
                Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
            let mut cfg = TcpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
            cfg.forward_mode = mode;
            TcpProxy::start(cfg, pool).unwrap()
        });
        let addr = proxy.local_addrs()[0];
        let data = vec![0x5au8; 1 << 20];
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    for _ in 0..BYTES / data.len() {
                        s.write_all(&data).await.unwrap();
                    }
                    s.shutdown().await.unwrap();
                    let mut k = [0u8; 1];
                    s.read_exact(&mut k).await.unwrap();
                });
            });
        });
        rt.block_on(proxy.stop());
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
