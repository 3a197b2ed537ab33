//! BFD, Bidirectional Forwarding Detection ([RFC 5880], asynchronous mode, single hop over
//! UDP per [RFC 5881]), interoperating with keepalived's `bfd_instance`.
//!
//! * [`packet`]: the Control packet codec (no IO).
//! * [`session`]: [`Session`], the sans-IO state machine of one peer (§6.8), time as
//!   `now: Instant` arguments, randomness from a seed.
//! * [`BfdConfig`]: keepalived's `bfd_instance` settings and their defaults.
//! * `driver` (feature `tokio`): [`BfdSpeaker`](driver::BfdSpeaker), the sockets and one
//!   task driving every session, publishing a [`SessionStatus`] per instance on a
//!   `tokio::sync::watch`.
//!
//! Like keepalived, lb implements neither Demand mode, the Echo function nor
//! authentication.
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
