//! keepalived `UDP_CHECK`: send a datagram, wait for a reply.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;

use super::{elapsed, io_reason, target, Probe};
use crate::tracker::ProbeOutcome;

/// What a UDP reply must be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UdpExpect {
    /// Any datagram passes (keepalived `UDP_CHECK` without `require_reply`).
    #[default]
    Any,
    /// The reply must equal these bytes (keepalived `require_reply`).
    Exact(Vec<u8>),
}

/// Sends `payload` from a connected UDP socket and passes when a reply arrives within the
/// timeout. An ICMP port unreachable (seen as `ECONNREFUSED`) fails at once.
#[derive(Debug, Clone)]
pub struct UdpProbe {
    payload: Vec<u8>,
    expect: UdpExpect,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
}

impl UdpProbe {
    /// A probe sending `payload` (keepalived `payload`) and accepting any reply.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            expect: UdpExpect::Any,
            connect_port: None,
            connect_ip: None,
            bindto: None,
        }
    }

    /// What the reply must be.
    #[must_use]
    pub fn expect(mut self, expect: UdpExpect) -> Self {
        self.expect = expect;
        self
    }

    /// keepalived `connect_port`.
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

    /// keepalived `bindto`: the source address.
    #[must_use]
    pub fn bindto(mut self, ip: IpAddr) -> Self {
        self.bindto = Some(ip);
        self
    }

    async fn exchange(&self, to: SocketAddr) -> Result<Vec<u8>, String> {
        let local = match (self.bindto, to) {
            (Some(ip), _) => SocketAddr::new(ip, 0),
            (None, SocketAddr::V4(_)) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            (None, SocketAddr::V6(_)) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        };
        let sock = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| io_reason("bind", &e))?;
        sock.connect(to)
            .await
            .map_err(|e| io_reason(&format!("connect to {to}"), &e))?;
        sock.send(&self.payload)
            .await
            .map_err(|e| io_reason(&format!("send to {to}"), &e))?;
        let mut buf = vec![0u8; 65_536];
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| io_reason(&format!("receive from {to}"), &e))?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[async_trait]
impl Probe for UdpProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its socket.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, self.exchange(to)).await {
            Err(_) => ProbeOutcome::down(
                format!("no UDP reply from {to} within {timeout:?}"),
                elapsed(start),
            ),
            Ok(Err(reason)) => ProbeOutcome::down(reason, elapsed(start)),
            Ok(Ok(reply)) => match &self.expect {
                UdpExpect::Any => {
                    ProbeOutcome::up(format!("{} byte reply", reply.len()), elapsed(start))
                }
                UdpExpect::Exact(want) if *want == reply => {
                    ProbeOutcome::up("expected reply", elapsed(start))
                }
                UdpExpect::Exact(_) => ProbeOutcome::down(
                    format!("unexpected {} byte reply", reply.len()),
                    elapsed(start),
                ),
            },
        }
    }

    fn kind(&self) -> &'static str {
        "udp"
    }
}
