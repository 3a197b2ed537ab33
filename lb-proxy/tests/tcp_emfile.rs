//! EMFILE in the accept loop: back off without spinning, recover when descriptors free up.
//! Its own test binary, because it lowers the process's descriptor limit.

use std::sync::Arc;
use std::time::Duration;

use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::tcp::{TcpProxy, TcpProxyConfig};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// The lowest free descriptor number: RLIMIT_NOFILE bounds numbers, not counts, so a limit
/// of this value makes the next `accept(2)` fail with EMFILE.
fn lowest_free_fd() -> u64 {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::open("/dev/null").unwrap();
    probe.as_raw_fd() as u64
}

#[tokio::test(flavor = "current_thread")]
async fn emfile_backs_off_and_recovers() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let set = BackendSet::new(vec![Backend::new(BackendId(1), backend_addr)]).unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let proxy = TcpProxy::start(
        TcpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]),
        pool,
    )
    .unwrap();
    let vip = proxy.local_addrs()[0];

    // Client sockets are created before the limit drops; connecting needs no new descriptor.
    let clients: Vec<TcpSocket> = (0..3).map(|_| TcpSocket::new_v4().unwrap()).collect();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free_fd(), hard).unwrap();

    let mut streams = Vec::new();
    for c in clients {
        streams.push(c.connect(vip).await.unwrap()); // completes in the kernel backlog
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = proxy.stats();
    assert!(during.accept_errors >= 1, "accept hit EMFILE: {during:?}");
    // Back-off doubles from 10 ms to 1 s: about 7 attempts in 1.5 s, not thousands.
    assert!(during.accept_errors <= 12, "accept loop spins: {during:?}");
    assert_eq!(during.connected, 0);

    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    for s in &mut streams {
        s.write_all(b"back").await.unwrap();
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
            .await
            .expect("recovered after descriptors freed up")
            .unwrap_or_else(|e| panic!("{e}: {:?}", proxy.stats()));
        assert_eq!(&b, b"back");
    }
    echo.abort();
}
