//! Descriptor exhaustion when opening a backend connection (`socket(2)` fails with EMFILE):
//! the proxy's own problem, not the backend's. Its own test binary, because it lowers the
//! process's descriptor limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::outcome::{Outcome, OutcomeObserver};
use lb_proxy::tcp::{TcpProxy, TcpProxyConfig};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// Records what the data path reports, as lb-health's passive outlier detection would.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Outcome>>);

impl OutcomeObserver for Recorder {
    fn observe(&self, _backend: &Backend, outcome: &Outcome) {
        self.0.lock().unwrap().push(outcome.clone());
    }
}

/// The lowest free descriptor number: RLIMIT_NOFILE bounds numbers, not counts.
fn lowest_free_fd() -> u64 {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::open("/dev/null").unwrap();
    probe.as_raw_fd() as u64
}

/// The limit leaves room for the accepted client socket only: the backend socket cannot be
/// created. The client is closed, the backend is not blamed (nothing recorded, nothing
/// reported, no retries); with descriptors back the next client is served.
#[tokio::test(flavor = "current_thread")]
async fn emfile_on_the_backend_socket_is_not_blamed_on_the_backend() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let set = BackendSet::new(vec![Backend::new(BackendId(1), backend_addr)]).unwrap();
        let pool = Arc::new(Pool::new(Algorithm::RoundRobin, set, PoolConfig::default()).unwrap());
        let rec = Arc::new(Recorder::default());
        let proxy = TcpProxy::start_with_observer(
            TcpProxyConfig::new(vec!["127.0.0.1:0".parse().unwrap()]),
            Arc::clone(&pool),
            rec.clone(),
        )
        .unwrap();
        let vip = proxy.local_addrs()[0];

        // Created before the limit drops; connecting needs no new descriptor.
        let first = TcpSocket::new_v4().unwrap();
        let second = TcpSocket::new_v4().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // accept(2) takes the lowest free number; socket(2) for the backend needs the next.
        setrlimit(Resource::RLIMIT_NOFILE, lowest_free_fd() + 1, hard).unwrap();
        let mut s = first.connect(vip).await.unwrap();
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("the client was not closed");
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");

        let st = proxy.stats();
        assert_eq!(
            (
                st.failed,
                st.local_errors,
                st.connect_failures,
                st.retries,
                st.connected
            ),
            (1, 1, 0, 0, 0),
            "{st:?}"
        );
        let backends = pool.backends();
        assert_eq!(backends.get(BackendId(1)).unwrap().stats().failures(), 0);
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "{:?}",
            rec.0.lock().unwrap()
        );

        let mut s = second.connect(vip).await.unwrap();
        s.write_all(b"back").await.unwrap();
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
            .await
            .expect("served once descriptors are back")
            .unwrap();
        assert_eq!(&b, b"back");
        echo.abort();
    })
    .await
    .unwrap();
}
