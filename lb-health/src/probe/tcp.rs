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

    /// keepalived `connect_port`: connect to this port instead of the backend's.
    #[must_use]
    pub fn connect_port(mut self, port: u16) -> Self {
        self.connect_port = Some(port);
        self
    }

    /// keepalived `connect_ip`: probe this address instead of the backend's (a real server
    /// that answers health checks on another address, as in LVS-DR setups).
    #[must_use]
    pub fn connect_ip(mut self, ip: IpAddr) -> Self {
        self.connect_ip = Some(ip);
        self
    }

    /// keepalived `bindto`: the source address of the probe connection.
    #[must_use]
    pub fn bindto(mut self, ip: IpAddr) -> Self {
        self.bindto = Some(ip);
        self
    }

    /// HAProxy `check-send-proxy`: send this PROXY protocol header first, to a backend
    /// that expects one on every connection ([`ProxyHeader`]). Default none.
    #[must_use]
    pub fn send_proxy(mut self, header: ProxyHeader) -> Self {
        self.send_proxy = Some(header);
        self
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
