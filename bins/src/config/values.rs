//! Value syntaxes shared by both front ends (durations, weights, algorithms) and the serde
//! glue of the model.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_bins::config::values::{parse_algorithm, parse_duration, parse_weight};
//!
//! assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
//! assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
//! assert_eq!(parse_weight("3").unwrap().get(), 3);
//! assert!(parse_weight("65536").is_err());
//! assert_eq!(parse_algorithm("wlc").unwrap().name(), "wlc");
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use lb_core::{Algorithm, Granularity, Weight};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use lb_health::probe::HexPattern;

use super::model::{
    BfdCheck, CheckKind, DnsCheck, FileCheck, GrpcCheck, HealthCheck, HttpCheck, MiscCheck,
    NotifyDeleted, NotifyScript, SmtpCheck, UdpCheck, UrlCheck,
};

/// Parses a duration: a number of seconds (`3`, `0.5`) or a number with a unit (`500ms`,
/// `3s`, `2m`, `1h`).
///
/// # Errors
/// A message naming the value when it is neither.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_at(s, false)
}

/// The longest `vrrp_garp_interval` / `vrrp_gna_interval`, keepalived's (2³² − 1 µs).
pub const MAX_GARP_INTERVAL: Duration = Duration::from_micros(4_294_967_295);

/// [`parse_duration`] to the microsecond (`"250us"`, `0.00025`), for keepalived's
/// `vrrp_garp_interval` / `vrrp_gna_interval`.
///
/// # Errors
/// A message naming the value.
pub fn parse_fine_duration(s: &str) -> Result<Duration, String> {
    parse_duration_at(s, true)
}

fn parse_duration_at(s: &str, micros: bool) -> Result<Duration, String> {
    let s = s.trim();
    // keepalived reads its numbers with strtod/strtoul: a leading `+` is accepted.
    let signed = s.strip_prefix('+');
    let s = signed.unwrap_or(s);
    if signed.is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit() || c == '.')) {
        return Err(format!(
            "\"+{s}\" is not a duration (e.g. 3, 1.5, 500ms, 2m)"
        ));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" if micros => 0.000_001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?} is not a duration (e.g. 3, 1.5, 500ms, 2m)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 3, 1.5, 500ms, 2m)"))?;
    secs_f64_at(n * scale, micros).ok_or_else(|| format!("duration {s:?} is out of range"))
}

/// The longest duration accepted, in seconds, whatever the syntax.
const MAX_SECS: u64 = 1_000_000_000;

/// `n` seconds, rounded to the millisecond (so that `0.1` compares equal across front
/// ends), or with `micros` to the microsecond.
fn secs_f64_at(n: f64, micros: bool) -> Option<Duration> {
    if !n.is_finite() || !(0.0..=MAX_SECS as f64).contains(&n) {
        return None;
    }
    Some(if micros {
        Duration::from_micros((n * 1e6).round() as u64)
    } else {
        Duration::from_millis((n * 1000.0).round() as u64)
    })
}

/// Parses a weight 0..=65535.
///
/// # Errors
/// A message naming the value.
pub fn parse_weight(s: &str) -> Result<Weight, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("weight {s:?} is not a whole number"))?;
    Weight::new(n).map_err(|e| e.to_string())
}

/// Parses a keepalived `lb_algo` name.
///
/// # Errors
/// A message naming the value and the known names.
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse::<Algorithm>().map_err(|_| {
        let known: Vec<&str> = Algorithm::all().iter().map(Algorithm::name).collect();
        if ["lblc", "lblcr", "ovf"].contains(&s.to_ascii_lowercase().as_str()) {
            // IPVS schedulers keepalived accepts: they need the kernel's connection table
            // (lblc/lblcr) or its overflow counters (ovf).
            format!(
                "lb_algo {s:?} (an IPVS scheduler) is not supported by lb-node (supported: {})",
                known.join(", ")
            )
        } else {
            format!("unknown lb_algo {s:?} (known: {})", known.join(", "))
        }
    })
}

pub(crate) fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

pub(crate) fn one_second() -> Duration {
    Duration::from_secs(1)
}
pub(crate) fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
pub(crate) fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
pub(crate) fn one_u64() -> u64 {
    1
}

pub(crate) fn one() -> u32 {
    1
}
pub(crate) fn one_i32() -> i32 {
    1
}
pub(crate) fn five() -> u32 {
    5
}

pub(crate) fn three() -> u8 {
    3
}
pub(crate) fn max_ttl() -> u8 {
    255
}
pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn default_priority() -> u8 {
    100
}
pub(crate) fn default_version() -> u8 {
    2
}
pub(crate) fn default_algorithm() -> Algorithm {
    Algorithm::RoundRobin
}

/// Reads a duration, to the millisecond ([`parse_duration`]) or with `micros` to the
/// microsecond ([`parse_fine_duration`]).
struct DurationVisitor {
    micros: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: seconds as a number, or a string such as \"500ms\" or \"3s\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("negative duration {v}")))?;
        self.visit_u64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        if v > MAX_SECS {
            return Err(E::custom(format!("duration {v} is out of range")));
        }
        Ok(Duration::from_secs(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        secs_f64_at(v, self.micros)
            .ok_or_else(|| E::custom(format!("duration {v} is out of range")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration_at(v, self.micros).map_err(E::custom)
    }
}

/// Durations as seconds (`1`, `0.5`) or strings with a unit (`"500ms"`).
pub(crate) mod duration {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor { micros: false })
    }
}

/// Durations to the microsecond: as [`duration`], and `"250us"`.
pub(crate) mod fine_duration {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor { micros: true })
    }
}

/// Optional durations.
pub(crate) mod opt_duration {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor { micros: false })
            .map(Some)
    }
}

/// Optional durations to the microsecond ([`fine_duration`]).
pub(crate) mod opt_fine_duration {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor { micros: true })
            .map(Some)
    }
}

/// `lb_algo` names.
pub(crate) mod algorithm {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        let s = String::deserialize(d)?;
        parse_algorithm(&s).map_err(de::Error::custom)
    }
}

/// `persistence_granularity` as a netmask or prefix string, or a prefix number.
pub(crate) mod granularity {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Granularity, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum G {
            N(u8),
            S(String),
        }
        let s = match G::deserialize(d)? {
            G::N(n) => n.to_string(),
            G::S(s) => s,
        };
        Granularity::parse(&s).map_err(|e| {
            // A bare 33..=128 is an IPv6 prefix written as keepalived.conf takes it on an
            // IPv6 virtual server; TOML reads a bare number as the IPv4 prefix.
            match s.trim().parse::<u8>() {
                Ok(33..=128) => de::Error::custom(format!(
                    "{e}: a bare number is the IPv4 prefix; for an IPv6 one write \"32,{}\"",
                    s.trim()
                )),
                _ => de::Error::custom(e),
            }
        })
    }
}

/// Weights 0..=65535.
pub(crate) mod weight {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Weight, D::Error> {
        let n = u64::deserialize(d)?;
        Weight::new(n).map_err(de::Error::custom)
    }
}

/// keepalived hex strings without wildcards (`payload`), as octets.
pub(crate) mod opt_hex {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let s = String::deserialize(d)?;
        lb_health::probe::parse_hex(&s)
            .map(Some)
            .map_err(|e| de::Error::custom(format!("payload: {e}")))
    }
}

/// Expected HTTP statuses: a number (`200`) or a string of codes and ranges
/// (`"200-299,302"`).
pub(crate) mod opt_status_set {
    use super::*;
    use lb_health::StatusSet;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Code(i64),
        List(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<StatusSet>, D::Error> {
        let text = match Raw::deserialize(d)? {
            Raw::Code(c) => c.to_string(),
            Raw::List(s) => s,
        };
        text.parse::<StatusSet>().map(Some).map_err(|_| {
            de::Error::custom(format!(
                "status_code {text:?} is not a list of HTTP statuses and ranges in 100..=599 (200, \"200-299,302\")"
            ))
        })
    }
}

/// A notify script in TOML: a string (the command) or a table `{ command, user, group }`.
pub(crate) struct NotifyScriptVisitor;

impl<'de> Visitor<'de> for NotifyScriptVisitor {
    type Value = NotifyScript;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command line, or a table { command = \"…\", user = \"…\", group = \"…\" }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NotifyScript, E> {
        Ok(NotifyScript::new(v))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<NotifyScript, A::Error> {
        let mut command = None;
        let mut user = None;
        let mut group = None;
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "command" => &mut command,
                "user" => &mut user,
                "group" => &mut group,
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["command", "user", "group"],
                    ))
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            *slot = Some(map.next_value::<String>()?);
        }
        let command = command.ok_or_else(|| de::Error::missing_field("command"))?;
        Ok(NotifyScript {
            command,
            user,
            group,
        })
    }
}

/// `virtual_routes`: a list of routes in keepalived's syntax.
pub(crate) fn routes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<lb_vrrp::route::VirtualRoute>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|r| r.parse().map_err(de::Error::custom))
        .collect()
}

/// `virtual_rules` / `static_rules`: a list of rules in keepalived's syntax, each with a
/// preference (keepalived numbers those without one; TOML says what runs).
pub(crate) fn rules<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<lb_vrrp::rule::VirtualRule>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|r| {
            let rule: lb_vrrp::rule::VirtualRule = r.parse().map_err(de::Error::custom)?;
            if rule.priority.is_none() {
                return Err(de::Error::custom(format!(
                    "rule {r:?} needs a preference (`priority N`)"
                )));
            }
            Ok(rule)
        })
        .collect()
}

/// `notify_deleted`: a bool, or a notify script (which means true).
pub(crate) struct NotifyDeletedVisitor;

impl<'de> Visitor<'de> for NotifyDeletedVisitor {
    type Value = NotifyDeleted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false, a command line, or a table { command = \"…\", user = \"…\", group = \"…\" }")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NotifyDeleted, E> {
        Ok(if v {
            NotifyDeleted::Deleted(None)
        } else {
            NotifyDeleted::Fault
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NotifyDeleted, E> {
        NotifyScriptVisitor
            .visit_str(v)
            .map(|s| NotifyDeleted::Deleted(Some(s)))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<NotifyDeleted, A::Error> {
        NotifyScriptVisitor
            .visit_map(map)
            .map(|s| NotifyDeleted::Deleted(Some(s)))
    }
}

/// keepalived hex strings with `x` wildcard nibbles (`reply`).
pub(crate) mod opt_hex_pattern {
    use super::*;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<HexPattern>, D::Error> {
        let s = String::deserialize(d)?;
        HexPattern::parse(&s)
            .map(Some)
            .map_err(|e| de::Error::custom(format!("reply: {e}")))
    }
}

/// The TOML form of a health check: flat, with `type = "tcp" | "http" | "ssl" | "misc" |
/// "udp" | "dns" | "ping" | "smtp" | "file" | "bfd" | "grpc"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, with = "opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default)]
    connect_port: Option<u16>,
    #[serde(default)]
    connect_ip: Option<IpAddr>,
    #[serde(default)]
    bindto: Option<IpAddr>,
    #[serde(default)]
    retry: Option<u32>,
    #[serde(default, with = "opt_duration")]
    delay_before_retry: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    delay_loop: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    warmup: Option<Duration>,
    #[serde(default)]
    rise: Option<u32>,
    #[serde(default)]
    fall: Option<u32>,
    #[serde(default, with = "opt_duration")]
    inter: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    fastinter: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    downinter: Option<Duration>,
    #[serde(default)]
    alpha: Option<bool>,
    #[serde(default)]
    url: Option<Vec<UrlCheck>>,
    #[serde(default)]
    virtualhost: Option<String>,
    #[serde(default)]
    enable_sni: Option<bool>,
    #[serde(default)]
    misc_path: Option<String>,
    #[serde(default, with = "opt_duration")]
    misc_timeout: Option<Duration>,
    #[serde(default)]
    misc_dynamic: Option<bool>,
    #[serde(default, with = "opt_hex")]
    payload: Option<Vec<u8>>,
    #[serde(default)]
    require_reply: Option<bool>,
    #[serde(default, with = "opt_hex_pattern")]
    reply: Option<HexPattern>,
    #[serde(default)]
    min_reply_length: Option<u16>,
    #[serde(default)]
    max_reply_length: Option<u16>,
    #[serde(default)]
    dns_name: Option<String>,
    #[serde(default)]
    dns_type: Option<String>,
    #[serde(default)]
    helo_name: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    track_file: Option<String>,
    #[serde(default)]
    weight: Option<i32>,
    #[serde(default)]
    reverse: Option<bool>,
    #[serde(default)]
    bfd_instance: Option<String>,
    #[serde(default)]
    check_send_proxy: Option<bool>,
    #[serde(default)]
    grpc_service: Option<String>,
    #[serde(default)]
    grpc_tls: Option<bool>,
    #[serde(default)]
    check_proto: Option<String>,
}

impl TryFrom<RawCheck> for HealthCheck {
    type Error = String;
    fn try_from(r: RawCheck) -> Result<Self, String> {
        let http_only = |kind: &str| -> Result<(), String> {
            if r.url.is_some()
                || r.virtualhost.is_some()
                || r.enable_sni.is_some()
                || r.check_proto.is_some()
            {
                return Err(format!(
                    "url, virtualhost, enable_sni and check_proto apply to http and ssl checks (virtualhost to grpc too), not {kind}"
                ));
            }
            Ok(())
        };
        let misc_only = |kind: &str| -> Result<(), String> {
            if r.misc_path.is_some() || r.misc_timeout.is_some() || r.misc_dynamic.is_some() {
                return Err(format!("misc_* options apply to misc checks, not {kind}"));
            }
            if r.user.is_some() || r.group.is_some() {
                return Err(format!(
                    "user and group apply to misc checks (the program's user), not {kind}"
                ));
            }
            Ok(())
        };
        let udp_only = |kind: &str| -> Result<(), String> {
            if r.payload.is_some()
                || r.require_reply.is_some()
                || r.reply.is_some()
                || r.min_reply_length.is_some()
                || r.max_reply_length.is_some()
            {
                return Err(format!(
                    "payload, require_reply, reply, min_reply_length and max_reply_length apply to udp checks, not {kind}"
                ));
            }
            Ok(())
        };
        let dns_only = |kind: &str| -> Result<(), String> {
            if r.dns_name.is_some() || r.dns_type.is_some() {
                return Err(format!(
                    "dns_name and dns_type apply to dns checks, not {kind}"
                ));
            }
            Ok(())
        };
        let smtp_only = |kind: &str| -> Result<(), String> {
            if r.helo_name.is_some() {
                return Err(format!("helo_name applies to smtp checks, not {kind}"));
            }
            Ok(())
        };
        let file_only = |kind: &str| -> Result<(), String> {
            if r.track_file.is_some() || r.weight.is_some() || r.reverse.is_some() {
                return Err(format!(
                    "track_file, weight and reverse apply to file checks, not {kind}"
                ));
            }
            Ok(())
        };
        let bfd_only = |kind: &str| -> Result<(), String> {
            if r.bfd_instance.is_some() {
                return Err(format!("bfd_instance applies to bfd checks, not {kind}"));
            }
            Ok(())
        };
        let kind_name = r.kind.to_ascii_lowercase();
        if kind_name != "grpc" && (r.grpc_service.is_some() || r.grpc_tls.is_some()) {
            return Err(format!(
                "grpc_service and grpc_tls apply to grpc checks, not {kind_name}"
            ));
        }
        let kind = match kind_name.as_str() {
            "grpc" => {
                bfd_only("grpc")?;
                misc_only("grpc")?;
                udp_only("grpc")?;
                dns_only("grpc")?;
                smtp_only("grpc")?;
                file_only("grpc")?;
                if r.url.is_some() || r.enable_sni.is_some() || r.check_proto.is_some() {
                    return Err(
                        "url, enable_sni and check_proto apply to http and ssl checks, not grpc (which speaks HTTP/2; virtualhost is the :authority)"
                            .into(),
                    );
                }
                CheckKind::Grpc(GrpcCheck {
                    service: r.grpc_service.clone().unwrap_or_default(),
                    authority: r.virtualhost.clone(),
                    tls: r.grpc_tls.unwrap_or(false),
                })
            }
            "bfd" => {
                http_only("bfd")?;
                misc_only("bfd")?;
                udp_only("bfd")?;
                dns_only("bfd")?;
                smtp_only("bfd")?;
                file_only("bfd")?;
                CheckKind::Bfd(BfdCheck {
                    name: r
                        .bfd_instance
                        .clone()
                        .ok_or("a bfd check needs bfd_instance")?,
                })
            }
            "file" => {
                bfd_only("file")?;
                http_only("file")?;
                misc_only("file")?;
                udp_only("file")?;
                dns_only("file")?;
                smtp_only("file")?;
                CheckKind::File(FileCheck {
                    track_file: r.track_file.clone().ok_or("a file check needs track_file")?,
                    weight: r.weight,
                    reverse: r.reverse,
                    file: None,
                })
            }
            k @ ("tcp" | "ping") => {
                bfd_only(k)?;
                http_only(k)?;
                misc_only(k)?;
                udp_only(k)?;
                dns_only(k)?;
                smtp_only(k)?;
                file_only(k)?;
                if k == "tcp" {
                    CheckKind::Tcp
                } else {
                    CheckKind::Ping
                }
            }
            "smtp" => {
                bfd_only("smtp")?;
                http_only("smtp")?;
                misc_only("smtp")?;
                udp_only("smtp")?;
                dns_only("smtp")?;
                file_only("smtp")?;
                CheckKind::Smtp(SmtpCheck {
                    helo_name: r
                        .helo_name
                        .clone()
                        .unwrap_or_else(|| SmtpCheck::default().helo_name),
                })
            }
            "dns" => {
                bfd_only("dns")?;
                http_only("dns")?;
                misc_only("dns")?;
                udp_only("dns")?;
                smtp_only("dns")?;
                file_only("dns")?;
                let d = DnsCheck::default();
                CheckKind::Dns(DnsCheck {
                    name: match &r.dns_name {
                        Some(n) => n.parse().map_err(|e: lb_health::Error| e.to_string())?,
                        None => d.name,
                    },
                    qtype: match &r.dns_type {
                        Some(t) => t.parse().map_err(|e: lb_health::Error| e.to_string())?,
                        None => d.qtype,
                    },
                })
            }
            k @ ("http" | "ssl") => {
                bfd_only(k)?;
                misc_only(k)?;
                udp_only(k)?;
                dns_only(k)?;
                smtp_only(k)?;
                file_only(k)?;
                if k == "http" && r.enable_sni.is_some() {
                    return Err("enable_sni applies to ssl checks, not http".into());
                }
                // HAProxy's `check-proto` names a multiplexer: h1 or h2 for HTTP.
                let http2 = match r.check_proto.as_deref().map(str::to_ascii_lowercase) {
                    None => false,
                    Some(p) if p == "h1" => false,
                    Some(p) if p == "h2" => true,
                    Some(p) => {
                        return Err(format!(
                            "check_proto {p:?}: \"h1\" (HTTP/1.1, the default) or \"h2\" (HTTP/2)"
                        ))
                    }
                };
                let h = HttpCheck {
                    url: r.url.clone().unwrap_or_default(),
                    virtualhost: r.virtualhost.clone(),
                    enable_sni: r.enable_sni.unwrap_or(false),
                    http2,
                };
                if k == "http" {
                    CheckKind::Http(h)
                } else {
                    CheckKind::Ssl(h)
                }
            }
            "misc" => {
                bfd_only("misc")?;
                http_only("misc")?;
                udp_only("misc")?;
                dns_only("misc")?;
                smtp_only("misc")?;
                file_only("misc")?;
                CheckKind::Misc(MiscCheck {
                    user: r.user.clone(),
                    group: r.group.clone(),
                    misc_path: r.misc_path.clone().ok_or("a misc check needs misc_path")?,
                    misc_timeout: r.misc_timeout,
                    misc_dynamic: r.misc_dynamic.unwrap_or(false),
                })
            }
            "udp" => {
                bfd_only("udp")?;
                http_only("udp")?;
                misc_only("udp")?;
                dns_only("udp")?;
                smtp_only("udp")?;
                file_only("udp")?;
                if r.reply.is_some() && r.require_reply == Some(false) {
                    return Err(
                        "reply needs require_reply (leave require_reply out or set it true)".into(),
                    );
                }
                let d = UdpCheck::default();
                CheckKind::Udp(UdpCheck {
                    payload: r.payload.clone(),
                    require_reply: r.require_reply.unwrap_or(false) || r.reply.is_some(),
                    reply: r.reply.clone(),
                    min_reply_length: r.min_reply_length.unwrap_or(d.min_reply_length),
                    max_reply_length: r.max_reply_length.unwrap_or(d.max_reply_length),
                })
            }
            other => {
                return Err(format!(
                    "unknown check type {other:?} (expected tcp, http, ssl, misc, udp, dns, ping, smtp, file, bfd or grpc)"
                ))
            }
        };
        if r.check_send_proxy == Some(true) && !kind.is_stream() {
            return Err(format!(
                "check_send_proxy applies to tcp, http, ssl and smtp checks, not {}",
                r.kind.to_ascii_lowercase()
            ));
        }
        let mut c = Self::new(kind);
        c.check_send_proxy = r.check_send_proxy;
        if let Some(v) = r.connect_timeout {
            c.connect_timeout = v;
        }
        c.connect_port = r.connect_port;
        c.connect_ip = r.connect_ip;
        c.bindto = r.bindto;
        if let Some(v) = r.retry {
            c.retry = v;
        }
        c.delay_before_retry = r.delay_before_retry;
        c.delay_loop = r.delay_loop;
        c.warmup = r.warmup;
        c.rise = r.rise;
        c.fall = r.fall;
        c.inter = r.inter;
        c.fastinter = r.fastinter;
        c.downinter = r.downinter;
        c.alpha = r.alpha;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_keepalived_accepts() {
        assert_eq!(parse_algorithm("twos").unwrap().name(), "p2c");
        let e = parse_algorithm("lblcr").unwrap_err();
        assert!(
            e.starts_with("lb_algo \"lblcr\" (an IPVS scheduler) is not supported"),
            "{e}"
        );
        let e = parse_algorithm("fastest").unwrap_err();
        assert!(
            e.starts_with("unknown lb_algo \"fastest\" (known: rr,"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        // keepalived's strtod takes a sign.
        assert_eq!(parse_duration("+2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("++2").is_err());
        assert!(parse_duration("+").is_err());
        assert!(parse_duration("+-2").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
