//! TCP data-path tests against real servers on loopback, started by the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{AdminState, Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::proxy_protocol::{self, AcceptProxy, ProxyHeader, Version};
use lb_proxy::sockopt::BufferSize;
use lb_proxy::tcp::{ForwardMode, ProxyHandle, TcpProxy, TcpProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Every test body runs under this bound, so nothing hangs CI.
const TEST_BOUND: Duration = Duration::from_secs(120);

/// A loopback backend; aborted (listener and every connection) on drop.
struct TestBackend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    /// Kills the backend and waits until its listener and connections are really closed
    /// (`abort` alone lets the task run until its next poll, and a client could still be
    /// accepted by a backend the test already considers dead).
    async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// Echoes every connection; the accept loop and connections live in one task set.
async fn echo_backend(bind: &str) -> TestBackend {
    echo_on(TcpListener::bind(bind).await.unwrap())
}

/// Echoes every connection accepted on `l` (see [`echo_backend`]).
fn echo_on(l: TcpListener) -> TestBackend {
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            conns.spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    TestBackend { addr, task }
}

fn pool_of(addrs: &[SocketAddr]) -> Arc<Pool> {
    let set = BackendSet::new(
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Backend::new(BackendId(i as u32 + 1), *a))
            .collect(),
    )
    .unwrap();
    Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap())
}

fn config() -> TcpProxyConfig {
    let mut c = TcpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    c.connect_timeout = Duration::from_secs(2);
    c
}

async fn ping(proxy: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(msg).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

const CHUNK: usize = 1 << 20;

/// A 1 MiB pseudo-random chunk with its index stamped into the first 8 bytes, so lost,
/// duplicated or reordered chunks are caught.
fn chunk(pattern: &mut [u8], index: usize) -> &[u8] {
    pattern[..8].copy_from_slice(&(index as u64).to_le_bytes());
    pattern
}

/// Streams `total` bytes through an echo backend behind the proxy and checks every byte that
/// comes back against the regenerated stream (a byte-for-byte `memcmp`, stronger than
/// comparing hashes and fast in debug builds). Returns the bytes the proxy spliced.
async fn bulk(mode: ForwardMode, total: usize) -> u64 {
    let backend = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    cfg.forward_mode = mode;
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let mut pattern = vec![0u8; CHUNK];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for c in pattern.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    let mut expected = pattern.clone();
    let writer = tokio::spawn(async move {
        for i in 0..total / CHUNK {
            w.write_all(chunk(&mut pattern, i)).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; CHUNK];
    for i in 0..total / CHUNK {
        r.read_exact(&mut buf).await.unwrap();
        assert!(buf == chunk(&mut expected, i), "chunk {i} corrupted");
    }
    assert_eq!(r.read(&mut buf).await.unwrap(), 0, "bytes past the end");
    writer.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while proxy.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = proxy.stats();
    assert_eq!(st.bytes_to_backend, total as u64);
    assert_eq!(st.bytes_to_client, total as u64);
    let b = proxy.pool().backends();
    let b = b.get(BackendId(1)).unwrap();
    assert_eq!(b.stats().bytes_to_backend(), total as u64);
    assert_eq!(b.stats().bytes_to_client(), total as u64);
    proxy.stop().await;
    st.bytes_spliced
}

const GIB: usize = 1 << 30;

/// Byte counters move while a connection lasts (HAProxy's `bin`/`bout`): 4 MiB each way on
/// a connection still open show in the proxy's and the backend's counters, spliced bytes
/// too. They moved only when the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counters_move_while_the_connection_is_open() {
    tokio::time::timeout(TEST_BOUND, async {
        for mode in [ForwardMode::Copy, ForwardMode::Splice] {
            let backend = echo_backend("127.0.0.1:0").await;
            let mut cfg = config();
            cfg.forward_mode = mode;
            let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
            let s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
            let (mut r, mut w) = s.into_split();
            const TOTAL: usize = 4 << 20;
            let writer = tokio::spawn(async move {
                w.write_all(&vec![5u8; TOTAL]).await.unwrap();
                w
            });
            let mut buf = vec![0u8; TOTAL];
            r.read_exact(&mut buf).await.unwrap();
            let w = writer.await.unwrap();
            assert_eq!(proxy.active(), 1);
            // The proxy adds to its counters just after its write returns, so the client
            // can read the last bytes a moment before they are counted: wait (2 s at most).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            let spliced =
                cfg!(all(target_os = "linux", feature = "splice")) && mode == ForwardMode::Splice;
            let counted = |st: &lb_proxy::stats::StatsSnapshot| {
                st.bytes_to_backend == TOTAL as u64
                    && st.bytes_to_client == TOTAL as u64
                    && (!spliced || st.bytes_spliced == 2 * TOTAL as u64)
            };
            while !counted(&proxy.stats()) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let st = proxy.stats();
            assert_eq!(
                (st.bytes_to_backend, st.bytes_to_client),
                (TOTAL as u64, TOTAL as u64),
                "{mode:?}: {st:?}"
            );
            if spliced {
                assert_eq!(st.bytes_spliced, 2 * TOTAL as u64, "{mode:?}");
            }
            let b = proxy.pool().backends();
            let b = b.get(BackendId(1)).unwrap();
            assert_eq!(
                (b.stats().bytes_to_backend(), b.stats().bytes_to_client()),
                (TOTAL as u64, TOTAL as u64),
                "{mode:?}"
            );
            drop((r, w));
            proxy.stop().await;
            // Closing adds nothing twice.
            assert_eq!(proxy.stats().bytes_to_backend, TOTAL as u64);
            assert_eq!(b.stats().bytes_to_client(), TOTAL as u64);
        }
    })
    .await
    .unwrap();
}

#[cfg(all(target_os = "linux", feature = "splice"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_splice_is_intact_and_really_spliced() {
    tokio::time::timeout(TEST_BOUND, async {
        let before = lb_proxy::tcp::spliced_bytes();
        // `Splice` (HAProxy splice-request + splice-response): every byte of both directions
        // (to the backend, and the echo back) goes through pipes, as both the proxy's own
        // count and the process-wide counter of splice(2) calls show.
        let spliced = bulk(ForwardMode::Splice, GIB).await;
        assert_eq!(spliced, 2 * GIB as u64, "bytes moved by splice(2)");
        assert!(lb_proxy::tcp::spliced_bytes() - before >= spliced);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_copy_is_intact() {
    tokio::time::timeout(TEST_BOUND, async {
        assert_eq!(bulk(ForwardMode::Copy, GIB).await, 0, "nothing spliced");
    })
    .await
    .unwrap();
}

/// The client half-closes first: its FIN reaches the backend, which then still answers.
#[tokio::test]
async fn half_close_from_client() {
    for mode in [ForwardMode::Auto, ForwardMode::Splice, ForwardMode::Copy] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // EOF = the client's FIN arrived
            s.write_all(b"world").await.unwrap();
            got
        });
        let mut cfg = config();
        cfg.forward_mode = mode;
        let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            ping(proxy.local_addrs()[0], b"hello"),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply, b"world", "{mode:?}");
        assert_eq!(server.await.unwrap(), b"hello");
    }
}

/// The backend half-closes first (a banner, then FIN); the client still sends afterwards.
#[tokio::test]
async fn half_close_from_backend() {
    for mode in [ForwardMode::Auto, ForwardMode::Splice, ForwardMode::Copy] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"banner").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut cfg = config();
        cfg.forward_mode = mode;
        let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
        let mut c = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
        let mut banner = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut banner))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(banner, b"banner");
        c.write_all(b"late data").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(server.await.unwrap(), b"late data", "{mode:?}");
    }
}

/// A listener whose accept queue is full: SYNs are dropped, connects time out.
fn blackhole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..4 {
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.set_nonblocking(true).unwrap();
        let _ = c.connect(&addr.into());
        fill.push(c.into());
    }
    std::thread::yield_now();
    (s, fill, addr)
}

/// Opens a [`blackhole`]: its accept queue is emptied and from now on it echoes every
/// connection, so connects to it succeed again.
fn open_blackhole(hole: socket2::Socket) -> TestBackend {
    hole.set_nonblocking(true).unwrap();
    // The queue holds at most a few connections (backlog 0); bounded anyway.
    for _ in 0..64 {
        if hole.accept().is_err() {
            break;
        }
    }
    echo_on(TcpListener::from_std(hole.into()).unwrap())
}

/// Backends die (refused) or hang (connect timeout) while clients keep connecting: retries
/// with redispatch hide it from every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_while_clients_connect_no_client_sees_a_failure() {
    tokio::time::timeout(TEST_BOUND, async {
        let a = echo_backend("127.0.0.1:0").await;
        let b = echo_backend("127.0.0.1:0").await;
        let c = echo_backend("127.0.0.1:0").await;
        let (_hole, _fill, hole_addr) = blackhole();
        let pool = pool_of(&[a.addr, b.addr, c.addr, hole_addr]);
        let mut cfg = config();
        cfg.connect_timeout = Duration::from_millis(200);
        let proxy = TcpProxy::start(cfg, pool).unwrap();
        let addr = proxy.local_addrs()[0];
        let mut b = Some(b);
        let mut c = Some(c);
        let mut failures = 0;
        for round in 0..20 {
            if round == 5 {
                if let Some(b) = b.take() {
                    b.kill().await; // killed: refused from now on
                }
            }
            if round == 10 {
                if let Some(c) = c.take() {
                    c.kill().await;
                }
            }
            let mut js = tokio::task::JoinSet::new();
            for i in 0..10 {
                js.spawn(async move {
                    let msg = format!("client {round}/{i}");
                    matches!(ping(addr, msg.as_bytes()).await, Ok(r) if r == msg.as_bytes())
                });
            }
            while let Some(ok) = js.join_next().await {
                if !ok.unwrap() {
                    failures += 1;
                }
            }
        }
        let st = proxy.stats();
        assert_eq!(failures, 0, "client-visible failures; stats {st:?}");
        assert_eq!(st.failed, 0);
        assert!(st.retries > 0 && st.connect_failures > 0, "{st:?}");
        let backends = proxy.pool().backends();
        assert!(
            backends.get(BackendId(4)).unwrap().stats().failures() > 0,
            "blackhole timed out"
        );
        assert!(
            backends.get(BackendId(2)).unwrap().stats().failures() > 0,
            "refused"
        );
        drop(a);
    })
    .await
    .unwrap();
}

/// Every backend dead: the client is closed, counted as failed.
#[tokio::test]
async fn all_backends_dead_closes_the_client() {
    // Bound but not listening: connections are refused, and the port stays ours (a port
    // bound then closed could be taken by a parallel test's echo server meanwhile, which
    // made this test fail now and then).
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = dead.local_addr().unwrap();
    let proxy = TcpProxy::start(config(), pool_of(&[addr])).unwrap();
    let r = ping(proxy.local_addrs()[0], b"x").await;
    assert!(matches!(r.as_deref(), Ok(b"") | Err(_)), "{r:?}");
    let st = proxy.stats();
    assert_eq!(st.failed, 1);
    assert_eq!(st.connect_failures, 4, "1 try + 3 retries");
    drop(dead);
}

/// `backend_maxconn` 2 and a queue of 1: the third waits for a slot, the fourth is refused,
/// and a queued connection gives up after the queue timeout.
#[tokio::test]
async fn maxconn_and_queue() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let mut cfg = config();
        cfg.backend_maxconn = Some(2);
        cfg.maxqueue = 1;
        cfg.queue_timeout = Duration::from_millis(500);
        let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
        let addr = proxy.local_addrs()[0];

        async fn open(addr: SocketAddr) -> TcpStream {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut b = [0; 1];
            s.read_exact(&mut b).await.unwrap();
            s
        }
        let first = open(addr).await;
        let _second = open(addr).await;
        assert_eq!(proxy.stats().connected, 2);

        // Third: queued until `first` closes.
        let third = tokio::spawn(ping(addr, b"third"));
        while proxy.stats().queued < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Fourth: the queue (1) is full → refused at once.
        let fourth = ping(addr, b"fourth").await;
        assert!(matches!(fourth.as_deref(), Ok(b"") | Err(_)), "{fourth:?}");
        assert_eq!(proxy.stats().queue_refused, 1);
        drop(first);
        assert_eq!(third.await.unwrap().unwrap(), b"third");

        // With both slots held, a queued connection times out.
        let _again = open(addr).await;
        let started = tokio::time::Instant::now();
        let late = ping(addr, b"late").await;
        assert!(matches!(late.as_deref(), Ok(b"") | Err(_)), "{late:?}");
        assert!(started.elapsed() >= Duration::from_millis(450));
        let st = proxy.stats();
        assert_eq!(st.queue_refused, 2, "{st:?}");
        assert_eq!(st.failed, 2);
    })
    .await
    .unwrap();
}

/// A connection reaching [`gated_backend`]: the client's first byte, and the release that
/// lets the backend answer (echo that byte) and close.
type Arrival = (u8, oneshot::Sender<()>);

/// A backend reporting every connection, in the order they reach it, and holding each open
/// until the test releases it: the test decides when a `maxconn` slot frees.
async fn gated_backend() -> (TestBackend, mpsc::UnboundedReceiver<Arrival>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            conns.spawn(async move {
                let mut id = [0u8; 1];
                if s.read_exact(&mut id).await.is_err() {
                    return;
                }
                let (release, released) = oneshot::channel();
                if tx.send((id[0], release)).is_ok() {
                    let _ = released.await;
                }
                let _ = s.write_all(&id).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (TestBackend { addr, task }, rx)
}

/// The next connection to reach a [`gated_backend`] (generous bound: a loaded CI machine).
async fn next_arrival(arrivals: &mut mpsc::UnboundedReceiver<Arrival>) -> Arrival {
    tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
        .await
        .expect("no connection reached the backend within 30 s")
        .expect("backend gone")
}

/// Polls `done` until it holds (bounded: panics after 30 s).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client sending the one byte `id` (then half-closing) and returning the reply.
fn gated_client(proxy: SocketAddr, id: u8) -> JoinHandle<std::io::Result<Vec<u8>>> {
    tokio::spawn(async move { ping(proxy, &[id]).await })
}

/// One proxy (`backend_maxconn` 1, long queue timeout) in front of a gated backend.
fn fifo_config(queue_timeout: Duration) -> TcpProxyConfig {
    let mut cfg = config();
    cfg.backend_maxconn = Some(1);
    cfg.queue_timeout = queue_timeout;
    cfg
}

/// The `maxconn` queue is FIFO (HAProxy's pendconn queue): with the only slot held, queued
/// connections reach the backend in arrival order as the slot frees one connection at a
/// time, and one arriving while others wait queues behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_queue_serves_in_arrival_order() {
    tokio::time::timeout(TEST_BOUND, async {
        let (backend, mut arrivals) = gated_backend().await;
        let proxy = TcpProxy::start(
            fifo_config(Duration::from_secs(60)),
            pool_of(&[backend.addr]),
        )
        .unwrap();
        let addr = proxy.local_addrs()[0];
        let mut clients = vec![gated_client(addr, 0)];
        let (id, mut release) = next_arrival(&mut arrivals).await;
        assert_eq!(id, 0);
        // Arrival order is fixed by events: each client connects once the one before is
        // queued.
        for id in 1..=5u8 {
            clients.push(gated_client(addr, id));
            eventually("client queued", || proxy.stats().queued == u64::from(id)).await;
        }
        for expected in 1..=6u8 {
            release.send(()).unwrap();
            let (id, next) = next_arrival(&mut arrivals).await;
            assert_eq!(id, expected, "served out of arrival order");
            release = next;
            if expected == 1 {
                // Arrives while 2..=5 wait: served after them.
                clients.push(gated_client(addr, 6));
                eventually("client 6 queued", || proxy.stats().queued == 6).await;
            }
        }
        release.send(()).unwrap();
        for (id, c) in clients.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), [id as u8]);
        }
        let st = proxy.stats();
        assert_eq!(
            (st.queued, st.queue_refused, st.failed),
            (6, 0, 0),
            "{st:?}"
        );
        assert!(arrivals.try_recv().is_err());
    })
    .await
    .unwrap();
}

/// A persistent client whose backend is at `maxconn` waits in the queue for it, as
/// HAProxy queues a client for its server: it was sent to the other backend, and its
/// persistence entry moved there for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_queue_keeps_a_persistent_client_on_its_backend() {
    tokio::time::timeout(TEST_BOUND, async {
        let (a, mut a_arrivals) = gated_backend().await;
        let (b, mut b_arrivals) = gated_backend().await;
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), a.addr),
            Backend::new(BackendId(2), b.addr),
        ])
        .unwrap();
        let cfg = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(300)),
            ..PoolConfig::default()
        };
        let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, cfg).unwrap());
        let proxy = TcpProxy::start(fifo_config(Duration::from_secs(60)), pool).unwrap();
        let addr = proxy.local_addrs()[0];
        // Round robin starts at a: the client's entry names a.
        let first = gated_client(addr, 0);
        let (id, release) = next_arrival(&mut a_arrivals).await;
        assert_eq!(id, 0);
        // Same client address, a full: queued for a, not sent to b.
        let second = gated_client(addr, 1);
        eventually("client 1 queued", || proxy.stats().queued == 1).await;
        assert!(b_arrivals.try_recv().is_err(), "sent to the other backend");
        release.send(()).unwrap();
        let (id, release) = next_arrival(&mut a_arrivals).await;
        assert_eq!(id, 1, "not served by its backend once a slot freed");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), [0]);
        assert_eq!(second.await.unwrap().unwrap(), [1]);
        assert!(b_arrivals.try_recv().is_err());
    })
    .await
    .unwrap();
}

/// No queue jumping: the slot frees (held through another proxy sharing the backend, so
/// this proxy's waiter only notices at its periodic re-check) and a new connection arrives
/// at once; the connection already waiting still goes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_queue_newcomer_does_not_jump_the_queue() {
    tokio::time::timeout(TEST_BOUND, async {
        let (backend, mut arrivals) = gated_backend().await;
        let (a, b) = proxies_sharing(&backend, 1, Duration::from_secs(60));
        let (a_addr, b_addr) = (a.local_addrs()[0], b.local_addrs()[0]);
        let holder = gated_client(b_addr, 0);
        let (id, release) = next_arrival(&mut arrivals).await;
        assert_eq!(id, 0);
        let waiter = gated_client(a_addr, 1);
        eventually("client 1 queued", || a.stats().queued == 1).await;
        release.send(()).unwrap();
        let newcomer = gated_client(a_addr, 2);
        for expected in 1..=2u8 {
            let (id, release) = next_arrival(&mut arrivals).await;
            assert_eq!(
                id, expected,
                "the newcomer went ahead of the waiting connection"
            );
            release.send(()).unwrap();
        }
        for (id, c) in [holder, waiter, newcomer].into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), [id as u8]);
        }
        assert_eq!(a.stats().queue_refused, 0);
    })
    .await
    .unwrap();
}

/// Two proxies sharing one gated backend (`backend_maxconn` `maxconn`): `a` queues, `b`
/// holds the slots. Slots freed through `b` wake nobody in `a`; only `a`'s front waiter sees
/// them, at its periodic re-check, so `a`'s queue moves only if every waiter leaving the
/// front hands its turn to the next.
fn proxies_sharing(
    backend: &TestBackend,
    maxconn: u64,
    queue_timeout: Duration,
) -> (ProxyHandle, ProxyHandle) {
    let pool = pool_of(&[backend.addr]);
    let mut cfg = fifo_config(queue_timeout);
    cfg.backend_maxconn = Some(maxconn);
    let a = TcpProxy::start(cfg.clone(), Arc::clone(&pool)).unwrap();
    let b = TcpProxy::start(cfg, pool).unwrap();
    (a, b)
}

/// A proxy's listening socket kept for its successor, as lb-node's reload keeps it: the
/// successor accepts on a duplicate of it.
struct Reloadable {
    vip: SocketAddr,
    dup: std::net::TcpListener,
    cfg: TcpProxyConfig,
    backend: SocketAddr,
}

impl Reloadable {
    /// A proxy to `backend` (its config `tune`d) on a socket of its own, and its successor's
    /// makings.
    fn start(backend: SocketAddr, tune: impl FnOnce(&mut TcpProxyConfig)) -> (ProxyHandle, Self) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let vip = listener.local_addr().unwrap();
        let dup = listener.try_clone().unwrap();
        let mut cfg = TcpProxyConfig::new(vec![vip]);
        cfg.connect_timeout = Duration::from_secs(2);
        tune(&mut cfg);
        let proxy = Self::start_on(&cfg, backend, listener);
        let me = Self {
            vip,
            dup,
            cfg,
            backend,
        };
        (proxy, me)
    }

    fn start_on(
        cfg: &TcpProxyConfig,
        backend: SocketAddr,
        l: std::net::TcpListener,
    ) -> ProxyHandle {
        TcpProxy::start_on(
            cfg.clone(),
            pool_of(&[backend]),
            Arc::new(lb_proxy::outcome::NoopObserver),
            vec![TcpListener::from_std(l).unwrap()],
        )
        .unwrap()
    }

    /// The successor, accepting on the duplicate socket.
    fn successor(self) -> ProxyHandle {
        Self::start_on(&self.cfg, self.backend, self.dup)
    }
}

/// At the frontend `maxconn`, a client waiting for a slot stays in the kernel's accept
/// queue (HAProxy pauses its listeners): when a reload's successor takes the listening
/// socket over and the old proxy stops accepting, the successor serves it. The old proxy
/// used to accept it and wait for a slot, and reset it when it stopped accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_waiting_at_maxconn_is_served_by_the_successor() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let (old, reload) = Reloadable::start(backend.addr, |c| c.maxconn = 1);
        let vip = reload.vip;
        // c1 takes the only slot and keeps it.
        let mut c1 = TcpStream::connect(vip).await.unwrap();
        c1.write_all(b"1").await.unwrap();
        let mut one = [0u8; 1];
        c1.read_exact(&mut one).await.unwrap();
        // c2 waits for a slot, its request sent.
        let mut c2 = TcpStream::connect(vip).await.unwrap();
        c2.write_all(b"2").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The reload: the successor accepts on a duplicate, then the old one stops.
        let new = reload.successor();
        old.stop_accepting();
        let mut two = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_secs(5), c2.read_exact(&mut two)).await;
        assert!(
            matches!(got, Ok(Ok(_))) && two == *b"2",
            "the waiting client: {got:?}"
        );
        assert_eq!(new.stats().accepted, 1);
        assert_eq!(old.stats().accepted, 1);
        // c1 goes on through the old one.
        c1.write_all(b"3").await.unwrap();
        c1.read_exact(&mut one).await.unwrap();
        assert_eq!(one, *b"3");
    })
    .await
    .unwrap();
}

/// A reload's replacement carries the replaced proxy's counters on, including what the old
/// one counts after the carry for the connection it still drains (its bytes, its close);
/// they stayed on the old proxy's counters, which nothing shows after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_counters_follow_the_draining_connection() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let (old, reload) = Reloadable::start(backend.addr, |_| {});
        let vip = reload.vip;
        let mut c = TcpStream::connect(vip).await.unwrap();
        c.write_all(b"1234").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        let new = reload.successor();
        old.stop_accepting();
        new.carry_counters_from(&old);
        assert_eq!(new.stats().bytes_to_backend, 4);
        // The old version's connection goes on after the carry.
        c.write_all(b"5678").await.unwrap();
        c.read_exact(&mut back).await.unwrap();
        // The proxy counts a burst once its write returns, which may be just after the
        // client has read it: wait (2 s at most) for the count.
        let mut st = new.stats();
        for _ in 0..200 {
            if st.bytes_to_client == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            st = new.stats();
        }
        assert_eq!(
            (st.accepted, st.bytes_to_backend, st.bytes_to_client),
            (1, 8, 8)
        );
        assert_eq!(
            st.active, 1,
            "the connection the old version drains is open on this virtual server"
        );
        // A client of the new version adds to the same totals.
        assert_eq!(ping(vip, b"ab").await.unwrap(), b"ab");
        let st = new.stats();
        assert_eq!((st.accepted, st.bytes_to_backend), (2, 10));
        drop(c);
        old.drain(Some(Duration::from_secs(5))).await;
        drop(old);
        assert_eq!(new.stats().bytes_to_client, 10);
        assert_eq!(new.stats().active, 0);
    })
    .await
    .unwrap();
}

/// A queued connection that gives up (queue timeout) at the front leaves without taking the
/// turn of those behind it: once the slot frees they are served, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_queue_waiter_that_times_out_passes_its_turn_on() {
    tokio::time::timeout(TEST_BOUND, async {
        const QUEUE_TIMEOUT: Duration = Duration::from_secs(4);
        let (backend, mut arrivals) = gated_backend().await;
        let (a, b) = proxies_sharing(&backend, 1, QUEUE_TIMEOUT);
        let (a_addr, b_addr) = (a.local_addrs()[0], b.local_addrs()[0]);
        let holder = gated_client(b_addr, 0);
        let (id, release) = next_arrival(&mut arrivals).await;
        assert_eq!(id, 0);
        let quitter = gated_client(a_addr, 1);
        eventually("client 1 queued", || a.stats().queued == 1).await;
        // Half the queue timeout later, so 1's deadline comes well before 2's and 3's.
        tokio::time::sleep(QUEUE_TIMEOUT / 2).await;
        let second = gated_client(a_addr, 2);
        eventually("client 2 queued", || a.stats().queued == 2).await;
        let third = gated_client(a_addr, 3);
        eventually("client 3 queued", || a.stats().queued == 3).await;
        eventually("client 1 gave up", || a.stats().queue_refused == 1).await;
        let r = quitter.await.unwrap();
        assert!(matches!(r.as_deref(), Ok(b"") | Err(_)), "{r:?}");

        release.send(()).unwrap();
        for expected in 2..=3u8 {
            let (id, release) = next_arrival(&mut arrivals).await;
            assert_eq!(id, expected);
            release.send(()).unwrap();
        }
        assert_eq!(holder.await.unwrap().unwrap(), [0]);
        assert_eq!(second.await.unwrap().unwrap(), [2]);
        assert_eq!(third.await.unwrap().unwrap(), [3]);
        let st = a.stats();
        assert_eq!(
            (st.queued, st.queue_refused, st.failed),
            (3, 1, 1),
            "{st:?}"
        );
    })
    .await
    .unwrap();
}

/// Two slots free at once (wake-ups coalesce at the front waiter): the front waiter takes
/// one and, leaving, hands the turn on, so the next takes the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxconn_queue_two_slots_freed_at_once_serve_two_waiters() {
    tokio::time::timeout(TEST_BOUND, async {
        let (backend, mut arrivals) = gated_backend().await;
        // Long queue timeout: a waiter left asleep would fail `next_arrival` (30 s) first.
        let (a, b) = proxies_sharing(&backend, 2, Duration::from_secs(60));
        let (a_addr, b_addr) = (a.local_addrs()[0], b.local_addrs()[0]);
        let holders = [gated_client(b_addr, 0), gated_client(b_addr, 0)];
        let held = [
            next_arrival(&mut arrivals).await,
            next_arrival(&mut arrivals).await,
        ];
        let waiters = [gated_client(a_addr, 1), gated_client(a_addr, 2)];
        eventually("both queued", || a.stats().queued == 2).await;
        for (id, release) in held {
            assert_eq!(id, 0);
            release.send(()).unwrap();
        }
        let served = [
            next_arrival(&mut arrivals).await,
            next_arrival(&mut arrivals).await,
        ];
        let mut ids: Vec<u8> = served.iter().map(|s| s.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
        for (_, release) in served {
            release.send(()).unwrap();
        }
        for c in holders {
            assert_eq!(c.await.unwrap().unwrap(), [0]);
        }
        for (id, c) in waiters.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), [id as u8 + 1]);
        }
        assert_eq!(a.stats().queue_refused, 0);
    })
    .await
    .unwrap();
}

/// Drain: no new connections, established ones finish; at the deadline the rest close.
#[tokio::test]
async fn graceful_drain() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let proxy: Arc<ProxyHandle> =
            Arc::new(TcpProxy::start(config(), pool_of(&[backend.addr])).unwrap());
        let addr = proxy.local_addrs()[0];
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"before").await.unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();

        let p = Arc::clone(&proxy);
        let drain = tokio::spawn(async move { p.drain(Some(Duration::from_secs(30))).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
        // The established connection keeps working during the drain.
        s.write_all(b"during").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"during");
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(drain.await.unwrap(), 0, "finished before the deadline");

        // Deadline: a connection that never finishes is closed.
        let proxy = TcpProxy::start(config(), pool_of(&[backend.addr])).unwrap();
        let mut s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut buf[..1]).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(proxy.drain(Some(Duration::from_millis(300))).await, 1);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest).await;
        assert!(matches!(r, Ok(0) | Err(_)));
        assert_eq!(proxy.stats().shutdown_closed, 1);
    })
    .await
    .unwrap();
}

/// A backend set to drain keeps its connections and gets no new ones.
#[tokio::test]
async fn drained_backend_keeps_connections_gets_no_new_ones() {
    tokio::time::timeout(TEST_BOUND, async {
        let a = echo_backend("127.0.0.1:0").await;
        let b = echo_backend("127.0.0.1:0").await;
        let proxy = TcpProxy::start(config(), pool_of(&[a.addr, b.addr])).unwrap();
        let addr = proxy.local_addrs()[0];
        let mut on_a = TcpStream::connect(addr).await.unwrap(); // round robin: first → a
        on_a.write_all(b"1").await.unwrap();
        let mut buf = [0u8; 1];
        on_a.read_exact(&mut buf).await.unwrap();
        let backends = proxy.pool().backends();
        let stats_a = Arc::clone(backends.get(BackendId(1)).unwrap().stats());
        let stats_b = Arc::clone(backends.get(BackendId(2)).unwrap().stats());
        assert_eq!(stats_a.active(), 1);

        proxy
            .pool()
            .set_admin(
                BackendId(1),
                AdminState::Drain,
                tokio::time::Instant::now().into_std(),
            )
            .unwrap();
        for i in 0..10 {
            assert_eq!(
                ping(addr, format!("{i}").as_bytes()).await.unwrap(),
                format!("{i}").as_bytes()
            );
        }
        assert_eq!(
            stats_a.total(),
            1,
            "no new connection to the drained backend"
        );
        assert_eq!(stats_b.total(), 10);
        on_a.write_all(b"2").await.unwrap();
        on_a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"2", "existing connection continues");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn idle_timeout_closes_silent_connections() {
    let backend = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    // 1 s, with activity every 300 ms: a loaded machine that delays a step by a few
    // hundred ms cannot make the connection look idle.
    cfg.idle_timeout = Some(Duration::from_secs(1));
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let mut s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
    // Activity postpones the timeout (1.2 s of it, longer than the timeout).
    let mut last_write = tokio::time::Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last_write = tokio::time::Instant::now();
        s.write_all(b"k").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
    }
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    // The proxy saw the last byte after we wrote it: its timer cannot have run out before
    // a second from then.
    let waited = last_write.elapsed();
    assert!(waited >= Duration::from_millis(990), "{waited:?}");
    assert_eq!(proxy.stats().idle_timeouts, 1);
}

/// A client draining a large response slowly is not idle, though it sends nothing and the
/// proxy reads nothing new for long stretches (its writes wait for the client): the idle
/// timeout counts a write that progressed after waiting, as HAProxy refreshes its timeouts
/// on a send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_of_a_large_response_is_not_idle() {
    tokio::time::timeout(TEST_BOUND, async {
        for mode in [ForwardMode::Copy, ForwardMode::Splice] {
            // A backend that sends 64 MiB and closes.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let _backend = TestBackend {
                addr,
                task: tokio::spawn(async move {
                    let (mut s, _) = l.accept().await.unwrap();
                    let block = vec![7u8; 1 << 20];
                    for _ in 0..64 {
                        if s.write_all(&block).await.is_err() {
                            return;
                        }
                    }
                }),
            };
            let mut cfg = config();
            cfg.forward_mode = mode;
            cfg.idle_timeout = Some(Duration::from_millis(1500));
            let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
            let mut s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
            // 16 KiB every 50 ms (about 320 KB/s) for 5 s: more than three timeouts long.
            let mut buf = vec![0u8; 16 << 10];
            let mut got = 0;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "{mode:?}: closed after {got} bytes");
                got += n;
            }
            assert_eq!(
                proxy.stats().idle_timeouts,
                0,
                "{mode:?}: cut off after {got} bytes"
            );
            // A reader that stops is cut off a timeout later.
            let stopped = tokio::time::Instant::now();
            eventually("the stalled reader is cut off", || {
                proxy.stats().idle_timeouts == 1
            })
            .await;
            // Measured from after our last read returned, which a loaded machine can delay
            // past the proxy's last write: 400 ms of slack below the 1.5 s timeout.
            let waited = stopped.elapsed();
            assert!(
                waited >= Duration::from_millis(1100),
                "{mode:?}: {waited:?}"
            );
        }
    })
    .await
    .unwrap();
}

/// The same after a pause: a response the client's send buffer took whole, left unread
/// across an idle check (the check took its unacknowledged bytes as the reference), then
/// read, then a second, larger one read slowly. The second is not idle: the reference of the
/// first no longer applies once new bytes are written. It was cut at the next check, its
/// unacknowledged bytes never falling below the first one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_after_a_pause_is_not_idle() {
    tokio::time::timeout(TEST_BOUND, async {
        for mode in [ForwardMode::Copy, ForwardMode::Splice] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (go_tx, go_rx) = oneshot::channel::<()>();
            let _backend = TestBackend {
                addr,
                task: tokio::spawn(async move {
                    let (mut s, _) = l.accept().await.unwrap();
                    if s.write_all(&vec![1u8; 200 << 10]).await.is_err() {
                        return;
                    }
                    if go_rx.await.is_err() {
                        return;
                    }
                    let _ = s.write_all(&vec![2u8; 800 << 10]).await;
                    // Open until the client goes.
                    let _ = s.read(&mut [0u8; 1]).await;
                }),
            };
            let mut cfg = config();
            cfg.forward_mode = mode;
            cfg.idle_timeout = Some(Duration::from_millis(1000));
            // The proxy's send buffer to the client takes either response whole.
            cfg.client_options.sndbuf = BufferSize(Some(1 << 20));
            let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(64 << 10).unwrap();
            let mut s = socket.connect(proxy.local_addrs()[0]).await.unwrap();
            // Unread across one idle check.
            tokio::time::sleep(Duration::from_millis(1300)).await;
            let mut buf = vec![0u8; 64 << 10];
            let mut first = 0;
            while first < 200 << 10 {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "{mode:?}: closed after {first} bytes");
                first += n;
            }
            go_tx.send(()).unwrap();
            // 20 KiB every 100 ms for 3 s: three idle timeouts long, always moving.
            let mut second = 0;
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = s.read(&mut buf[..20 << 10]).await.unwrap();
                assert!(n > 0, "{mode:?}: closed after {second} bytes of the second");
                second += n;
            }
            assert_eq!(
                proxy.stats().idle_timeouts,
                0,
                "{mode:?}: cut off after {second} bytes of the second response"
            );
        }
    })
    .await
    .unwrap();
}

/// An upload the proxy's send buffer took whole, which the backend then takes slowly, is not
/// idle: the proxy writes and reads nothing for long stretches, but the backend keeps
/// acknowledging bytes (IPVS refreshes its timer on every ACK). It was cut at the first
/// idle timeout, the backend never answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_draining_a_buffered_upload_is_not_idle() {
    tokio::time::timeout(TEST_BOUND, async {
        const UPLOAD: usize = 2 << 20;
        // A small receive buffer: the upload waits in the proxy's send buffer, not in the
        // backend's kernel.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(32 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = socket.listen(16).unwrap();
        let addr = l.local_addr().unwrap();
        let _backend = TestBackend {
            addr,
            task: tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                // 32 KiB every 40 ms (about 800 KB/s), then the count.
                let mut buf = vec![0u8; 32 << 10];
                let mut got = 0;
                while got < UPLOAD {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                let _ = s.write_all(got.to_string().as_bytes()).await;
            }),
        };
        let mut cfg = config();
        cfg.idle_timeout = Some(Duration::from_millis(700));
        let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
        let mut s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
        s.write_all(&vec![1u8; UPLOAD]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        assert_eq!(answer, UPLOAD.to_string(), "{:?}", proxy.stats());
        assert_eq!(proxy.stats().idle_timeouts, 0);
    })
    .await
    .unwrap();
}

/// A backend that answers and closes while the client is still uploading (an HTTP 413, say)
/// resets the connection, as it leaves the upload unread. The answer still reaches the
/// client, as on a direct connection: the broken upload ends only its own direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_before_a_reset_reaches_the_uploading_client() {
    tokio::time::timeout(TEST_BOUND, async {
        for mode in [ForwardMode::Copy, ForwardMode::Splice] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let _backend = TestBackend {
                addr,
                task: tokio::spawn(async move {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut head = [0u8; 10];
                    s.read_exact(&mut head).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    s.write_all(&[b'a'; 1000]).await.unwrap();
                    // Closed with the rest of the upload unread: the kernel sends RST.
                }),
            };
            let mut cfg = config();
            cfg.forward_mode = mode;
            let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
            let s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let upload = tokio::spawn(async move {
                let block = vec![b'u'; 64 << 10];
                for _ in 0..1024 {
                    if w.write_all(&block).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while answer.len() < 1000 {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
            upload.abort();
            assert_eq!(answer, vec![b'a'; 1000], "{mode:?}");
        }
    })
    .await
    .unwrap();
}

/// Same, on tokio's paused clock: the 15-minute default happens in no real time.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_timeout_on_paused_clock() {
    let backend = echo_backend("127.0.0.1:0").await;
    let cfg = config(); // idle_timeout default: 900 s
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let mut s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
    s.write_all(b"k").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let r = s.read_to_end(&mut rest).await;
    assert!(matches!(r, Ok(0) | Err(_)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(899), "{waited:?}");
    assert!(waited <= Duration::from_secs(901), "{waited:?}");
    assert_eq!(proxy.stats().idle_timeouts, 1);
}

/// A `Duration::MAX` idle timeout means none, as a very long queue timeout does: the
/// connection forwards; it panicked computing its deadline (`Instant + Duration::MAX`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_max_timeouts_do_not_panic() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let mut cfg = config();
        cfg.idle_timeout = Some(Duration::MAX);
        cfg.queue_timeout = Duration::MAX;
        let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
        assert_eq!(ping(proxy.local_addrs()[0], b"max").await.unwrap(), b"max");
    })
    .await
    .unwrap();
}

/// Reads a PROXY header from a backend connection, then everything else.
async fn backend_reading_proxy_header() -> (SocketAddr, JoinHandle<(Vec<u8>, ProxyHeader, Vec<u8>)>)
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let (h, n) = proxy_protocol::parse(&raw).unwrap().unwrap();
        let payload = raw[n..].to_vec();
        raw.truncate(n);
        (raw, h, payload)
    });
    (addr, task)
}

#[tokio::test]
async fn send_proxy_v1_and_v2() {
    for version in [Version::V1, Version::V2] {
        let (addr, backend) = backend_reading_proxy_header().await;
        let mut cfg = config();
        cfg.send_proxy = Some(version);
        let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
        let mut c = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
        let client_addr = c.local_addr().unwrap();
        c.write_all(b"payload").await.unwrap();
        c.shutdown().await.unwrap();
        let (raw, header, payload) = backend.await.unwrap();
        let expected = ProxyHeader::tcp(client_addr, proxy.local_addrs()[0]);
        assert_eq!(header, expected);
        assert_eq!(raw, expected.to_bytes(version));
        if version == Version::V1 {
            let text = format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                client_addr.port(),
                proxy.local_addrs()[0].port()
            );
            assert_eq!(raw, text.as_bytes(), "golden v1 line");
        } else {
            assert_eq!(
                &raw[..16],
                b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
                "golden v2 preamble"
            );
        }
        assert_eq!(payload, b"payload");
    }
}

/// Behind another LB: the spec's v1 example arrives from the client and is passed on as v2
/// with the same addresses; payload in the same segment is not lost.
#[tokio::test]
async fn accept_proxy_passes_the_original_client_on() {
    let (addr, backend) = backend_reading_proxy_header().await;
    let mut cfg = config();
    cfg.accept_proxy = Some(AcceptProxy::default());
    cfg.send_proxy = Some(Version::V2);
    let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
    let mut c = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
    c.write_all(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let (raw, header, payload) = backend.await.unwrap();
    assert_eq!(
        raw,
        [
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
            0x00, 0x0c, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0x0b, 0xdc, 0x04, 0x01, 0xbb
        ]
    );
    assert_eq!(
        header,
        ProxyHeader::tcp(
            "192.168.0.1:56324".parse().unwrap(),
            "192.168.0.11:443".parse().unwrap()
        )
    );
    assert_eq!(payload, b"GET / HTTP/1.0\r\n\r\n");
}

#[tokio::test]
async fn accept_proxy_malformed_or_missing_header_closes_and_counts() {
    let backend = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    cfg.accept_proxy = Some(AcceptProxy {
        header_timeout: Duration::from_millis(200),
    });
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let addr = proxy.local_addrs()[0];
    // Malformed.
    let r = ping(addr, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\nhello").await;
    assert!(matches!(r.as_deref(), Ok(b"") | Err(_)), "{r:?}");
    // Missing: nothing sent within the header timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    // Not a PROXY header at all.
    let r = ping(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(matches!(r.as_deref(), Ok(b"") | Err(_)), "{r:?}");
    let st = proxy.stats();
    assert_eq!(st.proxy_header_errors, 3, "{st:?}");
    assert_eq!(st.connected, 0, "no backend connection for a bad header");
    // A good header still works.
    assert_eq!(ping(addr, b"PROXY UNKNOWN\r\nok").await.unwrap(), b"ok");
}

/// The seeds' NAT64 case: an IPv6 VIP in front of IPv4 backends (port differs, as in the
/// seed's 80 → 82/83).
#[tokio::test]
async fn ipv6_listener_to_ipv4_backends() {
    let a = echo_backend("127.0.0.1:0").await;
    let b = echo_backend("127.0.0.1:0").await;
    let mut cfg = TcpProxyConfig::new(vec![
        "[::1]:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ]);
    cfg.send_proxy = None;
    let proxy = TcpProxy::start(cfg, pool_of(&[a.addr, b.addr])).unwrap();
    let v6 = proxy.local_addrs()[0];
    let v4 = proxy.local_addrs()[1];
    assert!(v6.is_ipv6() && v4.is_ipv4());
    for i in 0..4 {
        let msg = format!("v6 client {i}");
        assert_eq!(ping(v6, msg.as_bytes()).await.unwrap(), msg.as_bytes());
    }
    assert_eq!(ping(v4, b"v4").await.unwrap(), b"v4");
    let backends = proxy.pool().backends();
    assert_eq!(backends.get(BackendId(1)).unwrap().stats().total(), 3);
    assert_eq!(backends.get(BackendId(2)).unwrap().stats().total(), 2);
}

/// HAProxy `source`: backend connections leave from the configured address.
#[tokio::test]
async fn source_address_and_reuseport_acceptors() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut s, peer) = l.accept().await.unwrap();
        s.write_all(b"hi").await.unwrap();
        peer
    });
    let mut cfg = config();
    cfg.source = Some("127.0.0.2".parse().unwrap());
    cfg.acceptors = 2;
    let proxy = TcpProxy::start(cfg, pool_of(&[addr])).unwrap();
    assert_eq!(proxy.local_addrs().len(), 1);
    let mut c = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).await.unwrap();
    assert_eq!(
        seen.await.unwrap().ip(),
        "127.0.0.2".parse::<std::net::IpAddr>().unwrap()
    );
}

/// Idle connections hold no pipe: pipes are lent only while bytes are in flight. (Default
/// `Auto` mode: this also shows splice-auto switching to pipes for bulk transfers.)
#[cfg(all(target_os = "linux", feature = "splice"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_pipes() {
    let backend = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    cfg.maxpipes = 4;
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let addr = proxy.local_addrs()[0];
    let mut conns = Vec::new();
    // Bulk enough (1 MiB each way) that splice-auto moves to pipes.
    let before = lb_proxy::tcp::spliced_bytes();
    let data = vec![7u8; 1 << 20];
    let mut back = vec![0u8; 1 << 20];
    for _ in 0..50 {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let d = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d).await.unwrap();
            w
        });
        r.read_exact(&mut back).await.unwrap();
        assert!(back == data);
        conns.push((r, writer.await.unwrap()));
    }
    assert!(
        lb_proxy::tcp::spliced_bytes() > before,
        "splice-auto never spliced"
    );
    // 50 connections, 4 pipes at most: all work, nothing is lent while idle.
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(fds < 50 * 4 + 4 * 2 + 64, "{fds} descriptors open");
    drop(conns);
}

/// Counts what the data path reports, as lb-health's passive outlier detection would.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<(u32, lb_proxy::outcome::Outcome)>>);

impl lb_proxy::outcome::OutcomeObserver for Recorder {
    fn observe(&self, backend: &Backend, outcome: &lb_proxy::outcome::Outcome) {
        self.0
            .lock()
            .unwrap()
            .push((backend.id().0, outcome.clone()));
    }
}

/// A backend that answers early and closes while the client still uploads (a 413: its
/// kernel resets, the upload unread) ended the connection as a backend failure, so that
/// clients sending oversized uploads could get a healthy server ejected. The answer still
/// reaches the client; the end is not held against the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_is_not_a_backend_failure() {
    use lb_proxy::outcome::Outcome;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 10];
                if s.read_exact(&mut head).await.is_ok() {
                    let _ = s.write_all(b"413 too large").await;
                }
                // Closed with the rest of the upload unread: the kernel resets.
            });
        }
    });
    let rec = Arc::new(Recorder::default());
    let proxy = TcpProxy::start_with_observer(config(), pool_of(&[backend]), rec.clone()).unwrap();
    let mut c = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
    let (mut r, mut w) = c.split();
    let upload = async {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    let answer = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        // Until EOF or a reset, bounded.
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    let ((), got) = tokio::join!(upload, answer);
    assert_eq!(got, b"413 too large");
    // The connection's end is reported once its task ends.
    let mut closed = None;
    for _ in 0..250 {
        closed = rec.0.lock().unwrap().iter().find_map(|(_, o)| match o {
            Outcome::Closed { backend_error, .. } => Some(*backend_error),
            _ => None,
        });
        if closed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closed, Some(false), "{:?}", rec.0.lock().unwrap());
    proxy.stop().await;
}

#[tokio::test]
async fn outcomes_reach_the_observer() {
    use lb_proxy::outcome::Outcome;
    let good = echo_backend("127.0.0.1:0").await;
    let dead_addr = lb_testkit::ports::dead_addr();
    let rec = Arc::new(Recorder::default());
    let proxy =
        TcpProxy::start_with_observer(config(), pool_of(&[dead_addr, good.addr]), rec.clone())
            .unwrap();
    // Round robin starts at the dead backend: refused, redispatched to the good one.
    assert_eq!(ping(proxy.local_addrs()[0], b"hi").await.unwrap(), b"hi");
    proxy.stop().await;
    let seen = rec.0.lock().unwrap().clone();
    assert!(matches!(seen[0], (1, Outcome::ConnectRefused)), "{seen:?}");
    // The connect, then the connection's final result.
    assert!(
        matches!(seen[1], (2, Outcome::Connected { .. })),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], (2, Outcome::Closed { stats, backend_error: false })
            if stats.client_to_backend == 2 && stats.backend_to_client == 2),
        "{seen:?}"
    );
    assert!(seen[0].1.is_failure() && !seen[1].1.is_failure());
}

/// Frontend `maxconn`: at the limit the proxy stops accepting; the kernel backlog holds the
/// next client until a slot frees, and nothing is lost.
#[tokio::test]
async fn listener_connection_limit() {
    let backend = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    cfg.maxconn = 2;
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let addr = proxy.local_addrs()[0];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        held.push(s);
    }
    let third = tokio::spawn(ping(addr, b"third"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished(), "served beyond maxconn");
    assert_eq!(proxy.stats().accepted, 2);
    assert_eq!(proxy.active(), 2);
    drop(held.pop());
    let reply = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"third");
}

/// Frontend `maxconn` over two listeners: an idle listener holds no slot, so with one of
/// two slots used a second client of the other listener is served (it waited for ever
/// when each listener reserved a slot before accepting).
#[tokio::test]
async fn listener_connection_limit_is_shared_by_the_listeners() {
    let backend = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    cfg.listen = vec![
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ];
    cfg.maxconn = 2;
    let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
    let addr = proxy.local_addrs()[0];
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(2), ping(addr, b"second")).await;
    assert_eq!(
        second.ok().and_then(Result::ok).as_deref(),
        Some(&b"second"[..]),
        "one slot of two is free"
    );
    // At the limit, a client of either listener waits for a freed slot.
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"x").await.unwrap();
    held.read_exact(&mut b).await.unwrap();
    let other = proxy.local_addrs()[1];
    let third = tokio::spawn(ping(other, b"third"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished(), "served beyond maxconn");
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"third");
}

/// Retries on the backend that just refused come min(`timeout connect`, 1 s) apart,
/// HAProxy's turn-around timer, not all within a millisecond: without `redispatch`, and
/// with it (the default) when it is the only backend. The client is closed after the last
/// one; the retries are counted.
#[tokio::test]
async fn retries_on_the_same_backend_wait_the_turn_around_time() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for redispatch in [false, true] {
        let mut cfg = config();
        cfg.redispatch = redispatch;
        cfg.retries = 2;
        cfg.connect_timeout = Duration::from_millis(200);
        let proxy = TcpProxy::start(cfg, pool_of(&[dead])).unwrap();
        let addr = proxy.local_addrs()[0];
        let started = tokio::time::Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(10), ping(addr, b"x"))
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(out.map_or(true, |b| b.is_empty()), "nothing forwarded");
        assert!(
            took >= Duration::from_millis(400),
            "redispatch {redispatch}: two waits of 200 ms: {took:?}"
        );
        assert_eq!(proxy.stats().retries, 2);
        assert_eq!(proxy.stats().connect_failures, 3);
    }
}

/// A per-backend `maxconn` (HAProxy `server … maxconn 1`): the full backend is skipped, the
/// others take the load.
#[tokio::test]
async fn per_backend_maxconn_sends_to_the_others() {
    let a = echo_backend("127.0.0.1:0").await;
    let b = echo_backend("127.0.0.1:0").await;
    let mut cfg = config();
    cfg.backend_maxconn_by_id = vec![(BackendId(1), 1)];
    let proxy = TcpProxy::start(cfg, pool_of(&[a.addr, b.addr])).unwrap();
    let addr = proxy.local_addrs()[0];
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await.unwrap();
        held.push(s);
    }
    let backends = proxy.pool().backends();
    assert_eq!(backends.get(BackendId(1)).unwrap().stats().active(), 1);
    assert_eq!(backends.get(BackendId(2)).unwrap().stats().active(), 3);
    assert_eq!(proxy.stats().queued, 0);
}

/// A retry must not wait in the `maxconn` queue when the only backends with a free slot are
/// ones that already failed for it: the busy backend's only slot is held, the other backend
/// times out once, then comes back. The connection is served by it at the next retry,
/// without queueing (with a queue timeout of a minute, waiting would fail the bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_tries_a_failed_backend_again_rather_than_queue_for_a_full_one() {
    tokio::time::timeout(TEST_BOUND, async {
        let (hole, _fill, hole_addr) = blackhole();
        let busy = echo_backend("127.0.0.1:0").await;
        let mut cfg = config();
        cfg.connect_timeout = Duration::from_millis(300);
        cfg.retries = 20;
        cfg.backend_maxconn = Some(1);
        cfg.queue_timeout = Duration::from_secs(60);
        let proxy = TcpProxy::start(cfg, pool_of(&[hole_addr, busy.addr])).unwrap();
        let addr = proxy.local_addrs()[0];
        // Reaches `busy` (at once, or after the blackhole timed out) and keeps its only slot.
        let mut holder = TcpStream::connect(addr).await.unwrap();
        holder.write_all(b"h").await.unwrap();
        let mut b = [0u8; 1];
        holder.read_exact(&mut b).await.unwrap();
        let backends = proxy.pool().backends();
        assert_eq!(backends.get(BackendId(2)).unwrap().stats().active(), 1);
        let failures_before = proxy.stats().connect_failures;

        let client = tokio::spawn(ping(addr, b"served"));
        eventually("the client's connect to the blackhole failed", || {
            proxy.stats().connect_failures > failures_before
        })
        .await;
        let _back = open_blackhole(hole);
        let reply = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .unwrap_or_else(|_| panic!("still waiting for the full backend: {:?}", proxy.stats()))
            .unwrap()
            .unwrap();
        assert_eq!(reply, b"served");
        let st = proxy.stats();
        assert_eq!(
            (st.queued, st.queue_refused, st.failed),
            (0, 0, 0),
            "{st:?}"
        );
        drop(holder);
    })
    .await
    .unwrap();
}

/// A `source` address that cannot be bound (IPv6 for an IPv4 backend) is this host's error:
/// the client is closed, but the backend is not blamed (no failure recorded, nothing
/// reported to passive health, no retries as for a backend failure).
#[tokio::test]
async fn unbindable_source_is_not_blamed_on_the_backend() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let rec = Arc::new(Recorder::default());
        let mut cfg = config();
        cfg.source = Some("::1".parse().unwrap());
        let proxy =
            TcpProxy::start_with_observer(cfg, pool_of(&[backend.addr]), rec.clone()).unwrap();
        let r = ping(proxy.local_addrs()[0], b"x").await;
        assert!(matches!(r.as_deref(), Ok(b"") | Err(_)), "{r:?}");
        let st = proxy.stats();
        assert_eq!(
            (st.failed, st.connect_failures, st.retries, st.connected),
            (1, 0, 0, 0),
            "{st:?}"
        );
        let backends = proxy.pool().backends();
        assert_eq!(backends.get(BackendId(1)).unwrap().stats().failures(), 0);
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "{:?}",
            rec.0.lock().unwrap()
        );
    })
    .await
    .unwrap();
}

/// An idle proxy has no connections: its accept loops (two addresses, two acceptors each)
/// hold `maxconn` slots but are not connections, and draining it closes none.
#[tokio::test]
async fn idle_proxy_reports_no_connections_and_drains_none() {
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let mut cfg = TcpProxyConfig::new(vec![
            "127.0.0.1:0".parse().unwrap(),
            "[::1]:0".parse().unwrap(),
        ]);
        cfg.acceptors = 2;
        let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
        // Through every address, so the accept loops have run and taken their slots.
        for addr in proxy.local_addrs().to_vec() {
            assert_eq!(ping(addr, b"warm").await.unwrap(), b"warm");
        }
        let mut held = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
        held.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        held.read_exact(&mut b).await.unwrap();
        assert_eq!(proxy.active(), 1, "one connection open");
        drop(held);
        eventually("connections closed", || proxy.stats().active == 0).await;
        assert_eq!(proxy.active(), 0, "idle");
        assert_eq!(
            proxy.drain(Some(Duration::ZERO)).await,
            0,
            "nothing to close"
        );
        assert_eq!(proxy.stats().shutdown_closed, 0);
    })
    .await
    .unwrap();
}

/// HAProxy `busy-polling`: the runtime polls with a zero timeout while a connection is open
/// (the spinner's turns climb) and goes back to sleeping once the last one closes (they
/// stop); bytes pass intact meanwhile, spliced.
#[tokio::test(flavor = "current_thread")]
async fn busy_polling_spins_only_while_connections_are_open() {
    use lb_proxy::busy_poll::BusyPolling;
    tokio::time::timeout(TEST_BOUND, async {
        let backend = echo_backend("127.0.0.1:0").await;
        let busy = BusyPolling::new();
        let mut cfg = config();
        cfg.busy_polling = Some(busy.clone());
        cfg.forward_mode = ForwardMode::Splice;
        let proxy = TcpProxy::start(cfg, pool_of(&[backend.addr])).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(busy.spins(), 0, "no connection yet: the loop sleeps");

        let s = TcpStream::connect(proxy.local_addrs()[0]).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let payload: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w
        });
        let mut echoed = vec![0u8; payload.len()];
        r.read_exact(&mut echoed).await.unwrap();
        assert!(echoed == payload, "4 MiB echoed intact");
        let w = writer.await.unwrap();
        assert_eq!(busy.holders(), 1);
        let before = busy.spins();
        eventually("the loop spins while the connection is open", || {
            busy.spins() > before + 100
        })
        .await;

        drop((r, w));
        eventually("connection closed", || proxy.active() == 0).await;
        assert_eq!(busy.holders(), 0);
        // One turn for the spinner to see it; from then on it is gone.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stopped = busy.spins();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(busy.spins(), stopped, "no connection: no spinning");
        assert!(proxy.stats().bytes_spliced > 0);
        proxy.stop().await;
    })
    .await
    .unwrap();
}

/// A backend that writes `name` to every connection, then waits for the client to close.
async fn named_backend(name: &'static str) -> TestBackend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            conns.spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    TestBackend { addr, task }
}

/// keepalived `persistence_timeout` as IPVS keeps it: a client's entry does not expire
/// while its connection is open, and times out that long after the connection ends, even
/// when nothing else used the pool meanwhile. A connection held past the timeout, then
/// closed, is followed by one that lands on the same backend. Before, the entry expired
/// the timeout after the pick (round robin then moved the client); with the entry held but
/// its end stamped with the pool's last clock reading, it expired at once just the same.
#[tokio::test]
async fn persistence_outlives_a_long_connection() {
    tokio::time::timeout(TEST_BOUND, async {
        let (a, b) = (named_backend("a").await, named_backend("b").await);
        let set = BackendSet::new(vec![
            Backend::new(BackendId(1), a.addr),
            Backend::new(BackendId(2), b.addr),
        ])
        .unwrap();
        let pool = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(1)),
            ..PoolConfig::default()
        };
        let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, pool).unwrap());
        let proxy = TcpProxy::start(config(), pool).unwrap();
        let addr = proxy.local_addrs()[0];
        async fn name(s: &mut TcpStream) -> u8 {
            let mut buf = [0u8; 1];
            s.read_exact(&mut buf).await.unwrap();
            buf[0]
        }
        let mut first = TcpStream::connect(addr).await.unwrap();
        let on = name(&mut first).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(first);
        // The proxy sees the close and ends the connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(name(&mut second).await, on, "the client moved");
        drop(second);
        drop((a, b));
    })
    .await
    .unwrap();
}

/// A connection log sink that keeps HAProxy tcplog lines.
#[derive(Debug, Default)]
struct TcpLines(std::sync::Mutex<Vec<String>>);

impl lb_proxy::log::TcpLog for TcpLines {
    fn log(&self, entry: &lb_proxy::log::TcpLogEntry<'_>) {
        let mut line = String::new();
        entry.write_tcplog(&mut line);
        self.0.lock().unwrap().push(line);
    }
}

impl TcpLines {
    /// The `n`-th line (the entry is written as the connection's task ends, just after the
    /// client saw the close): waits 5 s at most.
    async fn nth(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            if let Some(l) = self.0.lock().unwrap().get(n) {
                let (_, rest) = l.split_once("] ").unwrap();
                return rest.split(' ').map(str::to_owned).collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no line {n}: {:?}", self.0.lock().unwrap());
    }
}

/// HAProxy `option tcplog`: one line per connection as it ends — the backend that took it,
/// Tw/Tc/Tt, bytes each way, the termination state (two letters, as HAProxy's TCP logs)
/// and retries — for a clean exchange, a refused connect retried on another backend, no
/// backend reachable (`SC`), the idle timeout (`cD`) and a client gone before its PROXY
/// header (`CR`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_log_writes_one_line_per_connection() {
    tokio::time::timeout(TEST_BOUND, async {
        let live = echo_backend("127.0.0.1:0").await;
        let dead = tokio::net::TcpSocket::new_v4().unwrap();
        dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let dead_addr = dead.local_addr().unwrap();
        let lines = Arc::new(TcpLines::default());
        let mut cfg = config();
        cfg.name = "echo".into();
        cfg.idle_timeout = Some(Duration::from_millis(300));
        cfg.log = Some(Arc::clone(&lines) as Arc<dyn lb_proxy::log::TcpLog>);
        let pool = pool_of(&[live.addr, dead_addr]);
        let proxy = TcpProxy::start(cfg, Arc::clone(&pool)).unwrap();
        let vip = proxy.local_addrs()[0];

        assert_eq!(ping(vip, b"hello").await.unwrap(), b"hello");
        let f = lines.nth(0).await;
        assert_eq!(f[0], "echo");
        assert_eq!(f[1], format!("echo/{}", live.addr));
        assert_eq!(
            (&f[3][..], &f[4][..], &f[5][..], &f[6][..]),
            ("5", "--", "0", "5"),
            "{f:?}"
        );
        let t: Vec<i64> = f[2].split('/').map(|x| x.parse().unwrap()).collect();
        assert!(
            t.len() == 3 && t[0] >= 0 && t[1] >= 0 && t[2] >= t[1],
            "{f:?}"
        );

        // Round robin picks the refusing backend next: retried on the live one.
        assert_eq!(ping(vip, b"again").await.unwrap(), b"again");
        let f = lines.nth(1).await;
        assert_eq!(
            (&f[1][..], &f[4][..], &f[5][..]),
            (&format!("echo/{}", live.addr)[..], "--", "1"),
            "{f:?}"
        );

        // Only the refusing backend left: no backend reachable.
        pool.set_health(
            BackendId(1),
            lb_core::Health::Down,
            tokio::time::Instant::now().into_std(),
        )
        .unwrap();
        let _ = ping(vip, b"x").await;
        let f = lines.nth(2).await;
        assert_eq!(
            (&f[1][..], &f[3][..], &f[4][..], &f[5][..]),
            (&format!("echo/{dead_addr}")[..], "0", "SC", "3"),
            "{f:?}"
        );
        assert_eq!(f[2].split('/').nth(1), Some("-1"), "{f:?}");

        // A connection that sends nothing: the idle timeout.
        pool.set_health(
            BackendId(1),
            lb_core::Health::Up,
            tokio::time::Instant::now().into_std(),
        )
        .unwrap();
        let mut quiet = TcpStream::connect(vip).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), quiet.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
        let f = lines.nth(3).await;
        assert_eq!(&f[4], "cD", "{f:?}");
        // Behind another balancer: a client (a health checker) gone before its PROXY
        // header.
        let lines2 = Arc::new(TcpLines::default());
        let mut cfg = config();
        cfg.accept_proxy = Some(AcceptProxy::default());
        cfg.log = Some(Arc::clone(&lines2) as Arc<dyn lb_proxy::log::TcpLog>);
        let behind = TcpProxy::start(cfg, pool_of(&[live.addr])).unwrap();
        drop(TcpStream::connect(behind.local_addrs()[0]).await.unwrap());
        let f = lines2.nth(0).await;
        assert_eq!(
            (&f[0][..], &f[1][..], &f[4][..]),
            ("-", "-/<NOSRV>", "CR"),
            "{f:?}"
        );
        behind.stop().await;
        drop(dead);
        proxy.stop().await;
    })
    .await
    .unwrap();
}
