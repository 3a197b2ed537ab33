//! VRRPv2/v3 (RFC 3768 / RFC 5798) for lb: the advertisement codec, the sans-IO state
//! machine, a tokio driver over raw sockets, and virtual-address management with netlink
//! and gratuitous ARP / unsolicited neighbour advertisements.
//!
//! Nothing is implemented yet; this crate is laid down so the workspace has its final shape.
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]
