//! The BFD Control packet codec ([RFC 5880 §4.1]), sans-IO.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`ControlPacket`] is the mandatory section (24 bytes). [`ControlPacket::parse`] applies
//! the checks of [RFC 5880 §6.8.6] that need no session state, plus the two keepalived
//! applies too (Poll and Final never both set, [RFC 5880 §6.5]); anything else (which
//! session, AdminDown, TTL) is for the session and the driver. Intervals stay in wire
//! units (microseconds, `u32`) here; the session converts them to [`Duration`]s.
//!
//! Authentication ([RFC 5880 §6.7]) is not implemented, as in keepalived: a packet with the
//! A bit set is refused ([`PacketError::AuthNotSupported`]), which is what §6.8.6 requires
//! of a session without authentication configured.
//!
//! # Panic contract (as smoltcp's)
//!
//! * [`ControlPacket::parse`] never panics, whatever the bytes.
//! * [`ControlPacket::emit`] writes exactly [`ControlPacket::LEN`] bytes and never panics.
//!
//! # Examples
//!
//! ```
//! use lb_health::bfd::packet::{ControlPacket, Diagnostic, SessionState};
//!
//! let pkt = ControlPacket {
//!     state: SessionState::Down,
//!     detect_mult: 5,
//!     my_discriminator: 0x1234_5678,
//!     desired_min_tx_us: 1_000_000,
//!     required_min_rx_us: 10_000,
//!     ..ControlPacket::default()
//! };
//! let bytes = pkt.to_bytes();
//! assert_eq!(bytes[0], 0x20); // version 1, diag 0
//! assert_eq!(ControlPacket::parse(&bytes), Ok(pkt));
//! assert_eq!(pkt.diag, Diagnostic::NoDiagnostic);
//! ```
//!
//! [RFC 5880 §4.1]: https://www.rfc-editor.org/rfc/rfc5880#section-4.1
//! [RFC 5880 §6.5]: https://www.rfc-editor.org/rfc/rfc5880#section-6.5
//! [RFC 5880 §6.7]: https://www.rfc-editor.org/rfc/rfc5880#section-6.7
//! [RFC 5880 §6.8.6]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.6

use std::fmt;
#[cfg(doc)]
use std::time::Duration;

/// The only BFD version ([RFC 5880 §4.1]).
///
/// [RFC 5880 §4.1]: https://www.rfc-editor.org/rfc/rfc5880#section-4.1
pub const VERSION: u8 = 1;

/// UDP destination port of single-hop BFD Control packets ([RFC 5881 §4]).
///
/// [RFC 5881 §4]: https://www.rfc-editor.org/rfc/rfc5881#section-4
pub const CONTROL_PORT: u16 = 3784;

/// The source port range single-hop Control packets are sent from ([RFC 5881 §4]).
///
/// [RFC 5881 §4]: https://www.rfc-editor.org/rfc/rfc5881#section-4
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

mod field {
    pub(super) type Field = std::ops::Range<usize>;
    pub(super) const VERS_DIAG: usize = 0;
    pub(super) const STA_FLAGS: usize = 1;
    pub(super) const DETECT_MULT: usize = 2;
    pub(super) const LENGTH: usize = 3;
    pub(super) const MY_DISCR: Field = 4..8;
    pub(super) const YOUR_DISCR: Field = 8..12;
    pub(super) const DESIRED_MIN_TX: Field = 12..16;
    pub(super) const REQUIRED_MIN_RX: Field = 16..20;
    pub(super) const REQUIRED_MIN_ECHO_RX: Field = 20..24;

    pub(super) const FLAG_P: u8 = 0x20;
    pub(super) const FLAG_F: u8 = 0x10;
    pub(super) const FLAG_C: u8 = 0x08;
    pub(super) const FLAG_A: u8 = 0x04;
    pub(super) const FLAG_D: u8 = 0x02;
    pub(super) const FLAG_M: u8 = 0x01;
}

/// A BFD session state, the `Sta` field ([RFC 5880 §4.1], values 0–3).
///
/// [RFC 5880 §4.1]: https://www.rfc-editor.org/rfc/rfc5880#section-4.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionState {
    /// 0: held down by an operator.
    AdminDown,
    /// 1: down (the initial state).
    #[default]
    Down,
    /// 2: the remote end is heard, three-way handshake in progress.
    Init,
    /// 3: up.
    Up,
}

impl SessionState {
    /// The 2-bit wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }

    /// The state for a 2-bit wire value (only the low two bits are used).
    pub const fn from_bits(v: u8) -> Self {
        match v & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
}

impl fmt::Display for SessionState {
    /// The name keepalived logs (`AdminDown`, `Down`, `Init`, `Up`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AdminDown => "AdminDown",
            Self::Down => "Down",
            Self::Init => "Init",
            Self::Up => "Up",
        })
    }
}

/// The diagnostic code, the `Diag` field ([RFC 5880 §4.1], 5 bits): why the sender last
/// left Up. Values 9–31 are reserved and kept as [`Diagnostic::Unknown`].
///
/// [RFC 5880 §4.1]: https://www.rfc-editor.org/rfc/rfc5880#section-4.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Diagnostic {
    /// 0: no diagnostic.
    #[default]
    NoDiagnostic,
    /// 1: Control Detection Time Expired.
    ControlDetectionTimeExpired,
    /// 2: Echo Function Failed.
    EchoFunctionFailed,
    /// 3: Neighbor Signaled Session Down.
    NeighborSignaledSessionDown,
    /// 4: Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5: Path Down.
    PathDown,
    /// 6: Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7: Administratively Down.
    AdministrativelyDown,
    /// 8: Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9–31: reserved.
    Unknown(u8),
}

impl From<u8> for Diagnostic {
    /// Only the low five bits are used.
    fn from(v: u8) -> Self {
        match v & 0x1f {
            0 => Self::NoDiagnostic,
            1 => Self::ControlDetectionTimeExpired,
            2 => Self::EchoFunctionFailed,
            3 => Self::NeighborSignaledSessionDown,
            4 => Self::ForwardingPlaneReset,
            5 => Self::PathDown,
            6 => Self::ConcatenatedPathDown,
            7 => Self::AdministrativelyDown,
            8 => Self::ReverseConcatenatedPathDown,
            x => Self::Unknown(x),
        }
    }
}

impl From<Diagnostic> for u8 {
    fn from(d: Diagnostic) -> Self {
        match d {
            Diagnostic::NoDiagnostic => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Unknown(x) => x & 0x1f,
        }
    }
}

impl fmt::Display for Diagnostic {
    /// The text keepalived logs ("Control Detection Time Expired", ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDiagnostic => f.write_str("No Diagnostic"),
            Self::ControlDetectionTimeExpired => f.write_str("Control Detection Time Expired"),
            Self::EchoFunctionFailed => f.write_str("Echo Function Failed"),
            Self::NeighborSignaledSessionDown => f.write_str("Neighbor Signaled Session Down"),
            Self::ForwardingPlaneReset => f.write_str("Forwarding Plane Reset"),
            Self::PathDown => f.write_str("Path Down"),
            Self::ConcatenatedPathDown => f.write_str("Concatenated Path Down"),
            Self::AdministrativelyDown => f.write_str("Administratively Down"),
            Self::ReverseConcatenatedPathDown => f.write_str("Reverse Concatenated Path Down"),
            Self::Unknown(x) => write!(f, "Unknown ({x})"),
        }
    }
}

/// Why a datagram is not a valid BFD Control packet ([RFC 5880 §6.8.6]); the driver counts
/// each as a drop.
///
/// [RFC 5880 §6.8.6]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.6
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer than 24 bytes in the datagram.
    #[error("datagram of {0} bytes is shorter than a BFD Control packet (24)")]
    Truncated(usize),
    /// A version other than 1.
    #[error("unsupported BFD version {0}")]
    Version(u8),
    /// The Length field is below 24 (26 with authentication) or beyond the datagram.
    #[error("length field {length} does not fit the {datagram}-byte datagram")]
    Length {
        /// The Length field.
        length: u8,
        /// The datagram's size.
        datagram: usize,
    },
    /// Detect Mult is zero.
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    /// The Multipoint (M) bit is set.
    #[error("multipoint bit is set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    /// Your Discriminator is zero while the state is Init or Up.
    #[error("your discriminator is zero in state {0}")]
    ZeroYourDiscriminator(SessionState),
    /// The A bit is set: authentication is not configured (not supported).
    #[error("authentication bit is set but no authentication is configured")]
    AuthNotSupported,
    /// Poll and Final are both set (RFC 5880 §6.5 forbids it; keepalived drops it too).
    #[error("poll and final bits are both set")]
    PollAndFinal,
}

/// The mandatory section of a BFD Control packet ([RFC 5880 §4.1]), in wire units.
///
/// `Default` is a Down packet with every other field zero (not valid to send: my
/// discriminator and detect mult must be set).
///
/// [RFC 5880 §4.1]: https://www.rfc-editor.org/rfc/rfc5880#section-4.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ControlPacket {
    /// Diag: why the sender last left Up.
    pub diag: Diagnostic,
    /// Sta: the sender's session state.
    pub state: SessionState,
    /// P: the sender asks for verification of a parameter change (a Poll Sequence, §6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: BFD is independent of the control plane.
    pub control_plane_independent: bool,
    /// A: an authentication section follows (never accepted by [`parse`](Self::parse)).
    pub auth_present: bool,
    /// D: the sender wants Demand mode.
    pub demand: bool,
    /// M: reserved for multipoint, must be zero.
    pub multipoint: bool,
    /// Detect Mult: the sender's detection multiplier.
    pub detect_mult: u8,
    /// My Discriminator: the sender's non-zero session id.
    pub my_discriminator: u32,
    /// Your Discriminator: the receiver's id as the sender knows it, or zero.
    pub your_discriminator: u32,
    /// Desired Min TX Interval, in microseconds.
    pub desired_min_tx_us: u32,
    /// Required Min RX Interval, in microseconds (0: send me no periodic packets).
    pub required_min_rx_us: u32,
    /// Required Min Echo RX Interval, in microseconds (0: no Echo; lb never uses Echo).
    pub required_min_echo_rx_us: u32,
}

impl ControlPacket {
    /// Size of the mandatory section, and of every packet lb sends (no authentication).
    pub const LEN: usize = 24;

    /// Parses and validates a datagram's payload.
    ///
    /// # Errors
    ///
    /// The first [`PacketError`] found, in the order of RFC 5880 §6.8.6: version, length,
    /// detect mult, multipoint, my discriminator, your discriminator, then the A bit and
    /// Poll together with Final. Bytes beyond the Length field are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, PacketError> {
        if buf.len() < Self::LEN {
            return Err(PacketError::Truncated(buf.len()));
        }
        let version = buf[field::VERS_DIAG] >> 5;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let flags = buf[field::STA_FLAGS];
        let auth_present = flags & field::FLAG_A != 0;
        let length = buf[field::LENGTH];
        let min_len = if auth_present { 26 } else { Self::LEN };
        if usize::from(length) < min_len || usize::from(length) > buf.len() {
            return Err(PacketError::Length {
                length,
                datagram: buf.len(),
            });
        }
        let u32_at = |r: field::Field| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[r]);
            u32::from_be_bytes(b)
        };
        let pkt = Self {
            diag: Diagnostic::from(buf[field::VERS_DIAG] & 0x1f),
            state: SessionState::from_bits(flags >> 6),
            poll: flags & field::FLAG_P != 0,
            final_: flags & field::FLAG_F != 0,
            control_plane_independent: flags & field::FLAG_C != 0,
            auth_present,
            demand: flags & field::FLAG_D != 0,
            multipoint: flags & field::FLAG_M != 0,
            detect_mult: buf[field::DETECT_MULT],
            my_discriminator: u32_at(field::MY_DISCR),
            your_discriminator: u32_at(field::YOUR_DISCR),
            desired_min_tx_us: u32_at(field::DESIRED_MIN_TX),
            required_min_rx_us: u32_at(field::REQUIRED_MIN_RX),
            required_min_echo_rx_us: u32_at(field::REQUIRED_MIN_ECHO_RX),
        };
        if pkt.detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        if pkt.multipoint {
            return Err(PacketError::Multipoint);
        }
        if pkt.my_discriminator == 0 {
            return Err(PacketError::ZeroMyDiscriminator);
        }
        if pkt.your_discriminator == 0
            && !matches!(pkt.state, SessionState::Down | SessionState::AdminDown)
        {
            return Err(PacketError::ZeroYourDiscriminator(pkt.state));
        }
        if pkt.auth_present {
            return Err(PacketError::AuthNotSupported);
        }
        if pkt.poll && pkt.final_ {
            return Err(PacketError::PollAndFinal);
        }
        Ok(pkt)
    }

    /// Writes the packet, with version 1 and Length 24, into `buf`.
    pub fn emit(&self, buf: &mut [u8; Self::LEN]) {
        buf[field::VERS_DIAG] = (VERSION << 5) | (u8::from(self.diag) & 0x1f);
        let mut flags = self.state.value() << 6;
        for (set, bit) in [
            (self.poll, field::FLAG_P),
            (self.final_, field::FLAG_F),
            (self.control_plane_independent, field::FLAG_C),
            (self.auth_present, field::FLAG_A),
            (self.demand, field::FLAG_D),
            (self.multipoint, field::FLAG_M),
        ] {
            if set {
                flags |= bit;
            }
        }
        buf[field::STA_FLAGS] = flags;
        buf[field::DETECT_MULT] = self.detect_mult;
        // LEN is 24, which fits a u8.
        buf[field::LENGTH] = Self::LEN as u8;
        buf[field::MY_DISCR].copy_from_slice(&self.my_discriminator.to_be_bytes());
        buf[field::YOUR_DISCR].copy_from_slice(&self.your_discriminator.to_be_bytes());
        buf[field::DESIRED_MIN_TX].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        buf[field::REQUIRED_MIN_RX].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        buf[field::REQUIRED_MIN_ECHO_RX]
            .copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
    }

    /// The packet as 24 bytes (see [`emit`](Self::emit)).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        self.emit(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Built by hand from the RFC 5880 §4.1 layout: version 1, diag 3 (Neighbor Signaled
    /// Session Down), state Up (3) with P set, detect mult 3, length 24, my discriminator
    /// 0x01020304, your discriminator 0x0a0b0c0d, desired min TX 10 000 µs (0x2710),
    /// required min RX 1 000 000 µs (0x0f4240), required min echo RX 0.
    static UP_POLL_BYTES: [u8; 24] = [
        0b001_00011, // Vers 1 | Diag 3
        0b1110_0000, // Sta 3 (bits 0-1) | P (bit 2)
        3,
        24,
        0x01,
        0x02,
        0x03,
        0x04,
        0x0a,
        0x0b,
        0x0c,
        0x0d,
        0x00,
        0x00,
        0x27,
        0x10,
        0x00,
        0x0f,
        0x42,
        0x40,
        0,
        0,
        0,
        0,
    ];

    fn up_poll() -> ControlPacket {
        ControlPacket {
            diag: Diagnostic::NeighborSignaledSessionDown,
            state: SessionState::Up,
            poll: true,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 0x0a0b_0c0d,
            desired_min_tx_us: 10_000,
            required_min_rx_us: 1_000_000,
            ..ControlPacket::default()
        }
    }

    #[test]
    fn golden_bytes() {
        assert_eq!(up_poll().to_bytes(), UP_POLL_BYTES);
        assert_eq!(ControlPacket::parse(&UP_POLL_BYTES), Ok(up_poll()));
        // Emit overwrites every byte of a dirty buffer.
        let mut buf = [0xa5u8; 24];
        up_poll().emit(&mut buf);
        assert_eq!(buf, UP_POLL_BYTES);
    }

    #[test]
    fn flag_bits() {
        let base = ControlPacket {
            state: SessionState::AdminDown,
            detect_mult: 1,
            my_discriminator: 1,
            ..ControlPacket::default()
        };
        type Set = fn(&mut ControlPacket);
        let cases: [(Set, u8); 6] = [
            (|p| p.poll = true, 0x20),
            (|p| p.final_ = true, 0x10),
            (|p| p.control_plane_independent = true, 0x08),
            (|p| p.auth_present = true, 0x04),
            (|p| p.demand = true, 0x02),
            (|p| p.multipoint = true, 0x01),
        ];
        for (set, bit) in cases {
            let mut p = base;
            set(&mut p);
            assert_eq!(p.to_bytes()[1], bit);
        }
        for (s, v) in [
            (SessionState::AdminDown, 0),
            (SessionState::Down, 1),
            (SessionState::Init, 2),
            (SessionState::Up, 3),
        ] {
            assert_eq!(SessionState::from_bits(v), s);
            assert_eq!(s.value(), v);
        }
    }

    #[test]
    fn every_diag_value_round_trips() {
        for v in 0..32u8 {
            assert_eq!(u8::from(Diagnostic::from(v)), v);
        }
        assert_eq!(Diagnostic::from(9), Diagnostic::Unknown(9));
        assert_eq!(
            Diagnostic::ControlDetectionTimeExpired.to_string(),
            "Control Detection Time Expired"
        );
    }

    fn with(f: impl FnOnce(&mut [u8; 24])) -> [u8; 24] {
        let mut b = UP_POLL_BYTES;
        f(&mut b);
        b
    }

    #[test]
    fn each_validity_rule_is_enforced() {
        assert_eq!(
            ControlPacket::parse(&UP_POLL_BYTES[..23]),
            Err(PacketError::Truncated(23))
        );
        assert_eq!(ControlPacket::parse(&[]), Err(PacketError::Truncated(0)));
        for v in [0u8, 2, 7] {
            assert_eq!(
                ControlPacket::parse(&with(|b| b[0] = (v << 5) | 3)),
                Err(PacketError::Version(v))
            );
        }
        assert_eq!(
            ControlPacket::parse(&with(|b| b[3] = 23)),
            Err(PacketError::Length {
                length: 23,
                datagram: 24
            })
        );
        assert_eq!(
            ControlPacket::parse(&with(|b| b[3] = 25)),
            Err(PacketError::Length {
                length: 25,
                datagram: 24
            })
        );
        // A longer datagram with a shorter Length: the tail is ignored.
        let mut long = UP_POLL_BYTES.to_vec();
        long.extend_from_slice(&[9, 9]);
        assert_eq!(ControlPacket::parse(&long), Ok(up_poll()));
        assert_eq!(
            ControlPacket::parse(&with(|b| b[2] = 0)),
            Err(PacketError::ZeroDetectMult)
        );
        assert_eq!(
            ControlPacket::parse(&with(|b| b[1] |= 0x01)),
            Err(PacketError::Multipoint)
        );
        assert_eq!(
            ControlPacket::parse(&with(|b| b[4..8].fill(0))),
            Err(PacketError::ZeroMyDiscriminator)
        );
        assert_eq!(
            ControlPacket::parse(&with(|b| b[8..12].fill(0))),
            Err(PacketError::ZeroYourDiscriminator(SessionState::Up))
        );
        assert_eq!(
            ControlPacket::parse(&with(|b| {
                b[8..12].fill(0);
                b[1] = (b[1] & 0x3f) | (2 << 6);
            })),
            Err(PacketError::ZeroYourDiscriminator(SessionState::Init))
        );
        // Your discriminator 0 is fine in Down and AdminDown.
        for sta in [0u8, 1] {
            let b = with(|b| {
                b[8..12].fill(0);
                b[1] = (b[1] & 0x3f) | (sta << 6);
            });
            assert!(ControlPacket::parse(&b).is_ok());
        }
        let mut auth = with(|b| {
            b[1] |= 0x04;
            b[3] = 26;
        })
        .to_vec();
        auth.extend_from_slice(&[1, 2]);
        assert_eq!(
            ControlPacket::parse(&auth),
            Err(PacketError::AuthNotSupported)
        );
        // With the A bit, 24 bytes are too short for the auth section.
        assert!(matches!(
            ControlPacket::parse(&with(|b| b[1] |= 0x04)),
            Err(PacketError::Length { .. })
        ));
        assert_eq!(
            ControlPacket::parse(&with(|b| b[1] |= 0x10)),
            Err(PacketError::PollAndFinal)
        );
    }

    fn valid_packet() -> impl Strategy<Value = ControlPacket> {
        (
            (0u8..32, 0u8..4, any::<[bool; 4]>(), 1u8..=255),
            (1u32.., any::<u32>(), any::<[u32; 3]>()),
        )
            .prop_map(|((diag, sta, f, mult), (my, your, iv))| {
                let state = SessionState::from_bits(sta);
                let your = if your == 0 && matches!(state, SessionState::Init | SessionState::Up) {
                    1
                } else {
                    your
                };
                ControlPacket {
                    diag: Diagnostic::from(diag),
                    state,
                    poll: f[0],
                    final_: f[1] && !f[0],
                    control_plane_independent: f[2],
                    auth_present: false,
                    demand: f[3],
                    multipoint: false,
                    detect_mult: mult,
                    my_discriminator: my,
                    your_discriminator: your,
                    desired_min_tx_us: iv[0],
                    required_min_rx_us: iv[1],
                    required_min_echo_rx_us: iv[2],
                }
            })
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(p in valid_packet()) {
            prop_assert_eq!(ControlPacket::parse(&p.to_bytes()), Ok(p));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = ControlPacket::parse(&b) {
                // Whatever parses re-emits to the same first 24 bytes, length aside.
                let mut out = p.to_bytes();
                out[3] = b[3];
                prop_assert_eq!(&out[..], &b[..24]);
            }
        }
    }
}
