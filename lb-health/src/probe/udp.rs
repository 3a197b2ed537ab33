//! keepalived `UDP_CHECK`: send a datagram from a connected socket, then judge the ICMP
//! errors and the reply, as keepalived 2.x does (keepalived/check/check_udp.c,
//! keepalived/check/layer4.c `udp_bind_connect` and `udp_socket_state`, lib/utils.c
//! `read_hex_str`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;

use super::{deadline, elapsed, io_reason, target, udp_send, Probe};
use crate::error::{Error, Result};
use crate::tracker::ProbeOutcome;

/// What keepalived sends when `UDP_CHECK` has no `payload`: 32 octets repeating
/// `"keepalived check - "` (layer4.c `set_buf` over `UDP_BUFSIZE` 32).
pub const KEEPALIVED_DEFAULT_PAYLOAD: &[u8; 32] = b"keepalived check - keepalived ch";

/// keepalived's default `max_reply_length` (check_udp.c: `UINT8_MAX`).
pub const DEFAULT_MAX_REPLY_LENGTH: u16 = 255;

/// Parses a keepalived hex string without wildcards (`UDP_CHECK payload`), following
/// keepalived's `read_hex_str`: spaces and tabs between octets are skipped; two hex digits
/// make an octet; one digit followed by a space or the end of the string is an octet of that
/// value (`"1 2"` is `[0x01, 0x02]`, `"0102"` the same).
///
/// # Errors
/// [`Error::InvalidHex`] for a character that is not a hex digit (an `x` wildcard included:
/// a payload is sent, not compared), or for a string with no octet.
///
/// # Examples
///
/// ```
/// use lb_health::probe::parse_hex;
///
/// assert_eq!(parse_hex("de ad be ef").unwrap(), [0xde, 0xad, 0xbe, 0xef]);
/// assert_eq!(parse_hex("1 2 0a").unwrap(), [1, 2, 10]);
/// assert!(parse_hex("0x").is_err());
/// assert!(parse_hex("  ").is_err());
/// ```
pub fn parse_hex(s: &str) -> Result<Vec<u8>> {
    parse(s, false).map(|p| p.data)
}

/// Octets with wildcard nibbles, as keepalived reads `require_reply HEX` (lib/utils.c
/// `read_hex_str` with a mask): `x` or `X` in place of a hex digit matches any value of that
/// half octet.
///
/// # Examples
///
/// ```
/// use lb_health::probe::HexPattern;
///
/// let p: HexPattern = "de x5 Xx".parse().unwrap();
/// assert_eq!(p.data(), [0xde, 0x05, 0x00]);
/// assert_eq!(p.mask(), [0x00, 0xf0, 0xff]);
/// assert!(p.matches_prefix(&[0xde, 0xa5, 0x42]));
/// assert!(!p.matches_prefix(&[0xde, 0xa6, 0x42]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HexPattern {
    data: Vec<u8>,
    mask: Vec<u8>,
}

impl HexPattern {
    /// Parses a hex string with `x`/`X` wildcard nibbles; the syntax of [`parse_hex`]
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidHex`] for a character that is neither a hex digit nor `x`/`X`, or
    /// for a string with no octet.
    pub fn parse(s: &str) -> Result<Self> {
        parse(s, true)
    }

    /// The octets, with 0 in wildcard nibbles.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// One octet per octet of [`data`](Self::data): the bits set are wildcards (`0xf0` for
    /// `x5`, `0xff` for `xx`).
    pub fn mask(&self) -> &[u8] {
        &self.mask
    }

    /// The number of octets.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there is no octet (never true for a parsed pattern).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether the first `min(reply.len(), self.len())` octets of `reply` equal the
    /// pattern's outside the wildcard nibbles (check_udp.c `check_udp_reply`: a reply
    /// shorter than the pattern is compared on its own length; `min_reply_length` guards
    /// against that).
    pub fn matches_prefix(&self, reply: &[u8]) -> bool {
        reply
            .iter()
            .zip(self.data.iter().zip(&self.mask))
            .all(|(got, (want, mask))| (got ^ want) & !mask == 0)
    }
}

impl std::str::FromStr for HexPattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// keepalived's `read_hex_str`, with or without wildcards.
fn parse(s: &str, wildcards: bool) -> Result<HexPattern> {
    let bad = |reason: String| Error::InvalidHex {
        value: s.to_owned(),
        reason,
    };
    let bytes = s.as_bytes();
    // A nibble's value and wildcard mask, or an error naming the character at `at`.
    let nibble = |at: usize| -> Result<(u8, u8)> {
        let b = bytes[at];
        match b {
            b'0'..=b'9' => Ok((b - b'0', 0)),
            b'a'..=b'f' => Ok((b - b'a' + 10, 0)),
            b'A'..=b'F' => Ok((b - b'A' + 10, 0)),
            b'x' | b'X' if wildcards => Ok((0, 0x0f)),
            b'x' | b'X' => Err(bad(format!(
                "wildcard {:?} at offset {at}: wildcards are for replies, not payloads",
                char::from(b)
            ))),
            _ => {
                let c = s[at..].chars().next().unwrap_or('\u{fffd}');
                Err(bad(format!(
                    "{c:?} at offset {at} is not a hex digit (0-9, a-f, A-F{})",
                    if wildcards { ", x for any" } else { "" }
                )))
            }
        }
    };
    let mut out = HexPattern {
        data: Vec::new(),
        mask: Vec::new(),
    };
    let mut i = 0;
    loop {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let (mut value, mut mask) = nibble(i)?;
        i += 1;
        // As keepalived: only a space (or the end) ends a one-digit octet; a tab there is
        // read as the second digit and refused.
        if i < bytes.len() && bytes[i] != b' ' {
            let (v, m) = nibble(i)?;
            i += 1;
            value = value << 4 | v;
            mask = mask << 4 | m;
        }
        out.data.push(value);
        out.mask.push(mask);
    }
    if out.data.is_empty() {
        return Err(bad("no octet".into()));
    }
    Ok(out)
}

/// The reply a `require_reply HEX` check wants: its length within
/// [`min_len`](Self::min_len)..=[`max_len`](Self::max_len) octets, and its first
/// `min(length, pattern length)` octets matching the [`HexPattern`] (check_udp.c
/// `check_udp_reply`).
///
/// # Examples
///
/// ```
/// use lb_health::probe::{HexPattern, UdpReply};
///
/// let r = UdpReply::new("01 xx".parse::<HexPattern>()?, 2, 4)?;
/// assert!(r.matches(&[1, 7]));
/// assert!(r.matches(&[1, 7, 9, 9]));
/// assert!(!r.matches(&[1]), "shorter than min_len");
/// assert!(!r.matches(&[1, 7, 9, 9, 9]), "longer than max_len");
/// assert!(!r.matches(&[2, 7]));
/// assert!(UdpReply::new("01".parse()?, 5, 4).is_err());
/// # Ok::<(), lb_health::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpReply {
    pattern: HexPattern,
    min_len: u16,
    max_len: u16,
}

impl UdpReply {
    /// A reply matching `pattern`, of `min_len..=max_len` octets (keepalived
    /// `min_reply_length`, default 0, and `max_reply_length`, default
    /// [`DEFAULT_MAX_REPLY_LENGTH`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (setting `min_reply_length`) when `min_len > max_len`: no
    /// reply could pass (keepalived reports it as a configuration error too).
    pub fn new(pattern: HexPattern, min_len: u16, max_len: u16) -> Result<Self> {
        if min_len > max_len {
            return Err(Error::InvalidConfig {
                setting: "min_reply_length",
                reason: format!(
                    "{min_len} is above max_reply_length {max_len}: every reply would fail"
                ),
            });
        }
        Ok(Self {
            pattern,
            min_len,
            max_len,
        })
    }

    /// The pattern the reply starts with.
    pub fn pattern(&self) -> &HexPattern {
        &self.pattern
    }

    /// The shortest reply that passes, in octets.
    pub fn min_len(&self) -> u16 {
        self.min_len
    }

    /// The longest reply that passes, in octets.
    pub fn max_len(&self) -> u16 {
        self.max_len
    }

    /// Whether `reply` (a whole datagram) passes.
    pub fn matches(&self, reply: &[u8]) -> bool {
        (usize::from(self.min_len)..=usize::from(self.max_len)).contains(&reply.len())
            && self.pattern.matches_prefix(reply)
    }
}

/// When a UDP check passes (keepalived `require_reply`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UdpExpect {
    /// No `require_reply`: the check passes unless an ICMP error (port or host unreachable)
    /// comes back within the timeout. Silence passes, and so does any reply.
    #[default]
    NoIcmpError,
    /// `require_reply` without data: any datagram within the timeout passes; silence or an
    /// ICMP error fails.
    AnyReply,
    /// `require_reply HEX`: a datagram within the timeout that [`UdpReply::matches`].
    Reply(UdpReply),
}

/// Sends `payload` from a connected UDP socket (with `IP_RECVERR`/`IPV6_RECVERR` set, as
/// keepalived's `udp_bind_connect`, so that host and network unreachable errors are
/// reported too), then waits up to the timeout for a reply or an ICMP error and judges them
/// by its [`UdpExpect`].
///
/// One difference with keepalived: every ICMP error the kernel reports on the socket fails
/// the check, where keepalived reads the error queue and fails only on "destination
/// unreachable" (a "time exceeded" passes there).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_health::probe::{Probe, UdpExpect, UdpProbe};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
/// let addr = silent.local_addr().unwrap();
/// let t = Duration::from_millis(100);
/// // Without require_reply, silence passes; with it, it fails.
/// assert!(UdpProbe::new(*b"ping").probe(addr, t).await.is_up());
/// let require = UdpProbe::new(*b"ping").expect(UdpExpect::AnyReply);
/// assert!(!require.probe(addr, t).await.is_up());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UdpProbe {
    payload: Vec<u8>,
    expect: UdpExpect,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
}

impl Default for UdpProbe {
    /// keepalived's `UDP_CHECK {}`: [`KEEPALIVED_DEFAULT_PAYLOAD`], no `require_reply`.
    fn default() -> Self {
        Self::new(*KEEPALIVED_DEFAULT_PAYLOAD)
    }
}

impl UdpProbe {
    /// A probe sending `payload` (keepalived `payload`) and passing unless an ICMP error
    /// comes back ([`UdpExpect::NoIcmpError`]).
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            expect: UdpExpect::NoIcmpError,
            connect_port: None,
            connect_ip: None,
            bindto: None,
        }
    }

    /// When the check passes (keepalived `require_reply`, `min_reply_length`,
    /// `max_reply_length`).
    #[must_use]
    pub fn expect(mut self, expect: UdpExpect) -> Self {
        self.expect = expect;
        self
    }

    target_options! {
        connect_port,
        connect_ip,
        bindto,
    }
}

#[async_trait]
impl Probe for UdpProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its socket.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        let deadline = deadline(start, timeout);
        let sock = match tokio::time::timeout_at(deadline, udp_send(to, self.bindto, &self.payload))
            .await
        {
            Ok(Ok(sock)) => sock,
            Ok(Err(reason)) => return ProbeOutcome::down(reason, elapsed(start)),
            Err(_) => {
                return ProbeOutcome::down(
                    format!("could not send to {to} within {timeout:?}"),
                    elapsed(start),
                )
            }
        };
        // keepalived receives into max_reply_length + 1 octets; a whole datagram is read
        // here and its length compared, which judges every reply the same way.
        let mut buf = vec![0u8; 65_536];
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => match self.expect {
                UdpExpect::NoIcmpError => ProbeOutcome::up(
                    format!("no ICMP error from {to} within {timeout:?}"),
                    elapsed(start),
                ),
                UdpExpect::AnyReply | UdpExpect::Reply(_) => ProbeOutcome::down(
                    format!("no UDP reply from {to} within {timeout:?}"),
                    elapsed(start),
                ),
            },
            Ok(Err(e)) => {
                ProbeOutcome::down(io_reason(&format!("receive from {to}"), &e), elapsed(start))
            }
            Ok(Ok(n)) => {
                let reply = &buf[..n];
                match &self.expect {
                    UdpExpect::NoIcmpError | UdpExpect::AnyReply => {
                        ProbeOutcome::up(format!("{n} octet reply"), elapsed(start))
                    }
                    UdpExpect::Reply(r) if r.matches(reply) => {
                        ProbeOutcome::up(format!("expected {n} octet reply"), elapsed(start))
                    }
                    UdpExpect::Reply(r) => {
                        let why = if !(usize::from(r.min_len)..=usize::from(r.max_len)).contains(&n)
                        {
                            format!(
                                "{n} octet reply, expected {}..={} octets",
                                r.min_len, r.max_len
                            )
                        } else {
                            format!("{n} octet reply does not match require_reply")
                        };
                        ProbeOutcome::down(why, elapsed(start))
                    }
                }
            }
        }
    }

    fn kind(&self) -> &'static str {
        "udp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str, wildcards: bool) -> String {
        parse(s, wildcards).unwrap_err().to_string()
    }

    #[test]
    fn octets_and_separators_follow_read_hex_str() {
        assert_eq!(parse_hex("0102").unwrap(), [1, 2]);
        assert_eq!(parse_hex("01 02").unwrap(), [1, 2]);
        assert_eq!(parse_hex(" \t01\t 02 \t").unwrap(), [1, 2]);
        assert_eq!(parse_hex("1 2").unwrap(), [1, 2]);
        assert_eq!(parse_hex("f").unwrap(), [0x0f]);
        assert_eq!(parse_hex("abc").unwrap(), [0xab, 0x0c]);
        assert_eq!(parse_hex("AbCdEf").unwrap(), [0xab, 0xcd, 0xef]);
        // A one-digit octet ends at a space only: keepalived reads the tab as a digit.
        assert_eq!(
            err("1\t2", false),
            "invalid hex string \"1\\t2\": '\\t' at offset 1 is not a hex digit (0-9, a-f, A-F)"
        );
    }

    #[test]
    fn bad_strings_are_refused_with_the_offending_character() {
        assert_eq!(err("", false), "invalid hex string \"\": no octet");
        assert_eq!(err(" \t ", true), "invalid hex string \" \\t \": no octet");
        assert_eq!(
            err("01 0g", false),
            "invalid hex string \"01 0g\": 'g' at offset 4 is not a hex digit (0-9, a-f, A-F)"
        );
        assert_eq!(
            err("é", true),
            "invalid hex string \"é\": 'é' at offset 0 is not a hex digit (0-9, a-f, A-F, x for any)"
        );
        assert_eq!(
            err("0x", false),
            "invalid hex string \"0x\": wildcard 'x' at offset 1: wildcards are for replies, not payloads"
        );
        assert!(parse("0x", true).is_ok());
    }

    #[test]
    fn wildcards_mask_nibbles() {
        let p = HexPattern::parse("x1 2X xx 3").unwrap();
        assert_eq!(p.data(), [0x01, 0x20, 0x00, 0x03]);
        assert_eq!(p.mask(), [0xf0, 0x0f, 0xff, 0x00]);
        let p = HexPattern::parse("X").unwrap();
        assert_eq!((p.data(), p.mask()), (&[0u8][..], &[0x0fu8][..]));
    }

    #[test]
    fn replies_match_on_the_shorter_length() {
        let p = HexPattern::parse("ab xd").unwrap();
        assert!(p.matches_prefix(&[0xab, 0x0d]));
        assert!(
            p.matches_prefix(&[0xab, 0xfd, 0x99]),
            "octets past the pattern"
        );
        assert!(
            p.matches_prefix(&[0xab]),
            "a shorter reply compares its own length"
        );
        assert!(p.matches_prefix(&[]));
        assert!(!p.matches_prefix(&[0xab, 0xfe]));
        assert!(!p.matches_prefix(&[0xbb]));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn hex(bytes: &[u8], sep: &str, upper: bool) -> String {
            bytes
                .iter()
                .map(|b| {
                    if upper {
                        format!("{b:02X}")
                    } else {
                        format!("{b:02x}")
                    }
                })
                .collect::<Vec<_>>()
                .join(sep)
        }

        proptest! {
            /// Any octets written as two-digit hex, separated or not, parse back.
            #[test]
            fn written_octets_parse_back(
                bytes in proptest::collection::vec(any::<u8>(), 1..64),
                sep in prop_oneof![Just(""), Just(" "), Just("\t"), Just(" \t ")],
                upper in any::<bool>(),
            ) {
                let s = hex(&bytes, sep, upper);
                prop_assert_eq!(parse_hex(&s).unwrap(), bytes.clone());
                let p = HexPattern::parse(&s).unwrap();
                prop_assert_eq!(p.data(), &bytes[..]);
                prop_assert!(p.mask().iter().all(|m| *m == 0));
                prop_assert!(p.matches_prefix(&bytes));
            }

            /// A wildcard nibble matches every value there, and only the other nibble
            /// decides.
            #[test]
            fn a_wildcard_nibble_matches_any_value(
                bytes in proptest::collection::vec(any::<u8>(), 1..16),
                at in any::<proptest::sample::Index>(),
                high in any::<bool>(),
                other in any::<u8>(),
            ) {
                let i = at.index(bytes.len());
                let mut s: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut chars: Vec<char> = s[i].chars().collect();
                chars[usize::from(!high)] = 'x';
                s[i] = chars.into_iter().collect();
                let p = HexPattern::parse(&s.join(" ")).unwrap();
                let keep = if high { 0x0f } else { 0xf0 };
                let mut reply = bytes.clone();
                reply[i] = (bytes[i] & keep) | (other & !keep);
                prop_assert!(p.matches_prefix(&reply));
                reply[i] ^= keep & 0x11;
                prop_assert!(!p.matches_prefix(&reply));
            }

            /// Arbitrary text never panics the parser.
            #[test]
            fn any_text_parses_or_errs(s in ".{0,40}") {
                let _ = parse_hex(&s);
                let _ = HexPattern::parse(&s);
            }
        }
    }
}
