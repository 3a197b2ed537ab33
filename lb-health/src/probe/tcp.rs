//! keepalived `TCP_CHECK`: a TCP connect, nothing sent (but a PROXY protocol header, when
//! asked).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;

use super::{elapsed, io_reason, target, tcp_connect, Probe, ProxyHeader};
use crate::tracker::ProbeOutcome;

/// Passes when a TCP connection to the backend completes within the timeout; the connection
/// is closed at once (keepalived `TCP_CHECK`, HAProxy's plain `check`).
#[derive(Debug, Clone, Default)]
pub struct TcpProbe {
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
    send_proxy: Option<ProxyHeader>,
}

impl TcpProbe {
    /// A probe of the backend's own address and port, from the default source address.
    pub fn new() -> Self {
        Self::default()
    }

    target_options! {
        connect_port,
        connect_ip,
        bindto,
        send_proxy,
    }
}

#[async_trait]
impl Probe for TcpProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its socket.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, tcp_connect(to, self.bindto, self.send_proxy)).await {
            Ok(Ok(stream)) => {
                drop(stream);
                ProbeOutcome::up(format!("connected to {to}"), elapsed(start))
            }
            Ok(Err(e)) => {
                ProbeOutcome::down(io_reason(&format!("connect to {to}"), &e), elapsed(start))
            }
            Err(_) => ProbeOutcome::down(
                format!("connect to {to} timed out after {timeout:?}"),
                elapsed(start),
            ),
        }
    }

    fn kind(&self) -> &'static str {
        "tcp"
    }
}
