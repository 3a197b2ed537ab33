//! keepalived.conf, mapped onto the [`model`](crate::config::model).
//!
//! Written clean-room from the keepalived.conf(5) manual. Supported: `global_defs`,
//! `vrrp_script`, `vrrp_instance`, `vrrp_sync_group`, `virtual_server IP PORT` with
//! `real_server`, `sorry_server` and `TCP_CHECK`/`HTTP_GET`/`SSL_GET`/`MISC_CHECK`/`UDP_CHECK`, and
//! `include`. What lb-node cannot do is refused with an error (`lb_kind DR`/`TUN`:
//! this node is a full proxy; `virtual_server group`/`fwmark`; `auth_type AH`); what it
//! does not need is ignored with a warning; unknown keywords are warnings too. Nothing is
//! silently dropped.
//!
//! lb extensions, accepted in keepalived syntax as well: `track_service { VS [weight N] }`
//! in `vrrp_instance`; `name`, `retries`, `connect_timeout` (the backend connect timeout;
//! as in keepalived, also the checks' default), `protocol HTTP` and `all_backups` in
//! `virtual_server`; `maxconn` (alias of `uthreshold`) and `backup` in `real_server`;
//! `rise`, `fall`, `inter`, `fastinter`, `downinter`, `alpha` in checks; `admin_socket`,
//! `log_level`, `drain_deadline`, `nbthread` and `busy_polling` in `global_defs`.
//!
//! # Examples
//!
//! ```
//! use std::path::{Path, PathBuf};
//! use lb_bins::config::keepalived::parse_str;
//!
//! let text = "virtual_server 198.18.0.250 80 {\n  lb_kind DR\n}\n";
//! let errors = parse_str(text, Path::new("keepalived.conf")).unwrap_err();
//! assert!(errors[0].to_string().starts_with("keepalived.conf:2:11: lb_kind DR is not supported"));
//! ```

pub mod syntax;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_core::{Algorithm, Granularity};
use lb_health::probe::{parse_hex, DnsName, HexPattern, QueryType};
use lb_health::StatusSet;

use super::model::MAX_GARP_GROUP_INTERVAL;
use super::model::{
    AuthType, Authentication, BackendConfig, BfdCheck, BfdInstance, CheckKind, Config, DnsCheck,
    FileCheck, GarpGroup, HealthCheck, HttpCheck, InitialState, LogLevel, MiscCheck, NotifyDeleted,
    NotifyFifo, NotifyScript, ParamMatch, Protocol, SmtpCheck, SyncGroup, TrackBfdRef,
    TrackFileRef, TrackInterface, TrackProcessRef, TrackScript, TrackService, UdpCheck, UrlCheck,
    VirtualIp, VirtualServer, VrrpInstance, VrrpScript, VrrpTrackFile, VrrpTrackProcess,
};
use super::values::{
    parse_algorithm, parse_duration, parse_fine_duration, parse_weight, MAX_GARP_INTERVAL,
};
use super::{finish, LoadResult, Location, Origins};
use lb_vrrp::route::VirtualRoute;
use lb_vrrp::rule::VirtualRule;
use syntax::{Diagnostics, Stmt, Token};

/// Reads, parses and validates a keepalived.conf file and what it includes.
///
/// # Errors
/// Every error found, each with `file:line:column`.
pub fn load(path: &Path) -> LoadResult {
    let mut diag = Diagnostics::default();
    let stmts = syntax::read_file(path, &mut diag);
    convert(&stmts, diag)
}

/// Parses and validates keepalived.conf text read from `file` (includes are resolved
/// relative to it).
///
/// # Errors
/// Every error found, each with `file:line:column`.
pub fn parse_str(text: &str, file: &Path) -> LoadResult {
    let mut diag = Diagnostics::default();
    let stmts = syntax::parse_text(text, file, 0, &mut diag);
    convert(&stmts, diag)
}

/// keepalived's first preference for a rule written without one (vrrp_iprule.c).
const RULE_START_PRIORITY: u32 = 16384;

fn convert(stmts: &[Stmt], diag: Diagnostics) -> LoadResult {
    let mut c = Conv {
        d: diag,
        o: Origins::default(),
        cfg: Config::default(),
        vrrp_version: None,
        version_set: Vec::new(),
        vrrp_strict: false,
        strict_mode: Vec::new(),
        vrrp_notify_priority_changes: None,
        group_notify_priority_changes: HashMap::new(),
        sync_group_npc: Vec::new(),
        instance_keywords: Vec::new(),
        vrrp_defaults: VrrpDefaults::default(),
        tracking_weight_groups: HashSet::new(),
        vs_groups: HashMap::new(),
        group_tracks: Vec::new(),
        group_copies: HashSet::new(),
        rule_priority: [RULE_START_PRIORITY; 2],
    };
    c.top(stmts);
    c.settle_sync_group_members();
    c.apply_group_tracks();
    // Only for a root daemon, as keepalived always is: one running unprivileged could not
    // change to that user, and every script would fail to start.
    if c.cfg.global.script_user.is_none() && nix::unistd::geteuid().is_root() {
        c.cfg.global.script_user =
            default_script_user(|u| lb_vrrp::driver::RunAs::resolve(u, None).is_ok());
    }
    c.vrrp_defaults
        .apply(&mut c.cfg.vrrp_instances, &c.instance_keywords);
    // keepalived: an IPv6 instance that names no version is VRRPv3, whatever
    // `vrrp_version` says (VRRPv2 carries IPv4 only).
    for (vi, set) in c.cfg.vrrp_instances.iter_mut().zip(&c.version_set) {
        if !*set {
            vi.version = match c.vrrp_version {
                _ if vi.is_v6() => 3,
                Some(v) => v,
                None => vi.version,
            };
        }
    }
    c.complete_instances();
    c.drop_vmac_garp_interfaces();
    // After the completion: an instance made the owner by `state MASTER` counts as one.
    c.warn_sync_group_weights();
    finish(c.cfg, &c.o, c.d.warnings, c.d.errors)
}

/// The scheduler names keepalived passes to IPVS (`lb_algo`), as written there.
const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// IPVS's default persistence timeout (`IPVS_SVC_PERSISTENT_TIMEOUT`), which keepalived
/// sets for a bare `persistence_timeout` and for a `persistence_granularity` alone.
const IPVS_PERSISTENCE_TIMEOUT: Duration = Duration::from_secs(360);

/// Settings a real server and its checks inherit from the enclosing `virtual_server`, and
/// checks from their `real_server`, as keepalived's validate_check_config (check_data.c)
/// fills them: a check's own setting, else its real server's, else its virtual server's.
#[derive(Debug, Clone, Default)]
struct CheckDefaults {
    retry: Option<u32>,
    /// `warmup`: the longest random delay before a check's first run.
    warmup: Option<Duration>,
    delay_before_retry: Option<Duration>,
    delay_loop: Option<Duration>,
    /// `connect_timeout` (keepalived `connection_to`; 5 s when nobody sets it).
    connect_timeout: Option<Duration>,
    /// `alpha` of a real server (the virtual server's is [`VirtualServer::alpha`], which the
    /// model falls back on).
    alpha: Option<bool>,
    /// `virtualhost` of HTTP_GET and SSL_GET checks.
    virtualhost: Option<String>,
    /// The virtual server's `inhibit_on_failure`, its real servers' default.
    inhibit_on_failure: bool,
    /// The virtual server's `weight` (keepalived `vs_weight_handler`, 1..=65535), its real
    /// servers' default.
    weight: Option<lb_core::Weight>,
}

/// `global_defs` settings that are defaults of every `vrrp_instance` (keepalived's
/// `vrrp_garp_*`, `vrrp_lower_prio_no_advert`, `vrrp_higher_prio_send_advert`,
/// `vrrp_skip_check_adv_addr`).
#[derive(Debug, Default)]
struct VrrpDefaults {
    skip_check_adv_addr: Option<bool>,
    garp_master_delay: Option<Duration>,
    garp_master_repeat: Option<u32>,
    garp_master_refresh: Option<Duration>,
    garp_master_refresh_repeat: Option<u32>,
    garp_lower_prio_delay: Option<Duration>,
    garp_lower_prio_repeat: Option<u32>,
    lower_prio_no_advert: Option<bool>,
    higher_prio_send_advert: Option<bool>,
    down_timer_adverts: Option<u8>,
}

impl VrrpDefaults {
    /// Gives each instance the global value of every setting it does not write itself
    /// (`keywords`: the keywords each instance wrote). As keepalived, the lower-priority
    /// GARPs default to the global master ones, not to the instance's.
    fn apply(&self, instances: &mut [VrrpInstance], keywords: &[Vec<String>]) {
        for (vi, kws) in instances.iter_mut().zip(keywords) {
            let unset = |k: &str| !kws.iter().any(|w| w == k);
            if let Some(v) = self
                .skip_check_adv_addr
                .filter(|_| unset("skip_check_adv_addr"))
            {
                vi.skip_check_adv_addr = v;
            }
            if let Some(v) = self
                .garp_master_delay
                .filter(|_| unset("garp_master_delay"))
            {
                vi.garp_master_delay = v;
            }
            if let Some(v) = self
                .down_timer_adverts
                .filter(|_| unset("down_timer_adverts"))
            {
                vi.down_timer_adverts = v;
            }
            if let Some(v) = self
                .garp_master_repeat
                .filter(|_| unset("garp_master_repeat"))
            {
                vi.garp_master_repeat = v;
            }
            if let Some(v) = self
                .garp_master_refresh
                .filter(|_| unset("garp_master_refresh"))
            {
                vi.garp_master_refresh = Some(v).filter(|d| !d.is_zero());
            }
            if let Some(v) = self
                .garp_master_refresh_repeat
                .filter(|_| unset("garp_master_refresh_repeat"))
            {
                vi.garp_master_refresh_repeat = v;
            }
            if unset("garp_lower_prio_delay") {
                if let Some(v) = self.garp_lower_prio_delay.or(self.garp_master_delay) {
                    vi.garp_lower_prio_delay = v;
                }
            }
            if unset("garp_lower_prio_repeat") {
                if let Some(v) = self.garp_lower_prio_repeat.or(self.garp_master_repeat) {
                    vi.garp_lower_prio_repeat = v;
                }
            }
            if let Some(v) = self
                .lower_prio_no_advert
                .filter(|_| unset("lower_prio_no_advert"))
            {
                vi.lower_prio_no_advert = v;
            }
            if let Some(v) = self
                .higher_prio_send_advert
                .filter(|_| unset("higher_prio_send_advert"))
            {
                vi.higher_prio_send_advert = v;
            }
        }
    }
}

struct Conv {
    d: Diagnostics,
    o: Origins,
    cfg: Config,
    vrrp_version: Option<u8>,
    version_set: Vec<bool>,
    /// `global_defs` `vrrp_strict`: every instance's default `strict_mode`.
    vrrp_strict: bool,
    /// Each instance's own `strict_mode`, in instance order.
    strict_mode: Vec<Option<bool>>,
    /// `global_defs` `vrrp_notify_priority_changes`, and a sync group's
    /// `notify_priority_changes` by member name: the defaults of an instance that does not
    /// write its own (keepalived: the group's, else the global one).
    vrrp_notify_priority_changes: Option<bool>,
    group_notify_priority_changes: HashMap<String, bool>,
    /// Each sync group's `notify_priority_changes`, by group index, applied to the members
    /// it keeps once they are settled ([`Conv::settle_sync_group_members`]).
    sync_group_npc: Vec<Option<bool>>,
    /// The preference keepalived gives the next rule written without one, IPv4 and IPv6.
    rule_priority: [u32; 2],
    /// The keywords each `vrrp_instance` wrote, in instance order.
    instance_keywords: Vec<Vec<String>>,
    vrrp_defaults: VrrpDefaults,
    /// The sync groups that wrote `sync_group_tracking_weight`.
    tracking_weight_groups: HashSet<String>,
    /// `virtual_server_group`s: each member's address and where it was written.
    vs_groups: HashMap<String, Vec<(SocketAddr, Location)>>,
    /// What each `vrrp_sync_group` tracks, copied into its members once every instance is
    /// read ([`Conv::apply_group_tracks`]).
    group_tracks: Vec<GroupTracks>,
    /// The model paths of the tracks copied from a sync group into a member.
    group_copies: HashSet<String>,
}

/// The `track_*` blocks of one `vrrp_sync_group`, with the model path they were recorded
/// at (`vrrp_sync_group[i]`).
#[derive(Debug, Default)]
struct GroupTracks {
    path: String,
    members: Vec<String>,
    interfaces: Vec<TrackInterface>,
    scripts: Vec<TrackScript>,
    processes: Vec<TrackProcessRef>,
    files: Vec<TrackFileRef>,
    bfds: Vec<TrackBfdRef>,
}

fn int<T: TryFrom<i64>>(kw: &str, lo: i64, hi: i64) -> impl Fn(&str) -> Result<T, String> + '_ {
    move |s| {
        let n: i64 = s
            .parse()
            .map_err(|_| format!("{kw} {s:?} is not a whole number"))?;
        if !(lo..=hi).contains(&n) {
            return Err(format!("{kw} {n} is out of range {lo}..={hi}"));
        }
        T::try_from(n).map_err(|_| format!("{kw} {n} is out of range {lo}..={hi}"))
    }
}

/// `lb_kind`/`lvs_method` of a virtual server, or `lvs_method` of a real server: only NAT,
/// what a full proxy does.
fn forwarding_method(v: &str) -> Result<(), String> {
    match v.to_ascii_uppercase().as_str() {
        "NAT" => Ok(()),
        "DR" | "TUN" => Err(format!(
            "lb_kind {v} is not supported: lb-node is a full proxy (it terminates connections and opens its own to the backends, like NAT); use lb_kind NAT"
        )),
        _ => Err(format!("unknown lb_kind {v:?} (expected NAT)")),
    }
}

/// keepalived's default `script_user` when global_defs names none: `keepalived_script`
/// where that user `exists`, else none (scripts run as the daemon's user, root).
fn default_script_user(exists: impl Fn(&str) -> bool) -> Option<String> {
    const KEEPALIVED_SCRIPT: &str = "keepalived_script";
    exists(KEEPALIVED_SCRIPT).then(|| KEEPALIVED_SCRIPT.to_owned())
}

/// What a real server's checks reach, as a key: two members of a `virtual_server_group`
/// whose copies of a real server have the same key see the same results.
fn checked(b: &BackendConfig) -> String {
    if b.checks.is_empty() {
        return b.address.to_string();
    }
    let mut targets: Vec<String> = b
        .checks
        .iter()
        .map(|c| match &c.kind {
            CheckKind::Misc(m) => format!("misc {}", m.misc_path),
            CheckKind::Ping => format!("ping {}", c.connect_ip.unwrap_or(b.address.ip())),
            _ => {
                let ip = c.connect_ip.unwrap_or(b.address.ip());
                let port = c.connect_port.unwrap_or(b.address.port());
                format!(
                    "{:?} {}",
                    std::mem::discriminant(&c.kind),
                    SocketAddr::new(ip, port)
                )
            }
        })
        .collect();
    targets.sort();
    targets.join(";")
}

/// `ADDRESS` or `ADDRESS-LAST`: the addresses from ADDRESS to the one whose last octet
/// (IPv4, decimal) or last 16-bit group (IPv6, hex) is LAST, at most 256.
fn address_range(s: &str) -> Result<Vec<IpAddr>, String> {
    let Some((first, last)) = s.rsplit_once('-') else {
        return Ok(vec![ip(s)?]);
    };
    let bad = |why: &str| format!("{s:?}: {why}");
    match ip(first)? {
        IpAddr::V4(a) => {
            let o = a.octets();
            let end: u8 = last
                .parse()
                .map_err(|_| bad("the range's end is the last octet, 0..=255"))?;
            if end <= o[3] {
                return Err(bad("the range's end must be above its start"));
            }
            Ok((o[3]..=end)
                .map(|x| IpAddr::from([o[0], o[1], o[2], x]))
                .collect())
        }
        IpAddr::V6(a) => {
            let g = a.segments();
            let end = u16::from_str_radix(last, 16)
                .map_err(|_| bad("the range's end is the last group, in hex"))?;
            if end <= g[7] {
                return Err(bad("the range's end must be above its start"));
            }
            if end - g[7] > 255 {
                return Err(bad("a range holds at most 256 addresses"));
            }
            Ok((g[7]..=end)
                .map(|x| {
                    let mut s = g;
                    s[7] = x;
                    IpAddr::from(s)
                })
                .collect())
        }
    }
}

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

/// A BFD interval: milliseconds, with up to three decimals (keepalived's microsecond
/// resolution: `3.312`), above 0.
fn bfd_interval(kw: &str) -> impl Fn(&str) -> Result<Duration, String> + '_ {
    move |s| {
        let bad = || format!("{kw} {s:?} is not a number of milliseconds (e.g. 10 or 3.312)");
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty()
            || frac.len() > 3
            || !whole
                .bytes()
                .chain(frac.bytes())
                .all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let range = || format!("{kw} {s} ms is out of range (above 0, at most 4294967.295)");
        let ms: u64 = whole.parse().map_err(|_| range())?;
        let us: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        let total = ms
            .checked_mul(1000)
            .and_then(|m| m.checked_add(us))
            .filter(|&t| t > 0 && t <= u64::from(u32::MAX))
            .ok_or_else(range)?;
        Ok(Duration::from_micros(total))
    }
}

/// keepalived's decimal seconds with microseconds (`vrrp_garp_interval 0.000250`), at
/// most 4294.967295 s; 0 is none (keepalived calls it invalid and keeps none).
fn micros(kw: &str) -> impl Fn(&str) -> Result<Duration, String> + '_ {
    move |s| {
        let d =
            parse_fine_duration(s).map_err(|_| format!("{kw} {s:?} is not a number of seconds"))?;
        if d > MAX_GARP_INTERVAL {
            return Err(format!("{kw} {s} is out of range 0..=4294.967295 s"));
        }
        Ok(d)
    }
}

fn duration(kw: &str) -> impl Fn(&str) -> Result<Duration, String> + '_ {
    move |s| parse_duration(s).map_err(|e| format!("{kw}: {e}"))
}

impl Conv {
    fn record(&mut self, path: &str, location: &Location) {
        self.o.insert(path, location.clone());
    }

    /// The single argument of `s`, recorded at `path`.
    fn value<'s>(&mut self, s: &'s Stmt, path: &str) -> Option<&'s Token> {
        let Some(first) = s.args.first() else {
            self.d.error(
                &s.keyword.location,
                format!("`{}` needs a value", s.keyword.text),
            );
            return None;
        };
        if let Some(extra) = s.args.get(1) {
            self.d.warn(
                &extra.location,
                format!(
                    "extra arguments after `{} {}` ignored",
                    s.keyword.text, first.text
                ),
            );
        }
        self.record(path, &first.location);
        Some(first)
    }

    /// The single argument of `s` through `f`, or an error at the argument.
    fn get<T>(
        &mut self,
        s: &Stmt,
        path: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let Some(t) = self.value(s, path) else {
            self.o.poison(path);
            return None;
        };
        match f(&t.text) {
            Ok(v) => Some(v),
            Err(m) => {
                self.d.error(&t.location, m);
                self.o.poison(path);
                None
            }
        }
    }

    /// The first argument, recorded at `path`; a located error without one.
    fn command_word<'s>(&mut self, s: &'s Stmt, path: &str) -> Option<&'s Token> {
        let Some(first) = s.args.first() else {
            self.d.error(
                &s.keyword.location,
                format!("`{}` needs a command", s.keyword.text),
            );
            return None;
        };
        self.record(path, &first.location);
        Some(first)
    }

    /// The arguments of a script line read as keepalived re-reads them
    /// (`alloc_strvec_quoted_escaped`, [`split_command_line`]): `"…"` and `'…'` quote,
    /// a backslash escapes, inside quotes too. The first word is the command line (split
    /// again when it runs); a located error when the line does not split (an unmatched
    /// quote) or a word is not UTF-8.
    ///
    /// [`split_command_line`]: lb_health::probe::split_command_line
    fn script_words(&mut self, s: &Stmt, path: &str) -> Option<Vec<(String, Location)>> {
        let first = self.command_word(s, path)?;
        let (raw, starts) = raw_args(s);
        // Each word's location: its token's, moved by the characters before it there.
        let locations: Vec<Location> = word_starts(&raw)
            .into_iter()
            .map(|at| {
                let i = starts.partition_point(|&st| st <= at) - 1;
                let mut l = s.args[i].location.clone();
                l.column += raw[starts[i]..at].chars().count();
                l
            })
            .collect();
        let words = match lb_health::probe::split_command_line(&raw) {
            Ok(w) => w,
            Err(e) => {
                let why = match e {
                    lb_health::Error::InvalidConfig { reason, .. } => reason,
                    other => other.to_string(),
                };
                self.d
                    .error(&first.location, format!("{}: {why}", s.keyword.text));
                self.o.poison(path);
                return None;
            }
        };
        let mut out = Vec::with_capacity(words.len());
        for (w, l) in words.into_iter().zip(locations) {
            match w.into_string() {
                Ok(w) => out.push((w, l)),
                Err(_) => {
                    self.d.error(
                        &first.location,
                        format!("{}: the command line is not UTF-8", s.keyword.text),
                    );
                    self.o.poison(path);
                    return None;
                }
            }
        }
        if out.is_empty() {
            self.d.error(
                &first.location,
                format!("`{}` needs a command", s.keyword.text),
            );
            self.o.poison(path);
            return None;
        }
        Some(out)
    }

    /// keepalived runs a script's words with `execve` when its first word is an executable
    /// file, with no shell: `|`, `&&`, `;`, `$x`, globs and redirections reach the program
    /// as words. lb-node runs `vrrp_script` and notify commands with `/bin/sh -c`, where
    /// they are shell syntax: the same line may act differently, said here.
    /// (`misc_path` runs without a shell in lb-node too: not warned.)
    fn warn_shell(&mut self, keyword: &str, (command, at): &(String, Location)) {
        if keyword == "misc_path" {
            return;
        }
        const SHELL: &[char] = &['|', '&', ';', '$', '<', '>', '`', '*', '?', '(', ')'];
        // A shell named as the program runs the same either way.
        let program = command.split_ascii_whitespace().next().unwrap_or_default();
        let base = program.rsplit('/').next().unwrap_or(program);
        if matches!(base, "sh" | "bash" | "dash" | "ksh" | "zsh" | "ash") {
            return;
        }
        // Syntax outside quotes only: quoted, both read it as text.
        let mut quote = None;
        let mut escaped = false;
        let unquoted = command.chars().any(|c| {
            if escaped {
                escaped = false;
                return false;
            }
            match (c, quote) {
                ('\\', _) => escaped = true,
                ('\'' | '"', None) => quote = Some(c),
                (q, Some(open)) if q == open => quote = None,
                (c, None) => return SHELL.contains(&c),
                _ => {}
            }
            false
        });
        if unquoted {
            self.d.warn(
                at,
                format!("{keyword}: {command:?} has shell syntax; lb-node runs it with /bin/sh -c, where keepalived runs the words without a shell (its `|`, `&&`, `;`, `$`, … reach the program as arguments)"),
            );
        }
    }

    /// A command line (`vrrp_script`'s `script`, `misc_path`): the first word of the line
    /// as keepalived reads it ([`script_words`](Self::script_words)), so
    /// `"/usr/bin/killall -0 haproxy"` and `'/usr/bin/killall -0 haproxy'` are one
    /// command with its arguments. keepalived runs only that word: more words (an
    /// unquoted command with arguments) are ignored, as keepalived ignores them, and
    /// warned about.
    fn command(&mut self, s: &Stmt, path: &str) -> Option<String> {
        let mut words = self.script_words(s, path)?;
        self.warn_shell(s.keyword.text.as_str(), &words[0]);
        if let Some((_, at)) = words.get(1) {
            let rest: Vec<&str> = words[1..].iter().map(|(w, _)| w.as_str()).collect();
            self.d.warn(
                at,
                format!(
                    "keepalived runs only the first word, {:?}, and ignores {:?}: quote the command with its arguments (\"{} …\")",
                    words[0].0,
                    rest.join(" "),
                    words[0].0
                ),
            );
        }
        Some(words.swap_remove(0).0)
    }

    /// keepalived's `regex PATTERN`: the line read with keepalived's quoting and escapes
    /// (check_http.c reads it with `alloc_strvec_quoted_escaped`: `\\d` is `\d`, `'a b'`
    /// one word, `"\r\n"` CR LF), one pattern only.
    fn regex(&mut self, s: &Stmt, path: &str) -> Option<String> {
        let Some(first) = s.args.first() else {
            self.d.error(&s.keyword.location, "`regex` needs a pattern");
            return None;
        };
        self.record(path, &first.location);
        // The line as written from the first argument on (the lexer knows only double
        // quotes: a single-quoted pattern may span several of its tokens).
        let (raw, _) = raw_args(s);
        match lb_health::probe::split_command_line(&raw) {
            Ok(words) if words.len() == 1 => match words[0].to_str() {
                Some(w) => Some(w.to_owned()),
                None => {
                    self.d
                        .error(&first.location, "regex: the pattern is not UTF-8");
                    None
                }
            },
            Ok(words) => {
                self.d.error(
                    &first.location,
                    format!(
                        "regex takes one pattern, not {} words: quote it (\"a b\" or 'a b')",
                        words.len()
                    ),
                );
                None
            }
            Err(e) => {
                let why = match e {
                    lb_health::Error::InvalidConfig { reason, .. } => reason,
                    other => other.to_string(),
                };
                self.d.error(&first.location, format!("regex: {why}"));
                None
            }
        }
    }

    /// `KEYWORD USER [GROUP]` (`user` in `vrrp_script` and `MISC_CHECK`, `script_user`),
    /// the user recorded at `user_path`, the group at `group_path`; the names are looked up
    /// by the model's validation.
    fn user_group(
        &mut self,
        s: &Stmt,
        user_path: &str,
        group_path: &str,
    ) -> Option<(String, Option<String>)> {
        match s.args.as_slice() {
            [] => {
                self.d.error(
                    &s.keyword.location,
                    format!("`{}` needs a user name", s.keyword.text),
                );
                None
            }
            [user, rest @ ..] => {
                self.record(user_path, &user.location);
                let group = rest.first().map(|g| {
                    self.record(group_path, &g.location);
                    g.text.clone()
                });
                if let Some(extra) = rest.get(1) {
                    self.d.error(
                        &extra.location,
                        format!(
                            "`{}` takes a user name and an optional group name",
                            s.keyword.text
                        ),
                    );
                }
                Some((user.text.clone(), group))
            }
        }
    }

    /// A notify script, `SCRIPT [USER [GROUP]]` (keepalived notify_script_init: the
    /// command is the first word, a quoted string may hold its arguments; then the user
    /// and group it runs as, looked up by the model's validation), recorded at `path`,
    /// `path.user` and `path.group`.
    fn notify_script(&mut self, s: &Stmt, path: &str) -> Option<NotifyScript> {
        let words = self.script_words(s, path)?;
        self.warn_shell(s.keyword.text.as_str(), &words[0]);
        let mut n = NotifyScript::new(words[0].0.clone());
        if let Some((u, at)) = words.get(1) {
            self.record(&format!("{path}.user"), at);
            n.user = Some(u.clone());
        }
        if let Some((g, at)) = words.get(2) {
            self.record(&format!("{path}.group"), at);
            n.group = Some(g.clone());
        }
        if let Some((extra, at)) = words.get(3) {
            self.d.warn(
                at,
                format!(
                    "`{}` takes a command, a user and a group: {:?} and what follows are ignored, as keepalived ignores them (quote a command with arguments)",
                    s.keyword.text, extra
                ),
            );
        }
        Some(n)
    }

    /// [`Conv::notify_script`] into `slot` unless an earlier line of the block set it:
    /// keepalived keeps the first notify script of a kind (`warn_repeats` says so).
    fn first_notify(&mut self, slot: &mut Option<NotifyScript>, s: &Stmt, path: &str) {
        if slot.is_none() {
            *slot = self.notify_script(s, path);
        }
    }

    /// Every argument joined by spaces (keepalived `make_strvec_str`), parsed as a
    /// keepalived hex string by `f` and recorded at `path`; an error at the first argument.
    fn hex<T>(
        &mut self,
        s: &Stmt,
        path: &str,
        f: impl FnOnce(&str) -> lb_health::Result<T>,
    ) -> Option<T> {
        let Some(first) = s.args.first() else {
            self.d.error(
                &s.keyword.location,
                format!("`{}` needs a hex string", s.keyword.text),
            );
            return None;
        };
        self.record(path, &first.location);
        let text = s
            .args
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        match f(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.d
                    .error(&first.location, format!("{}: {e}", s.keyword.text));
                self.o.poison(path);
                None
            }
        }
    }

    /// A flag: on when written bare, else its keepalived `<BOOL>` argument (`on`, `off`,
    /// `true`, `false`, `yes`, `no`); anything else is an error at the argument (and the
    /// flag stays off).
    /// A keyword keepalived sets whatever follows it (its handler reads no argument, so
    /// `off` turns it on): always true, an argument warned about.
    fn bare_flag(&mut self, s: &Stmt, path: &str) -> bool {
        self.record(path, &s.keyword.location);
        if let Some(a) = s.args.first() {
            self.d.warn(
                &a.location,
                format!(
                    "`{}` takes no argument: {:?} ignored and the setting on, as keepalived",
                    s.keyword.text, a.text
                ),
            );
        }
        true
    }

    /// keepalived 2.2.7's `skip_check_adv_addr`: on when written bare or with any valid
    /// `<BOOL>`, `off` included (its handler sets the flag whenever the value parses),
    /// warned about; an invalid value is an error, as [`flag`](Self::flag)'s.
    fn on_if_valid(&mut self, s: &Stmt, path: &str) -> bool {
        self.flag(s, path);
        if let Some(a) = s.args.first() {
            if matches!(a.text.as_str(), "off" | "false" | "no") {
                self.d.warn(
                    &a.location,
                    format!(
                        "`{} {}` turns it on in keepalived 2.2.7, which sets it for any valid value; lb-node does the same (omit the line to leave it off)",
                        s.keyword.text, a.text
                    ),
                );
            }
        }
        true
    }

    /// Warns when `s`'s value is not a whole number of seconds where keepalived reads only
    /// those (`vrrp_script` `interval` and `timeout`, `garp_master_delay`,
    /// `garp_master_refresh`, `garp_lower_prio_delay`, `persistence_timeout`): keepalived
    /// would refuse `0.5` or `2m` and keep its default; lb-node takes the duration written.
    fn whole_seconds(&mut self, s: &Stmt) {
        if let Some(a) = s.args.first() {
            if !a.text.is_empty() && !a.text.bytes().all(|b| b.is_ascii_digit()) {
                self.d.warn(
                    &a.location,
                    format!(
                        "keepalived reads `{}` in whole seconds and would ignore {:?} (keeping its default); lb-node takes it as written",
                        s.keyword.text, a.text
                    ),
                );
            }
        }
    }

    /// A real or virtual server's `retry`: keepalived reads 1.. there (`retry 0` is an
    /// error it skips, leaving the checks their own default): 0 is warned about and
    /// `None`.
    fn retry(&mut self, s: &Stmt, path: &str) -> Option<u32> {
        let n: u32 = self.get(s, path, int(&s.keyword.text, 0, 1000))?;
        if n == 0 {
            if let Some(a) = s.args.first() {
                self.d.warn(
                    &a.location,
                    "retry 0 ignored, as keepalived ignores it here (1 or more): the checks keep their own default",
                );
            }
            return None;
        }
        Some(n)
    }

    fn flag(&mut self, s: &Stmt, path: &str) -> bool {
        self.record(path, &s.keyword.location);
        let Some(a) = s.args.first() else {
            return true;
        };
        if let Some(x) = s.args.get(1) {
            self.d
                .warn(&x.location, format!("extra argument {:?} ignored", x.text));
        }
        // keepalived's `check_true_false` compares exactly: `ON` is not a value.
        match a.text.as_str() {
            "on" | "true" | "yes" => true,
            "off" | "false" | "no" => false,
            _ => {
                self.d.error(
                    &a.location,
                    format!(
                        "`{}` takes on|off|true|false|yes|no or nothing, not {:?}",
                        s.keyword.text, a.text
                    ),
                );
                self.o.poison(path);
                false
            }
        }
    }

    fn block<'s>(&mut self, s: &'s Stmt) -> &'s [Stmt] {
        match &s.block {
            Some(b) => b,
            None => {
                self.d.error(
                    &s.keyword.location,
                    format!("`{}` needs a {{ … }} block", s.keyword.text),
                );
                &[]
            }
        }
    }

    /// The block of a section whose settings are single-valued: [`Conv::block`], warning
    /// about settings given twice.
    fn section<'s>(&mut self, s: &'s Stmt) -> &'s [Stmt] {
        let b = self.block(s);
        self.warn_repeats(b);
        b
    }

    fn warn_repeats(&mut self, b: &[Stmt]) {
        const REPEATABLE: &[&str] = &[
            "real_server",
            "url",
            "TCP_CHECK",
            "HTTP_GET",
            "SSL_GET",
            "MISC_CHECK",
            "UDP_CHECK",
            "DNS_CHECK",
            "PING_CHECK",
            "SMTP_CHECK",
            "FILE_CHECK",
            "BFD_CHECK",
            "virtual_ipaddress",
            "virtual_ipaddress_excluded",
            "unicast_peer",
            "track_interface",
            "track_script",
            "track_service",
            "track_process",
            "track_file",
            "track_bfd",
            "group",
            "include",
        ];
        // keepalived keeps the first of these ("… script already specified - ignoring").
        const FIRST_WINS: &[&str] = &[
            "notify_master",
            "notify_backup",
            "notify_fault",
            "notify_stop",
            "notify",
            "notify_up",
            "notify_down",
            "quorum_up",
            "quorum_down",
            "notify_fifo",
            "notify_fifo_script",
            "vrrp_notify_fifo",
            "vrrp_notify_fifo_script",
            "lvs_notify_fifo",
            "lvs_notify_fifo_script",
            "notify_master_rx_lower_pri",
            "notify_deleted",
            "vmac_prefix",
            "startup_script",
            "shutdown_script",
        ];
        let mut seen: HashMap<&str, &Location> = HashMap::new();
        for st in b {
            let kw = st.keyword.text.as_str();
            if REPEATABLE.contains(&kw) {
                continue;
            }
            let Some(first) = seen.get(kw).copied() else {
                seen.insert(kw, &st.keyword.location);
                continue;
            };
            let message = if FIRST_WINS.contains(&kw) {
                format!(
                    "`{kw}` is set again; the first value wins, as in keepalived (set at {}:{}): this one is ignored",
                    first.line, first.column
                )
            } else {
                seen.insert(kw, &st.keyword.location);
                format!(
                    "`{kw}` is set again; the last value wins (first set at {}:{})",
                    first.line, first.column
                )
            };
            self.d.warn(&st.keyword.location, message);
        }
    }

    fn no_block(&mut self, s: &Stmt) {
        if s.block.is_some() {
            self.d.warn(
                &s.keyword.location,
                format!("`{}` takes no block; its block is ignored", s.keyword.text),
            );
        }
    }

    fn name<'s>(&mut self, s: &'s Stmt) -> Option<&'s Token> {
        let t = s.args.first();
        if t.is_none() {
            self.d.error(
                &s.keyword.location,
                format!("`{}` needs a name", s.keyword.text),
            );
        }
        t
    }

    fn unknown(&mut self, s: &Stmt, section: &str) {
        if s.keyword.text.contains("${") {
            return; // refused by the lexer
        }
        if s.keyword.text.starts_with(['@', '$']) {
            self.d.error(
                &s.keyword.location,
                format!(
                    "`{}`: keepalived conditional lines and parameters are not supported",
                    s.keyword.text
                ),
            );
            return;
        }
        self.d.warn(
            &s.keyword.location,
            format!("unknown keyword `{}` in {section}, ignored", s.keyword.text),
        );
    }

    fn ignored(&mut self, s: &Stmt, section: &str) {
        self.d.warn(
            &s.keyword.location,
            format!(
                "`{}` in {section} is not supported by lb-node, ignored",
                s.keyword.text
            ),
        );
    }

    /// [`Conv::ignored`] for a setting that changes what keepalived does: `why` says what
    /// keepalived does with it and what lb-node does instead.
    fn ignored_unlike_keepalived(&mut self, s: &Stmt, section: &str, why: &str) {
        self.d.warn(
            &s.keyword.location,
            format!("`{}` in {section} is ignored: {why}", s.keyword.text),
        );
    }

    fn top(&mut self, stmts: &[Stmt]) {
        // Groups first: a `virtual_server group` may come before its group's definition.
        for s in stmts
            .iter()
            .filter(|s| s.keyword.text == "virtual_server_group")
        {
            self.virtual_server_group(s);
        }
        for s in stmts {
            match s.keyword.text.as_str() {
                "global_defs" => {
                    let b = self.block(s);
                    self.global_defs(b);
                }
                "vrrp_script" => self.vrrp_script(s),
                "vrrp_track_process" => self.vrrp_track_process(s),
                "track_file" | "vrrp_track_file" => self.track_file(s),
                "vrrp_instance" => self.vrrp_instance(s),
                "vrrp_sync_group" => self.sync_group(s),
                "virtual_server" => self.virtual_server(s),
                "virtual_server_group" => {} // read first
                "bfd_instance" => self.bfd_instance(s),
                "static_ipaddress" => {
                    self.record("static_ipaddress", &s.keyword.location);
                    for a in self.block(s) {
                        let j = self.cfg.static_ipaddress.len();
                        match self.vip(a, &format!("static_ipaddress[{j}]")) {
                            Some(v) => self.cfg.static_ipaddress.push(v),
                            None => self.o.poison("static_ipaddress"),
                        }
                    }
                    // keepalived's default_interface defaults to eth0.
                    if self.cfg.global.default_interface.is_none()
                        && self.cfg.static_ipaddress.iter().any(|a| a.dev.is_none())
                    {
                        self.cfg.global.default_interface = Some("eth0".into());
                    }
                }
                "static_routes" => {
                    let first = self.cfg.static_routes.len();
                    let routes = self.routes(s, "static_routes", first);
                    self.cfg.static_routes.extend(routes);
                }
                "static_rules" => {
                    let first = self.cfg.static_rules.len();
                    let rules = self.rules(s, "static_rules", first);
                    self.cfg.static_rules.extend(rules);
                }
                "linkbeat_interfaces"
                | "track_bfd" | "track_group" | "use_pid_dir" | "instance" | "child_wait_time"
                | "linkbeat_use_polling" => self.ignored(s, "the configuration"),
                "interface_up_down_delays" => self.ignored_unlike_keepalived(
                    s,
                    "the configuration",
                    "an interface going down or up acts at once",
                ),
                "SSL" => self.ignored_unlike_keepalived(
                    s,
                    "the configuration",
                    "SSL_GET checks present no client certificate and do not verify the server's (as keepalived without a `ca`)",
                ),
                "garp_group" => self.garp_group(s),
                kw @ ("net_namespace" | "net_namespace_ipvs" | "namespace_with_ipsets") => {
                    self.d.error(
                        &s.keyword.location,
                        format!("`{kw}` is not supported: run lb-node inside the namespace (ip netns exec NS lb-node …)"),
                    );
                }
                kw if kw.contains("${") => {} // refused by the lexer
                kw if kw.starts_with('$') => self.d.error(
                    &s.keyword.location,
                    "keepalived parameter definitions ($NAME=…) are not supported: write the values out",
                ),
                kw if kw.starts_with('@') => self.d.error(
                    &s.keyword.location,
                    "keepalived conditional lines (@config_id …) are not supported: keep one file per node",
                ),
                _ => self.unknown(s, "the configuration"),
            }
        }
    }

    fn global_defs(&mut self, b: &[Stmt]) {
        self.warn_repeats(b);
        // `*notify_fifo_script`s, attached to their FIFOs once the block is read.
        let mut fifo_scripts: Vec<(&'static str, NotifyScript, Location)> = Vec::new();
        for s in b {
            self.no_block_unless(s, &["notification_email"]);
            match s.keyword.text.as_str() {
                "vrrp_skip_check_adv_addr" => {
                    self.vrrp_defaults.skip_check_adv_addr =
                        Some(self.bare_flag(s, "global.vrrp_skip_check_adv_addr"));
                }
                "vrrp_down_timer_adverts" => {
                    self.vrrp_defaults.down_timer_adverts = self.get(
                        s,
                        "global.vrrp_down_timer_adverts",
                        int("vrrp_down_timer_adverts", 1, 100),
                    );
                }
                "vrrp_garp_master_delay" => {
                    self.vrrp_defaults.garp_master_delay = self.get(
                        s,
                        "global.vrrp_garp_master_delay",
                        duration("vrrp_garp_master_delay"),
                    );
                }
                "vrrp_garp_master_repeat" => {
                    self.vrrp_defaults.garp_master_repeat = self.get(
                        s,
                        "global.vrrp_garp_master_repeat",
                        int("vrrp_garp_master_repeat", 1, 255),
                    );
                }
                "vrrp_garp_master_refresh" => {
                    self.vrrp_defaults.garp_master_refresh = self.get(
                        s,
                        "global.vrrp_garp_master_refresh",
                        duration("vrrp_garp_master_refresh"),
                    );
                }
                "vrrp_garp_master_refresh_repeat" => {
                    self.vrrp_defaults.garp_master_refresh_repeat = self.get(
                        s,
                        "global.vrrp_garp_master_refresh_repeat",
                        int("vrrp_garp_master_refresh_repeat", 1, 255),
                    );
                }
                "vrrp_garp_lower_prio_delay" => {
                    self.vrrp_defaults.garp_lower_prio_delay = self.get(
                        s,
                        "global.vrrp_garp_lower_prio_delay",
                        duration("vrrp_garp_lower_prio_delay"),
                    );
                }
                "vrrp_garp_lower_prio_repeat" => {
                    self.vrrp_defaults.garp_lower_prio_repeat = self.get(
                        s,
                        "global.vrrp_garp_lower_prio_repeat",
                        int("vrrp_garp_lower_prio_repeat", 0, 255),
                    );
                }
                "vrrp_strict" => self.vrrp_strict = self.bare_flag(s, "global.vrrp_strict"),
                kw @ ("vrrp_garp_interval" | "vrrp_gna_interval") => {
                    if let Some(d) = self.get(s, &format!("global.{kw}"), micros(kw)) {
                        if kw == "vrrp_garp_interval" {
                            self.cfg.global.vrrp_garp_interval = d;
                        } else {
                            self.cfg.global.vrrp_gna_interval = d;
                        }
                    }
                }
                "vrrp_higher_prio_send_advert" => {
                    self.vrrp_defaults.higher_prio_send_advert =
                        Some(self.flag(s, "global.vrrp_higher_prio_send_advert"));
                }
                "vrrp_lower_prio_no_advert" => {
                    self.vrrp_defaults.lower_prio_no_advert =
                        Some(self.flag(s, "global.vrrp_lower_prio_no_advert"));
                }
                "vrrp_startup_delay" => {
                    if let Some(d) = self.get(
                        s,
                        "global.vrrp_startup_delay",
                        duration("vrrp_startup_delay"),
                    ) {
                        self.cfg.global.vrrp_startup_delay = d;
                    }
                }
                "vrrp_mcast_group4" => {
                    self.cfg.global.vrrp_mcast_group4 =
                        self.get(s, "global.vrrp_mcast_group4", |v| {
                            v.parse::<std::net::Ipv4Addr>().map_err(|_| {
                                format!("vrrp_mcast_group4 {v:?}: not an IPv4 address")
                            })
                        });
                }
                "vrrp_mcast_group6" => {
                    self.cfg.global.vrrp_mcast_group6 =
                        self.get(s, "global.vrrp_mcast_group6", |v| {
                            v.parse::<std::net::Ipv6Addr>().map_err(|_| {
                                format!("vrrp_mcast_group6 {v:?}: not an IPv6 address")
                            })
                        });
                }
                "router_id" => {
                    self.cfg.global.router_id =
                        self.value(s, "global.router_id").map(|t| t.text.clone());
                }
                "vrrp_version" => {
                    self.vrrp_version = self.get(s, "global.vrrp_version", |v| match v {
                        "2" => Ok(2),
                        "3" => Ok(3),
                        _ => Err(format!("vrrp_version {v} is not supported (2 or 3)")),
                    });
                }
                "admin_socket" => {
                    if let Some(t) = self.value(s, "global.admin_socket") {
                        self.cfg.global.admin_socket = t.text.clone().into();
                    }
                }
                "log_level" => {
                    if let Some(l) = self.get(s, "global.log_level", |v| v.parse::<LogLevel>()) {
                        self.cfg.global.log_level = l;
                    }
                }
                "drain_deadline" => {
                    if let Some(d) =
                        self.get(s, "global.drain_deadline", duration("drain_deadline"))
                    {
                        self.cfg.global.drain_deadline = d;
                    }
                }
                "nbthread" => {
                    if let Some(n) = self.get(s, "global.nbthread", |v| {
                        v.parse::<u16>()
                            .map_err(|_| format!("nbthread {v}: expected 0..=65535"))
                    }) {
                        self.cfg.global.nbthread = n;
                    }
                }
                "busy_polling" => {
                    self.cfg.global.busy_polling = self.flag(s, "global.busy_polling");
                }
                "notification_email"
                | "notification_email_from"
                | "smtp_server"
                | "smtp_connect_timeout"
                | "smtp_helo_name"
                | "enable_script_security"
                | "lvs_id"
                | "lvs_sync_daemon"
                | "max_auto_priority"
                | "dynamic_interfaces"
                | "vrrp_iptables"
                | "vrrp_ipsets"
                | "checker_process_name"
                | "vrrp_process_name"
                | "enable_traps"
                | "snmp_socket"
                | "smtp_alert"
                | "lvs_flush"
                | "bfd_cpu_affinity"
                | "bfd_no_swap"
                | "bfd_priority"
                | "bfd_process_name"
                | "bfd_rlimit_rtime"
                | "bfd_rlimit_rttime"
                | "bfd_rt_priority"
                | "checker_cpu_affinity"
                | "checker_log_all_failures"
                | "checker_no_swap"
                | "checker_priority"
                | "checker_rlimit_rtime"
                | "checker_rlimit_rttime"
                | "checker_rt_priority"
                | "config_save_dir"
                | "data_use_instance"
                | "dbus_service_name"
                | "disable_local_igmp"
                | "enable_dbus"
                | "enable_snmp_checker"
                | "enable_snmp_keepalived"
                | "enable_snmp_rfc"
                | "enable_snmp_rfcv2"
                | "enable_snmp_rfcv3"
                | "enable_snmp_vrrp"
                | "log_unknown_vrids"
                | "lvs_flush_on_stop"
                | "lvs_flush_onstop"
                | "lvs_netlink_cmd_rcv_bufs"
                | "lvs_netlink_cmd_rcv_bufs_force"
                | "lvs_netlink_monitor_rcv_bufs"
                | "lvs_netlink_monitor_rcv_bufs_force"
                | "lvs_process_name"
                | "lvs_timeouts"
                | "min_auto_priority_delay"
                | "no_checker_emails"
                | "no_email_faults"
                | "process_monitor_rcv_bufs"
                | "process_monitor_rcv_bufs_force"
                | "process_name"
                | "process_names"
                | "random_seed"
                | "smtp_alert_checker"
                | "smtp_alert_vrrp"
                | "tmp_config_directory"
                | "umask"
                | "vrrp_cpu_affinity"
                | "vrrp_netlink_cmd_rcv_bufs"
                | "vrrp_netlink_cmd_rcv_bufs_force"
                | "vrrp_netlink_monitor_rcv_bufs"
                | "vrrp_netlink_monitor_rcv_bufs_force"
                | "vrrp_no_swap"
                | "vrrp_priority"
                | "vrrp_rlimit_rtime"
                | "vrrp_rlimit_rttime"
                | "vrrp_rt_priority"
                | "vrrp_rx_bufs_multiplier"
                | "vrrp_rx_bufs_policy" => self.ignored(s, "global_defs"),
                // Settings that change what keepalived does: say what lb-node does instead.
                "startup_script" => {
                    let mut slot = self.cfg.global.startup_script.take();
                    self.first_notify(&mut slot, s, "global.startup_script");
                    self.cfg.global.startup_script = slot;
                }
                "shutdown_script" => {
                    let mut slot = self.cfg.global.shutdown_script.take();
                    self.first_notify(&mut slot, s, "global.shutdown_script");
                    self.cfg.global.shutdown_script = slot;
                }
                kw @ ("startup_script_timeout" | "shutdown_script_timeout") => {
                    let path = format!("global.{kw}");
                    if let Some(n) = self.get(s, &path, int::<u64>(kw, 1, 1000)) {
                        let d = Duration::from_secs(n);
                        if kw == "startup_script_timeout" {
                            self.cfg.global.startup_script_timeout = d;
                        } else {
                            self.cfg.global.shutdown_script_timeout = d;
                        }
                    }
                }
                // keepalived keeps the first ("already been specified - ignoring").
                "vmac_prefix" if self.cfg.global.vmac_prefix.is_none() => {
                    self.cfg.global.vmac_prefix =
                        self.get(s, "global.vmac_prefix", |v: &str| Ok(v.to_owned()));
                }
                "vmac_prefix" => {}
                "vmac_addr_prefix" => self.ignored_unlike_keepalived(
                    s,
                    "global_defs",
                    "it names use_vmac_addr's interfaces, which lb-node does not make",
                ),
                "vrrp_notify_priority_changes" => {
                    self.vrrp_notify_priority_changes =
                        Some(self.flag(s, "global.vrrp_notify_priority_changes"));
                }
                "fifo_write_vrrp_states_on_reload" => {
                    self.cfg.global.fifo_write_vrrp_states_on_reload =
                        self.bare_flag(s, "global.fifo_write_vrrp_states_on_reload");
                }
                "rs_init_notifies" => {
                    self.cfg.global.rs_init_notifies =
                        self.flag(s, "global.rs_init_notifies");
                }
                "default_interface" => {
                    self.cfg.global.default_interface =
                        self.get(s, "global.default_interface", |v: &str| Ok(v.to_owned()));
                }
                "vrrp_garp_extra_if" | "vrrp_vmac_garp_intvl" => self.ignored_unlike_keepalived(
                    s,
                    "global_defs",
                    "gratuitous ARPs go out of the VIPs' own interfaces only",
                ),
                kw @ ("nftables"
                | "nftables_priority"
                | "nftables_counters"
                | "nftables_ifindex"
                | "nftables_ipvs"
                | "nftables_ipvs_priority"
                | "nftables_ipvs_start_fwmark"
                | "include_check"
                | "reload_check_config"
                | "reload_file"
                | "reload_repeat"
                | "reload_time_file") => self.ignored_unlike_keepalived(
                    s,
                    "global_defs",
                    if kw.starts_with("nftables") {
                        "lb-node keeps its own nftables tables (inet lb_vrrp for no_accept, ip/ip6 lb_vrrp_vmac for VMACs)"
                    } else if kw == "include_check" {
                        "use keepalived's include variants (includer, includem, includew, includeb, includea) per include"
                    } else {
                        "lb-node reloads on SIGHUP, after checking the whole new configuration (a bad one is refused and the running one stays)"
                    },
                ),
                "vrrp_min_garp" => {
                    // keepalived: one gratuitous ARP / NA at the transition, no second
                    // burst, no refresh; settings written before or after still win.
                    if self.flag(s, "global.vrrp_min_garp") {
                        let d = &mut self.vrrp_defaults;
                        d.garp_master_repeat.get_or_insert(1);
                        d.garp_master_delay.get_or_insert(Duration::ZERO);
                        d.garp_master_refresh.get_or_insert(Duration::ZERO);
                        d.garp_master_refresh_repeat.get_or_insert(0);
                    }
                }
                // What lb-node always does: adverts from a source not in unicast_peer are
                // dropped (and counted).
                "vrrp_check_unicast_src" => {
                    self.bare_flag(s, "global.vrrp_check_unicast_src");
                }
                "script_user" => {
                    if let Some((u, g)) =
                        self.user_group(s, "global.script_user", "global.script_group")
                    {
                        self.cfg.global.script_user = Some(u);
                        self.cfg.global.script_group = g;
                    }
                }
                // `FIFO [USER [GROUP]]`.
                kw @ ("notify_fifo" | "vrrp_notify_fifo" | "lvs_notify_fifo") => {
                    let path = format!("global.{kw}");
                    let Some(first) = s.args.first() else {
                        self.d
                            .error(&s.keyword.location, format!("`{kw}` needs the FIFO's path"));
                        continue;
                    };
                    let fifo = NotifyFifo {
                        path: first.text.clone().into(),
                        user: s.args.get(1).map(|t| t.text.clone()),
                        group: s.args.get(2).map(|t| t.text.clone()),
                        script: None,
                    };
                    if let Some(x) = s.args.get(3) {
                        self.d
                            .warn(&x.location, format!("extra argument {:?} ignored", x.text));
                    }
                    let slot = match kw {
                        "notify_fifo" => &mut self.cfg.global.notify_fifo,
                        "vrrp_notify_fifo" => &mut self.cfg.global.vrrp_notify_fifo,
                        _ => &mut self.cfg.global.lvs_notify_fifo,
                    };
                    // The first one wins (warned by warn_repeats), as keepalived.
                    if slot.is_none() {
                        *slot = Some(fifo);
                        self.record(&path, &first.location);
                    }
                }
                kw @ ("notify_fifo_script"
                | "vrrp_notify_fifo_script"
                | "lvs_notify_fifo_script") => {
                    let fifo = match kw {
                        "notify_fifo_script" => "notify_fifo",
                        "vrrp_notify_fifo_script" => "vrrp_notify_fifo",
                        _ => "lvs_notify_fifo",
                    };
                    if fifo_scripts.iter().any(|(f, _, _)| *f == fifo) {
                        continue;
                    }
                    if let Some(n) = self.notify_script(s, &format!("global.{fifo}.script")) {
                        fifo_scripts.push((fifo, n, s.keyword.location.clone()));
                    }
                }
                _ => self.unknown(s, "global_defs"),
            }
        }
        for (fifo, script, location) in fifo_scripts {
            let slot = match fifo {
                "notify_fifo" => &mut self.cfg.global.notify_fifo,
                "vrrp_notify_fifo" => &mut self.cfg.global.vrrp_notify_fifo,
                _ => &mut self.cfg.global.lvs_notify_fifo,
            };
            match slot {
                Some(f) => f.script = Some(script),
                None => self.d.error(
                    &location,
                    format!("`{fifo}_script` needs `{fifo}` (the FIFO it reads)"),
                ),
            }
        }
    }

    fn no_block_unless(&mut self, s: &Stmt, blocky: &[&str]) {
        if !blocky.contains(&s.keyword.text.as_str()) {
            self.no_block(s);
        }
    }

    fn vrrp_script(&mut self, s: &Stmt) {
        let i = self.cfg.vrrp_scripts.len();
        let p = format!("vrrp_script[{i}]");
        let Some(name) = self.name(s) else { return };
        self.record(&p, &s.keyword.location);
        self.record(&format!("{p}.name"), &name.location);
        let mut script = VrrpScript {
            name: name.text.clone(),
            script: String::new(),
            interval: Duration::from_secs(1),
            timeout: None,
            weight: 0,
            reverse: false,
            rise: 1,
            fall: 1,
            user: None,
            group: None,
            init_fail: false,
        };
        let mut has_script = false;
        for st in self.section(s) {
            self.no_block(st);
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "script" => {
                    // Written: a line that does not read is its own error.
                    has_script = true;
                    if let Some(c) = self.command(st, &fp) {
                        script.script = c;
                    }
                }
                "interval" => {
                    self.whole_seconds(st);
                    script.interval = self.get(st, &fp, duration(kw)).unwrap_or(script.interval);
                }
                "timeout" => {
                    self.whole_seconds(st);
                    script.timeout = self.get(st, &fp, duration(kw));
                }
                "weight" => {
                    let (w, reverse) = self.weight_reverse(st, &fp, -254, 254);
                    // keepalived (`vrrp_vscript_weight_handler`) takes -253..253 and
                    // ignores anything else with an error: the weight stays 0.
                    script.weight = match w {
                        Some(w @ (254 | -254)) => {
                            if let Some(a) = st.args.first() {
                                self.d.warn(
                                    &a.location,
                                    format!("weight {w} is outside keepalived's -253..253 for a vrrp_script: 0 used, as keepalived ignores it"),
                                );
                            }
                            0
                        }
                        other => other.unwrap_or(0),
                    };
                    script.reverse = reverse;
                }
                "rise" => script.rise = self.get(st, &fp, int(kw, 1, 1_000_000)).unwrap_or(1),
                "fall" => script.fall = self.get(st, &fp, int(kw, 1, 1_000_000)).unwrap_or(1),
                // `user USER [GROUP]`, looked up by the model's validation.
                "user" => {
                    if let Some((u, g)) = self.user_group(st, &fp, &format!("{p}.group")) {
                        script.user = Some(u);
                        script.group = g;
                    }
                }
                "init_fail" => script.init_fail = self.bare_flag(st, &fp),
                _ => self.unknown(st, "vrrp_script"),
            }
        }
        if !has_script {
            self.d.error(
                &s.keyword.location,
                format!("vrrp_script {} has no `script`", script.name),
            );
        }
        self.cfg.vrrp_scripts.push(script);
    }

    /// What keepalived does to each `vrrp_instance` once the whole file is read
    /// (vrrp.c `vrrp_complete_instance`, 2.2.7), after the global defaults:
    ///
    /// * without `priority`, `state MASTER` means 255 (the address owner), else 100;
    ///   without `state`, priority 255 means MASTER, else BACKUP;
    /// * `nopreempt` is cleared for the owner and with `state MASTER`, `preempt_delay`
    ///   with `state MASTER` and with `nopreempt`; VRRPv3 drops `authentication`;
    /// * strict mode (`strict_mode`, by default `global_defs` `vrrp_strict`), RFC 3768 /
    ///   RFC 5798 to the letter: `state` follows the priority, no authentication, no
    ///   unicast peers (an error: keepalived refuses to start), no VMAC MAC of one's own
    ///   and no `vmac_xmit_base`, no `preempt_delay`, `down_timer_adverts` 3, IPv6 on
    ///   VRRPv3; accept mode off unless the owner (and off on VRRPv2, which has none);
    ///   no gratuitous ARPs or advert in answer to a lower-priority master
    ///   (`garp_lower_prio_repeat 0`, `lower_prio_no_advert`), and no
    ///   `higher_prio_send_advert`. A setting written against it is reset with a
    ///   warning where it was written, as keepalived resets it with a message.
    fn complete_instances(&mut self) {
        for i in 0..self.cfg.vrrp_instances.len() {
            let p = format!("vrrp_instance[{i}]");
            let kws = &self.instance_keywords[i];
            let set = |k: &str| kws.iter().any(|w| w == k);
            let strict = self.strict_mode[i].unwrap_or(self.vrrp_strict);
            let version_set = self.version_set[i];
            let vi = &mut self.cfg.vrrp_instances[i];
            let name = vi.name.clone();
            // (model field, message): warnings; errors likewise.
            let mut notes: Vec<(&str, String)> = Vec::new();
            let mut errors: Vec<(&str, String)> = Vec::new();
            if !set("notify_priority_changes") {
                vi.notify_priority_changes = self
                    .group_notify_priority_changes
                    .get(&name)
                    .copied()
                    .or(self.vrrp_notify_priority_changes)
                    .unwrap_or(false);
            }
            let v6 = vi.is_v6();
            if strict && v6 && version_set && vi.version == 2 {
                notes.push((
                    "version",
                    "strict mode: VRRPv2 carries no IPv6; version 3 used, as keepalived".into(),
                ));
                vi.version = 3;
            }
            // keepalived (`vrrp_complete_instance`): VIPs beyond what an advert carries (255
            // IPv4; 89 IPv6 at MTU 1500) are moved to the excluded ones, with an error.
            let max = if v6 {
                lb_vrrp::wire::MAX_ADDRESSES_V6
            } else {
                lb_vrrp::wire::MAX_ADDRESSES_V4
            };
            if vi.virtual_ipaddress.len() > max {
                let n = vi.virtual_ipaddress.len();
                notes.push((
                    "virtual_ipaddress",
                    format!("{n} VIPs, more than an advert carries ({max}): the last {} moved to virtual_ipaddress_excluded (not advertised), as keepalived moves them", n - max),
                ));
                let moved: Vec<_> = vi.virtual_ipaddress.drain(max..).collect();
                let first = vi.virtual_ipaddress_excluded.len();
                for (k, _) in moved.iter().enumerate() {
                    self.o.copy(
                        &format!("{p}.virtual_ipaddress[{}]", max + k),
                        &format!("{p}.virtual_ipaddress_excluded[{}]", first + k),
                    );
                    self.o
                        .forget(&format!("{p}.virtual_ipaddress[{}]", max + k));
                }
                vi.virtual_ipaddress_excluded.extend(moved);
            }
            // keepalived (`vrrp_complete_instance`): a VRRPv2 interval in whole seconds
            // below 256 s, a VRRPv3 one in centiseconds below 40.96 s, rounded (half up)
            // or capped with an error rather than refused.
            let ms = vi.advert_int.as_millis();
            let (unit, cap) = if vi.version == 2 {
                (1000, 255_000)
            } else {
                (10, 40_950)
            };
            let adjusted = if ms > cap {
                Some(cap)
            } else if ms % unit != 0 {
                Some(((ms + unit / 2) / unit * unit).max(unit))
            } else {
                None
            };
            if let Some(to) = adjusted {
                let to = Duration::from_millis(u64::try_from(to).unwrap_or(255_000));
                notes.push((
                    "advert_int",
                    format!(
                        "VRRPv{} advert_int {:?}: {to:?} used, as keepalived rounds or caps it ({})",
                        vi.version,
                        vi.advert_int,
                        if vi.version == 2 {
                            "whole seconds, at most 255"
                        } else {
                            "hundredths of a second, at most 40.95 s"
                        }
                    ),
                ));
                vi.advert_int = to;
            }
            let master = InitialState::Master;
            if !set("priority") {
                vi.priority = if set("state") && vi.state == master {
                    notes.push((
                        "state",
                        "state MASTER without `priority`: priority 255, the address owner, as keepalived"
                            .into(),
                    ));
                    255
                } else {
                    100
                };
            }
            let owner_state = if vi.priority == 255 {
                master
            } else {
                InitialState::Backup
            };
            if !set("state") {
                vi.state = owner_state;
            } else if strict && vi.state != owner_state {
                notes.push((
                    "state",
                    format!(
                        "strict mode: state MASTER is the address owner's (priority 255) only; state {} used, as keepalived",
                        if owner_state == master { "MASTER" } else { "BACKUP" }
                    ),
                ));
                vi.state = owner_state;
            }
            if vi.authentication.is_some() && (strict || vi.version == 3) {
                let why = if strict {
                    "strict mode has no authentication"
                } else {
                    "VRRPv3 has no authentication (RFC 5798 §9)"
                };
                notes.push(("authentication", format!("{why}: ignored, as keepalived")));
                vi.authentication = None;
            }
            // keepalived refuses them on an interface that has multicast (one that exists).
            if strict && !vi.unicast_peer.is_empty() && lb_vrrp::vip::has_multicast(&vi.interface) {
                errors.push((
                    "unicast_peer",
                    "unicast peers are not supported in strict mode (keepalived refuses them too): remove vrrp_strict/strict_mode or the peers".into(),
                ));
            }
            if strict && vi.vmac_address.is_some() {
                notes.push((
                    "vmac_address",
                    "strict mode: the VMAC has the virtual router MAC; this MAC is ignored, as keepalived".into(),
                ));
                vi.vmac_address = None;
            }
            if strict && vi.use_vmac && vi.vmac_xmit_base {
                notes.push((
                    "vmac_xmit_base",
                    "strict mode: adverts leave from the VMAC; vmac_xmit_base ignored, as keepalived".into(),
                ));
                vi.vmac_xmit_base = false;
            }
            if strict
                && v6
                && vi.unicast_peer.is_empty()
                && vi.virtual_ipaddress.first().is_some_and(
                    |a| !matches!(a.address, IpAddr::V6(v) if v.is_unicast_link_local()),
                )
            {
                notes.push((
                    "virtual_ipaddress",
                    "strict mode: the first IPv6 virtual address must be link-local (RFC 5798 §5.2.9), as keepalived warns".into(),
                ));
            }
            if vi.nopreempt && (vi.priority == 255 || vi.state == master) {
                notes.push((
                    "nopreempt",
                    format!(
                        "nopreempt does not apply {}: cleared, as keepalived",
                        if vi.priority == 255 {
                            "to the address owner (priority 255)"
                        } else {
                            "with state MASTER"
                        }
                    ),
                ));
                vi.nopreempt = false;
            }
            if !vi.preempt_delay.is_zero() && (vi.state == master || vi.nopreempt || strict) {
                let why = if vi.state == master {
                    "does not apply with state MASTER"
                } else if vi.nopreempt {
                    "does not apply with nopreempt"
                } else {
                    "is not in strict mode"
                };
                notes.push((
                    "preempt_delay",
                    format!("preempt_delay {why}: cleared, as keepalived"),
                ));
                vi.preempt_delay = Duration::ZERO;
            }
            if strict && vi.down_timer_adverts != 3 {
                notes.push((
                    "down_timer_adverts",
                    "strict mode: Master_Down_Interval is RFC 5798's 3 advert intervals; down_timer_adverts 3 used, as keepalived".into(),
                ));
                vi.down_timer_adverts = 3;
            }
            if !set("accept") && !set("no_accept") {
                vi.accept = vi.priority == 255 || !strict;
                // The model warns of a virtual server on the VIPs itself.
                let serves = self.cfg.virtual_servers.iter().any(|vs| {
                    vi.virtual_ipaddress
                        .iter()
                        .chain(&vi.virtual_ipaddress_excluded)
                        .any(|a| a.address == vs.listen.ip())
                });
                if !vi.accept && !serves {
                    notes.push((
                        "name",
                        format!(
                            "strict mode: accept mode off (RFC 5798 Accept_Mode False): while MASTER this node drops traffic to the virtual addresses (nftables), as keepalived; {}",
                            if vi.version == 2 {
                                "VRRPv2 has no accept mode: without vrrp_strict/strict_mode they are served"
                            } else {
                                "write `accept` to serve on them"
                            }
                        ),
                    ));
                }
            } else if strict && vi.accept && vi.priority != 255 && vi.version == 2 {
                notes.push((
                    "accept",
                    "strict mode: VRRPv2 (RFC 3768) has no accept mode; no_accept used, as keepalived".into(),
                ));
                vi.accept = false;
            }
            if strict {
                // Unwritten: strict's value, over global_defs'; written against it: reset.
                let mut reset = |kw: &'static str, against: bool| {
                    if against && set(kw) {
                        notes.push((kw, format!("strict mode: `{kw}` reset, as keepalived")));
                    }
                };
                reset("garp_lower_prio_repeat", vi.garp_lower_prio_repeat != 0);
                reset("garp_lower_prio_delay", !vi.garp_lower_prio_delay.is_zero());
                reset("lower_prio_no_advert", !vi.lower_prio_no_advert);
                reset("higher_prio_send_advert", vi.higher_prio_send_advert);
                vi.garp_lower_prio_repeat = 0;
                vi.garp_lower_prio_delay = Duration::ZERO;
                vi.lower_prio_no_advert = true;
                vi.higher_prio_send_advert = false;
            }
            // keepalived (`vrrp_complete_instance`): "Ignoring track_interface X since own
            // interface": the instance already follows it (FAULT while it is down, unless
            // `dont_track_primary`), and a weight given there never applies.
            let list = format!("{p}.track_interface");
            let mut j = 0;
            while j < vi.track_interface.len() {
                if vi.track_interface[j].interface != vi.interface {
                    j += 1;
                    continue;
                }
                if let Some(l) = self.o.locate(&format!("{list}[{j}]")) {
                    self.d.warn(
                        &l,
                        format!(
                            "vrrp_instance {name}: track_interface {} is the instance's own interface: ignored, as keepalived ignores it",
                            vi.interface
                        ),
                    );
                }
                self.o.remove_index(&list, j, vi.track_interface.len());
                vi.track_interface.remove(j);
            }
            for (field, message) in notes {
                if let Some(l) = self.o.locate(&format!("{p}.{field}")) {
                    self.d.warn(&l, format!("vrrp_instance {name}: {message}"));
                }
            }
            for (field, message) in errors {
                let path = format!("{p}.{field}");
                // A list's error points at its first entry.
                let first = self.o.locate(&format!("{path}[0]"));
                if let Some(l) = first.or_else(|| self.o.locate(&path)) {
                    self.d.error(&l, format!("vrrp_instance {name}: {message}"));
                }
                self.o.poison(path);
            }
        }
    }

    /// keepalived ignores the weights of a sync group member's tracks unless the group
    /// says `sync_group_tracking_weight` (vrrp_complete_instance: interfaces and a
    /// track_file's default weight become 0, weighted scripts and files are dropped);
    /// lb-node applies them, as keepalived does with it. Each such weight gets a warning
    /// where it is written, so nobody is surprised either way.
    fn warn_sync_group_weights(&mut self) {
        let mut warnings = Vec::new();
        for g in &self.cfg.sync_groups {
            if self.tracking_weight_groups.contains(&g.name) {
                continue;
            }
            for (i, vi) in self.cfg.vrrp_instances.iter().enumerate() {
                if !g.group.contains(&vi.name) {
                    continue;
                }
                let p = format!("vrrp_instance[{i}]");
                let scripts = vi.track_script.iter().enumerate().map(|(j, t)| {
                    let own = self.cfg.vrrp_scripts.iter().find(|s| s.name == t.script);
                    (
                        format!("{p}.track_script[{j}]"),
                        t.weight.or(own.map(|s| s.weight)),
                    )
                });
                let interfaces = vi
                    .track_interface
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (format!("{p}.track_interface[{j}]"), Some(t.weight)));
                let files = vi.track_file.iter().enumerate().map(|(j, t)| {
                    let own = self.cfg.track_files.iter().find(|f| f.name == t.file);
                    (
                        format!("{p}.track_file[{j}]"),
                        t.weight.or(own.map(|f| f.weight)),
                    )
                });
                let bfds = vi.track_bfd.iter().enumerate().map(|(j, t)| {
                    let own = self.cfg.bfd_instances.iter().find(|b| b.name == t.bfd);
                    (
                        format!("{p}.track_bfd[{j}]"),
                        t.weight.or(own.map(|b| b.weight)),
                    )
                });
                for (path, weight) in scripts.chain(interfaces).chain(files).chain(bfds) {
                    if weight.is_some_and(|w| w != 0) && !self.group_copies.contains(&path) {
                        warnings.push((path, vi.name.clone(), g.name.clone()));
                    }
                }
            }
        }
        // An address owner's priority never moves, so keepalived (vrrp_complete_instance)
        // makes a track_file's default weight 1 a 0 (any value but 0 is FAULT) and ignores
        // one with another weight, as lb-node does.
        let mut owners = Vec::new();
        for (i, vi) in self.cfg.vrrp_instances.iter().enumerate() {
            if vi.priority != 255 {
                continue;
            }
            for (j, t) in vi.track_file.iter().enumerate() {
                let own = self.cfg.track_files.iter().find(|f| f.name == t.file);
                match t.weight.or(own.map(|f| f.weight)) {
                    Some(0) | None => {}
                    Some(w) => owners.push((
                        format!("vrrp_instance[{i}].track_file[{j}]"),
                        vi.name.clone(),
                        w,
                    )),
                }
            }
        }
        for (path, vi, w) in owners {
            if let Some(l) = self.o.locate(&path) {
                let what = if w == 1 {
                    "this track_file counts with weight 0 (any value but 0 is FAULT), as in keepalived"
                } else {
                    "this weighted track_file is ignored, as keepalived ignores it (weight 0 would make any value but 0 FAULT)"
                };
                self.d.warn(
                    &l,
                    format!("vrrp_instance {vi} is an address owner (priority 255), whose priority never changes: {what}"),
                );
            }
        }
        for (path, vi, g) in warnings {
            if let Some(l) = self.o.locate(&path) {
                self.d.warn(
                    &l,
                    format!("vrrp_instance {vi} is in vrrp_sync_group {g}, which has no `sync_group_tracking_weight`: keepalived would ignore this weight (or this track); lb-node applies it, as keepalived does with sync_group_tracking_weight. A lower priority moves a sync group only when every member on the peer wants to take over (keepalived's rule), so this track alone will not fail the group over: weight 0 (FAULT) does"),
                );
            }
        }
    }

    fn vrrp_track_process(&mut self, s: &Stmt) {
        let i = self.cfg.vrrp_track_processes.len();
        let p = format!("vrrp_track_process[{i}]");
        let Some(name) = self.name(s) else { return };
        self.record(&p, &s.keyword.location);
        self.record(&format!("{p}.name"), &name.location);
        let mut t = VrrpTrackProcess {
            name: name.text.clone(),
            process: String::new(),
            params: Vec::new(),
            param_match: None,
            full_command: false,
            quorum: None,
            quorum_max: None,
            fork_delay: Duration::ZERO,
            terminate_delay: Duration::ZERO,
            // keepalived's code (`alloc_vrrp_process` leaves it 0; its man page says 1): a
            // process lost faults the instance.
            weight: 0,
            reverse: false,
        };
        let mut has_process = false;
        for st in self.section(s) {
            self.no_block(st);
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                // `process NAME [PARAM…]`: parameters mean the command line is compared.
                "process" => {
                    if let Some(first) = self.command_word(st, &fp) {
                        t.process = first.text.clone();
                        t.params = st.args[1..].iter().map(|a| a.text.clone()).collect();
                        has_process = true;
                    }
                }
                "param_match" => {
                    self.record(&fp, &st.keyword.location);
                    t.param_match = match st.args.first().map(|a| (a, a.text.as_str())) {
                        None => Some(ParamMatch::Exact),
                        Some((_, "initial")) => Some(ParamMatch::Initial),
                        Some((_, "partial")) => Some(ParamMatch::Partial),
                        Some((a, other)) => {
                            self.d.error(
                                &a.location,
                                format!("param_match takes `initial`, `partial` or nothing, not {other:?}"),
                            );
                            None
                        }
                    };
                }
                "full_command" => t.full_command = self.bare_flag(st, &fp),
                "weight" => {
                    let (w, reverse) = self.weight_reverse(st, &fp, -254, 254);
                    t.weight = w.unwrap_or(0);
                    t.reverse = reverse;
                }
                "quorum" => {
                    let q = self.get(st, &fp, int(kw, 1, 65_535)).unwrap_or(1);
                    // After a `quorum_max 0`, keepalived keeps the quorum at 0.
                    t.quorum = Some(if t.quorum_max == Some(0) { 0 } else { q });
                }
                "quorum_max" => {
                    t.quorum_max = self.get(st, &fp, int(kw, 0, 65_535));
                    // keepalived (`vrrp_tprocess_quorum_max_handler`): quorum_max 0 makes
                    // the quorum 0 (healthy while none runs), whatever `quorum` said.
                    if t.quorum_max == Some(0) {
                        t.quorum = Some(0);
                    }
                }
                "fork_delay" => {
                    t.fork_delay = self.get(st, &fp, duration(kw)).unwrap_or_default();
                }
                "terminate_delay" => {
                    t.terminate_delay = self.get(st, &fp, duration(kw)).unwrap_or_default();
                }
                "delay" => {
                    let d = self.get(st, &fp, duration(kw)).unwrap_or_default();
                    t.fork_delay = d;
                    t.terminate_delay = d;
                }
                _ => self.unknown(st, "vrrp_track_process"),
            }
        }
        if !has_process {
            self.d.error(
                &s.keyword.location,
                format!("vrrp_track_process {} has no `process`", t.name),
            );
            self.o.poison(format!("{p}.process"));
        }
        self.cfg.vrrp_track_processes.push(t);
    }

    fn track_file(&mut self, s: &Stmt) {
        let i = self.cfg.track_files.len();
        let p = format!("track_file[{i}]");
        let Some(name) = self.name(s) else { return };
        self.record(&p, &s.keyword.location);
        self.record(&format!("{p}.name"), &name.location);
        let mut t = VrrpTrackFile {
            name: name.text.clone(),
            file: PathBuf::new(),
            weight: 1,
            reverse: false,
            init_file: None,
            init_overwrite: false,
        };
        let mut has_file = false;
        for st in self.section(s) {
            self.no_block(st);
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "file" => {
                    if let Some(f) = self.value(st, &fp) {
                        t.file = PathBuf::from(&f.text);
                        has_file = true;
                    }
                }
                "weight" => {
                    let (w, reverse) = self.weight_reverse(st, &fp, -2_147_483_647, 2_147_483_647);
                    t.weight = w.unwrap_or(1);
                    t.reverse = reverse;
                }
                // `init_file [VALUE] [overwrite]`.
                "init_file" => {
                    self.record(&fp, &st.keyword.location);
                    let mut value = 0;
                    for a in &st.args {
                        if a.text == "overwrite" {
                            t.init_overwrite = true;
                        } else {
                            match int::<i64>(kw, -2_147_483_647, 2_147_483_647)(&a.text) {
                                Ok(v) => value = v,
                                Err(m) => self.d.error(&a.location, m),
                            }
                        }
                    }
                    t.init_file = Some(value);
                }
                _ => self.unknown(st, "track_file"),
            }
        }
        if !has_file {
            self.d.error(
                &s.keyword.location,
                format!("track_file {} has no `file`", t.name),
            );
            self.o.poison(format!("{p}.file"));
        }
        self.cfg.track_files.push(t);
    }

    /// `garp_group { garp_interval S  gna_interval S  interface IF  interfaces { IF … } }`
    /// (keepalived vrrp_parser.c `garp_group_*_handler`). As keepalived: an interface
    /// already in a group stays in that one (warned, ignored here); a group without either
    /// interval is removed (warned); the intervals are decimal seconds to the microsecond,
    /// 0 to 2147.483647 (an invalid one is an error here, where keepalived ignores it).
    fn garp_group(&mut self, s: &Stmt) {
        let i = self.cfg.garp_groups.len();
        let p = format!("garp_group[{i}]");
        self.record(&p, &s.keyword.location);
        let b = self.block(s);
        // `interface` may be given more than once (each line adds one).
        let single: Vec<Stmt> = b
            .iter()
            .filter(|st| st.keyword.text != "interface")
            .cloned()
            .collect();
        self.warn_repeats(&single);
        let mut g = GarpGroup {
            interfaces: Vec::new(),
            garp_interval: None,
            gna_interval: None,
        };
        for st in b {
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "garp_interval" | "gna_interval" => {
                    self.no_block(st);
                    let d = self.get(st, &fp, |v| {
                        let d = parse_fine_duration(v).map_err(|_| {
                            format!("garp_group {kw} {v:?} is not a number of seconds")
                        })?;
                        if d > MAX_GARP_GROUP_INTERVAL {
                            return Err(format!(
                                "garp_group {kw} {v} is out of range 0..=2147.483647 s"
                            ));
                        }
                        Ok(d)
                    });
                    if d.is_some() {
                        if kw == "garp_interval" {
                            g.garp_interval = d;
                        } else {
                            g.gna_interval = d;
                        }
                    }
                }
                "interface" => {
                    self.no_block(st);
                    if st.args.is_empty() {
                        self.d
                            .error(&st.keyword.location, "`interface` needs an interface name");
                    }
                    for (j, t) in st.args.iter().enumerate() {
                        if j > 0 {
                            self.d.warn(
                                &t.location,
                                format!("extra argument {:?} ignored: one interface per `interface` line, or an `interfaces {{ … }}` block", t.text),
                            );
                            break;
                        }
                        self.garp_group_interface(&mut g, &p, t);
                    }
                }
                "interfaces" => {
                    let names = self.block(st);
                    if names.is_empty() && st.block.is_some() {
                        self.d
                            .warn(&st.keyword.location, "empty garp_group interfaces block");
                    }
                    for m in names {
                        for t in std::iter::once(&m.keyword).chain(&m.args) {
                            self.garp_group_interface(&mut g, &p, t);
                        }
                    }
                }
                _ => self.unknown(st, "garp_group"),
            }
        }
        if g.garp_interval.is_none() && g.gna_interval.is_none() {
            self.d.warn(
                &s.keyword.location,
                "garp_group without garp_interval or gna_interval: removed, as keepalived removes it",
            );
            return;
        }
        if g.interfaces.is_empty() {
            self.d.warn(
                &s.keyword.location,
                "garp_group names no interface: it spaces nothing, removed",
            );
            return;
        }
        self.cfg.garp_groups.push(g);
    }

    /// keepalived ignores a `garp_group` interface that is a VMAC ("Cannot specify
    /// garp_delay on a vmac - ignoring"): dropped here with a warning once the instances'
    /// VMAC names are known, and a group left without interfaces with it (TOML refuses
    /// both). The locations of what stays follow it to its new place in the model.
    fn drop_vmac_garp_interfaces(&mut self) {
        let vmacs: HashSet<String> = self.cfg.vmac_names().into_iter().flatten().collect();
        if vmacs.is_empty() || self.cfg.garp_groups.is_empty() {
            return;
        }
        let groups = std::mem::take(&mut self.cfg.garp_groups);
        for (i, mut g) in groups.into_iter().enumerate() {
            let old = format!("garp_group[{i}]");
            let new = format!("garp_group[{}]", self.cfg.garp_groups.len());
            let names = std::mem::take(&mut g.interfaces);
            for (j, name) in names.into_iter().enumerate() {
                let at = self.o.locate(&format!("{old}.interfaces[{j}]"));
                if vmacs.contains(&name) {
                    if let Some(at) = &at {
                        self.d.warn(
                            at,
                            format!("{name} is a VMAC: keepalived ignores it in a garp_group (\"Cannot specify garp_delay on a vmac\"), and so does lb-node; its messages count against its base interface"),
                        );
                    }
                    continue;
                }
                if let Some(at) = at {
                    self.record(&format!("{new}.interfaces[{}]", g.interfaces.len()), &at);
                }
                g.interfaces.push(name);
            }
            if g.interfaces.is_empty() {
                continue;
            }
            if let Some(at) = self.o.locate(&old) {
                self.record(&new, &at);
            }
            self.cfg.garp_groups.push(g);
        }
    }

    /// One interface of the `garp_group` being read (`g`, at `p`): added unless a group
    /// already has it (keepalived: "garp_group already specified for IF - ignoring").
    fn garp_group_interface(&mut self, g: &mut GarpGroup, p: &str, t: &Token) {
        let taken = self
            .cfg
            .garp_groups
            .iter()
            .chain(std::iter::once(&*g))
            .any(|o| o.interfaces.contains(&t.text));
        if taken {
            self.d.warn(
                &t.location,
                format!(
                    "garp_group already given for {}: this one is ignored, as keepalived ignores it",
                    t.text
                ),
            );
            return;
        }
        self.record(
            &format!("{p}.interfaces[{}]", g.interfaces.len()),
            &t.location,
        );
        g.interfaces.push(t.text.clone());
    }

    /// `bfd_instance NAME { … }` (keepalived bfd_parser.c). Intervals are milliseconds
    /// with up to three decimals (microseconds); `ttl` and `hoplimit` are one setting, the
    /// one the neighbour's family uses.
    fn bfd_instance(&mut self, s: &Stmt) {
        let i = self.cfg.bfd_instances.len();
        let p = format!("bfd_instance[{i}]");
        let Some(name) = self.name(s) else { return };
        self.record(&p, &s.keyword.location);
        self.record(&format!("{p}.name"), &name.location);
        let mut b = BfdInstance::new(name.text.clone(), IpAddr::from([0, 0, 0, 0]));
        let mut has_neighbor = false;
        for st in self.section(s) {
            self.no_block(st);
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "neighbor_ip" | "neighbour_ip" => {
                    if let Some(a) = self.get(st, &format!("{p}.neighbor_ip"), ip) {
                        b.neighbor_ip = a;
                        has_neighbor = true;
                    }
                }
                "source_ip" => b.source_ip = self.get(st, &fp, ip),
                "min_rx" => b.min_rx = self.get(st, &fp, bfd_interval(kw)).unwrap_or(b.min_rx),
                "min_tx" => b.min_tx = self.get(st, &fp, bfd_interval(kw)).unwrap_or(b.min_tx),
                "idle_tx" => {
                    b.idle_tx = self.get(st, &fp, bfd_interval(kw)).unwrap_or(b.idle_tx);
                }
                "multiplier" => {
                    b.multiplier = self.get(st, &fp, int(kw, 1, 255)).unwrap_or(b.multiplier);
                }
                "passive" => b.passive = self.bare_flag(st, &fp),
                // One setting in keepalived (`bfd->ttl`), whichever name it is given.
                "ttl" | "hoplimit" => {
                    if let Some(t) = self.get::<u8>(st, &format!("{p}.ttl"), int(kw, 1, 255)) {
                        self.record(&format!("{p}.hoplimit"), &st.keyword.location);
                        b.ttl = t;
                        b.hoplimit = t;
                    }
                }
                // keepalived takes -1..=255; -1, as 255, turns the check off.
                "max_hops" => {
                    b.max_hops = self
                        .get::<i16>(st, &fp, int(kw, -1, 255))
                        .map_or(0, |h| u8::try_from(h).unwrap_or(u8::MAX));
                }
                "weight" => {
                    let (w, reverse) = self.weight_reverse(st, &fp, -253, 253);
                    b.weight = w.unwrap_or(0);
                    b.reverse = reverse;
                }
                "vrrp" => b.vrrp = self.bare_flag(st, &fp),
                "checker" => b.checker = self.bare_flag(st, &fp),
                _ => self.unknown(st, "bfd_instance"),
            }
        }
        if !has_neighbor {
            self.d.error(
                &s.keyword.location,
                format!("bfd_instance {} has no neighbor_ip", b.name),
            );
            self.o.poison(format!("{p}.neighbor_ip"));
        }
        self.cfg.bfd_instances.push(b);
    }

    /// `weight W [reverse]` of a `vrrp_script`, `vrrp_track_process` or `track_file`: the
    /// weight (within `lo..=hi`, `None` with an error where it is wrong) and whether it is
    /// reversed; another second word is an error.
    fn weight_reverse(&mut self, st: &Stmt, path: &str, lo: i64, hi: i64) -> (Option<i32>, bool) {
        let reverse = st.args.get(1).is_some_and(|r| r.text == "reverse");
        if let Some(x) = st.args.get(1).filter(|r| r.text != "reverse") {
            self.d.error(
                &x.location,
                format!(
                    "`weight` takes a number and an optional `reverse`, not {:?}",
                    x.text
                ),
            );
        }
        let first = Stmt {
            keyword: st.keyword.clone(),
            args: st.args.iter().take(1).cloned().collect(),
            block: None,
        };
        (self.get(&first, path, int("weight", lo, hi)), reverse)
    }

    /// `name [weight N]` entries of a `track_*` block, recorded at `path[first]`,
    /// `path[first + 1]`, … (`first`: the entries earlier blocks of the same keyword gave).
    fn tracked(&mut self, s: &Stmt, path: &str, first: usize) -> Vec<(String, Option<i32>)> {
        self.tracked_reversible(s, path, first, false)
            .into_iter()
            .map(|(n, w, _)| (n, w))
            .collect()
    }

    /// [`Conv::tracked`] with `weight N reverse|noreverse` when `reversible`
    /// (`track_process`, `track_file`).
    fn tracked_reversible(
        &mut self,
        s: &Stmt,
        path: &str,
        first: usize,
        reversible: bool,
    ) -> Vec<(String, Option<i32>, Option<bool>)> {
        let mut out = Vec::new();
        for (j, st) in (first..).zip(self.block(s)) {
            let ep = format!("{path}[{j}]");
            self.record(&ep, &st.keyword.location);
            let mut weight = None;
            let mut reverse = None;
            let mut args = st.args.iter();
            while let Some(a) = args.next() {
                if a.text == "weight" {
                    match args.next() {
                        Some(v) => {
                            self.record(&format!("{ep}.weight"), &v.location);
                            match int::<i32>("weight", -254, 254)(&v.text) {
                                // keepalived (`alloc_track_if`, `alloc_track_script`):
                                // "cannot be +/-254. Setting to +/-253".
                                Ok(w @ (254 | -254))
                                    if matches!(
                                        s.keyword.text.as_str(),
                                        "track_interface" | "track_script"
                                    ) =>
                                {
                                    self.d.warn(
                                        &v.location,
                                        format!("weight {w} is {}, as keepalived sets it (±254 is not allowed here)", w.signum() * 253),
                                    );
                                    weight = Some(w.signum() * 253);
                                }
                                Ok(w) => weight = Some(w),
                                Err(m) => self.d.error(&v.location, m),
                            }
                        }
                        None => self.d.error(&a.location, "`weight` needs a value"),
                    }
                } else if reversible
                    && matches!(a.text.as_str(), "reverse" | "noreverse" | "no_reverse")
                {
                    reverse = Some(a.text == "reverse");
                } else if a.text == "reverse" {
                    self.d.error(
                        &a.location,
                        format!("`weight … reverse` is not supported in `{}` (keepalived applies the weight to the opposite state)", s.keyword.text),
                    );
                } else {
                    self.d
                        .warn(&a.location, format!("unknown option {:?} ignored", a.text));
                }
            }
            out.push((st.keyword.text.clone(), weight, reverse));
        }
        out
    }

    fn vrrp_instance(&mut self, s: &Stmt) {
        let i = self.cfg.vrrp_instances.len();
        let p = format!("vrrp_instance[{i}]");
        let Some(name) = self.name(s) else { return };
        self.record(&p, &s.keyword.location);
        self.record(&format!("{p}.name"), &name.location);
        let mut vi = VrrpInstance::new(name.text.clone(), "", 0);
        let mut version_set = false;
        let mut strict_mode = None;
        let mut has_interface = false;
        let mut has_vrid = false;
        for st in self.section(s) {
            let kw = st.keyword.text.as_str();
            if !matches!(
                kw,
                "authentication"
                    | "virtual_ipaddress"
                    | "virtual_ipaddress_excluded"
                    | "unicast_peer"
                    | "track_interface"
                    | "track_script"
                    | "track_service"
                    | "track_process"
                    | "track_file"
                    | "track_bfd"
                    | "virtual_routes"
                    | "virtual_rules"
            ) {
                self.no_block(st);
            }
            let fp = format!("{p}.{kw}");
            match kw {
                // keepalived's `vrrp_state_handler`: exactly MASTER or BACKUP; anything else
                // (`master`) is BACKUP with an error, and a BACKUP after a MASTER is ignored.
                "state" => {
                    if let Some(t) = self.value(st, &fp) {
                        let (text, at) = (t.text.clone(), t.location.clone());
                        match text.as_str() {
                            "MASTER" => vi.state = InitialState::Master,
                            "BACKUP" if vi.state == InitialState::Master => self.d.warn(
                                &at,
                                "state previously set as MASTER: BACKUP ignored, as keepalived ignores it",
                            ),
                            "BACKUP" => vi.state = InitialState::Backup,
                            other => {
                                self.d.warn(
                                    &at,
                                    format!("unknown state {other:?} (MASTER or BACKUP, in capitals): BACKUP, as keepalived defaults it"),
                                );
                                vi.state = InitialState::Backup;
                            }
                        }
                    }
                }
                "interface" => {
                    has_interface = true;
                    match self.value(st, &fp) {
                        Some(t) => vi.interface = t.text.clone(),
                        None => self.o.poison(fp),
                    }
                }
                "virtual_router_id" => {
                    has_vrid = true;
                    vi.virtual_router_id = self.get(st, &fp, int(kw, 1, 255)).unwrap_or(1);
                }
                "priority" => vi.priority = self.get(st, &fp, int(kw, 1, 255)).unwrap_or(100),
                "advert_int" => {
                    // keepalived (`vrrp_adv_handler`): outside 0.01..=255 s "not valid! …
                    // ignoring": the default (1 s) stays.
                    match self.value(st, &fp).map(|t| (duration(kw)(&t.text), t.location.clone())) {
                        Some((Ok(d), _))
                            if (Duration::from_millis(10)..=Duration::from_secs(255))
                                .contains(&d) =>
                        {
                            vi.advert_int = d;
                        }
                        Some((Ok(d), at)) => self.d.warn(
                            &at,
                            format!(
                                "advert_int {d:?} is outside 0.01..=255 s: ignored, {:?} used, as keepalived ignores it",
                                vi.advert_int
                            ),
                        ),
                        Some((Err(m), at)) => {
                            self.d.error(&at, m);
                            self.o.poison(&fp);
                        }
                        None => self.o.poison(&fp),
                    }
                }
                "version" => {
                    vi.version = self.get(st, &fp, int(kw, 2, 3)).unwrap_or(2);
                    version_set = true;
                }
                "authentication" => vi.authentication = self.authentication(st, &fp),
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    // Excluded addresses follow the instance's state but are never
                    // advertised (keepalived).
                    let list = if kw == "virtual_ipaddress" {
                        &mut vi.virtual_ipaddress
                    } else {
                        &mut vi.virtual_ipaddress_excluded
                    };
                    self.record(&format!("{p}.{kw}"), &st.keyword.location);
                    for a in self.block(st) {
                        let j = list.len();
                        match self.vip(a, &format!("{p}.{kw}[{j}]")) {
                            Some(vip) => list.push(vip),
                            None => self.o.poison(format!("{p}.{kw}")),
                        }
                    }
                }
                "unicast_src_ip" | "mcast_src_ip" => {
                    vi.unicast_src_ip = self.get(st, &format!("{p}.unicast_src_ip"), ip);
                }
                "mcast_dst_ip" => vi.mcast_dst_ip = self.get(st, &fp, ip),
                "down_timer_adverts" => {
                    vi.down_timer_adverts = self.get(st, &fp, int(kw, 1, 100)).unwrap_or(3);
                }
                "unicast_peer" => {
                    for a in self.block(st) {
                        let j = vi.unicast_peer.len();
                        let pp = format!("{p}.unicast_peer[{j}]");
                        self.record(&pp, &a.keyword.location);
                        if let Some(x) = a.args.first() {
                            self.d.warn(
                                &x.location,
                                format!("unicast_peer option {:?} ignored", x.text),
                            );
                        }
                        match ip(&a.keyword.text) {
                            Ok(addr) => vi.unicast_peer.push(addr),
                            Err(m) => self.d.error(&a.keyword.location, m),
                        }
                    }
                }
                "nopreempt" => vi.nopreempt = self.bare_flag(st, &fp),
                "preempt" => {
                    self.bare_flag(st, &fp);
                    vi.nopreempt = false;
                }
                "preempt_delay" => {
                    vi.preempt_delay = self.get(st, &fp, duration(kw)).unwrap_or_default();
                    // keepalived (`vrrp_preempt_delay_handler`): at most 1000 s, else 0.
                    if vi.preempt_delay > Duration::from_secs(1000) {
                        if let Some(a) = st.args.first() {
                            self.d.warn(
                                &a.location,
                                "preempt_delay above 1000 s: 0 used, as keepalived uses it",
                            );
                        }
                        vi.preempt_delay = Duration::ZERO;
                    }
                }
                "accept" => vi.accept = self.bare_flag(st, &fp),
                // keepalived 2.2.7 (`vrrp_skip_check_adv_addr_handler`) sets it for any valid
                // value, `off` included.
                "skip_check_adv_addr" => vi.skip_check_adv_addr = self.on_if_valid(st, &fp),
                // Recorded as the model's field, so findings on `accept` point here.
                "no_accept" => vi.accept = !self.bare_flag(st, &format!("{p}.accept")),
                "garp_master_delay" => {
                    self.whole_seconds(st);
                    vi.garp_master_delay = self
                        .get(st, &fp, duration(kw))
                        .unwrap_or(vi.garp_master_delay);
                }
                "garp_master_repeat" => {
                    vi.garp_master_repeat = self.get(st, &fp, int(kw, 0, 255)).unwrap_or(5);
                    // keepalived (`vrrp_garp_rep_handler`): 0 is 1, with an error.
                    if vi.garp_master_repeat == 0 {
                        if let Some(a) = st.args.first() {
                            self.d.warn(&a.location, "garp_master_repeat 0: 1 used, as keepalived uses it");
                        }
                        vi.garp_master_repeat = 1;
                    }
                }
                "garp_master_refresh" => {
                    self.whole_seconds(st);
                    vi.garp_master_refresh = self.get(st, &fp, duration(kw));
                }
                "garp_master_refresh_repeat" => {
                    vi.garp_master_refresh_repeat = self.get(st, &fp, int(kw, 1, 255)).unwrap_or(1);
                }
                "garp_lower_prio_repeat" => {
                    vi.garp_lower_prio_repeat = self.get(st, &fp, int(kw, 0, 255)).unwrap_or(5);
                }
                "garp_lower_prio_delay" => {
                    self.whole_seconds(st);
                    vi.garp_lower_prio_delay = self
                        .get(st, &fp, duration(kw))
                        .unwrap_or(vi.garp_lower_prio_delay);
                }
                "lower_prio_no_advert" => vi.lower_prio_no_advert = self.flag(st, &fp),
                "higher_prio_send_advert" => vi.higher_prio_send_advert = self.flag(st, &fp),
                "unicast_ttl" => {
                    vi.unicast_ttl = self.get(st, &fp, int(kw, 1, 255)).unwrap_or(255);
                }
                // What lb-node always does: adverts from a source not in unicast_peer are
                // dropped (and counted).
                "check_unicast_src" => {
                    self.flag(st, &fp);
                }
                "strict_mode" => strict_mode = Some(self.flag(st, &fp)),
                "track_interface" => {
                    let first = vi.track_interface.len();
                    for (interface, weight, reverse) in
                        self.tracked_reversible(st, &fp, first, true)
                    {
                        vi.track_interface.push(TrackInterface {
                            interface,
                            weight: weight.unwrap_or(0),
                            reverse: reverse.unwrap_or(false),
                        });
                    }
                }
                "track_script" => {
                    let first = vi.track_script.len();
                    for (script, weight, reverse) in self.tracked_reversible(st, &fp, first, true) {
                        vi.track_script.push(TrackScript {
                            script,
                            weight,
                            reverse,
                        });
                    }
                }
                "track_service" => {
                    let first = vi.track_service.len();
                    for (virtual_server, weight) in self.tracked(st, &fp, first) {
                        vi.track_service.push(TrackService {
                            virtual_server,
                            weight,
                        });
                    }
                }
                "track_process" => {
                    let first = vi.track_process.len();
                    for (process, weight, reverse) in self.tracked_reversible(st, &fp, first, true)
                    {
                        vi.track_process.push(TrackProcessRef {
                            process,
                            weight,
                            reverse,
                        });
                    }
                }
                "track_file" => {
                    let first = vi.track_file.len();
                    for (file, weight, reverse) in self.tracked_reversible(st, &fp, first, true) {
                        vi.track_file.push(TrackFileRef {
                            file,
                            weight,
                            reverse,
                        });
                    }
                }
                "track_bfd" => {
                    let first = vi.track_bfd.len();
                    for (bfd, weight, reverse) in self.tracked_reversible(st, &fp, first, true) {
                        vi.track_bfd.push(TrackBfdRef {
                            bfd,
                            weight,
                            reverse,
                        });
                    }
                }
                "notify_master" => self.first_notify(&mut vi.notify_master, st, &fp),
                "notify_master_rx_lower_pri" => {
                    self.first_notify(&mut vi.notify_master_rx_lower_pri, st, &fp)
                }
                "notify_priority_changes" => vi.notify_priority_changes = self.flag(st, &fp),
                "notify_backup" => self.first_notify(&mut vi.notify_backup, st, &fp),
                "notify_fault" => self.first_notify(&mut vi.notify_fault, st, &fp),
                "notify_stop" => self.first_notify(&mut vi.notify_stop, st, &fp),
                "notify" => self.first_notify(&mut vi.notify, st, &fp),
                "dont_track_primary" => vi.dont_track_primary = self.bare_flag(st, &fp),
                "virtual_routes" => {
                    let first = vi.virtual_routes.len();
                    let routes = self.routes(st, &fp, first);
                    vi.virtual_routes.extend(routes);
                }
                "virtual_rules" => {
                    let first = vi.virtual_rules.len();
                    let rules = self.rules(st, &fp, first);
                    vi.virtual_rules.extend(rules);
                }
                "smtp_alert" | "debug"
                | "kernel_rx_buf_size"
                | "linkbeat_use_polling"
                | "lvs_sync_daemon_interface" => self.ignored(st, "vrrp_instance"),
                // keepalived's handler reads no argument.
                "track_src_ip" => vi.track_src_ip = self.bare_flag(st, &fp),
                "promote_secondaries" => vi.promote_secondaries = self.bare_flag(st, &fp),
                // keepalived: a second one is ignored (`warn_repeats`); with no
                // argument, DELETED without a script of its own.
                "notify_deleted" => {
                    if vi.notify_deleted == NotifyDeleted::Fault {
                        vi.notify_deleted = NotifyDeleted::Deleted(if st.args.is_empty() {
                            None
                        } else {
                            self.notify_script(st, &fp)
                        });
                    }
                }
                "garp_extra_if" | "vmac_garp_intvl" => self.ignored_unlike_keepalived(
                    st,
                    "vrrp_instance",
                    "gratuitous ARPs go out of the VIPs' own interfaces only",
                ),
                "old_unicast_checksum" => self.ignored_unlike_keepalived(
                    st,
                    "vrrp_instance",
                    "VRRPv3 unicast adverts carry RFC 5798's checksum (keepalived before 1.3.8 computed another; such peers drop them)",
                ),
                "unicast_fault_no_peer" => self.ignored_unlike_keepalived(
                    st,
                    "vrrp_instance",
                    "an instance without unicast_peer sends multicast",
                ),
                kw @ ("use_vmac_addr" | "use_ipvlan" | "vrf") => self.d.error(
                    &st.keyword.location,
                    format!("`{kw}` is not supported by lb-node"),
                ),
                // `use_vmac [NAME] [MAC]`: an argument with ':' is the MAC (keepalived).
                "use_vmac" => {
                    vi.use_vmac = true;
                    self.record(&fp, &st.keyword.location);
                    self.record(&format!("{p}.vmac_name"), &st.keyword.location);
                    self.record(&format!("{p}.vmac_address"), &st.keyword.location);
                    for a in &st.args {
                        let (slot, key) = if a.text.contains(':') {
                            (&mut vi.vmac_address, "vmac_address")
                        } else {
                            (&mut vi.vmac_name, "vmac_name")
                        };
                        if slot.is_some() {
                            self.d
                                .warn(&a.location, format!("extra argument {:?} ignored", a.text));
                            continue;
                        }
                        *slot = Some(a.text.clone());
                        self.record(&format!("{p}.{key}"), &a.location);
                    }
                }
                "vmac_xmit_base" => vi.vmac_xmit_base = self.bare_flag(st, &fp),
                "native_ipv6" => self.d.error(
                    &st.keyword.location,
                    format!("`{kw}` is not supported by lb-node"),
                ),
                _ => self.unknown(st, "vrrp_instance"),
            }
        }
        if vi.promote_secondaries && vi.use_vmac {
            self.d.warn(
                &s.keyword.location,
                format!(
                    "vrrp_instance {}: promote_secondaries with use_vmac, ignored (keepalived: automatically set for vmacs)",
                    vi.name
                ),
            );
            vi.promote_secondaries = false;
        }
        // keepalived clears it, with a message.
        if vi.vmac_xmit_base && !vi.use_vmac {
            self.d.warn(
                &s.keyword.location,
                format!(
                    "vrrp_instance {}: vmac_xmit_base without use_vmac, ignored (as keepalived)",
                    vi.name
                ),
            );
            vi.vmac_xmit_base = false;
        }
        // keepalived: "unicast with use_vmac requires vmac_xmit_base - setting".
        if vi.use_vmac && !vi.unicast_peer.is_empty() && !vi.vmac_xmit_base {
            self.d.warn(
                &s.keyword.location,
                format!(
                    "vrrp_instance {}: use_vmac with unicast_peer needs vmac_xmit_base, set (as keepalived)",
                    vi.name
                ),
            );
            vi.vmac_xmit_base = true;
        }
        if !has_interface {
            self.d.error(
                &s.keyword.location,
                format!("vrrp_instance {} has no `interface`", vi.name),
            );
            self.o.poison(format!("{p}.interface"));
        }
        if !has_vrid {
            self.d.error(
                &s.keyword.location,
                format!("vrrp_instance {} has no `virtual_router_id`", vi.name),
            );
            vi.virtual_router_id = 1;
            self.o.poison(format!("{p}.virtual_router_id"));
        }
        self.cfg.vrrp_instances.push(vi);
        self.version_set.push(version_set);
        self.strict_mode.push(strict_mode);
        let keywords = s
            .block
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|st| st.keyword.text.clone())
            .collect();
        self.instance_keywords.push(keywords);
    }

    fn authentication(&mut self, s: &Stmt, p: &str) -> Option<Authentication> {
        self.record(p, &s.keyword.location);
        let mut pass = None;
        let mut ok_type = false;
        let mut type_written = false;
        for st in self.section(s) {
            self.no_block(st);
            match st.keyword.text.as_str() {
                "auth_type" => {
                    type_written = true;
                    ok_type = self
                        .get(st, &format!("{p}.auth_type"), |v| match v {
                            "PASS" => Ok(true),
                            "AH" => Err(
                                "auth_type AH is not supported (use PASS, or no authentication)"
                                    .into(),
                            ),
                            _ => Err(format!("unknown auth_type {v:?} (expected PASS)")),
                        })
                        .unwrap_or(false);
                }
                "auth_pass" => {
                    pass = self
                        .value(st, &format!("{p}.auth_pass"))
                        .map(|t| (t.text.clone(), t.location.clone()))
                        .map(|(mut text, at)| {
                            // keepalived (`vrrp_auth_pass_handler`) keeps the first 8 bytes.
                            if text.len() > 8 && !text.is_char_boundary(8) {
                                // Its 8 bytes end inside a character: the password would
                                // not be the one a keepalived peer sends.
                                self.d.error(
                                    &at,
                                    "auth_pass: keepalived sends its first 8 bytes, which end inside a non-ASCII character here; write a password whose 8th byte ends a character",
                                );
                                self.o.poison(format!("{p}.auth_pass"));
                            } else if text.len() > 8 {
                                text.truncate(8);
                                self.d.warn(
                                    &at,
                                    format!("auth_pass longer than 8 bytes: {text:?} used, as keepalived truncates it"),
                                );
                            }
                            text
                        });
                }
                _ => self.unknown(st, "authentication"),
            }
        }
        match (ok_type, pass) {
            (true, Some(auth_pass)) => Some(Authentication {
                auth_type: AuthType::Pass,
                auth_pass,
            }),
            (true, None) => {
                self.d
                    .error(&s.keyword.location, "authentication has no auth_pass");
                None
            }
            (false, pass) if !type_written => {
                // keepalived 2.2.7 -d: "Authentication type = none", without a word.
                self.d.warn(
                    &s.keyword.location,
                    if pass.is_some() {
                        "authentication has auth_pass but no auth_type: no authentication, as in keepalived (write auth_type PASS to use the password)"
                    } else {
                        "authentication has no auth_type: no authentication, as in keepalived"
                    },
                );
                None
            }
            _ => None,
        }
    }

    fn vip(&mut self, s: &Stmt, path: &str) -> Option<VirtualIp> {
        self.no_block(s);
        self.record(path, &s.keyword.location);
        let mut words = vec![s.keyword.text.clone()];
        let mut args = s.args.iter();
        while let Some(a) = args.next() {
            match a.text.as_str() {
                "brd" | "broadcast" | "scope" | "preferred_lft" | "valid_lft" => {
                    self.d.warn(
                        &a.location,
                        format!("virtual address option `{}` ignored", a.text),
                    );
                    args.next();
                }
                "no_track" | "home" | "-nodad" | "nodad" | "noprefixroute" | "autojoin" => {
                    self.d.warn(
                        &a.location,
                        format!("virtual address option `{}` ignored", a.text),
                    );
                }
                _ => words.push(a.text.clone()),
            }
        }
        match words.join(" ").parse::<VirtualIp>() {
            Ok(v) => Some(v),
            Err(m) => {
                self.d.error(&s.keyword.location, m);
                None
            }
        }
    }

    /// keepalived 2.2.7's route and rule parsers skip the word after `inet` / `inet6` (they
    /// step over it twice): the same line means something else there, or is refused.
    fn inet_skip_warning(&mut self, line: &Stmt) {
        let words: Vec<&Token> = std::iter::once(&line.keyword).chain(&line.args).collect();
        for w in words.windows(2) {
            if matches!(w[0].text.as_str(), "inet" | "inet6") {
                self.d.warn(
                    &w[1].location,
                    format!(
                        "keepalived 2.2.7 skips the word after `{}` ({:?}): lb-node reads it; write the family-free form for both",
                        w[0].text, w[1].text
                    ),
                );
            }
        }
    }

    /// A block of `ip route` / `ip rule` lines in keepalived's syntax (`virtual_routes`,
    /// `static_rules`…): each line parsed as a `T`, recorded at `path[first + j]`, given
    /// to `fix` (keepalived's completions), a bad one an error at its line.
    fn net_lines<T: std::str::FromStr>(
        &mut self,
        st: &Stmt,
        path: &str,
        first: usize,
        mut fix: impl FnMut(&mut Self, &Location, &mut T),
    ) -> Vec<T>
    where
        T::Err: std::fmt::Display,
    {
        self.record(path, &st.keyword.location);
        let mut out = Vec::new();
        for a in self.block(st) {
            self.no_block(a);
            self.record(
                &format!("{path}[{}]", first + out.len()),
                &a.keyword.location,
            );
            self.inet_skip_warning(a);
            let text = std::iter::once(&a.keyword)
                .chain(&a.args)
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            match text.parse::<T>() {
                Ok(mut r) => {
                    fix(self, &a.keyword.location, &mut r);
                    out.push(r);
                }
                Err(e) => {
                    self.d.error(&a.keyword.location, e.to_string());
                    self.o.poison(path);
                }
            }
        }
        out
    }

    /// A `virtual_routes` / `static_routes` block ([`Conv::net_lines`]).
    fn routes(&mut self, st: &Stmt, path: &str, first: usize) -> Vec<VirtualRoute> {
        self.net_lines(st, path, first, |c, at, r: &mut VirtualRoute| {
            // keepalived gives every route without `no_track` its own protocol
            // (alloc_route), whatever is written.
            let keepalived = lb_vrrp::route::RTPROT_KEEPALIVED;
            if !r.no_track && r.protocol != keepalived {
                c.d.warn(
                    at,
                    format!("route protocol {} replaced by keepalived ({keepalived}), as keepalived does for a route without `no_track`", r.protocol),
                );
                r.protocol = keepalived;
            }
        })
    }

    /// A `virtual_rules` / `static_rules` block ([`Conv::net_lines`]); a rule without a
    /// preference gets keepalived's next (16384 down, per family, in file order), warned.
    fn rules(&mut self, st: &Stmt, path: &str, first: usize) -> Vec<VirtualRule> {
        self.net_lines(st, path, first, |c, at, r: &mut VirtualRule| {
            let keepalived = lb_vrrp::route::RTPROT_KEEPALIVED;
            if !r.no_track && r.protocol != Some(keepalived) {
                c.d.warn(
                    at,
                    format!("rule protocol {} replaced by keepalived ({keepalived}), as keepalived does for a rule without `no_track`", r.protocol.unwrap_or_default()),
                );
                r.protocol = Some(keepalived);
            }
            if r.priority.is_none() {
                let next = &mut c.rule_priority[usize::from(r.v6)];
                r.priority = Some(*next);
                c.d.warn(
                    at,
                    format!("rule has no preference: {next}, as keepalived gives it (keepalived: \"probably not what you want\")"),
                );
                *next = next.saturating_sub(1);
            }
        })
    }

    fn sync_group(&mut self, s: &Stmt) {
        let i = self.cfg.sync_groups.len();
        let p = format!("vrrp_sync_group[{i}]");
        let Some(name) = self.name(s) else { return };
        self.record(&p, &s.keyword.location);
        self.record(&format!("{p}.name"), &name.location);
        let mut g = SyncGroup {
            name: name.text.clone(),
            group: Vec::new(),
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            notify_stop: None,
            notify: None,
        };
        let mut tracks = GroupTracks {
            path: p.clone(),
            ..GroupTracks::default()
        };
        // `notify_priority_changes`: its members' default (keepalived).
        let mut group_npc = None;
        for st in self.section(s) {
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "group" => {
                    self.record(&fp, &st.keyword.location);
                    for m in self.block(st) {
                        for t in std::iter::once(&m.keyword).chain(&m.args) {
                            self.record(&format!("{fp}[{}]", g.group.len()), &t.location);
                            g.group.push(t.text.clone());
                        }
                    }
                }
                "notify_master" => self.first_notify(&mut g.notify_master, st, &fp),
                "notify_backup" => self.first_notify(&mut g.notify_backup, st, &fp),
                "notify_fault" => self.first_notify(&mut g.notify_fault, st, &fp),
                "notify" => self.first_notify(&mut g.notify, st, &fp),
                // lb-node always applies the weights of a member's tracks (see
                // warn_sync_group_weights).
                "sync_group_tracking_weight" => {
                    self.no_block(st);
                    self.tracking_weight_groups.insert(g.name.clone());
                }
                "smtp_alert" | "global_tracking" => self.ignored(st, "vrrp_sync_group"),
                "notify_priority_changes" => group_npc = Some(self.flag(st, &fp)),
                "notify_stop" => self.first_notify(&mut g.notify_stop, st, &fp),
                // keepalived tracks these for every member instance: they are copied into
                // each (`apply_group_tracks`), where the members' own rules apply.
                "track_interface" => {
                    let first = tracks.interfaces.len();
                    for (interface, weight, reverse) in
                        self.tracked_reversible(st, &fp, first, true)
                    {
                        tracks.interfaces.push(TrackInterface {
                            interface,
                            weight: weight.unwrap_or(0),
                            reverse: reverse.unwrap_or(false),
                        });
                    }
                }
                "track_script" => {
                    let first = tracks.scripts.len();
                    for (script, weight, reverse) in self.tracked_reversible(st, &fp, first, true) {
                        tracks.scripts.push(TrackScript {
                            script,
                            weight,
                            reverse,
                        });
                    }
                }
                "track_process" => {
                    let first = tracks.processes.len();
                    for (process, weight, reverse) in self.tracked_reversible(st, &fp, first, true)
                    {
                        tracks.processes.push(TrackProcessRef {
                            process,
                            weight,
                            reverse,
                        });
                    }
                }
                "track_file" => {
                    let first = tracks.files.len();
                    for (file, weight, reverse) in self.tracked_reversible(st, &fp, first, true) {
                        tracks.files.push(TrackFileRef {
                            file,
                            weight,
                            reverse,
                        });
                    }
                }
                "track_bfd" => {
                    let first = tracks.bfds.len();
                    for (bfd, weight, reverse) in self.tracked_reversible(st, &fp, first, true) {
                        tracks.bfds.push(TrackBfdRef {
                            bfd,
                            weight,
                            reverse,
                        });
                    }
                }
                _ => self.unknown(st, "vrrp_sync_group"),
            }
        }
        tracks.members.clone_from(&g.group);
        self.group_tracks.push(tracks);
        self.sync_group_npc.push(group_npc);
        self.cfg.sync_groups.push(g);
    }

    /// keepalived (`vrrp_sync_set_group`): a sync group member that names no
    /// `vrrp_instance`, or one already in an earlier group, is ignored with an error
    /// (keepalived runs on): warned about and dropped from the group.
    fn settle_sync_group_members(&mut self) {
        let names: HashSet<String> = self
            .cfg
            .vrrp_instances
            .iter()
            .map(|v| v.name.clone())
            .collect();
        let mut member_of: HashMap<String, String> = HashMap::new();
        for gi in 0..self.cfg.sync_groups.len() {
            let p = format!("vrrp_sync_group[{gi}]");
            let mut j = 0;
            while j < self.cfg.sync_groups[gi].group.len() {
                let g = &self.cfg.sync_groups[gi];
                let m = g.group[j].clone();
                let why = if !names.contains(&m) {
                    Some(format!(
                        "names no vrrp_instance {m:?}: ignored, as keepalived ignores it"
                    ))
                } else {
                    member_of.get(&m).map(|prev| format!("vrrp_instance {m} is already in vrrp_sync_group {prev}: ignored here, as keepalived ignores it"))
                };
                match why {
                    None => {
                        member_of.insert(m, g.name.clone());
                        j += 1;
                    }
                    Some(why) => {
                        let at = format!("{p}.group[{j}]");
                        if let Some(l) = self.o.locate(&at) {
                            self.d.warn(&l, why);
                        }
                        // The members after it move down one place, with their origins.
                        let len = self.cfg.sync_groups[gi].group.len();
                        self.o.remove_index(&format!("{p}.group"), j, len);
                        self.cfg.sync_groups[gi].group.remove(j);
                        let gname = self.cfg.sync_groups[gi].name.clone();
                        for t in &mut self.group_tracks {
                            if t.path == p {
                                t.members
                                    .retain(|x| *x != m || member_of.get(&m) == Some(&gname));
                            }
                        }
                    }
                }
            }
        }
        // A group left without members is removed (keepalived: "has no virtual
        // router(s) - removing"); those after it move down one place, with their origins.
        let mut gi = 0;
        while gi < self.cfg.sync_groups.len() {
            if !self.cfg.sync_groups[gi].group.is_empty() {
                gi += 1;
                continue;
            }
            let p = format!("vrrp_sync_group[{gi}]");
            if let Some(l) = self.o.locate(&p) {
                self.d.warn(
                    &l,
                    format!(
                        "vrrp_sync_group {} has no member left: removed, as keepalived removes it",
                        self.cfg.sync_groups[gi].name
                    ),
                );
            }
            let n = self.cfg.sync_groups.len();
            self.group_tracks.retain(|t| t.path != p);
            self.o.remove_index("vrrp_sync_group", gi, n);
            for k in gi + 1..n {
                let (from, to) = (
                    format!("vrrp_sync_group[{k}]"),
                    format!("vrrp_sync_group[{}]", k - 1),
                );
                for t in &mut self.group_tracks {
                    if t.path == from {
                        t.path = to.clone();
                    }
                }
            }
            self.cfg.sync_groups.remove(gi);
            self.sync_group_npc.remove(gi);
        }
        // `notify_priority_changes` of a group: its members' default, for the members it
        // kept (an instance ignored in a later group keeps its own group's).
        for (g, npc) in self.cfg.sync_groups.iter().zip(&self.sync_group_npc) {
            if let Some(v) = *npc {
                for m in &g.group {
                    self.group_notify_priority_changes.insert(m.clone(), v);
                }
            }
        }
    }

    /// keepalived's sync-group tracking: what a `vrrp_sync_group` tracks, every member
    /// instance tracks (appended to its own `track_*`, with the origins of the group's
    /// lines, so that errors and warnings point there); an instance that tracks the same
    /// object itself takes the group's weight unless its own is 0, with a warning. A
    /// failure with weight 0 faults the member, and with it the group.
    fn apply_group_tracks(&mut self) {
        // The definitions' weights: what an instance's reference without its own counts.
        let script_w: HashMap<String, i32> = self
            .cfg
            .vrrp_scripts
            .iter()
            .map(|s| (s.name.clone(), s.weight))
            .collect();
        let process_w: HashMap<String, i32> = self
            .cfg
            .vrrp_track_processes
            .iter()
            .map(|p| (p.name.clone(), p.weight))
            .collect();
        let file_w: HashMap<String, i32> = self
            .cfg
            .track_files
            .iter()
            .map(|f| (f.name.clone(), f.weight))
            .collect();
        let bfd_w: HashMap<String, i32> = self
            .cfg
            .bfd_instances
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect();
        let mut warnings = Vec::new();
        for mut t in std::mem::take(&mut self.group_tracks) {
            // keepalived (`sync_group_tracking_init`): a group with an address owner
            // (priority 255, which no weight moves) cannot weight its tracks; each weight
            // is cleared, so a failure faults the whole group.
            // (Before `complete_instances`: `state MASTER` without `priority` is the owner.)
            let owner = self
                .cfg
                .vrrp_instances
                .iter()
                .zip(&self.instance_keywords)
                .find(|(vi, kws)| {
                    let written = |k: &str| kws.iter().any(|w| w == k);
                    t.members.contains(&vi.name)
                        && (vi.priority == 255
                            || (!written("priority") && vi.state == InitialState::Master))
                })
                .map(|(vi, _)| vi.name.clone());
            if let Some(owner) = owner {
                let mut clear = |kind: &str, j: usize, w: i32| {
                    if w != 0 {
                        warnings.push((
                            format!("{}.{kind}[{j}]", t.path),
                            format!("weight {w} cleared: member {owner} has priority 255, which no weight moves (keepalived clears it too); a failure faults the group"),
                        ));
                    }
                };
                for (j, x) in t.interfaces.iter_mut().enumerate() {
                    clear("track_interface", j, x.weight);
                    x.weight = 0;
                }
                for (j, x) in t.scripts.iter_mut().enumerate() {
                    clear(
                        "track_script",
                        j,
                        x.weight
                            .or_else(|| script_w.get(&x.script).copied())
                            .unwrap_or(0),
                    );
                    x.weight = Some(0);
                }
                for (j, x) in t.processes.iter_mut().enumerate() {
                    clear(
                        "track_process",
                        j,
                        x.weight
                            .or_else(|| process_w.get(&x.process).copied())
                            .unwrap_or(0),
                    );
                    x.weight = Some(0);
                }
                for (j, x) in t.files.iter_mut().enumerate() {
                    clear(
                        "track_file",
                        j,
                        x.weight
                            .or_else(|| file_w.get(&x.file).copied())
                            .unwrap_or(0),
                    );
                    x.weight = Some(0);
                }
                for (j, x) in t.bfds.iter_mut().enumerate() {
                    clear(
                        "track_bfd",
                        j,
                        x.weight.or_else(|| bfd_w.get(&x.bfd).copied()).unwrap_or(0),
                    );
                    x.weight = Some(0);
                }
            }
            for (k, vi) in self.cfg.vrrp_instances.iter_mut().enumerate() {
                if !t.members.contains(&vi.name) {
                    continue;
                }
                let ip = format!("vrrp_instance[{k}]");
                let mut copies = Vec::new();
                // keepalived (add_vrrp_to_interface, add_vrrp_to_track_script,
                // add_obj_to_track_file): an object the instance tracks itself takes the
                // group's weight, unless the instance's is 0 (a failure faults it).
                let name = vi.name.clone();
                let mut both = |kind: &str, j: usize, own_weight: i32| {
                    let kept = own_weight == 0;
                    warnings.push((
                        format!("{}.{kind}[{j}]", t.path),
                        format!(
                            "also tracked by vrrp_instance {name} itself: {}, as in keepalived",
                            if kept {
                                "its weight 0 stays (a failure faults it)"
                            } else {
                                "the sync group's weight applies"
                            }
                        ),
                    ));
                    kept
                };
                for (j, x) in t.interfaces.iter().enumerate() {
                    match vi
                        .track_interface
                        .iter()
                        .position(|o| o.interface == x.interface)
                    {
                        Some(i) => {
                            if !both("track_interface", j, vi.track_interface[i].weight) {
                                vi.track_interface[i].weight = x.weight;
                                vi.track_interface[i].reverse = x.reverse;
                            }
                        }
                        None => {
                            copies.push(("track_interface", j, vi.track_interface.len()));
                            vi.track_interface.push(x.clone());
                        }
                    }
                }
                for (j, x) in t.scripts.iter().enumerate() {
                    match vi.track_script.iter().position(|o| o.script == x.script) {
                        Some(i) => {
                            let own = vi.track_script[i]
                                .weight
                                .or_else(|| script_w.get(&x.script).copied())
                                .unwrap_or(0);
                            if !both("track_script", j, own) {
                                vi.track_script[i].weight = x.weight;
                                vi.track_script[i].reverse = x.reverse;
                            }
                        }
                        None => {
                            copies.push(("track_script", j, vi.track_script.len()));
                            vi.track_script.push(x.clone());
                        }
                    }
                }
                for (j, x) in t.processes.iter().enumerate() {
                    match vi.track_process.iter().position(|o| o.process == x.process) {
                        Some(i) => {
                            let own = vi.track_process[i]
                                .weight
                                .or_else(|| process_w.get(&x.process).copied())
                                .unwrap_or(0);
                            if !both("track_process", j, own) {
                                vi.track_process[i].weight = x.weight;
                                vi.track_process[i].reverse = x.reverse;
                            }
                        }
                        None => {
                            copies.push(("track_process", j, vi.track_process.len()));
                            vi.track_process.push(x.clone());
                        }
                    }
                }
                for (j, x) in t.files.iter().enumerate() {
                    match vi.track_file.iter().position(|o| o.file == x.file) {
                        Some(i) => {
                            let own = vi.track_file[i]
                                .weight
                                .or_else(|| file_w.get(&x.file).copied())
                                .unwrap_or(0);
                            if !both("track_file", j, own) {
                                vi.track_file[i].weight = x.weight;
                                vi.track_file[i].reverse = x.reverse;
                            }
                        }
                        None => {
                            copies.push(("track_file", j, vi.track_file.len()));
                            vi.track_file.push(x.clone());
                        }
                    }
                }
                for (j, x) in t.bfds.iter().enumerate() {
                    match vi.track_bfd.iter().position(|o| o.bfd == x.bfd) {
                        Some(i) => {
                            let own = vi.track_bfd[i]
                                .weight
                                .or_else(|| bfd_w.get(&x.bfd).copied())
                                .unwrap_or(0);
                            if !both("track_bfd", j, own) {
                                vi.track_bfd[i].weight = x.weight;
                                vi.track_bfd[i].reverse = x.reverse;
                            }
                        }
                        None => {
                            copies.push(("track_bfd", j, vi.track_bfd.len()));
                            vi.track_bfd.push(x.clone());
                        }
                    }
                }
                for (kind, from, to) in copies {
                    let to = format!("{ip}.{kind}[{to}]");
                    self.o.copy(&format!("{}.{kind}[{from}]", t.path), &to);
                    // keepalived applies a group's weights (sync_group_tracking_init) with
                    // or without sync_group_tracking_weight: not one of the members'
                    // weights that warn_sync_group_weights warns about.
                    self.group_copies.insert(to);
                }
            }
        }
        for (path, m) in warnings {
            if let Some(l) = self.o.locate(&path) {
                self.d.warn(&l, m);
            }
        }
    }

    /// `IP PORT` arguments starting at `args[0]`. With `default_port` (a real or sorry
    /// server's: its virtual server's port) the port may be left out or written 0, as
    /// keepalived allows (check_data.c, validate_check_config: a NAT real server without a
    /// port takes the virtual server's).
    fn socket_addr(
        &mut self,
        s: &Stmt,
        path: &str,
        default_port: Option<u16>,
    ) -> Option<SocketAddr> {
        let (Some(a), port) = (s.args.first(), s.args.get(1)) else {
            self.d.error(
                &s.keyword.location,
                format!("`{}` needs an address and a port", s.keyword.text),
            );
            return None;
        };
        let port = match (port, default_port) {
            (Some(p), Some(d)) if !p.text.is_empty() && p.text.bytes().all(|b| b == b'0') => Ok(d),
            (Some(p), _) => Err(p),
            (None, Some(d)) => Ok(d),
            (None, None) => {
                self.d.error(
                    &s.keyword.location,
                    format!("`{}` needs an address and a port", s.keyword.text),
                );
                return None;
            }
        };
        self.record(path, &a.location);
        let addr = match ip(&a.text) {
            Ok(x) => x,
            Err(m) => {
                self.d.error(&a.location, m);
                return None;
            }
        };
        let port = match port {
            Ok(d) => d,
            Err(port) => match int::<u16>("port", 1, 65535)(&port.text) {
                Ok(x) => x,
                Err(m) => {
                    self.d.error(&port.location, m);
                    return None;
                }
            },
        };
        if let Some(x) = s.args.get(2) {
            self.d
                .warn(&x.location, format!("extra argument {:?} ignored", x.text));
        }
        Some(SocketAddr::new(addr, port))
    }

    /// `virtual_server_group NAME { VIP PORT; VIP-LAST PORT; … }`: a range's last part
    /// replaces the address's last octet (IPv4) or last 16-bit group (IPv6, in hex), as
    /// keepalived's. `fwmark` entries need IPVS and are refused.
    fn virtual_server_group(&mut self, s: &Stmt) {
        let Some(name) = self.name(s) else { return };
        let mut members = Vec::new();
        let mut bad_entries = false;
        for st in self.block(s) {
            self.no_block(st);
            let first = &st.keyword;
            if first.text == "fwmark" {
                self.d.error(
                    &first.location,
                    "virtual_server_group `fwmark` entries need IPVS firewall marks, which lb-node does not use: list addresses and ports",
                );
                bad_entries = true;
                continue;
            }
            let Some(port) = st.args.first() else {
                self.d.error(
                    &first.location,
                    "a virtual_server_group entry is `ADDRESS[-LAST] PORT`",
                );
                bad_entries = true;
                continue;
            };
            if let Some(x) = st.args.get(1) {
                self.d
                    .warn(&x.location, format!("extra argument {:?} ignored", x.text));
            }
            let port = match int::<u16>("port", 0, 65535)(&port.text) {
                Ok(0) => {
                    self.d.error(
                        &port.location,
                        "port 0 (keepalived's service on every port, with persistence) is not supported: a proxy listens on given ports; list them",
                    );
                    bad_entries = true;
                    continue;
                }
                Ok(p) => p,
                Err(m) => {
                    self.d.error(&port.location, m);
                    bad_entries = true;
                    continue;
                }
            };
            match address_range(&first.text) {
                Ok(addrs) => members.extend(
                    addrs
                        .into_iter()
                        .map(|a| (SocketAddr::new(a, port), first.location.clone())),
                ),
                Err(m) => {
                    self.d.error(&first.location, m);
                    bad_entries = true;
                }
            }
        }
        if members.is_empty() && !bad_entries {
            self.d.error(
                &s.keyword.location,
                format!("virtual_server_group {} has no address", name.text),
            );
        }
        if self.vs_groups.insert(name.text.clone(), members).is_some() {
            self.d.error(
                &name.location,
                format!("duplicate virtual_server_group {:?}", name.text),
            );
        }
    }

    fn virtual_server(&mut self, s: &Stmt) {
        if let Some(a) = s.args.first() {
            if a.text == "fwmark" {
                self.d.error(
                    &a.location,
                    "`virtual_server fwmark` needs IPVS firewall marks, which lb-node does not use: declare a virtual_server per address and port, or a virtual_server_group",
                );
                return;
            }
        }
        let i = self.cfg.virtual_servers.len();
        let p = format!("virtual_server[{i}]");
        self.record(&p, &s.keyword.location);
        // `virtual_server group NAME`: one virtual server per member, as IPVS has a
        // service per member, each with this block's settings and real servers.
        let members = match s.args.first() {
            Some(a) if a.text == "group" => {
                let Some(g) = s.args.get(1) else {
                    self.d
                        .error(&a.location, "`virtual_server group` needs a group name");
                    self.o.forget(&p);
                    return;
                };
                match self.vs_groups.get(&g.text) {
                    Some(m) if !m.is_empty() => Some(m.clone()),
                    Some(_) => {
                        self.o.forget(&p);
                        return; // its emptiness is reported
                    }
                    None => {
                        self.d.error(
                            &g.location,
                            format!("unknown virtual_server_group {:?}", g.text),
                        );
                        self.o.forget(&p);
                        return;
                    }
                }
            }
            _ => None,
        };
        let listen = match &members {
            Some(m) => {
                self.record(&format!("{p}.listen"), &m[0].1);
                Some(m[0].0)
            }
            None => self.socket_addr(s, &format!("{p}.listen"), None),
        };
        let mut vs = VirtualServer::new(listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 1))));
        vs.name = String::new();
        // keepalived's default scheduler (check_data.c: "no scheduler set, setting default
        // 'wlc'"); TOML's is rr.
        vs.lb_algo = Algorithm::WeightedLeastConnections;
        let mut defaults = CheckDefaults::default();
        let mut protocol_set = false;
        let mut ops_at = None;
        let mut persistence_timeout_set = false;
        let mut granularity_set = false;
        let mut real_servers = Vec::new();
        for st in self.section(s) {
            let kw = st.keyword.text.as_str();
            if kw != "real_server" {
                self.no_block(st);
            }
            let fp = format!("{p}.{kw}");
            match kw {
                "name" => {
                    vs.name = self
                        .value(st, &fp)
                        .map(|t| t.text.clone())
                        .unwrap_or_default();
                }
                "delay_loop" => {
                    if let Some(d) = self.get(st, &fp, duration(kw)) {
                        vs.delay_loop = d;
                    }
                }
                "lb_algo" | "lvs_sched" => {
                    if let Some(a) = self.get(st, &format!("{p}.lb_algo"), parse_algorithm) {
                        // keepalived hands the name to IPVS as written: only IPVS's own
                        // scheduler names, in lower case, are schedulers there.
                        if let Some(t) = st.args.first() {
                            if t.text != a.name() && !IPVS_SCHEDULERS.contains(&t.text.as_str()) {
                                self.d.warn(
                                    &t.location,
                                    format!(
                                        "lb_algo {:?} is not an IPVS scheduler name (keepalived would refuse it and use wlc): lb-node reads it as {}",
                                        t.text,
                                        a.name()
                                    ),
                                );
                            }
                        }
                        vs.lb_algo = a;
                    }
                }
                "lb_kind" | "lvs_method" | "sorry_server_lvs_method" => {
                    self.get(st, &fp, forwarding_method);
                }
                "persistence_timeout" => {
                    persistence_timeout_set = true;
                    vs.persistence_timeout = if st.args.is_empty() {
                        // keepalived pto_handler: no value is IPVS's default, 360 s.
                        self.record(&fp, &st.keyword.location);
                        Some(IPVS_PERSISTENCE_TIMEOUT)
                    } else {
                        self.whole_seconds(st);
                        match self.get(st, &fp, duration(kw)) {
                            // keepalived pto_handler reads 1..: 0 is "persistence_timeout
                            // invalid", skipped, and the virtual server runs without
                            // persistence.
                            Some(d) if d.is_zero() => {
                                persistence_timeout_set = false;
                                self.d.warn(
                                    &st.args[0].location,
                                    "persistence_timeout 0 is invalid: ignored (no persistence), as keepalived ignores it",
                                );
                                None
                            }
                            other => other,
                        }
                    };
                }
                "persistence_granularity" => {
                    granularity_set = true;
                    let v6 = listen.is_some_and(|l| l.is_ipv6());
                    if let Some(g) = self.get(st, &fp, |v| {
                        if v6 {
                            // keepalived pgr_handler: on an IPv6 virtual server, a prefix
                            // length 1..=128.
                            let n: u8 = int(kw, 1, 128)(v)?;
                            Ok(Granularity {
                                v6_prefix: n,
                                ..Granularity::default()
                            })
                        } else {
                            Granularity::parse(v).map_err(|e| e.to_string())
                        }
                    }) {
                        vs.persistence_granularity = g;
                    }
                }
                "protocol" => {
                    protocol_set = true;
                    vs.protocol = self
                        .get(st, &fp, |v| v.parse::<Protocol>())
                        .unwrap_or_default();
                }
                "retries" => vs.retries = self.get(st, &fp, int(kw, 0, 100)).unwrap_or(1),
                "connect_timeout" => {
                    // lb-node's connect timeout to the backends, and (keepalived) the checks'
                    // default.
                    if let Some(d) = self.get(st, &fp, duration(kw)) {
                        vs.connect_timeout = d;
                        defaults.connect_timeout = Some(d);
                    }
                }
                "retry" => defaults.retry = self.retry(st, &fp).or(defaults.retry),
                "warmup" => defaults.warmup = self.get(st, &fp, duration(kw)),
                "delay_before_retry" => {
                    defaults.delay_before_retry = self.get(st, &fp, duration(kw))
                }
                "weight" => {
                    defaults.weight = self
                        .get(st, &fp, |v| {
                            let n: u64 = int(kw, 1, 65535)(v)?;
                            lb_core::Weight::new(n).map_err(|e| e.to_string())
                        })
                        .or(defaults.weight);
                }
                "alpha" => vs.alpha = self.bare_flag(st, &fp),
                // lb extension (HAProxy `option allbackups`), beside `backup` real servers.
                "all_backups" => vs.all_backups = self.bare_flag(st, &fp),
                "ops" => {
                    vs.ops = self.bare_flag(st, &fp);
                    ops_at = Some(st.keyword.location.clone());
                }
                "virtualhost" => {
                    defaults.virtualhost = self.value(st, &fp).map(|t| t.text.clone());
                }
                // After the loop: the virtual server's check defaults apply wherever they are
                // written in the block, and the sorry server comes after the real servers.
                "real_server" | "sorry_server" => real_servers.push(st),
                "inhibit_on_failure" => defaults.inhibit_on_failure = self.bare_flag(st, &fp),
                "quorum" => {
                    vs.quorum = self
                        .get(st, &fp, int(kw, 1, i64::from(u32::MAX)))
                        .unwrap_or(1);
                }
                "hysteresis" => {
                    vs.hysteresis = self
                        .get(st, &fp, int(kw, 0, i64::from(u32::MAX)))
                        .unwrap_or(0);
                }
                "quorum_up" => self.first_notify(&mut vs.quorum_up, st, &fp),
                "quorum_down" => self.first_notify(&mut vs.quorum_down, st, &fp),
                "omega" | "ha_suspend" | "sorry_server_inhibit" | "smtp_alert" => {
                    self.ignored(st, "virtual_server")
                }
                // IPVS scheduler flags (`flag-1`/`flag-2` are sh's and mh's
                // fallback/port, `flag-3` unused).
                "sh-fallback" | "mh-fallback" | "flag-1" => self.ignored_unlike_keepalived(
                    st,
                    "virtual_server",
                    "lb-node's sh and mh always fall back to another real server when the hashed one takes no connection (IPVS does only with this flag)",
                ),
                "sh-port" | "mh-port" | "flag-2" => self.ignored_unlike_keepalived(
                    st,
                    "virtual_server",
                    "IPVS hashes the client's port with its address; lb-node's sh and mh hash the address only, so one client's connections go to one real server",
                ),
                "flag-3" => self.ignored(st, "virtual_server"),
                "persistence_engine" => self.ignored_unlike_keepalived(
                    st,
                    "virtual_server",
                    "IPVS persistence engines (sip: by Call-ID) are not provided; persistence is by client address",
                ),
                "ip_family" => self.ignored_unlike_keepalived(
                    st,
                    "virtual_server",
                    "it applies to fwmark virtual servers, which lb-node does not support; the family is the listen address's",
                ),
                "snmp_name" => self.ignored_unlike_keepalived(
                    st,
                    "virtual_server",
                    "lb-node has no SNMP agent",
                ),
                _ => self.unknown(st, "virtual_server"),
            }
        }
        // keepalived pgr_handler: a granularity alone turns persistence on, for 360 s.
        if granularity_set && !persistence_timeout_set {
            vs.persistence_timeout = Some(IPVS_PERSISTENCE_TIMEOUT);
        }
        // keepalived sets IPVS one-packet scheduling for UDP services only and ignores `ops`
        // elsewhere (ipvswrapper.c); the TOML format refuses it there.
        if let Some(at) = ops_at.filter(|_| vs.ops && vs.protocol != Protocol::Udp) {
            self.d.warn(
                &at,
                format!(
                    "`ops` applies to UDP virtual servers only (keepalived ignores it on {}), ignored",
                    vs.protocol
                ),
            );
            vs.ops = false;
        }
        if !protocol_set && listen.is_some() {
            self.d.warn(
                &s.keyword.location,
                "virtual_server without `protocol`: lb-node uses TCP (keepalived 2.x falls back to UDP); write `protocol TCP` to say so",
            );
        }
        real_servers.sort_by_key(|st| st.keyword.text == "sorry_server");
        // Which backends took the virtual server's port (none written, or 0): a group's
        // members each give theirs.
        let mut port_defaulted = Vec::new();
        for st in real_servers {
            let defaulted = st
                .args
                .get(1)
                .is_none_or(|p| !p.text.is_empty() && p.text.bytes().all(|b| b == b'0'));
            let before = vs.backends.len();
            let j = vs.backends.len();
            let bp = format!("{p}.backend[{j}]");
            if st.keyword.text == "sorry_server" {
                self.record(&bp, &st.keyword.location);
                let vs_port = listen.map(|l| l.port());
                if let Some(addr) = self.socket_addr(st, &format!("{bp}.address"), vs_port) {
                    let mut b = BackendConfig::new(addr);
                    b.backup = true;
                    vs.backends.push(b);
                } else {
                    self.o.forget(&bp);
                }
            } else if let Some(b) =
                self.real_server(st, &bp, defaults.clone(), listen.map(|l| l.port()))
            {
                if listen.is_some_and(|l| l.is_ipv4() != b.address.is_ipv4()) {
                    // keepalived: "Address family of virtual server and real server don't
                    // match - skipping real server".
                    self.d.warn(
                        &st.keyword.location,
                        format!("real server {} is not of the virtual server's address family: skipped, as keepalived skips it", b.address),
                    );
                    self.o.forget(&bp);
                } else if vs
                    .backends
                    .iter()
                    .any(|o| !o.backup && o.address == b.address)
                {
                    // keepalived (`validate_check_config`) removes a second real server of
                    // the same address and port.
                    self.d.warn(
                        &st.keyword.location,
                        format!("real server {} is already in this virtual server: this one is dropped, as keepalived drops it", b.address),
                    );
                    self.o.forget(&bp);
                } else {
                    vs.backends.push(b);
                }
            } else {
                self.o.forget(&bp);
            }
            if vs.backends.len() > before {
                port_defaulted.push(defaulted);
            }
        }
        // keepalived (`validate_check_config`): a virtual server without real servers is
        // ignored (its sorry server alone does not run it).
        if listen.is_some() && !vs.backends.iter().any(|b| !b.backup) {
            self.d.warn(
                &s.keyword.location,
                "virtual server without real servers: ignored, as keepalived ignores it",
            );
            self.o.forget(&p);
            return;
        }
        // keepalived (`validate_check_config`): a quorum above the real servers' total
        // weight could never be reached and is lowered to it; a hysteresis of at least the
        // quorum is lowered to quorum − 1.
        let weight_sum: u64 = vs
            .backends
            .iter()
            .filter(|b| !b.backup)
            .map(|b| u64::from(b.weight.get()))
            .sum();
        if vs.quorum > weight_sum.max(1) {
            self.d.warn(
                &s.keyword.location,
                format!(
                    "quorum {} exceeds the real servers' total weight {weight_sum}: lowered to {}, as keepalived lowers it",
                    vs.quorum,
                    weight_sum.max(1)
                ),
            );
            vs.quorum = weight_sum.max(1);
        }
        if vs.hysteresis >= vs.quorum {
            self.d.warn(
                &s.keyword.location,
                format!(
                    "hysteresis {} is not below quorum {}: set to {}, as keepalived sets it",
                    vs.hysteresis,
                    vs.quorum,
                    vs.quorum - 1
                ),
            );
            vs.hysteresis = vs.quorum - 1;
        }
        if let Some(members) = members {
            if !vs.name.is_empty() {
                self.d.warn(
                    &s.keyword.location,
                    "`name` on a `virtual_server group` is ignored: each member is a virtual server named by its address and port",
                );
                vs.name = String::new();
            }
            let mut seen_sets = HashSet::new();
            let mut seen_backends = HashSet::new();
            for (k, (addr, at)) in members.into_iter().enumerate() {
                let mut m = vs.clone();
                m.listen = addr;
                for (b, _) in m
                    .backends
                    .iter_mut()
                    .zip(&port_defaulted)
                    .filter(|(_, d)| **d)
                {
                    b.address.set_port(addr.port());
                }
                // keepalived runs a block's scripts once per event, not once per member: a
                // real server whose checks an earlier member already runs (the same
                // targets: connect_ip/connect_port, else its address; a MISC_CHECK's
                // program) leaves its scripts to that member, and so does the quorum when
                // an earlier member checks the same. One whose checks reach this member's
                // own port keeps them.
                let keys: Vec<String> = m.backends.iter().map(checked).collect();
                if !seen_sets.insert(keys.clone()) {
                    m.quorum_up = None;
                    m.quorum_down = None;
                }
                for (b, key) in m.backends.iter_mut().zip(keys) {
                    if !seen_backends.insert(key) {
                        b.notify_up = None;
                        b.notify_down = None;
                    }
                }
                let mp = format!("virtual_server[{}]", i + k);
                if k > 0 {
                    self.o.copy(&p, &mp);
                }
                self.record(&format!("{mp}.listen"), &at);
                self.cfg.virtual_servers.push(m);
            }
        } else if listen.is_some() {
            self.cfg.virtual_servers.push(vs);
        } else {
            // Dropped: the next virtual server takes index `i`, and must not inherit this
            // one's locations or reported paths (its own errors would be misplaced or
            // dropped).
            self.o.forget(&p);
        }
    }

    fn real_server(
        &mut self,
        s: &Stmt,
        p: &str,
        vs_defaults: CheckDefaults,
        vs_port: Option<u16>,
    ) -> Option<BackendConfig> {
        self.record(p, &s.keyword.location);
        let addr = self.socket_addr(s, &format!("{p}.address"), vs_port)?;
        let mut b = BackendConfig::new(addr);
        // keepalived rs_inhibit_handler: the real server's own value, either way, wins.
        b.inhibit_on_failure = vs_defaults.inhibit_on_failure;
        // keepalived validate_check_config: a real server without `weight` takes its
        // virtual server's (default 1).
        if let Some(w) = vs_defaults.weight {
            b.weight = w;
        }
        let mut defaults = vs_defaults;
        let mut checks = Vec::new();
        let block = s.block.as_deref().unwrap_or(&[]);
        self.warn_repeats(block);
        for st in block {
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "UDP_CHECK" | "DNS_CHECK"
                | "PING_CHECK" | "SMTP_CHECK" | "FILE_CHECK" | "BFD_CHECK" => {
                    checks.push(st);
                    continue;
                }
                _ => self.no_block(st),
            }
            match kw {
                "weight" => b.weight = self.get(st, &fp, parse_weight).unwrap_or_default(),
                "inhibit_on_failure" => b.inhibit_on_failure = self.flag(st, &fp),
                "uthreshold" | "maxconn" => {
                    b.maxconn =
                        self.get(st, &format!("{p}.maxconn"), int(kw, 0, i64::from(u32::MAX)));
                    // IPVS and keepalived: an upper threshold of 0 is none. (`maxconn 0`, the
                    // lb spelling, is refused as in TOML.)
                    if kw == "uthreshold" && b.maxconn == Some(0) {
                        b.maxconn = None;
                    }
                }
                "backup" => b.backup = self.flag(st, &fp),
                "retry" => defaults.retry = self.retry(st, &fp).or(defaults.retry),
                "warmup" => defaults.warmup = self.get(st, &fp, duration(kw)),
                "delay_before_retry" => {
                    defaults.delay_before_retry = self.get(st, &fp, duration(kw))
                }
                "delay_loop" => defaults.delay_loop = self.get(st, &fp, duration(kw)),
                "connect_timeout" => {
                    if let Some(d) = self.get(st, &fp, duration(kw)) {
                        defaults.connect_timeout = Some(d);
                    }
                }
                "alpha" => defaults.alpha = Some(self.flag(st, &fp)),
                "virtualhost" => {
                    if let Some(t) = self.value(st, &fp) {
                        defaults.virtualhost = Some(t.text.clone());
                    }
                }
                "notify_up" => self.first_notify(&mut b.notify_up, st, &fp),
                "notify_down" => self.first_notify(&mut b.notify_down, st, &fp),
                "lthreshold" | "smtp_alert" => self.ignored(st, "real_server"),
                "lvs_method" => {
                    self.get(st, &fp, forwarding_method);
                }
                _ => self.unknown(st, "real_server"),
            }
        }
        for st in checks {
            // Indexed as in the model: a check dropped for an error leaves no gap.
            let cp = format!("{p}.check[{}]", b.checks.len());
            match self.check(st, &cp, &defaults) {
                Some(c) => b.checks.push(c),
                None => self.o.forget(&cp),
            }
        }
        Some(b)
    }

    fn check(&mut self, s: &Stmt, p: &str, defaults: &CheckDefaults) -> Option<HealthCheck> {
        self.record(p, &s.keyword.location);
        let kw0 = s.keyword.text.as_str();
        let mut http = HttpCheck::default();
        let mut misc_path = None;
        let mut misc_timeout = None;
        let mut misc_dynamic = false;
        let mut misc_user = None;
        let mut udp = UdpCheck::default();
        let mut dns = DnsCheck::default();
        let mut smtp = SmtpCheck::default();
        let mut file = FileCheck {
            track_file: String::new(),
            weight: None,
            reverse: None,
            file: None,
        };
        let mut bfd_name = None;
        let mut c = HealthCheck::new(CheckKind::Tcp);
        let mut retry = None;
        let mut delay_before_retry = None;
        let mut delay_loop = None;
        let mut warmup = None;
        let mut connect_timeout = None;
        for st in self.section(s) {
            let kw = st.keyword.text.as_str();
            if kw != "url" && !(kw0 == "SMTP_CHECK" && kw == "host") {
                self.no_block(st);
            }
            let fp = format!("{p}.{kw}");
            // keepalived's BFD_CHECK has `name` and `alpha` only (check_bfd.c).
            if kw0 == "BFD_CHECK" {
                match kw {
                    "name" => {
                        if let Some(t) = self.value(st, &fp) {
                            bfd_name = Some(t.text.clone());
                        }
                    }
                    "alpha" => c.alpha = Some(self.flag(st, &fp)),
                    _ => self.unknown(st, kw0),
                }
                continue;
            }
            // keepalived's FILE_CHECK has these two keywords only (no checker options).
            if kw0 == "FILE_CHECK" {
                match kw {
                    "track_file" => {
                        if let Some(t) = self.value(st, &fp) {
                            file.track_file.clone_from(&t.text);
                        }
                    }
                    "weight" => {
                        let (w, reverse) = self.weight_reverse(st, &fp, -65_535, 65_535);
                        file.weight = w;
                        file.reverse = Some(reverse);
                    }
                    _ => self.unknown(st, kw0),
                }
                continue;
            }
            let is_http = matches!(kw0, "HTTP_GET" | "SSL_GET");
            match kw {
                "connect_timeout" => connect_timeout = self.get(st, &fp, duration(kw)),
                "connect_port" if kw0 == "PING_CHECK" => self.ignored_unlike_keepalived(
                    st,
                    kw0,
                    "ICMP has no ports (keepalived ignores it there too)",
                ),
                "connect_port" => c.connect_port = self.get(st, &fp, int(kw, 1, 65535)),
                "bindto" => c.bindto = self.get(st, &fp, ip),
                "connect_ip" => c.connect_ip = self.get(st, &fp, ip),
                // keepalived 2.2.7 knows nb_get_retry (deprecated) in HTTP_GET/SSL_GET only;
                // elsewhere it is an unknown keyword, ignored (its retry stays the default).
                "nb_get_retry" if !is_http => self.d.warn(
                    &st.keyword.location,
                    format!("`nb_get_retry` in {kw0} is ignored, as keepalived 2.2.7 ignores it there (an unknown keyword; it is HTTP_GET/SSL_GET's old name of `retry`): write `retry`"),
                ),
                "nb_get_retry" | "retry" => {
                    retry = self.get(st, &format!("{p}.retry"), int(kw, 0, 1000));
                }
                "delay_before_retry" => delay_before_retry = self.get(st, &fp, duration(kw)),
                "delay_loop" => delay_loop = self.get(st, &fp, duration(kw)),
                "warmup" => warmup = self.get(st, &fp, duration(kw)),
                "rise" => c.rise = self.get(st, &fp, int(kw, 1, 1000)),
                "fall" => c.fall = self.get(st, &fp, int(kw, 1, 1000)),
                "inter" => c.inter = self.get(st, &fp, duration(kw)),
                "fastinter" => c.fastinter = self.get(st, &fp, duration(kw)),
                "downinter" => c.downinter = self.get(st, &fp, duration(kw)),
                "alpha" => c.alpha = Some(self.flag(st, &fp)),
                "url" if is_http => {
                    let up = format!("{p}.url[{}]", http.url.len());
                    match self.url(st, &up) {
                        Some(u) => http.url.push(u),
                        None => self.o.forget(&up),
                    }
                }
                "virtualhost" if is_http => {
                    http.virtualhost = self.value(st, &fp).map(|t| t.text.clone());
                }
                // A line that does not read is its own error (its path poisoned): not "no misc_path".
                "misc_path" if kw0 == "MISC_CHECK" => {
                    misc_path = Some(self.command(st, &fp).unwrap_or_default());
                }
                "misc_timeout" if kw0 == "MISC_CHECK" => {
                    // 0: none of its own, the delay_loop (keepalived's misc_check_thread).
                    misc_timeout = self.get(st, &fp, duration(kw)).filter(|t| !t.is_zero());
                }
                "misc_dynamic" if kw0 == "MISC_CHECK" => misc_dynamic = self.bare_flag(st, &fp),
                "payload" if kw0 == "UDP_CHECK" => {
                    udp.payload = self.hex(st, &fp, parse_hex);
                }
                "require_reply" if kw0 == "UDP_CHECK" => {
                    udp.require_reply = true;
                    if st.args.is_empty() {
                        self.record(&fp, &st.keyword.location);
                    } else {
                        udp.reply = self.hex(st, &format!("{p}.reply"), HexPattern::parse);
                    }
                }
                "type" if kw0 == "DNS_CHECK" => {
                    if let Some(t) = self.get(st, &format!("{p}.dns_type"), |v| {
                        v.parse::<QueryType>().map_err(|e| e.to_string())
                    }) {
                        dns.qtype = t;
                    }
                }
                "name" if kw0 == "DNS_CHECK" => {
                    if let Some(n) =
                        self.get(st, &format!("{p}.dns_name"), |v| v.parse::<DnsName>().map_err(|e| e.to_string()))
                    {
                        dns.name = n;
                    }
                }
                "helo_name" if kw0 == "SMTP_CHECK" => {
                    if let Some(t) = self.value(st, &fp) {
                        smtp.helo_name.clone_from(&t.text);
                    }
                }
                "host" if kw0 == "SMTP_CHECK" => self.d.error(
                    &st.keyword.location,
                    "SMTP_CHECK's `host` block (deprecated in keepalived) is not supported: give the real server one SMTP_CHECK per host, with connect_ip and connect_port",
                ),
                "min_reply_length" if kw0 == "UDP_CHECK" => {
                    udp.min_reply_length = self
                        .get(st, &fp, int(kw, 0, i64::from(u16::MAX)))
                        .unwrap_or(udp.min_reply_length);
                }
                "max_reply_length" if kw0 == "UDP_CHECK" => {
                    udp.max_reply_length = self
                        .get(st, &fp, int(kw, 0, i64::from(u16::MAX)))
                        .unwrap_or(udp.max_reply_length);
                }
                "enable_sni" if kw0 == "SSL_GET" => http.enable_sni = self.flag(st, &fp),
                "enable_sni" if kw0 == "HTTP_GET" => self.ignored_unlike_keepalived(
                    st,
                    kw0,
                    "HTTP_GET has no TLS (keepalived accepts it there to no effect)",
                ),
                // lb-node fetches every url at each run, in alpha and after a failure too.
                "fast_recovery" if is_http => {
                    self.flag(st, &fp);
                }
                "bind_port" | "bind_if" | "fwmark" | "log_all_failures" | "tls_compliant"
                | "protocol" | "http_protocol" => {
                    self.ignored(st, kw0)
                }
                "user" if kw0 == "MISC_CHECK" => {
                    misc_user = self.user_group(st, &fp, &format!("{p}.group"));
                }
                _ => self.unknown(st, kw0),
            }
        }
        if http.virtualhost.is_none() {
            http.virtualhost.clone_from(&defaults.virtualhost);
        }
        c.kind = match kw0 {
            "TCP_CHECK" => CheckKind::Tcp,
            "HTTP_GET" => CheckKind::Http(http),
            "SSL_GET" => CheckKind::Ssl(http),
            "UDP_CHECK" => CheckKind::Udp(udp),
            "DNS_CHECK" => CheckKind::Dns(dns),
            "PING_CHECK" => CheckKind::Ping,
            "SMTP_CHECK" => CheckKind::Smtp(smtp),
            "BFD_CHECK" => {
                let Some(name) = bfd_name else {
                    self.d.error(&s.keyword.location, "BFD_CHECK has no name");
                    return None;
                };
                // No checker options besides alpha (the real or virtual server's otherwise).
                c.kind = CheckKind::Bfd(BfdCheck { name });
                c.retry = 0;
                if c.alpha.is_none() {
                    c.alpha = defaults.alpha;
                }
                return Some(c);
            }
            "FILE_CHECK" => {
                if file.track_file.is_empty() {
                    self.d
                        .error(&s.keyword.location, "FILE_CHECK has no track_file");
                    return None;
                }
                // No checker options: nothing inherited from the real or virtual server.
                c.kind = CheckKind::File(file);
                c.retry = 0;
                return Some(c);
            }
            _ => {
                let Some(misc_path) = misc_path else {
                    self.d
                        .error(&s.keyword.location, "MISC_CHECK has no misc_path");
                    return None;
                };
                let (user, group) = misc_user.map_or((None, None), |(u, g)| (Some(u), g));
                CheckKind::Misc(MiscCheck {
                    user,
                    group,
                    misc_path,
                    misc_timeout,
                    misc_dynamic,
                })
            }
        };
        // keepalived's defaults depend on the checker: see `CheckKind::default_retry`.
        c.retry = retry
            .or(defaults.retry)
            .unwrap_or_else(|| c.kind.default_retry());
        // None: the kind's default, resolved with the check's interval (`retry_delay`).
        c.delay_before_retry = delay_before_retry.or(defaults.delay_before_retry);
        c.delay_loop = delay_loop.or(defaults.delay_loop);
        c.warmup = warmup.or(defaults.warmup);
        // A MISC_CHECK has no connection (keepalived: no `co`), so nothing to inherit.
        let inherited = defaults
            .connect_timeout
            .filter(|_| !matches!(c.kind, CheckKind::Misc(_)));
        c.connect_timeout = connect_timeout.or(inherited).unwrap_or(c.connect_timeout);
        c.alpha = c.alpha.or(defaults.alpha);
        Some(c)
    }

    /// keepalived's `status_code <INTEGER|RANGE> …` (keepalived.conf(5)): codes and
    /// inclusive ranges `A-B`, each in 100..=599; an error at the first bad one.
    fn status_codes(&mut self, s: &Stmt, path: &str) -> Option<StatusSet> {
        let Some(first) = s.args.first() else {
            self.d.error(
                &s.keyword.location,
                "`status_code` needs an HTTP status or a range (200, 200-299)",
            );
            self.o.poison(path);
            return None;
        };
        self.record(path, &first.location);
        for a in &s.args {
            if a.text.contains(',') || a.text.parse::<StatusSet>().is_err() {
                self.d.error(
                    &a.location,
                    format!(
                        "status_code {:?} is neither an HTTP status nor a range of them in 100..=599 (200, 200-299)",
                        a.text
                    ),
                );
                self.o.poison(path);
                return None;
            }
        }
        let list: Vec<&str> = s.args.iter().map(|a| a.text.as_str()).collect();
        list.join(",").parse().ok()
    }

    fn url(&mut self, s: &Stmt, p: &str) -> Option<UrlCheck> {
        self.record(p, &s.keyword.location);
        let mut u = UrlCheck {
            path: String::new(),
            status_code: None,
            digest: None,
            virtualhost: None,
            regex: None,
            regex_no_match: false,
            regex_options: Vec::new(),
            regex_min_offset: None,
            regex_max_offset: None,
        };
        let mut has_path = false;
        for st in self.section(s) {
            self.no_block(st);
            let kw = st.keyword.text.as_str();
            let fp = format!("{p}.{kw}");
            match kw {
                "path" => {
                    if let Some(t) = self.value(st, &fp) {
                        u.path = t.text.clone();
                        has_path = true;
                    }
                }
                "status_code" => u.status_code = self.status_codes(st, &fp),
                "digest" => u.digest = self.value(st, &fp).map(|t| t.text.clone()),
                "regex" => u.regex = self.regex(st, &fp),
                "regex_no_match" => u.regex_no_match = self.bare_flag(st, &fp),
                "regex_options" => {
                    if let Some(first) = st.args.first() {
                        self.record(&fp, &first.location);
                    }
                    u.regex_options
                        .extend(st.args.iter().map(|a| a.text.clone()));
                }
                "regex_min_offset" => {
                    u.regex_min_offset = self
                        .get(st, &fp, int(kw, 0, i64::from(u32::MAX)))
                        .and_then(|v: i64| usize::try_from(v).ok());
                }
                "regex_max_offset" => {
                    u.regex_max_offset = self
                        .get(st, &fp, int(kw, 0, i64::from(u32::MAX)))
                        .and_then(|v: i64| usize::try_from(v).ok());
                }
                "regex_stack" => self.ignored(st, "url"),
                "virtualhost" => u.virtualhost = self.value(st, &fp).map(|t| t.text.clone()),
                _ => self.unknown(st, "url"),
            }
        }
        if !has_path {
            self.d.error(&s.keyword.location, "url has no path");
            return None;
        }
        Some(u)
    }
}

/// The line of `s` as written from its first argument on (each token's text with the
/// blanks before it), and where each argument starts in it: what keepalived's script and
/// regex keywords read again with their own quoting (the lexer knows only `"…"`: a
/// single-quoted word may span several tokens). Empty without arguments.
fn raw_args(s: &Stmt) -> (String, Vec<usize>) {
    let mut raw = String::new();
    let mut starts = Vec::with_capacity(s.args.len());
    for (i, t) in s.args.iter().enumerate() {
        if i > 0 {
            raw.push_str(&t.lead);
        }
        starts.push(raw.len());
        raw.push_str(&t.raw);
    }
    (raw, starts)
}

/// Byte offsets where the words of `line` start, split as
/// [`lb_health::probe::split_command_line`] splits it: blanks outside quotes separate
/// words, `'…'` and `"…"` quote, a backslash escapes the next character (inside quotes
/// too).
fn word_starts(line: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if !in_word && !c.is_ascii_whitespace() {
            in_word = true;
            out.push(i);
        }
        match (c, quote) {
            ('\\', _) => escaped = true,
            (q @ ('\'' | '"'), None) => quote = Some(q),
            (q, Some(open)) if q == open => quote = None,
            (w, None) if w.is_ascii_whitespace() => in_word = false,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_script_is_the_default_script_user_where_it_exists() {
        assert_eq!(
            default_script_user(|u| u == "keepalived_script").as_deref(),
            Some("keepalived_script")
        );
        assert_eq!(default_script_user(|_| false), None);
    }
}
