//! Wiring for the `lb-node` daemon and the `lbctl` tool.
//!
//! This crate owns the configuration ([`config`]: one model, a TOML and a keepalived.conf
//! front end, validation with `file:line:column` errors) and the admin API ([`admin`]: a
//! line-delimited JSON protocol on a Unix socket, its server generic over
//! [`admin::AdminHandler`], its client, and `lbctl`'s rendering). It contains no protocol
//! logic: VRRP, health checking, scheduling and forwarding live in the library crates, which
//! the daemon composes.
//!
//! # Examples
//!
//! ```
//! use std::path::Path;
//! use lb_bins::config::toml::parse_str;
//!
//! let (cfg, warnings) = parse_str("[global]\nrouter_id = \"lb1\"\n", Path::new("lb.toml")).unwrap();
//! assert_eq!(cfg.global.router_id.as_deref(), Some("lb1"));
//! assert!(warnings.is_empty());
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod check;
pub mod config;
pub mod lbctl;
pub mod logging;
pub mod node;
