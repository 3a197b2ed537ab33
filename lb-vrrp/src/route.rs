//! Virtual routes (keepalived `virtual_routes`): routes a VRRP instance adds when it becomes
//! MASTER and deletes when it leaves MASTER, after its VIPs are added and before they are
//! removed, so that a route may name a VIP as its source (`src`).
//!
//! The syntax is keepalived 2.2.7's (`vrrp_iproute.c` `alloc_route`), itself `ip route`'s:
//!
//! ```text
//! [inet|inet6] [src ADDR] [to] [TYPE] DEST[/LEN] [via|gw [inet|inet6] ADDR] [dev|oif IF]
//!     [table N|main|local|default] [metric|priority|preference N] [scope S]
//!     [protocol P] [onlink] [no_track]
//! ```
//!
//! `TYPE` is `unicast` (the default), `blackhole`, `unreachable`, `prohibit` or `throw`;
//! `DEST` may be `default` (`any`, `all`; keepalived's old `default6`). A route is added
//! with protocol 18 (`keepalived`) and scope `global` unless it says otherwise
//! (keepalived.conf's reader also replaces a written protocol on a route without
//! `no_track`, as keepalived does), beside any route of the same key the host has. keepalived's other route options (`or`, `nexthop`, `tos`, `mtu`, `encap`, the
//! TCP metrics, `vrf`…) are refused: [`RouteError::Syntax`] names the option.
//!
//! Tracking, as keepalived's: the driver adds back a route with a `dev` and without
//! `no_track` that someone deleted while the instance is Master (keepalived leaves Master
//! and takes it again, with the same outcome where no peer is better).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;

use crate::vip::VipManager;

/// Errors of route parsing and management.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A route that cannot be parsed; the message names the word at fault.
    #[error("route {route:?}: {why}")]
    Syntax {
        /// The route as written.
        route: String,
        /// What is wrong with it.
        why: String,
    },
    /// The route's `dev` does not exist.
    #[error("route {route}: no such interface {dev:?}")]
    NoInterface {
        /// The route.
        route: String,
        /// The interface named.
        dev: String,
    },
    /// The kernel refused the request.
    #[error("route {route}: netlink: {source}")]
    Netlink {
        /// The route.
        route: String,
        /// The kernel's answer.
        source: Box<rtnetlink::Error>,
    },
}

/// A route's type (`rtm_type`, `ip route`'s TYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteKind {
    /// Forwarded (the default).
    #[default]
    Unicast,
    /// Silently discarded.
    Blackhole,
    /// Discarded with ICMP "host unreachable".
    Unreachable,
    /// Discarded with ICMP "communication administratively prohibited".
    Prohibit,
    /// Lookup continues in the next routing-policy rule's table.
    Throw,
}

impl RouteKind {
    fn word(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::Blackhole => "blackhole",
            Self::Unreachable => "unreachable",
            Self::Prohibit => "prohibit",
            Self::Throw => "throw",
        }
    }

    fn netlink(self) -> RouteType {
        match self {
            Self::Unicast => RouteType::Unicast,
            Self::Blackhole => RouteType::BlackHole,
            Self::Unreachable => RouteType::Unreachable,
            Self::Prohibit => RouteType::Prohibit,
            Self::Throw => RouteType::Throw,
        }
    }
}

/// keepalived's routing protocol number, its default for the routes it adds.
pub const RTPROT_KEEPALIVED: u8 = 18;
/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

/// One route of `virtual_routes`, as parsed from keepalived's syntax (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualRoute {
    /// The type.
    pub kind: RouteKind,
    /// Destination network (`default`: the unspecified address of the family).
    pub dst: IpAddr,
    /// Destination prefix length (default /32 or /128; `default` is /0).
    pub prefix_len: u8,
    /// Preferred source address (`src`, `RTA_PREFSRC`).
    pub src: Option<IpAddr>,
    /// Gateway (`via`, or keepalived's deprecated `gw`).
    pub via: Option<IpAddr>,
    /// Output interface (`dev`, `oif`).
    pub dev: Option<String>,
    /// Routing table (default 254, `main`).
    pub table: u32,
    /// Metric (`metric`, `priority`, `preference`).
    pub metric: Option<u32>,
    /// Scope (`rtm_scope`: 0 global, 200 site, 253 link, 254 host); default 0.
    pub scope: u8,
    /// Routing protocol (`rtm_protocol`); default [`RTPROT_KEEPALIVED`].
    pub protocol: u8,
    /// `onlink`: the gateway is on the link even if no prefix of the interface covers it.
    pub onlink: bool,
    /// keepalived's `no_track`: not tracked (one someone deletes is not added back). A
    /// route without `dev` is not tracked either, as keepalived's.
    pub no_track: bool,
}

impl VirtualRoute {
    /// Whether the route is IPv6.
    pub fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The netlink message that adds this route (`ifindex`: its `dev`'s index).
    fn message(&self, ifindex: Option<u32>) -> RouteMessage {
        let mut m = RouteMessage::default();
        let h = &mut m.header;
        h.address_family = if self.is_v6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        h.destination_prefix_length = self.prefix_len;
        h.protocol = RouteProtocol::from(self.protocol);
        h.scope = RouteScope::from(self.scope);
        h.kind = self.kind.netlink();
        if let Ok(t) = u8::try_from(self.table) {
            h.table = t;
        } else {
            h.table = 0;
        }
        if self.onlink {
            h.flags.push(RouteFlag::Onlink);
        }
        let a = &mut m.attributes;
        a.push(RouteAttribute::Table(self.table));
        if self.prefix_len > 0 {
            a.push(RouteAttribute::Destination(addr(self.dst)));
        }
        if let Some(s) = self.src {
            a.push(RouteAttribute::PrefSource(addr(s)));
        }
        if let Some(g) = self.via {
            a.push(RouteAttribute::Gateway(addr(g)));
        }
        if let Some(i) = ifindex {
            a.push(RouteAttribute::Oif(i));
        }
        if let Some(p) = self.metric {
            a.push(RouteAttribute::Priority(p));
        }
        m
    }
}

/// Whether `a` has bits set after its first `prefix` bits.
fn host_bits(a: IpAddr, prefix: u8) -> bool {
    match a {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            prefix < 32 && bits & (u32::MAX >> prefix) != 0
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            prefix < 128 && bits & (u128::MAX >> prefix) != 0
        }
    }
}

fn addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

impl fmt::Display for VirtualRoute {
    /// `ip route`'s form: `blackhole 198.18.1.0/24`, `198.18.1.0/24 via 198.18.0.1 dev eth0
    /// table 100 metric 10`; defaults left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind.word())?;
        }
        if self.prefix_len == 0 {
            f.write_str(if self.is_v6() {
                "inet6 default"
            } else {
                "default"
            })?;
        } else {
            write!(f, "{}/{}", self.dst, self.prefix_len)?;
        }
        if let Some(g) = self.via {
            write!(f, " via {g}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        if let Some(s) = self.src {
            write!(f, " src {s}")?;
        }
        if self.table != RT_TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if self.scope != 0 {
            write!(f, " scope {}", self.scope)?;
        }
        if self.protocol != RTPROT_KEEPALIVED {
            write!(f, " protocol {}", self.protocol)?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// iproute2's names (`/usr/share/iproute2/rt_protos`) of routing protocols.
const PROTOCOLS: &[(&str, u8)] = &[
    ("redirect", 1),
    ("kernel", 2),
    ("boot", 3),
    ("static", 4),
    ("gated", 8),
    ("ra", 9),
    ("mrt", 10),
    ("zebra", 11),
    ("bird", 12),
    ("dnrouted", 13),
    ("xorp", 14),
    ("ntk", 15),
    ("dhcp", 16),
    ("keepalived", 18),
    ("babel", 42),
    ("openr", 99),
    ("bgp", 186),
    ("isis", 187),
    ("ospf", 188),
    ("rip", 189),
    ("eigrp", 192),
];

/// iproute2's names of scopes.
const SCOPES: &[(&str, u8)] = &[
    ("global", 0),
    ("universe", 0),
    ("site", 200),
    ("link", 253),
    ("host", 254),
    ("nowhere", 255),
];

/// The reserved routing tables' names.
const TABLES: &[(&str, u32)] = &[("default", 253), ("main", 254), ("local", 255)];

/// keepalived route options lb does not implement: refused by name.
const UNSUPPORTED: &[&str] = &[
    "or",
    "nexthop",
    "from",
    "tos",
    "dsfield",
    "encap",
    "expires",
    "mtu",
    "hoplimit",
    "advmss",
    "rtt",
    "rttvar",
    "reordering",
    "window",
    "cwnd",
    "ssthresh",
    "realms",
    "rto_min",
    "initcwnd",
    "initrwnd",
    "features",
    "quickack",
    "congctl",
    "pref",
    "fastopen_no_cookie",
    "add",
    "prepend",
    "append",
    "as",
    "track_group",
    "vrf",
];

/// A number in C's `strtoul(…, 0)` bases (`0x…` hex, `0…` octal, decimal), as keepalived
/// reads its route and rule numbers.
pub(crate) fn c_number(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// A routing table: one of the reserved names or a number ([`c_number`]), not 0.
pub(crate) fn table_number(v: &str) -> Option<u32> {
    TABLES
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .or_else(|| c_number(v))
        .filter(|t| *t != 0)
}

fn named<T: Copy + FromStr>(names: &[(&str, T)], w: &str) -> Option<T> {
    names
        .iter()
        .find(|(n, _)| *n == w)
        .map(|(_, v)| *v)
        .or_else(|| w.parse().ok())
}

impl FromStr for VirtualRoute {
    type Err = RouteError;

    /// Parses one `virtual_routes` line (see the module docs).
    ///
    /// # Errors
    /// [`RouteError::Syntax`]: an unknown or unsupported word, a missing or bad value,
    /// IPv4 and IPv6 mixed, no destination, a prefix length out of range.
    fn from_str(s: &str) -> Result<Self, RouteError> {
        let err = |why: String| RouteError::Syntax {
            route: s.to_owned(),
            why,
        };
        let mut family: Option<bool> = None; // Some(true): IPv6
        let mut fam = |v6: bool, what: &str| -> Result<(), RouteError> {
            match family {
                Some(f) if f != v6 => Err(err(format!(
                    "{what}: IPv4 and IPv6 addresses mixed in one route"
                ))),
                _ => {
                    family = Some(v6);
                    Ok(())
                }
            }
        };
        let mut r = Self {
            kind: RouteKind::Unicast,
            dst: IpAddr::from([0, 0, 0, 0]),
            prefix_len: 0,
            src: None,
            via: None,
            dev: None,
            table: RT_TABLE_MAIN,
            metric: None,
            scope: 0,
            protocol: RTPROT_KEEPALIVED,
            onlink: false,
            no_track: false,
        };
        let mut dst: Option<Option<(IpAddr, Option<u8>)>> = None; // Some(None): default
        let mut words = s.split_whitespace().peekable();
        while let Some(w) = words.next() {
            let mut value = |what: &str| {
                words
                    .next()
                    .ok_or_else(|| err(format!("`{what}` needs a value")))
            };
            match w {
                "inet" => fam(false, w)?,
                "inet6" => fam(true, w)?,
                "src" => {
                    let v = value(w)?;
                    let a: IpAddr = v
                        .parse()
                        .map_err(|_| err(format!("src {v:?} is not an IP address")))?;
                    fam(a.is_ipv6(), w)?;
                    r.src = Some(a);
                }
                "via" | "gw" => {
                    let mut v = value(w)?;
                    if v == "inet" || v == "inet6" {
                        fam(v == "inet6", w)?;
                        v = value(w)?;
                    }
                    let a: IpAddr = v
                        .parse()
                        .map_err(|_| err(format!("{w} {v:?} is not an IP address")))?;
                    fam(a.is_ipv6(), w)?;
                    r.via = Some(a);
                }
                "dev" | "oif" => r.dev = Some(value(w)?.to_owned()),
                "table" => {
                    let v = value(w)?;
                    r.table = table_number(v).ok_or_else(|| {
                        err(format!(
                            "table {v:?}: give a number (1..=4294967295) or main, local, default"
                        ))
                    })?;
                }
                "metric" | "priority" | "preference" => {
                    let v = value(w)?;
                    r.metric = Some(
                        v.parse()
                            .map_err(|_| err(format!("{w} {v:?} is not a number")))?,
                    );
                }
                "scope" => {
                    let v = value(w)?;
                    r.scope =
                        named(SCOPES, v).ok_or_else(|| err(format!("unknown scope {v:?}")))?;
                }
                "protocol" | "proto" => {
                    let v = value(w)?;
                    r.protocol = named(PROTOCOLS, v)
                        .ok_or_else(|| err(format!("unknown protocol {v:?}")))?;
                }
                "onlink" => r.onlink = true,
                "no_track" => r.no_track = true,
                w if UNSUPPORTED.contains(&w) => {
                    return Err(err(format!("`{w}` is not supported by lb")));
                }
                _ => {
                    let mut w = w;
                    if w == "to" {
                        w = value("to")?;
                    }
                    let kind = match w {
                        "unicast" => Some(RouteKind::Unicast),
                        "blackhole" => Some(RouteKind::Blackhole),
                        "unreachable" => Some(RouteKind::Unreachable),
                        "prohibit" => Some(RouteKind::Prohibit),
                        "throw" => Some(RouteKind::Throw),
                        "local" | "broadcast" | "anycast" | "multicast" | "nat" | "xresolve" => {
                            return Err(err(format!("route type `{w}` is not supported by lb")));
                        }
                        _ => None,
                    };
                    if let Some(k) = kind {
                        r.kind = k;
                        w = value(w)?;
                    }
                    if dst.is_some() {
                        return Err(err(format!("a second destination {w:?}")));
                    }
                    if matches!(w, "default" | "any" | "all") {
                        dst = Some(None);
                        continue;
                    }
                    // keepalived before 2.0.8; `inet6 default` now.
                    if w == "default6" {
                        fam(true, w)?;
                        dst = Some(None);
                        continue;
                    }
                    let (a, p) = match w.split_once('/') {
                        Some((a, p)) => (a, Some(p)),
                        None => (w, None),
                    };
                    let a: IpAddr = a
                        .parse()
                        .map_err(|_| err(format!("unknown route keyword {w:?}")))?;
                    let p = match p {
                        None => None,
                        Some(p) => Some(
                            p.parse::<u8>()
                                .ok()
                                .filter(|n| *n <= if a.is_ipv4() { 32 } else { 128 })
                                .ok_or_else(|| err(format!("bad prefix length /{p}")))?,
                        ),
                    };
                    fam(a.is_ipv6(), "destination")?;
                    dst = Some(Some((a, p)));
                }
            }
        }
        let v6 = family.unwrap_or(false);
        match dst {
            None => return Err(err("no destination".into())),
            Some(Some((a, Some(p)))) if host_bits(a, p) => {
                return Err(err(format!(
                    "{a}/{p} has bits set beyond its prefix (the kernel refuses it)"
                )));
            }
            Some(None) => {
                r.dst = if v6 {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                };
                r.prefix_len = 0;
            }
            Some(Some((a, p))) => {
                r.dst = a;
                r.prefix_len = p.unwrap_or(if a.is_ipv4() { 32 } else { 128 });
            }
        }
        Ok(r)
    }
}

impl VipManager {
    fn route_message(&self, r: &VirtualRoute) -> Result<RouteMessage, RouteError> {
        let ifindex = match &r.dev {
            Some(d) => Some(Self::ifindex(d).map_err(|_| RouteError::NoInterface {
                route: r.to_string(),
                dev: d.clone(),
            })?),
            None => None,
        };
        Ok(r.message(ifindex))
    }

    /// Adds `route` as keepalived does (`NLM_F_CREATE` without `NLM_F_EXCL`): a route of
    /// the same key (destination, table, metric) but another gateway, source or protocol
    /// (the host's own, a DHCP or router-advertisement route) stays, and ours is added in
    /// front of it. `Ok(true)`: added; `Ok(false)`: the same route was there already
    /// (the kernel's EEXIST, which keepalived counts as added).
    ///
    /// # Errors
    /// [`RouteError::NoInterface`], or [`RouteError::Netlink`] if the kernel refuses
    /// (a gateway not on any link, an unknown source address…).
    ///
    /// # Cancel safety
    /// Not cancel safe: the request may or may not have been applied.
    pub async fn add_route(&self, route: &VirtualRoute) -> Result<bool, RouteError> {
        let m = self.route_message(route)?;
        match self.new_route(m).await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(source) => Err(RouteError::Netlink {
                route: route.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// RTM_NEWROUTE with `NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE` (rtnetlink's own
    /// request adds `NLM_F_EXCL`, which refuses any route of the same key).
    async fn new_route(&self, m: RouteMessage) -> Result<(), rtnetlink::Error> {
        use futures::StreamExt as _;
        use netlink_packet_core::{
            NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
        };
        use netlink_packet_route::RouteNetlinkMessage;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(m));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
        let mut handle = self.handle.clone();
        let mut response = handle.request(req)?;
        while let Some(msg) = response.next().await {
            if let NetlinkPayload::Error(e) = msg.payload {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
        Ok(())
    }

    /// Deletes `route`, matched as keepalived deletes its own: destination, table, type if
    /// not unicast, protocol, gateway, interface, metric, source, and the scope if written
    /// (any scope otherwise). A route of another protocol (the host's own) is never
    /// matched. Deleting a route that is not there succeeds.
    ///
    /// # Errors
    /// [`RouteError::Netlink`] if the kernel refuses.
    ///
    /// # Cancel safety
    /// Not cancel safe: the request may or may not have been applied.
    pub async fn remove_route(&self, route: &VirtualRoute) -> Result<(), RouteError> {
        let mut m = match self.route_message(route) {
            Ok(m) => m,
            // Its interface is gone, and with it the route.
            Err(RouteError::NoInterface { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if route.scope == 0 {
            m.header.scope = RouteScope::NoWhere;
        }
        if route.kind == RouteKind::Unicast {
            m.header.kind = RouteType::Unspec;
        }
        m.header.flags.clear();
        match self.handle.route().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(source) => Err(RouteError::Netlink {
                route: route.to_string(),
                source: Box::new(source),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VirtualRoute {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn why(s: &str) -> String {
        match s.parse::<VirtualRoute>() {
            Err(RouteError::Syntax { why, .. }) => why,
            other => panic!("{s}: {other:?}"),
        }
    }

    /// keepalived's manual's examples that lb supports, and its defaults.
    #[test]
    fn keepalived_examples_parse() {
        let r = p("src 192.168.100.1 to 192.168.109.0/24 via 192.168.200.254 dev eth1");
        assert_eq!(r.src, Some("192.168.100.1".parse().unwrap()));
        assert_eq!(
            (r.dst, r.prefix_len),
            ("192.168.109.0".parse().unwrap(), 24)
        );
        assert_eq!(r.via, Some("192.168.200.254".parse().unwrap()));
        assert_eq!(r.dev.as_deref(), Some("eth1"));
        assert_eq!(
            (r.table, r.protocol, r.scope, r.kind),
            (254, 18, 0, RouteKind::Unicast)
        );
        let r = p("192.168.111.0/24 dev eth2 no_track");
        assert!(r.no_track && r.via.is_none());
        let r = p("blackhole 192.168.114.0/24");
        assert_eq!(r.kind, RouteKind::Blackhole);
        let r = p("0.0.0.0/0 gw 192.168.0.1 table 100");
        assert_eq!((r.prefix_len, r.table), (0, 100));
        let r = p("inet6 default via fd00:18::1 metric 5 protocol static scope link onlink");
        assert!(r.is_v6() && r.prefix_len == 0 && r.onlink);
        assert_eq!((r.metric, r.protocol, r.scope), (Some(5), 4, 253));
        let r = p("default6 via fd00:18::1");
        assert!(r.is_v6() && r.prefix_len == 0);
        assert_eq!(r.to_string(), "inet6 default via fd00:18::1");
        let r = p("default gw inet 198.18.0.1");
        assert!(!r.is_v6() && r.via == Some("198.18.0.1".parse().unwrap()));
        let r = p("198.18.1.7 table main");
        assert_eq!((r.prefix_len, r.table), (32, 254));
        let r = p("unreachable fd00:18::/64 table 7");
        assert_eq!(
            (r.kind, r.prefix_len, r.table),
            (RouteKind::Unreachable, 64, 7)
        );
        assert_eq!(
            p("198.18.1.0/24 via 198.18.0.1 dev eth0 table 100 metric 10").to_string(),
            "198.18.1.0/24 via 198.18.0.1 dev eth0 table 100 metric 10"
        );
    }

    /// The netlink message: a table above 255 in RTA_TABLE with 0 in the header, the
    /// defaults keepalived sends, no destination attribute for a default route.
    #[test]
    fn messages_carry_keepalived_defaults() {
        let m = p("198.18.1.0/24 via 198.18.0.1 table 1000 metric 5 onlink").message(Some(7));
        assert_eq!(m.header.table, 0);
        assert_eq!(m.header.protocol, RouteProtocol::KeepAlived);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.destination_prefix_length, 24);
        assert_eq!(m.header.flags, [RouteFlag::Onlink]);
        for a in [
            RouteAttribute::Table(1000),
            RouteAttribute::Destination(addr("198.18.1.0".parse().unwrap())),
            RouteAttribute::Gateway(addr("198.18.0.1".parse().unwrap())),
            RouteAttribute::Oif(7),
            RouteAttribute::Priority(5),
        ] {
            assert!(m.attributes.contains(&a), "{a:?} in {:?}", m.attributes);
        }
        let m = p("inet6 default via fd00:18::1").message(None);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert_eq!(
            p("blackhole 198.18.3.0/24").message(None).header.kind,
            RouteType::BlackHole
        );
    }

    #[test]
    fn bad_routes_name_the_word() {
        assert_eq!(why("via 198.18.0.1"), "no destination");
        assert_eq!(
            why("198.18.1.0/24 via fd00:18::1"),
            "via: IPv4 and IPv6 addresses mixed in one route"
        );
        assert_eq!(
            why("198.18.1.0/24 nexthop via 198.18.0.1"),
            "`nexthop` is not supported by lb"
        );
        assert_eq!(why("198.18.1.0/33"), "bad prefix length /33");
        assert_eq!(why("198.18.1.0/24 metric"), "`metric` needs a value");
        assert_eq!(
            why("198.18.1.0/24 table blue"),
            "table \"blue\": give a number (1..=4294967295) or main, local, default"
        );
        assert_eq!(why("198.18.1.0/24 fast"), "a second destination \"fast\"");
        assert_eq!(why("bogus"), "unknown route keyword \"bogus\"");
        assert_eq!(
            why("198.18.1.5/24"),
            "198.18.1.5/24 has bits set beyond its prefix (the kernel refuses it)"
        );
        assert_eq!(
            why("10.0.0.0/0 via 198.18.0.1"),
            "10.0.0.0/0 has bits set beyond its prefix (the kernel refuses it)"
        );
        assert_eq!(
            why("local 198.18.1.1"),
            "route type `local` is not supported by lb"
        );
    }
}
