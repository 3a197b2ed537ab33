//! Loopback ports a test can name before anything listens on them: a listener port handed to
//! `lb-node` in its config, or a "dead" backend that must refuse.
//!
//! A port taken from `bind(…:0)` and closed again is a race: the kernel hands the same
//! ephemeral port to the next `bind(…:0)` or outgoing `connect` of any test running in
//! parallel, and a "dead" backend then answers (a fresh-clone CI run failed on exactly
//! that). The ports given here come from below the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768–60999 by default), which neither `bind(…:0)` nor
//! `connect` ever picks; each is handed out once per process, from a block chosen by the
//! process id so that test binaries run side by side do not meet; and each is checked free
//! (TCP and UDP on 127.0.0.1) when handed out.
//!
//! Limits: the per-process blocks are chosen by `pid % 88` (with the default range), so two
//! test processes running side by side may share a block — `cargo test` runs its test
//! binaries one after another, so this suite never does; and a port handed out but not yet
//! bound is not protected from another process's explicit choice.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const FIRST: u32 = 10_000;
/// Ports per process block.
const BLOCK: u32 = 256;

/// The low end of the kernel's ephemeral port range, or 32768 when it cannot be read.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&low| low > FIRST + BLOCK)
        .unwrap_or(32_768)
}

/// A loopback port (TCP and UDP both free on 127.0.0.1 when asked) that no `bind(…:0)` and
/// no outgoing connection will take, and that this function never returns twice in one
/// process.
///
/// # Panics
///
/// When every port of the range below the ephemeral range is taken.
pub fn unused_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_low() - FIRST;
    let start = (std::process::id() % (span / BLOCK)) * BLOCK;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n >= span {
            break;
        }
        let port = (FIRST + (start + n) % span) as u16;
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range")
}

/// `127.0.0.1:`[`unused_port`]: an address where nothing listens, so a TCP connect is
/// refused and a UDP datagram draws ICMP port unreachable.
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, unused_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_refuse() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| unused_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
        assert!(ports
            .iter()
            .all(|&p| u32::from(p) >= FIRST && u32::from(p) < low));
        let dead = dead_addr();
        assert_eq!(
            std::net::TcpStream::connect(dead).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    }
}
