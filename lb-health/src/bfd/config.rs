//! [`BfdConfig`]: one keepalived `bfd_instance`.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};

/// One BFD session's settings: keepalived's `bfd_instance` block (keepalived.conf(5), "BFD
/// CONFIGURATION"), field for field.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_health::bfd::BfdConfig;
///
/// let mut cfg = BfdConfig::new("198.18.0.2".parse().unwrap());
/// assert_eq!(cfg.multiplier, 5);
/// assert_eq!(cfg.idle_tx, Duration::from_secs(1));
/// cfg.validate().unwrap();
/// cfg.multiplier = 0;
/// assert!(cfg.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdConfig {
    /// `neighbor_ip` (or `neighbour_ip`): the peer, sent to on UDP port 3784.
    pub neighbor_ip: IpAddr,
    /// `source_ip`: the local address packets are sent from (and, when every session of
    /// that family shares it, the address the receive socket is bound to). Without it the
    /// kernel chooses the source address.
    pub source_ip: Option<IpAddr>,
    /// `min_rx`: bfd.RequiredMinRxInterval, the fastest rate at which we accept packets
    /// ([RFC 5880 §6.8.1]). Default 10 ms; must be at least 1 µs and fit `u32` microseconds.
    ///
    /// [RFC 5880 §6.8.1]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.1
    pub min_rx: Duration,
    /// `min_tx`: bfd.DesiredMinTxInterval while the session is Up. Default 10 ms.
    pub min_tx: Duration,
    /// `idle_tx`: bfd.DesiredMinTxInterval while the session is not Up; at least 1 s
    /// ([RFC 5880 §6.8.3]). Default 1000 ms.
    ///
    /// [RFC 5880 §6.8.3]: https://www.rfc-editor.org/rfc/rfc5880#section-6.8.3
    pub idle_tx: Duration,
    /// `multiplier`: bfd.DetectMult, packets the peer may miss before we are declared
    /// down. Default 5; 1..=255.
    pub multiplier: u8,
    /// `passive`: send nothing until the peer has been heard ([RFC 5880 §6.1]). Default off.
    ///
    /// [RFC 5880 §6.1]: https://www.rfc-editor.org/rfc/rfc5880#section-6.1
    pub passive: bool,
    /// `ttl`: the IPv4 TTL we send with. Default 255 ([RFC 5881 §5]).
    ///
    /// [RFC 5881 §5]: https://www.rfc-editor.org/rfc/rfc5881#section-5
    pub ttl: u8,
    /// `hoplimit`: the IPv6 hop limit we send with. Default 64, as keepalived (which
    /// documents and sends 64, not RFC 5881's 255).
    pub hoplimit: u8,
    /// `max_hops`: how far below our own `ttl` (IPv4) or `hoplimit` (IPv6) a received TTL
    /// or hop limit may be. keepalived drops a packet when `received + max_hops <
    /// ttl_or_hoplimit` (bfd.c `bfd_check_packet_ttl`); 255 disables the check. Default 0:
    /// a peer with the same settings one hop away passes.
    pub max_hops: u8,
}

impl BfdConfig {
    /// A session with `neighbor_ip` and keepalived's defaults:
    ///
    /// * `source_ip`: none
    /// * `min_rx`: 10 ms, `min_tx`: 10 ms, `idle_tx`: 1000 ms
    /// * `multiplier`: 5
    /// * `passive`: false
    /// * `ttl`: 255, `hoplimit`: 64, `max_hops`: 0
    pub fn new(neighbor_ip: IpAddr) -> Self {
        Self {
            neighbor_ip,
            source_ip: None,
            min_rx: Duration::from_millis(10),
            min_tx: Duration::from_millis(10),
            idle_tx: Duration::from_millis(1000),
            multiplier: 5,
            passive: false,
            ttl: 255,
            hoplimit: 64,
            max_hops: 0,
        }
    }

    /// Refuses values the protocol cannot carry or keepalived refuses.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the setting: `multiplier` 0; `min_rx`, `min_tx` or
    /// `idle_tx` below 1 µs or beyond `u32::MAX` µs (the wire field); `idle_tx` below 1 s
    /// (RFC 5880 §6.8.3); `ttl`/`hoplimit` 0; a `source_ip` of another family than
    /// `neighbor_ip`; an unspecified or multicast `neighbor_ip`; an IPv6 link-local
    /// `neighbor_ip` or `source_ip` (fe80::/10: there is no setting for its scope, so
    /// every send would fail); an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`: received
    /// packets are matched by their IPv4 source, so such a session would never hear its
    /// peer; write the IPv4 address).
    pub fn validate(&self) -> Result<()> {
        let bad =
            |setting: &'static str, reason: String| Err(Error::InvalidConfig { setting, reason });
        if self.multiplier == 0 {
            return bad("multiplier", "must be 1..=255, got 0".into());
        }
        for (setting, d) in [
            ("min_rx", self.min_rx),
            ("min_tx", self.min_tx),
            ("idle_tx", self.idle_tx),
        ] {
            if d < Duration::from_micros(1) || d.as_micros() > u128::from(u32::MAX) {
                return bad(
                    setting,
                    format!("must be 1 µs..={} µs, got {d:?}", u32::MAX),
                );
            }
        }
        if self.idle_tx < Duration::from_secs(1) {
            return bad(
                "idle_tx",
                format!(
                    "must be at least 1 s (RFC 5880 §6.8.3), got {:?}",
                    self.idle_tx
                ),
            );
        }
        if self.ttl == 0 {
            return bad("ttl", "must be 1..=255, got 0".into());
        }
        if self.hoplimit == 0 {
            return bad("hoplimit", "must be 1..=255, got 0".into());
        }
        if self.neighbor_ip.is_unspecified() || self.neighbor_ip.is_multicast() {
            return bad(
                "neighbor_ip",
                format!("{} is not a unicast address", self.neighbor_ip),
            );
        }
        for (setting, ip) in [
            ("neighbor_ip", Some(self.neighbor_ip)),
            ("source_ip", self.source_ip),
        ] {
            let Some(IpAddr::V6(v6)) = ip else {
                continue;
            };
            if v6.to_ipv4_mapped().is_some() {
                return bad(
                    setting,
                    format!("{v6} is an IPv4-mapped IPv6 address; give the IPv4 address"),
                );
            }
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                return bad(
                    setting,
                    format!("{v6} is an IPv6 link-local address (fe80::/10), which needs a scope"),
                );
            }
        }
        if let Some(src) = self.source_ip {
            if src.is_ipv4() != self.neighbor_ip.is_ipv4() {
                return bad(
                    "source_ip",
                    format!(
                        "{src} and neighbor_ip {} are not of the same family",
                        self.neighbor_ip
                    ),
                );
            }
        }
        Ok(())
    }

    /// The TTL (IPv4) or hop limit (IPv6) we send with.
    pub fn tx_ttl(&self) -> u8 {
        if self.neighbor_ip.is_ipv4() {
            self.ttl
        } else {
            self.hoplimit
        }
    }

    /// Whether a packet that arrived with TTL / hop limit `ttl` is acceptable (keepalived's
    /// generalized TTL security check, [RFC 5881 §5] extended by `max_hops`): true when
    /// `max_hops` is 255 or `ttl + max_hops >= tx_ttl()`.
    ///
    /// [RFC 5881 §5]: https://www.rfc-editor.org/rfc/rfc5881#section-5
    pub fn accepts_ttl(&self, ttl: u8) -> bool {
        self.max_hops == u8::MAX
            || u16::from(ttl) + u16::from(self.max_hops) >= u16::from(self.tx_ttl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> BfdConfig {
        BfdConfig::new("198.18.0.2".parse().unwrap())
    }

    #[test]
    fn defaults_are_keepalived_s() {
        let c = v4();
        assert_eq!(c.min_rx, Duration::from_millis(10));
        assert_eq!(c.min_tx, Duration::from_millis(10));
        assert_eq!(c.idle_tx, Duration::from_millis(1000));
        assert_eq!(
            (c.multiplier, c.ttl, c.hoplimit, c.max_hops),
            (5, 255, 64, 0)
        );
        assert!(!c.passive);
        assert!(c.source_ip.is_none());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validation_refuses_bad_values() {
        let setting = |c: BfdConfig| match c.validate() {
            Err(Error::InvalidConfig { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            setting(BfdConfig {
                multiplier: 0,
                ..v4()
            }),
            "multiplier"
        );
        assert_eq!(
            setting(BfdConfig {
                min_rx: Duration::ZERO,
                ..v4()
            }),
            "min_rx"
        );
        assert_eq!(
            setting(BfdConfig {
                min_tx: Duration::from_nanos(999),
                ..v4()
            }),
            "min_tx"
        );
        assert_eq!(
            setting(BfdConfig {
                min_tx: Duration::from_micros(u64::from(u32::MAX) + 1),
                ..v4()
            }),
            "min_tx"
        );
        assert_eq!(
            setting(BfdConfig {
                idle_tx: Duration::from_millis(999),
                ..v4()
            }),
            "idle_tx"
        );
        assert_eq!(setting(BfdConfig { ttl: 0, ..v4() }), "ttl");
        assert_eq!(
            setting(BfdConfig {
                source_ip: Some("::1".parse().unwrap()),
                ..v4()
            }),
            "source_ip"
        );
        assert_eq!(
            setting(BfdConfig::new("0.0.0.0".parse().unwrap())),
            "neighbor_ip"
        );
        let v6 = |n: &str| BfdConfig::new(n.parse().unwrap());
        assert_eq!(setting(v6("fe80::1")), "neighbor_ip");
        assert_eq!(setting(v6("febf::1")), "neighbor_ip");
        assert_eq!(setting(v6("::ffff:198.18.0.2")), "neighbor_ip");
        assert_eq!(
            setting(BfdConfig {
                source_ip: Some("fe80::2".parse().unwrap()),
                ..v6("fd00:18::2")
            }),
            "source_ip"
        );
        assert_eq!(
            setting(BfdConfig {
                source_ip: Some("::ffff:198.18.0.1".parse().unwrap()),
                ..v6("fd00:18::2")
            }),
            "source_ip"
        );
        // Just outside fe80::/10, and the IPv4-compatible form, pass.
        assert_eq!(v6("fec0::1").validate(), Ok(()));
        assert_eq!(v6("fd00:18::2").validate(), Ok(()));
        assert!(BfdConfig {
            min_tx: Duration::from_micros(u64::from(u32::MAX)),
            ..v4()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn ttl_check_follows_keepalived() {
        let c = v4();
        assert!(c.accepts_ttl(255));
        assert!(!c.accepts_ttl(254));
        let c = BfdConfig {
            max_hops: 2,
            ..v4()
        };
        assert!(c.accepts_ttl(253));
        assert!(!c.accepts_ttl(252));
        let c = BfdConfig {
            max_hops: 255,
            ..v4()
        };
        assert!(c.accepts_ttl(1));
        let c6 = BfdConfig::new("2001:db8::2".parse().unwrap());
        assert_eq!(c6.tx_ttl(), 64);
        assert!(c6.accepts_ttl(64));
        assert!(!c6.accepts_ttl(63));
    }
}
