//! The admin API end to end: a fake daemon behind a real Unix socket in a temporary
//! directory, driven by the library client and by the `lbctl` binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use lb_bins::admin::client::{Client, ClientError};
use lb_bins::admin::{
    server, AccessLogStatus, AdminHandler, AdminState, BackendStatus, BfdStatus, Health,
    HttpCounters, HttpVsCounters, L4VsCounters, NodeStatus, ReloadStatus, Status, TrackedStatus,
    VirtualServerStatus, VrrpCounters, VrrpState, VrrpStatus,
};
use lb_bins::config::model::Protocol;

#[derive(Debug)]
struct Fake(Mutex<Status>);

impl AdminHandler for Fake {
    fn status(&self) -> Status {
        self.0.lock().unwrap().clone()
    }
    fn set_backend_admin(&self, vs: &str, backend: &str, state: AdminState) -> Result<(), String> {
        self.with_backend(vs, backend, |b| b.admin = state)
    }
    fn set_backend_weight(&self, vs: &str, backend: &str, weight: u32) -> Result<(), String> {
        self.with_backend(vs, backend, |b| b.weight = weight)
    }
}

impl Fake {
    /// Applies `f` to `backend` of virtual server `vs`, or says which is unknown.
    fn with_backend(
        &self,
        vs: &str,
        backend: &str,
        f: impl FnOnce(&mut BackendStatus),
    ) -> Result<(), String> {
        let mut s = self.0.lock().unwrap();
        let v = s
            .virtual_servers
            .iter_mut()
            .find(|v| v.name == vs)
            .ok_or_else(|| format!("no virtual server {vs}"))?;
        let b = v
            .backends
            .iter_mut()
            .find(|b| b.address.to_string() == backend)
            .ok_or_else(|| format!("no backend {backend} in virtual server {vs}"))?;
        f(b);
        Ok(())
    }
}

fn backend(addr: &str, weight: u32) -> BackendStatus {
    BackendStatus {
        address: addr.parse().unwrap(),
        health: Health::Up,
        admin: AdminState::Ready,
        backup: false,
        weight,
        effective_weight: weight,
        active_connections: 2,
        total_connections: 40,
        bytes_to_backend: 4096,
        bytes_to_client: 3 << 20,
        http: None,
        health_reason: None,
        health_changed: None,
    }
}

fn status() -> Status {
    let mut down = backend("198.18.0.153:83", 3);
    down.health = Health::Down;
    down.health_reason = Some("connect to 198.18.0.153:83: Connection refused".into());
    down.health_changed = Some(1_795_339_201);
    let mut web = backend("198.18.0.151:8080", 1);
    web.http = Some(HttpCounters {
        requests: 100,
        responses_2xx: 97,
        responses_5xx: 3,
        connect_failures: 2,
        timeouts: 1,
        ..HttpCounters::default()
    });
    Status {
        node: NodeStatus {
            router_id: Some("LVS_MASTER".into()),
            version: "0.1.0".into(),
            uptime_secs: 3_725,
            config: Some("/etc/keepalived/keepalived.conf".into()),
            busy_polling: false,
            busy_polls: 0,
            last_reload: Some(ReloadStatus {
                at: 1_795_000_000,
                result: "rejected".into(),
                errors: vec!["lb.toml:3:9: unknown lb_algo \"bogus\"".into()],
            }),
        },
        vrrp: vec![
            VrrpStatus {
                name: "VI_1".into(),
                interface: "lbnet0".into(),
                virtual_router_id: 51,
                state: VrrpState::Master,
                base_priority: 100,
                effective_priority: 100,
                master_address: Some("198.18.0.11".parse().unwrap()),
                virtual_ips: vec!["198.18.0.250".into()],
                sync_group: Some("VG_1".into()),
                tracks: vec![
                    TrackedStatus {
                        kind: "process".into(),
                        name: "nginx".into(),
                        weight: 10,
                        reverse: false,
                        state: "up".into(),
                        priority_change: 10,
                        fault: false,
                    },
                    TrackedStatus {
                        kind: "file".into(),
                        name: "maintenance".into(),
                        weight: 1,
                        reverse: false,
                        state: "ok".into(),
                        priority_change: -10,
                        fault: false,
                    },
                ],
                counters: VrrpCounters {
                    adverts_in: 7,
                    adverts_out: 1200,
                    became_master: 1,
                    priority_zero_out: 1,
                    dropped: [("auth".to_owned(), 3), ("interval".to_owned(), 2)].into(),
                    ..VrrpCounters::default()
                },
            },
            VrrpStatus {
                name: "VI_2".into(),
                interface: "lbnet0".into(),
                virtual_router_id: 52,
                state: VrrpState::Master,
                base_priority: 100,
                effective_priority: 100,
                master_address: Some("198.18.0.11".parse().unwrap()),
                virtual_ips: vec!["198.18.0.251".into()],
                sync_group: Some("VG_1".into()),
                tracks: Vec::new(),
                counters: VrrpCounters::default(),
            },
        ],
        virtual_servers: vec![
            VirtualServerStatus {
                name: "198.18.0.250:80".into(),
                listen: "198.18.0.250:80".parse().unwrap(),
                protocol: Protocol::Tcp,
                scheduler: "rr".into(),
                quorum: true,
                http: None,
                l4: Some(L4VsCounters {
                    connections: 50,
                    active_connections: 3,
                    failed: 1,
                    connect_failures: 2,
                    retries: 2,
                    queued: 4,
                    queue_refused: 1,
                    proxy_header_errors: 0,
                    idle_timeouts: 5,
                    sessions_refused: 0,
                    local_errors: 0,
                    send_drops: 0,
                }),
                backends: vec![backend("198.18.0.151:82", 3), down],
                error: None,
            },
            VirtualServerStatus {
                name: "web".into(),
                listen: "198.18.0.250:8080".parse().unwrap(),
                protocol: Protocol::Http,
                scheduler: "wlc".into(),
                quorum: false,
                http: Some(HttpVsCounters {
                    connections: 40,
                    active_connections: 2,
                    requests: 100,
                    no_backend: 1,
                    bad_gateway: 2,
                    gateway_timeout: 3,
                    bad_requests: 4,
                    header_timeouts: 5,
                    idle_timeouts: 6,
                    client_timeouts: 7,
                    proxy_header_errors: 0,
                    tls_handshake_errors: 2,
                    retries: 8,
                    upgrades: 9,
                    http2_connections: 12,
                }),
                l4: None,
                backends: vec![web],
                error: None,
            },
            VirtualServerStatus {
                name: "busy".into(),
                listen: "198.18.0.250:8081".parse().unwrap(),
                protocol: Protocol::Tcp,
                scheduler: "rr".into(),
                quorum: false,
                http: None,
                l4: None,
                backends: Vec::new(),
                error: Some("cannot listen on 198.18.0.250:8081: Address in use".into()),
            },
        ],
        bfd: vec![BfdStatus {
            name: "gw".into(),
            neighbor_ip: "198.18.0.1".parse().unwrap(),
            state: "Down".into(),
            remote_state: "Down".into(),
            diagnostic: "Control Detection Time Expired".into(),
            since_secs: 12,
            packets_in: 1_200,
            packets_out: 1_250,
            dropped: 3,
        }],
        access_logs: vec![AccessLogStatus {
            path: "/var/log/lb-web.access.log".into(),
            lines_written: 1_500,
            lines_dropped: 7,
            lines_lost: 0,
        }],
    }
}

/// A running fake daemon; dropping it stops the server.
struct Daemon {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    handler: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A fresh sub-directory: bind creates it with mode 0700.
        let socket = dir.path().join("run/admin.sock");
        let handler = Arc::new(Fake(Mutex::new(status())));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let h = Arc::clone(&handler);
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = server::bind(&path).unwrap();
                ready_tx.send(()).unwrap();
                server::serve(listener, h, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        ready_rx.recv().unwrap();
        Self {
            _dir: dir,
            socket,
            handler,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lbctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("LB_ADMIN_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Output that cannot be written (a full disk: /dev/full) is exit 4 with the reason, where
/// lbctl exited 0 with nothing written; a reader that went away (`| head`) is no error.
#[test]
fn lbctl_output_that_cannot_be_written_is_an_error() {
    let d = Daemon::start();
    for args in [&["status"][..], &["status", "--json"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot write the output"),
            "{out:?}"
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["status", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn socket_is_private() {
    let d = Daemon::start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(d.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn client_round_trips_status_and_commands() {
    let d = Daemon::start();
    let mut c = Client::connect(&d.socket).unwrap();
    assert_eq!(c.status().unwrap(), status());
    // Several requests on one connection.
    c.set_backend_admin("198.18.0.250:80", "198.18.0.151:82", AdminState::Drain)
        .unwrap();
    let s = c.status().unwrap();
    assert_eq!(s.virtual_servers[0].backends[0].admin, AdminState::Drain);
    assert_eq!(s.virtual_servers[0].live_backends(), 0);
    let e = c
        .set_backend_admin("198.18.0.250:80", "198.18.0.9:82", AdminState::Maint)
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Refused(m) if m == "no backend 198.18.0.9:82 in virtual server 198.18.0.250:80")
    );
    // A garbled line gets an error answer, and the connection stays usable.
    let r = server::handle_line(&*d.handler, "{\"command\":\"reboot\"}");
    assert!(matches!(r, lb_bins::admin::Response::Error { .. }));
    assert!(c.status().is_ok());
}

#[test]
fn a_second_daemon_cannot_steal_the_socket_but_a_stale_one_is_replaced() {
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(async { server::bind(&d.socket).unwrap_err() });
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    rt.block_on(async { server::bind(&stale).unwrap() });
}

#[test]
fn lbctl_status_prints_tables_and_json() {
    let d = Daemon::start();
    let (code, out, err) = lbctl(&d.socket, &["status"]);
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    assert!(out.starts_with("lb-node LVS_MASTER  version 0.1.0  up 1h02m"));
    // The last reload's end and why (HAProxy's master CLI answers a reload so).
    assert!(
        out.contains("\nlast reload 2026-11-18 11:06:40 UTC rejected\n  lb.toml:3:9: unknown lb_algo \"bogus\"\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "VI_1  lbnet0     51    MASTER  100       100   198.18.0.11  VG_1        198.18.0.250"
        ),
        "{out}"
    );
    assert!(
        out.contains("\n  VI_1      process  nginx        10      up     +10       -\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  VI_1      file     maintenance  1       ok     -10       -\n"),
        "{out}"
    );
    // The VRRP counters, dropped adverts by reason (keepalived's stats dump).
    assert!(
        out.contains("\n  Instance  Adverts in  Adverts out  Became master  Prio 0 in  Prio 0 out  Dropped\n  VI_1      7           1200         1              0          1           5 (auth 3, interval 2)\n  VI_2      0           0            0              0          0           0\n"),
        "{out}"
    );
    assert!(
        out.contains("\nAccess logs\n  File                        Written  Dropped  Lost\n  /var/log/lb-web.access.log  1500     7        0\n"),
        "{out}"
    );
    assert!(
        out.contains("\nBFD sessions\n  Name  Neighbor    State  Remote  Diagnostic                      Since  In    Out   Dropped\n  gw    198.18.0.1  Down   Down    Control Detection Time Expired  0m12s  1200  1250  3\n"),
        "{out}"
    );
    assert!(
        out.contains("\nTCP  198.18.0.250:80 rr 198.18.0.250:80 (1/2)\n"),
        "{out}"
    );
    assert!(out.contains("\n  -> 198.18.0.151:82     up      ready  3       3          2           40         4.0K       3.0M\n"), "{out}");
    assert!(out.contains("\n  -> 198.18.0.153:83     down    ready  3       3          2           40         4.0K       3.0M\n       down: connect to 198.18.0.153:83: Connection refused (since 2026-11-22 09:20:01 UTC)\n"), "{out}");
    assert!(
        out.contains("\nHTTP 198.18.0.250:8080 wlc web (1/1) no quorum\n"),
        "{out}"
    );
    assert!(
        out.contains("http: 100 requests  1xx 0  2xx 97  3xx 0  4xx 0  5xx 3; connect failures 2  timeouts 1\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  http: 40 connections (2 open), 100 requests; 503 1  502 2  504 3  bad requests 4; timeouts: header 5  idle 6  client 7; retries 8  upgrades 9\n"),
        "{out}"
    );
    assert!(out.contains("\n  http: HTTP/2 connections 12\n"), "{out}");
    assert!(
        out.contains("\n  http: PROXY header errors 0  TLS handshake errors 2\n"),
        "{out}"
    );

    // An L4 virtual server's own counters, the maxconn queue among them.
    assert!(
        out.contains("\n  tcp: 50 connections (3 open), 1 failed; connect failures 2  retries 2; queued 4  queue refused 1; PROXY header errors 0  idle timeouts 5\n"),
        "{out}"
    );

    // A virtual server a reload could not start is listed, with why.
    assert!(
        out.contains("\nTCP  198.18.0.250:8081 rr busy (0/0) NOT RUNNING: cannot listen on 198.18.0.250:8081: Address in use\n"),
        "{out}"
    );

    let (code, out, _) = lbctl(&d.socket, &["status", "--json"]);
    assert_eq!(code, 0);
    let parsed: Status = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed, status());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["vrrp"][0]["state"], "MASTER");
    assert_eq!(v["virtual_servers"][0]["backends"][1]["health"], "down");
    assert_eq!(v["virtual_servers"][1]["protocol"], "http");
    assert!(v["virtual_servers"][1].get("error").is_none());
    assert_eq!(
        v["virtual_servers"][2]["error"],
        "cannot listen on 198.18.0.250:8081: Address in use"
    );
}

#[test]
fn lbctl_backend_changes_admin_state_and_reports_refusals() {
    let d = Daemon::start();
    for (action, state) in [
        ("drain", AdminState::Drain),
        ("maint", AdminState::Maint),
        ("ready", AdminState::Ready),
    ] {
        let (code, out, err) = lbctl(
            &d.socket,
            &["backend", action, "198.18.0.250:80", "198.18.0.153:83"],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out.trim(),
            format!("198.18.0.250:80 198.18.0.153:83: {action}")
        );
        assert_eq!(
            d.handler.status().virtual_servers[0].backends[1].admin,
            state
        );
    }
    let (code, _, err) = lbctl(&d.socket, &["backend", "drain", "nope", "198.18.0.153:83"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "lbctl: no virtual server nope");
    let (code, _, _) = lbctl(&d.socket, &["backend", "pause", "a", "b"]);
    assert_eq!(code, 2);
}

/// `lbctl weight VS BACKEND N` reaches the daemon; a refused backend exits 1, a weight
/// beyond 65535 is a usage error (2).
#[test]
fn lbctl_weight_sets_a_backends_weight() {
    let d = Daemon::start();
    let (code, out, err) = lbctl(
        &d.socket,
        &["weight", "198.18.0.250:80", "198.18.0.153:83", "7"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "198.18.0.250:80 198.18.0.153:83: weight 7");
    assert_eq!(d.handler.status().virtual_servers[0].backends[1].weight, 7);
    let (code, _, err) = lbctl(
        &d.socket,
        &["weight", "198.18.0.250:80", "198.18.0.9:1", "1"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no backend 198.18.0.9:1"), "{err}");
    let (code, _, _) = lbctl(
        &d.socket,
        &["weight", "198.18.0.250:80", "198.18.0.153:83", "65536"],
    );
    assert_eq!(code, 2);
}

#[test]
fn lbctl_without_a_daemon_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = lbctl(&dir.path().join("none.sock"), &["status"]);
    assert_eq!(code, 3);
    assert!(err.starts_with("lbctl: cannot connect to "), "{err}");
}

#[test]
fn status_skeleton_from_the_seed_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed/master.conf");
    let (cfg, _) = lb_bins::config::load(&path).unwrap();
    let s = Status::from_config(&cfg);
    assert_eq!(s.node.router_id.as_deref(), Some("LVS_MASTER"));
    assert_eq!(s.vrrp.len(), 2);
    assert_eq!(s.vrrp[1].state, VrrpState::Init);
    assert_eq!(s.vrrp[1].sync_group.as_deref(), Some("VG_1"));
    assert_eq!(s.vrrp[0].virtual_ips, ["198.18.0.250"]);
    let vs = &s.virtual_servers[0];
    assert_eq!(
        (vs.name.as_str(), vs.scheduler.as_str()),
        ("198.18.0.250:80", "rr")
    );
    assert_eq!(vs.live_backends(), 2);
    assert_eq!(vs.backends[1].weight, 3);
    assert!(vs.backends[0].http.is_none());
}

/// At most `MAX_CONNECTIONS` connections are served at once, and one that sends nothing is
/// closed after `IDLE_TIMEOUT` (HAProxy's `stats maxconn` / `stats timeout`): idle
/// connections cannot hold the socket forever, and a request waiting behind them is
/// answered once they are closed. Before, every connection got its own task for as long as
/// it stayed open. Paused clock: the timeouts pass without waiting.
#[tokio::test(start_paused = true)]
async fn idle_connections_are_capped_and_closed() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = server::bind(&path).unwrap();
    let handler = Arc::new(Fake(Mutex::new(status())));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server::serve(listener, handler, async {
        let _ = stop_rx.await;
    }));
    let mut idle = Vec::new();
    for _ in 0..server::MAX_CONNECTIONS {
        idle.push(tokio::net::UnixStream::connect(&path).await.unwrap());
    }
    let start = tokio::time::Instant::now();
    let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
    c.write_all(b"{\"command\":\"status\"}\n").await.unwrap();
    let mut answer = String::new();
    let mut reader = tokio::io::BufReader::new(&mut c);
    let early = tokio::time::timeout(server::IDLE_TIMEOUT / 2, reader.read_line(&mut answer)).await;
    assert!(early.is_err(), "served beyond the limit: {answer}");
    let n = tokio::time::timeout(server::IDLE_TIMEOUT * 3, reader.read_line(&mut answer))
        .await
        .expect("never served")
        .unwrap();
    assert!(n > 0 && answer.contains("\"status\""), "{answer}");
    assert!(start.elapsed() >= server::IDLE_TIMEOUT);
    for mut s in idle {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(server::IDLE_TIMEOUT, s.read(&mut buf))
            .await
            .expect("idle connection not closed")
            .unwrap();
        assert_eq!(n, 0);
    }
    let _ = stop_tx.send(());
    serve.await.unwrap().unwrap();
}

/// A connection that sends only blank lines is idle: closed `IDLE_TIMEOUT` after its last
/// request (here none), not kept open by each blank line (ten such connections held every
/// place and locked `lbctl` out).
#[tokio::test(start_paused = true)]
async fn blank_lines_do_not_keep_a_connection_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = server::bind(&path).unwrap();
    let handler = Arc::new(Fake(Mutex::new(status())));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server::serve(listener, handler, async {
        let _ = stop_rx.await;
    }));
    let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut closed = false;
    // A blank line every 4 s, for at most 30 s.
    for _ in 0..8 {
        if c.write_all(b"\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_secs(4), c.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("a blank line was answered"),
            Err(_) => {}
        }
    }
    assert!(closed, "still open after {:?}", start.elapsed());
    let took = start.elapsed();
    assert!(
        took >= server::IDLE_TIMEOUT
            && took < server::IDLE_TIMEOUT + std::time::Duration::from_secs(5),
        "{took:?}"
    );
    let _ = stop_tx.send(());
    serve.await.unwrap().unwrap();
}

/// Lines that are no request (garbage answered with an error) do not keep a connection
/// alive either: closed `IDLE_TIMEOUT` after its last request.
#[tokio::test(start_paused = true)]
async fn garbage_lines_do_not_keep_a_connection_alive() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = server::bind(&path).unwrap();
    let handler = Arc::new(Fake(Mutex::new(status())));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server::serve(listener, handler, async {
        let _ = stop_rx.await;
    }));
    let c = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (r, mut w) = c.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let start = tokio::time::Instant::now();
    let mut closed = false;
    for _ in 0..8 {
        if w.write_all(b"x\n").await.is_err() {
            closed = true;
            break;
        }
        let mut answer = String::new();
        match r.read_line(&mut answer).await {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => assert!(answer.contains("error"), "{answer}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    }
    assert!(closed, "still open after {:?}", start.elapsed());
    assert!(start.elapsed() < server::IDLE_TIMEOUT + std::time::Duration::from_secs(5));
    let _ = stop_tx.send(());
    serve.await.unwrap().unwrap();
}
