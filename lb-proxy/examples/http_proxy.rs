// cargo run --release -p lb-proxy --example http_proxy -- 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082
//
// An HTTP virtual server in front of the backends given on the command line (round robin;
// X-Forwarded-For, -Proto and -Port on, the defaults), on one event-loop thread (tokio's
// current-thread scheduler; lb-node's `nbthread = 1`, HAProxy's `nbthread 1`) so one CPU can
// be given to it (`taskset -c 1`).
// LB_THREADS=n (n > 1) runs n worker threads instead. (A multi-thread runtime with one
// worker measured about 40 % fewer requests/s here than this single event loop.)
// LB_ACCESS_LOG=FILE appends an access log line per request (HAProxy's httplog layout) to
// FILE, from a writer thread, as lb-node's `access_log` does.
// LB_HTTP2=1 serves HTTP/2 too (`HttpProxyConfig::http2`: prior knowledge on this plain
// listener, as `h2load http://…` speaks it), as lb-node's `http2 = true`.
// LB_BACKEND_HTTP2=1 speaks HTTP/2 to the backends (h2c with prior knowledge,
// `HttpPool::http2`), as lb-node's `backend_http2 = true`.
// Used by `lb-proxy/benches/http_vs_haproxy.sh`. Stops on Ctrl-C / SIGTERM
// and prints its counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::http::{AccessEntry, AccessLog, AccessLogSink, HttpPool, HttpProxy, HttpProxyConfig};

/// Access log lines to a file, written by a thread of their own (a full queue drops them).
#[derive(Debug)]
struct FileLog(std::sync::mpsc::SyncSender<String>);

impl FileLog {
    fn open(path: &str) -> std::io::Result<Self> {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(65_536);
        // As lb-node's writer: every 50 ms it takes what is queued (never waiting on the
        // queue, so a request wakes no thread), writes and flushes it. A plain thread, on
        // the wall clock.
        #[allow(clippy::disallowed_methods)]
        std::thread::spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
            loop {
                std::thread::sleep(Duration::from_millis(50));
                loop {
                    match rx.try_recv() {
                        Ok(line) => {
                            let _ = out.write_all(line.as_bytes());
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                let _ = out.flush();
            }
        });
        Ok(Self(tx))
    }
}

impl AccessLog for FileLog {
    fn log(&self, entry: &AccessEntry<'_>) {
        let mut line = String::with_capacity(256);
        entry.write_httplog(&mut line);
        line.push('\n');
        let _ = self.0.try_send(line);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: http_proxy LISTEN BACKEND...";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let backends = args
        .enumerate()
        .map(|(i, a)| Ok(Backend::new(BackendId(i as u32 + 1), a.parse()?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    if backends.is_empty() {
        return Err(usage.into());
    }
    let pool = Arc::new(Pool::new(
        Algorithm::RoundRobin,
        BackendSet::new(backends)?,
        PoolConfig::default(),
    )?);
    let mut config = HttpProxyConfig::new("example");
    config.default_pool = Some("www".into());
    config.http2 = std::env::var("LB_HTTP2").is_ok_and(|v| v == "1");
    if let Ok(path) = std::env::var("LB_ACCESS_LOG") {
        config.access_log = Some(AccessLogSink(Arc::new(FileLog::open(&path)?)));
    }

    let threads: usize = std::env::var("LB_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // How many tasks run between two polls of the IO driver (tokio's default is 61).
    let event_interval: u32 = std::env::var("LB_EVENT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(61);
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .event_interval(event_interval)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .event_interval(event_interval)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let mut www = HttpPool::new("www", pool);
        www.http2 = std::env::var("LB_BACKEND_HTTP2").is_ok_and(|v| v == "1");
        let proxy = HttpProxy::bind(listen, config, vec![www]).await?;
        eprintln!("http_proxy listening on {}", proxy.local_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let stats = proxy.stats();
        eprintln!("{:?}", stats.virtual_server);
        for b in &stats.backends {
            eprintln!("  backend {} {}: {:?}", b.id, b.addr, b.responses);
        }
        proxy.shutdown(Duration::from_secs(1)).await;
        Ok(())
    })
}
