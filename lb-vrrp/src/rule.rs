//! Virtual rules (keepalived `virtual_rules`): routing-policy rules (`ip rule`) a VRRP
//! instance adds when it becomes MASTER, after its VIPs and routes, and deletes when it
//! leaves MASTER, before them (keepalived 2.2.7's `vrrp_state_become_master` and
//! `vrrp_restore_interface` order).
//!
//! The syntax is keepalived 2.2.7's (`vrrp_iprule.c` `alloc_rule`), itself `ip rule`'s:
//!
//! ```text
//! [inet|inet6] [not] [from PREFIX|all] [to PREFIX|all] [preference|priority|order N]
//!     [fwmark N[/MASK]] [iif|dev IF] [oif IF] [protocol N] [no_track]
//!     (table|lookup N|main|local|default | [type] goto N | nop | blackhole | unreachable | prohibit)
//! ```
//!
//! Exactly one action. A rule without `no_track` and without a written `protocol` gets
//! protocol 18 (`keepalived`); keepalived.conf's reader also replaces a written one on a
//! rule without `no_track`, as keepalived does. Numbers are C's (`0x…`, `0…` octal). A
//! rule without a preference gets none here ([`VirtualRule::priority`]
//! is `None`): keepalived numbers them down from 16384 with a warning, which the
//! keepalived.conf reader does. keepalived's other rule options (`tos`, `realms`,
//! `suppress_prefixlength`, `suppress_ifgroup`, `uidrange`, `ipproto`, `sport`, `dport`,
//! `l3mdev`, `tunnel-id`, `track_group`) are refused: [`RuleError::Syntax`] names them.
//!
//! Tracking, as keepalived's: the driver adds back a rule without `no_track` that someone
//! deleted while the instance is Master.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlag, RuleMessage};
use netlink_packet_route::AddressFamily;

use crate::route::{c_number, table_number, RTPROT_KEEPALIVED};
use crate::vip::VipManager;

/// Errors of rule parsing and management.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A rule that cannot be parsed; the message names the word at fault.
    #[error("rule {rule:?}: {why}")]
    Syntax {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        why: String,
    },
    /// The kernel refused the request.
    #[error("rule {rule}: netlink: {source}")]
    Netlink {
        /// The rule.
        rule: String,
        /// The kernel's answer.
        source: Box<rtnetlink::Error>,
    },
}

/// What a matching packet's lookup does (`fib_rule_hdr.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleTarget {
    /// `table N` / `lookup N`: look the route up in table N (1..).
    Table(u32),
    /// `goto N`: continue with the rule of preference N (above this one's).
    Goto(u32),
    /// `nop`: nothing (a placeholder).
    Nop,
    /// `blackhole`: drop silently.
    Blackhole,
    /// `unreachable`: drop with ICMP "network unreachable".
    Unreachable,
    /// `prohibit`: drop with ICMP "administratively prohibited".
    Prohibit,
}

/// One rule of `virtual_rules` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualRule {
    /// IPv6 (`inet6`, or an IPv6 `from`/`to`); IPv4 otherwise.
    pub v6: bool,
    /// `not`: the selector inverted.
    pub not: bool,
    /// `from`: source prefix (`all`: none).
    pub from: Option<(IpAddr, u8)>,
    /// `to`: destination prefix (`all`: none).
    pub to: Option<(IpAddr, u8)>,
    /// `preference` / `priority` / `order`.
    pub priority: Option<u32>,
    /// `fwmark N[/MASK]`.
    pub fwmark: Option<(u32, Option<u32>)>,
    /// `iif` / `dev`: the input interface.
    pub iif: Option<String>,
    /// `oif`: the output interface (locally generated traffic bound to it).
    pub oif: Option<String>,
    /// `protocol` (`FRA_PROTOCOL`): [`RTPROT_KEEPALIVED`] unless `no_track` (then none
    /// unless written).
    pub protocol: Option<u8>,
    /// keepalived's `no_track`.
    pub no_track: bool,
    /// The action.
    pub target: RuleTarget,
}

fn prefix_text(p: Option<(IpAddr, u8)>) -> String {
    match p {
        None => "all".into(),
        Some((a, l)) => format!("{a}/{l}"),
    }
}

impl fmt::Display for VirtualRule {
    /// `ip rule`'s form: `from 198.18.0.250/32 lookup 100 pref 100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            f.write_str("inet6 ")?;
        }
        if self.not {
            f.write_str("not ")?;
        }
        write!(f, "from {}", prefix_text(self.from))?;
        if self.to.is_some() {
            write!(f, " to {}", prefix_text(self.to))?;
        }
        if let Some((m, mask)) = self.fwmark {
            write!(f, " fwmark {m:#x}")?;
            if let Some(mask) = mask {
                write!(f, "/{mask:#x}")?;
            }
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif {o}")?;
        }
        match self.target {
            RuleTarget::Table(t) => write!(f, " lookup {t}")?,
            RuleTarget::Goto(g) => write!(f, " goto {g}")?,
            RuleTarget::Nop => f.write_str(" nop")?,
            RuleTarget::Blackhole => f.write_str(" blackhole")?,
            RuleTarget::Unreachable => f.write_str(" unreachable")?,
            RuleTarget::Prohibit => f.write_str(" prohibit")?,
        }
        if let Some(p) = self.priority {
            write!(f, " pref {p}")?;
        }
        Ok(())
    }
}

/// keepalived rule options lb does not implement: refused by name.
const UNSUPPORTED: &[&str] = &[
    "tos",
    "dsfield",
    "realms",
    "suppress_prefixlength",
    "sup_pl",
    "suppress_ifgroup",
    "sup_group",
    "uidrange",
    "ipproto",
    "sport",
    "dport",
    "l3mdev",
    "tunnel-id",
    "track_group",
];

impl FromStr for VirtualRule {
    type Err = RuleError;

    /// Parses one `virtual_rules` line (see the module docs).
    ///
    /// # Errors
    /// [`RuleError::Syntax`]: an unknown or unsupported word, a missing or bad value,
    /// IPv4 and IPv6 mixed, no action or two, a `goto` not above the rule's preference.
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let err = |why: String| RuleError::Syntax {
            rule: s.to_owned(),
            why,
        };
        let mut family: Option<bool> = None;
        let mut r = Self {
            v6: false,
            not: false,
            from: None,
            to: None,
            priority: None,
            fwmark: None,
            iif: None,
            oif: None,
            protocol: None,
            no_track: false,
            target: RuleTarget::Nop,
        };
        let mut target: Option<RuleTarget> = None;
        let mut words = s.split_whitespace();
        while let Some(w) = words.next() {
            let mut value = |what: &str| {
                words
                    .next()
                    .ok_or_else(|| err(format!("`{what}` needs a value")))
            };
            let mut set_target = |t: RuleTarget| {
                if target.replace(t).is_some() {
                    Err(err(
                        "more than one of table/goto/nop/blackhole/unreachable/prohibit".into(),
                    ))
                } else {
                    Ok(())
                }
            };
            match w {
                "inet" | "inet6" => {
                    let v6 = w == "inet6";
                    if family.is_some_and(|f| f != v6) {
                        return Err(err(format!("{w}: IPv4 and IPv6 mixed in one rule")));
                    }
                    family = Some(v6);
                }
                "not" => r.not = true,
                "from" | "to" => {
                    let v = value(w)?;
                    let p = if matches!(v, "all" | "any" | "default") {
                        None
                    } else {
                        let (a, l) = match v.split_once('/') {
                            Some((a, l)) => (a, Some(l)),
                            None => (v, None),
                        };
                        let a: IpAddr = a
                            .parse()
                            .map_err(|_| err(format!("{w} {v:?} is not an address or prefix")))?;
                        let max = if a.is_ipv4() { 32 } else { 128 };
                        let l = match l {
                            None => max,
                            Some(l) => l
                                .parse::<u8>()
                                .ok()
                                .filter(|n| *n <= max)
                                .ok_or_else(|| err(format!("bad prefix length /{l}")))?,
                        };
                        if family.is_some_and(|f| f != a.is_ipv6()) {
                            return Err(err(format!("{w}: IPv4 and IPv6 mixed in one rule")));
                        }
                        family = Some(a.is_ipv6());
                        Some((a, l))
                    };
                    if w == "from" {
                        r.from = p;
                    } else {
                        r.to = p;
                    }
                }
                "table" | "lookup" => {
                    let v = value(w)?;
                    let t = table_number(v).ok_or_else(|| {
                        err(format!(
                            "table {v:?}: give a number (1..=4294967295) or main, local, default"
                        ))
                    })?;
                    set_target(RuleTarget::Table(t))?;
                }
                "preference" | "priority" | "order" | "pref" => {
                    let v = value(w)?;
                    r.priority =
                        Some(c_number(v).ok_or_else(|| err(format!("{w} {v:?} is not a number")))?);
                }
                "fwmark" => {
                    let v = value(w)?;
                    let bad = || err(format!("fwmark {v:?}: give N or N/MASK"));
                    r.fwmark = Some(match v.split_once('/') {
                        Some((m, k)) => (
                            c_number(m).ok_or_else(bad)?,
                            Some(c_number(k).ok_or_else(bad)?),
                        ),
                        None => (c_number(v).ok_or_else(bad)?, None),
                    });
                }
                "iif" | "dev" => r.iif = Some(value(w)?.to_owned()),
                "oif" => r.oif = Some(value(w)?.to_owned()),
                "protocol" => {
                    let v = value(w)?;
                    r.protocol = Some(
                        v.parse()
                            .map_err(|_| err(format!("protocol {v:?} is not a number 0..=255")))?,
                    );
                }
                "no_track" => r.no_track = true,
                w if UNSUPPORTED.contains(&w) => {
                    return Err(err(format!("`{w}` is not supported by lb")));
                }
                _ => {
                    let w = if w == "type" { value(w)? } else { w };
                    let t = match w {
                        "goto" => {
                            let v = value(w)?;
                            RuleTarget::Goto(
                                v.parse()
                                    .map_err(|_| err(format!("goto {v:?} is not a number")))?,
                            )
                        }
                        "nop" => RuleTarget::Nop,
                        "blackhole" => RuleTarget::Blackhole,
                        "unreachable" => RuleTarget::Unreachable,
                        "prohibit" => RuleTarget::Prohibit,
                        _ => return Err(err(format!("unknown rule option {w:?}"))),
                    };
                    set_target(t)?;
                }
            }
        }
        r.target = target.ok_or_else(|| {
            err("no action (table, goto, nop, blackhole, unreachable or prohibit)".into())
        })?;
        if let RuleTarget::Goto(g) = r.target {
            match r.priority {
                Some(p) if p < g => {}
                Some(p) => {
                    return Err(err(format!(
                        "preference {p} is not below the goto target {g}"
                    )))
                }
                None => return Err(err(format!("goto {g} needs a preference"))),
            }
        }
        r.v6 = family.unwrap_or(false);
        if r.protocol.is_none() && !r.no_track {
            r.protocol = Some(RTPROT_KEEPALIVED);
        }
        Ok(r)
    }
}

impl VirtualRule {
    fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        let h = &mut m.header;
        h.family = if self.v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if self.not {
            h.flags.push(RuleFlag::Invert);
        }
        let a = &mut m.attributes;
        h.action = match self.target {
            RuleTarget::Table(t) => {
                match u8::try_from(t) {
                    Ok(t) => h.table = t,
                    Err(_) => a.push(RuleAttribute::Table(t)),
                }
                RuleAction::ToTable
            }
            RuleTarget::Goto(g) => {
                a.push(RuleAttribute::Goto(g));
                RuleAction::Goto
            }
            RuleTarget::Nop => RuleAction::Nop,
            RuleTarget::Blackhole => RuleAction::Blackhole,
            RuleTarget::Unreachable => RuleAction::Unreachable,
            RuleTarget::Prohibit => RuleAction::Prohibit,
        };
        if let Some((addr, len)) = self.from {
            h.src_len = len;
            a.push(RuleAttribute::Source(addr));
        }
        if let Some((addr, len)) = self.to {
            h.dst_len = len;
            a.push(RuleAttribute::Destination(addr));
        }
        if let Some(p) = self.priority {
            a.push(RuleAttribute::Priority(p));
        }
        if let Some((mark, mask)) = self.fwmark {
            a.push(RuleAttribute::FwMark(mark));
            if let Some(mask) = mask {
                a.push(RuleAttribute::FwMask(mask));
            }
        }
        if let Some(i) = &self.iif {
            a.push(RuleAttribute::Iifname(i.clone()));
        }
        if let Some(o) = &self.oif {
            a.push(RuleAttribute::Oifname(o.clone()));
        }
        if let Some(p) = self.protocol {
            a.push(RuleAttribute::Protocol(RouteProtocol::from(p)));
        }
        m
    }
}

impl VipManager {
    /// Adds `rule`. `Ok(true)`: added; `Ok(false)`: an equal rule was there already (the
    /// kernel's EEXIST, which ignores `not`), so it is not this call's to delete.
    ///
    /// # Errors
    /// [`RuleError::Netlink`] if the kernel refuses.
    ///
    /// # Cancel safety
    /// Not cancel safe: the request may or may not have been applied.
    pub async fn add_rule(&self, rule: &VirtualRule) -> Result<bool, RuleError> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = rule.message();
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(source) => Err(RuleError::Netlink {
                rule: rule.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// Deletes `rule` (the kernel matches every selector given); deleting a rule that
    /// is not there succeeds.
    ///
    /// # Errors
    /// [`RuleError::Netlink`] if the kernel refuses.
    ///
    /// # Cancel safety
    /// Not cancel safe: the request may or may not have been applied.
    pub async fn remove_rule(&self, rule: &VirtualRule) -> Result<(), RuleError> {
        match self.handle.rule().del(rule.message()).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
            Err(source) => Err(RuleError::Netlink {
                rule: rule.to_string(),
                source: Box::new(source),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VirtualRule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn why(s: &str) -> String {
        match s.parse::<VirtualRule>() {
            Err(RuleError::Syntax { why, .. }) => why,
            other => panic!("{s}: {other:?}"),
        }
    }

    /// keepalived's manual's examples that lb supports, and its defaults.
    #[test]
    fn keepalived_examples_parse() {
        let r = p("from 192.168.2.0/24 table 1");
        assert_eq!(r.from, Some(("192.168.2.0".parse().unwrap(), 24)));
        assert_eq!(
            (r.target, r.protocol, r.priority),
            (RuleTarget::Table(1), Some(18), None)
        );
        let r = p("to 192.168.2.0/24 table 1 no_track");
        assert_eq!((r.to.map(|t| t.1), r.protocol), (Some(24), None));
        let r =
            p("from 198.18.0.250 lookup main preference 0x10 fwmark 0x10/0xff iif eth0 oif eth1");
        assert_eq!(r.from.map(|f| f.1), Some(32));
        assert_eq!((r.target, r.priority), (RuleTarget::Table(254), Some(16)));
        assert_eq!(r.fwmark, Some((16, Some(255))));
        assert_eq!(
            (r.iif.as_deref(), r.oif.as_deref()),
            (Some("eth0"), Some("eth1"))
        );
        let r = p("inet6 not from all to fd00:18::/64 priority 10 type goto 20");
        assert!(r.v6 && r.not && r.from.is_none());
        assert_eq!(r.target, RuleTarget::Goto(20));
        assert_eq!(p("from all prohibit pref 5").target, RuleTarget::Prohibit);
        assert_eq!(
            p("from 198.18.0.250/32 table 100 priority 100").to_string(),
            "from 198.18.0.250/32 lookup 100 pref 100"
        );
    }

    /// The netlink message: a table above 255 in FRA_TABLE with 0 in the header, `not` as
    /// the invert flag, goto's target, the fwmark's mask only when written, no protocol
    /// with `no_track`.
    #[test]
    fn messages_carry_the_rule() {
        let m = p("not from 198.18.0.0/24 table 1000 priority 7 fwmark 0x10").message();
        assert_eq!((m.header.table, m.header.action), (0, RuleAction::ToTable));
        assert_eq!(m.header.flags, [RuleFlag::Invert]);
        assert_eq!((m.header.src_len, m.header.dst_len), (24, 0));
        for a in [
            RuleAttribute::Table(1000),
            RuleAttribute::Priority(7),
            RuleAttribute::FwMark(16),
            RuleAttribute::Source("198.18.0.0".parse().unwrap()),
            RuleAttribute::Protocol(RouteProtocol::KeepAlived),
        ] {
            assert!(m.attributes.contains(&a), "{a:?} in {:?}", m.attributes);
        }
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RuleAttribute::FwMask(_))));
        let m = p("from all priority 5 goto 9 no_track").message();
        assert_eq!(m.header.action, RuleAction::Goto);
        assert!(m.attributes.contains(&RuleAttribute::Goto(9)));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RuleAttribute::Protocol(_))));
        let m = p("from all table 100 priority 5").message();
        assert_eq!(m.header.table, 100);
        assert_eq!(
            p("from all table 010 priority 1").target,
            RuleTarget::Table(8)
        );
        assert_eq!(
            p("from all table 0x64 priority 1").target,
            RuleTarget::Table(100)
        );
    }

    #[test]
    fn bad_rules_name_the_word() {
        assert_eq!(
            why("from 198.18.0.0/24"),
            "no action (table, goto, nop, blackhole, unreachable or prohibit)"
        );
        assert_eq!(
            why("from 198.18.0.0/24 table 1 blackhole"),
            "more than one of table/goto/nop/blackhole/unreachable/prohibit"
        );
        assert_eq!(
            why("from 198.18.0.0/24 to fd00::/8 table 1"),
            "to: IPv4 and IPv6 mixed in one rule"
        );
        assert_eq!(
            why("from all table 1 sport 80"),
            "`sport` is not supported by lb"
        );
        assert_eq!(
            why("from all goto 5 pref 9"),
            "preference 9 is not below the goto target 5"
        );
        assert_eq!(why("from all goto 5"), "goto 5 needs a preference");
        assert_eq!(
            why("from all table 0"),
            "table \"0\": give a number (1..=4294967295) or main, local, default"
        );
        assert_eq!(
            why("from all table 1 fwmark x"),
            "fwmark \"x\": give N or N/MASK"
        );
        assert_eq!(
            why("from all table 1 bogus"),
            "unknown rule option \"bogus\""
        );
    }
}
