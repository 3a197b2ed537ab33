//! ICMP and ICMPv6 echo messages, sans-IO (smoltcp-style `wire` layer): the request
//! [`PingProbe`](super::PingProbe) sends and the judgement of what its socket receives.
//!
//! * [`Packet`] is a zero-copy view over one echo message (the ICMP header and its data,
//!   without an IP header), with getters, setters and the [RFC 1071] checksum.
//! * [`EchoRepr`] is a valid echo request or reply: [`EchoRepr::parse`] checks the type and
//!   code, [`EchoRepr::emit`] writes one.
//! * [`Expect`] says whether a datagram read from the socket is the reply to our request:
//!   [`Expect::check`] strips the IPv4 header a raw IPv4 socket delivers ([`Framing`]),
//!   then compares type, identifier, sequence number and data.
//!
//! The layout is the same in both families ([RFC 792], "Echo or Echo Reply Message";
//! [RFC 4443 §4]); only the type values differ (8/0 for ICMP, 128/129 for ICMPv6):
//!
//! ```text
//!  | type | code = 0 | checksum | identifier | sequence number | data ... |
//!    0      1          2..4       4..6         6..8              8..
//! ```
//!
//! The ICMP checksum covers the message ([RFC 792]); the ICMPv6 one also covers a
//! pseudo-header, and the kernel computes it on every ICMPv6 socket ([RFC 3542 §3.1]), so
//! it is left 0 there and not verified (the kernel drops ICMPv6 messages with a bad
//! checksum before a socket sees them).
//!
//! # Panic contract (copied from smoltcp)
//!
//! * After [`Packet::check_len`] (or [`Packet::new_checked`]) succeeds, no accessor of
//!   [`Packet`] panics.
//! * [`EchoRepr::parse`] and [`Expect::check`] never panic, whatever the bytes.
//! * [`EchoRepr::emit`] never panics on a buffer of exactly [`EchoRepr::buffer_len`] bytes.
//!
//! [RFC 792]: https://www.rfc-editor.org/rfc/rfc792
//! [RFC 1071]: https://www.rfc-editor.org/rfc/rfc1071
//! [RFC 3542 §3.1]: https://www.rfc-editor.org/rfc/rfc3542#section-3.1
//! [RFC 4443 §4]: https://www.rfc-editor.org/rfc/rfc4443#section-4

/// Length of the echo header (type, code, checksum, identifier, sequence number), in octets.
pub(super) const HEADER_LEN: usize = 8;

/// The number of data octets keepalived sends (check_ping.c `ICMP_BUFSIZE`).
pub(super) const DATA_LEN: usize = 128;

/// What every request carries: keepalived's pattern (layer4.c `set_buf`, the same text as
/// its `UDP_CHECK` payload) over [`DATA_LEN`] octets, recognisable in a capture.
pub(super) const DATA: [u8; DATA_LEN] = pattern(b"keepalived check - ");

const fn pattern(text: &[u8]) -> [u8; DATA_LEN] {
    let mut out = [0; DATA_LEN];
    let mut i = 0;
    while i < DATA_LEN {
        out[i] = text[i % text.len()];
        i += 1;
    }
    out
}

/// Length of an IPv4 header without options, in octets.
const IPV4_MIN_HEADER_LEN: usize = 20;

/// IP protocol number of ICMP.
const IPPROTO_ICMP: u8 = 1;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const SEQ_NO: Field = 6..8;
    pub(super) const DATA: usize = 8;
}

/// Why a datagram is not the reply the probe waits for. The probe skips it and keeps
/// waiting; the text is for trace logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Skip {
    /// Shorter than its headers say or need.
    #[error("truncated datagram: {len} octets, need {needed}")]
    Truncated {
        /// Octets available.
        len: usize,
        /// Octets needed.
        needed: usize,
    },
    /// A raw IPv4 socket delivered something that is not IPv4.
    #[error("IP version {0}, expected 4")]
    IpVersion(u8),
    /// An IPv4 header length (IHL × 4) below 20 octets.
    #[error("IPv4 header length {0} octets is below 20")]
    IpHeaderLen(usize),
    /// An IPv4 total length shorter than its own header.
    #[error("IPv4 total length {total} octets is below the header's {header}")]
    IpTotalLen {
        /// The total length field.
        total: usize,
        /// The header length.
        header: usize,
    },
    /// An IPv4 datagram that does not carry ICMP.
    #[error("IP protocol {0}, expected 1 (ICMP)")]
    IpProtocol(u8),
    /// The ICMP checksum does not verify; the value is the one received.
    #[error("bad ICMP checksum {0:#06x}")]
    Checksum(u16),
    /// Another ICMP message (our own request looped back to a raw socket, an error, a
    /// neighbour discovery message…).
    #[error("ICMP type {msg_type} code {code} is not an echo reply")]
    NotEchoReply {
        /// The type received.
        msg_type: u8,
        /// The code received.
        code: u8,
    },
    /// An echo reply to another socket (a raw socket sees every reply from the target).
    #[error("echo reply identifier {got}, expected {want}")]
    Ident {
        /// The identifier received.
        got: u16,
        /// Ours.
        want: u16,
    },
    /// An echo reply to another request.
    #[error("echo reply sequence number {got}, expected {want}")]
    SeqNo {
        /// The sequence number received.
        got: u16,
        /// Ours.
        want: u16,
    },
    /// An echo reply whose data is not what we sent.
    #[error("echo reply with {0} data octets that differ from the request's")]
    Data(usize),
}

/// The address family, which decides the type values and the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// ICMP ([RFC 792]).
    ///
    /// [RFC 792]: https://www.rfc-editor.org/rfc/rfc792
    V4,
    /// ICMPv6 ([RFC 4443]).
    ///
    /// [RFC 4443]: https://www.rfc-editor.org/rfc/rfc4443
    V6,
}

impl Family {
    /// The family of `ip`.
    pub(super) const fn of(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(_) => Self::V4,
            std::net::IpAddr::V6(_) => Self::V6,
        }
    }

    /// The type value of `kind` in this family.
    pub(super) const fn msg_type(self, kind: EchoKind) -> u8 {
        match (self, kind) {
            (Self::V4, EchoKind::Request) => 8,
            (Self::V4, EchoKind::Reply) => 0,
            (Self::V6, EchoKind::Request) => 128,
            (Self::V6, EchoKind::Reply) => 129,
        }
    }

    /// The kind of echo message `msg_type` is in this family, if any.
    const fn kind(self, msg_type: u8) -> Option<EchoKind> {
        match (self, msg_type) {
            (Self::V4, 8) | (Self::V6, 128) => Some(EchoKind::Request),
            (Self::V4, 0) | (Self::V6, 129) => Some(EchoKind::Reply),
            _ => None,
        }
    }
}

/// Request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EchoKind {
    /// Echo (request): ICMP type 8, ICMPv6 type 128.
    Request,
    /// Echo reply: ICMP type 0, ICMPv6 type 129.
    Reply,
}

/// The [RFC 1071] internet checksum of `data`: the one's complement of the one's
/// complement sum of its 16-bit big-endian words (an odd last octet padded with zero).
/// A message whose checksum field is filled sums to a checksum of 0.
///
/// [RFC 1071]: https://www.rfc-editor.org/rfc/rfc1071
pub(super) fn checksum(data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    let mut sum: u64 = words
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// A zero-copy view over one echo message.
#[derive(Debug, Clone)]
pub(super) struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking its length; accessors may panic on a short one.
    pub(super) const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub(super) fn new_checked(buffer: T) -> Result<Self, Skip> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Whether the buffer holds the [`HEADER_LEN`] octets of the header.
    pub(super) fn check_len(&self) -> Result<(), Skip> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Skip::Truncated {
                len,
                needed: HEADER_LEN,
            });
        }
        Ok(())
    }

    /// The message type.
    #[inline]
    pub(super) fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code (0 for echo messages).
    #[inline]
    pub(super) fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    #[inline]
    pub(super) fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The identifier.
    #[inline]
    pub(super) fn ident(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::IDENT];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The sequence number.
    #[inline]
    pub(super) fn seq_no(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::SEQ_NO];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Whether the ICMP (IPv4) checksum verifies. Always true under `cfg(fuzzing)`.
    pub(super) fn verify_checksum(&self) -> bool {
        cfg!(fuzzing) || checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub(super) fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the message code.
    #[inline]
    pub(super) fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub(super) fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the identifier.
    #[inline]
    pub(super) fn set_ident(&mut self, value: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the sequence number.
    #[inline]
    pub(super) fn set_seq_no(&mut self, value: u16) {
        self.buffer.as_mut()[field::SEQ_NO].copy_from_slice(&value.to_be_bytes());
    }

    /// The data after the header, writable.
    #[inline]
    pub(super) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the ICMP (IPv4) checksum over the whole buffer and writes it.
    pub(super) fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }
}

/// A valid echo request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EchoRepr<'a> {
    /// ICMP or ICMPv6.
    pub(super) family: Family,
    /// Request or reply.
    pub(super) kind: EchoKind,
    /// The identifier (on a ping socket the kernel replaces it by the socket's own).
    pub(super) ident: u16,
    /// The sequence number.
    pub(super) seq_no: u16,
    /// The data after the header.
    pub(super) data: &'a [u8],
}

impl<'a> EchoRepr<'a> {
    /// Reads an echo message of `family`: type echo request or reply, code 0. The checksum
    /// is not verified here (see [`Expect::check`]).
    pub(super) fn parse<T: AsRef<[u8]> + ?Sized>(
        family: Family,
        packet: &Packet<&'a T>,
    ) -> Result<Self, Skip> {
        packet.check_len()?;
        let buffer: &'a [u8] = packet.buffer.as_ref();
        let (msg_type, code) = (packet.msg_type(), packet.code());
        let kind = match family.kind(msg_type) {
            Some(kind) if code == 0 => kind,
            _ => return Err(Skip::NotEchoReply { msg_type, code }),
        };
        Ok(Self {
            family,
            kind,
            ident: packet.ident(),
            seq_no: packet.seq_no(),
            data: &buffer[field::DATA..],
        })
    }

    /// The length of the message, in octets.
    pub(super) const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Writes the message into `packet`, which must hold exactly
    /// [`buffer_len`](Self::buffer_len) octets. The ICMP checksum is filled; the ICMPv6 one
    /// is left 0 for the kernel ([RFC 3542 §3.1]).
    ///
    /// # Panics
    /// When the buffer is shorter than [`buffer_len`](Self::buffer_len) or longer.
    ///
    /// [RFC 3542 §3.1]: https://www.rfc-editor.org/rfc/rfc3542#section-3.1
    pub(super) fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_msg_type(self.family.msg_type(self.kind));
        packet.set_code(0);
        packet.set_ident(self.ident);
        packet.set_seq_no(self.seq_no);
        packet.data_mut().copy_from_slice(self.data);
        match self.family {
            Family::V4 => packet.fill_checksum(),
            Family::V6 => packet.set_checksum(0),
        }
    }
}

/// How a datagram read from the socket starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// At the ICMP header: ping sockets of both families, raw ICMPv6 sockets.
    Icmp,
    /// At the IPv4 header, options included: raw IPv4 sockets.
    Ipv4,
}

/// The ICMP message inside `datagram`: after the IPv4 header (IHL × 4 octets, validated
/// against the length read and the total length) for [`Framing::Ipv4`], the datagram
/// itself for [`Framing::Icmp`].
pub(super) fn icmp_message(datagram: &[u8], framing: Framing) -> Result<&[u8], Skip> {
    match framing {
        Framing::Icmp => Ok(datagram),
        Framing::Ipv4 => {
            let len = datagram.len();
            if len < IPV4_MIN_HEADER_LEN {
                return Err(Skip::Truncated {
                    len,
                    needed: IPV4_MIN_HEADER_LEN,
                });
            }
            let version = datagram[0] >> 4;
            if version != 4 {
                return Err(Skip::IpVersion(version));
            }
            let header = usize::from(datagram[0] & 0x0f) * 4;
            if header < IPV4_MIN_HEADER_LEN {
                return Err(Skip::IpHeaderLen(header));
            }
            // Linux gives raw sockets the header as it came, total length in network order.
            let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
            if total < header {
                return Err(Skip::IpTotalLen { total, header });
            }
            if len < total {
                return Err(Skip::Truncated { len, needed: total });
            }
            let protocol = datagram[9];
            if protocol != IPPROTO_ICMP {
                return Err(Skip::IpProtocol(protocol));
            }
            Ok(&datagram[header..total])
        }
    }
}

/// The reply the probe waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expect<'a> {
    /// ICMP or ICMPv6.
    pub(super) family: Family,
    /// Our identifier, compared on raw sockets; `None` on a ping socket, where the kernel
    /// replaces it by the socket's own and delivers only the replies that carry it.
    pub(super) ident: Option<u16>,
    /// The request's sequence number.
    pub(super) seq_no: u16,
    /// The request's data, which the reply must echo exactly.
    pub(super) data: &'a [u8],
}

impl Expect<'_> {
    /// `Ok` when `datagram`, framed as `framing`, is the echo reply to our request; else
    /// why it is not. Never panics.
    pub(super) fn check(&self, datagram: &[u8], framing: Framing) -> Result<(), Skip> {
        let message = icmp_message(datagram, framing)?;
        let packet = Packet::new_checked(message)?;
        let repr = EchoRepr::parse(self.family, &packet).and_then(|r| match r.kind {
            EchoKind::Reply => Ok(r),
            EchoKind::Request => Err(Skip::NotEchoReply {
                msg_type: packet.msg_type(),
                code: packet.code(),
            }),
        })?;
        if self.family == Family::V4 && !packet.verify_checksum() {
            return Err(Skip::Checksum(packet.checksum()));
        }
        if let Some(want) = self.ident {
            if repr.ident != want {
                return Err(Skip::Ident {
                    got: repr.ident,
                    want,
                });
            }
        }
        if repr.seq_no != self.seq_no {
            return Err(Skip::SeqNo {
                got: repr.seq_no,
                want: self.seq_no,
            });
        }
        if repr.data != self.data {
            return Err(Skip::Data(repr.data.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo message as the tests build it, into a `0xa5`-filled buffer so that unset
    /// fields show.
    fn emit(repr: &EchoRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }

    fn reply(family: Family, ident: u16, seq_no: u16) -> Vec<u8> {
        emit(&EchoRepr {
            family,
            kind: EchoKind::Reply,
            ident,
            seq_no,
            data: &DATA,
        })
    }

    /// A 20 + `options.len()` octet IPv4 header carrying `payload` as ICMP.
    fn ipv4(options: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let header = 20 + options.len();
        let total = u16::try_from(header + payload.len()).unwrap();
        let ihl = u8::try_from(header / 4).unwrap();
        let mut d = vec![0x40 | ihl, 0];
        d.extend_from_slice(&total.to_be_bytes());
        d.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, IPPROTO_ICMP, 0, 0]);
        d.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        d.extend_from_slice(options);
        d.extend_from_slice(payload);
        d
    }

    fn expect(family: Family, ident: Option<u16>, seq_no: u16) -> Expect<'static> {
        Expect {
            family,
            ident,
            seq_no,
            data: &DATA,
        }
    }

    #[test]
    fn checksum_matches_known_vectors() {
        // RFC 1071 §3, "Numerical Examples": the sum of these words is 0xddf2.
        let rfc = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&rfc), !0xddf2);
        assert_eq!(checksum(&rfc), 0x220d);
        // An odd length pads the last octet with zero.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
        // An echo request id 0x1234 seq 1 without data: 0x0800 + 0x1234 + 0x0001.
        let mut req = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01];
        assert_eq!(checksum(&req), 0xe5ca);
        req[2..4].copy_from_slice(&0xe5cau16.to_be_bytes());
        assert_eq!(checksum(&req), 0, "a filled message sums to 0");
        // Carries wrap around: 0xffff + 0x0001 = 0x0001 in one's complement.
        assert_eq!(checksum(&[0xff, 0xff, 0x00, 0x01]), !0x0001);
    }

    #[test]
    fn requests_encode_as_on_the_wire() {
        let v4 = emit(&EchoRepr {
            family: Family::V4,
            kind: EchoKind::Request,
            ident: 0x1234,
            seq_no: 0x0102,
            data: &DATA,
        });
        assert_eq!(v4.len(), 8 + 128);
        assert_eq!(v4[..2], [8, 0]);
        assert_eq!(v4[4..8], [0x12, 0x34, 0x01, 0x02]);
        assert_eq!(&v4[8..27], b"keepalived check - ");
        assert_eq!(&v4[27..46], b"keepalived check - ");
        assert_eq!(v4[8..], DATA);
        assert_eq!(checksum(&v4), 0, "checksum filled");
        assert_ne!(v4[2..4], [0, 0]);
        // The whole message, checksum included, against a sum done by hand.
        let mut sum: u32 = 0x0800 + 0x1234 + 0x0102;
        for w in DATA.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(u32::from(u16::from_be_bytes([v4[2], v4[3]])), !sum & 0xffff);

        let v6 = emit(&EchoRepr {
            family: Family::V6,
            kind: EchoKind::Request,
            ident: 7,
            seq_no: 9,
            data: b"abc",
        });
        assert_eq!(
            v6,
            [128, 0, 0, 0, 0, 7, 0, 9, b'a', b'b', b'c'],
            "kernel sums"
        );
    }

    #[test]
    fn emit_then_parse_round_trips() {
        for family in [Family::V4, Family::V6] {
            for kind in [EchoKind::Request, EchoKind::Reply] {
                let repr = EchoRepr {
                    family,
                    kind,
                    ident: 0xbeef,
                    seq_no: 0xffff,
                    data: b"odd",
                };
                let buf = emit(&repr);
                let packet = Packet::new_checked(&buf[..]).unwrap();
                assert_eq!(EchoRepr::parse(family, &packet), Ok(repr));
            }
        }
    }

    #[test]
    fn replies_parse_in_every_framing() {
        // Ping socket, IPv4: no IP header; the kernel's identifier is not compared.
        let r = reply(Family::V4, 0x4242, 5);
        assert_eq!(expect(Family::V4, None, 5).check(&r, Framing::Icmp), Ok(()));
        // Raw IPv4: the IP header first, without and with options (4 × NOP, and a router
        // alert + end of list).
        let e = expect(Family::V4, Some(0x4242), 5);
        assert_eq!(e.check(&ipv4(&[], &r), Framing::Ipv4), Ok(()));
        assert_eq!(e.check(&ipv4(&[1, 1, 1, 1], &r), Framing::Ipv4), Ok(()));
        let options = [148, 4, 0, 0, 0, 0, 0, 0];
        assert_eq!(e.check(&ipv4(&options, &r), Framing::Ipv4), Ok(()));
        // IPv6, raw and ping sockets alike: no IP header, checksum by the kernel.
        let r6 = reply(Family::V6, 0x4242, 5);
        assert_eq!(r6[..2], [129, 0]);
        let e6 = expect(Family::V6, Some(0x4242), 5);
        assert_eq!(e6.check(&r6, Framing::Icmp), Ok(()));
        assert_eq!(
            expect(Family::V6, None, 5).check(&r6, Framing::Icmp),
            Ok(())
        );
    }

    #[test]
    fn a_raw_datagram_past_the_total_length_is_cut_there() {
        let r = reply(Family::V4, 1, 2);
        let mut d = ipv4(&[], &r);
        d.extend_from_slice(&[0xee; 6]);
        assert_eq!(
            expect(Family::V4, Some(1), 2).check(&d, Framing::Ipv4),
            Ok(())
        );
    }

    #[test]
    fn other_messages_are_skipped() {
        let e = expect(Family::V4, Some(1), 2);
        // Our own request, looped back to a raw socket.
        let req = emit(&EchoRepr {
            family: Family::V4,
            kind: EchoKind::Request,
            ident: 1,
            seq_no: 2,
            data: &DATA,
        });
        assert_eq!(
            e.check(&ipv4(&[], &req), Framing::Ipv4),
            Err(Skip::NotEchoReply {
                msg_type: 8,
                code: 0
            })
        );
        // A destination unreachable.
        let mut unreach = reply(Family::V4, 1, 2);
        unreach[0] = 3;
        unreach[1] = 1;
        assert!(matches!(
            e.check(&ipv4(&[], &unreach), Framing::Ipv4),
            Err(Skip::NotEchoReply {
                msg_type: 3,
                code: 1
            })
        ));
        // An echo reply with a non-zero code.
        let mut coded = reply(Family::V4, 1, 2);
        coded[1] = 1;
        assert!(matches!(
            e.check(&coded, Framing::Icmp),
            Err(Skip::NotEchoReply { code: 1, .. })
        ));
        // An IPv4 echo reply type is not an ICMPv6 one, and the other way round.
        let r4 = reply(Family::V4, 1, 2);
        assert!(matches!(
            expect(Family::V6, Some(1), 2).check(&r4, Framing::Icmp),
            Err(Skip::NotEchoReply { msg_type: 0, .. })
        ));
        let r6 = reply(Family::V6, 1, 2);
        assert!(matches!(
            e.check(&r6, Framing::Icmp),
            Err(Skip::NotEchoReply { msg_type: 129, .. })
        ));
        // An ICMPv6 neighbour solicitation.
        let mut ns = r6.clone();
        ns[0] = 135;
        assert!(matches!(
            expect(Family::V6, Some(1), 2).check(&ns, Framing::Icmp),
            Err(Skip::NotEchoReply { msg_type: 135, .. })
        ));
    }

    #[test]
    fn mismatched_identifier_sequence_and_data_are_skipped() {
        let e = expect(Family::V4, Some(1), 2);
        let other_id = ipv4(&[], &reply(Family::V4, 9, 2));
        assert_eq!(
            e.check(&other_id, Framing::Ipv4),
            Err(Skip::Ident { got: 9, want: 1 })
        );
        // ... which a ping socket does not compare.
        let ping = expect(Family::V4, None, 2);
        assert_eq!(ping.check(&other_id[20..], Framing::Icmp), Ok(()));
        let other_seq = ipv4(&[], &reply(Family::V4, 1, 3));
        assert_eq!(
            e.check(&other_seq, Framing::Ipv4),
            Err(Skip::SeqNo { got: 3, want: 2 })
        );
        assert_eq!(
            ping.check(&other_seq[20..], Framing::Icmp),
            Err(Skip::SeqNo { got: 3, want: 2 })
        );
        let e6 = expect(Family::V6, Some(1), 2);
        assert!(matches!(
            e6.check(&reply(Family::V6, 1, 4), Framing::Icmp),
            Err(Skip::SeqNo { got: 4, .. })
        ));
        assert!(matches!(
            e6.check(&reply(Family::V6, 5, 2), Framing::Icmp),
            Err(Skip::Ident { got: 5, .. })
        ));
        // Other data, with a valid checksum, and shorter data.
        let other_data = emit(&EchoRepr {
            family: Family::V4,
            kind: EchoKind::Reply,
            ident: 1,
            seq_no: 2,
            data: &[0x5a; DATA_LEN],
        });
        assert_eq!(
            e.check(&ipv4(&[], &other_data), Framing::Ipv4),
            Err(Skip::Data(DATA_LEN))
        );
        let short = emit(&EchoRepr {
            family: Family::V6,
            kind: EchoKind::Reply,
            ident: 1,
            seq_no: 2,
            data: &DATA[..100],
        });
        assert_eq!(e6.check(&short, Framing::Icmp), Err(Skip::Data(100)));
    }

    #[test]
    fn a_bad_ipv4_checksum_is_skipped() {
        let mut r = reply(Family::V4, 1, 2);
        r[40] ^= 0x01;
        let e = expect(Family::V4, Some(1), 2);
        assert!(matches!(
            e.check(&ipv4(&[], &r), Framing::Ipv4),
            Err(Skip::Checksum(_))
        ));
        assert!(matches!(e.check(&r, Framing::Icmp), Err(Skip::Checksum(_))));
    }

    #[test]
    fn truncated_and_malformed_datagrams_are_skipped() {
        let r = reply(Family::V4, 1, 2);
        let e = expect(Family::V4, Some(1), 2);
        let ping = expect(Family::V4, None, 2);
        for len in 0..HEADER_LEN {
            assert_eq!(
                ping.check(&r[..len], Framing::Icmp),
                Err(Skip::Truncated {
                    len,
                    needed: HEADER_LEN
                })
            );
        }
        // Cut anywhere in the data: the data no longer matches (a header-only reply too).
        for len in HEADER_LEN..r.len() {
            assert!(
                ping.check(&r[..len], Framing::Icmp).is_err(),
                "{len} octets"
            );
        }
        let d = ipv4(&[], &r);
        for len in 0..IPV4_MIN_HEADER_LEN {
            assert_eq!(
                e.check(&d[..len], Framing::Ipv4),
                Err(Skip::Truncated {
                    len,
                    needed: IPV4_MIN_HEADER_LEN
                })
            );
        }
        for len in IPV4_MIN_HEADER_LEN..d.len() {
            assert_eq!(
                e.check(&d[..len], Framing::Ipv4),
                Err(Skip::Truncated {
                    len,
                    needed: d.len()
                }),
                "cut below the total length"
            );
        }
        // A header length past the datagram.
        let mut long_ihl = d.clone();
        long_ihl[0] = 0x4f;
        long_ihl[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            e.check(&long_ihl[..40], Framing::Ipv4),
            Err(Skip::IpTotalLen {
                total: 40,
                header: 60
            })
        );
        let mut small_ihl = d.clone();
        small_ihl[0] = 0x44;
        assert_eq!(
            e.check(&small_ihl, Framing::Ipv4),
            Err(Skip::IpHeaderLen(16))
        );
        let mut v6 = d.clone();
        v6[0] = 0x65;
        assert_eq!(e.check(&v6, Framing::Ipv4), Err(Skip::IpVersion(6)));
        let mut udp = d.clone();
        udp[9] = 17;
        assert_eq!(e.check(&udp, Framing::Ipv4), Err(Skip::IpProtocol(17)));
        // An IP header with nothing after it.
        assert_eq!(
            e.check(&ipv4(&[], &[]), Framing::Ipv4),
            Err(Skip::Truncated {
                len: 0,
                needed: HEADER_LEN
            })
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never panic the parser, in any framing or family.
            #[test]
            fn any_bytes_are_judged_without_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
                ident in proptest::option::of(any::<u16>()),
                seq_no in any::<u16>(),
            ) {
                for family in [Family::V4, Family::V6] {
                    let e = Expect { family, ident, seq_no, data: &DATA };
                    for framing in [Framing::Icmp, Framing::Ipv4] {
                        let _ = e.check(&bytes, framing);
                    }
                    if let Ok(p) = Packet::new_checked(&bytes[..]) {
                        let _ = EchoRepr::parse(family, &p);
                        let _ = (p.checksum(), p.ident(), p.seq_no());
                        let _ = p.verify_checksum();
                    }
                }
            }

            /// Bytes that look like an IPv4 header followed by anything never panic either
            /// (random bytes rarely get past the version and length checks).
            #[test]
            fn ipv4_shaped_bytes_are_judged_without_panic(
                ihl in 0u8..16,
                total in any::<u16>(),
                proto in prop_oneof![Just(1u8), any::<u8>()],
                rest in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let mut d = vec![0x40 | ihl, 0];
                d.extend_from_slice(&total.to_be_bytes());
                d.extend_from_slice(&[0, 0, 0, 0, 64, proto]);
                d.extend_from_slice(&rest);
                let _ = expect(Family::V4, Some(1), 2).check(&d, Framing::Ipv4);
            }

            /// Every emitted reply with matching fields is accepted; any other sequence
            /// number is not.
            #[test]
            fn emitted_replies_are_accepted(
                ident in any::<u16>(),
                seq_no in any::<u16>(),
                other in any::<u16>(),
                v6 in any::<bool>(),
            ) {
                let family = if v6 { Family::V6 } else { Family::V4 };
                let r = reply(family, ident, seq_no);
                prop_assert_eq!(expect(family, Some(ident), seq_no).check(&r, Framing::Icmp), Ok(()));
                if !v6 {
                    let d = ipv4(&[], &r);
                    prop_assert_eq!(expect(family, Some(ident), seq_no).check(&d, Framing::Ipv4), Ok(()));
                }
                if other != seq_no {
                    prop_assert!(expect(family, None, other).check(&r, Framing::Icmp).is_err());
                }
            }
        }
    }
}
