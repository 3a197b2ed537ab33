//! BFD, Bidirectional Forwarding Detection ([RFC 5880], asynchronous mode, single hop over
//! UDP per [RFC 5881]), interoperating with keepalived's `bfd_instance`.
//!
//! * [`packet`]: the Control packet codec (no IO).
//! * [`session`]: [`Session`], the sans-IO state machine of one peer (§6.8), time as
//!   `now: Instant` arguments, randomness from a seed.
//! * [`BfdConfig`]: keepalived's `bfd_instance` settings and their defaults.
//! * `driver` (feature `tokio`): `BfdSpeaker`, the sockets and one
//!   task driving every session, publishing a [`SessionStatus`] per instance on a
//!   `tokio::sync::watch`.
//!
//! Like keepalived, lb never asks for Demand mode (it honours a peer's: no periodic
//! packets while the peer sets D and both are Up) and implements neither the Echo
//! function nor authentication.
//!
//! # keepalived 2.2.7 as a peer
//!
//! Checked against Debian's keepalived in `tests/bfd.rs` and its source
//! (keepalived/bfd/bfd.c, bfd_scheduler.c, bfd_parser.c):
//!
//! * It logs `(NAME) Entering Up state` and `(NAME) Entering Down state (Local diagnostic -
//!   …, Remote diagnostic - …)` only on the way into and out of Up (Init only with extra
//!   detail), on stderr with `-l`.
//! * It sends no AdminDown when stopped (SIGTERM): its peers see their detection time
//!   expire (diagnostic 1), as after a crash.
//! * It takes a new discriminator whenever it leaves Up, so a peer's further packets to the
//!   old one are discarded ("session is not found").
//! * TTL: `ttl` and `hoplimit` are one setting (the last wins), defaulting to 255 for an
//!   IPv4 and 64 for an IPv6 neighbor; it drops a packet when `received + max_hops` is
//!   below that value (only when it got a TTL at all). [`BfdConfig::accepts_ttl`] is the
//!   same rule.
//! * It binds a random source port in 49152–65535 (narrowed by
//!   `net.ipv4.ip_local_port_range`) only when `source_ip` is set; lb always does.
//! * Its jitter is always 10–25 % (its Detect Mult 1 test is always true); lb uses 0–25 %
//!   (10–25 % for Detect Mult 1) as RFC 5880 §6.8.7 says.
//! * It refuses a Length other than the datagram's size, Poll with Final, and a diagnostic
//!   above 8; lb sends none of these.
//!
//! # Examples
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Instant;
//! use lb_health::bfd::{packet::ControlPacket, BfdConfig, Session, SessionState};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let mut s = Session::new(
//!     BfdConfig::new("198.18.0.2".parse().unwrap()),
//!     NonZeroU32::new(0x1234).unwrap(),
//!     42,
//!     now,
//! );
//! let first = s.poll_transmit(now).unwrap();
//! let bytes = first.to_bytes();
//! assert_eq!(ControlPacket::parse(&bytes).unwrap().state, SessionState::Down);
//! ```
//!
//! [RFC 5880]: https://www.rfc-editor.org/rfc/rfc5880
//! [RFC 5881]: https://www.rfc-editor.org/rfc/rfc5881

mod config;
pub mod packet;
pub mod session;

#[cfg(feature = "tokio")]
pub mod driver;

pub use config::BfdConfig;
pub use packet::{ControlPacket, Diagnostic, PacketError, SessionState};
pub use session::{Counters, Discard, Session, SessionStatus};

#[cfg(feature = "tokio")]
pub use driver::{BfdHandle, BfdSpeaker};
