//! The [PROXY protocol] v1 (text) and v2 (binary): how a proxy tells the next hop the
//! client's real address (HAProxy `send-proxy`, `send-proxy-v2`, `accept-proxy`).
//!
//! The codecs ([`v1`], [`v2`]) are sans-IO in the smoltcp style: [`v2::Packet`] is a zero-copy
//! view, [`ProxyHeader`] the semantically valid header, with `parse` and `emit`. [`parse`]
//! detects the version. [`read_header`] and [`write_header`] are the thin tokio drivers.
//!
//! Panic contract: [`parse`], [`v1::parse`] and [`v2::parse`] never panic on any input;
//! [`v2::Packet`] accessors never panic once [`v2::Packet::check_len`] succeeded; `emit`
//! never panics on a buffer of exactly `buffer_len()` bytes.
//!
//! [PROXY protocol]: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
//!
//! # Examples
//!
//! ```
//! use lb_proxy::proxy_protocol::{parse, ProxyHeader, Transport, Version};
//!
//! let header = ProxyHeader::Proxy {
//!     transport: Transport::Stream,
//!     source: "192.168.0.1:56324".parse().unwrap(),
//!     destination: "192.168.0.11:443".parse().unwrap(),
//! };
//! let v1 = header.to_bytes(Version::V1);
//! assert_eq!(v1, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
//! for version in [Version::V1, Version::V2] {
//!     let bytes = header.to_bytes(version);
//!     assert_eq!(parse(&bytes).unwrap(), Some((header, bytes.len())));
//! }
//! // Incomplete input is not an error: read more.
//! assert_eq!(parse(b"PROXY TCP4 192.168").unwrap(), None);
//! ```

use std::net::SocketAddr;
use std::time::Duration;

mod io;
pub mod v1;
pub mod v2;

pub use io::{read_header, write_header};

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Human-readable, at most 107 bytes (`send-proxy`).
    V1,
    /// Binary (`send-proxy-v2`).
    V2,
}

/// The transport of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP (`TCP4`/`TCP6`, v2 `STREAM`).
    Stream,
    /// UDP (v2 `DGRAM`; v1 cannot express it).
    Datagram,
}

/// A semantically valid PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyHeader {
    /// A proxied connection from `source` to `destination`.
    Proxy {
        /// TCP or UDP.
        transport: Transport,
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// No address information (v1 `UNKNOWN`, v2 `LOCAL` or an unsupported family such as
    /// `AF_UNIX`): the receiver uses the connection's own addresses.
    Local,
}

impl ProxyHeader {
    /// A TCP header; when the families differ, the IPv4 side is written v4-mapped.
    pub fn tcp(source: SocketAddr, destination: SocketAddr) -> Self {
        let (source, destination) = same_family(source, destination);
        Self::Proxy {
            transport: Transport::Stream,
            source,
            destination,
        }
    }

    /// The encoded header.
    pub fn to_bytes(&self, version: Version) -> Vec<u8> {
        match version {
            Version::V1 => v1::emit(self).into_bytes(),
            Version::V2 => {
                let mut buf = vec![0; v2::buffer_len(self)];
                v2::emit(self, &mut buf);
                buf
            }
        }
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let map = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (map(a), map(b))
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input starts with neither the v1 `PROXY ` nor the v2 signature.
    #[error("no PROXY protocol signature (first byte {0:#04x})")]
    NoSignature(u8),
    /// A v1 line without CRLF within 107 bytes.
    #[error("v1 header longer than 107 bytes")]
    V1TooLong,
    /// A v1 line that does not follow the grammar; the index of the bad field (0 = protocol).
    #[error("malformed v1 header field {0}")]
    V1Field(u8),
    /// A v1 line with a CR not followed by LF, or an LF without its CR (HAProxy refuses
    /// such a line at once, instead of waiting for a CRLF that will not come).
    #[error("v1 header line not ended by CRLF")]
    V1LineEnd,
    /// A v2 version other than 2.
    #[error("unsupported v2 version {0}")]
    V2Version(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1).
    #[error("unsupported v2 command {0}")]
    V2Command(u8),
    /// A v2 address family or transport byte that is not defined.
    #[error("unsupported v2 family/transport {0:#04x}")]
    V2Family(u8),
    /// A v2 length too short for its address family.
    #[error("v2 length {0} too short for the address family")]
    V2Length(u16),
    /// A v2 header announcing more bytes in all (fixed part included) than a listener
    /// accepts (16 KiB, as HAProxy).
    #[error("v2 header of {0} bytes is longer than the 16 KiB accepted")]
    V2TooLong(usize),
    /// A v2 TLV whose length runs past the header, or a `PP2_TYPE_CRC32C` TLV that is not 4
    /// bytes long; the offset of the TLV in the header.
    #[error("malformed v2 TLV at byte {0}")]
    V2Tlv(usize),
    /// A v2 header whose `PP2_TYPE_CRC32C` checksum does not match its bytes.
    #[error("v2 header checksum (CRC32C) mismatch")]
    V2Checksum,
}

/// Parses a header of either version at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is a valid but incomplete prefix (read more), and
/// `Ok(Some((header, consumed)))` when complete: the next `consumed` bytes belong to the
/// header, anything after them is payload.
///
/// # Errors
/// [`ParseError`] for anything that can never become a valid header.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ParseError> {
    let n = buf.len().min(v2::SIGNATURE.len());
    if buf[..n] == v2::SIGNATURE[..n] {
        if n < v2::SIGNATURE.len() {
            return Ok(None);
        }
        return v2::parse(buf);
    }
    let n = buf.len().min(v1::PREFIX.len());
    if buf[..n] == v1::PREFIX[..n] {
        if n < v1::PREFIX.len() {
            return Ok(None);
        }
        return v1::parse(buf);
    }
    Err(ParseError::NoSignature(buf[0]))
}

/// How a listener treats PROXY headers from clients (HAProxy `accept-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptProxy {
    /// How long a client has to send its complete header (HAProxy
    /// `timeout client`-bounded; default 5 s). Missing it closes the connection.
    pub header_timeout: Duration,
}

impl Default for AcceptProxy {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of mixed families (an IPv4 source to an IPv6 destination, which the public
    /// type allows) is written as HAProxy writes it: TCP6 with the IPv4 one v4-mapped, in
    /// both versions. v2 panicked (its buffer sized for IPv4), v1 wrote UNKNOWN.
    #[test]
    fn mixed_families_are_written_v4_mapped() {
        let h = ProxyHeader::Proxy {
            transport: Transport::Stream,
            source: "10.0.0.1:1000".parse().unwrap(),
            destination: "[2001:db8::1]:80".parse().unwrap(),
        };
        assert_eq!(
            h.to_bytes(Version::V1),
            b"PROXY TCP6 ::ffff:10.0.0.1 2001:db8::1 1000 80\r\n"
        );
        let v2 = h.to_bytes(Version::V2);
        assert_eq!(v2.len(), 52);
        let (back, n) = v2::parse(&v2).unwrap().unwrap();
        assert_eq!(n, 52);
        assert_eq!(
            back,
            ProxyHeader::Proxy {
                transport: Transport::Stream,
                source: "[::ffff:10.0.0.1]:1000".parse().unwrap(),
                destination: "[2001:db8::1]:80".parse().unwrap(),
            }
        );
    }
    use proptest::prelude::*;

    fn arb_addr(v6: bool) -> impl Strategy<Value = SocketAddr> {
        if v6 {
            (any::<u128>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), p))
                .boxed()
        } else {
            (any::<u32>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), p))
                .boxed()
        }
    }

    fn arb_header() -> impl Strategy<Value = ProxyHeader> {
        prop_oneof![
            Just(ProxyHeader::Local),
            any::<bool>().prop_flat_map(|v6| (arb_addr(v6), arb_addr(v6)).prop_map(
                |(source, destination)| ProxyHeader::Proxy {
                    transport: Transport::Stream,
                    source,
                    destination
                }
            )),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(h in arb_header(), v2 in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let version = if v2 { Version::V2 } else { Version::V1 };
            let mut bytes = h.to_bytes(version);
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(parse(&bytes).unwrap(), Some((h, len)));
            for cut in 0..len {
                prop_assert_eq!(parse(&bytes[..cut.max(1)]).unwrap(), None);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 1..300)) {
            let _ = parse(&bytes);
            let mut sig = v2::SIGNATURE.to_vec();
            sig.extend_from_slice(&bytes);
            let _ = parse(&sig);
            let mut v1 = b"PROXY ".to_vec();
            v1.extend_from_slice(&bytes);
            let _ = parse(&v1);
        }
    }

    #[test]
    fn mixed_families_are_mapped() {
        let h = ProxyHeader::tcp(
            "[2001:db8::1]:1000".parse().unwrap(),
            "172.16.2.250:80".parse().unwrap(),
        );
        assert_eq!(
            h,
            ProxyHeader::Proxy {
                transport: Transport::Stream,
                source: "[2001:db8::1]:1000".parse().unwrap(),
                destination: "[::ffff:172.16.2.250]:80".parse().unwrap(),
            }
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ParseError::NoSignature(b'G'))
        );
    }
}
