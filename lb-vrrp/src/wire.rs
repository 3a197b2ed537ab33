//! VRRP advertisement codec (smoltcp-style `wire` layer).
//!
//! Three layers, as in smoltcp:
//!
//! * [`Packet`] is a zero-copy view over a buffer holding one VRRP message (the IP
//!   payload, without the IP header), with getters and setters for each field.
//! * [`AdvertRepr`] is a semantically valid advertisement: [`AdvertRepr::parse`] validates
//!   a [`Packet`] (version 2 or 3, type 1, `vrid != 0`, count and length agree, checksum,
//!   interval non-zero) and [`AdvertRepr::emit`] writes one.
//! * Newtypes for the fields: [`Vrid`], [`Priority`], [`AdvertInterval`], [`AuthType`].
//!
//! Layouts follow [RFC 3768 §5.1] (VRRPv2) and [RFC 5798 §5.1] (VRRPv3):
//!
//! ```text
//!  v2:  | ver=2 | type=1 | VRID | Priority | Count | AuthType | AdverInt(s) | Checksum |
//!       | IPv4 address 1 .. n | Authentication Data (8 bytes) |
//!  v3:  | ver=3 | type=1 | VRID | Priority | Count | rsvd(4) MaxAdverInt(cs, 12 bits) | Checksum |
//!       | IPv4 or IPv6 address 1 .. n |
//! ```
//!
//! The v2 checksum covers the VRRP message only ([RFC 3768 §5.3.8]); the v3 checksum
//! also covers the IPv4/IPv6 pseudo-header with protocol 112 ([RFC 5798 §5.2.8]), which is
//! what keepalived computes for VRRPv3 over IPv4 as well as IPv6. keepalived always sends
//! the 8 authentication bytes in v2, even with `auth_type` none, and so do we.
//!
//! # Panic contract (copied from smoltcp)
//!
//! * After [`Packet::check_len`] (or [`Packet::new_checked`]) succeeds, no accessor of
//!   [`Packet`] panics; the accessors whose extent depends on the address family or the
//!   count ([`Packet::address`], [`Packet::auth_data`]) return `Option`.
//! * [`AdvertRepr::parse`] never panics, whatever the bytes.
//! * [`AdvertRepr::emit`] never panics on a buffer of exactly [`AdvertRepr::buffer_len`]
//!   bytes.
//!
//! # Examples
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use lb_vrrp::wire::{AdvertInterval, AdvertRepr, Auth, Packet, Priority, Version, Vrid};
//!
//! let src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
//! let dst = IpAddr::V4(lb_vrrp::wire::VRRP_MCAST_V4);
//! let repr = AdvertRepr {
//!     version: Version::V3,
//!     vrid: Vrid::new(51).unwrap(),
//!     priority: Priority::DEFAULT,
//!     interval: AdvertInterval::from_centis(100).unwrap(),
//!     auth: Auth::None,
//!     addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
//! };
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst).unwrap();
//! let parsed = AdvertRepr::parse(&Packet::new_checked(&buf[..]).unwrap(), src, dst).unwrap();
//! assert_eq!(parsed, repr);
//! ```
//!
//! [RFC 3768 §5.1]: https://www.rfc-editor.org/rfc/rfc3768#section-5.1
//! [RFC 3768 §5.3.8]: https://www.rfc-editor.org/rfc/rfc3768#section-5.3.8
//! [RFC 5798 §5.1]: https://www.rfc-editor.org/rfc/rfc5798#section-5.1
//! [RFC 5798 §5.2.8]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.8

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU8;
use std::time::Duration;

/// IP protocol number of VRRP (IANA; [RFC 5798 §5.1.1.4]).
///
/// [RFC 5798 §5.1.1.4]: https://www.rfc-editor.org/rfc/rfc5798#section-5.1.1.4
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group for VRRP adverts, 224.0.0.18 ([RFC 5798 §5.1.1.2]).
///
/// [RFC 5798 §5.1.1.2]: https://www.rfc-editor.org/rfc/rfc5798#section-5.1.1.2
pub const VRRP_MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP adverts, ff02::12 ([RFC 5798 §5.1.2.2]).
///
/// [RFC 5798 §5.1.2.2]: https://www.rfc-editor.org/rfc/rfc5798#section-5.1.2.2
pub const VRRP_MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advert is sent with and must arrive with ([RFC 5798 §5.1.1.3]).
///
/// [RFC 5798 §5.1.1.3]: https://www.rfc-editor.org/rfc/rfc5798#section-5.1.1.3
pub const VRRP_TTL: u8 = 255;
/// Length of the fixed VRRP header in bytes (both versions).
pub const HEADER_LEN: usize = 8;
/// Most IPv4 addresses one advert carries: its address count is 8 bits.
pub const MAX_ADDRESSES_V4: usize = 255;
/// Most IPv6 addresses one advert carries, as keepalived counts them on a 1500-byte MTU:
/// (1500 − 14 (its Ethernet header) − 40 (IPv6 header) − 8 (VRRP header)) / 16 = 89
/// (`vrrp_complete_instance`). The packet could hold 90, but a keepalived peer with the
/// same configuration advertises 89 and drops adverts that carry another count.
pub const MAX_ADDRESSES_V6: usize = (1500 - 14 - 40 - HEADER_LEN) / 16;
/// Length of the VRRPv2 authentication data in bytes ([RFC 3768 §5.3.10]).
///
/// [RFC 3768 §5.3.10]: https://www.rfc-editor.org/rfc/rfc3768#section-5.3.10
pub const AUTH_LEN: usize = 8;
/// The only VRRP message type, ADVERTISEMENT ([RFC 5798 §5.2.2]).
///
/// [RFC 5798 §5.2.2]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.2
pub const TYPE_ADVERTISEMENT: u8 = 1;

mod field {
    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const VER_TYPE: usize = 0;
    pub(crate) const VRID: usize = 1;
    pub(crate) const PRIORITY: usize = 2;
    pub(crate) const COUNT: usize = 3;
    /// v2 only.
    pub(crate) const AUTH_TYPE: usize = 4;
    /// v2 only, seconds.
    pub(crate) const ADVER_INT: usize = 5;
    /// v3 only: 4 reserved bits + 12 bits of centiseconds.
    pub(crate) const MAX_ADVER_INT: Field = 4..6;
    pub(crate) const CHECKSUM: Field = 6..8;
    pub(crate) const ADDRESSES: usize = 8;
}

/// Errors from [`AdvertRepr::parse`], [`Packet::check_len`] and [`AdvertRepr::emit`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer is shorter than the message needs.
    #[error("truncated VRRP message: {len} bytes, need {needed}")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The buffer is longer than its address count (and v2 authentication data) make the
    /// message: keepalived drops it ("vrrp packet too long"), and so do we, so that the
    /// checksum never covers bytes the message does not define.
    #[error("VRRP message too long: {len} bytes, its fields make {needed}")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// Bytes the message's fields make.
        needed: usize,
    },
    /// Version field is neither 2 nor 3.
    #[error("unsupported VRRP version {0}")]
    UnsupportedVersion(u8),
    /// Type field is not 1 (ADVERTISEMENT).
    #[error("unknown VRRP message type {0}")]
    UnknownType(u8),
    /// VRID 0 is reserved.
    #[error("invalid VRID 0")]
    ZeroVrid,
    /// Advertisement interval of zero.
    #[error("invalid advertisement interval 0")]
    ZeroInterval,
    /// Checksum does not verify; the value is the one received.
    #[error("bad VRRP checksum {0:#06x}")]
    Checksum(u16),
    /// VRRPv2 authentication type we do not support (2 is IP AH, deprecated by RFC 3768).
    #[error("unsupported VRRPv2 authentication type {0}")]
    UnsupportedAuth(u8),
    /// VRRPv2 is defined over IPv4 only.
    #[error("VRRPv2 over IPv6 is not supported")]
    V2OverIpv6,
    /// Source and destination (or advertised) addresses are of different families.
    #[error("address family mismatch: {0}")]
    FamilyMismatch(IpAddr),
    /// More addresses than the 8-bit count field can carry.
    #[error("too many addresses: {0}")]
    TooManyAddresses(usize),
    /// A v2 interval that is not a whole number of seconds in 1..=255.
    #[error("VRRPv2 interval {0} cs is not a whole number of seconds in 1..=255")]
    V2Interval(u16),
    /// A v3 interval above the 12-bit field's 4095 cs.
    #[error("VRRPv3 interval {0} cs exceeds 4095")]
    V3Interval(u16),
}

/// Virtual router identifier, 1..=255 ([RFC 5798 §5.2.3]).
///
/// [RFC 5798 §5.2.3]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.3
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vrid(NonZeroU8);

impl Vrid {
    /// Returns `None` for the reserved value 0.
    #[inline]
    pub const fn new(v: u8) -> Option<Self> {
        match NonZeroU8::new(v) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }
    /// The raw VRID.
    #[inline]
    pub const fn get(self) -> u8 {
        self.0.get()
    }
}

impl fmt::Display for Vrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Router priority ([RFC 5798 §5.2.4]): 255 is the address owner, 100 the default, 0 means
/// "the master is stopping".
///
/// [RFC 5798 §5.2.4]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.4
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// The IP address owner's priority.
    pub const OWNER: Self = Self(255);
    /// The default priority of a backup router.
    pub const DEFAULT: Self = Self(100);
    /// Sent by a master that stops: backups take over after Skew_Time.
    pub const STOP: Self = Self(0);
    /// The raw value.
    #[inline]
    pub const fn get(self) -> u8 {
        self.0
    }
    /// True for [`Priority::OWNER`].
    #[inline]
    pub const fn is_owner(self) -> bool {
        self.0 == 255
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Advertisement interval in centiseconds, 1..=4095 (12 bits, [RFC 5798 §5.2.7]).
///
/// VRRPv2 carries whole seconds (1..=255, [RFC 3768 §5.3.7]); those are held here as
/// `seconds * 100`, so a v2 interval may exceed the 12-bit v3 range.
///
/// [RFC 5798 §5.2.7]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.7
/// [RFC 3768 §5.3.7]: https://www.rfc-editor.org/rfc/rfc3768#section-5.3.7
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvertInterval(u16);

impl AdvertInterval {
    /// Largest v3 interval, 4095 cs (40.95 s).
    pub const MAX_V3: Self = Self(0x0fff);
    /// keepalived's default `advert_int 1`: 100 cs.
    pub const ONE_SECOND: Self = Self(100);

    /// Interval from centiseconds; `None` for 0 or above 25 500 cs (v2's 255 s).
    #[inline]
    pub const fn from_centis(cs: u16) -> Option<Self> {
        if cs == 0 || cs > 25_500 {
            None
        } else {
            Some(Self(cs))
        }
    }
    /// Interval from whole seconds (VRRPv2's unit); `None` for 0.
    #[inline]
    pub const fn from_secs(s: u8) -> Option<Self> {
        if s == 0 {
            None
        } else {
            Some(Self(s as u16 * 100))
        }
    }
    /// Rounds a duration to centiseconds; `None` if that gives 0 or more than 255 s.
    pub fn from_duration(d: Duration) -> Option<Self> {
        let cs = (d.as_millis() + 5) / 10;
        u16::try_from(cs).ok().and_then(Self::from_centis)
    }
    /// The interval in centiseconds.
    #[inline]
    pub const fn centis(self) -> u16 {
        self.0
    }
    /// The interval as a [`Duration`].
    #[inline]
    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0 as u64 * 10)
    }
    /// Whole seconds if this is a valid v2 interval (a multiple of 100 cs).
    #[inline]
    pub const fn as_v2_secs(self) -> Option<u8> {
        if self.0 % 100 == 0 && self.0 / 100 <= 255 {
            Some((self.0 / 100) as u8)
        } else {
            None
        }
    }
    /// True if the interval fits the 12-bit v3 field.
    #[inline]
    pub const fn fits_v3(self) -> bool {
        self.0 <= 0x0fff
    }
}

/// Protocol version ([RFC 5798 §5.2.1]).
///
/// [RFC 5798 §5.2.1]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// VRRPv2, RFC 3768: IPv4 only, intervals in seconds, optional simple password.
    V2,
    /// VRRPv3, RFC 5798: IPv4 or IPv6, intervals in centiseconds, no authentication.
    V3,
}

impl Version {
    /// The wire value (2 or 3).
    #[inline]
    pub const fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// VRRPv2 authentication type field ([RFC 3768 §5.3.6]).
///
/// [RFC 3768 §5.3.6]: https://www.rfc-editor.org/rfc/rfc3768#section-5.3.6
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// 0: no authentication.
    None,
    /// 1: simple text password (keepalived `auth_type PASS`).
    Simple,
    /// 2: IP authentication header (keepalived `auth_type AH`; unsupported here).
    Ah,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for AuthType {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::None,
            1 => Self::Simple,
            2 => Self::Ah,
            x => Self::Unknown(x),
        }
    }
}

impl From<AuthType> for u8 {
    fn from(v: AuthType) -> Self {
        match v {
            AuthType::None => 0,
            AuthType::Simple => 1,
            AuthType::Ah => 2,
            AuthType::Unknown(x) => x,
        }
    }
}

/// VRRPv2 authentication, as carried in an advert.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    /// No authentication (always the case in v3); the 8 auth bytes are zero in v2.
    None,
    /// Simple password, 8 bytes, NUL-padded (keepalived `auth_type PASS`, `auth_pass`).
    Simple([u8; AUTH_LEN]),
}

impl Auth {
    /// keepalived's `auth_pass`: the first 8 bytes of `pass`, NUL-padded.
    pub fn password(pass: &str) -> Self {
        let mut b = [0u8; AUTH_LEN];
        let n = pass.len().min(AUTH_LEN);
        b[..n].copy_from_slice(&pass.as_bytes()[..n]);
        Self::Simple(b)
    }
    /// The auth type field value.
    pub const fn auth_type(&self) -> AuthType {
        match self {
            Self::None => AuthType::None,
            Self::Simple(_) => AuthType::Simple,
        }
    }
}

impl fmt::Debug for Auth {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Simple(_) => f.write_str("Simple(..)"),
        }
    }
}

/// A zero-copy view of a VRRP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and checks it holds at least the fixed header.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if it does not.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the buffer holds the fixed 8-byte header, so no fixed-field getter panics.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(ParseError::Truncated {
                len,
                needed: HEADER_LEN,
            })
        } else {
            Ok(())
        }
    }

    /// Consumes the view, returning the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (high nibble of byte 0).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }
    /// Type field (low nibble of byte 0).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }
    /// Raw VRID byte.
    #[inline]
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }
    /// Priority.
    #[inline]
    pub fn priority(&self) -> Priority {
        Priority(self.buffer.as_ref()[field::PRIORITY])
    }
    /// Count of addresses.
    #[inline]
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }
    /// v2 authentication type.
    #[inline]
    pub fn auth_type(&self) -> AuthType {
        AuthType::from(self.buffer.as_ref()[field::AUTH_TYPE])
    }
    /// v2 advertisement interval, seconds.
    #[inline]
    pub fn adver_int_secs(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }
    /// v3 maximum advertisement interval, centiseconds (12 bits; reserved bits masked).
    #[inline]
    pub fn max_adver_int_cs(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MAX_ADVER_INT];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Length of the message for `count` addresses of `v6` size, per version.
    fn needed_len(&self, v6: bool) -> usize {
        let alen = if v6 { 16 } else { 4 };
        let mut n = HEADER_LEN + usize::from(self.count()) * alen;
        if self.version() == 2 {
            n += AUTH_LEN;
        }
        n
    }

    /// Address number `index`, read as IPv6 if `v6`; `None` if out of range of the count
    /// or the buffer.
    pub fn address(&self, v6: bool, index: usize) -> Option<IpAddr> {
        if index >= usize::from(self.count()) {
            return None;
        }
        let buf = self.buffer.as_ref();
        if v6 {
            let start = field::ADDRESSES + 16 * index;
            let b: [u8; 16] = buf.get(start..start + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        } else {
            let start = field::ADDRESSES + 4 * index;
            let b: [u8; 4] = buf.get(start..start + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
    }

    /// v2 authentication data (IPv4 only, after the addresses); `None` if the buffer is short.
    pub fn auth_data(&self) -> Option<[u8; AUTH_LEN]> {
        let start = field::ADDRESSES + 4 * usize::from(self.count());
        self.buffer
            .as_ref()
            .get(start..start + AUTH_LEN)?
            .try_into()
            .ok()
    }

    /// Verifies the checksum: over the message for v2 ([RFC 3768 §5.3.8]), over the
    /// pseudo-header for `src`/`dst` and the message for v3 ([RFC 5798 §5.2.8]).
    /// Always `true` when built with `cfg(fuzzing)`.
    ///
    /// [RFC 3768 §5.3.8]: https://www.rfc-editor.org/rfc/rfc3768#section-5.3.8
    /// [RFC 5798 §5.2.8]: https://www.rfc-editor.org/rfc/rfc5798#section-5.2.8
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        let data = self.buffer.as_ref();
        let sum = if self.version() == 2 {
            checksum::data(data)
        } else {
            checksum::combine(&[
                checksum::pseudo_header(src, dst, data.len()),
                checksum::data(data),
            ])
        };
        sum == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version and type.
    #[inline]
    pub fn set_version_type(&mut self, version: u8, ty: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (ty & 0x0f);
    }
    /// Sets the VRID byte.
    #[inline]
    pub fn set_vrid(&mut self, v: u8) {
        self.buffer.as_mut()[field::VRID] = v;
    }
    /// Sets the priority.
    #[inline]
    pub fn set_priority(&mut self, p: Priority) {
        self.buffer.as_mut()[field::PRIORITY] = p.0;
    }
    /// Sets the address count.
    #[inline]
    pub fn set_count(&mut self, c: u8) {
        self.buffer.as_mut()[field::COUNT] = c;
    }
    /// Sets the v2 authentication type.
    #[inline]
    pub fn set_auth_type(&mut self, t: AuthType) {
        self.buffer.as_mut()[field::AUTH_TYPE] = t.into();
    }
    /// Sets the v2 interval, seconds.
    #[inline]
    pub fn set_adver_int_secs(&mut self, s: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = s;
    }
    /// Sets the v3 max interval, centiseconds (reserved bits written as zero).
    #[inline]
    pub fn set_max_adver_int_cs(&mut self, cs: u16) {
        self.buffer.as_mut()[field::MAX_ADVER_INT].copy_from_slice(&(cs & 0x0fff).to_be_bytes());
    }
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// Writes address `index`; returns `false` (writing nothing) if it does not fit.
    pub fn set_address(&mut self, index: usize, addr: IpAddr) -> bool {
        let buf = self.buffer.as_mut();
        match addr {
            IpAddr::V4(a) => {
                let start = field::ADDRESSES + 4 * index;
                match buf.get_mut(start..start + 4) {
                    Some(s) => {
                        s.copy_from_slice(&a.octets());
                        true
                    }
                    None => false,
                }
            }
            IpAddr::V6(a) => {
                let start = field::ADDRESSES + 16 * index;
                match buf.get_mut(start..start + 16) {
                    Some(s) => {
                        s.copy_from_slice(&a.octets());
                        true
                    }
                    None => false,
                }
            }
        }
    }
    /// Writes the v2 authentication data after `count()` IPv4 addresses; returns `false`
    /// if it does not fit.
    pub fn set_auth_data(&mut self, data: [u8; AUTH_LEN]) -> bool {
        let start = field::ADDRESSES + 4 * usize::from(self.count());
        match self.buffer.as_mut().get_mut(start..start + AUTH_LEN) {
            Some(s) => {
                s.copy_from_slice(&data);
                true
            }
            None => false,
        }
    }
    /// Computes and writes the checksum (see [`Packet::verify_checksum`] for what it covers).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let sum = if self.version() == 2 {
            checksum::data(data)
        } else {
            checksum::combine(&[
                checksum::pseudo_header(src, dst, data.len()),
                checksum::data(data),
            ])
        };
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A validated VRRP advertisement.
///
/// `interval` is Max_Adver_Int for v3 and Adver_Int (held as `seconds * 100`) for v2.
/// `auth` is always [`Auth::None`] for v3. All `addresses` have the IP family of the
/// packet's source and destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdvertRepr {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: Vrid,
    /// Sender's priority.
    pub priority: Priority,
    /// Advertisement interval (v2: whole seconds; v3: 12-bit centiseconds).
    pub interval: AdvertInterval,
    /// v2 authentication.
    pub auth: Auth,
    /// Virtual addresses of the router.
    pub addresses: Vec<IpAddr>,
}

impl AdvertRepr {
    /// Parses and validates `packet`, received from `src` to `dst` (needed for the v3
    /// pseudo-header checksum and to know the address family).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] naming the first check that failed. Never panics.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Self, ParseError> {
        packet.check_len()?;
        let v6 = src.is_ipv6();
        if dst.is_ipv6() != v6 {
            return Err(ParseError::FamilyMismatch(dst));
        }
        let version = match packet.version() {
            2 => Version::V2,
            3 => Version::V3,
            v => return Err(ParseError::UnsupportedVersion(v)),
        };
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(ParseError::UnknownType(packet.msg_type()));
        }
        if version == Version::V2 && v6 {
            return Err(ParseError::V2OverIpv6);
        }
        let len = packet.buffer.as_ref().len();
        let needed = packet.needed_len(v6);
        if len < needed {
            return Err(ParseError::Truncated { len, needed });
        }
        if len > needed {
            return Err(ParseError::TooLong { len, needed });
        }
        let vrid = Vrid::new(packet.vrid()).ok_or(ParseError::ZeroVrid)?;
        if !packet.verify_checksum(src, dst) {
            return Err(ParseError::Checksum(packet.checksum()));
        }
        let (interval, auth) = match version {
            Version::V2 => {
                let interval = AdvertInterval::from_secs(packet.adver_int_secs())
                    .ok_or(ParseError::ZeroInterval)?;
                let auth = match packet.auth_type() {
                    AuthType::None => Auth::None,
                    AuthType::Simple => Auth::Simple(
                        packet
                            .auth_data()
                            .ok_or(ParseError::Truncated { len, needed })?,
                    ),
                    other => return Err(ParseError::UnsupportedAuth(other.into())),
                };
                (interval, auth)
            }
            Version::V3 => {
                let interval = AdvertInterval::from_centis(packet.max_adver_int_cs())
                    .ok_or(ParseError::ZeroInterval)?;
                (interval, Auth::None)
            }
        };
        let mut addresses = Vec::with_capacity(usize::from(packet.count()));
        for i in 0..usize::from(packet.count()) {
            addresses.push(
                packet
                    .address(v6, i)
                    .ok_or(ParseError::Truncated { len, needed })?,
            );
        }
        Ok(Self {
            version,
            vrid,
            priority: packet.priority(),
            interval,
            auth,
            addresses,
        })
    }

    /// Bytes [`AdvertRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let alen: usize = self
            .addresses
            .iter()
            .map(|a| if a.is_ipv6() { 16 } else { 4 })
            .sum();
        HEADER_LEN
            + alen
            + if self.version == Version::V2 {
                AUTH_LEN
            } else {
                0
            }
    }

    /// Writes the advert into `packet` (which must be exactly [`AdvertRepr::buffer_len`]
    /// bytes long) with its checksum for `src` → `dst`.
    ///
    /// # Errors
    ///
    /// The repr cannot be encoded: more than 255 addresses, addresses of another family
    /// than `src`/`dst`, v2 over IPv6 or with a non-whole-second interval, a v3 interval
    /// above 4095 cs, or a buffer of the wrong length ([`ParseError::Truncated`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<(), ParseError> {
        let v6 = src.is_ipv6();
        if dst.is_ipv6() != v6 {
            return Err(ParseError::FamilyMismatch(dst));
        }
        if let Some(a) = self.addresses.iter().find(|a| a.is_ipv6() != v6) {
            return Err(ParseError::FamilyMismatch(*a));
        }
        let count = u8::try_from(self.addresses.len())
            .map_err(|_| ParseError::TooManyAddresses(self.addresses.len()))?;
        let len = packet.buffer.as_ref().len();
        let needed = self.buffer_len();
        if len != needed {
            return Err(ParseError::Truncated { len, needed });
        }
        packet.set_version_type(self.version.number(), TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid.get());
        packet.set_priority(self.priority);
        packet.set_count(count);
        match self.version {
            Version::V2 => {
                if v6 {
                    return Err(ParseError::V2OverIpv6);
                }
                let secs = self
                    .interval
                    .as_v2_secs()
                    .ok_or(ParseError::V2Interval(self.interval.centis()))?;
                packet.set_auth_type(self.auth.auth_type());
                packet.set_adver_int_secs(secs);
                let data = match self.auth {
                    Auth::None => [0; AUTH_LEN],
                    Auth::Simple(p) => p,
                };
                packet.set_auth_data(data);
            }
            Version::V3 => {
                if !self.interval.fits_v3() {
                    return Err(ParseError::V3Interval(self.interval.centis()));
                }
                packet.set_max_adver_int_cs(self.interval.centis());
            }
        }
        for (i, a) in self.addresses.iter().enumerate() {
            packet.set_address(i, *a);
        }
        packet.fill_checksum(src, dst);
        Ok(())
    }

    /// Convenience: emits into a new `Vec`.
    ///
    /// # Errors
    ///
    /// As [`AdvertRepr::emit`].
    pub fn to_bytes(&self, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, ParseError> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst)?;
        Ok(buf)
    }
}

/// Internet checksum ([RFC 1071]) helpers.
///
/// [RFC 1071]: https://www.rfc-editor.org/rfc/rfc1071
pub mod checksum {
    use std::net::IpAddr;

    fn fold(mut sum: u64) -> u16 {
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Ones'-complement sum of `data` as big-endian 16-bit words (odd byte padded).
    pub fn data(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            sum += u64::from(u16::from_be_bytes([*b, 0]));
        }
        fold(sum)
    }

    /// Ones'-complement sum of partial sums.
    pub fn combine(parts: &[u16]) -> u16 {
        fold(parts.iter().map(|&p| u64::from(p)).sum())
    }

    /// Sum of the IPv4 ([RFC 791]) or IPv6 ([RFC 8200 §8.1]) pseudo-header for protocol
    /// 112 and an upper-layer length of `len` bytes.
    ///
    /// [RFC 791]: https://www.rfc-editor.org/rfc/rfc791
    /// [RFC 8200 §8.1]: https://www.rfc-editor.org/rfc/rfc8200#section-8.1
    pub fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> u16 {
        let mut parts = Vec::with_capacity(4);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                parts.push(data(&s.octets()));
                parts.push(data(&d.octets()));
            }
            (s, d) => {
                parts.push(data(&to_v6(s)));
                parts.push(data(&to_v6(d)));
            }
        }
        parts.push(u16::from(super::IPPROTO_VRRP));
        let len = len as u64;
        parts.push(fold(len));
        combine(&parts)
    }

    fn to_v6(a: IpAddr) -> [u8; 16] {
        match a {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// keepalived 2.2.7, `version 2`, `auth_type PASS`, `auth_pass 7road123`, priority 150,
    /// `advert_int 1`, VIP 198.18.0.100; from 198.18.0.1 to 224.0.0.18 (captured with tshark).
    static KEEPALIVED_V2_PASS_BYTES: [u8; 20] = [
        0x21, 0x33, 0x96, 0x01, 0x01, 0x01, 0x44, 0x1b, 0xc6, 0x12, 0x00, 0x64, 0x37, 0x72, 0x6f,
        0x61, 0x64, 0x31, 0x32, 0x33,
    ];
    /// keepalived 2.2.7, `version 3`, `advert_int 0.1`, priority 150, VIP 198.18.0.100;
    /// from 198.18.0.1 to 224.0.0.18. The checksum includes the IPv4 pseudo-header.
    static KEEPALIVED_V3_V4_BYTES: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0xcb, 0xa7, 0xc6, 0x12, 0x00, 0x64,
    ];
    /// keepalived 2.2.7, `version 3`, `advert_int 0.1`, priority 150, VRID 61, VIP
    /// fd00:18::100; from fe80::ac0e:74ff:fe6f:9872 to ff02::12.
    static KEEPALIVED_V3_V6_BYTES: [u8; 24] = [
        0x31, 0x3d, 0x96, 0x01, 0x00, 0x0a, 0x84, 0x8f, 0xfd, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    ];

    #[test]
    fn keepalived_golden_bytes() {
        let mcast4 = IpAddr::V4(VRRP_MCAST_V4);
        let ka4 = v4(198, 18, 0, 1);
        let cases: [(&[u8], IpAddr, IpAddr, AdvertRepr); 3] = [
            (
                &KEEPALIVED_V2_PASS_BYTES,
                ka4,
                mcast4,
                AdvertRepr {
                    version: Version::V2,
                    vrid: Vrid::new(51).unwrap(),
                    priority: Priority(150),
                    interval: AdvertInterval::ONE_SECOND,
                    auth: Auth::password("7road123"),
                    addresses: vec![v4(198, 18, 0, 100)],
                },
            ),
            (
                &KEEPALIVED_V3_V4_BYTES,
                ka4,
                mcast4,
                AdvertRepr {
                    version: Version::V3,
                    vrid: Vrid::new(51).unwrap(),
                    priority: Priority(150),
                    interval: AdvertInterval::from_centis(10).unwrap(),
                    auth: Auth::None,
                    addresses: vec![v4(198, 18, 0, 100)],
                },
            ),
            (
                &KEEPALIVED_V3_V6_BYTES,
                "fe80::ac0e:74ff:fe6f:9872".parse().unwrap(),
                IpAddr::V6(VRRP_MCAST_V6),
                AdvertRepr {
                    version: Version::V3,
                    vrid: Vrid::new(61).unwrap(),
                    priority: Priority(150),
                    interval: AdvertInterval::from_centis(10).unwrap(),
                    auth: Auth::None,
                    addresses: vec!["fd00:18::100".parse().unwrap()],
                },
            ),
        ];
        for (bytes, src, dst, repr) in cases {
            let parsed = AdvertRepr::parse(&Packet::new_checked(bytes).unwrap(), src, dst).unwrap();
            assert_eq!(parsed, repr);
            // And we emit exactly what keepalived sends.
            let mut buf = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst)
                .unwrap();
            assert_eq!(&buf[..], bytes);
        }
    }

    #[test]
    fn v2_layout() {
        let repr = AdvertRepr {
            version: Version::V2,
            vrid: Vrid::new(51).unwrap(),
            priority: Priority(100),
            interval: AdvertInterval::from_secs(1).unwrap(),
            auth: Auth::password("7road123"),
            addresses: vec![v4(172, 16, 2, 250)],
        };
        let mut buf = vec![0xa5; repr.buffer_len()];
        repr.emit(
            &mut Packet::new_unchecked(&mut buf[..]),
            v4(198, 18, 0, 1),
            IpAddr::V4(VRRP_MCAST_V4),
        )
        .unwrap();
        assert_eq!(&buf[..6], &[0x21, 51, 100, 1, 1, 1]);
        assert_eq!(&buf[8..12], &[172, 16, 2, 250]);
        assert_eq!(&buf[12..20], b"7road123");
        // v2 checksum covers only the message: independent of src/dst.
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(v4(1, 2, 3, 4), v4(5, 6, 7, 8)));
    }

    #[test]
    fn v3_checksum_covers_pseudo_header() {
        let repr = AdvertRepr {
            version: Version::V3,
            vrid: Vrid::new(7).unwrap(),
            priority: Priority(200),
            interval: AdvertInterval::from_centis(10).unwrap(),
            auth: Auth::None,
            addresses: vec![v4(198, 18, 0, 100)],
        };
        let src = v4(198, 18, 0, 1);
        let dst = IpAddr::V4(VRRP_MCAST_V4);
        let buf = repr.to_bytes(src, dst).unwrap();
        assert_eq!(&buf[4..6], &[0x00, 10]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(v4(198, 18, 0, 2), dst));
        assert_eq!(
            AdvertRepr::parse(&p, v4(198, 18, 0, 2), dst),
            Err(ParseError::Checksum(p.checksum()))
        );
    }

    #[test]
    fn rejects() {
        let src = v4(198, 18, 0, 1);
        let dst = IpAddr::V4(VRRP_MCAST_V4);
        let short = [0x31u8, 1, 100];
        assert!(matches!(
            Packet::new_checked(&short[..]),
            Err(ParseError::Truncated { .. })
        ));
        let mut buf = AdvertRepr {
            version: Version::V3,
            vrid: Vrid::new(1).unwrap(),
            priority: Priority(1),
            interval: AdvertInterval::ONE_SECOND,
            auth: Auth::None,
            addresses: vec![],
        }
        .to_bytes(src, dst)
        .unwrap();
        buf[0] = 0x41;
        let p = Packet::new_unchecked(&buf[..]);
        assert_eq!(
            AdvertRepr::parse(&p, src, dst),
            Err(ParseError::UnsupportedVersion(4))
        );
        buf[0] = 0x32;
        let p = Packet::new_unchecked(&buf[..]);
        assert_eq!(
            AdvertRepr::parse(&p, src, dst),
            Err(ParseError::UnknownType(2))
        );
        buf[0] = 0x31;
        buf[1] = 0;
        let p = Packet::new_unchecked(&buf[..]);
        assert_eq!(AdvertRepr::parse(&p, src, dst), Err(ParseError::ZeroVrid));
        buf[1] = 1;
        buf[3] = 1; // count 1 but no address bytes
        let p = Packet::new_unchecked(&buf[..]);
        assert_eq!(
            AdvertRepr::parse(&p, src, dst),
            Err(ParseError::Truncated { len: 8, needed: 12 })
        );
    }

    /// Bytes past what the address count makes are refused, as keepalived's "vrrp packet
    /// too long", even with a checksum that covers them.
    #[test]
    fn trailing_bytes_are_refused() {
        let src = v4(198, 18, 0, 1);
        let dst = IpAddr::V4(VRRP_MCAST_V4);
        let mut buf = AdvertRepr {
            version: Version::V3,
            vrid: Vrid::new(51).unwrap(),
            priority: Priority(100),
            interval: AdvertInterval::from_centis(100).unwrap(),
            auth: Auth::None,
            addresses: vec![v4(198, 18, 0, 100)],
        }
        .to_bytes(src, dst)
        .unwrap();
        buf.extend_from_slice(&[0; 4]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum(src, dst);
        let p = Packet::new_unchecked(&buf[..]);
        assert_eq!(
            AdvertRepr::parse(&p, src, dst),
            Err(ParseError::TooLong {
                len: 16,
                needed: 12
            })
        );
    }

    #[test]
    fn all_priorities_round_trip() {
        let src = v4(198, 18, 0, 1);
        let dst = IpAddr::V4(VRRP_MCAST_V4);
        for p in 0..=255u8 {
            let repr = AdvertRepr {
                version: Version::V2,
                vrid: Vrid::new(255).unwrap(),
                priority: Priority(p),
                interval: AdvertInterval::from_secs(255).unwrap(),
                auth: Auth::None,
                addresses: vec![v4(198, 18, 0, p)],
            };
            let buf = repr.to_bytes(src, dst).unwrap();
            let parsed = AdvertRepr::parse(&Packet::new_unchecked(&buf[..]), src, dst).unwrap();
            assert_eq!(parsed, repr);
        }
    }

    #[test]
    fn interval_units() {
        assert_eq!(
            AdvertInterval::from_duration(Duration::from_millis(10))
                .unwrap()
                .centis(),
            1
        );
        assert_eq!(AdvertInterval::from_centis(150).unwrap().as_v2_secs(), None);
        assert_eq!(
            AdvertInterval::from_secs(3).unwrap().as_duration(),
            Duration::from_secs(3)
        );
        assert_eq!(AdvertInterval::from_centis(0), None);
        assert!(!AdvertInterval::from_secs(41).unwrap().fits_v3());
    }

    pub(crate) fn arb_repr() -> impl Strategy<Value = (AdvertRepr, IpAddr, IpAddr)> {
        let v2 = (
            1..=255u8,
            any::<u8>(),
            1..=255u8,
            proptest::option::of(any::<[u8; 8]>()),
            proptest::collection::vec(any::<[u8; 4]>(), 0..20),
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
        )
            .prop_map(|(vrid, prio, secs, pass, addrs, s, d)| {
                (
                    AdvertRepr {
                        version: Version::V2,
                        vrid: Vrid::new(vrid).unwrap(),
                        priority: Priority(prio),
                        interval: AdvertInterval::from_secs(secs).unwrap(),
                        auth: pass.map_or(Auth::None, Auth::Simple),
                        addresses: addrs.into_iter().map(|a| IpAddr::V4(a.into())).collect(),
                    },
                    IpAddr::V4(s.into()),
                    IpAddr::V4(d.into()),
                )
            });
        let v3 = (
            1..=255u8,
            any::<u8>(),
            1..=4095u16,
            any::<bool>(),
            proptest::collection::vec(any::<[u8; 16]>(), 0..20),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
        )
            .prop_map(|(vrid, prio, cs, six, addrs, s, d)| {
                let conv = |b: [u8; 16]| -> IpAddr {
                    if six {
                        IpAddr::V6(b.into())
                    } else {
                        IpAddr::V4([b[0], b[1], b[2], b[3]].into())
                    }
                };
                (
                    AdvertRepr {
                        version: Version::V3,
                        vrid: Vrid::new(vrid).unwrap(),
                        priority: Priority(prio),
                        interval: AdvertInterval::from_centis(cs).unwrap(),
                        auth: Auth::None,
                        addresses: addrs.into_iter().map(conv).collect(),
                    },
                    conv(s),
                    conv(d),
                )
            });
        prop_oneof![v2, v3]
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip((repr, src, dst) in arb_repr()) {
            let mut buf = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst).unwrap();
            let parsed = AdvertRepr::parse(&Packet::new_checked(&buf[..]).unwrap(), src, dst).unwrap();
            prop_assert_eq!(parsed, repr);
        }

        #[test]
        fn no_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), six: bool) {
            let (src, dst) = if six {
                (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(VRRP_MCAST_V6))
            } else {
                (v4(198, 18, 0, 1), IpAddr::V4(VRRP_MCAST_V4))
            };
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.version(), p.msg_type(), p.vrid(), p.priority(), p.count(), p.auth_type(),
                         p.adver_int_secs(), p.max_adver_int_cs(), p.checksum(), p.auth_data(),
                         p.address(six, 0), p.address(six, 300));
                if let Ok(r) = AdvertRepr::parse(&p, src, dst) {
                    // Anything that parses re-emits to something that parses the same.
                    let again = r.to_bytes(src, dst).unwrap();
                    prop_assert_eq!(AdvertRepr::parse(&Packet::new_unchecked(&again[..]), src, dst).unwrap(), r);
                }
            }
        }
    }
}
