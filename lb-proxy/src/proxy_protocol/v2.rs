//! PROXY protocol v2: a 16-byte binary preamble followed by addresses and optional TLVs.
//!
//! ```text
//! 0                   12      13      14      16
//! | signature (12 B)  |ver|cmd|fam|tr | len BE | addresses (len bytes, TLVs after) |
//! ```
//!
//! TLVs (type, 16-bit length, value; spec §2.2) are checked and skipped, as HAProxy does:
//! one whose length runs past the header refuses it, and a `PP2_TYPE_CRC32C` TLV must hold
//! the CRC32C of the whole header (with its own value zeroed) or the header is refused.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::proxy_protocol::{v2, ProxyHeader};
//!
//! let mut buf = vec![0xa5; v2::buffer_len(&ProxyHeader::Local)];
//! v2::emit(&ProxyHeader::Local, &mut buf);
//! let packet = v2::Packet::new_checked(&buf[..]).unwrap();
//! assert_eq!(packet.command(), 0);
//! assert_eq!(v2::parse(&buf).unwrap(), Some((ProxyHeader::Local, 16)));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{ParseError, ProxyHeader, Transport};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of every v2 header, in bytes.
pub const HEADER_LEN: usize = 16;

mod field {
    pub(super) type Field = std::ops::Range<usize>;
    pub(super) const SIGNATURE: Field = 0..12;
    pub(super) const VER_CMD: usize = 12;
    pub(super) const FAM: usize = 13;
    pub(super) const LEN: Field = 14..16;
    pub(super) const ADDR: usize = 16;
}

const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const TR_UNSPEC: u8 = 0x0;
const TR_STREAM: u8 = 0x1;
const TR_DGRAM: u8 = 0x2;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const INET_LEN: usize = 12;
const INET6_LEN: usize = 36;
/// `PP2_TYPE_CRC32C`: a 4-byte CRC32C (Castagnoli) of the header.
const PP2_TYPE_CRC32C: u8 = 0x03;

/// Walks the TLVs that start at `offset` in the complete header `header`, checking their
/// framing and a CRC32C TLV's checksum (spec §2.2.5).
fn check_tlvs(header: &[u8], mut offset: usize) -> Result<(), ParseError> {
    while offset < header.len() {
        let start = offset;
        let Some(&[kind, hi, lo]) = header.get(offset..offset + 3) else {
            return Err(ParseError::V2Tlv(start));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        offset += 3;
        let Some(value) = header.get(offset..offset + len) else {
            return Err(ParseError::V2Tlv(start));
        };
        if kind == PP2_TYPE_CRC32C {
            let Ok(&[a, b, c, d]) = <&[u8; 4]>::try_from(value) else {
                return Err(ParseError::V2Tlv(start));
            };
            let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..offset]), &[0; 4]);
            let crc = crc32c::crc32c_append(crc, &header[offset + 4..]);
            if crc != u32::from_be_bytes([a, b, c, d]) {
                return Err(ParseError::V2Checksum);
            }
        }
        offset += len;
    }
    Ok(())
}

/// A zero-copy view of a v2 header.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`Packet::check_len`].
    ///
    /// # Errors
    /// `Err(needed)`: the buffer holds fewer than `needed` bytes of a complete header.
    pub fn new_checked(buffer: T) -> Result<Self, usize> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the fixed header and the `len` bytes it announces are present.
    ///
    /// # Errors
    /// `Err(needed)`: the total number of bytes the header needs.
    pub fn check_len(&self) -> Result<(), usize> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(HEADER_LEN);
        }
        let total = HEADER_LEN + usize::from(self.len());
        if b.len() < total {
            return Err(total);
        }
        Ok(())
    }

    /// The 12-byte signature.
    #[inline]
    pub fn signature(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SIGNATURE]
    }

    /// The protocol version (high nibble of byte 12); 2 for this version.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_CMD] >> 4
    }

    /// The command (low nibble of byte 12): 0 LOCAL, 1 PROXY.
    #[inline]
    pub fn command(&self) -> u8 {
        self.buffer.as_ref()[field::VER_CMD] & 0x0f
    }

    /// The address family (high nibble of byte 13): 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX.
    #[inline]
    pub fn family(&self) -> u8 {
        self.buffer.as_ref()[field::FAM] >> 4
    }

    /// The transport (low nibble of byte 13): 0 UNSPEC, 1 STREAM, 2 DGRAM.
    #[inline]
    pub fn transport(&self) -> u8 {
        self.buffer.as_ref()[field::FAM] & 0x0f
    }

    /// The number of bytes after the fixed header (addresses and TLVs).
    #[inline]
    pub fn len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Whether nothing follows the fixed header.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address block and TLVs (`len` bytes).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDR..HEADER_LEN + usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the signature.
    #[inline]
    pub fn set_signature(&mut self) {
        self.buffer.as_mut()[field::SIGNATURE].copy_from_slice(&SIGNATURE);
    }

    /// Sets version and command.
    #[inline]
    pub fn set_version_command(&mut self, version: u8, command: u8) {
        self.buffer.as_mut()[field::VER_CMD] = (version << 4) | (command & 0x0f);
    }

    /// Sets family and transport.
    #[inline]
    pub fn set_family_transport(&mut self, family: u8, transport: u8) {
        self.buffer.as_mut()[field::FAM] = (family << 4) | (transport & 0x0f);
    }

    /// Sets the length after the fixed header.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// The mutable address block.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.len());
        &mut self.buffer.as_mut()[field::ADDR..end]
    }
}

/// Parses a v2 header at the start of `buf`: `Ok(None)` while incomplete.
///
/// # Errors
/// [`ParseError::NoSignature`], [`ParseError::V2Version`], [`ParseError::V2Command`],
/// [`ParseError::V2Family`], [`ParseError::V2Length`].
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ParseError> {
    let n = buf.len().min(SIGNATURE.len());
    if buf[..n] != SIGNATURE[..n] {
        return Err(ParseError::NoSignature(buf.first().copied().unwrap_or(0)));
    }
    if buf.len() > field::VER_CMD {
        let p = Packet::new_unchecked(buf);
        if p.version() != 2 {
            return Err(ParseError::V2Version(p.version()));
        }
        if p.command() > CMD_PROXY {
            return Err(ParseError::V2Command(p.command()));
        }
    }
    let Ok(p) = Packet::new_checked(buf) else {
        return Ok(None);
    };
    let total = HEADER_LEN + usize::from(p.len());
    if p.command() == CMD_LOCAL {
        // LOCAL: the receiver must ignore the protocol block, family byte included (spec
        // §2.2; health checks from the sender), as HAProxy does.
        return Ok(Some((ProxyHeader::Local, total)));
    }
    let fam = buf[field::FAM];
    let (family, transport) = (p.family(), p.transport());
    if family > AF_UNIX || transport > TR_DGRAM {
        return Err(ParseError::V2Family(fam));
    }
    let transport = match transport {
        TR_STREAM => Transport::Stream,
        TR_DGRAM => Transport::Datagram,
        _ => return Ok(Some((ProxyHeader::Local, total))),
    };
    let a = p.payload();
    let (source, destination) = match family {
        AF_INET => {
            if a.len() < INET_LEN {
                return Err(ParseError::V2Length(p.len()));
            }
            check_tlvs(&buf[..total], HEADER_LEN + INET_LEN)?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        AF_INET6 => {
            if a.len() < INET6_LEN {
                return Err(ParseError::V2Length(p.len()));
            }
            check_tlvs(&buf[..total], HEADER_LEN + INET6_LEN)?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        // AF_UNSPEC and AF_UNIX carry nothing we can use as a socket address.
        _ => return Ok(Some((ProxyHeader::Local, total))),
    };
    Ok(Some((
        ProxyHeader::Proxy {
            transport,
            source,
            destination,
        },
        total,
    )))
}

/// The encoded length of `header`, in bytes (16, 28 or 52): mixed families are written as
/// IPv6 ([`emit`]).
pub const fn buffer_len(header: &ProxyHeader) -> usize {
    match header {
        ProxyHeader::Local => HEADER_LEN,
        ProxyHeader::Proxy {
            source,
            destination,
            ..
        } => {
            if source.is_ipv4() && destination.is_ipv4() {
                HEADER_LEN + INET_LEN
            } else {
                HEADER_LEN + INET6_LEN
            }
        }
    }
}

/// Writes `header` into `buf`, which must be at least [`buffer_len`] bytes. Mixed families
/// are written v4-mapped as IPv6.
///
/// # Panics
/// When `buf` is shorter than [`buffer_len`].
pub fn emit(header: &ProxyHeader, buf: &mut [u8]) {
    let header = match *header {
        ProxyHeader::Proxy {
            transport,
            source,
            destination,
        } => {
            let (source, destination) = super::same_family(source, destination);
            ProxyHeader::Proxy {
                transport,
                source,
                destination,
            }
        }
        ProxyHeader::Local => ProxyHeader::Local,
    };
    let len = buffer_len(&header);
    let mut p = Packet::new_unchecked(&mut buf[..len]);
    p.set_signature();
    let (cmd, fam, tr) = match header {
        ProxyHeader::Local => (CMD_LOCAL, AF_UNSPEC, TR_UNSPEC),
        ProxyHeader::Proxy {
            transport, source, ..
        } => (
            CMD_PROXY,
            if source.is_ipv4() { AF_INET } else { AF_INET6 },
            match transport {
                Transport::Stream => TR_STREAM,
                Transport::Datagram => TR_DGRAM,
            },
        ),
    };
    p.set_version_command(2, cmd);
    p.set_family_transport(fam, tr);
    // `len - 16` is at most 36.
    p.set_len((len - HEADER_LEN) as u16);
    if let ProxyHeader::Proxy {
        source,
        destination,
        ..
    } = header
    {
        let a = p.payload_mut();
        match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                a[0..4].copy_from_slice(&s.octets());
                a[4..8].copy_from_slice(&d.octets());
                a[8..10].copy_from_slice(&source.port().to_be_bytes());
                a[10..12].copy_from_slice(&destination.port().to_be_bytes());
            }
            (s, d) => {
                let v6 = |ip: IpAddr| match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                a[0..16].copy_from_slice(&v6(s).octets());
                a[16..32].copy_from_slice(&v6(d).octets());
                a[32..34].copy_from_slice(&source.port().to_be_bytes());
                a[34..36].copy_from_slice(&destination.port().to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP4 192.168.0.1:56324 → 192.168.0.11:443, laid out per spec §2.2.
    static TCP4_BYTES: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21, // v2, PROXY
        0x11, // AF_INET, STREAM
        0x00, 0x0c, // 12 bytes follow
        0xc0, 0xa8, 0x00, 0x01, // 192.168.0.1
        0xc0, 0xa8, 0x00, 0x0b, // 192.168.0.11
        0xdc, 0x04, // 56324
        0x01, 0xbb, // 443
    ];

    /// LOCAL (a health check from the previous proxy), with one ignored TLV (PP2_TYPE_NOOP).
    static LOCAL_TLV_BYTES: [u8; 20] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00,
        0x04, 0x04, 0x00, 0x01, 0x00,
    ];

    #[test]
    fn golden_tcp4() {
        let h = ProxyHeader::Proxy {
            transport: Transport::Stream,
            source: "192.168.0.1:56324".parse().unwrap(),
            destination: "192.168.0.11:443".parse().unwrap(),
        };
        assert_eq!(parse(&TCP4_BYTES).unwrap(), Some((h, 28)));
        let mut buf = vec![0xa5; buffer_len(&h)];
        emit(&h, &mut buf);
        assert_eq!(buf, TCP4_BYTES);
    }

    /// TCP4_BYTES with `tlvs` appended (the length field grown to cover them).
    fn with_tlvs(tlvs: &[u8]) -> Vec<u8> {
        let mut b = TCP4_BYTES.to_vec();
        b.extend_from_slice(tlvs);
        let len = (12 + tlvs.len()) as u16;
        b[14..16].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// TLVs were skipped unchecked: one running past the header, a CRC32C TLV of the wrong
    /// size or with a wrong checksum now refuse the header, as HAProxy does.
    #[test]
    fn tlv_framing_and_crc32c_are_checked() {
        // NOOP with 1 byte, then an empty NOOP: fine.
        let ok = with_tlvs(&[0x04, 0x00, 0x01, 0xff, 0x04, 0x00, 0x00]);
        assert_eq!(parse(&ok).unwrap().unwrap().1, ok.len());
        // A TLV announcing 5 bytes with 2 left; a TLV header cut short.
        let long = with_tlvs(&[0x04, 0x00, 0x05, 0xff, 0xff]);
        assert_eq!(parse(&long), Err(ParseError::V2Tlv(28)));
        let cut = with_tlvs(&[0x04, 0x00, 0x00, 0x04, 0x00]);
        assert_eq!(parse(&cut), Err(ParseError::V2Tlv(31)));
        // CRC32C: the checksum of the whole header with the value zeroed.
        let mut crc = with_tlvs(&[0x03, 0x00, 0x04, 0, 0, 0, 0]);
        let sum = crc32c::crc32c(&crc);
        crc[31..35].copy_from_slice(&sum.to_be_bytes());
        assert!(parse(&crc).unwrap().is_some());
        let mut flipped = crc.clone();
        flipped[16] ^= 1;
        assert_eq!(parse(&flipped), Err(ParseError::V2Checksum));
        let short = with_tlvs(&[0x03, 0x00, 0x02, 0, 0]);
        assert_eq!(parse(&short), Err(ParseError::V2Tlv(28)));
    }

    #[test]
    fn golden_tcp6_and_local() {
        let h = ProxyHeader::Proxy {
            transport: Transport::Stream,
            source: "[2001:db8::1]:1".parse().unwrap(),
            destination: "[2001:db8::2]:65535".parse().unwrap(),
        };
        let mut buf = vec![0xa5; 52];
        emit(&h, &mut buf);
        assert_eq!(&buf[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&buf[16..18], &[0x20, 0x01]);
        assert_eq!(&buf[48..52], &[0x00, 0x01, 0xff, 0xff]);
        assert_eq!(parse(&buf).unwrap(), Some((h, 52)));
        assert_eq!(
            parse(&LOCAL_TLV_BYTES).unwrap(),
            Some((ProxyHeader::Local, 20))
        );
    }

    #[test]
    fn malformed() {
        let mut b = TCP4_BYTES;
        b[12] = 0x11;
        assert_eq!(parse(&b), Err(ParseError::V2Version(1)));
        let mut b = TCP4_BYTES;
        b[12] = 0x22;
        assert_eq!(parse(&b), Err(ParseError::V2Command(2)));
        let mut b = TCP4_BYTES;
        b[13] = 0x41;
        assert_eq!(parse(&b), Err(ParseError::V2Family(0x41)));
        // LOCAL ignores the family byte, whatever it holds.
        let mut b = LOCAL_TLV_BYTES;
        b[13] = 0x41;
        assert_eq!(parse(&b).unwrap(), Some((ProxyHeader::Local, 20)));
        let mut b = TCP4_BYTES;
        b[15] = 0x04;
        assert_eq!(parse(&b[..20]), Err(ParseError::V2Length(4)));
        assert_eq!(parse(&TCP4_BYTES[..27]), Ok(None));
    }
}
