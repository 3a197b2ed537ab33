//! keepalived `DNS_CHECK`: one DNS query over UDP, passing when the server answers it with
//! RCODE NOERROR (keepalived/check/check_dns.c; the message format is RFC 1035 §4.1).
//!
//! The codec is sans-IO ([`encode_query`], [`parse_response`]); [`DnsProbe`] is the thin
//! tokio driver around it.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{deadline, elapsed, io_reason, target, udp_send, Probe};
use crate::error::{Error, Result};
use crate::tracker::ProbeOutcome;

/// A query type (QTYPE, RFC 1035 §3.2.2), among those keepalived's `DNS_CHECK type` names.
///
/// Parsed case-insensitively from its name (`"a"`, `"SOA"`); displayed as the name.
///
/// # Examples
///
/// ```
/// use lb_health::probe::QueryType;
///
/// let t: QueryType = "aaaa".parse().unwrap();
/// assert_eq!(t, QueryType::AAAA);
/// assert_eq!(t.value(), 28);
/// assert_eq!(t.to_string(), "AAAA");
/// assert!("SRV".parse::<QueryType>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryType(u16);

impl QueryType {
    /// `A`, an IPv4 address (1).
    pub const A: Self = Self(1);
    /// `NS`, an authoritative name server (2).
    pub const NS: Self = Self(2);
    /// `CNAME`, a canonical name (5).
    pub const CNAME: Self = Self(5);
    /// `SOA`, the start of a zone of authority (6); keepalived's default.
    pub const SOA: Self = Self(6);
    /// `MX`, a mail exchange (15).
    pub const MX: Self = Self(15);
    /// `TXT`, text strings (16).
    pub const TXT: Self = Self(16);
    /// `AAAA`, an IPv6 address (28, RFC 3596).
    pub const AAAA: Self = Self(28);
    /// `RRSIG`, a DNSSEC signature (46, RFC 4034).
    pub const RRSIG: Self = Self(46);
    /// `DNSKEY`, a DNSSEC key (48, RFC 4034).
    pub const DNSKEY: Self = Self(48);

    const NAMED: [(Self, &'static str); 9] = [
        (Self::A, "A"),
        (Self::NS, "NS"),
        (Self::CNAME, "CNAME"),
        (Self::SOA, "SOA"),
        (Self::MX, "MX"),
        (Self::TXT, "TXT"),
        (Self::AAAA, "AAAA"),
        (Self::RRSIG, "RRSIG"),
        (Self::DNSKEY, "DNSKEY"),
    ];

    /// The QTYPE as sent on the wire.
    pub fn value(self) -> u16 {
        self.0
    }
}

impl Default for QueryType {
    /// keepalived's default, [`QueryType::SOA`].
    fn default() -> Self {
        Self::SOA
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMED.iter().find(|(t, _)| t == self) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl FromStr for QueryType {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidConfig`] (setting `type`) for a name keepalived does not know.
    fn from_str(s: &str) -> Result<Self> {
        Self::NAMED
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
            .map(|(t, _)| *t)
            .ok_or_else(|| Error::InvalidConfig {
                setting: "type",
                reason: format!(
                    "unknown DNS query type {s:?} (A, NS, CNAME, SOA, MX, TXT, AAAA, RRSIG, DNSKEY)"
                ),
            })
    }
}

/// A domain name to query, kept in wire form (RFC 1035 §3.1: length-prefixed labels ending
/// with the root's empty label).
///
/// Written as keepalived's `DNS_CHECK name`: `.` for the root (keepalived's default), else
/// labels separated by dots with an optional final dot (`example.com`, `example.com.`).
/// Labels are 1 to 63 octets of printable ASCII other than `.` (no blanks, no escapes) and
/// the whole name at most 255 octets on the wire.
///
/// # Examples
///
/// ```
/// use lb_health::probe::DnsName;
///
/// let n: DnsName = "example.com".parse().unwrap();
/// assert_eq!(n.wire(), b"\x07example\x03com\x00");
/// assert_eq!(n.to_string(), "example.com.");
/// assert_eq!(".".parse::<DnsName>().unwrap().wire(), b"\x00");
/// assert!("a..b".parse::<DnsName>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsName {
    wire: Vec<u8>,
}

impl DnsName {
    /// The root, `.` (keepalived's default name).
    pub fn root() -> Self {
        Self { wire: vec![0] }
    }

    /// The name in wire form, ending with the zero octet.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

impl Default for DnsName {
    /// [`DnsName::root`].
    fn default() -> Self {
        Self::root()
    }
}

impl fmt::Display for DnsName {
    /// Fully qualified: every label followed by a dot (`example.com.`, the root `.`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wire == [0] {
            return f.write_str(".");
        }
        let mut i = 0;
        while let Some(&len) = self.wire.get(i) {
            if len == 0 {
                break;
            }
            let label = &self.wire[i + 1..i + 1 + usize::from(len)];
            // Labels are printable ASCII (checked when parsed).
            f.write_str(std::str::from_utf8(label).map_err(|_| fmt::Error)?)?;
            f.write_str(".")?;
            i += 1 + usize::from(len);
        }
        Ok(())
    }
}

impl FromStr for DnsName {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidConfig`] (setting `name`) for an empty string, an empty label (`a..b`,
    /// `.a`), a label over 63 octets, a name over 255 octets on the wire, or a character
    /// that is not printable ASCII.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidConfig {
            setting: "name",
            reason: format!("DNS name {s:?}: {reason}"),
        };
        if s == "." {
            return Ok(Self::root());
        }
        if s.is_empty() {
            return Err(bad("empty (write . for the root)".into()));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(bad(format!(
                "{c:?} is not printable ASCII (blanks and escapes are not supported)"
            )));
        }
        let relative = s.strip_suffix('.').unwrap_or(s);
        let mut wire = Vec::with_capacity(s.len() + 2);
        for label in relative.split('.') {
            if label.is_empty() {
                return Err(bad("has an empty label".into()));
            }
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| *l <= 63)
                .ok_or_else(|| {
                    bad(format!(
                        "label {label:?} is {} octets long (at most 63)",
                        label.len()
                    ))
                })?;
            wire.push(len);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        if wire.len() > 255 {
            return Err(bad(format!(
                "{} octets on the wire (at most 255)",
                wire.len()
            )));
        }
        Ok(Self { wire })
    }
}

/// Length of the DNS message header (RFC 1035 §4.1.1), octets.
pub const HEADER_LEN: usize = 12;

/// The QR bit of the header's flags: set in responses.
const FLAG_QR: u16 = 0x8000;
/// The RD bit: recursion desired (keepalived sets it).
const FLAG_RD: u16 = 0x0100;
/// The TC bit: the response was truncated.
const FLAG_TC: u16 = 0x0200;
/// Class IN.
const CLASS_IN: u16 = 1;

/// Encodes a standard query for `name` and `qtype` in class IN with identifier `id` and
/// recursion desired, as keepalived sends it: a 12-octet header with QDCOUNT 1, then the
/// question (RFC 1035 §4.1.1, §4.1.2).
///
/// # Examples
///
/// ```
/// use lb_health::probe::{encode_query, DnsName, QueryType};
///
/// let q = encode_query(0x1234, &DnsName::root(), QueryType::SOA);
/// assert_eq!(q, [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1]);
/// ```
pub fn encode_query(id: u16, name: &DnsName, qtype: QueryType) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.wire.len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAG_RD.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
    q.extend_from_slice(&name.wire);
    q.extend_from_slice(&qtype.0.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// What a response's header says (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// RCODE, 0..=15: 0 NOERROR, 1 FORMERR, 2 SERVFAIL, 3 NXDOMAIN, 4 NOTIMP, 5 REFUSED.
    pub rcode: u8,
    /// ANCOUNT: resource records in the answer section.
    pub answers: u16,
    /// TC: the response was truncated.
    pub truncated: bool,
}

impl ResponseHeader {
    /// The RCODE's mnemonic (`"NOERROR"`, `"REFUSED"`…), or `None` for codes without one
    /// here.
    pub fn rcode_name(&self) -> Option<&'static str> {
        Some(match self.rcode {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            _ => return None,
        })
    }
}

/// Reads a datagram as the response to the query with identifier `id`.
///
/// `None` when it is not one: shorter than a header, another identifier, or a query (QR
/// clear). keepalived skips such datagrams and keeps waiting; so does [`DnsProbe`]. What
/// follows the header is not read: keepalived judges the RCODE alone.
///
/// # Examples
///
/// ```
/// use lb_health::probe::parse_response;
///
/// let refused = [0x12, 0x34, 0x81, 0x85, 0, 1, 0, 0, 0, 0, 0, 0];
/// assert_eq!(parse_response(&refused, 0x1234).unwrap().rcode, 5);
/// assert!(parse_response(&refused, 0x4321).is_none());
/// assert!(parse_response(&refused[..11], 0x1234).is_none());
/// ```
pub fn parse_response(datagram: &[u8], id: u16) -> Option<ResponseHeader> {
    let header = datagram.get(..HEADER_LEN)?;
    let got_id = u16::from_be_bytes([header[0], header[1]]);
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if got_id != id || flags & FLAG_QR == 0 {
        return None;
    }
    Some(ResponseHeader {
        // The low four bits.
        rcode: (flags & 0x000f) as u8,
        answers: u16::from_be_bytes([header[6], header[7]]),
        truncated: flags & FLAG_TC != 0,
    })
}

/// A fresh query identifier: unpredictable (the standard library's randomly keyed hasher
/// over a process-wide counter), so that an off-path answer is unlikely to be taken for
/// the server's (RFC 5452 §4.3; the socket's random source port helps too).
fn query_id() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    // The low 16 bits of a keyed hash.
    (h.finish() & 0xffff) as u16
}

/// keepalived `DNS_CHECK`: asks the backend (or `connect_ip`) one question over UDP from a
/// connected socket and passes when the response carries RCODE NOERROR, whatever its
/// answer section holds (keepalived check_dns.c).
///
/// It fails when the response has another RCODE (`REFUSED`, `SERVFAIL`, `NXDOMAIN`…), when
/// an ICMP error comes back (port unreachable: no server), or when no response arrives
/// within the timeout. Datagrams that are not the response (too short, another identifier,
/// a query) are skipped, as keepalived skips them.
///
/// The default question is keepalived's: `.` (the root) of type `SOA`, class IN, recursion
/// desired. keepalived's default `retry` for this check (3) is the caller's to apply.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_health::probe::{DnsProbe, Probe, QueryType};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A server that answers every query with NOERROR and no record.
/// let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
/// let addr = server.local_addr().unwrap();
/// tokio::spawn(async move {
///     let mut buf = [0u8; 512];
///     while let Ok((n, from)) = server.recv_from(&mut buf).await {
///         buf[2] |= 0x80; // QR: a response
///         let _ = server.send_to(&buf[..n], from).await;
///     }
/// });
/// let probe = DnsProbe::new("example.com".parse().unwrap(), QueryType::A);
/// let outcome = probe.probe(addr, Duration::from_secs(1)).await;
/// assert!(outcome.is_up(), "{}", outcome.reason);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct DnsProbe {
    name: DnsName,
    qtype: QueryType,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
}

impl DnsProbe {
    /// A probe asking for `qtype` records of `name` (keepalived `name` and `type`).
    pub fn new(name: DnsName, qtype: QueryType) -> Self {
        Self {
            name,
            qtype,
            ..Self::default()
        }
    }

    target_options! {
        /// Without it the query goes to the backend's own port (DNS servers listen on 53).
        connect_port,
        connect_ip,
        bindto,
    }
}

/// The largest response read, octets: a UDP DNS message is at most 512 octets without
/// EDNS (RFC 1035 §4.2.1), and only the header is judged; anything longer is cut, which
/// does not change the header.
const RECV_BUF: usize = 4096;

#[async_trait]
impl Probe for DnsProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its socket.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        let deadline = deadline(start, timeout);
        let id = query_id();
        let query = encode_query(id, &self.name, self.qtype);
        let question = format!("{} {}", self.name, self.qtype);
        let sock = match tokio::time::timeout_at(deadline, udp_send(to, self.bindto, &query)).await
        {
            Ok(Ok(sock)) => sock,
            Ok(Err(reason)) => return ProbeOutcome::down(reason, elapsed(start)),
            Err(_) => {
                return ProbeOutcome::down(
                    format!("could not send the query to {to} within {timeout:?}"),
                    elapsed(start),
                )
            }
        };
        let mut buf = vec![0u8; RECV_BUF];
        let mut skipped = 0u32;
        // Bounded by the deadline: every turn waits for a datagram until then.
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    let also = if skipped > 0 {
                        format!(" ({skipped} other datagrams skipped)")
                    } else {
                        String::new()
                    };
                    return ProbeOutcome::down(
                        format!("no DNS response from {to} to {question} within {timeout:?}{also}"),
                        elapsed(start),
                    );
                }
                Ok(Err(e)) => {
                    return ProbeOutcome::down(
                        io_reason(&format!("receive from {to}"), &e),
                        elapsed(start),
                    )
                }
                Ok(Ok(n)) => n,
            };
            let Some(header) = parse_response(&buf[..n], id) else {
                skipped = skipped.saturating_add(1);
                continue;
            };
            let rcode = match header.rcode_name() {
                Some(name) => format!("{name} ({})", header.rcode),
                None => format!("RCODE {}", header.rcode),
            };
            return if header.rcode == 0 {
                ProbeOutcome::up(
                    format!(
                        "{rcode} to {question} from {to}, {} answer records{}",
                        header.answers,
                        if header.truncated { ", truncated" } else { "" }
                    ),
                    elapsed(start),
                )
            } else {
                ProbeOutcome::down(format!("{rcode} to {question} from {to}"), elapsed(start))
            };
        }
    }

    fn kind(&self) -> &'static str {
        "dns"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_as_labels() {
        let n: DnsName = "www.example.com.".parse().unwrap();
        assert_eq!(n.wire(), b"\x03www\x07example\x03com\x00");
        assert_eq!(n, "www.example.com".parse().unwrap());
        assert_eq!(n.to_string(), "www.example.com.");
        assert_eq!(DnsName::root().to_string(), ".");
        let longest = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest.parse::<DnsName>().unwrap().wire().len(), 255);
    }

    #[test]
    fn bad_names_say_why() {
        let err = |s: &str| s.parse::<DnsName>().unwrap_err().to_string();
        assert_eq!(
            err("a..b"),
            "invalid name: DNS name \"a..b\": has an empty label"
        );
        assert!(err(".a").contains("empty label"));
        assert!(err("").contains("write . for the root"));
        assert!(err(&"x".repeat(64)).contains("is 64 octets long (at most 63)"));
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert!(err(&long).contains("256 octets on the wire (at most 255)"));
        assert!(err("a b").contains("' ' is not printable ASCII"));
        assert!(err("é.com").contains("not printable ASCII"));
    }

    #[test]
    fn query_types_follow_keepalived_names() {
        for (name, value) in [
            ("A", 1),
            ("ns", 2),
            ("CNAME", 5),
            ("soa", 6),
            ("MX", 15),
            ("TXT", 16),
            ("AAAA", 28),
            ("RRSIG", 46),
            ("dnskey", 48),
        ] {
            let t: QueryType = name.parse().unwrap();
            assert_eq!(t.value(), value);
            assert!(t.to_string().eq_ignore_ascii_case(name));
        }
        assert_eq!(QueryType::default(), QueryType::SOA);
        assert!("PTR"
            .parse::<QueryType>()
            .unwrap_err()
            .to_string()
            .contains("unknown DNS query type \"PTR\""));
    }

    #[test]
    fn queries_carry_the_question() {
        let q = encode_query(0xbeef, &"example.test".parse().unwrap(), QueryType::AAAA);
        assert_eq!(&q[..HEADER_LEN], [0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[HEADER_LEN..], b"\x07example\x04test\x00\x00\x1c\x00\x01");
    }

    #[test]
    fn responses_are_matched_and_judged() {
        let mut r = encode_query(7, &DnsName::root(), QueryType::SOA);
        assert_eq!(parse_response(&r, 7), None, "a query is not a response");
        r[2] |= 0x80;
        r[3] = 0x80 | 3;
        r[7] = 2;
        let h = parse_response(&r, 7).unwrap();
        assert_eq!((h.rcode, h.answers, h.truncated), (3, 2, false));
        assert_eq!(h.rcode_name(), Some("NXDOMAIN"));
        r[2] |= 0x02;
        assert!(parse_response(&r, 7).unwrap().truncated);
        assert_eq!(parse_response(&r, 8), None);
        assert_eq!(parse_response(&r[..HEADER_LEN - 1], 7), None);
        assert_eq!(
            ResponseHeader {
                rcode: 12,
                answers: 0,
                truncated: false
            }
            .rcode_name(),
            None
        );
    }

    #[test]
    fn identifiers_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| query_id()).collect();
        assert!(ids.len() > 32, "{} distinct of 64", ids.len());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary datagrams never panic the parser, and a parsed one carries the id.
            #[test]
            fn any_datagram_parses_or_is_skipped(
                d in proptest::collection::vec(any::<u8>(), 0..64),
                id in any::<u16>(),
            ) {
                if let Some(h) = parse_response(&d, id) {
                    prop_assert_eq!(u16::from_be_bytes([d[0], d[1]]), id);
                    prop_assert!(h.rcode < 16);
                }
            }

            /// Any name of valid labels parses and prints back fully qualified.
            #[test]
            fn valid_names_round_trip(labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..6)) {
                let s = labels.join(".");
                let n: DnsName = s.parse().unwrap();
                prop_assert_eq!(n.to_string(), format!("{s}."));
                prop_assert_eq!(n.wire().len(), s.len() + 2);
            }

            /// Arbitrary text never panics the name parser.
            #[test]
            fn any_text_parses_or_errs(s in ".{0,80}") {
                let _ = s.parse::<DnsName>();
                let _ = s.parse::<QueryType>();
            }
        }
    }
}
