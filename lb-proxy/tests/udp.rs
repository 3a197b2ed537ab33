//! UDP session tests against real UDP servers on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::outcome::{Outcome, OutcomeObserver};
use lb_proxy::udp::{UdpHandle, UdpProxy, UdpProxyConfig};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

struct TestBackend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Replies `<tag>|<datagram>` to the sender.
async fn tagged_echo(tag: &'static str) -> TestBackend {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = format!("{tag}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    TestBackend { addr, task }
}

fn start(cfg: UdpProxyConfig, backends: &[SocketAddr]) -> UdpHandle {
    let set = BackendSet::new(
        backends
            .iter()
            .enumerate()
            .map(|(i, a)| Backend::new(BackendId(i as u32 + 1), *a))
            .collect(),
    )
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    UdpProxy::start(cfg, pool).unwrap()
}

/// 40 clients × 25 datagrams at once: every reply reaches the client that asked, and each
/// client stays on one backend (its session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_the_right_clients_under_concurrency() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let a = tagged_echo("a").await;
        let b = tagged_echo("b").await;
        let c = tagged_echo("c").await;
        let proxy = start(
            UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]),
            &[a.addr, b.addr, c.addr],
        );
        let vip = proxy.local_addrs()[0];
        let mut js = tokio::task::JoinSet::new();
        for client in 0..40 {
            js.spawn(async move {
                let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let mut tag: Option<String> = None;
                let mut buf = [0u8; 2048];
                for i in 0..25 {
                    let msg = format!("client {client} msg {i}");
                    // UDP may drop: resend until this exact reply arrives (bounded).
                    let mut ok = false;
                    for _attempt in 0..20 {
                        s.send_to(msg.as_bytes(), vip).await.unwrap();
                        let Ok(Ok((n, from))) =
                            tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf))
                                .await
                        else {
                            continue;
                        };
                        assert_eq!(from, vip, "replies come from the VIP");
                        let text = std::str::from_utf8(&buf[..n]).unwrap();
                        let (t, body) = text.split_once('|').unwrap();
                        assert!(
                            body.starts_with(&format!("client {client} ")),
                            "{text} reached client {client}"
                        );
                        if body != msg {
                            continue; // a late duplicate of an earlier resend
                        }
                        match &tag {
                            None => tag = Some(t.to_owned()),
                            Some(prev) => assert_eq!(prev, t, "client {client} changed backend"),
                        }
                        ok = true;
                        break;
                    }
                    assert!(ok, "client {client} got no reply to {i}");
                }
                tag.unwrap()
            });
        }
        let mut per_backend = std::collections::HashMap::<String, usize>::new();
        while let Some(tag) = js.join_next().await {
            *per_backend.entry(tag.unwrap()).or_default() += 1;
        }
        assert_eq!(
            per_backend.len(),
            3,
            "sessions spread over all backends: {per_backend:?}"
        );
        assert_eq!(proxy.sessions(), 40);
        assert_eq!(proxy.stats().accepted, 40);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sessions_expire_and_table_is_bounded() {
    let a = tagged_echo("a").await;
    let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    // 1 s: the first sessions must outlive the refusal checks on a loaded machine.
    cfg.idle_timeout = Duration::from_secs(1);
    cfg.max_sessions = 2;
    let proxy = start(cfg, &[a.addr]);
    let vip = proxy.local_addrs()[0];
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut buf = [0u8; 64];
    for s in &clients[..2] {
        s.send_to(b"hi", vip).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"a|hi");
    }
    // Table full: the third client's datagram is dropped and counted.
    clients[2].send_to(b"hi", vip).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), clients[2].recv_from(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(proxy.stats().sessions_refused, 1);
    // After the idle timeout the sessions are gone and the third client gets in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while proxy.sessions() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.stats().idle_timeouts, 2);
    clients[2].send_to(b"hi", vip).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), clients[2].recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"a|hi");
}

#[tokio::test]
async fn ipv6_clients_to_ipv4_backend() {
    let a = tagged_echo("a").await;
    let proxy = start(
        UdpProxyConfig::new(vec!["[::1]:0".parse().unwrap()]),
        &[a.addr],
    );
    let s = UdpSocket::bind("[::1]:0").await.unwrap();
    s.send_to(b"six", proxy.local_addrs()[0]).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"a|six"[..], proxy.local_addrs()[0]));
}

#[tokio::test]
async fn drain_keeps_sessions_refuses_new_clients() {
    let a = tagged_echo("a").await;
    let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    // 1 s: the old session must outlive the steps below on a loaded machine.
    cfg.idle_timeout = Duration::from_secs(1);
    let proxy = Arc::new(start(cfg, &[a.addr]));
    let vip = proxy.local_addrs()[0];
    let old = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let new = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 64];
    old.send_to(b"1", vip).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), old.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let p = Arc::clone(&proxy);
    let drain = tokio::spawn(async move { p.drain(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The existing session still works; a new client gets nothing.
    old.send_to(b"2", vip).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), old.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"a|2");
    new.send_to(b"x", vip).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), new.recv_from(&mut buf))
            .await
            .is_err()
    );
    // The old session idles out and the drain finishes well before its deadline.
    let left = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(proxy.stats().sessions_refused, 1);
}

/// A backend that dies silently (no ICMP error: a powered-off host, a blackhole) and is
/// then found down by the health checks loses its flows at their next datagram: a client
/// that keeps sending moves to a live backend instead of staying pinned for good (Envoy's
/// UDP proxy moves sessions off unhealthy hosts). A drained backend keeps its flows.
#[tokio::test]
async fn a_flow_leaves_a_backend_found_down() {
    // Reads nothing, answers nothing, never refuses: a silent dead backend.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let live = tagged_echo("live").await;
    let (proxy, pool, _) = start_observed(
        UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]),
        &[dead.local_addr().unwrap(), live.addr],
        PoolConfig::default(),
    );
    let vip = proxy.local_addrs()[0];
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        ask(&c, vip, "1").await,
        None,
        "round robin: first to the dead one"
    );
    pool.set_health(
        BackendId(1),
        lb_core::Health::Down,
        tokio::time::Instant::now().into_std(),
    )
    .unwrap();
    assert_eq!(ask(&c, vip, "2").await.as_deref(), Some("live|2"));
    assert_eq!(proxy.sessions(), 1, "the dead backend's session ended");

    // With no healthy backend to move to, a flow stays where it is: not dropped, and not
    // moved at every datagram under panic routing (which picks down backends too).
    let (proxy2, pool2, _) = start_observed(
        UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]),
        &[live.addr, tagged_echo("other").await.addr],
        PoolConfig {
            panic_threshold: 50,
            ..PoolConfig::default()
        },
    );
    let vip2 = proxy2.local_addrs()[0];
    let c3 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&c3, vip2, "5").await.as_deref(), Some("live|5"));
    for id in [1, 2] {
        pool2
            .set_health(
                BackendId(id),
                lb_core::Health::Down,
                tokio::time::Instant::now().into_std(),
            )
            .unwrap();
    }
    for i in 6..10 {
        assert_eq!(
            ask(&c3, vip2, &i.to_string()).await,
            Some(format!("live|{i}"))
        );
    }
    assert_eq!(proxy2.stats().accepted, 1, "one session all along");

    // Drained: existing flows stay (another client, on the live backend).
    let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&c2, vip, "3").await.as_deref(), Some("live|3"));
    pool.set_admin(
        BackendId(2),
        lb_core::AdminState::Drain,
        tokio::time::Instant::now().into_std(),
    )
    .unwrap();
    assert_eq!(ask(&c2, vip, "4").await.as_deref(), Some("live|4"));
    // A drain with no deadline (`Duration::MAX`) waits for the sessions to end; it
    // panicked adding the deadline to the clock.
    let p = Arc::new(proxy);
    let d = Arc::clone(&p);
    let drain = tokio::spawn(async move { d.drain(Duration::MAX).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!drain.is_finished());
    drop(dead);
}

/// Datagrams longer than `max_datagram` are dropped and counted, from clients and from
/// backends alike: they were forwarded cut to `max_datagram` bytes (a cut DNS or QUIC
/// packet passed on as a whole one).
#[tokio::test]
async fn datagrams_longer_than_max_datagram_are_dropped_not_cut() {
    let a = tagged_echo("a").await;
    let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.max_datagram = 100;
    let proxy = start(cfg, &[a.addr]);
    let vip = proxy.local_addrs()[0];
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let text = |n: usize| "x".repeat(n);
    // 98 bytes out, 100 back ("a|" in front): both fit.
    assert_eq!(
        ask(&c, vip, &text(98)).await,
        Some(format!("a|{}", text(98)))
    );
    // 99 out fits, its 101-byte reply does not.
    assert_eq!(ask(&c, vip, &text(99)).await, None);
    // 200 out does not.
    assert_eq!(ask(&c, vip, &text(200)).await, None);
    assert_eq!(proxy.stats().datagrams_too_long, 2);
    assert_eq!(ask(&c, vip, "ok").await.as_deref(), Some("a|ok"));
}

/// A round-robin pool of backends 1 at `a` and 2 at `b`, with 2 down unless `b_up`.
fn pool_of_two(a: SocketAddr, b: SocketAddr, b_up: bool) -> Arc<Pool> {
    let set = BackendSet::new(vec![
        Backend::new(BackendId(1), a),
        Backend::new(BackendId(2), b),
    ])
    .unwrap();
    let p = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    if !b_up {
        let now = tokio::time::Instant::now().into_std();
        p.set_health(BackendId(2), lb_core::Health::Down, now)
            .unwrap();
    }
    p
}

/// The listening socket a reload hands from proxy to proxy (bound as `cfg` says), and its
/// address: each proxy starts on a duplicate of it.
fn handover_socket(cfg: &UdpProxyConfig) -> (SocketAddr, std::net::UdpSocket) {
    let socket = lb_proxy::listener::bind_udp(cfg.listen[0], &cfg.listen_options).unwrap();
    let vip = socket.local_addr().unwrap();
    (vip, socket.into_std().unwrap())
}

/// A proxy started as a reload starts one: on a duplicate of the handed-over `socket`.
fn start_on_dup(cfg: UdpProxyConfig, pool: Arc<Pool>, socket: &std::net::UdpSocket) -> UdpHandle {
    let dup = UdpSocket::from_std(socket.try_clone().unwrap()).unwrap();
    let noop = Arc::new(lb_proxy::outcome::NoopObserver);
    UdpProxy::start_on(cfg, pool, noop, vec![dup]).unwrap()
}

/// A replacement started with the flows of the proxy it replaces keeps each client on its
/// backend: a reload restarting the virtual server moved them (the new proxy's round robin
/// gave clients asking in another order each other's backends). A carried flow whose
/// backend is no longer eligible is scheduled afresh.
#[tokio::test]
async fn carried_flows_keep_their_backends_across_a_handover() {
    let a = tagged_echo("a").await;
    let b = tagged_echo("b").await;
    let pool = |b_up: bool| pool_of_two(a.addr, b.addr, b_up);
    let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    let (vip, socket) = handover_socket(&cfg);
    let start = |flows: Vec<lb_proxy::udp::CarriedFlow>, b_up: bool| {
        let mut cfg = cfg.clone();
        cfg.carried_flows = flows;
        start_on_dup(cfg, pool(b_up), &socket)
    };
    let old = start(Vec::new(), true);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut before = Vec::new();
    for c in &clients {
        before.push(ask(c, vip, "1").await.unwrap()[..1].to_owned());
    }
    assert_eq!(before, ["a", "b", "a", "b"]);

    // Asked in reverse order: fresh picks would give client 3 "a", client 2 "b", ….
    let new = start(old.flows(), true);
    old.stop_receiving();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut after = Vec::new();
    for c in clients.iter().rev() {
        after.push(ask(c, vip, "2").await.unwrap()[..1].to_owned());
    }
    after.reverse();
    assert_eq!(after, before, "each flow kept its backend");
    assert_eq!(new.sessions(), 4);

    // Again, into a replacement where b is down: b's flows move to a.
    let third = start(new.flows(), false);
    new.stop_receiving();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for c in &clients {
        assert_eq!(ask(c, vip, "3").await.as_deref(), Some("a|3"));
    }
    assert_eq!(third.sessions(), 4);
}

/// Replies `<tag>|<the sender's address>`: what a backend that knows its peers by address
/// sees.
async fn peer_echo(tag: &'static str) -> TestBackend {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((_, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let _ = s.send_to(format!("{tag}|{from}").as_bytes(), from).await;
        }
    });
    TestBackend { addr, task }
}

/// A replacement given the replaced proxy's sessions (`session_donor`) takes each flow's
/// session over at the flow's next datagram: the backend sees the same source address and
/// port (before, the replacement opened a session socket of its own, and a backend that
/// knows its peers by address saw a new one), the replaced proxy's table empties, and the
/// sessions are not counted as accepted again. A flow whose backend is not eligible in the
/// replacement is scheduled afresh, from a new port.
#[tokio::test]
async fn a_replacement_takes_each_session_over_with_its_source_port() {
    let a = peer_echo("a").await;
    let b = peer_echo("b").await;
    let pool = |b_up: bool| pool_of_two(a.addr, b.addr, b_up);
    let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    let (vip, socket) = handover_socket(&cfg);
    // As lb-node's reload starts a replacement: the old proxy's flows and sessions.
    let start = |old: Option<&UdpHandle>, b_up: bool| {
        let mut cfg = cfg.clone();
        cfg.carried_flows = old.map(UdpHandle::flows).unwrap_or_default();
        cfg.session_donor = old.map(UdpHandle::session_donor);
        let pool = pool(b_up);
        let h = start_on_dup(cfg, Arc::clone(&pool), &socket);
        (h, pool)
    };
    // (active, total) connections of backend `id` in `pool`.
    let counted = |pool: &Pool, id: u32| {
        let b = pool.backends().get(BackendId(id)).unwrap().clone();
        (b.stats().active(), b.stats().total())
    };
    let (old, _) = start(None, true);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut before = Vec::new();
    for c in &clients {
        before.push(ask(c, vip, "1").await.unwrap());
    }
    assert_eq!(
        before.iter().map(|r| &r[..1]).collect::<Vec<_>>(),
        ["a", "b", "a", "b"]
    );
    assert_eq!(old.stats().accepted, 4);

    let (new, new_pool) = start(Some(&old), true);
    old.stop_receiving();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut after = Vec::new();
    for c in clients.iter().rev() {
        after.push(ask(c, vip, "2").await.unwrap());
    }
    after.reverse();
    assert_eq!(
        after, before,
        "each flow kept its backend and its source port"
    );
    assert_eq!((old.sessions(), new.sessions()), (0, 4));
    assert_eq!(new.stats().accepted, 0, "taken over, not opened");
    assert_eq!(new.stats().active, 4);
    // Active here, and counted in the backends' totals once, by the old proxy.
    assert_eq!(counted(&new_pool, 1), (2, 0));
    assert_eq!(counted(&new_pool, 2), (2, 0));

    // Into a replacement where b is down: b's flows move to a, from new ports.
    let (third, third_pool) = start(Some(&new), false);
    new.stop_receiving();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (c, was) in clients.iter().zip(&before) {
        let now = ask(c, vip, "3").await.unwrap();
        if was.starts_with("a|") {
            assert_eq!(&now, was, "a's flows stay as they were");
        } else {
            assert!(now.starts_with("a|"), "{now}");
            assert!(!before.contains(&now), "a fresh session: {now}");
        }
    }
    assert_eq!((new.sessions(), third.sessions()), (0, 4));
    assert_eq!(third.stats().accepted, 2);
    assert_eq!(counted(&third_pool, 1), (4, 2));
}

/// A replacement given a session donor reads the socket they share only once the donor has
/// stopped reading it: while both read, a datagram of a flow the replacement had just taken
/// over could be read by the old proxy, which would open the flow a second session from
/// another source port. Until the old proxy stops, every datagram is the old one's.
#[tokio::test]
async fn a_replacement_reads_the_shared_socket_only_once_its_donor_stopped() {
    let a = peer_echo("a").await;
    let b = peer_echo("b").await;
    let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    let (vip, socket) = handover_socket(&cfg);
    let pool = || pool_of_two(a.addr, b.addr, true);
    let old = start_on_dup(cfg.clone(), pool(), &socket);
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = ask(&first, vip, "1").await.unwrap();

    let mut replacement = cfg.clone();
    replacement.session_donor = Some(old.session_donor());
    let new = start_on_dup(replacement, pool(), &socket);
    // Both running, the old one not told to stop: 20 new flows, each read by the old one.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(ask(&c, vip, "x").await.is_some());
        clients.push(c);
    }
    assert_eq!(old.stats().accepted, 21);
    assert_eq!(new.stats().accepted, 0, "the replacement read nothing yet");
    assert_eq!(new.sessions(), 0);

    // Stopped: from now on the replacement reads, taking each flow's session over.
    old.stop_receiving();
    assert_eq!(
        ask(&first, vip, "2").await.unwrap(),
        before,
        "the first flow kept its backend and source port"
    );
    for c in &clients {
        assert!(ask(c, vip, "y").await.is_some());
    }
    assert_eq!(new.stats().accepted, 0, "taken over, not opened");
    assert_eq!((old.sessions(), new.sessions()), (0, 21));
}

/// Replies `<datagram>` to the sender `delay` after it arrived (a slow backend: its replies
/// are in flight while a handover happens).
async fn delayed_echo(delay: Duration) -> TestBackend {
    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let (s, reply) = (Arc::clone(&s), buf[..n].to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = s.send_to(&reply, from).await;
            });
        }
    });
    TestBackend { addr, task }
}

/// A reload's handover: a second proxy starts on a duplicate of the first one's socket,
/// then the first stops receiving. A client sending all along gets a reply to every
/// datagram: those the first proxy forwarded come back through its sessions, the rest go
/// through the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_to_a_proxy_on_a_duplicate_socket_loses_no_datagram() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let backend = delayed_echo(Duration::from_millis(30)).await;
        let pool = || {
            let set = BackendSet::new(vec![Backend::new(BackendId(1), backend.addr)]).unwrap();
            Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap())
        };
        let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        let (vip, socket) = handover_socket(&cfg);
        let old = start_on_dup(cfg.clone(), pool(), &socket);

        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        client.connect(vip).await.unwrap();
        const N: u32 = 300;
        let receiver = {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let mut got = std::collections::BTreeSet::new();
                let mut buf = [0u8; 64];
                while got.len() < N as usize {
                    match tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf)).await
                    {
                        Ok(Ok(n)) => {
                            let seq: u32 = std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
                            got.insert(seq);
                        }
                        // A refused send (nothing listening) or silence: stop counting.
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                got
            })
        };
        let mut new = None;
        let mut old_forwarded = None;
        for seq in 0..N {
            if seq == N / 2 + 100 {
                // 100 ms after the handover (time for a datagram the old proxy read just
                // before to be forwarded, on a loaded machine) it no longer reads the socket.
                old_forwarded = Some(old.stats().bytes_to_backend);
            }
            if seq == N / 2 {
                new = Some(start_on_dup(cfg.clone(), pool(), &socket));
                old.stop_receiving();
            }
            client.send(seq.to_string().as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = receiver.await.unwrap();
        let missing: Vec<u32> = (0..N).filter(|s| !got.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "no reply to {} datagrams: {missing:?}",
            missing.len()
        );
        let new = new.unwrap();
        assert!(
            old.stats().accepted == 1 && new.stats().accepted == 1,
            "one session each"
        );
        assert_eq!(
            Some(old.stats().bytes_to_backend),
            old_forwarded,
            "the old proxy stopped forwarding after stop_receiving"
        );
        assert!(
            new.stats().bytes_to_backend >= u64::from(N / 2 - 20) * 3,
            "the new proxy forwarded the rest"
        );
        assert!(
            new.stats().bytes_to_client > 0,
            "the new proxy carried the later replies"
        );
        // The old proxy's session ends at the drain deadline; nothing is left open.
        assert_eq!(old.drain(Duration::from_millis(100)).await, 1);
    })
    .await
    .unwrap();
}

/// Records what the data path reports, as lb-health's passive outlier detection would.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<(u32, Outcome)>>);

impl OutcomeObserver for Recorder {
    fn observe(&self, backend: &Backend, outcome: &Outcome) {
        self.0
            .lock()
            .unwrap()
            .push((backend.id().0, outcome.clone()));
    }
}

impl Recorder {
    fn refusals_of(&self, id: u32) -> usize {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(b, o)| *b == id && *o == Outcome::ConnectRefused)
            .count()
    }
}

/// A loopback UDP port with nothing bound to it: datagrams sent there draw ICMP port
/// unreachable.
async fn dead_port() -> SocketAddr {
    lb_testkit::ports::dead_addr()
}

/// A proxy on `backends` (round robin from the first) reporting to a [`Recorder`].
fn start_observed(
    cfg: UdpProxyConfig,
    backends: &[SocketAddr],
    pool_config: PoolConfig,
) -> (UdpHandle, Arc<Pool>, Arc<Recorder>) {
    let set = BackendSet::new(
        backends
            .iter()
            .enumerate()
            .map(|(i, a)| Backend::new(BackendId(i as u32 + 1), *a))
            .collect(),
    )
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, pool_config).unwrap());
    let rec = Arc::new(Recorder::default());
    let proxy = UdpProxy::start_with_observer(cfg, Arc::clone(&pool), rec.clone()).unwrap();
    (proxy, pool, rec)
}

/// Sends `msg` and waits up to 500 ms for a reply; `None` when none came.
async fn ask(client: &UdpSocket, vip: SocketAddr, msg: &str) -> Option<String> {
    client.send_to(msg.as_bytes(), vip).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    assert_eq!(from, vip, "replies come from the VIP");
    Some(String::from_utf8(buf[..n].to_vec()).unwrap())
}

/// The client's first session lands on a dead backend (persistence keeps pointing the client
/// at it, as a hashing scheduler would). The ICMP port unreachable it draws ends that session
/// and is reported; from then on the client is served by the live backend, and not one
/// datagram sent after the refusal was known is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_refusal_moves_the_client_to_a_live_one() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dead = dead_port().await;
        let live = tagged_echo("live").await;
        let pool_config = PoolConfig {
            persistence_timeout: Some(Duration::from_secs(600)),
            ..PoolConfig::default()
        };
        // Round robin starts at the first backend: the dead one.
        let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        let (proxy, pool, rec) = start_observed(cfg, &[dead, live.addr], pool_config);
        let vip = proxy.local_addrs()[0];
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        assert_eq!(
            ask(&client, vip, "0").await,
            None,
            "the dead backend answers nothing"
        );
        for i in 1..=10 {
            let msg = i.to_string();
            assert_eq!(
                ask(&client, vip, &msg).await,
                Some(format!("live|{msg}")),
                "datagram {i} after the refusal; stats {:?}",
                proxy.stats()
            );
        }
        assert!(rec.refusals_of(1) >= 1, "{:?}", rec.0.lock().unwrap());
        assert_eq!(rec.refusals_of(2), 0);
        let backends = pool.backends();
        assert!(backends.get(BackendId(1)).unwrap().stats().failures() >= 1);
        assert_eq!(backends.get(BackendId(2)).unwrap().stats().failures(), 0);
        assert_eq!(proxy.sessions(), 1, "the dead backend's session is gone");
    })
    .await
    .unwrap();
}

/// A backend behind a firewall that rejects with ICMP "administratively prohibited"
/// (firewalld's and RHEL's default `REJECT`; Linux reports it on the session's socket as
/// `EHOSTUNREACH`) counts as refused, as a port unreachable: reported, and the client moves
/// to the live backend. It used to end the session as a success, every datagram lost and
/// the backend never failed. In a namespace of the test's own, with an nftables rule.
#[test]
fn admin_prohibited_counts_as_a_refusal() {
    if !lb_testkit::lab_available() || !lb_testkit::tool_available("nft") {
        return;
    }
    let lab = lb_testkit::Lab::new("lbudr", &[("lb", 1)]).unwrap();
    let dead: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    for args in [
        &["nft", "add", "table", "inet", "t"][..],
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "t",
            "in",
            "{ type filter hook input priority 0; }",
        ],
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "t",
            "in",
            "udp",
            "dport",
            "40001",
            "reject",
            "with",
            "icmp",
            "type",
            "admin-prohibited",
        ],
    ] {
        let out = lab.exec("lb", args).unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let ns = lab.ns("lb").to_owned();
    lb_testkit::in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                let live = tagged_echo("live").await;
                let pool_config = PoolConfig {
                    persistence_timeout: Some(Duration::from_secs(600)),
                    ..PoolConfig::default()
                };
                let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
                let (proxy, pool, rec) = start_observed(cfg, &[dead, live.addr], pool_config);
                let vip = proxy.local_addrs()[0];
                let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                assert_eq!(ask(&client, vip, "0").await, None, "rejected");
                for i in 1..=5 {
                    let msg = i.to_string();
                    assert_eq!(
                        ask(&client, vip, &msg).await,
                        Some(format!("live|{msg}")),
                        "datagram {i} after the refusal; stats {:?}, outcomes {:?}",
                        proxy.stats(),
                        rec.0.lock().unwrap()
                    );
                }
                assert!(rec.refusals_of(1) >= 1, "{:?}", rec.0.lock().unwrap());
                let backends = pool.backends();
                assert!(backends.get(BackendId(1)).unwrap().stats().failures() >= 1);
                assert!(proxy.stats().connect_failures >= 1);
            })
            .await
            .map_err(|_| std::io::Error::other("timed out"))
        })
    })
    .unwrap();
}

/// A backend's ICMP port unreachable is reported to passive health even if the client sends
/// nothing more (the session's reply task notices it), once; the session then carries
/// nothing and goes at the idle timeout.
#[tokio::test]
async fn refusal_is_reported_without_more_client_traffic() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dead = dead_port().await;
        let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        cfg.idle_timeout = Duration::from_millis(300);
        let (proxy, pool, rec) = start_observed(cfg, &[dead], PoolConfig::default());
        let vip = proxy.local_addrs()[0];
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"anyone?", vip).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rec.refusals_of(1) == 0 || proxy.sessions() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "refusal not noticed or session kept: {} sessions, {:?}",
                proxy.sessions(),
                rec.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rec.refusals_of(1), 1, "reported once");
        // The session's opening is not a success (it would end the backend's run of
        // failures), and a refused session's end is not one either.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = rec.0.lock().unwrap().clone();
        assert!(
            matches!(
                &seen[..],
                [(1, Outcome::Connected { .. }), (1, Outcome::ConnectRefused)]
            ),
            "{seen:?}"
        );
        let st = proxy.stats();
        assert_eq!((st.active, st.connect_failures), (0, 1), "{st:?}");
        let backends = pool.backends();
        assert_eq!(backends.get(BackendId(1)).unwrap().stats().failures(), 1);
    })
    .await
    .unwrap();
}

/// A session's opening is reported as `Connected`, and its quiet end (the idle timeout,
/// the backend never refused) as the success: `Closed` without a backend error.
#[tokio::test]
async fn session_end_is_its_final_result() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let a = tagged_echo("a").await;
        let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        cfg.idle_timeout = Duration::from_millis(200);
        let (proxy, _pool, rec) = start_observed(cfg, &[a.addr], PoolConfig::default());
        let vip = proxy.local_addrs()[0];
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(ask(&client, vip, "x").await.as_deref(), Some("a|x"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rec.0.lock().unwrap().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                rec.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = rec.0.lock().unwrap().clone();
        assert!(
            matches!(
                &seen[..],
                [
                    (1, Outcome::Connected { .. }),
                    (
                        1,
                        Outcome::Closed {
                            backend_error: false,
                            ..
                        }
                    )
                ]
            ),
            "{seen:?}"
        );
    })
    .await
    .unwrap();
}

/// One client talking to two listening addresses of one proxy has a session on each, and
/// each reply comes from the address the client wrote to.
#[tokio::test]
async fn sessions_are_per_listening_address() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let a = tagged_echo("a").await;
        let b = tagged_echo("b").await;
        let proxy = start(
            UdpProxyConfig::new(vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ]),
            &[a.addr, b.addr],
        );
        let (vip1, vip2) = (proxy.local_addrs()[0], proxy.local_addrs()[1]);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 64];
        for (vip, msg) in [
            (vip1, "one"),
            (vip2, "two"),
            (vip1, "three"),
            (vip2, "four"),
        ] {
            client.send_to(msg.as_bytes(), vip).await.unwrap();
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
            let reply = std::str::from_utf8(&buf[..n]).unwrap();
            assert_eq!(from, vip, "reply to {msg} came from the other VIP: {reply}");
            assert!(reply.ends_with(&format!("|{msg}")), "{reply}");
        }
        assert_eq!(proxy.sessions(), 2);
        assert_eq!(proxy.stats().accepted, 2);
    })
    .await
    .unwrap();
}

/// HAProxy `busy-polling` for UDP: the runtime polls with a zero timeout while a session is
/// open and stops once it has ended (here by its idle timeout).
#[tokio::test(flavor = "current_thread")]
async fn busy_polling_spins_while_a_session_is_open() {
    use lb_proxy::busy_poll::BusyPolling;
    tokio::time::timeout(Duration::from_secs(60), async {
        let b = tagged_echo("a").await;
        let busy = BusyPolling::new();
        let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        cfg.idle_timeout = Duration::from_millis(300);
        cfg.busy_polling = Some(busy.clone());
        let proxy = start(cfg, &[b.addr]);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hi", proxy.local_addrs()[0]).await.unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"a|hi");
        assert_eq!(busy.holders(), 1, "one session");
        let before = busy.spins();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            busy.spins() > before,
            "not busy polling with a session open"
        );
        while proxy.sessions() > 0 || busy.holders() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stopped = busy.spins();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(busy.spins(), stopped, "session over: no spinning");
    })
    .await
    .unwrap();
}

/// Sends `msg` on `client` (connected to a VIP, so it accepts datagrams from the VIP only)
/// and returns the reply, `None` after 2 s.
async fn ask_connected(client: &UdpSocket, msg: &str) -> Option<String> {
    client.send(msg.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A client socket bound to `from` and connected to `vip`.
async fn connected(from: &str, vip: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(from).await.unwrap();
    s.connect(vip).await.unwrap();
    s
}

/// A listener on `0.0.0.0` serves every local address, and answers from the one each
/// client wrote to (`IP_PKTINFO`): clients connected to 127.0.0.2 and 127.0.0.3 (which
/// accept nothing from 127.0.0.1, where routing would send a plain reply from) get their
/// replies, one session per address. The same through a dual-stack `[::]` listener, IPv4 and
/// IPv6 clients together.
#[tokio::test]
async fn wildcard_listener_replies_from_the_address_the_client_wrote_to() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let a = tagged_echo("a").await;
        for wildcard in ["0.0.0.0:0", "[::]:0"] {
            let proxy = start(
                UdpProxyConfig::new(vec![wildcard.parse().unwrap()]),
                &[a.addr],
            );
            let port = proxy.local_addrs()[0].port();
            let mut clients = Vec::new();
            for vip in ["127.0.0.2", "127.0.0.3"] {
                let vip = SocketAddr::new(vip.parse().unwrap(), port);
                clients.push((vip, connected("127.0.0.1:0", vip).await));
            }
            if wildcard.starts_with('[') {
                let vip = SocketAddr::new("::1".parse().unwrap(), port);
                clients.push((vip, connected("[::1]:0", vip).await));
            }
            for round in 0..2 {
                for (vip, client) in &clients {
                    let msg = format!("{vip}/{round}");
                    assert_eq!(
                        ask_connected(client, &msg).await.as_deref(),
                        Some(format!("a|{msg}").as_str()),
                        "{wildcard}: no reply from {vip}"
                    );
                }
            }
            assert_eq!(proxy.sessions(), clients.len(), "{wildcard}");
            assert_eq!(proxy.stats().accepted, clients.len() as u64, "{wildcard}");
        }
    })
    .await
    .unwrap();
}

/// IPv6 on a wildcard listener, in a namespace of the test's own: an interface holds
/// fd00:18::1 and a VIP added after the proxy started (as VRRP adds one), fd00:18::10. A
/// client connected to the VIP gets the replies from the VIP (`IPV6_PKTINFO`), where routing
/// alone would pick fd00:18::1.
#[test]
fn wildcard_listener_replies_from_an_ipv6_vip_added_later() {
    if !lb_testkit::lab_available() {
        return;
    }
    let lab = lb_testkit::Lab::new("lbudp", &[("lb", 1)]).unwrap();
    let ns = lab.ns("lb").to_owned();
    let ip = |args: &[&str]| {
        let out = lab.exec("lb", args).unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    ip(&["ip", "addr", "add", "fd00:18::1/64", "dev", "eth0", "nodad"]);
    let listener = lb_testkit::in_netns(&ns, || std::net::UdpSocket::bind("[::]:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            // The backend and the proxy's session sockets are on the host's loopback; the
            // listening socket is in the namespace.
            let a = tagged_echo("a").await;
            let set = BackendSet::new(vec![Backend::new(BackendId(1), a.addr)]).unwrap();
            let pool =
                Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
            listener.set_nonblocking(true).unwrap();
            let proxy = UdpProxy::start_on(
                UdpProxyConfig::new(Vec::new()),
                pool,
                Arc::new(lb_proxy::outcome::NoopObserver),
                vec![UdpSocket::from_std(listener).unwrap()],
            )
            .unwrap();
            ip(&[
                "ip",
                "addr",
                "add",
                "fd00:18::10/64",
                "dev",
                "eth0",
                "nodad",
            ]);
            let mut clients = Vec::new();
            for vip in ["fd00:18::10", "fd00:18::1"] {
                let vip = SocketAddr::new(vip.parse().unwrap(), port);
                let client = lb_testkit::in_netns(&ns, move || {
                    let s = std::net::UdpSocket::bind("[fd00:18::1]:0")?;
                    s.connect(vip)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .unwrap();
                clients.push((vip, UdpSocket::from_std(client).unwrap()));
            }
            for (vip, client) in &clients {
                let msg = format!("to {vip}");
                assert_eq!(
                    ask_connected(client, &msg).await.as_deref(),
                    Some(format!("a|{msg}").as_str()),
                    "no reply from {vip}"
                );
            }
            assert_eq!(proxy.sessions(), 2);
        })
        .await
        .unwrap();
    });
}

/// `per_packet` (keepalived `ops`): one client's datagrams go round robin over the backends,
/// each reply comes back to it from the VIP, over one session per backend. A dead backend
/// among them is skipped once its refusal is known, and no datagram sent after that is
/// lost. Without `per_packet` the same client stays on one backend.
#[tokio::test]
async fn per_packet_scheduling_spreads_one_client_over_the_backends() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let a = tagged_echo("a").await;
        let b = tagged_echo("b").await;
        let c = tagged_echo("c").await;
        let backends = [a.addr, b.addr, c.addr];
        let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        cfg.per_packet = true;
        let (proxy, _, _) = start_observed(cfg, &backends, PoolConfig::default());
        let vip = proxy.local_addrs()[0];
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut tags = String::new();
        for i in 0..6 {
            let reply = ask(&client, vip, &i.to_string()).await.unwrap();
            assert_eq!(reply[2..], i.to_string(), "{reply}");
            tags.push_str(&reply[..1]);
        }
        assert_eq!(tags, "abcabc");
        assert_eq!(proxy.sessions(), 3, "one session per backend");
        assert_eq!(proxy.stats().accepted, 3);

        // The same client without per_packet: one backend.
        let (proxy, _, _) = start_observed(
            UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]),
            &backends,
            PoolConfig::default(),
        );
        let vip = proxy.local_addrs()[0];
        let mut tags = String::new();
        for i in 0..3 {
            tags.push_str(&ask(&client, vip, &i.to_string()).await.unwrap()[..1]);
        }
        assert_eq!(tags, "aaa");

        // A dead backend in the rotation: its first datagram is lost (nothing answers). The
        // next pick of it finds its session refused, ends it and sends the datagram to the
        // live backend. (The pick after that opens a new session to it, as a new client's
        // would: passive health, in lb-node, ejects a backend that keeps refusing.)
        let dead = dead_port().await;
        let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
        cfg.per_packet = true;
        let (proxy, _, rec) = start_observed(cfg, &[a.addr, dead], PoolConfig::default());
        let vip = proxy.local_addrs()[0];
        assert_eq!(ask(&client, vip, "0").await.as_deref(), Some("a|0"));
        assert_eq!(
            ask(&client, vip, "1").await,
            None,
            "the dead backend answers nothing"
        );
        for i in 2..4 {
            let msg = i.to_string();
            assert_eq!(
                ask(&client, vip, &msg).await,
                Some(format!("a|{msg}")),
                "{i}"
            );
        }
        assert_eq!(rec.refusals_of(2), 1, "{:?}", rec.0.lock().unwrap());
        assert_eq!(proxy.sessions(), 1, "the dead backend's session is gone");
    })
    .await
    .unwrap();
}

/// A datagram dropped for want of room in the session table moves no scheduler and writes
/// no persistence: round robin over a and b with room for one session, c1 gets a, c2 is
/// refused, and once c1's session has expired c3 gets b (it got a again when the refused
/// datagram had advanced the round robin). The same with per-packet scheduling, where a
/// client that already has a session keeps using it while the table is full.
#[tokio::test]
async fn a_refused_datagram_moves_no_scheduler() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let a = tagged_echo("a").await;
        let b = tagged_echo("b").await;
        for per_packet in [false, true] {
            let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
            cfg.max_sessions = 1;
            cfg.idle_timeout = Duration::from_millis(300);
            cfg.per_packet = per_packet;
            let (proxy, _, _) = start_observed(cfg, &[a.addr, b.addr], PoolConfig::default());
            let vip = proxy.local_addrs()[0];
            let client = || async { UdpSocket::bind("127.0.0.1:0").await.unwrap() };
            let (c1, c2, c3) = (client().await, client().await, client().await);
            assert_eq!(ask(&c1, vip, "1").await.as_deref(), Some("a|1"));
            if per_packet {
                // The table is full: c1's next datagram goes over its session to a.
                assert_eq!(ask(&c1, vip, "1b").await.as_deref(), Some("a|1b"));
            }
            assert_eq!(ask(&c2, vip, "2").await, None, "no room for c2");
            assert!(proxy.stats().sessions_refused >= 1);
            let gone = async {
                while proxy.sessions() > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), gone)
                .await
                .expect("c1's session expires");
            assert_eq!(
                ask(&c3, vip, "3").await.as_deref(),
                Some("b|3"),
                "per_packet {per_packet}"
            );
        }
    })
    .await
    .unwrap();
}

/// `max_datagram` above a UDP datagram's largest (65 535 bytes) is a configuration error:
/// it was accepted and every session allocated a buffer of that size (a huge value
/// panicked in the allocation).
#[tokio::test]
async fn max_datagram_above_65535_is_refused() {
    let set = BackendSet::new(vec![Backend::new(
        BackendId(1),
        "127.0.0.1:9".parse().unwrap(),
    )])
    .unwrap();
    let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
    let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.max_datagram = 1 << 40;
    let err = UdpProxy::start(cfg, Arc::clone(&pool)).unwrap_err();
    assert!(
        err.to_string().contains("max_datagram in 1..=65535"),
        "{err}"
    );
    let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.max_datagram = 65_535;
    UdpProxy::start(cfg, Arc::clone(&pool)).unwrap().stop();
    // An idle timeout of 0 would end each session before its reply.
    let mut cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.idle_timeout = Duration::ZERO;
    let err = UdpProxy::start(cfg, pool).unwrap_err();
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}

/// One client whose backend's path is congested (its session socket's send buffer full:
/// here a token bucket of 8 kbit/s on the way out) does not hold up the virtual server:
/// its datagrams beyond the buffer are dropped and counted (`send_drops`, as Envoy drops
/// them), and another client on a healthy backend is answered at once. The listener used
/// to wait for the congested socket, and no other client got anything. In namespaces of
/// the test's own.
#[test]
fn a_congested_backend_does_not_stall_other_clients() {
    if !lb_testkit::lab_available() || !lb_testkit::tool_available("tc") {
        return;
    }
    let lab = lb_testkit::Lab::new("lbucg", &[("lb", 1), ("slow", 2)]).unwrap();
    let out = lab
        .exec(
            "lb",
            &[
                "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "8kbit", "burst",
                "1600", "limit", "3000000",
            ],
        )
        .unwrap();
    assert!(out.status.success(), "tc: {out:?}");
    // The slow backend: a socket that exists (no port unreachable) and never reads.
    let slow_addr: SocketAddr = format!("{}:9000", lab.addr("slow")).parse().unwrap();
    let _sink =
        lb_testkit::in_netns(lab.ns("slow"), move || std::net::UdpSocket::bind(slow_addr)).unwrap();
    let ns = lab.ns("lb").to_owned();
    lb_testkit::in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                let fast = tagged_echo("fast").await;
                let cfg = UdpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
                let proxy = start(cfg, &[slow_addr, fast.addr]);
                let vip = proxy.local_addrs()[0];
                let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                // rr: c1's session goes to the slow backend, c2's to the fast one.
                assert_eq!(ask(&c1, vip, "x").await, None, "c1 is on the slow backend");
                assert_eq!(ask(&c2, vip, "hello").await.as_deref(), Some("fast|hello"));
                // Far more than a send buffer's worth for the slow backend.
                let big = [0u8; 1400];
                for _ in 0..400 {
                    c1.send_to(&big, vip).await.unwrap();
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut answered = None;
                for _ in 0..3 {
                    answered = ask(&c2, vip, "again").await;
                    if answered.is_some() {
                        break;
                    }
                }
                assert_eq!(
                    answered.as_deref(),
                    Some("fast|again"),
                    "the other client is held up: {:?}",
                    proxy.stats()
                );
                let s = proxy.stats();
                assert!(s.send_drops > 0, "{s:?}");
                assert!(s.bytes_to_backend < 400 * 1400, "{s:?}");
            })
            .await
            .map_err(|_| std::io::Error::other("timed out"))
        })
    })
    .unwrap();
}
