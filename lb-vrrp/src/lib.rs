//! VRRPv2/v3 ([RFC 3768] / [RFC 5798]) for lb, wire-compatible with keepalived.
//!
//! This crate owns:
//!
//! * [`wire`]: the advertisement codec (no IO, no allocation beyond the address list);
//! * [`machine`]: the RFC 5798 §6 state machine of one virtual router and keepalived-style
//!   sync groups, sans-IO: time comes in as `now`, outputs are [`machine::Action`]s;
//! * `driver` and `vip` (feature `tokio`, on by default): a tokio driver over raw IP
//!   sockets (protocol 112), virtual-address management over netlink, gratuitous ARP and
//!   unsolicited neighbour advertisements.
//!
//! * [`track`]: keepalived's `vrrp_track_process` and `track_file`, sans-IO (process
//!   matching and quorum, file values, the kernel's process-event messages);
//! * `vmac` (feature `tokio`): keepalived's `use_vmac`, the virtual router MAC address of
//!   RFC 5798 §7.3 on a macvlan interface;
//! * `accept` (feature `tokio`): Accept_Mode False enforced with nftables drop rules, as
//!   keepalived's `no_accept`;
//! * `route` and `rule` (feature `tokio`): keepalived's `virtual_routes` and
//!   `virtual_rules`, parsed from its syntax and added and deleted over netlink with the
//!   VIPs.
//!
//! It does not parse keepalived.conf (the daemon maps it onto
//! [`driver::VrrpInstanceConfig`]) or run notify scripts (the `lb-vrrpd` binary maps the
//! driver's [`driver::Event`]s onto them). The driver does run keepalived-style
//! `vrrp_script` track scripts.
//!
//! # Privileges
//!
//! The driver needs exactly two capabilities and no root: `CAP_NET_RAW` (raw IP socket for
//! protocol 112, `SO_BINDTODEVICE`, AF_PACKET socket for gratuitous ARP, raw ICMPv6 socket
//! for neighbour advertisements) and `CAP_NET_ADMIN` (adding and removing addresses over
//! netlink, and nftables rules for instances without Accept_Mode). The integration test `runs_with_only_net_raw_and_net_admin` runs it as
//! `nobody` with exactly these two (e.g. systemd `AmbientCapabilities=CAP_NET_RAW
//! CAP_NET_ADMIN`). `wire` and `machine` need no privilege at all.
//!
//! # Features
//!
//! * `tokio` (default): the driver, VIP management and the `lb-vrrpd` binary. Without it
//!   (`--no-default-features`) the crate does no IO at all.
//!
//! [RFC 3768]: https://www.rfc-editor.org/rfc/rfc3768
//! [RFC 5798]: https://www.rfc-editor.org/rfc/rfc5798
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]
#![deny(clippy::disallowed_methods)]

#[cfg(feature = "tokio")]
pub mod accept;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod machine;
#[cfg(feature = "tokio")]
pub mod route;
#[cfg(feature = "tokio")]
pub mod rule;
pub mod track;
#[cfg(feature = "tokio")]
pub mod vip;
#[cfg(feature = "tokio")]
pub mod vmac;
pub mod wire;

/// Errors of this crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An advert that cannot be decoded or encoded.
    #[error("VRRP codec: {0}")]
    Wire(#[from] wire::ParseError),
    /// An inconsistent instance configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Virtual-address management failed.
    #[cfg(feature = "tokio")]
    #[error("virtual address: {0}")]
    Vip(#[from] vip::VipError),
    /// Virtual-route management failed.
    #[cfg(feature = "tokio")]
    #[error("virtual route: {0}")]
    Route(#[from] route::RouteError),
    /// Virtual-rule management failed.
    #[cfg(feature = "tokio")]
    #[error("virtual rule: {0}")]
    Rule(#[from] rule::RuleError),
    /// The Accept_Mode drop rules could not be applied.
    #[cfg(feature = "tokio")]
    #[error("Accept_Mode (no_accept) drop rules: {0}")]
    Accept(#[from] accept::AcceptError),
    /// A socket operation failed.
    #[cfg(feature = "tokio")]
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
