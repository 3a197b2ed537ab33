// cargo run --release -p lb-proxy --example l4_tool -- proxy splice 127.0.0.1:9000=127.0.0.1:9001
//! Helper processes for `benches/l4_compare.sh`: our L4 proxy, a bulk source backend, a bulk
//! client, a backend that holds idle connections, and a client that opens many idle ones.
//!
//! ```text
//! l4_tool proxy  <splice|splice-always|copy> <listen>=<backend>...        # one thread, like HAProxy nbthread 1
//!                                                              # (LB_PIPE_SIZE: pipe bytes,
//!                                                              # LB_BUSY_POLLING=1: busy-polling)
//! l4_tool source <listen>                                      # sends zeros until the client closes
//! l4_tool bulk   <target> <bytes>                              # reads <bytes>, prints Gbit/s
//! l4_tool hold   <listen>                                      # accepts and holds connections
//! l4_tool idle   <target> <count>                              # opens <count> idle connections
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Algorithm, Backend, BackendId, BackendSet, Pool, PoolConfig};
use lb_proxy::busy_poll::BusyPolling;
use lb_proxy::tcp::{ForwardMode, TcpProxy, TcpProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res = Result<(), Box<dyn std::error::Error>>;

fn arg(args: &[String], i: usize, what: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("missing {what}"))
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match arg(&args, 1, "command")?.as_str() {
        "proxy" => rt.block_on(proxy(&args)),
        "source" => rt.block_on(source(arg(&args, 2, "listen")?.parse()?)),
        "bulk" => rt.block_on(bulk(
            arg(&args, 2, "target")?.parse()?,
            arg(&args, 3, "bytes")?.parse()?,
        )),
        "hold" => rt.block_on(hold(arg(&args, 2, "listen")?.parse()?)),
        "idle" => rt.block_on(idle(
            arg(&args, 2, "target")?.parse()?,
            arg(&args, 3, "count")?.parse()?,
        )),
        other => Err(format!("unknown command {other}").into()),
    }
}

async fn proxy(args: &[String]) -> Res {
    let mode = match arg(args, 2, "splice|copy")?.as_str() {
        "copy" => ForwardMode::Copy,
        "splice-always" => ForwardMode::Splice,
        _ => ForwardMode::Auto,
    };
    // LB_BUSY_POLLING=1: HAProxy `busy-polling`, one switch shared by every listener.
    let busy = (std::env::var("LB_BUSY_POLLING").as_deref() == Ok("1")).then(BusyPolling::new);
    let mut handles = Vec::new();
    for pair in &args[3..] {
        let (listen, backend) = pair.split_once('=').ok_or("expected <listen>=<backend>")?;
        let backend: SocketAddr = backend.parse()?;
        let set = BackendSet::new(vec![Backend::new(BackendId(1), backend)])?;
        let pool = Arc::new(Pool::new(
            Algorithm::RoundRobin,
            set,
            PoolConfig::default(),
        )?);
        let mut cfg = TcpProxyConfig::new(vec![listen.parse()?]);
        cfg.forward_mode = mode;
        cfg.maxconn = 10_000;
        cfg.listen_options.backlog = 16_384;
        cfg.busy_polling = busy.clone();
        if let Ok(size) = std::env::var("LB_PIPE_SIZE") {
            cfg.pipe_size = size.parse()?;
        }
        // LB_RCVBUF / LB_SNDBUF: fixed socket buffer sizes (bytes) on both sides.
        for (var, client, backend) in [
            (
                "LB_RCVBUF",
                &mut cfg.client_options.rcvbuf,
                &mut cfg.backend_options.rcvbuf,
            ),
            (
                "LB_SNDBUF",
                &mut cfg.client_options.sndbuf,
                &mut cfg.backend_options.sndbuf,
            ),
        ] {
            if let Ok(size) = std::env::var(var) {
                let size = Some(size.parse()?);
                (client.0, backend.0) = (size, size);
            }
        }
        handles.push(TcpProxy::start(cfg, pool)?);
    }
    println!("ready");
    tokio::signal::ctrl_c().await?;
    drop(handles);
    Ok(())
}

async fn source(listen: SocketAddr) -> Res {
    let l = TcpListener::bind(listen).await?;
    println!("ready");
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let buf = vec![0u8; 256 * 1024];
            while s.write_all(&buf).await.is_ok() {}
        });
    }
}

async fn bulk(target: SocketAddr, bytes: u64) -> Res {
    let mut s = TcpStream::connect(target).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let start = tokio::time::Instant::now();
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err("early EOF".into());
        }
        got += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.2}", got as f64 * 8.0 / secs / 1e9);
    Ok(())
}

async fn hold(listen: SocketAddr) -> Res {
    let l = TcpListener::bind(listen).await?;
    println!("ready");
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
        });
    }
}

async fn idle(target: SocketAddr, count: usize) -> Res {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(target).await?;
        // One round trip proves the proxied connection is established end to end.
        s.write_all(b"x").await?;
        conns.push(s);
    }
    println!("established {count}");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}
