//! The one configuration model of `lb-node`, whichever language it was written in.
//!
//! Both front ends ([`super::toml`] and [`super::keepalived`]) produce a [`Config`]; then
//! [`Config::validate`] checks what no single value can tell (duplicate VRIDs on an
//! interface, unknown sync-group members, …) and names each problem by its [`Config`] path
//! (`vrrp_instance[1].virtual_router_id`), which the front end turns into `file:line:column`.
//!
//! The model is plain data: it borrows only [`Algorithm`], [`Granularity`] and [`Weight`] from
//! `lb-core` and [`HexPattern`] (a parsed `UDP_CHECK` reply) from `lb-health`, and the daemon maps it onto the library crates' own types
//! ([`VirtualServer::pool_config`], [`VirtualServer::http_proxy_config`]). Field names are the
//! TOML keys (keepalived's keywords wherever keepalived has one).
//!
//! # Examples
//!
//! ```
//! use lb_bins::config::model::{Config, VirtualServer};
//!
//! let cfg: Config = toml::from_str(r#"
//!     [[virtual_server]]
//!     listen = "198.18.0.250:80"
//!     lb_algo = "rr"
//!     [[virtual_server.backend]]
//!     address = "198.18.0.11:82"
//!     weight = 3
//! "#)?;
//! let cfg = cfg.with_defaults();
//! assert!(cfg.validate().errors.is_empty());
//! assert_eq!(cfg.virtual_servers[0].name, "198.18.0.250:80");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lb_core::{Algorithm, Backend, BackendId, BackendSet, Granularity, Health, PoolConfig, Weight};
use lb_health::probe::HexPattern;
use lb_health::StatusSet;
use lb_proxy::http::{
    BackendTls, ForwardedHeaders, HashKeySource, HostMatch, HttpProxyConfig, Route, TlsTermination,
    Verify,
};
use lb_proxy::proxy_protocol::AcceptProxy;
use lb_proxy::tcp::{ForwardMode, TcpProxyConfig};
use lb_proxy::udp::UdpProxyConfig;
use lb_vrrp::driver::RunAs;
use lb_vrrp::route::VirtualRoute;
use lb_vrrp::rule::VirtualRule;
use lb_vrrp::wire::{MAX_ADDRESSES_V4 as MAX_ADVERTISED_V4, MAX_ADDRESSES_V6 as MAX_ADVERTISED_V6};
use serde::Deserialize;

use super::values;

/// A whole `lb-node` configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node-wide settings (keepalived `global_defs`).
    #[serde(default)]
    pub global: Global,
    /// Tracked scripts (keepalived `vrrp_script`), referenced by `track_script`.
    #[serde(default, rename = "vrrp_script")]
    pub vrrp_scripts: Vec<VrrpScript>,
    /// Tracked process counts (keepalived `vrrp_track_process`), referenced by
    /// `track_process`.
    #[serde(default, rename = "vrrp_track_process")]
    pub vrrp_track_processes: Vec<VrrpTrackProcess>,
    /// Tracked files (keepalived `track_file`, formerly `vrrp_track_file`), referenced by
    /// `track_file`.
    #[serde(default, rename = "track_file")]
    pub track_files: Vec<VrrpTrackFile>,
    /// BFD sessions (keepalived `bfd_instance`), referenced by `track_bfd` and by
    /// `bfd` checks (`BFD_CHECK`).
    #[serde(default, rename = "bfd_instance")]
    pub bfd_instances: Vec<BfdInstance>,
    /// VRRP instances (keepalived `vrrp_instance`).
    #[serde(default, rename = "vrrp_instance")]
    pub vrrp_instances: Vec<VrrpInstance>,
    /// Sync groups (keepalived `vrrp_sync_group`): members change state together.
    #[serde(default, rename = "vrrp_sync_group")]
    pub sync_groups: Vec<SyncGroup>,
    /// Virtual servers (keepalived `virtual_server`): a listener and its backends.
    #[serde(default, rename = "virtual_server")]
    pub virtual_servers: Vec<VirtualServer>,
    /// keepalived `static_ipaddress`: addresses lb-node adds at its start (before the
    /// virtual servers and VRRP instances) and deletes at its stop, whatever any VRRP
    /// state; a reload deletes those no longer configured and adds the new ones. The
    /// syntax of `virtual_ipaddress`; one without `dev` goes on
    /// `global.default_interface`.
    #[serde(default)]
    pub static_ipaddress: Vec<VirtualIp>,
    /// keepalived `static_routes`: routes added at the start (after `static_ipaddress`)
    /// and deleted at the stop, as `static_ipaddress`; the syntax of `virtual_routes`.
    #[serde(default, deserialize_with = "values::routes")]
    pub static_routes: Vec<VirtualRoute>,
    /// keepalived `static_rules`: rules added at the start (after `static_routes`) and
    /// deleted at the stop (first), as `static_ipaddress`; the syntax of `virtual_rules`.
    #[serde(default, deserialize_with = "values::rules")]
    pub static_rules: Vec<VirtualRule>,
    /// keepalived `garp_group`: spacings of gratuitous ARPs / NAs of their own for some
    /// interfaces, counted over each group's interfaces together, in place of
    /// `global.vrrp_garp_interval` / `vrrp_gna_interval` there.
    #[serde(default, rename = "garp_group")]
    pub garp_groups: Vec<GarpGroup>,
}

/// keepalived's `garp_group` block: the least time between two gratuitous ARPs, and
/// between two unsolicited neighbour advertisements, sent out of any of `interfaces`,
/// whatever VRRP instance sends them (keepalived's aggregation: the group's rate is the
/// total over its interfaces). An interface is the one an instance names as `interface`
/// (also with `use_vmac`: a VMAC's messages count against it) or a VIP's `dev`. A family
/// the group gives no interval (or 0) is not spaced on these interfaces, whatever the
/// global one: keepalived applies `vrrp_garp_interval` / `vrrp_gna_interval` only to
/// interfaces without a group. A reload applies a change at once, without restarting any
/// instance.
///
/// ```toml
/// [[garp_group]]
/// interfaces = ["eth1", "eth2"]
/// garp_interval = "5ms"
/// gna_interval = "5ms"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GarpGroup {
    /// The interfaces (keepalived's `interface` lines and `interfaces` block together).
    /// At least one; an interface is in one group at most.
    pub interfaces: Vec<String>,
    /// `garp_interval`, to the microsecond (`"250us"`, `0.00025`), at most 2147.483647 s
    /// (keepalived's range for groups).
    #[serde(default, with = "values::opt_fine_duration")]
    pub garp_interval: Option<Duration>,
    /// `gna_interval`, likewise. A group sets at least one of the two.
    #[serde(default, with = "values::opt_fine_duration")]
    pub gna_interval: Option<Duration>,
}

/// The longest interval of a [`GarpGroup`]: keepalived reads it as at most `INT_MAX` µs.
pub const MAX_GARP_GROUP_INTERVAL: Duration = Duration::from_micros(2_147_483_647);

/// Node-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// A name for this node in logs and `lbctl status` (keepalived `router_id`).
    pub router_id: Option<String>,
    /// Path of the admin Unix socket (mode 0600). Default `/run/lb-node/admin.sock`.
    pub admin_socket: PathBuf,
    /// Log level: `error`, `warn`, `info` (default), `debug`, `trace`.
    pub log_level: LogLevel,
    /// How long established connections may finish after SIGTERM (UDP sessions end at
    /// once), and the UDP sessions of a virtual server a reload restarts or removes (they
    /// carry the replies to what they forwarded until idle or this deadline). Default 30 s.
    #[serde(with = "values::duration")]
    pub drain_deadline: Duration,
    /// How long the TCP and HTTP connections of a virtual server that a reload restarts
    /// (a changed setting, a real server added or removed) or removes may go on; past it
    /// they are closed. Default: no limit — they end when their client or backend ends them,
    /// as IPVS's connections through a keepalived reload and HAProxy's through a reload
    /// without `hard-stop-after` (which this is). SIGTERM still ends them at
    /// `drain_deadline`.
    #[serde(default, with = "values::opt_duration")]
    pub reload_drain_deadline: Option<Duration>,
    /// Event-loop threads (HAProxy `nbthread`). 0, the default, runs one per CPU; 1 runs
    /// everything on one thread (tokio's current-thread scheduler: no cross-thread wake-ups,
    /// the fastest choice when the node is given one CPU, as `nbthread 1` is for HAProxy;
    /// there HTTP virtual servers also send the small writes of each event-loop turn
    /// together); n > 1 runs n worker threads. Read at start; a reload keeps the running
    /// value.
    pub nbthread: u16,
    /// HAProxy `busy-polling`: while any connection or UDP session is open (busy or idle),
    /// the event loop polls with a zero timeout instead of sleeping, so the proxy's CPU
    /// never halts between packets. It saves the wake-up cost of a virtual machine's halted
    /// vCPU (inter-processor interrupts, VM exits) at the price of one CPU at 100 % while
    /// any connection is open: meant for a node pinned to a CPU of its own. Needs
    /// `nbthread = 1` (an error otherwise). Off by default. Read at start; a reload keeps
    /// the running value.
    pub busy_polling: bool,
    /// The user every script runs as when it names none (keepalived `script_user`):
    /// `vrrp_script`s, notify scripts, `MISC_CHECK` programs. Looked up at load (an
    /// unknown user is an error). Default: the daemon's user; keepalived.conf, as
    /// keepalived, defaults it to `keepalived_script` where that user exists and lb-node
    /// runs as root (keepalived always does). A group beginning with `:` (keepalived:
    /// supplementary groups too) is refused: scripts run with one group.
    pub script_user: Option<String>,
    /// With `script_user`: its group (default: the user's primary group).
    pub script_group: Option<String>,
    /// keepalived `notify_fifo`: a FIFO that gets one line per VRRP and checker event
    /// (`INSTANCE "VI_1" MASTER 150`, `GROUP "G" BACKUP 0`, `VS [198.18.0.250]:tcp:80 UP`,
    /// `RS [198.18.0.151]:tcp:80 [198.18.0.250]:tcp:80 DOWN`). None by default.
    pub notify_fifo: Option<NotifyFifo>,
    /// keepalived `vrrp_notify_fifo`: a FIFO for the VRRP lines only.
    pub vrrp_notify_fifo: Option<NotifyFifo>,
    /// keepalived `lvs_notify_fifo`: a FIFO for the checker lines (`VS`, `RS`) only.
    pub lvs_notify_fifo: Option<NotifyFifo>,
    /// keepalived `fifo_write_vrrp_states_on_reload`: a reload writes each VRRP instance's
    /// and sync group's state to the notify FIFOs (`INSTANCE "VI_1" BACKUP 100`) when the
    /// reload does not change it (a change is written anyway), so that a FIFO reader
    /// started anew by the reload learns them. Unlike keepalived 2.2.7, an instance that
    /// stays MASTER is written too. Default false.
    pub fifo_write_vrrp_states_on_reload: bool,
    /// keepalived `rs_init_notifies`: a real server that starts up (not `alpha`, no tracked
    /// file failing it) when its virtual server starts — at lb-node's start, or new to its
    /// virtual server at a reload — runs its `notify_up` and writes its `RS … UP` line to
    /// the notify FIFOs, as keepalived's `init_service_rs`. Without it, as keepalived's
    /// default, only later changes of state are notified. Default false.
    pub rs_init_notifies: bool,
    /// keepalived `vrrp_startup_delay`: no VRRP instance becomes MASTER within this long
    /// after lb-node starts (bonds and other interfaces may pass no traffic for seconds
    /// after boot, and an instance started then would become MASTER over a peer it cannot
    /// hear yet). As keepalived, the instances start at once, as BACKUP or FAULT with their
    /// notify scripts; a BACKUP's Master_Down timer runs from the delay's end, and an
    /// address owner becomes MASTER at its end. Counted from the process's start: a reload
    /// after it delays nothing. Default 0.
    #[serde(with = "values::duration")]
    pub vrrp_startup_delay: Duration,
    /// keepalived `vrrp_mcast_group4`: the multicast group of IPv4 instances without
    /// `mcast_dst_ip`. Default RFC 5798's 224.0.0.18.
    pub vrrp_mcast_group4: Option<Ipv4Addr>,
    /// keepalived `vrrp_mcast_group6`: the group of IPv6 instances without `mcast_dst_ip`,
    /// link-local scope (`ff02::/16`). Default RFC 5798's ff02::12.
    pub vrrp_mcast_group6: Option<Ipv6Addr>,
    /// keepalived `vrrp_garp_interval`: the least time between two gratuitous ARPs lb-node
    /// sends out of one interface (a VMAC's count against its base interface), whatever
    /// instance sends them, for switches and hypervisors that drop bursts; the others wait
    /// their turn (and are dropped if their instance leaves MASTER or stops first).
    /// Default 0: each burst at once. To the microsecond (`0.000250`, TOML also
    /// `"250us"`), at most 4294.967295 s (keepalived's range).
    #[serde(with = "values::fine_duration")]
    pub vrrp_garp_interval: Duration,
    /// keepalived `vrrp_gna_interval`: the same for unsolicited neighbour advertisements
    /// (IPv6 VIPs), counted apart. Default 0.
    #[serde(with = "values::fine_duration")]
    pub vrrp_gna_interval: Duration,
    /// keepalived `startup_script`: run (by `/bin/sh -c`, as its user or `script_user`)
    /// before lb-node starts its VRRP instances and virtual servers, which wait for it to
    /// exit or for `startup_script_timeout`; then its process group gets SIGTERM, SIGKILL
    /// 2 s later if it still runs, and what is left of the group SIGKILL once it is gone.
    /// A failure is logged; the start goes on. SIGTERM or SIGINT meanwhile kills its group
    /// and lb-node exits without starting anything. Not run at a reload. None by default.
    pub startup_script: Option<NotifyScript>,
    /// keepalived `startup_script_timeout`, 1..=1000 s. Default 10 s.
    #[serde(with = "values::duration")]
    pub startup_script_timeout: Duration,
    /// keepalived `shutdown_script`: run likewise once lb-node has stopped everything
    /// (VIPs removed, connections drained), before it exits; the running configuration's
    /// (a reload may change it, as keepalived's). None by default.
    pub shutdown_script: Option<NotifyScript>,
    /// keepalived `vmac_prefix`: the start of the names lb-node gives VMACs
    /// (`<PREFIX>.<VRID>`, see [`Config::vmac_names`]); ASCII letters, digits, `_`, `-`,
    /// at most 12 bytes. Default `vrrp`.
    pub vmac_prefix: Option<String>,
    /// keepalived `default_interface`: where a `static_ipaddress` without `dev` goes. In
    /// keepalived.conf `eth0` when unset (keepalived's default); in TOML such an address
    /// needs one or the other (an error otherwise).
    pub default_interface: Option<String>,
    /// keepalived `shutdown_script_timeout`, 1..=1000 s. Default 10 s.
    #[serde(with = "values::duration")]
    pub shutdown_script_timeout: Duration,
}

/// A notify FIFO (keepalived `notify_fifo PATH [USER [GROUP]]` and `notify_fifo_script`):
/// created (mode 0644, owned by `user`/`group`) unless it exists, opened read-write and
/// non-blocking (a line no reader takes is dropped), removed at the stop if lb-node
/// created it. See `lb_bins::node` for the lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFifo {
    /// The FIFO's path.
    pub path: PathBuf,
    /// The owner given to a FIFO lb-node creates. Default: lb-node's user.
    #[serde(default)]
    pub user: Option<String>,
    /// With `user`: its group. Default: the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// keepalived `*_notify_fifo_script`: started when the FIFO is opened, with the FIFO's
    /// path as its last argument; SIGTERM at the stop (or when a reload changes the FIFO).
    #[serde(default)]
    pub script: Option<NotifyScript>,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            router_id: None,
            admin_socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            log_level: LogLevel::Info,
            drain_deadline: Duration::from_secs(30),
            reload_drain_deadline: None,
            nbthread: 0,
            busy_polling: false,
            script_user: None,
            script_group: None,
            notify_fifo: None,
            vrrp_notify_fifo: None,
            lvs_notify_fifo: None,
            fifo_write_vrrp_states_on_reload: false,
            rs_init_notifies: false,
            vrrp_startup_delay: Duration::ZERO,
            vrrp_mcast_group4: None,
            vrrp_mcast_group6: None,
            vrrp_garp_interval: Duration::ZERO,
            vrrp_gna_interval: Duration::ZERO,
            startup_script: None,
            startup_script_timeout: Duration::from_secs(10),
            shutdown_script: None,
            shutdown_script_timeout: Duration::from_secs(10),
            default_interface: None,
            vmac_prefix: None,
        }
    }
}

/// Default path of the admin socket.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/lb-node/admin.sock";

/// A `tracing` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Verbose.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level's name as `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "error" => Self::Error,
            "warn" | "warning" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => {
                return Err(format!(
                    "unknown log level {s:?} (expected error, warn, info, debug or trace)"
                ))
            }
        })
    }
}

/// A script run periodically whose exit status adjusts the priority of the instances that
/// track it (keepalived `vrrp_script`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpScript {
    /// The name `track_script` refers to.
    pub name: String,
    /// The command line, run with `sh -c` (as keepalived runs it when it has shell syntax).
    pub script: String,
    /// Time between runs. Default 1 s.
    #[serde(default = "values::one_second", with = "values::duration")]
    pub interval: Duration,
    /// A run longer than this fails. Default: the interval.
    #[serde(default, with = "values::opt_duration")]
    pub timeout: Option<Duration>,
    /// Priority change while the script succeeds (> 0) or fails (< 0), -254..=254; 0
    /// (default) puts the tracking instances into FAULT while the script fails.
    #[serde(default)]
    pub weight: i32,
    /// Apply the weight to the opposite result (keepalived `weight W reverse`): a positive
    /// weight is taken off while the script succeeds, a negative one added back while it
    /// fails; weight 0 means FAULT while it succeeds. Default false.
    #[serde(default)]
    pub reverse: bool,
    /// Successes needed to count as up. Default 1.
    #[serde(default = "values::one")]
    pub rise: u32,
    /// Failures needed to count as down. Default 1.
    #[serde(default = "values::one")]
    pub fall: u32,
    /// The user the script runs as, looked up when the configuration is loaded (default:
    /// the daemon's user).
    #[serde(default)]
    pub user: Option<String>,
    /// With `user`: the group the script runs as (default: the user's primary group).
    /// Supplementary groups are dropped.
    #[serde(default)]
    pub group: Option<String>,
    /// keepalived `init_fail`: the script counts as failed until it has succeeded `rise`
    /// times: a weight-0 tracker's instance starts in FAULT instead of waiting in INIT
    /// for the first run, and a weight applies as failed from the start. Default false
    /// (the first result decides at once).
    #[serde(default)]
    pub init_fail: bool,
}

/// A count of running processes that adjusts the priority of the instances that track it
/// (keepalived `vrrp_track_process`): healthy while `quorum..=quorum_max` processes match.
/// Followed through the kernel's process events as they happen, or by scanning `/proc`
/// each second where those are not available (inside a network namespace other than the
/// initial one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpTrackProcess {
    /// The name `track_process` refers to.
    pub name: String,
    /// The process name as `pgrep -x` compares it (`/proc/PID/comm`, at most 15 bytes);
    /// with `full_command` or `params`, the command's first word (`argv[0]`, usually a
    /// path).
    pub process: String,
    /// The parameters (`argv[1..]`) a process must have, compared as `param_match` says;
    /// giving any implies `full_command`.
    #[serde(default)]
    pub params: Vec<String>,
    /// `exact` (default once `params` or `param_match` is given: exactly these
    /// parameters; none if `params` is empty), `partial` (these first, maybe more) or
    /// `initial` (as `partial`, the last one may be a prefix).
    #[serde(default)]
    pub param_match: Option<ParamMatch>,
    /// Compare `process` with the command's first word instead of the process name.
    #[serde(default)]
    pub full_command: bool,
    /// Fewest matching processes for healthy. Default 1, or 0 with `quorum_max = 0`
    /// (keepalived: healthy while none runs).
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Most matching processes for healthy (0: healthy while none runs). Default: no
    /// limit.
    #[serde(default)]
    pub quorum_max: Option<u32>,
    /// A change caused by a new process counts only if it still holds this long after.
    /// Default 0.
    #[serde(default, with = "values::duration")]
    pub fork_delay: Duration,
    /// A change caused by a process ending counts only if it still holds this long after
    /// (a restart within it is not seen). Default 0.
    #[serde(default, with = "values::duration")]
    pub terminate_delay: Duration,
    /// Priority change (-254..=254): a positive weight is added while healthy, a negative
    /// one while not; 0 puts the tracking instances in FAULT while not healthy. Default 0,
    /// as keepalived's code (`alloc_vrrp_process`; its manual says 1): a process lost
    /// faults the instances.
    #[serde(default)]
    pub weight: i32,
    /// Apply the weight to the opposite state (keepalived `weight W reverse`): a positive
    /// weight is subtracted while healthy, a negative one added back while not; weight 0
    /// means FAULT while healthy. Default false.
    #[serde(default)]
    pub reverse: bool,
}

impl VrrpTrackProcess {
    /// `quorum`, or its default: 1, or 0 with `quorum_max` 0 (keepalived's
    /// vrrp_tprocess_quorum_max_handler).
    pub fn effective_quorum(&self) -> u32 {
        self.quorum
            .unwrap_or(if self.quorum_max == Some(0) { 0 } else { 1 })
    }
}

/// keepalived `param_match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamMatch {
    /// Exactly the given parameters.
    Exact,
    /// The given parameters first; the process may have more.
    Partial,
    /// As `partial`, and the last given parameter may be a prefix of the process's.
    Initial,
}

/// A file holding a number that adjusts the priority of the instances that track it
/// (keepalived `track_file`): read at start and whenever it is written, renamed into place
/// or deleted (then 0). The value times the weight is added to the priority; -254 or less
/// means FAULT; with weight 0, any value but 0 means FAULT. An address owner (priority 255)
/// counts a file of weight 1 with weight 0 and ignores one of another weight, as keepalived
/// does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpTrackFile {
    /// The name `track_file` refers to.
    pub name: String,
    /// The file. Its directory must exist.
    pub file: PathBuf,
    /// Multiplier of the value. Default 1.
    #[serde(default = "values::one_i32")]
    pub weight: i32,
    /// Negate the product (with weight 0: a value of 0 means FAULT). Default false.
    #[serde(default)]
    pub reverse: bool,
    /// keepalived `init_file [VALUE]`: write this value to the file at start if it does
    /// not exist. Default: leave the file alone.
    #[serde(default)]
    pub init_file: Option<i64>,
    /// keepalived `init_file … overwrite`: write `init_file` even if the file exists.
    #[serde(default)]
    pub init_overwrite: bool,
}

/// A BFD session with one neighbour (keepalived `bfd_instance`): RFC 5880 asynchronous
/// mode over single-hop UDP (RFC 5881, port 3784), run by lb-health's `BfdSpeaker`.
/// `track_bfd` (VRRP) and `bfd` checks (`BFD_CHECK`, real servers) follow whether it is Up.
/// Intervals are in milliseconds in keepalived.conf (with microsecond decimals) and
/// durations in TOML (`"10ms"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdInstance {
    /// The name `track_bfd` and `BFD_CHECK` refer to.
    pub name: String,
    /// The neighbour's address (keepalived `neighbor_ip`, or `neighbour_ip`).
    #[serde(alias = "neighbour_ip")]
    pub neighbor_ip: IpAddr,
    /// Source address of our packets (keepalived `source_ip`). Default: the kernel's
    /// choice of route.
    #[serde(default)]
    pub source_ip: Option<IpAddr>,
    /// Required Min RX Interval: the shortest interval between the neighbour's packets we
    /// accept, to the microsecond (`"1.5ms"`, `"1500us"`, `0.0015`). Default 10 ms.
    #[serde(default = "bfd_default_interval", with = "values::fine_duration")]
    pub min_rx: Duration,
    /// Desired Min TX Interval while the session is Up. Default 10 ms.
    #[serde(default = "bfd_default_interval", with = "values::fine_duration")]
    pub min_tx: Duration,
    /// Desired Min TX Interval while it is not Up (RFC 5880 §6.8.3: at least 1 s there).
    /// Default 1 s.
    #[serde(default = "values::one_second", with = "values::fine_duration")]
    pub idle_tx: Duration,
    /// Detect Mult: packets missed before the session goes Down. Default 5.
    #[serde(default = "bfd_default_multiplier")]
    pub multiplier: u8,
    /// Wait for the neighbour's first packet before sending (RFC 5880 §6.1 passive role).
    #[serde(default)]
    pub passive: bool,
    /// TTL of our IPv4 packets. Default 255.
    #[serde(default = "bfd_default_ttl")]
    pub ttl: u8,
    /// Hop limit of our IPv6 packets. Default 64, as keepalived; RFC 5881 §5 wants 255,
    /// which peers other than keepalived (FRR, BIRD) insist on: set it to 255 for them.
    #[serde(default = "bfd_default_hoplimit")]
    pub hoplimit: u8,
    /// How far below `ttl` (IPv4) or `hoplimit` (IPv6) a received packet's TTL or hop
    /// limit may be (255: not checked; keepalived.conf's -1 too). Default 0.
    #[serde(default)]
    pub max_hops: u8,
    /// Default weight of a `track_bfd` naming it (-253..=253): 0 puts the instance in FAULT
    /// while the session is not Up; a positive weight is added to the priority while it is
    /// Up, a negative one while it is not. Default 0.
    #[serde(default)]
    pub weight: i32,
    /// The weight applies to the opposite state. Default false.
    #[serde(default)]
    pub reverse: bool,
    /// keepalived `vrrp`: only `track_bfd` may follow it (not `BFD_CHECK`).
    #[serde(default)]
    pub vrrp: bool,
    /// keepalived `checker`: only `BFD_CHECK` may follow it (not `track_bfd`).
    #[serde(default)]
    pub checker: bool,
}

fn bfd_default_interval() -> Duration {
    Duration::from_millis(10)
}
fn bfd_default_multiplier() -> u8 {
    5
}
fn bfd_default_ttl() -> u8 {
    255
}
fn bfd_default_hoplimit() -> u8 {
    64
}

impl BfdInstance {
    /// A session with `neighbor_ip` and keepalived's defaults (10 ms intervals, 1 s while
    /// not Up, multiplier 5, active, TTL 255, hop limit 64, weight 0).
    pub fn new(name: impl Into<String>, neighbor_ip: IpAddr) -> Self {
        Self {
            name: name.into(),
            neighbor_ip,
            source_ip: None,
            min_rx: bfd_default_interval(),
            min_tx: bfd_default_interval(),
            idle_tx: Duration::from_secs(1),
            multiplier: bfd_default_multiplier(),
            passive: false,
            ttl: bfd_default_ttl(),
            hoplimit: bfd_default_hoplimit(),
            max_hops: 0,
            weight: 0,
            reverse: false,
            vrrp: false,
            checker: false,
        }
    }

    /// Whether `track_bfd` may follow it (not `checker` only).
    pub fn for_vrrp(&self) -> bool {
        self.vrrp || !self.checker
    }

    /// Whether `BFD_CHECK` may follow it (not `vrrp` only).
    pub fn for_checker(&self) -> bool {
        self.checker || !self.vrrp
    }

    /// The session's settings for lb-health's BFD speaker.
    pub fn bfd_config(&self) -> lb_health::bfd::BfdConfig {
        let mut c = lb_health::bfd::BfdConfig::new(self.neighbor_ip);
        c.source_ip = self.source_ip;
        c.min_rx = self.min_rx;
        c.min_tx = self.min_tx;
        c.idle_tx = self.idle_tx;
        c.multiplier = self.multiplier;
        c.passive = self.passive;
        c.ttl = self.ttl;
        c.hoplimit = self.hoplimit;
        c.max_hops = self.max_hops;
        c
    }
}

/// keepalived `state`: as in keepalived 2.x, a hint the election overrides. An address owner
/// (priority 255) becomes Master at once whatever it says (unless a member of its sync group
/// is not an owner: the whole group then starts as Backup, as keepalived); any other
/// instance starts as Backup and waits a Master_Down_Interval first (RFC 5798 §6.4.1),
/// `MASTER` or not. An owner leaving Fault goes to Backup first too, as keepalived's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InitialState {
    /// `MASTER`: the intended master.
    Master,
    /// Start as backup (default).
    #[default]
    Backup,
}

impl FromStr for InitialState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "MASTER" => Ok(Self::Master),
            "BACKUP" => Ok(Self::Backup),
            _ => Err(format!("unknown state {s:?} (expected MASTER or BACKUP)")),
        }
    }
}

/// A VRRP virtual router on one interface (keepalived `vrrp_instance`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpInstance {
    /// Instance name, unique on the node.
    pub name: String,
    /// Interface the adverts are sent on.
    pub interface: String,
    /// keepalived's `state`. Every instance but the address owner (priority 255; in a
    /// sync group, only when every member is one) starts as Backup whatever it says and takes over after a Master_Down_Interval without a
    /// master heard (RFC 5798 §6.4.1), as keepalived 2.2.7 does with MASTER too
    /// (measured); MASTER makes `nopreempt` and `preempt_delay` not apply, as keepalived.
    /// Default BACKUP.
    #[serde(default)]
    pub state: InitialState,
    /// VRID, 1..=255, unique per interface and address family.
    pub virtual_router_id: u8,
    /// Base priority 1..=255 (255 only for the owner of the addresses). Default 100.
    #[serde(default = "values::default_priority")]
    pub priority: u8,
    /// Advertisement interval: whole seconds 1..=255 for VRRPv2, 0.01..=40.95 s for v3.
    /// Default 1 s.
    #[serde(default = "values::one_second", with = "values::duration")]
    pub advert_int: Duration,
    /// VRRP version, 2 (default) or 3.
    #[serde(default = "values::default_version")]
    pub version: u8,
    /// VRRPv2 simple-text authentication (RFC 2338); none by default.
    #[serde(default)]
    pub authentication: Option<Authentication>,
    /// The virtual addresses (`"172.16.2.250/24 dev eth0 label eth0:1"`).
    #[serde(default)]
    pub virtual_ipaddress: Vec<VirtualIp>,
    /// Addresses added and removed with the instance's state like `virtual_ipaddress`, but
    /// never carried in its adverts (keepalived `virtual_ipaddress_excluded`): for more
    /// addresses than an advert holds, or of the other address family.
    #[serde(default)]
    pub virtual_ipaddress_excluded: Vec<VirtualIp>,
    /// keepalived `virtual_routes`: routes added when the instance becomes MASTER (after
    /// its VIPs) and deleted when it leaves MASTER (before them), in keepalived's syntax
    /// (`"198.18.1.0/24 via 198.18.0.1 dev eth0 table 100"`, see [`lb_vrrp::route`]). A
    /// reload deletes, on a MASTER, the routes the new configuration no longer has.
    #[serde(default, deserialize_with = "values::routes")]
    pub virtual_routes: Vec<VirtualRoute>,
    /// keepalived `virtual_rules`: routing-policy rules added when the instance becomes
    /// MASTER (after its routes) and deleted when it leaves MASTER (before them), in
    /// keepalived's syntax (`"from 198.18.0.250 table 100 priority 100"`, see
    /// [`lb_vrrp::rule`]). In TOML each needs a preference (keepalived numbers the others).
    #[serde(default, deserialize_with = "values::rules")]
    pub virtual_rules: Vec<VirtualRule>,
    /// Source address of unicast adverts (default: the interface's primary address).
    #[serde(default)]
    pub unicast_src_ip: Option<IpAddr>,
    /// keepalived `track_src_ip`: with `unicast_src_ip`, FAULT while the interface does not
    /// hold that address (from the start), back when it does, as keepalived's
    /// documentation describes it (keepalived 2.2.7 itself stays in FAULT for good when the
    /// address is missing at its start, and ignores its later deletion unless it was the
    /// interface's last address). Without it, as keepalived, a configured source that
    /// leaves the interface goes on being used. Ignored without `unicast_src_ip`
    /// (keepalived clears it then). Default false.
    #[serde(default)]
    pub track_src_ip: bool,
    /// Unicast peers; empty (default) means multicast.
    #[serde(default)]
    pub unicast_peer: Vec<IpAddr>,
    /// keepalived `unicast_ttl`: the TTL (IPv6 hop limit) of the adverts sent to the
    /// unicast peers, 1..=255. Default 255.
    #[serde(default = "values::max_ttl")]
    pub unicast_ttl: u8,
    /// keepalived `dont_track_primary`: the instance's interface (and its VMAC) going down
    /// does not put it in FAULT. Default false.
    #[serde(default)]
    pub dont_track_primary: bool,
    /// keepalived `down_timer_adverts`: how many advert intervals a BACKUP waits without
    /// an advert before it takes over, 1..=100 (Master_Down_Interval = that many
    /// Master_Adver_Intervals plus Skew_Time). Default 3, RFC 5798's.
    #[serde(default = "values::three")]
    pub down_timer_adverts: u8,
    /// keepalived `mcast_dst_ip`: the multicast group of this instance's adverts, of its
    /// address family (IPv6: link-local scope, `ff02::/16`). Default `[global]`'s
    /// `vrrp_mcast_group4` / `vrrp_mcast_group6`, else RFC 5798's 224.0.0.18 / ff02::12.
    #[serde(default)]
    pub mcast_dst_ip: Option<IpAddr>,
    /// Do not take over from a lower-priority master.
    #[serde(default)]
    pub nopreempt: bool,
    /// Preempt a lower-priority master only this long after start-up, or after first
    /// hearing it once back from Master or Fault or after a master of priority at least
    /// ours (keepalived's rules). Default 0.
    #[serde(default, with = "values::duration")]
    pub preempt_delay: Duration,
    /// Accept packets to the virtual addresses when not their owner (RFC 5798
    /// Accept_Mode). Default true, as keepalived: a full proxy serves on the VIPs. False
    /// (keepalived `no_accept`): while Master, nftables rules drop traffic to and from the
    /// VIPs, ARP and ND excepted (`lb_vrrp::accept`).
    #[serde(default = "values::yes")]
    pub accept: bool,
    /// keepalived `skip_check_adv_addr`: as a Backup, accept adverts whose virtual address
    /// list differs from ours (logged and counted) instead of dropping them when they come
    /// from the master it last heard, as keepalived's `vrrp_state_backup`; a Master always
    /// checks. Default false (keepalived).
    #[serde(default)]
    pub skip_check_adv_addr: bool,
    /// Delay of the second burst of gratuitous ARPs after becoming master. Default 5 s.
    #[serde(default = "values::five_seconds", with = "values::duration")]
    pub garp_master_delay: Duration,
    /// Gratuitous ARPs per burst. Default 5.
    #[serde(default = "values::five")]
    pub garp_master_repeat: u32,
    /// Repeat gratuitous ARPs this often while master. Default: never.
    #[serde(default, with = "values::opt_duration")]
    pub garp_master_refresh: Option<Duration>,
    /// Gratuitous ARPs per periodic burst (keepalived `garp_master_refresh_repeat`).
    /// Default 1.
    #[serde(default = "values::one")]
    pub garp_master_refresh_repeat: u32,
    /// Gratuitous ARPs sent when, as master, an advert of lower priority arrives: another
    /// node took over (across a partition, say) and pointed the neighbours at itself
    /// (keepalived `garp_lower_prio_repeat`). 0 sends none. Default 5.
    #[serde(default = "values::five")]
    pub garp_lower_prio_repeat: u32,
    /// Delay of the second such burst (keepalived `garp_lower_prio_delay`); 0 disables it.
    /// Default 5 s.
    #[serde(default = "values::five_seconds", with = "values::duration")]
    pub garp_lower_prio_delay: Duration,
    /// Do not answer an advert of lower priority with an advert at once (keepalived
    /// `lower_prio_no_advert`). Default false.
    #[serde(default)]
    pub lower_prio_no_advert: bool,
    /// As master, answer the advert of higher priority that makes this node backup with
    /// one advert of its own first (keepalived `higher_prio_send_advert`; RFC 5798 sends
    /// nothing then). Default false.
    #[serde(default)]
    pub higher_prio_send_advert: bool,
    /// Interfaces whose link state changes the priority.
    #[serde(default)]
    pub track_interface: Vec<TrackInterface>,
    /// `vrrp_script`s whose result changes the priority.
    #[serde(default)]
    pub track_script: Vec<TrackScript>,
    /// Virtual servers whose "no live backend" changes the priority (an lb extension: the
    /// node whose service is dead gives the VIPs away).
    #[serde(default)]
    pub track_service: Vec<TrackService>,
    /// `vrrp_track_process`es whose quorum changes the priority.
    #[serde(default)]
    pub track_process: Vec<TrackProcessRef>,
    /// `track_file`s whose value changes the priority.
    #[serde(default)]
    pub track_file: Vec<TrackFileRef>,
    /// `bfd_instance`s whose session state changes the priority.
    #[serde(default)]
    pub track_bfd: Vec<TrackBfdRef>,
    /// Run on entering MASTER.
    #[serde(default)]
    pub notify_master: Option<NotifyScript>,
    /// Run on entering BACKUP.
    #[serde(default)]
    pub notify_backup: Option<NotifyScript>,
    /// Run on entering FAULT.
    #[serde(default)]
    pub notify_fault: Option<NotifyScript>,
    /// Run when the instance stops: at SIGTERM, and when a reload restarts it (not when
    /// a reload removes it: see `notify_deleted`).
    #[serde(default)]
    pub notify_stop: Option<NotifyScript>,
    /// Run on every transition with `INSTANCE name state priority` as arguments.
    #[serde(default)]
    pub notify: Option<NotifyScript>,
    /// keepalived `notify_master_rx_lower_pri`: run (without arguments) when, as master,
    /// the instance hears an advert of lower priority: another node took over while they
    /// could not hear each other, and its notify_master may have taken a cloud address
    /// away; the notify FIFOs get `INSTANCE "NAME" MASTER_RX_LOWER_PRI PRIO` then too.
    #[serde(default)]
    pub notify_master_rx_lower_pri: Option<NotifyScript>,
    /// keepalived `notify_priority_changes`: the notify FIFOs get
    /// `INSTANCE "NAME" MASTER_PRIORITY PRIO` (or `BACKUP_PRIORITY`) whenever the effective
    /// priority changes. Default false.
    #[serde(default)]
    pub notify_priority_changes: bool,
    /// keepalived `notify_deleted [SCRIPT]`: how the instance is notified when a reload
    /// removes it (no instance of the new configuration is the same virtual router:
    /// interface, VRID, address family, VMAC or not, unicast or not and unicast source).
    /// Default [`NotifyDeleted::Fault`].
    #[serde(default)]
    pub notify_deleted: NotifyDeleted,
    /// keepalived `use_vmac`: the VIPs go on a macvlan interface of their own whose MAC
    /// is the virtual router MAC of RFC 5798 §7.3 (`00:00:5e:00:01:<VRID>`, IPv6
    /// `…:02:<VRID>`), and adverts leave from it, so that neighbours keep one MAC for the
    /// VIPs across a failover (`lb_vrrp::vmac`). Default false.
    #[serde(default)]
    pub use_vmac: bool,
    /// keepalived `promote_secondaries`: the interface's
    /// `net.ipv4.conf.<IF>.promote_secondaries` is set to 1 while lb-node runs (put back
    /// at its stop if it was 0), so that deleting the subnet's primary address promotes a
    /// VIP of that subnet instead of deleting it too. Not with `use_vmac` (an error).
    /// Default false.
    #[serde(default)]
    pub promote_secondaries: bool,
    /// keepalived `use_vmac NAME`: the VMAC's name (at most 15 bytes). Default
    /// `vrrp.<VRID>`; when an earlier instance already uses that name, `vrrp6.<VRID>` for
    /// an IPv6 instance, then `vrrp1.<VRID>`, `vrrp2.<VRID>`…, as keepalived names them.
    #[serde(default)]
    pub vmac_name: Option<String>,
    /// keepalived `use_vmac NAME MAC`: the VMAC's MAC address, `aa:bb:cc:dd:ee:ff`, or
    /// five octets to which the VRID is appended. Default the virtual router MAC.
    #[serde(default)]
    pub vmac_address: Option<String>,
    /// keepalived `vmac_xmit_base`: adverts leave from, and are read on, `interface` with
    /// its own MAC; the VIPs stay on the VMAC. Needed with `unicast_peer`. Default false.
    #[serde(default)]
    pub vmac_xmit_base: bool,
}

impl VrrpInstance {
    /// True for an IPv6 instance: its `unicast_src_ip`, else its first virtual address,
    /// else its `mcast_dst_ip` is IPv6 (lb-vrrp's rule for an instance's family).
    pub fn is_v6(&self) -> bool {
        self.unicast_src_ip
            .or_else(|| self.virtual_ipaddress.first().map(|a| a.address))
            .or(self.mcast_dst_ip)
            .is_some_and(|a| a.is_ipv6())
    }

    /// The interface a virtual address of this instance goes on: its `dev`, or the
    /// instance's interface; with `use_vmac`, an address of the instance's family without
    /// `dev` or with `dev` the instance's interface goes on the VMAC (`vmac_name`, set by
    /// [`Config::with_defaults`]), as keepalived places them.
    pub fn vip_dev(&self, v: &VirtualIp) -> String {
        let on_interface = v.dev.as_ref().is_none_or(|d| *d == self.interface);
        match &self.vmac_name {
            Some(vmac) if self.use_vmac && on_interface && v.address.is_ipv6() == self.is_v6() => {
                vmac.clone()
            }
            _ => v.dev.clone().unwrap_or_else(|| self.interface.clone()),
        }
    }

    /// The VMAC's MAC address (see [`VrrpInstance::vmac_address`]).
    ///
    /// # Errors
    /// A message for an address that does not parse or is not unicast.
    pub fn vmac_mac(&self) -> Result<[u8; 6], String> {
        let vrid = self.virtual_router_id;
        let Some(text) = &self.vmac_address else {
            return lb_vrrp::wire::Vrid::new(vrid)
                .map(|v| lb_vrrp::vmac::virtual_router_mac(v, self.is_v6()))
                .ok_or_else(|| format!("virtual_router_id {vrid} is invalid (1..=255)"));
        };
        let octets: Vec<u8> = text
            .split(':')
            .map(|o| {
                (o.len() == 2)
                    .then(|| u8::from_str_radix(o, 16).ok())
                    .flatten()
            })
            .collect::<Option<_>>()
            .ok_or_else(|| {
                format!("vmac_address {text:?}: not a MAC address (aa:bb:cc:dd:ee:ff)")
            })?;
        let mac: [u8; 6] = match octets.len() {
            5 => [octets[0], octets[1], octets[2], octets[3], octets[4], vrid],
            6 => [
                octets[0], octets[1], octets[2], octets[3], octets[4], octets[5],
            ],
            _ => {
                return Err(format!(
                    "vmac_address {text:?}: five or six octets expected"
                ))
            }
        };
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(format!(
                "vmac_address {text:?} is not a unicast MAC address"
            ));
        }
        Ok(mac)
    }
    /// An instance with every optional setting at its default (BACKUP, priority 100,
    /// advert_int 1 s, version 2, no authentication, no VIPs, multicast, preemptive, accept,
    /// gratuitous ARPs 5 × after 5 s, nothing tracked, no notify scripts).
    pub fn new(
        name: impl Into<String>,
        interface: impl Into<String>,
        virtual_router_id: u8,
    ) -> Self {
        Self {
            name: name.into(),
            interface: interface.into(),
            state: InitialState::Backup,
            virtual_router_id,
            priority: 100,
            advert_int: Duration::from_secs(1),
            version: 2,
            authentication: None,
            virtual_ipaddress: Vec::new(),
            virtual_ipaddress_excluded: Vec::new(),
            virtual_routes: Vec::new(),
            virtual_rules: Vec::new(),
            unicast_src_ip: None,
            track_src_ip: false,
            unicast_peer: Vec::new(),
            mcast_dst_ip: None,
            down_timer_adverts: 3,
            dont_track_primary: false,
            nopreempt: false,
            preempt_delay: Duration::ZERO,
            accept: true,
            skip_check_adv_addr: false,
            garp_master_delay: Duration::from_secs(5),
            garp_master_repeat: 5,
            garp_master_refresh: None,
            garp_master_refresh_repeat: 1,
            garp_lower_prio_repeat: 5,
            garp_lower_prio_delay: Duration::from_secs(5),
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            unicast_ttl: 255,
            track_interface: Vec::new(),
            track_script: Vec::new(),
            track_service: Vec::new(),
            track_process: Vec::new(),
            track_file: Vec::new(),
            track_bfd: Vec::new(),
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            notify_stop: None,
            notify: None,
            notify_master_rx_lower_pri: None,
            notify_priority_changes: false,
            notify_deleted: NotifyDeleted::Fault,
            use_vmac: false,
            promote_secondaries: false,
            vmac_name: None,
            vmac_address: None,
            vmac_xmit_base: false,
        }
    }
}

/// VRRPv2 authentication. Only `PASS` exists: `AH` is refused (RFC 3768 removed both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// Always [`AuthType::Pass`].
    pub auth_type: AuthType,
    /// The password, at most 8 bytes.
    pub auth_pass: String,
}

/// The authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    /// Simple text password.
    #[serde(rename = "PASS")]
    Pass,
}

/// A virtual address with its optional prefix, device and label.
///
/// Parsed from keepalived's syntax: `172.16.2.250/24 dev eth0 label eth0:1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualIp {
    /// The address.
    pub address: IpAddr,
    /// Prefix length (default /32 or /128).
    pub prefix_len: Option<u8>,
    /// Device to add it on (default: the instance's interface).
    pub dev: Option<String>,
    /// Interface label (`eth0:1`, IPv4 only).
    pub label: Option<String>,
}

impl FromStr for VirtualIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let first = words.next().ok_or("empty virtual address")?;
        let (addr, prefix) = match first.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (first, None),
        };
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => None,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => Some(n),
                _ => return Err(format!("bad prefix length /{p} for {address}")),
            },
        };
        let mut vip = Self {
            address,
            prefix_len,
            dev: None,
            label: None,
        };
        while let Some(w) = words.next() {
            let mut value = |what: &str| {
                words
                    .next()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{what} needs a value"))
            };
            match w {
                "dev" => vip.dev = Some(value("dev")?),
                "label" => {
                    if address.is_ipv6() {
                        return Err("label applies to IPv4 addresses only".into());
                    }
                    vip.label = Some(value("label")?);
                }
                other => {
                    return Err(format!(
                        "unsupported virtual address option {other:?} (supported: dev, label)"
                    ))
                }
            }
        }
        Ok(vip)
    }
}

impl fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(p) = self.prefix_len {
            write!(f, "/{p}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        if let Some(l) = &self.label {
            write!(f, " label {l}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for VirtualIp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::from_str(d)
    }
}

/// An interface whose link state the instance tracks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInterface {
    /// Interface name.
    pub interface: String,
    /// keepalived's weight (-254..=254): 0 (default) puts the instance in FAULT while the
    /// link is down (or not running, or missing); a negative weight is added to the
    /// priority while it is down, a positive one while it is up.
    #[serde(default)]
    pub weight: i32,
    /// keepalived `weight W reverse`: the weight applies to the opposite state (a positive
    /// weight is taken off while the link is up; with weight 0, FAULT while it is up).
    #[serde(default)]
    pub reverse: bool,
}

/// A `vrrp_script` the instance tracks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScript {
    /// The script's name.
    pub script: String,
    /// Overrides the script's own weight.
    #[serde(default)]
    pub weight: Option<i32>,
    /// Overrides the script's own `reverse`.
    #[serde(default)]
    pub reverse: Option<bool>,
}

/// A `vrrp_track_process` the instance tracks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackProcessRef {
    /// The `vrrp_track_process` name.
    pub process: String,
    /// Overrides its weight (-254..=254).
    #[serde(default)]
    pub weight: Option<i32>,
    /// Overrides its `reverse`.
    #[serde(default)]
    pub reverse: Option<bool>,
}

/// A `track_file` the instance tracks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackFileRef {
    /// The `track_file` name.
    pub file: String,
    /// Overrides its weight (-254..=254).
    #[serde(default)]
    pub weight: Option<i32>,
    /// Overrides its `reverse`.
    #[serde(default)]
    pub reverse: Option<bool>,
}

/// A `bfd_instance` the instance tracks: keepalived `track_bfd`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackBfdRef {
    /// The `bfd_instance` name.
    pub bfd: String,
    /// Overrides its weight (-253..=253).
    #[serde(default)]
    pub weight: Option<i32>,
    /// Overrides its `reverse`.
    #[serde(default)]
    pub reverse: Option<bool>,
}

/// A virtual server the instance tracks: while it has no live backend the priority changes
/// by `weight`, or the instance goes to FAULT when `weight` is absent or 0.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackService {
    /// The virtual server's name (by default its `ip:port`).
    pub virtual_server: String,
    /// Priority change while the service is dead (-254..=254); absent or 0 means FAULT.
    #[serde(default)]
    pub weight: Option<i32>,
}

/// A notify command: VRRP `notify*`, a virtual server's `quorum_up`/`quorum_down`, a
/// backend's `notify_up`/`notify_down`. Run by `/bin/sh -c` (with the event's arguments
/// appended where keepalived gives some), not waited for; as `user` and `group` when set,
/// as keepalived runs `notify_master SCRIPT USER [GROUP]`. In TOML a string (the command)
/// or a table `{ command = "…", user = "…", group = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyScript {
    /// The command line.
    pub command: String,
    /// The user it runs as, looked up when the configuration is loaded (an unknown user
    /// is an error) and by the node at the script's first run after each load, then
    /// remembered until the next (a user gone by then: the script does not run, with a
    /// warning). Default: the daemon's user.
    pub user: Option<String>,
    /// With `user`: the group it runs as, with no supplementary groups. Default: the
    /// user's primary group.
    pub group: Option<String>,
}

impl NotifyScript {
    /// `command`, run as the daemon's user.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            user: None,
            group: None,
        }
    }

    /// The user and group it runs as: `None` for the daemon's own.
    ///
    /// # Errors
    /// A message naming a user or group that does not exist (or a group without a user).
    pub fn run_as(&self) -> Result<Option<RunAs>, String> {
        match (&self.user, &self.group) {
            (Some(user), group) => RunAs::resolve(user, group.as_deref()).map(Some),
            (None, Some(_)) => Err("group needs a user".into()),
            (None, None) => Ok(None),
        }
    }
}

impl<'de> Deserialize<'de> for NotifyScript {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(values::NotifyScriptVisitor)
    }
}

/// How an instance that a reload removes is notified (keepalived 2.2.7
/// `clear_diff_vrrp`). Either way a master first sends priority 0 and removes its VIPs,
/// and the sync group's scripts do not run. In TOML `notify_deleted = false` (the
/// default), `true`, or a script (a command line or a table, as [`NotifyScript`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NotifyDeleted {
    /// As FAULT (keepalived's default, kept "for backward compatibility"):
    /// `notify … INSTANCE NAME FAULT PRIO` and the FIFO line `INSTANCE "NAME" FAULT PRIO`,
    /// but not `notify_fault` (keepalived 2.2.7 runs none either); nothing for an
    /// instance already in FAULT.
    #[default]
    Fault,
    /// As DELETED (keepalived `notify_deleted`): the script if given,
    /// `notify … INSTANCE NAME DELETED PRIO` and the FIFO line
    /// `INSTANCE "NAME" DELETED PRIO`, whatever the state.
    Deleted(Option<NotifyScript>),
}

impl<'de> Deserialize<'de> for NotifyDeleted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(values::NotifyDeletedVisitor)
    }
}

/// Instances that change state together (keepalived `vrrp_sync_group`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncGroup {
    /// Group name.
    pub name: String,
    /// Member instance names.
    pub group: Vec<String>,
    /// Run when the group enters MASTER.
    #[serde(default)]
    pub notify_master: Option<NotifyScript>,
    /// Run when the group enters BACKUP.
    #[serde(default)]
    pub notify_backup: Option<NotifyScript>,
    /// Run when the group enters FAULT.
    #[serde(default)]
    pub notify_fault: Option<NotifyScript>,
    /// Run once when the group stops, after its members (keepalived `notify_stop` in
    /// `vrrp_sync_group`): at SIGTERM, and when a reload stops the group to start it
    /// anew (not when it hands over to its successor, nor when the reload removes the
    /// group, as keepalived).
    #[serde(default)]
    pub notify_stop: Option<NotifyScript>,
    /// Run once per change of the group's state (and at its stop) with
    /// `GROUP NAME STATE 0` appended, as keepalived's `send_group_notifies`; the group's
    /// `notify_master`, `notify_backup` and `notify_fault` likewise run once per change,
    /// not once per member.
    #[serde(default)]
    pub notify: Option<NotifyScript>,
}

/// The listener protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP full proxy (default).
    #[default]
    Tcp,
    /// UDP proxy.
    Udp,
    /// HTTP/1.1 proxy (request counts and response classes per backend).
    Http,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "http" => Ok(Self::Http),
            "sctp" => Err("protocol SCTP is not supported (tcp, udp, http)".into()),
            _ => Err(format!(
                "unknown protocol {s:?} (expected tcp, udp or http)"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Http => "http",
        })
    }
}

/// A listener on `ip:port` and the backends it spreads connections over.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    /// The name `lbctl` and `track_service` use. Default `ip:port` (`ip:port/udp` for UDP).
    #[serde(default)]
    pub name: String,
    /// Listen address (usually a VIP, bound non-locally).
    pub listen: SocketAddr,
    /// `tcp` (default), `udp` or `http`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Scheduler, by keepalived `lb_algo` name (`rr` default in TOML, `wlc` in
    /// keepalived.conf as in keepalived; `wrr`, `lc`, `sh`, `mh`, …).
    #[serde(default = "values::default_algorithm", with = "values::algorithm")]
    pub lb_algo: Algorithm,
    /// Keep a client on its backend this long after its last connection. Default: off.
    #[serde(default, with = "values::opt_duration")]
    pub persistence_timeout: Option<Duration>,
    /// Client prefix persistence keys on (`255.255.255.0`, `24`, `24,64`). Default /32, /128.
    #[serde(default, with = "values::granularity")]
    pub persistence_granularity: Granularity,
    /// IPVS's `expire_quiescent_template` sysctl, per virtual server: a backend drained or
    /// set to weight 0 loses its persistent clients at once (`true`) instead of keeping
    /// them until their entries expire (`false`, default, as IPVS and HAProxy).
    #[serde(default)]
    pub expire_quiescent_template: bool,
    /// HAProxy's `slowstart`: a backend coming back into service (up after a failure, out
    /// of maintenance or drain, weight 0 → above 0) ramps from weight 1 to its weight over
    /// this time, in twentieths of it at least 1 s apart, so it is not flooded with new
    /// connections while cold. Applies to `wrr`, `swrr`, `wlc`, `sed`, `nq`, `random`,
    /// `p2c` and `peak_ewma` (others are warned of). Not at start-up, and a reload that
    /// restarts the virtual server ends ramps in progress. Default: off.
    #[serde(default, with = "values::opt_duration")]
    pub slow_start: Option<Duration>,
    /// Other backends tried when connecting to the chosen one fails. Default 1.
    #[serde(default = "values::one")]
    pub retries: u32,
    /// Timeout of a connection attempt to a backend. Default 5 s.
    #[serde(default = "values::five_seconds", with = "values::duration")]
    pub connect_timeout: Duration,
    /// Default interval of the backends' health checks. Default 60 s (keepalived's).
    #[serde(default = "values::sixty_seconds", with = "values::duration")]
    pub delay_loop: Duration,
    /// Start every backend as down until its first check passes (keepalived `alpha`).
    #[serde(default)]
    pub alpha: bool,
    /// UDP only: schedule every datagram on its own, not once per client session
    /// (keepalived `ops`, IPVS one-packet scheduling; for DNS, a client's queries spread over
    /// the backends). Default `false`.
    #[serde(default)]
    pub ops: bool,
    /// keepalived `quorum`: the least total weight of the primary backends able to take
    /// connections for the virtual server to have quorum. Without quorum, a `backup`
    /// backend (sorry server) takes every new connection; without one, the backends still
    /// up go on serving. Default 1; at least 1.
    #[serde(default = "values::one_u64")]
    pub quorum: u64,
    /// keepalived `hysteresis`: quorum is lost below `quorum - hysteresis` and regained at
    /// `quorum + hysteresis`. Default 0.
    #[serde(default)]
    pub hysteresis: u64,
    /// HAProxy `option allbackups`: with several `backup` backends, spread the connections
    /// over all of them while they serve. Default false: all go to the first one up, in
    /// configuration order, the next taking over when it fails (HAProxy's default;
    /// keepalived has one `sorry_server`). keepalived.conf: a bare `all_backups` in
    /// `virtual_server` (an lb extension).
    #[serde(default)]
    pub all_backups: bool,
    /// keepalived `quorum_up`: a command (run by `/bin/sh -c`, not waited for) when quorum
    /// is gained, and when the virtual server starts with quorum. Default: none.
    #[serde(default)]
    pub quorum_up: Option<NotifyScript>,
    /// keepalived `quorum_down`: a command run when quorum is lost, and when the virtual
    /// server starts without it. Default: none.
    #[serde(default)]
    pub quorum_down: Option<NotifyScript>,
    /// The backends (keepalived `real_server`; `sorry_server` is a backend with `backup`).
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// HTTP-mode settings and routes (`[virtual_server.http]`, TOML only); valid only with
    /// `protocol = "http"`. Absent: every setting at lb-proxy's default, no route.
    #[serde(default)]
    pub http: Option<HttpSettings>,
    /// TCP-mode settings (`[virtual_server.tcp]`, TOML only); valid only with `protocol =
    /// "tcp"`. Absent: every setting at its default ([`TcpSettings`]).
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    /// UDP settings (`[virtual_server.udp]`, TOML only); valid only with `protocol =
    /// "udp"`. Absent: every setting at its default ([`UdpSettings`]).
    #[serde(default)]
    pub udp: Option<UdpSettings>,
    /// Passive health (`[virtual_server.outlier_detection]`, TOML only). Absent: on, with
    /// the defaults listed on [`OutlierDetection`].
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
}

/// Passive health of a virtual server (`[virtual_server.outlier_detection]`, TOML only;
/// Envoy's outlier detection): failed connections the proxy reports (refused, timed out,
/// reset by the backend) and, in HTTP mode, failed responses eject a backend for a while, on
/// top of the active checks. Defaults: on, 5 failures in a row, every 5xx an HTTP failure,
/// ejections of 30 s × the backend's ejection count up to 300 s, at most 50 % of the
/// backends ejected at once, ended early by a passing active check. Envoy's interval
/// judgements — success rate and failure percentage — are available and off by default
/// (`enforcing_success_rate` 0: Envoy enforces it at 100 %, but there outlier detection is
/// something a cluster opts into; here it is on for every virtual server, and a success-rate
/// judgement over five backends at 100 % ejects one with a single failure in 100).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// `false`: the proxy's outcomes are ignored, only active checks mark backends down.
    pub enabled: bool,
    /// Failures in a row that eject a backend (Envoy `consecutive_gateway_failure` /
    /// `consecutive_5xx`), at least 1.
    pub consecutive_failures: u32,
    /// Which HTTP responses count as failures: `5xx` (any 5xx; Envoy `consecutive_5xx`,
    /// the one Envoy enforces by default; the default) or `gateway` (502, 503, 504; Envoy
    /// `consecutive_gateway_failure`).
    pub http_failures: HttpFailures,
    /// Length of a first ejection; the n-th ejection of a backend lasts n times as long.
    #[serde(with = "values::duration")]
    pub base_ejection_time: Duration,
    /// Longest ejection; when unset, 300 s or `base_ejection_time`, whichever is longer
    /// (Envoy's `max_ejection_time`). Set, it may not be below `base_ejection_time`.
    #[serde(with = "values::opt_duration")]
    pub max_ejection_time: Option<Duration>,
    /// Most backends ejected at once, in percent of the virtual server's backends (0..=100).
    pub max_ejection_percent: u8,
    /// Envoy's `interval`: each one a backend spends un-ejected takes one off its ejection
    /// count, so its next ejection is shorter. Default 10 s.
    #[serde(with = "values::duration")]
    pub interval: Duration,
    /// An active check that passes after a backend was ejected ends the ejection (Envoy's
    /// `successful_active_health_check_uneject_host`, on by default there too; HAProxy's
    /// `on-error mark-down` likewise leaves the way back to the checks). Without active
    /// checks the ejection runs its time.
    pub successful_active_health_check_uneject_host: bool,
    /// Envoy's success-rate ejection, judged each `interval`: the chance, in percent, that
    /// a backend whose success rate is below the mean by more than
    /// `success_rate_stdev_factor` / 1000 standard deviations is ejected (0..=100; default
    /// 0, off). Every 5xx (unless `[virtual_server.http] count_5xx = false`, which makes
    /// them successes for passive health) and every failed connection counts as a failure
    /// there.
    pub enforcing_success_rate: u8,
    /// Backends with `success_rate_request_volume` outcomes in the interval needed for a
    /// success-rate judgement (default 5, Envoy's).
    pub success_rate_minimum_hosts: u32,
    /// Requests or connections in the interval a backend needs to be judged by success
    /// rate (default 100, Envoy's).
    pub success_rate_request_volume: u32,
    /// Standard deviations below the mean, in thousandths, that make a success-rate
    /// outlier (default 1900: 1.9, Envoy's).
    pub success_rate_stdev_factor: u32,
    /// Envoy's failure-percentage ejection, judged each `interval`: the chance, in percent,
    /// that a backend whose failures reach `failure_percentage_threshold` % is ejected
    /// (0..=100; default 0, off, as in Envoy).
    pub enforcing_failure_percentage: u8,
    /// Failures, in percent of a backend's outcomes in the interval, that make it an
    /// outlier (0..=100; default 85, Envoy's).
    pub failure_percentage_threshold: u8,
    /// Backends with `failure_percentage_request_volume` outcomes in the interval needed
    /// for a failure-percentage judgement (default 5, Envoy's).
    pub failure_percentage_minimum_hosts: u32,
    /// Requests or connections in the interval a backend needs to be judged by failure
    /// percentage (default 50, Envoy's).
    pub failure_percentage_request_volume: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            http_failures: HttpFailures::Any5xx,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: None,
            max_ejection_percent: 50,
            interval: Duration::from_secs(10),
            successful_active_health_check_uneject_host: true,
            enforcing_success_rate: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_failure_percentage: 0,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
        }
    }
}

/// Which HTTP responses passive health counts as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum HttpFailures {
    /// 502, 503 and 504.
    #[serde(rename = "gateway")]
    Gateway,
    /// Every 5xx (the default).
    #[default]
    #[serde(rename = "5xx")]
    Any5xx,
}

impl OutlierDetection {
    /// lb-health's detector settings.
    ///
    /// # Errors
    /// lb-health's message for a value outside its domain (validation reports these with
    /// their location first).
    pub fn outlier_config(&self) -> Result<lb_health::OutlierConfig, String> {
        let mut b = lb_health::OutlierConfig::builder();
        if let Some(max) = self.max_ejection_time {
            b = b.max_ejection_time(max);
        }
        b.consecutive_failures(self.consecutive_failures)
            .failure_class(match self.http_failures {
                HttpFailures::Gateway => lb_health::outlier::FailureClass::Gateway,
                HttpFailures::Any5xx => lb_health::outlier::FailureClass::Any5xx,
            })
            .base_ejection_time(self.base_ejection_time)
            .max_ejection_percent(self.max_ejection_percent)
            .interval(self.interval)
            .enforcing_success_rate(self.enforcing_success_rate)
            .success_rate_minimum_hosts(self.success_rate_minimum_hosts)
            .success_rate_request_volume(self.success_rate_request_volume)
            .success_rate_stdev_factor(self.success_rate_stdev_factor)
            .enforcing_failure_percentage(self.enforcing_failure_percentage)
            .failure_percentage_threshold(self.failure_percentage_threshold)
            .failure_percentage_minimum_hosts(self.failure_percentage_minimum_hosts)
            .failure_percentage_request_volume(self.failure_percentage_request_volume)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// What hash schedulers (`sh`, `mh`, `ring_hash`) key on in HTTP mode (`hash_key`). A
/// request without the header or cookie is spread over the backends by a request count, as
/// HAProxy's `balance hdr()` falls back to round robin.
///
/// Parsed from `"client"` (default; HAProxy `balance source`), `"uri"` (`balance uri`: the
/// path without the query), `"uri_whole"` (`balance uri whole`: path and query),
/// `"header:NAME"` (`balance hdr(NAME)`) or `"cookie:NAME"`. The header name is checked by
/// [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client address.
    #[default]
    Client,
    /// The path, without the query.
    Uri,
    /// The path and query.
    UriWhole,
    /// The value of this request header.
    Header(String),
    /// The value of this cookie.
    Cookie(String),
}

/// Parses `client`, `uri`, `uri_whole` (case-insensitive), `header:NAME` or `cookie:NAME`.
///
/// # Errors
/// A message naming the value and the accepted forms for anything else (names are checked
/// by [`HashKey::to_source`], which validation calls).
impl FromStr for HashKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("client") {
            return Ok(Self::Client);
        }
        if t.eq_ignore_ascii_case("uri") {
            return Ok(Self::Uri);
        }
        if t.eq_ignore_ascii_case("uri_whole") {
            return Ok(Self::UriWhole);
        }
        match t.split_once(':') {
            Some((k, name)) if k.eq_ignore_ascii_case("header") => Ok(Self::Header(name.into())),
            Some((k, name)) if k.eq_ignore_ascii_case("cookie") => Ok(Self::Cookie(name.into())),
            _ => Err(format!(
                "unknown hash_key {s:?} (expected \"client\", \"uri\", \"uri_whole\", \"header:NAME\" or \"cookie:NAME\")"
            )),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client => f.write_str("client"),
            Self::Uri => f.write_str("uri"),
            Self::UriWhole => f.write_str("uri_whole"),
            Self::Header(n) => write!(f, "header:{n}"),
            Self::Cookie(n) => write!(f, "cookie:{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::from_str(d)
    }
}

impl HashKey {
    /// The lb-proxy form.
    ///
    /// # Errors
    /// A message naming the value when a header name is not a valid HTTP header name or a
    /// cookie name is empty or holds `=`, `;`, `,` or whitespace.
    pub fn to_source(&self) -> Result<HashKeySource, String> {
        Ok(match self {
            Self::Client => HashKeySource::ClientAddr,
            Self::Uri => HashKeySource::Uri,
            Self::UriWhole => HashKeySource::UriWhole,
            Self::Header(n) => {
                HashKeySource::Header(n.parse().map_err(|_| {
                    format!("hash_key {self}: {n:?} is not a valid HTTP header name")
                })?)
            }
            Self::Cookie(n) => {
                if n.is_empty()
                    || n.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "=;,".contains(c))
                {
                    return Err(format!("hash_key {self}: {n:?} is not a valid cookie name"));
                }
                HashKeySource::Cookie(n.clone())
            }
        })
    }
}

/// The TCP-mode settings of a `protocol = "tcp"` virtual server (`[virtual_server.tcp]`,
/// TOML only; keepalived.conf has no syntax for them), with HAProxy's names. Every key is
/// optional; the defaults are lb-proxy's ([`TcpProxyConfig::new`]). The backend connect
/// timeout is the virtual server's `connect_timeout`, the retries its `retries`, each
/// backend's limit its `maxconn`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Send a PROXY protocol header to each backend so that it learns the client's address
    /// (HAProxy `send-proxy` for `"v1"`, `send-proxy-v2` for `"v2"`): a full proxy's
    /// backends otherwise see the node's address, where LVS NAT showed them the client's.
    /// Default none.
    pub send_proxy: Option<ProxyVersion>,
    /// Require a PROXY protocol v1/v2 header from every client (HAProxy `accept-proxy`,
    /// behind another load balancer that sends it) and take the client address from it
    /// (for persistence, source hashing and `send_proxy`); a connection without a valid
    /// header is closed and counted. Default false.
    pub accept_proxy: bool,
    /// How long a client has to send its PROXY header (with `accept_proxy`). Default 5 s;
    /// above 0.
    #[serde(with = "values::duration")]
    pub accept_proxy_timeout: Duration,
    /// Close a connection when neither side sent anything, nor took any of what was sent to
    /// it, for this long (HAProxy `timeout client`/`timeout server`, IPVS's `tcp` timeout).
    /// Default 900 s; 0 never closes one for idleness.
    #[serde(with = "values::duration")]
    pub idle_timeout: Duration,
    /// The most client connections open at once on this virtual server (HAProxy frontend
    /// `maxconn`); more wait in the kernel's backlog. Default 4096 (two descriptors each);
    /// at least 1.
    pub maxconn: usize,
    /// How many connections may wait for a backend slot while every eligible backend is at
    /// its `maxconn` (HAProxy `maxqueue`); beyond it they are refused. Default 1024; 0 is
    /// no queue (HAProxy's 0 is unlimited).
    pub maxqueue: usize,
    /// The longest a connection waits in that queue before it is refused (HAProxy `timeout
    /// queue`). Default 5 s; above 0.
    #[serde(with = "values::duration")]
    pub timeout_queue: Duration,
    /// The local address of connections to the backends (HAProxy `source`). Default: the
    /// kernel's choice.
    pub source: Option<IpAddr>,
    /// Connect to the backends from the client's address (HAProxy `usesrc clientip`,
    /// `"clientip"`; `usesrc client`, `"client"`: its port too), so that they see it as
    /// LVS NAT showed it, with no PROXY header. Linux transparent proxying: the backends
    /// route the clients' addresses via this node, as LVS NAT real servers do, and this
    /// node delivers those replies to its sockets (see the README). Not with `source`.
    /// Default none.
    pub usesrc: Option<UseSrcSetting>,
    /// Forward with `splice(2)` (zero copy, falling back to copying where it cannot be
    /// used) or, `false`, always copy through user space. Default true.
    pub splice: bool,
    /// Write one line per connection to this file as it ends (HAProxy `option tcplog`):
    /// `client:port [date] virtual_server virtual_server/real_server Tw/Tc/Tt
    /// bytes_to_client termination_state retries bytes_to_backend` (ms; `-1`: did not
    /// happen; dates UTC). Opened, shared and reopened at reloads as `[virtual_server.http]`
    /// `access_log`. Relative: from the configuration file's directory. Default none.
    pub access_log: Option<PathBuf>,
}

/// The settings of a `protocol = "udp"` virtual server (`[virtual_server.udp]`, TOML only;
/// keepalived.conf has no syntax for them: IPVS's UDP timeout is `ipvsadm --set`). Every
/// key is optional; the defaults are lb-proxy's ([`UdpProxyConfig::new`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpSettings {
    /// A session (a client's flow to its real server; with `ops`, one per client and real
    /// server) ends after this long without a datagram either way (IPVS's `udp` timeout,
    /// Envoy's UDP proxy `idle_timeout`). Short for request-reply protocols such as DNS,
    /// where every query may come from a new port. Default 60 s; above 0.
    #[serde(with = "values::duration")]
    pub idle_timeout: Duration,
    /// The most sessions open at once (each holds a descriptor, counted against the
    /// process's limit); a datagram that would open one more is dropped and counted
    /// (`sessions refused` in `lbctl status`). Default 4096; at least 1.
    pub max_sessions: usize,
    /// Send to the backends from the client's address (`"clientip"`; `"client"`: its port
    /// too), as `[virtual_server.tcp]`'s `usesrc` (see there): a DNS server behind the node
    /// sees its clients, as behind LVS NAT. Default none.
    pub usesrc: Option<UseSrcSetting>,
}

impl Default for UdpSettings {
    fn default() -> Self {
        let d = UdpProxyConfig::new(Vec::new());
        Self {
            idle_timeout: d.idle_timeout,
            max_sessions: d.max_sessions,
            usesrc: None,
        }
    }
}

impl UdpSettings {
    /// Applies these settings to `c`.
    pub fn apply(&self, c: &mut UdpProxyConfig) {
        c.idle_timeout = self.idle_timeout;
        c.max_sessions = self.max_sessions;
        c.usesrc = self.usesrc.map(UseSrcSetting::to_proxy);
    }
}

/// `usesrc`: which of the client's address backend connections leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UseSrcSetting {
    /// The client's IP address, any port (HAProxy `usesrc clientip`).
    #[serde(rename = "clientip")]
    ClientIp,
    /// The client's IP address and port (HAProxy `usesrc client`).
    #[serde(rename = "client")]
    Client,
}

impl UseSrcSetting {
    /// lb-proxy's value.
    pub fn to_proxy(self) -> lb_proxy::sockopt::UseSrc {
        match self {
            Self::ClientIp => lb_proxy::sockopt::UseSrc::ClientIp,
            Self::Client => lb_proxy::sockopt::UseSrc::Client,
        }
    }
}

/// A PROXY protocol version to send (`send_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProxyVersion {
    /// The text header (HAProxy `send-proxy`).
    #[serde(rename = "v1")]
    V1,
    /// The binary header (HAProxy `send-proxy-v2`).
    #[serde(rename = "v2")]
    V2,
}

impl Default for TcpSettings {
    fn default() -> Self {
        let d = TcpProxyConfig::new(Vec::new());
        Self {
            send_proxy: None,
            accept_proxy: false,
            accept_proxy_timeout: AcceptProxy::default().header_timeout,
            idle_timeout: d.idle_timeout.unwrap_or(Duration::ZERO),
            maxconn: d.maxconn,
            maxqueue: d.maxqueue,
            timeout_queue: d.queue_timeout,
            source: None,
            usesrc: None,
            splice: d.forward_mode == ForwardMode::Auto,
            access_log: None,
        }
    }
}

impl TcpSettings {
    /// Applies these settings to `c`.
    pub fn apply(&self, c: &mut TcpProxyConfig) {
        c.send_proxy = self.send_proxy.map(|v| match v {
            ProxyVersion::V1 => lb_proxy::proxy_protocol::Version::V1,
            ProxyVersion::V2 => lb_proxy::proxy_protocol::Version::V2,
        });
        c.accept_proxy = self.accept_proxy.then_some(AcceptProxy {
            header_timeout: self.accept_proxy_timeout,
        });
        c.idle_timeout = (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        c.maxconn = self.maxconn;
        c.maxqueue = self.maxqueue;
        c.queue_timeout = self.timeout_queue;
        c.source = self.source;
        c.usesrc = self.usesrc.map(UseSrcSetting::to_proxy);
        c.forward_mode = if self.splice {
            ForwardMode::Auto
        } else {
            ForwardMode::Copy
        };
    }
}

/// The HTTP-mode settings of a `protocol = "http"` virtual server (`[virtual_server.http]`,
/// TOML only; keepalived.conf has no syntax for them). Every key is optional; the defaults
/// are lb-proxy's ([`HttpProxyConfig::new`]). The backend connect timeout is the virtual
/// server's `connect_timeout` and the retries its `retries`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Append the client address to `X-Forwarded-For` (HAProxy `option forwardfor`).
    /// Default true.
    pub forwardfor: bool,
    /// Set `X-Forwarded-Proto: http`. Default true.
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Port` to the port the client connected to. Default true.
    pub x_forwarded_port: bool,
    /// Append an RFC 7239 `Forwarded` element. Default false.
    pub forwarded: bool,
    /// Expect a PROXY protocol v1/v2 header on every client connection (HAProxy
    /// `accept-proxy`) and take the client address from it. Default false.
    pub accept_proxy: bool,
    /// How long a client has to send its PROXY header (only with `accept_proxy`). Default
    /// 5 s; must be above 0.
    #[serde(with = "values::duration")]
    pub accept_proxy_timeout: Duration,
    /// What hash schedulers key on. Default `client`.
    pub hash_key: HashKey,
    /// Time a client has to send a complete request head (HAProxy `timeout http-request`):
    /// from accept for a connection's first request, from its first byte for a later one.
    /// Default 10 s; must be above 0.
    #[serde(with = "values::duration")]
    pub timeout_http_request: Duration,
    /// Time a keep-alive client connection may wait for its next request (HAProxy `timeout
    /// http-keep-alive`). Default 60 s; must be above 0.
    #[serde(with = "values::duration")]
    pub timeout_http_keep_alive: Duration,
    /// Time a backend has to send its response head; past it the client gets 504 (HAProxy
    /// `timeout server`). Also the longest gap allowed in a response body (the backend is
    /// then cut off and counted). Default 30 s; must be above 0.
    #[serde(with = "values::duration")]
    pub timeout_server: Duration,
    /// How long an idle pooled backend connection is kept. Default 60 s; must be above 0.
    #[serde(with = "values::duration")]
    pub backend_idle_timeout: Duration,
    /// Time the client may leave a request waiting (HAProxy `timeout client`, an
    /// inactivity timeout): the longest gap in a request body being uploaded (then 408 and
    /// the connection closes) and the longest a response or WebSocket tunnel may wait for
    /// the client to read (then the connection closes). Default 30 s; must be above 0.
    #[serde(with = "values::duration")]
    pub timeout_client: Duration,
    /// Largest request head in bytes; larger ones get 431. Default 16384; at least 8192.
    pub max_header_bytes: usize,
    /// Most request headers; more get 431. Also the most a backend response may have (more:
    /// 502). Default 100; at least 1.
    pub max_headers: usize,
    /// Idle keep-alive connections kept per backend; 0 opens one connection per request.
    /// Default 64.
    pub max_idle_per_backend: usize,
    /// Speak HTTP/2 to clients that ask for it, besides HTTP/1.1 (RFC 9113): on an HTTPS
    /// listener by ALPN (`h2` offered before `http/1.1`: HAProxy `bind … ssl alpn
    /// h2,http/1.1`, nginx `http2 on`), on a plain one by prior knowledge (a connection
    /// opening with the HTTP/2 preface, "h2c"). Each stream is a request, balanced, routed
    /// and logged on its own; the real servers are still spoken to in HTTP/1.1. The first
    /// request must come within `timeout_http_request`; `timeout_http_keep_alive` without
    /// a stream closes the connection (GOAWAY); when the client reads nothing (its
    /// flow-control windows stay shut) for `timeout_client`, the streams waiting on it are
    /// reset. WebSocket over HTTP/2 is not offered (clients open WebSockets in HTTP/1.1).
    /// Default false.
    pub http2: bool,
    /// With `http2`: the most streams (requests) in flight at once on one client
    /// connection (HAProxy `tune.h2.max-concurrent-streams`, nginx
    /// `http2_max_concurrent_streams`); more are refused with `REFUSED_STREAM`. Default
    /// 100; at least 1.
    pub max_concurrent_streams: u32,
    /// The most client connections open at once on this virtual server (HAProxy frontend
    /// `maxconn`; a WebSocket tunnel counts until it closes); more wait in the kernel's
    /// backlog. Default 4096 (up to three descriptors each, with a backend connection and
    /// the pool's; with `http2`, an HTTP/2 connection's streams may each hold a backend
    /// connection, up to `max_concurrent_streams`); at least 1.
    pub maxconn: usize,
    /// Count 5xx responses as backend failures for passive health. Default true.
    pub count_5xx: bool,
    /// Routing rules, tried in order; requests no rule matches go to this virtual server's
    /// own backends (HAProxy `use_backend` / `default_backend`).
    #[serde(rename = "route")]
    pub routes: Vec<HttpRoute>,
    /// Make the listener HTTPS with this PEM certificate chain (the server's certificate
    /// first, then intermediates): HAProxy `bind … ssl crt`, nginx `ssl_certificate`. The
    /// backends are still spoken to in plain HTTP and get `X-Forwarded-Proto: https`.
    /// Read at every load: a renewed certificate is taken at the next reload. A relative
    /// path is taken from the configuration file's directory. Default none (plain HTTP).
    pub tls_certificate: Option<PathBuf>,
    /// The PEM private key of `tls_certificate` (PKCS#8, RSA or EC); nginx
    /// `ssl_certificate_key`. Default: found in the `tls_certificate` file, as HAProxy's
    /// `crt` reads both from one file.
    pub tls_key: Option<PathBuf>,
    /// More certificates for the HTTPS listener (`[[virtual_server.http.tls_sni]]`), chosen
    /// by the name a client asks for (SNI), as HAProxy's `crt-list` or nginx's
    /// `server_name`: the first certificate, `tls_certificate` included, whose subject
    /// alternative names cover it (exact or `*.` wildcard); `tls_certificate` when none
    /// does or the client names none. Of those, the first the client can verify: an RSA
    /// and an ECDSA certificate for one name serve each client the one it supports. Each
    /// must name a DNS name in its subject alternative names (a name only in the CN is an
    /// error: SNI would never choose it). Needs `tls_certificate`. Default none.
    pub tls_sni: Vec<TlsSni>,
    /// The contents of the certificate and key files, read when the configuration is
    /// loaded ([`Config::with_defaults`]), or which file could not be read and why;
    /// compared by a reload, which so restarts the virtual server on a renewed certificate.
    #[serde(skip)]
    pub tls_files: Option<Result<TlsFiles, TlsFileError>>,
    /// Answer every request with a redirect to the same host, path and query over https
    /// (HAProxy `http-request redirect scheme https`, nginx `return 301
    /// https://$host$request_uri`): 301 for GET and HEAD, 308 for the others; nothing is
    /// forwarded. The plain HTTP virtual server on port 80 beside an HTTPS one. Default
    /// false.
    pub redirect_https: bool,
    /// The https port redirects name (omitted from the `Location` when 443). Default 443.
    pub redirect_https_port: u16,
    /// Speak TLS to the real servers (HAProxy `server … ssl`, nginx `proxy_pass
    /// https://…`): requests are re-encrypted, also those other HTTP virtual servers
    /// route here. TLS 1.3 and 1.2, ALPN `http/1.1`; the handshake has `connect_timeout`
    /// too; a handshake that fails (a certificate that does not verify) is a failed
    /// connect: counted, retried on another real server, 502 when none is left. Default
    /// false.
    pub backend_tls: bool,
    /// Speak HTTP/2 to the real servers (HAProxy `server … proto h2`, Envoy's cluster
    /// `http2_protocol_options`, nginx `grpc_pass`): with prior knowledge in plain TCP
    /// (h2c), with ALPN `h2` alone over `backend_tls`. A real server's requests share its
    /// connection as streams, whatever the clients speak (another is opened at its stream
    /// limit, up to 16); trailers pass
    /// (gRPC, with `te: trailers` kept). A WebSocket to these real servers gets 501. Checks
    /// still speak HTTP/1.1. Default false: HTTP/1.1, kept-alive connections per real
    /// server.
    pub backend_http2: bool,
    /// How the real servers' certificates are checked (HAProxy `verify`): `"required"`
    /// (default; needs `backend_ca_file`, as HAProxy refuses `verify required` without a
    /// `ca-file`) or `"none"` (any certificate: encrypted, not authenticated).
    pub backend_verify: Option<BackendVerify>,
    /// The PEM certificates the real servers' chains must lead to (HAProxy `ca-file`).
    /// Read at every load; relative: from the configuration file's directory.
    pub backend_ca_file: Option<PathBuf>,
    /// The name sent as SNI and, with `backend_verify = "required"`, the name the
    /// certificates must be valid for (HAProxy `sni str(…)`; an IP address is verified
    /// but not sent: TLS sends only DNS names as SNI). Default none: no SNI, and only the
    /// chain is verified, as HAProxy without `sni` or `verifyhost` (real servers are
    /// addressed by IP, their certificates name hosts).
    pub backend_sni: Option<String>,
    /// The contents of `backend_ca_file`, read when the configuration is loaded, or why it
    /// could not be read; compared by a reload, which so restarts the virtual server on a
    /// renewed CA.
    #[serde(skip)]
    pub backend_ca: Option<Result<Vec<u8>, TlsFileError>>,
    /// A client certificate (PEM chain) presented to real servers that ask for one
    /// (HAProxy's server `crt`; mutual TLS). Read at every load; relative: from the
    /// configuration file's directory. Default none.
    pub backend_certificate: Option<PathBuf>,
    /// The PEM private key of `backend_certificate`. Default: found in the
    /// `backend_certificate` file, as HAProxy's `crt` reads both from one file.
    pub backend_key: Option<PathBuf>,
    /// The contents of `backend_certificate` and its key, read when the configuration is
    /// loaded, or which file could not be read and why. Its `Debug` shows no key.
    #[serde(skip)]
    pub backend_client_files: Option<Result<TlsFiles, TlsFileError>>,
    /// Write one line per request to this file once its response has ended (HAProxy
    /// `option httplog`, nginx `access_log`), in `access_log_format`. Opened in append
    /// mode (created 0640) when the virtual server starts, reopened at every reload (after
    /// logrotate moved it); virtual servers naming one file share it. Lines are written by
    /// a thread of their own: when the disk does not keep up, lines are dropped (counted,
    /// logged at WARN) rather than requests held; a stopping node writes out what is
    /// queued. Requests refused before they were parsed whole (a malformed head: 400, 414,
    /// 431; a head not complete in time: 408) are logged with `<BADREQ>` (httplog) or `-`
    /// (combined) for their request line and no real server, as HAProxy logs them; a
    /// connection that sent nothing is not logged. Relative: from the configuration file's
    /// directory. Default none.
    pub access_log: Option<PathBuf>,
    /// The line format of `access_log`: `"httplog"` (default; HAProxy's `option httplog`
    /// fields: `client:port [date] virtual_server pool/real_server TR/Tw/Tc/Tr/Ta status
    /// bytes - - termination_state retries "request line"`) or `"combined"` (nginx's:
    /// `client - - [date] "request line" status bytes "referer" "user agent"`). Dates in
    /// UTC.
    pub access_log_format: AccessLogFormat,
}

/// `[virtual_server.http] access_log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// HAProxy's `option httplog` ([`lb_proxy::http::AccessEntry::write_httplog`]).
    #[default]
    Httplog,
    /// nginx's `combined` ([`lb_proxy::http::AccessEntry::write_combined`]).
    Combined,
}

/// `[virtual_server.http] backend_verify` (HAProxy's server `verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendVerify {
    /// Certificates must lead to `backend_ca_file` (and name `backend_sni` when set).
    #[default]
    Required,
    /// Any certificate.
    None,
}

/// One more certificate of an HTTPS listener (`[[virtual_server.http.tls_sni]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSni {
    /// Its PEM certificate chain (relative: from the configuration file's directory).
    pub certificate: PathBuf,
    /// Its PEM private key. Default: found in the `certificate` file.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// The PEM texts of an HTTPS listener's certificates and keys
/// ([`HttpSettings::tls_files`]). Its `Debug` shows the sizes, never a key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chains' PEM texts and their keys' (a chain's file again when it
    /// has no key file): `tls_certificate`'s first, then `tls_sni`'s in order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<(usize, usize)> =
            self.pairs.iter().map(|(c, k)| (c.len(), k.len())).collect();
        f.debug_struct("TlsFiles")
            .field("chain_and_key_bytes", &sizes)
            .finish()
    }
}

/// Why an HTTPS listener's files cannot be used: the setting naming the file (its path
/// under `[virtual_server.http]`: `tls_certificate`, `tls_key`, `tls_sni[0].certificate`,
/// …) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    /// The setting that names the file.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl HttpSettings {
    /// Reads `backend_ca_file`, `backend_certificate` and `backend_key` into
    /// [`HttpSettings::backend_ca`] and [`HttpSettings::backend_client_files`].
    fn read_backend_tls_files(&mut self) {
        let read = |at: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TlsFileError {
                at: at.into(),
                message: format!("{at} {}: {e}", p.display()),
            })
        };
        self.backend_ca = self
            .backend_ca_file
            .as_ref()
            .map(|p| read("backend_ca_file", p));
        self.backend_client_files = self.backend_certificate.as_ref().map(|c| {
            let chain = read("backend_certificate", c)?;
            let key = match &self.backend_key {
                Some(k) => read("backend_key", k)?,
                None => chain.clone(),
            };
            Ok(TlsFiles {
                pairs: vec![(chain, key)],
            })
        });
    }

    /// lb-proxy's TLS to the real servers from `backend_tls`, `backend_verify`,
    /// [`HttpSettings::backend_ca`] and `backend_sni`: `Ok(None)` without `backend_tls`.
    ///
    /// # Errors
    /// The setting at fault and why: `backend_ca_file` missing while verifying, unreadable
    /// or holding no usable certificate; `backend_sni` not a DNS name or IP address.
    pub fn backend_tls(&self) -> Result<Option<BackendTls>, TlsFileError> {
        if !self.backend_tls {
            return Ok(None);
        }
        // lb-proxy's reason, after what it concerns.
        let fail = |at: &str, what: String, e: lb_proxy::http::Error| TlsFileError {
            at: at.to_owned(),
            message: match e {
                lb_proxy::http::Error::InvalidConfig { reason, .. } => format!("{what}: {reason}"),
                e => format!("{what}: {e}"),
            },
        };
        let verify = match self.backend_verify.unwrap_or_default() {
            BackendVerify::None => Verify::None,
            BackendVerify::Required => match (&self.backend_ca, &self.backend_ca_file) {
                (Some(Ok(pem)), Some(path)) => {
                    Verify::Required(BackendTls::roots_from_pem(pem).map_err(|e| {
                        fail(
                            "backend_ca_file",
                            format!("backend_ca_file {}", path.display()),
                            e,
                        )
                    })?)
                }
                (Some(Err(e)), _) => return Err(e.clone()),
                _ => {
                    return Err(TlsFileError {
                        at: "backend_tls".into(),
                        message: "backend_tls verifies the real servers' certificates \
                                  (backend_verify = \"required\", the default) but no \
                                  backend_ca_file says what to trust: set it (HAProxy's \
                                  ca-file), or backend_verify = \"none\" to take any \
                                  certificate"
                            .into(),
                    })
                }
            },
        };
        let client = match &self.backend_client_files {
            None => None,
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(f)) => f.pairs.first(),
        };
        let Some((chain, key)) = client else {
            return BackendTls::new(verify, self.backend_sni.as_deref())
                .map(Some)
                .map_err(|e| fail("backend_sni", "backend_sni".into(), e));
        };
        BackendTls::with_client_certificate(verify, self.backend_sni.as_deref(), chain, key)
            .map(Some)
            .map_err(|e| match e {
                lb_proxy::http::Error::InvalidConfig {
                    setting: "tls key",
                    reason,
                } => {
                    let at = if self.backend_key.is_some() {
                        "backend_key"
                    } else {
                        "backend_certificate"
                    };
                    TlsFileError {
                        at: at.into(),
                        message: format!("{at}: {reason}"),
                    }
                }
                lb_proxy::http::Error::InvalidConfig {
                    setting: "tls certificate",
                    reason,
                } => TlsFileError {
                    at: "backend_certificate".into(),
                    message: format!("backend_certificate: {reason}"),
                },
                e => fail("backend_sni", "backend_sni".into(), e),
            })
    }

    /// Reads the certificate and key files into [`HttpSettings::tls_files`].
    fn read_tls_files(&mut self) {
        let Some(cert) = &self.tls_certificate else {
            self.tls_files = None;
            return;
        };
        let read = |at: String, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TlsFileError {
                message: format!("{at} {}: {e}", p.display()),
                at,
            })
        };
        let mut named = vec![(
            "tls_certificate".to_owned(),
            cert.as_path(),
            self.tls_key
                .as_ref()
                .map(|k| ("tls_key".to_owned(), k.as_path())),
        )];
        for (i, s) in self.tls_sni.iter().enumerate() {
            named.push((
                format!("tls_sni[{i}].certificate"),
                s.certificate.as_path(),
                s.key
                    .as_ref()
                    .map(|k| (format!("tls_sni[{i}].key"), k.as_path())),
            ));
        }
        self.tls_files = Some(
            named
                .into_iter()
                .map(|(at, chain, key)| {
                    let chain = read(at, chain)?;
                    let key = match key {
                        Some((at, k)) => read(at, k)?,
                        None => chain.clone(),
                    };
                    Ok((chain, key))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|pairs| TlsFiles { pairs }),
        );
    }

    /// lb-proxy's TLS termination from [`HttpSettings::tls_files`]: `Ok(None)` for a
    /// plain HTTP listener.
    ///
    /// # Errors
    /// Which file could not be read or used, and why (what rustls says).
    pub fn tls_termination(&self) -> Result<Option<TlsTermination>, TlsFileError> {
        let files = match &self.tls_files {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(f)) => f,
        };
        let pairs: Vec<(&[u8], &[u8])> = files
            .pairs
            .iter()
            .map(|(c, k)| (c.as_slice(), k.as_slice()))
            .collect();
        TlsTermination::from_pems(&pairs).map(Some).map_err(|e| {
            // Which pair, and whether its key or its certificate: the first pair that does
            // not build on its own, and the setting its error names. Its own message: the
            // location names the pair, not lb-proxy's count from 1.
            let (n, key, message) = pairs
                .iter()
                .enumerate()
                .find_map(|(n, (c, k))| match TlsTermination::from_pem(c, k) {
                    Err(e @ lb_proxy::http::Error::InvalidConfig { setting, .. }) => {
                        Some((n, setting == "tls key", e.to_string()))
                    }
                    _ => None,
                })
                .or_else(|| {
                    // Each builds alone but not together: a `tls_sni` certificate that SNI
                    // would never choose.
                    (1..pairs.len()).find_map(|n| {
                        TlsTermination::check_sni_certificate(pairs[n].0)
                            .err()
                            .map(|e| (n, false, e.to_string()))
                    })
                })
                .unwrap_or_else(|| (0, false, e.to_string()));
            let at = match n.checked_sub(1) {
                None if key && self.tls_key.is_some() => "tls_key".to_owned(),
                None => "tls_certificate".to_owned(),
                Some(i) if key && self.tls_sni.get(i).is_some_and(|s| s.key.is_some()) => {
                    format!("tls_sni[{i}].key")
                }
                Some(i) => format!("tls_sni[{i}].certificate"),
            };
            TlsFileError { at, message }
        })
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        let d = HttpProxyConfig::new("");
        Self {
            forwardfor: d.forwarded.x_forwarded_for,
            x_forwarded_proto: d.forwarded.x_forwarded_proto,
            x_forwarded_port: d.forwarded.x_forwarded_port,
            forwarded: d.forwarded.forwarded,
            accept_proxy: d.accept_proxy.is_some(),
            accept_proxy_timeout: d.accept_proxy.unwrap_or_default().header_timeout,
            hash_key: HashKey::Client,
            timeout_http_request: d.timeouts.header_read,
            timeout_http_keep_alive: d.timeouts.client_idle,
            timeout_server: d.timeouts.backend_response,
            backend_idle_timeout: d.timeouts.backend_idle,
            timeout_client: d.timeouts.client,
            max_header_bytes: d.limits.max_header_bytes,
            max_headers: d.limits.max_headers,
            max_idle_per_backend: d.limits.max_idle_per_backend,
            http2: d.http2,
            max_concurrent_streams: d.limits.max_concurrent_streams,
            maxconn: d.maxconn,
            count_5xx: d.passive_health.count_5xx,
            routes: Vec::new(),
            tls_certificate: None,
            tls_key: None,
            tls_sni: Vec::new(),
            tls_files: None,
            redirect_https: false,
            redirect_https_port: 443,
            backend_tls: false,
            backend_http2: false,
            backend_verify: None,
            backend_ca_file: None,
            backend_sni: None,
            backend_ca: None,
            backend_certificate: None,
            backend_key: None,
            backend_client_files: None,
            access_log: None,
            access_log_format: AccessLogFormat::Httplog,
        }
    }
}

/// A routing rule (`[[virtual_server.http.route]]`): requests whose `Host` and path match
/// are served by the backends of another HTTP virtual server of this node (Edge-LB
/// `linkBackend`, HAProxy `use_backend … if …`). Both conditions are optional; a rule
/// with neither matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    /// `example.com` (exact, case-insensitive, port ignored) or `*.example.com` (any name
    /// below it, not `example.com` itself). Default: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// A byte prefix of the request path, starting with `/` (`/api` matches `/api`,
    /// `/api/x` and `/apix`). Default: any path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The name of the `protocol = "http"` virtual server whose backends (with their health
    /// checks and counters) serve matching requests; not this one.
    pub virtual_server: String,
}

/// The [`BackendId`] of a virtual server's `index`-th configured backend (0-based): ids count
/// from 1 in configuration order.
pub fn backend_id(index: usize) -> BackendId {
    BackendId(u32::try_from(index + 1).unwrap_or(u32::MAX))
}

impl VirtualServer {
    /// A TCP virtual server on `listen` with the defaults: name `ip:port`, `rr`, no
    /// persistence, 1 retry, connect timeout 5 s, delay_loop 60 s, no backend.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            name: default_vs_name(listen, Protocol::Tcp),
            listen,
            protocol: Protocol::Tcp,
            lb_algo: Algorithm::RoundRobin,
            persistence_timeout: None,
            persistence_granularity: Granularity::default(),
            expire_quiescent_template: false,
            slow_start: None,
            retries: 1,
            connect_timeout: Duration::from_secs(5),
            delay_loop: Duration::from_secs(60),
            alpha: false,
            ops: false,
            quorum: 1,
            hysteresis: 0,
            all_backups: false,
            quorum_up: None,
            quorum_down: None,
            backends: Vec::new(),
            http: None,
            tcp: None,
            udp: None,
            outlier_detection: OutlierDetection::default(),
        }
    }

    /// The virtual servers this one routes requests to (`http.route[].virtual_server`), in
    /// rule order, each once.
    pub fn route_targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in self.http.iter().flat_map(|h| &h.routes) {
            if !out.contains(&r.virtual_server.as_str()) {
                out.push(&r.virtual_server);
            }
        }
        out
    }

    /// The lb-proxy settings of this virtual server in HTTP mode: `http` (or its defaults)
    /// mapped onto [`HttpProxyConfig`], with `default_pool` and pool names being virtual
    /// server names (a route's pool is its target's name), `retries` from `retries` and the
    /// backend connect timeout from `connect_timeout`.
    ///
    /// # Errors
    /// A message for a hash-key header or cookie name or a route host that lb-proxy refuses
    /// (after [`Config::validate`] passed, none).
    pub fn http_proxy_config(&self) -> Result<HttpProxyConfig, String> {
        let default = HttpSettings::default();
        let h = self.http.as_ref().unwrap_or(&default);
        let mut c = HttpProxyConfig::new(self.name.clone());
        c.default_pool = Some(self.name.clone());
        c.retries = self.retries;
        c.timeouts.backend_connect = self.connect_timeout;
        c.forwarded = ForwardedHeaders {
            x_forwarded_for: h.forwardfor,
            x_forwarded_proto: h.x_forwarded_proto,
            x_forwarded_port: h.x_forwarded_port,
            forwarded: h.forwarded,
        };
        c.accept_proxy = h.accept_proxy.then_some(AcceptProxy {
            header_timeout: h.accept_proxy_timeout,
        });
        c.hash_key = h.hash_key.to_source()?;
        c.timeouts.header_read = h.timeout_http_request;
        c.timeouts.client_idle = h.timeout_http_keep_alive;
        c.timeouts.backend_response = h.timeout_server;
        c.timeouts.backend_idle = h.backend_idle_timeout;
        c.timeouts.client = h.timeout_client;
        c.limits.max_header_bytes = h.max_header_bytes;
        c.limits.max_headers = h.max_headers;
        c.limits.max_idle_per_backend = h.max_idle_per_backend;
        c.limits.max_concurrent_streams = h.max_concurrent_streams;
        c.http2 = h.http2;
        c.maxconn = h.maxconn;
        c.passive_health.count_5xx = h.count_5xx;
        for r in &h.routes {
            let mut route = Route::new(r.virtual_server.clone());
            if let Some(host) = &r.host {
                route = route.host(host.parse::<HostMatch>().map_err(|e| e.to_string())?);
            }
            if let Some(p) = &r.path_prefix {
                route = route.path_prefix(p.clone());
            }
            c.routes.push(route);
        }
        c.tls = h.tls_termination().map_err(|e| e.message)?;
        c.redirect_https = h.redirect_https.then_some(h.redirect_https_port);
        Ok(c)
    }

    /// The `lb-core` pool settings: persistence timeout, granularity and
    /// `expire_quiescent_template`, slow start, quorum and hysteresis, the rest at
    /// [`PoolConfig::default`].
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            persistence_timeout: self.persistence_timeout,
            persistence_granularity: self.persistence_granularity,
            expire_quiescent_template: self.expire_quiescent_template,
            slow_start: self.slow_start,
            quorum: self.quorum,
            hysteresis: self.hysteresis,
            all_backups: self.all_backups,
            ..PoolConfig::default()
        }
    }

    /// The backends as an `lb-core` set ([`backend_id`] numbers them): `BackendId(n)` is the n-th backend (from 1), with
    /// its weight and backup flag; a backend starts down when its checks use `alpha`.
    ///
    /// # Errors
    /// What [`BackendSet::new`] refuses (duplicate addresses; validation already reports
    /// them).
    pub fn backend_set(&self) -> lb_core::Result<BackendSet> {
        BackendSet::new(
            self.backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let id = backend_id(i);
                    Backend::new(id, b.address)
                        .with_weight(b.weight)
                        .with_backup(b.backup)
                        .with_health(if b.starts_down(self) {
                            Health::Down
                        } else {
                            Health::Up
                        })
                })
                .collect(),
        )
    }
}

/// One backend of a virtual server (keepalived `real_server`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Address and port.
    pub address: SocketAddr,
    /// Weight 0..=65535 (0 drains). Default 1.
    #[serde(default, with = "values::weight")]
    pub weight: Weight,
    /// On a failed check, set the weight to 0 (drain) rather than remove the backend.
    #[serde(default)]
    pub inhibit_on_failure: bool,
    /// Used only when no primary backend is available (keepalived `sorry_server`).
    #[serde(default)]
    pub backup: bool,
    /// At most this many concurrent connections (keepalived `uthreshold`). Default: no limit.
    #[serde(default)]
    pub maxconn: Option<u32>,
    /// Health checks; the backend is up while all pass. None: always up.
    #[serde(default, rename = "check")]
    pub checks: Vec<HealthCheck>,
    /// keepalived `notify_up`: a command (run by `/bin/sh -c`, not waited for) when the
    /// checks find the backend up again. Default: none.
    #[serde(default)]
    pub notify_up: Option<NotifyScript>,
    /// keepalived `notify_down`: a command run when the checks find the backend down.
    /// Default: none.
    #[serde(default)]
    pub notify_down: Option<NotifyScript>,
}

impl BackendConfig {
    /// Whether the backend starts down until its checks pass: when any of its checks
    /// starts down (`alpha`, by default the virtual server's `vs`). keepalived marks each
    /// `alpha` checker failed at start and a real server is up only while all its checkers
    /// succeed, so one `alpha` check is enough. `false` without checks.
    pub fn starts_down(&self, vs: &VirtualServer) -> bool {
        self.checks.iter().any(|c| c.starts_down(vs))
    }

    /// A backend at `address` with weight 1, no limit and no check.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            weight: Weight::DEFAULT,
            inhibit_on_failure: false,
            backup: false,
            maxconn: None,
            checks: Vec::new(),
            notify_up: None,
            notify_down: None,
        }
    }
}

/// A health check of one backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "values::RawCheck")]
pub struct HealthCheck {
    /// What is checked.
    pub kind: CheckKind,
    /// Timeout of the connection (and of each step of an HTTP exchange, as keepalived's: the
    /// TLS handshake, each wait for the backend to send or take data — the whole exchange
    /// bounded by ten of them; for `udp`, the wait for a reply or an ICMP error). Default
    /// 5 s.
    pub connect_timeout: Duration,
    /// Port to check instead of the backend's.
    pub connect_port: Option<u16>,
    /// Address to check instead of the backend's (keepalived `connect_ip`; not for
    /// `misc` checks).
    pub connect_ip: Option<IpAddr>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Retries after a failed attempt before the check counts as failed, taken only while
    /// the backend is up (keepalived `retry`/`nb_get_retry`; 0: none). Default keepalived's
    /// for the kind,
    /// [`CheckKind::default_retry`]: 0 for `misc`, else 1.
    pub retry: u32,
    /// Pause before each retry; `None`: keepalived's default for the kind, see
    /// [`HealthCheck::retry_delay`].
    pub delay_before_retry: Option<Duration>,
    /// Interval between checks; default the virtual server's `delay_loop`.
    pub delay_loop: Option<Duration>,
    /// keepalived `warmup`: the first check waits a random delay below this, so that the
    /// checks of many real servers do not all start at once. Default: none, the first
    /// check runs at once (keepalived's default is the check's `delay_loop`; give
    /// `warmup` to have it).
    pub warmup: Option<Duration>,
    /// Consecutive successes to go up (HAProxy `rise`). Default 1.
    pub rise: Option<u32>,
    /// Consecutive failures to go down (HAProxy `fall`). Default 1.
    pub fall: Option<u32>,
    /// HAProxy `inter`: interval while up (overrides `delay_loop`).
    pub inter: Option<Duration>,
    /// HAProxy `fastinter`: interval while changing state.
    pub fastinter: Option<Duration>,
    /// HAProxy `downinter`: interval while down.
    pub downinter: Option<Duration>,
    /// Start as down until the first success (keepalived `alpha`; default: the virtual
    /// server's).
    pub alpha: Option<bool>,
    /// HAProxy `check-send-proxy` (TOML only; `tcp`, `http`, `ssl` and `smtp` checks):
    /// `true` sends a PROXY protocol header first, `false` never does; absent, a check
    /// sends one when its virtual server sends one to its real servers
    /// (`[virtual_server.tcp] send_proxy`) and the check goes to their traffic address and
    /// port (no `connect_ip`, no `connect_port`), as HAProxy's default. See
    /// [`HealthCheck::proxy_header`].
    pub check_send_proxy: Option<bool>,
}

impl HealthCheck {
    /// The PROXY protocol header this check sends before anything else, if any (see
    /// [`HealthCheck::check_send_proxy`]): the version is the virtual server's
    /// `send_proxy`, v1 when it has none (HAProxy: v2 for a `send-proxy-v2` server, else
    /// v1). A check relays no client: the header is v1 `PROXY UNKNOWN` or v2 `LOCAL`
    /// ([`lb_health::probe::ProxyHeader`]). Never for the kinds that open no TCP
    /// connection to the real server.
    pub fn proxy_header(&self, vs: &VirtualServer) -> Option<ProxyVersion> {
        if !self.kind.is_stream() {
            return None;
        }
        let traffic = vs
            .tcp
            .as_ref()
            .filter(|_| vs.protocol == Protocol::Tcp)
            .and_then(|t| t.send_proxy);
        match self.check_send_proxy {
            Some(false) => None,
            Some(true) => Some(traffic.unwrap_or(ProxyVersion::V1)),
            None => traffic.filter(|_| self.connect_port.is_none() && self.connect_ip.is_none()),
        }
    }

    /// Time between checks while up: `inter`, else `delay_loop`, else the virtual server's
    /// `delay_loop` (for a `file` check, 1 s: keepalived follows the file at once).
    pub fn interval(&self, vs: &VirtualServer) -> Duration {
        let default = match self.kind {
            CheckKind::File(_) => Duration::from_secs(1),
            _ => vs.delay_loop,
        };
        self.inter.or(self.delay_loop).unwrap_or(default)
    }

    /// Consecutive successes to go up (default 1).
    pub fn rise(&self) -> u32 {
        self.rise.unwrap_or(1)
    }

    /// Consecutive failures to go down (default 1).
    pub fn fall(&self) -> u32 {
        self.fall.unwrap_or(1)
    }

    /// How long one run of the check may take: for a `misc` check its `misc_timeout`, else
    /// the virtual server's `delay_loop` (keepalived check_misc.c: `misck_checker->timeout ?
    /// : checker->vs->delay_loop`); for the others `connect_timeout`.
    pub fn timeout(&self, vs: &VirtualServer) -> Duration {
        match &self.kind {
            CheckKind::Misc(m) => m
                .misc_timeout
                .filter(|t| !t.is_zero())
                .unwrap_or(vs.delay_loop),
            _ => self.connect_timeout,
        }
    }

    /// The pause before each retry: `delay_before_retry`, else keepalived's default for the
    /// kind ([`CheckKind::default_delay_before_retry`]), which for `dns` is the check's
    /// [`interval`](Self::interval) (check_dns.c leaves it to default to `delay_loop`).
    pub fn retry_delay(&self, vs: &VirtualServer) -> Duration {
        self.delay_before_retry
            .or_else(|| self.kind.default_delay_before_retry())
            .unwrap_or_else(|| self.interval(vs))
    }

    /// Whether the backend starts down until this check first passes (`alpha`, by default
    /// the virtual server's). Never for a `file` check: its file is read before the
    /// virtual server takes its first connection. A `bfd` check's start state is
    /// [`HealthCheck::bfd_starts_down`]: applied with the files, not by the probes.
    pub fn starts_down(&self, vs: &VirtualServer) -> bool {
        !matches!(self.kind, CheckKind::File(_) | CheckKind::Bfd(_))
            && self.alpha.unwrap_or(vs.alpha)
    }

    /// For a `bfd` check: whether it fails the real server from the start, until its
    /// session is first Up (`alpha`, by default the virtual server's), as keepalived's
    /// BFD_CHECK starts. `false` for other kinds.
    pub fn bfd_starts_down(&self, vs: &VirtualServer) -> bool {
        matches!(self.kind, CheckKind::Bfd(_)) && self.alpha.unwrap_or(vs.alpha)
    }

    /// A check of `kind` with every option at its default (keepalived's for that kind of
    /// check: see [`CheckKind::default_retry`] and
    /// [`CheckKind::default_delay_before_retry`]).
    pub fn new(kind: CheckKind) -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            connect_port: None,
            connect_ip: None,
            bindto: None,
            retry: kind.default_retry(),
            delay_before_retry: None,
            kind,
            delay_loop: None,
            warmup: None,
            rise: None,
            fall: None,
            inter: None,
            fastinter: None,
            downinter: None,
            alpha: None,
            check_send_proxy: None,
        }
    }
}

/// The kinds of health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect (keepalived `TCP_CHECK`).
    Tcp,
    /// HTTP GET (keepalived `HTTP_GET`).
    Http(HttpCheck),
    /// HTTPS GET (keepalived `SSL_GET`).
    Ssl(HttpCheck),
    /// Run a program (keepalived `MISC_CHECK`).
    Misc(MiscCheck),
    /// Send a datagram (keepalived `UDP_CHECK`).
    Udp(UdpCheck),
    /// Ask a DNS question over UDP (keepalived `DNS_CHECK`).
    Dns(DnsCheck),
    /// Send an ICMP echo request (keepalived `PING_CHECK`).
    Ping,
    /// Greet an SMTP server (keepalived `SMTP_CHECK`).
    Smtp(SmtpCheck),
    /// Follow the value in a `track_file` (keepalived `FILE_CHECK`).
    File(FileCheck),
    /// Follow a `bfd_instance`'s session (keepalived `BFD_CHECK`).
    Bfd(BfdCheck),
    /// Ask a gRPC server's health service (`grpc.health.v1.Health/Check`; Envoy's
    /// `grpc_health_check`, Kubernetes' `grpc` probe). keepalived has none.
    Grpc(GrpcCheck),
}

/// A gRPC health check (lb-health's
/// [`GrpcProbe`](lb_health::probe::grpc::GrpcProbe)): passes when the server answers
/// `SERVING` for `service`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcCheck {
    /// The service asked about (`grpc_service`; Envoy's `service_name`). Default `""`: the
    /// server as a whole.
    pub service: String,
    /// The `:authority` sent (`virtualhost`; Envoy's `authority`), and with `tls` the name
    /// sent as SNI. Default: the address checked.
    pub authority: Option<String>,
    /// Over TLS with ALPN `h2` (`grpc_tls`), the certificate not verified, as keepalived's
    /// `SSL_GET` verifies none. Default false: h2c with prior knowledge.
    pub tls: bool,
}

impl CheckKind {
    /// Whether the check opens a TCP connection to the real server (`tcp`, `http`, `ssl`,
    /// `smtp`): those that can send a PROXY protocol header first.
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            Self::Tcp | Self::Http(_) | Self::Ssl(_) | Self::Smtp(_)
        )
    }

    /// keepalived's default `retry` for this kind of check when neither the check, its
    /// real server nor its virtual server sets one: 0 for `MISC_CHECK` (check_misc.c sets
    /// `checker->default_retry = 0`), 3 for `DNS_CHECK` (check_dns.h `DNS_DEFAULT_RETRY`),
    /// 1 for the others (check_api.c `queue_checker`; check_udp.c, check_ping.c and
    /// check_smtp.c keep it).
    pub fn default_retry(&self) -> u32 {
        match self {
            // FILE_CHECK has no checker thread: the file's value is the verdict at once.
            Self::Misc(_) | Self::File(_) | Self::Bfd(_) => 0,
            Self::Dns(_) => 3,
            Self::Tcp
            | Self::Http(_)
            | Self::Ssl(_)
            | Self::Udp(_)
            | Self::Ping
            | Self::Smtp(_)
            | Self::Grpc(_) => 1,
        }
    }

    /// keepalived's default `delay_before_retry` for this kind of check when neither the
    /// check, its real server nor its virtual server sets one: 3 s for `HTTP_GET` and
    /// `SSL_GET` (check_http.c `default_delay_before_retry = 3 * TIMER_HZ`), `None` for
    /// `DNS_CHECK`, whose retries wait the check's interval (check_dns.c sets the default
    /// to 0, "this will default to delay_loop"), 1 s for the others (check_api.c
    /// `queue_checker`; check_udp.c and check_ping.c keep it).
    pub fn default_delay_before_retry(&self) -> Option<Duration> {
        match self {
            Self::Http(_) | Self::Ssl(_) => Some(Duration::from_secs(3)),
            Self::Dns(_) => None,
            Self::Tcp
            | Self::Misc(_)
            | Self::Udp(_)
            | Self::Ping
            | Self::Smtp(_)
            | Self::File(_)
            | Self::Bfd(_)
            | Self::Grpc(_) => Some(Duration::from_secs(1)),
        }
    }
}

/// The requests of an `HTTP_GET` or `SSL_GET` check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpCheck {
    /// URLs fetched; all must answer as expected.
    pub url: Vec<UrlCheck>,
    /// Host header (default: the backend's address).
    pub virtualhost: Option<String>,
    /// `ssl` checks: send the Host name (the url's `virtualhost`, else the check's) as the
    /// TLS Server Name Indication (keepalived `enable_sni`). Default false: no SNI, as
    /// keepalived's `SSL_GET`.
    pub enable_sni: bool,
    /// Speak HTTP/2 (HAProxy's `check-proto h2`; TOML `check_proto = "h2"`): with prior
    /// knowledge (h2c) for `http`, over TLS with ALPN `h2` for `ssl`, the Host as the
    /// `:authority`. For real servers that take only HTTP/2, as `backend_http2` speaks to
    /// them. Default false: HTTP/1.1, as keepalived (which has no HTTP/2 check).
    pub http2: bool,
}

/// One URL of an HTTP check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlCheck {
    /// Path and query (`/health`).
    pub path: String,
    /// Expected statuses (default: any 2xx): codes and inclusive ranges, keepalived's
    /// `status_code 200-299 302`; in TOML a number (`200`) or a string (`"200-299,302"`).
    #[serde(default, with = "values::opt_status_set")]
    pub status_code: Option<StatusSet>,
    /// Expected MD5 of the body, 32 hex digits.
    #[serde(default)]
    pub digest: Option<String>,
    /// The Host header for this URL (keepalived `virtualhost` inside `url`), instead of
    /// the check's.
    #[serde(default)]
    pub virtualhost: Option<String>,
    /// A regular expression the body must match (keepalived `regex`; Rust regex syntax:
    /// PCRE's without look-around or back-references). Searched in the body's first MiB.
    #[serde(default)]
    pub regex: Option<String>,
    /// With `regex`: pass when it does not match (keepalived `regex_no_match`).
    #[serde(default)]
    pub regex_no_match: bool,
    /// With `regex`: keepalived's PCRE2 `regex_options` (`caseless`, `multiline`,
    /// `dotall`, `extended`, `ungreedy`, `utf`, `ucp`; options that only tune PCRE2 are
    /// accepted with a warning, ones lb-node cannot honour are errors).
    #[serde(default)]
    pub regex_options: Vec<String>,
    /// With `regex`: the match must start at or after this body offset, octets.
    #[serde(default)]
    pub regex_min_offset: Option<usize>,
    /// With `regex`: the match must start at or before this body offset, octets.
    #[serde(default)]
    pub regex_max_offset: Option<usize>,
}

impl UrlCheck {
    /// The url's regex check as lb-health runs it, with the options that had no effect;
    /// `Ok(None)` without `regex`.
    ///
    /// # Errors
    /// The setting at fault (`regex`, `regex_options`, `regex_min_offset`) and why.
    #[allow(clippy::type_complexity)]
    pub fn regex_check(
        &self,
    ) -> Result<(Option<lb_health::probe::http::BodyRegex>, Vec<String>), (&'static str, String)>
    {
        let Some(pattern) = &self.regex else {
            return Ok((None, Vec::new()));
        };
        let (flags, no_effect) =
            regex_flags(&self.regex_options).map_err(|m| ("regex_options", m))?;
        let r = lb_health::probe::http::BodyRegex::new(pattern, flags)
            .map_err(|e| ("regex", e.to_string()))?
            .no_match(self.regex_no_match)
            .offsets(self.regex_min_offset.unwrap_or(0), self.regex_max_offset)
            .map_err(|e| ("regex_min_offset", e.to_string()))?;
        Ok((Some(r), no_effect))
    }
}

/// What keepalived's PCRE2 `regex_options` become: the flags lb-health's regex honours, and
/// the options accepted with no effect (they tune PCRE2's compiler or matcher, or name what
/// Rust's regex already does).
///
/// # Errors
/// A message naming an option lb-node cannot honour (it changes what matches) or one
/// keepalived does not know.
pub fn regex_flags(
    options: &[String],
) -> Result<(lb_health::probe::http::RegexFlags, Vec<String>), String> {
    let mut f = lb_health::probe::http::RegexFlags::default();
    let mut no_effect = Vec::new();
    for o in options {
        match o.as_str() {
            "caseless" => f.caseless = true,
            "multiline" => f.multiline = true,
            "dotall" => f.dotall = true,
            "extended" => f.extended = true,
            "ungreedy" => f.ungreedy = true,
            "utf" | "ucp" => f.utf = true,
            "never_utf" | "never_ucp" => f.utf = false,
            "dollar_endonly" | "no_auto_capture" | "no_auto_possess" | "no_dotstar_anchor"
            | "no_start_optimize" | "never_backslash_c" | "auto_callout" | "dupnames" => {
                no_effect.push(o.clone());
            }
            "firstline" | "alt_bsux" | "allow_empty_class" | "match_unset_backref"
            | "alt_circumflex" | "alt_verbnames" | "use_offset_limit" => {
                return Err(format!(
                    "regex option {o:?} is not supported: lb-node's regex cannot honour it"
                ))
            }
            other => {
                return Err(format!(
                    "unknown regex option {other:?} (caseless, multiline, dotall, extended, ungreedy, utf, ucp, …)"
                ))
            }
        }
    }
    Ok((f, no_effect))
}

/// A `MISC_CHECK`: a program whose exit status is the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiscCheck {
    /// The command line: the program and its arguments, split as keepalived splits it
    /// (blanks separate words; `'…'` and `"…"` quote, backslash escapes; no shell, see
    /// `lb_health::probe::split_command_line`).
    pub misc_path: String,
    /// Kill it after this long (default, and with 0: the virtual server's `delay_loop`, as
    /// keepalived; see [`HealthCheck::timeout`]).
    pub misc_timeout: Option<Duration>,
    /// Exit status 2..=255 sets the weight to status - 2 (keepalived `misc_dynamic`).
    pub misc_dynamic: bool,
    /// The user the program runs as (keepalived `user USER [GROUP]`), looked up at load
    /// and when the check starts. Default: `script_user`, else the daemon's user.
    pub user: Option<String>,
    /// With `user`: its group (default: the user's primary group). Supplementary groups
    /// are dropped.
    pub group: Option<String>,
}

/// A `UDP_CHECK` (keepalived 2.x check_udp.c): a datagram sent from a connected socket.
/// Without `require_reply` it passes unless an ICMP error (port or host unreachable) comes
/// back within `connect_timeout`; with it, a reply must arrive in that time and, when
/// `reply` is given, match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCheck {
    /// The datagram sent, written as keepalived's hex string (`"01 02 ff"`; spaces between
    /// octets optional). Default (`None`): keepalived's 32 octets repeating
    /// `"keepalived check - "`.
    pub payload: Option<Vec<u8>>,
    /// Fail when no reply arrives within `connect_timeout` (keepalived `require_reply`).
    /// Default false: silence passes. Set whenever `reply` is.
    pub require_reply: bool,
    /// What the reply must start with: a hex string where `x` is any nibble (keepalived
    /// `require_reply HEX`). The first min(reply length, pattern length) octets are
    /// compared. Default: any reply.
    pub reply: Option<HexPattern>,
    /// With `reply`: the shortest reply that passes, in octets (0..=65535). Default 0.
    pub min_reply_length: u16,
    /// With `reply`: the longest reply that passes, in octets (0..=65535). Default 255.
    pub max_reply_length: u16,
}

/// A `DNS_CHECK` (keepalived check_dns.c): one question over UDP to the real server (port
/// 53 needs `connect_port 53` unless the real server's port is 53), passing when the answer
/// carries RCODE NOERROR, whatever records it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsCheck {
    /// The name asked (keepalived `name`; default `.`, the root).
    pub name: lb_health::probe::DnsName,
    /// The record type asked (keepalived `type`: A, NS, CNAME, SOA, MX, TXT, AAAA, RRSIG,
    /// DNSKEY; default SOA).
    pub qtype: lb_health::probe::QueryType,
}

/// A `FILE_CHECK` (keepalived 2.2, check_file.c): the real server follows the number in a
/// `track_file`. With weight 0, any value but 0 (with `reverse`: 0) takes it down; with
/// another weight, value × weight (negated with `reverse`) is added to its weight (the
/// configured or `misc_dynamic` one; limited to 0..=65535); a real server's file checks add
/// up. The virtual server's files are read every second (or at the shortest `delay_loop`
/// or `inter` its file checks set), whatever schedule the real servers' other checks keep;
/// a missing file, or one without a number, reads as 0. The checker options (`retry`,
/// `rise`, `fall`, `fastinter`, `downinter`, `alpha`…) do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// The `track_file` (`vrrp_track_file`) followed, by name.
    pub track_file: String,
    /// Multiplier of the value (-65535..=65535). Default: the track_file's weight.
    pub weight: Option<i32>,
    /// Negate the product. Default: the track_file's `reverse`.
    pub reverse: Option<bool>,
    /// The track_file's path, filled in at load from its definition.
    pub file: Option<PathBuf>,
}

/// A `BFD_CHECK` (keepalived check_bfd.c): the real server is up while a `bfd_instance`'s
/// session is Up. Until the session first changes state the check keeps its start state
/// (up, or down with `alpha`), as keepalived's checker does; from then on it follows the
/// session: Up passes, any other state fails. It is no probe: the checker options
/// (`retry`, `rise`, `fall`, intervals, timeouts) do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdCheck {
    /// The `bfd_instance` followed, by name.
    pub name: String,
}

/// An `SMTP_CHECK` (keepalived check_smtp.c): connect, expect the greeting 220, say
/// `HELO helo_name`, expect 250, say `QUIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpCheck {
    /// The name sent with `HELO` (keepalived `helo_name`; default
    /// `smtpchecker.keepalived.org`).
    pub helo_name: String,
}

impl Default for SmtpCheck {
    /// keepalived's `SMTP_CHECK {}`.
    fn default() -> Self {
        Self {
            helo_name: lb_health::probe::DEFAULT_HELO_NAME.to_owned(),
        }
    }
}

impl Default for UdpCheck {
    /// keepalived's `UDP_CHECK {}`.
    fn default() -> Self {
        Self {
            payload: None,
            require_reply: false,
            reply: None,
            min_reply_length: 0,
            max_reply_length: lb_health::probe::DEFAULT_MAX_REPLY_LENGTH,
        }
    }
}

/// One problem found by [`Config::validate`], named by its path in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `vrrp_instance[0].priority`, `virtual_server[1].backend[0]`.
    pub path: String,
    /// What, including the offending value.
    pub message: String,
}

/// The result of [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    /// Problems that make the configuration unusable.
    pub errors: Vec<Finding>,
    /// Suspicious but usable settings.
    pub warnings: Vec<Finding>,
}

impl Config {
    /// Each instance's VMAC name, by index (`None` without `use_vmac`): its `vmac_name`,
    /// else keepalived's choice in configuration order: `vrrp.<VRID>`, or when an
    /// instance before it (or any `vmac_name`) has that name, `vrrp6.<VRID>` for IPv6,
    /// then `vrrp1.<VRID>`, `vrrp2.<VRID>`… skipping 6 (`create_vmac_name`); `vrrp` is
    /// `global.vmac_prefix` when set, shortened so that the name fits in 15 bytes.
    pub fn vmac_names(&self) -> Vec<Option<String>> {
        let mut taken: HashSet<String> = self
            .vrrp_instances
            .iter()
            .filter(|vi| vi.use_vmac)
            .filter_map(|vi| vi.vmac_name.clone())
            .collect();
        self.vrrp_instances
            .iter()
            .map(|vi| {
                if !vi.use_vmac {
                    return None;
                }
                if let Some(n) = &vi.vmac_name {
                    return Some(n.clone());
                }
                let vrid = vi.virtual_router_id;
                let prefix = self.global.vmac_prefix.as_deref().unwrap_or("vrrp");
                // keepalived shortens the prefix, not the number, to fit IFNAMSIZ.
                let named = |num: &str| {
                    let tail = format!("{num}.{vrid}");
                    let keep = 15usize.saturating_sub(tail.len());
                    format!("{}{tail}", prefix.chars().take(keep).collect::<String>())
                };
                let v6_first = vi.is_v6().then(|| named("6"));
                let name = std::iter::once(named(""))
                    .chain(v6_first)
                    .chain((1..100).filter(|n| *n != 6).map(|n| named(&n.to_string())))
                    .find(|n| !taken.contains(n))?;
                taken.insert(name.clone());
                Some(name)
            })
            .collect()
    }

    /// Fills the defaults that depend on other fields (virtual server names).
    #[must_use]
    pub fn with_defaults(mut self) -> Self {
        for vs in &mut self.virtual_servers {
            if vs.name.is_empty() {
                vs.name = default_vs_name(vs.listen, vs.protocol);
            }
        }
        self.apply_script_user();
        self.resolve_file_checks();
        for h in self
            .virtual_servers
            .iter_mut()
            .filter_map(|v| v.http.as_mut())
        {
            h.read_tls_files();
            h.read_backend_tls_files();
        }
        // Each VMAC's name made explicit, so that every consumer sees the one chosen.
        let vmac_names = self.vmac_names();
        for (vi, name) in self.vrrp_instances.iter_mut().zip(vmac_names) {
            if name.is_some() {
                vi.vmac_name = name;
            }
        }
        self
    }

    /// Gives each `FILE_CHECK` its track_file's path, and its weight and `reverse` unless
    /// it sets its own (keepalived check_file.c). An unknown name is left for validation.
    fn resolve_file_checks(&mut self) {
        let files = &self.track_files;
        for vs in &mut self.virtual_servers {
            for b in &mut vs.backends {
                for c in &mut b.checks {
                    let CheckKind::File(f) = &mut c.kind else {
                        continue;
                    };
                    let Some(tf) = files.iter().find(|t| t.name == f.track_file) else {
                        continue;
                    };
                    f.file = Some(tf.file.clone());
                    if f.weight.is_none() {
                        f.weight = Some(tf.weight);
                        f.reverse = f.reverse.or(Some(tf.reverse));
                    }
                    f.reverse = f.reverse.or(Some(false));
                }
            }
        }
    }

    /// keepalived's `script_user`: every script that names no user runs as it. Applied
    /// only when the user (and group) exist; validation reports one that does not, at
    /// `script_user` itself.
    fn apply_script_user(&mut self) {
        let Some(user) = self.global.script_user.clone() else {
            return;
        };
        let group = self.global.script_group.clone();
        if RunAs::resolve(&user, group.as_deref()).is_err() {
            return;
        }
        // A script with a group but no user keeps both: validation reports it.
        let set = |u: &mut Option<String>, g: &mut Option<String>| {
            if u.is_none() && g.is_none() {
                *u = Some(user.clone());
                g.clone_from(&group);
            }
        };
        for s in &mut self.vrrp_scripts {
            set(&mut s.user, &mut s.group);
        }
        let notify = |n: &mut Option<NotifyScript>| {
            if let Some(n) = n {
                set(&mut n.user, &mut n.group);
            }
        };
        // A notify FIFO's script, and the owner of a FIFO lb-node creates (keepalived's
        // default script user for both).
        for f in [
            &mut self.global.notify_fifo,
            &mut self.global.vrrp_notify_fifo,
            &mut self.global.lvs_notify_fifo,
        ]
        .into_iter()
        .flatten()
        {
            set(&mut f.user, &mut f.group);
            notify(&mut f.script);
        }
        notify(&mut self.global.startup_script);
        notify(&mut self.global.shutdown_script);
        for vi in &mut self.vrrp_instances {
            for n in [
                &mut vi.notify_master,
                &mut vi.notify_backup,
                &mut vi.notify_fault,
                &mut vi.notify_stop,
                &mut vi.notify,
                &mut vi.notify_master_rx_lower_pri,
            ] {
                notify(n);
            }
            if let NotifyDeleted::Deleted(n) = &mut vi.notify_deleted {
                notify(n);
            }
        }
        for g in &mut self.sync_groups {
            for n in [
                &mut g.notify_master,
                &mut g.notify_backup,
                &mut g.notify_fault,
                &mut g.notify_stop,
                &mut g.notify,
            ] {
                notify(n);
            }
        }
        for vs in &mut self.virtual_servers {
            notify(&mut vs.quorum_up);
            notify(&mut vs.quorum_down);
            for b in &mut vs.backends {
                notify(&mut b.notify_up);
                notify(&mut b.notify_down);
                for c in &mut b.checks {
                    if let CheckKind::Misc(m) = &mut c.kind {
                        set(&mut m.user, &mut m.group);
                    }
                }
            }
        }
    }

    /// Indexes of the virtual servers in the order they start: every route target before
    /// the virtual servers that route to it, configuration order otherwise. Routes to
    /// unknown names are ignored here (validation reports them).
    pub fn start_order(&self) -> Vec<usize> {
        self.try_start_order()
            .unwrap_or_else(|_| (0..self.virtual_servers.len()).collect())
    }

    /// [`Config::start_order`], or the indexes of a routing cycle (each routes to the next,
    /// the last to the first).
    fn try_start_order(&self) -> Result<Vec<usize>, Vec<usize>> {
        let n = self.virtual_servers.len();
        let index: HashMap<&str, usize> = self
            .virtual_servers
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i))
            .collect();
        // 0 unvisited, 1 on the stack, 2 done.
        let mut state = vec![0u8; n];
        let mut order = Vec::with_capacity(n);
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            // Iterative depth-first search: (vertex, next target to look at).
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            state[root] = 1;
            while let Some(top) = stack.last_mut() {
                let (v, k) = *top;
                top.1 += 1;
                let targets = self.virtual_servers[v].route_targets();
                if let Some(t) = targets.get(k) {
                    // A route to itself is reported by validation, not as a cycle.
                    let Some(&t) = index.get(t).filter(|&&t| t != v) else {
                        continue;
                    };
                    match state[t] {
                        0 => {
                            state[t] = 1;
                            stack.push((t, 0));
                        }
                        1 => {
                            let from = stack.iter().position(|&(u, _)| u == t).unwrap_or(0);
                            return Err(stack[from..].iter().map(|&(u, _)| u).collect());
                        }
                        _ => {}
                    }
                } else {
                    state[v] = 2;
                    order.push(v);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }

    /// Looks up a virtual server by name.
    pub fn virtual_server(&self, name: &str) -> Option<&VirtualServer> {
        self.virtual_servers.iter().find(|v| v.name == name)
    }

    /// Checks every rule no single value can: ranges, references and uniqueness.
    pub fn validate(&self) -> Validation {
        let mut v = Validation::default();
        let mut err = |path: String, message: String| v.errors.push(Finding { path, message });
        let mut warnings = Vec::new();
        let mut warn = |path: String, message: String| warnings.push(Finding { path, message });

        if let Some(id) = &self.global.router_id {
            if id.is_empty() {
                err("global.router_id".into(), "router_id is empty".into());
            }
        }
        if self.global.admin_socket.as_os_str().is_empty() {
            err("global.admin_socket".into(), "admin_socket is empty".into());
        }
        if let Some(p) = &self.global.vmac_prefix {
            if p.is_empty()
                || p.len() > 12
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                err(
                    "global.vmac_prefix".into(),
                    format!("vmac_prefix {p:?}: give 1 to 12 ASCII letters, digits, `_` or `-`"),
                );
            }
        }
        if self.global.default_interface.is_none() {
            for (i, a) in self.static_ipaddress.iter().enumerate() {
                if a.dev.is_none() {
                    err(
                        format!("static_ipaddress[{i}]"),
                        format!("static address {a} has no `dev`, and there is no global.default_interface"),
                    );
                }
            }
        }
        if self.global.busy_polling && self.global.nbthread != 1 {
            // tokio's multi-thread workers leave the event loop to a parked worker: the
            // spinning one would find the I/O driver taken and spin without polling.
            err(
                "global.busy_polling".into(),
                format!(
                    "busy_polling needs nbthread = 1 (one event loop), not {}",
                    self.global.nbthread
                ),
            );
        }

        // Tracked processes and files.
        let mut processes = HashSet::new();
        for (i, t) in self.vrrp_track_processes.iter().enumerate() {
            let p = format!("vrrp_track_process[{i}]");
            if !processes.insert(t.name.as_str()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate vrrp_track_process {:?}", t.name),
                );
            }
            if t.process.is_empty() {
                err(format!("{p}.process"), "process is empty".into());
            } else if !t.full_command
                && t.params.is_empty()
                && t.param_match.is_none()
                && t.process.len() > lb_vrrp::track::COMM_MAX
            {
                err(
                    format!("{p}.process"),
                    format!(
                        "{:?} is longer than the {} bytes the kernel keeps of a process name: it would never match; set full_command to compare the command's first word",
                        t.process,
                        lb_vrrp::track::COMM_MAX
                    ),
                );
            }
            check_weight(&mut err, format!("{p}.weight"), t.weight);
            if let Some(max) = t.quorum_max {
                if t.effective_quorum() > max {
                    err(
                        format!("{p}.quorum"),
                        format!("quorum {} is above quorum_max {max}", t.effective_quorum()),
                    );
                }
            }
        }
        let mut files = HashSet::new();
        for (i, t) in self.track_files.iter().enumerate() {
            let p = format!("track_file[{i}]");
            if !files.insert(t.name.as_str()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate track_file {:?}", t.name),
                );
            }
            if t.file.file_name().is_none() {
                err(format!("{p}.file"), format!("{:?} names no file", t.file));
            }
            if t.init_overwrite && t.init_file.is_none() {
                err(
                    format!("{p}.init_overwrite"),
                    "init_overwrite needs init_file".into(),
                );
            }
        }

        // BFD sessions: one per neighbour, since the neighbour's packets are told apart by
        // their source address until it knows our discriminator.
        let mut bfds: HashMap<&str, &BfdInstance> = HashMap::new();
        for (i, b) in self.bfd_instances.iter().enumerate() {
            let p = format!("bfd_instance[{i}]");
            if bfds.insert(b.name.as_str(), b).is_some() {
                err(
                    format!("{p}.name"),
                    format!("duplicate bfd_instance {:?}", b.name),
                );
            }
            if let Some(o) = self.bfd_instances[..i]
                .iter()
                .find(|o| o.neighbor_ip == b.neighbor_ip)
            {
                err(
                    format!("{p}.neighbor_ip"),
                    format!(
                        "bfd_instance {} already has neighbor_ip {}: one session per neighbour",
                        o.name, b.neighbor_ip
                    ),
                );
            }
            match b.bfd_config().validate() {
                Ok(()) => {}
                // At the setting, so that a value already refused where it was written
                // is not reported twice.
                Err(lb_health::Error::InvalidConfig { setting, reason }) => err(
                    format!("{p}.{setting}"),
                    format!("bfd_instance {}: {setting} {reason}", b.name),
                ),
                Err(e) => err(p.clone(), format!("bfd_instance {}: {e}", b.name)),
            }
            if !(-253..=253).contains(&b.weight) {
                err(
                    format!("{p}.weight"),
                    format!("weight {} is out of range -253..=253", b.weight),
                );
            }
        }

        // Scripts.
        let mut scripts = HashSet::new();
        for (i, s) in self.vrrp_scripts.iter().enumerate() {
            let p = format!("vrrp_script[{i}]");
            if !scripts.insert(s.name.as_str()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate vrrp_script {:?}", s.name),
                );
            }
            if s.script.trim().is_empty() {
                err(format!("{p}.script"), "script is empty".into());
            }
            if s.interval.is_zero() {
                err(format!("{p}.interval"), "interval must be above 0 s".into());
            }
            check_weight(&mut err, format!("{p}.weight"), s.weight);
            if s.rise == 0 {
                err(format!("{p}.rise"), "rise must be at least 1".into());
            }
            if s.fall == 0 {
                err(format!("{p}.fall"), "fall must be at least 1".into());
            }
            check_user(
                &mut err,
                &p,
                "",
                &format!("vrrp_script {}", s.name),
                &s.user,
                &s.group,
            );
        }

        // Notify scripts' users and groups.
        let notify =
            |err: &mut dyn FnMut(String, String), path: String, n: Option<&NotifyScript>| {
                let Some(n) = n else { return };
                let kw = path.rsplit('.').next().unwrap_or_default().to_owned();
                check_user(err, &path, "", &kw, &n.user, &n.group);
            };
        for (i, vi) in self.vrrp_instances.iter().enumerate() {
            let p = format!("vrrp_instance[{i}]");
            for (k, n) in [
                ("notify_master", &vi.notify_master),
                ("notify_backup", &vi.notify_backup),
                ("notify_fault", &vi.notify_fault),
                ("notify_stop", &vi.notify_stop),
                ("notify", &vi.notify),
                ("notify_master_rx_lower_pri", &vi.notify_master_rx_lower_pri),
            ] {
                notify(&mut err, format!("{p}.{k}"), n.as_ref());
            }
            if let NotifyDeleted::Deleted(n) = &vi.notify_deleted {
                notify(&mut err, format!("{p}.notify_deleted"), n.as_ref());
            }
        }
        for (i, g) in self.sync_groups.iter().enumerate() {
            let p = format!("vrrp_sync_group[{i}]");
            for (k, n) in [
                ("notify_master", &g.notify_master),
                ("notify_backup", &g.notify_backup),
                ("notify_fault", &g.notify_fault),
                ("notify_stop", &g.notify_stop),
                ("notify", &g.notify),
            ] {
                notify(&mut err, format!("{p}.{k}"), n.as_ref());
            }
        }
        for (i, vs) in self.virtual_servers.iter().enumerate() {
            let p = format!("virtual_server[{i}]");
            notify(&mut err, format!("{p}.quorum_up"), vs.quorum_up.as_ref());
            notify(
                &mut err,
                format!("{p}.quorum_down"),
                vs.quorum_down.as_ref(),
            );
            for (j, b) in vs.backends.iter().enumerate() {
                let bp = format!("{p}.backend[{j}]");
                notify(&mut err, format!("{bp}.notify_up"), b.notify_up.as_ref());
                notify(
                    &mut err,
                    format!("{bp}.notify_down"),
                    b.notify_down.as_ref(),
                );
                for (k, c) in b.checks.iter().enumerate() {
                    if let CheckKind::Misc(m) = &c.kind {
                        let cp = format!("{bp}.check[{k}]");
                        check_user(&mut err, &cp, "", "MISC_CHECK", &m.user, &m.group);
                    }
                }
            }
        }
        // The default user itself, reported once here (scripts take it only when it
        // exists, see `Config::with_defaults`).
        check_user(
            &mut err,
            "global",
            "script_",
            "script_user",
            &self.global.script_user,
            &self.global.script_group,
        );

        // Virtual servers first: instances refer to them.
        let mut vs_names = HashSet::new();
        let mut listeners = HashSet::new();
        for (i, vs) in self.virtual_servers.iter().enumerate() {
            let p = format!("virtual_server[{i}]");
            if !vs_names.insert(vs.name.as_str()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate virtual server name {:?}", vs.name),
                );
            }
            let transport = if vs.protocol == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            };
            if !listeners.insert((bound_address(vs.listen), transport)) {
                err(
                    format!("{p}.listen"),
                    format!(
                        "another virtual server already listens on {transport} {}",
                        vs.listen
                    ),
                );
            }
            if vs.listen.port() == 0 {
                err(format!("{p}.listen"), format!("port 0 in {}", vs.listen));
            }
            // A wildcard listener takes its port on every address (`[::]` on IPv4 ones too:
            // IPV6_V6ONLY is off): another on the same port could not bind.
            // An IPv4-mapped address (`[::ffff:a.b.c.d]`) binds the IPv4 one.
            let covers = |wild: SocketAddr, other: SocketAddr| {
                let (wild, other) = (bound_address(wild), bound_address(other));
                wild.ip().is_unspecified()
                    && (wild.is_ipv6() || other.is_ipv4())
                    && wild.port() == other.port()
                    && wild != other
            };
            let same_transport =
                |o: &VirtualServer| (o.protocol == Protocol::Udp) == (vs.protocol == Protocol::Udp);
            if let Some(o) = self.virtual_servers[..i].iter().find(|o| {
                same_transport(o) && (covers(o.listen, vs.listen) || covers(vs.listen, o.listen))
            }) {
                err(
                    format!("{p}.listen"),
                    format!(
                        "{transport} {} overlaps virtual server {} on {}: a wildcard address takes its port on every address; listen on the addresses one by one",
                        vs.listen, o.name, o.listen
                    ),
                );
            }
            if vs.connect_timeout.is_zero() {
                err(
                    format!("{p}.connect_timeout"),
                    "connect_timeout must be above 0 s".into(),
                );
            }
            if vs.delay_loop.is_zero() {
                err(
                    format!("{p}.delay_loop"),
                    "delay_loop must be above 0 s".into(),
                );
            }
            if vs.quorum == 0 {
                err(format!("{p}.quorum"), "quorum must be at least 1".into());
            }
            if vs.ops && vs.protocol != Protocol::Udp {
                err(
                    format!("{p}.ops"),
                    format!(
                        "ops (one-packet scheduling) needs protocol udp, not {}",
                        vs.protocol
                    ),
                );
            }
            let g = vs.persistence_granularity;
            if vs.listen.is_ipv6() && g.v6_prefix == 128 && g.v4_prefix < 32 {
                // TOML's "24": an IPv4 prefix, which no client of an IPv6 listener has.
                warn(
                    format!("{p}.persistence_granularity"),
                    format!(
                        "on an IPv6 virtual server the IPv6 prefix (/128 here) groups the clients, not the IPv4 /{}: write \"{},N\" for an IPv6 /N",
                        g.v4_prefix, g.v4_prefix
                    ),
                );
            }
            if vs.slow_start.is_some_and(|t| t.is_zero()) {
                err(
                    format!("{p}.slow_start"),
                    "slow_start must be above 0 s (omit it to turn slow start off)".into(),
                );
            } else if vs.slow_start.is_some() && !lb_core::BuildScheduler::slow_start(&vs.lb_algo) {
                warn(
                    format!("{p}.slow_start"),
                    format!(
                        "lb_algo {} does not ramp weights (HAProxy slowstart applies to dynamic algorithms: wrr, swrr, wlc, sed, nq, random, p2c, peak_ewma): slow_start has no effect",
                        vs.lb_algo
                    ),
                );
            }
            if vs.persistence_timeout.is_some_and(|t| t.is_zero()) {
                err(
                    format!("{p}.persistence_timeout"),
                    "persistence_timeout must be above 0 s (omit it to turn persistence off)"
                        .into(),
                );
            }
            if vs.backends.iter().all(|b| b.backup) {
                warn(
                    p.clone(),
                    format!("virtual server {} has no backend", vs.name),
                );
            }
            let mut addrs = HashSet::new();
            for (j, b) in vs.backends.iter().enumerate() {
                let bp = format!("{p}.backend[{j}]");
                if !addrs.insert(b.address) {
                    err(
                        format!("{bp}.address"),
                        format!(
                            "duplicate backend {} in virtual server {}",
                            b.address, vs.name
                        ),
                    );
                }
                if b.address.port() == 0 {
                    err(format!("{bp}.address"), format!("port 0 in {}", b.address));
                }
                if b.address.ip().is_unspecified() {
                    err(
                        format!("{bp}.address"),
                        format!("backend address {} is unspecified", b.address),
                    );
                }
                if b.maxconn == Some(0) {
                    err(
                        format!("{bp}.maxconn"),
                        "maxconn 0 would refuse every connection (use weight 0 to drain)".into(),
                    );
                } else if b.maxconn.is_some() && vs.protocol != Protocol::Tcp {
                    warn(
                        format!("{bp}.maxconn"),
                        format!(
                            "maxconn limits TCP connections only: not applied to this {} virtual server",
                            vs.protocol
                        ),
                    );
                }
                for (k, c) in b.checks.iter().enumerate() {
                    validate_check(&mut err, &mut warn, &format!("{bp}.check[{k}]"), c);
                    if let CheckKind::Bfd(f) = &c.kind {
                        match bfds.get(f.name.as_str()) {
                            None => err(
                                format!("{bp}.check[{k}].name"),
                                format!("BFD_CHECK: bfd_instance {:?} is not defined", f.name),
                            ),
                            Some(bi) if !bi.for_checker() => err(
                                format!("{bp}.check[{k}].name"),
                                format!("BFD_CHECK: bfd_instance {:?} says `vrrp`: only track_bfd follows it", f.name),
                            ),
                            Some(_) => {}
                        }
                        if b.checks[..k]
                            .iter()
                            .any(|o| matches!(&o.kind, CheckKind::Bfd(x) if x.name == f.name))
                        {
                            err(
                                format!("{bp}.check[{k}].name"),
                                format!(
                                    "BFD_CHECK: this real server already follows bfd_instance {:?}",
                                    f.name
                                ),
                            );
                        }
                    }
                }
            }
        }

        // HTTP settings and routes: targets are looked up among every virtual server.
        for (i, vs) in self.virtual_servers.iter().enumerate() {
            validate_http(&mut err, &mut warn, self, i, vs);
            validate_tcp(&mut err, &mut warn, i, vs);
            validate_udp(&mut err, &mut warn, i, vs);
            validate_outlier(&mut err, i, &vs.outlier_detection);
        }
        if let Err(cycle) = self.try_start_order() {
            let first = cycle.first().copied().unwrap_or(0);
            let names: Vec<&str> = cycle
                .iter()
                .chain(cycle.first())
                .map(|&i| self.virtual_servers[i].name.as_str())
                .collect();
            let next = cycle.get(1).copied().unwrap_or(first);
            let j = self.virtual_servers[first]
                .http
                .iter()
                .flat_map(|h| &h.routes)
                .position(|r| r.virtual_server == self.virtual_servers[next].name)
                .unwrap_or(0);
            err(
                format!("virtual_server[{first}].http.route[{j}].virtual_server"),
                format!(
                    "routes form a cycle ({}): a route target must start before the virtual servers that route to it",
                    names.join(" -> ")
                ),
            );
        }

        // keepalived's man page wants the FIFO names all different; its code takes a
        // repeated one as the same FIFO (global_data.c), so lb-node does, with a warning.
        let fifos = [
            ("notify_fifo", &self.global.notify_fifo),
            ("vrrp_notify_fifo", &self.global.vrrp_notify_fifo),
            ("lvs_notify_fifo", &self.global.lvs_notify_fifo),
        ];
        for (k, (key, f)) in fifos.iter().enumerate() {
            let Some(f) = f else { continue };
            if let Some((other, _)) = fifos[..k]
                .iter()
                .find(|(_, o)| o.as_ref().is_some_and(|o| o.path == f.path))
            {
                warn(
                    format!("global.{key}"),
                    format!(
                        "{} is also {other}: one FIFO gets both kinds of lines{}",
                        f.path.display(),
                        if f.script.is_some() {
                            format!(", and this {key}_script is not run")
                        } else {
                            String::new()
                        }
                    ),
                );
            }
            if f.user.is_some() || f.group.is_some() {
                check_user(
                    &mut err,
                    &format!("global.{key}"),
                    "",
                    key,
                    &f.user,
                    &f.group,
                );
            }
            if let Some(s) = &f.script {
                notify(&mut err, format!("global.{key}.script"), Some(s));
            }
        }

        let vmacs: HashSet<String> = self.vmac_names().into_iter().flatten().collect();
        let mut grouped = HashSet::new();
        for (i, g) in self.garp_groups.iter().enumerate() {
            let p = format!("garp_group[{i}]");
            if g.interfaces.is_empty() {
                err(
                    format!("{p}.interfaces"),
                    "a garp_group needs at least one interface".into(),
                );
            }
            for (j, name) in g.interfaces.iter().enumerate() {
                let at = format!("{p}.interfaces[{j}]");
                if name.is_empty() {
                    err(at, "an empty interface name".into());
                } else if vmacs.contains(name) {
                    err(
                        at,
                        format!("{name} is a VRRP instance's VMAC: its gratuitous ARPs / NAs count against its base interface, name that one (keepalived: \"Cannot specify garp_delay on a vmac\")"),
                    );
                } else if !grouped.insert(name.as_str()) {
                    err(at, format!("{name} is already in a garp_group"));
                }
            }
            if g.garp_interval.is_none() && g.gna_interval.is_none() {
                err(
                    p.clone(),
                    "a garp_group needs garp_interval or gna_interval".into(),
                );
            }
            for (key, d) in [
                ("garp_interval", g.garp_interval),
                ("gna_interval", g.gna_interval),
            ] {
                if d.is_some_and(|d| d > MAX_GARP_GROUP_INTERVAL) {
                    err(
                        format!("{p}.{key}"),
                        format!("{key} is out of range 0..=2147.483647 s"),
                    );
                }
            }
        }
        for (key, d) in [
            ("vrrp_garp_interval", self.global.vrrp_garp_interval),
            ("vrrp_gna_interval", self.global.vrrp_gna_interval),
        ] {
            if d > values::MAX_GARP_INTERVAL {
                err(
                    format!("global.{key}"),
                    format!(
                        "{key} {} s is out of range 0..=4294.967295 s",
                        d.as_secs_f64()
                    ),
                );
            }
        }
        for (key, s, timeout) in [
            (
                "startup_script",
                &self.global.startup_script,
                self.global.startup_script_timeout,
            ),
            (
                "shutdown_script",
                &self.global.shutdown_script,
                self.global.shutdown_script_timeout,
            ),
        ] {
            notify(&mut err, format!("global.{key}"), s.as_ref());
            if !(1..=1000).contains(&timeout.as_secs()) || timeout.subsec_nanos() != 0 {
                err(
                    format!("global.{key}_timeout"),
                    format!("{key}_timeout takes whole seconds 1..=1000"),
                );
            }
        }

        // keepalived uses a global IPv6 group of wider scope, with a warning.
        if let Some(g) = self.global.vrrp_mcast_group4 {
            if let Err(e) = check_vrrp_group(IpAddr::V4(g)) {
                err("global.vrrp_mcast_group4".into(), e);
            }
        }
        if let Some(g) = self.global.vrrp_mcast_group6 {
            if !g.is_multicast() {
                err(
                    "global.vrrp_mcast_group6".into(),
                    format!("{g} is not a multicast address"),
                );
            } else if let Err(e) = check_vrrp_group(IpAddr::V6(g)) {
                warn("global.vrrp_mcast_group6".into(), e);
            }
        }

        // Instances.
        let vmac_names = self.vmac_names();
        let mut names = HashSet::new();
        let mut vrids: HashMap<(&str, u8, bool), usize> = HashMap::new();
        for (i, vi) in self.vrrp_instances.iter().enumerate() {
            let p = format!("vrrp_instance[{i}]");
            if !names.insert(vi.name.as_str()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate vrrp_instance {:?}", vi.name),
                );
            }
            if vi.interface.is_empty() {
                err(format!("{p}.interface"), "interface is empty".into());
            }
            if vi.virtual_router_id == 0 {
                err(
                    format!("{p}.virtual_router_id"),
                    "virtual_router_id 0 is invalid (1..=255)".into(),
                );
            }
            let v6 = vi.is_v6();
            if let Some(other) = vrids.insert((&vi.interface, vi.virtual_router_id, v6), i) {
                err(
                    format!("{p}.virtual_router_id"),
                    format!(
                        "virtual_router_id {} is already used on {} by vrrp_instance {}",
                        vi.virtual_router_id, vi.interface, self.vrrp_instances[other].name
                    ),
                );
            }
            if vi.priority == 0 {
                err(
                    format!("{p}.priority"),
                    "priority 0 is reserved for a master that resigns (1..=255)".into(),
                );
            }
            if vi.priority == 255 && vi.state == InitialState::Backup {
                warn(
                    format!("{p}.priority"),
                    "priority 255 means the address owner, which starts as MASTER (unless a member of its vrrp_sync_group is not an owner)".into(),
                );
            }
            match vi.version {
                2 => {
                    let ms = vi.advert_int.as_millis();
                    if ms % 1000 != 0 || !(1000..=255_000).contains(&ms) {
                        err(
                            format!("{p}.advert_int"),
                            format!(
                                "advert_int {} s: VRRPv2 needs whole seconds 1..=255 (use version 3 for sub-second adverts)",
                                vi.advert_int.as_secs_f64()
                            ),
                        );
                    }
                    if v6 {
                        err(
                            format!("{p}.version"),
                            "VRRPv2 carries IPv4 addresses only (use version 3)".into(),
                        );
                    }
                }
                3 => {
                    let ms = vi.advert_int.as_millis();
                    if ms % 10 != 0 || !(10..=40_950).contains(&ms) {
                        err(
                            format!("{p}.advert_int"),
                            format!(
                                "advert_int {} s: VRRPv3 needs 0.01..=40.95 s in centiseconds",
                                vi.advert_int.as_secs_f64()
                            ),
                        );
                    }
                    if vi.authentication.is_some() {
                        err(
                            format!("{p}.authentication"),
                            "VRRPv3 has no authentication (RFC 5798 §9)".into(),
                        );
                    }
                }
                other => err(
                    format!("{p}.version"),
                    format!("VRRP version {other} is not supported (2 or 3)"),
                ),
            }
            if !(1..=100).contains(&vi.down_timer_adverts) {
                err(
                    format!("{p}.down_timer_adverts"),
                    format!(
                        "down_timer_adverts {} is outside 1..=100",
                        vi.down_timer_adverts
                    ),
                );
            }
            if let Some(g) = vi.mcast_dst_ip {
                if let Err(e) = check_vrrp_group(g) {
                    err(format!("{p}.mcast_dst_ip"), e);
                } else if g.is_ipv6() != vi.is_v6() {
                    err(
                        format!("{p}.mcast_dst_ip"),
                        format!("mcast_dst_ip {g} is not of the instance's address family"),
                    );
                } else if !vi.unicast_peer.is_empty() {
                    warn(
                        format!("{p}.mcast_dst_ip"),
                        "mcast_dst_ip does not apply with unicast_peer (adverts go to the peers), ignored".into(),
                    );
                }
            }
            // (A VRID of 0 is reported above.)
            if vi.use_vmac && vi.virtual_router_id != 0 {
                if let Err(e) = vi.vmac_mac() {
                    err(format!("{p}.vmac_address"), e);
                }
                if let Some(name) = &vmac_names[i] {
                    if !lb_vrrp::vmac::valid_ifname(name) {
                        err(
                            format!("{p}.vmac_name"),
                            format!("vmac_name {name:?} is not a valid VMAC name (1 to 15 letters, digits, '.', '_' or '-')"),
                        );
                    } else if self.vrrp_instances.iter().any(|o| &o.interface == name) {
                        err(
                            format!("{p}.vmac_name"),
                            format!("vmac_name {name:?} is an instance's interface"),
                        );
                    } else if vmac_names[..i].contains(&Some(name.clone())) {
                        err(
                            format!("{p}.vmac_name"),
                            format!("vmac_name {name:?} is used by another vrrp_instance"),
                        );
                    }
                }
                if let Ok(mac) = vi.vmac_mac() {
                    if let Some(other) = self.vrrp_instances[..i].iter().find(|o| {
                        o.use_vmac && o.interface == vi.interface && o.vmac_mac() == Ok(mac)
                    }) {
                        err(
                            format!("{p}.vmac_address"),
                            format!(
                                "the VMAC's MAC address is already vrrp_instance {}'s on {}",
                                other.name, vi.interface
                            ),
                        );
                    }
                }
                if !vi.unicast_peer.is_empty() && !vi.vmac_xmit_base {
                    err(
                        format!("{p}.use_vmac"),
                        "use_vmac with unicast_peer needs vmac_xmit_base (unicast adverts cannot come from the shared MAC)".into(),
                    );
                }
                if vi.promote_secondaries {
                    err(
                        format!("{p}.promote_secondaries"),
                        "promote_secondaries with use_vmac: the VMAC gets it anyway (as keepalived's), remove it".into(),
                    );
                }
            } else {
                for (key, set) in [
                    ("vmac_name", vi.vmac_name.is_some()),
                    ("vmac_address", vi.vmac_address.is_some()),
                    ("vmac_xmit_base", vi.vmac_xmit_base),
                ] {
                    if set {
                        err(format!("{p}.{key}"), format!("{key} needs use_vmac"));
                    }
                }
            }
            if let Some(auth) = &vi.authentication {
                if auth.auth_pass.is_empty() || auth.auth_pass.len() > 8 {
                    err(
                        format!("{p}.authentication.auth_pass"),
                        format!(
                            "auth_pass is {} bytes; PASS authentication takes 1..=8 bytes",
                            auth.auth_pass.len()
                        ),
                    );
                }
            }
            if !vi.accept && vi.priority != 255 {
                for vs in &self.virtual_servers {
                    let ip = vs.listen.ip();
                    if vi
                        .virtual_ipaddress
                        .iter()
                        .chain(&vi.virtual_ipaddress_excluded)
                        .any(|a| a.address == ip)
                    {
                        warn(
                            format!("{p}.accept"),
                            format!(
                                "accept mode off (no_accept, or vrrp_strict): while MASTER this node drops traffic to {ip} (RFC 5798 Accept_Mode False, nftables, as keepalived), so virtual_server {} gets no client; turn accept mode on to serve it (`accept`; strict mode has none on VRRPv2)",
                                vs.name
                            ),
                        );
                    }
                }
            }
            if vi.virtual_ipaddress.is_empty() {
                err(
                    format!("{p}.virtual_ipaddress"),
                    format!("vrrp_instance {} has no virtual_ipaddress", vi.name),
                );
            }
            // An advert carries at most 255 addresses (an 8-bit count), IPv6 ones at most
            // what fits in a 1500-byte packet after the IPv6 and VRRP headers.
            let max_advertised = if v6 {
                MAX_ADVERTISED_V6
            } else {
                MAX_ADVERTISED_V4
            };
            if vi.virtual_ipaddress.len() > max_advertised {
                err(
                    format!("{p}.virtual_ipaddress[{max_advertised}]"),
                    format!(
                        "vrrp_instance {} advertises {} addresses; an advert holds at most {max_advertised} (put the others in virtual_ipaddress_excluded)",
                        vi.name,
                        vi.virtual_ipaddress.len()
                    ),
                );
            }
            let mut seen = HashSet::new();
            let excluded: HashSet<IpAddr> = vi
                .virtual_ipaddress_excluded
                .iter()
                .map(|a| a.address)
                .collect();
            for (j, a) in vi.virtual_ipaddress_excluded.iter().enumerate() {
                if a.address.is_unspecified() || a.address.is_multicast() {
                    err(
                        format!("{p}.virtual_ipaddress_excluded[{j}]"),
                        format!("{} cannot be a virtual address", a.address),
                    );
                }
                if !seen.insert(a.address) {
                    err(
                        format!("{p}.virtual_ipaddress_excluded[{j}]"),
                        format!("duplicate virtual address {}", a.address),
                    );
                }
            }
            for (j, a) in vi.virtual_ipaddress.iter().enumerate() {
                if a.address.is_ipv6() != v6 {
                    err(
                        format!("{p}.virtual_ipaddress[{j}]"),
                        format!("{} mixes address families in one instance", a.address),
                    );
                }
                if a.address.is_unspecified() || a.address.is_multicast() {
                    err(
                        format!("{p}.virtual_ipaddress[{j}]"),
                        format!("{} cannot be a virtual address", a.address),
                    );
                }
                if !seen.insert(a.address) {
                    let why = if excluded.contains(&a.address) {
                        String::new()
                    } else {
                        // keepalived takes it and advertises it twice: its peers count the
                        // addresses of each advert.
                        " (keepalived would advertise it twice: list it once, on every node)"
                            .to_owned()
                    };
                    err(
                        format!("{p}.virtual_ipaddress[{j}]"),
                        format!("duplicate virtual address {}{why}", a.address),
                    );
                }
            }
            if let Some(src) = vi.unicast_src_ip {
                if src.is_ipv6() != v6 {
                    err(
                        format!("{p}.unicast_src_ip"),
                        format!("unicast_src_ip {src} is not of the VIPs' address family"),
                    );
                }
            }
            for (j, peer) in vi.unicast_peer.iter().enumerate() {
                if peer.is_ipv6() != v6 || peer.is_unspecified() || peer.is_multicast() {
                    err(
                        format!("{p}.unicast_peer[{j}]"),
                        format!("unicast_peer {peer} is not a unicast address of the VIPs' family"),
                    );
                }
            }
            if vi.unicast_ttl == 0 {
                err(
                    format!("{p}.unicast_ttl"),
                    "unicast_ttl 0: the adverts would go nowhere (1..=255)".into(),
                );
            }
            if vi.nopreempt && vi.state == InitialState::Master {
                warn(
                    format!("{p}.nopreempt"),
                    "nopreempt with state MASTER: the instance will start as BACKUP".into(),
                );
            }
            for (j, t) in vi.track_interface.iter().enumerate() {
                check_weight(
                    &mut err,
                    format!("{p}.track_interface[{j}].weight"),
                    t.weight,
                );
            }
            for (j, t) in vi.track_script.iter().enumerate() {
                if !scripts.contains(t.script.as_str()) {
                    err(
                        format!("{p}.track_script[{j}]"),
                        format!("track_script names unknown vrrp_script {:?}", t.script),
                    );
                }
                if let Some(w) = t.weight {
                    check_weight(&mut err, format!("{p}.track_script[{j}].weight"), w);
                }
            }
            for (j, t) in vi.track_process.iter().enumerate() {
                if !processes.contains(t.process.as_str()) {
                    err(
                        format!("{p}.track_process[{j}]"),
                        format!(
                            "track_process names unknown vrrp_track_process {:?}",
                            t.process
                        ),
                    );
                }
                if let Some(w) = t.weight {
                    check_weight(&mut err, format!("{p}.track_process[{j}].weight"), w);
                }
            }
            for (j, t) in vi.track_file.iter().enumerate() {
                if !files.contains(t.file.as_str()) {
                    err(
                        format!("{p}.track_file[{j}]"),
                        format!("track_file names unknown track_file {:?}", t.file),
                    );
                }
                if let Some(w) = t.weight {
                    check_weight(&mut err, format!("{p}.track_file[{j}].weight"), w);
                }
            }
            for (j, t) in vi.track_bfd.iter().enumerate() {
                if vi.track_bfd[..j].iter().any(|o| o.bfd == t.bfd) {
                    err(
                        format!("{p}.track_bfd[{j}]"),
                        format!(
                            "bfd_instance {:?} is tracked twice (keepalived ignores the second)",
                            t.bfd
                        ),
                    );
                }
                match bfds.get(t.bfd.as_str()) {
                    None => err(
                        format!("{p}.track_bfd[{j}]"),
                        format!("track_bfd names unknown bfd_instance {:?}", t.bfd),
                    ),
                    Some(bi) if !bi.for_vrrp() => err(
                        format!("{p}.track_bfd[{j}]"),
                        format!(
                            "bfd_instance {:?} says `checker`: only BFD_CHECK follows it",
                            t.bfd
                        ),
                    ),
                    Some(_) => {}
                }
                if let Some(w) = t.weight.filter(|w| !(-253..=253).contains(w)) {
                    err(
                        format!("{p}.track_bfd[{j}].weight"),
                        format!("weight {w} is out of range -253..=253"),
                    );
                }
            }
            for (j, t) in vi.track_service.iter().enumerate() {
                if !vs_names.contains(t.virtual_server.as_str()) {
                    err(
                        format!("{p}.track_service[{j}]"),
                        format!(
                            "track_service names unknown virtual server {:?}",
                            t.virtual_server
                        ),
                    );
                }
                if let Some(w) = t.weight {
                    check_weight(&mut err, format!("{p}.track_service[{j}].weight"), w);
                }
            }
        }

        // Sync groups.
        let mut group_names = HashSet::new();
        let mut member_of: HashMap<&str, &str> = HashMap::new();
        for (i, g) in self.sync_groups.iter().enumerate() {
            let p = format!("vrrp_sync_group[{i}]");
            if !group_names.insert(g.name.as_str()) {
                err(
                    format!("{p}.name"),
                    format!("duplicate vrrp_sync_group {:?}", g.name),
                );
            }
            if g.group.is_empty() {
                err(
                    format!("{p}.group"),
                    format!("vrrp_sync_group {} is empty", g.name),
                );
            }
            for (j, m) in g.group.iter().enumerate() {
                if !names.contains(m.as_str()) {
                    err(
                        format!("{p}.group[{j}]"),
                        format!(
                            "vrrp_sync_group {} names unknown vrrp_instance {m:?}",
                            g.name
                        ),
                    );
                } else if let Some(prev) = member_of.insert(m, &g.name) {
                    err(
                        format!("{p}.group[{j}]"),
                        format!("vrrp_instance {m} is already in vrrp_sync_group {prev}"),
                    );
                }
            }
            if g.group.len() == 1 {
                warn(
                    format!("{p}.group"),
                    format!("vrrp_sync_group {} has a single member", g.name),
                );
            }
            // keepalived (`vrrp_sync_set_group`): "Sync group %s has some member(s) as
            // address owner and some not as address owner. This won't work." Its members
            // all start as BACKUP, the owners included, and take over together.
            let owner = |m: &String| {
                self.vrrp_instances
                    .iter()
                    .find(|vi| vi.name == *m)
                    .map(|vi| vi.priority == 255)
            };
            let owners: Vec<bool> = g.group.iter().filter_map(owner).collect();
            if owners.contains(&true) && owners.contains(&false) {
                warn(
                    format!("{p}.group"),
                    format!(
                        "vrrp_sync_group {} has some members as address owner (priority 255) and some not: all start as BACKUP and become MASTER together after a Master_Down_Interval, as in keepalived, which warns that this won't work",
                        g.name
                    ),
                );
            }
        }
        v.warnings = warnings;
        v
    }
}

/// The address a listener on `a` takes: an IPv4-mapped IPv6 address (`[::ffff:a.b.c.d]`)
/// is its IPv4 address (`[::ffff:0.0.0.0]` the IPv4 wildcard) to the kernel.
pub(crate) fn bound_address(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// The default name of a virtual server: `ip:port`, or `ip:port/udp` for UDP.
pub fn default_vs_name(listen: SocketAddr, protocol: Protocol) -> String {
    match protocol {
        Protocol::Udp => format!("{listen}/udp"),
        Protocol::Tcp | Protocol::Http => listen.to_string(),
    }
}

/// A VRRP multicast group: IPv4 multicast, or IPv6 link-local multicast (`ffX2::/16`), as
/// keepalived requires of `mcast_dst_ip`.
fn check_vrrp_group(g: IpAddr) -> Result<(), String> {
    match g {
        IpAddr::V4(a) if a.is_multicast() => Ok(()),
        IpAddr::V6(a) if a.segments()[0] & 0xff0f == 0xff02 => Ok(()),
        IpAddr::V4(a) => Err(format!("{a} is not a multicast address")),
        IpAddr::V6(a) => Err(format!(
            "{a} is not a link-local multicast address (ffX2::/16)"
        )),
    }
}

/// `[virtual_server.outlier_detection]`: values lb-health's detector accepts, each error at
/// its key.
fn validate_outlier(err: &mut impl FnMut(String, String), i: usize, o: &OutlierDetection) {
    let p = format!("virtual_server[{i}].outlier_detection");
    if o.consecutive_failures == 0 {
        err(
            format!("{p}.consecutive_failures"),
            "consecutive_failures must be at least 1".into(),
        );
    }
    if o.interval.is_zero() {
        err(format!("{p}.interval"), "interval must be above 0 s".into());
    }
    if o.base_ejection_time.is_zero() {
        err(
            format!("{p}.base_ejection_time"),
            "base_ejection_time must be above 0 s".into(),
        );
    }
    if let Some(max) = o.max_ejection_time.filter(|&m| m < o.base_ejection_time) {
        err(
            format!("{p}.max_ejection_time"),
            format!(
                "max_ejection_time {max:?} is below base_ejection_time {:?}",
                o.base_ejection_time
            ),
        );
    }
    for (key, value) in [
        ("max_ejection_percent", o.max_ejection_percent),
        ("enforcing_success_rate", o.enforcing_success_rate),
        (
            "enforcing_failure_percentage",
            o.enforcing_failure_percentage,
        ),
        (
            "failure_percentage_threshold",
            o.failure_percentage_threshold,
        ),
    ] {
        if value > 100 {
            err(format!("{p}.{key}"), format!("{key} {value} is above 100"));
        }
    }
}

/// `[virtual_server.tcp]`: only with `protocol = "tcp"`, values lb-proxy accepts.
fn validate_tcp(
    err: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
    i: usize,
    vs: &VirtualServer,
) {
    let Some(t) = &vs.tcp else { return };
    let p = format!("virtual_server[{i}].tcp");
    if vs.protocol != Protocol::Tcp {
        err(
            p,
            format!(
                "[virtual_server.tcp] applies to protocol = \"tcp\" only (virtual server {} is {})",
                vs.name, vs.protocol
            ),
        );
        return;
    }
    if let Some(path) = &t.access_log {
        validate_access_log(err, &format!("{p}.access_log"), path);
    }
    for (key, d) in [
        ("accept_proxy_timeout", t.accept_proxy_timeout),
        ("timeout_queue", t.timeout_queue),
    ] {
        if d.is_zero() {
            err(format!("{p}.{key}"), format!("{key} must be above 0 s"));
        }
    }
    if t.maxconn == 0 || u32::try_from(t.maxconn).is_err() {
        err(
            format!("{p}.maxconn"),
            format!("maxconn {} is outside 1..={}", t.maxconn, u32::MAX),
        );
    }
    // The connections to every real server leave from it: all of its family.
    if let Some(src) = t.source {
        if let Some(b) = vs
            .backends
            .iter()
            .find(|b| b.address.is_ipv4() != src.is_ipv4())
        {
            err(
                format!("{p}.source"),
                format!(
                    "source {src} is not of the address family of real server {}",
                    b.address
                ),
            );
        }
    }
    if t.usesrc.is_some() {
        if t.source.is_some() {
            err(
                format!("{p}.usesrc"),
                "usesrc connects from the client's address: source cannot be set with it"
                    .to_owned(),
            );
        }
        validate_usesrc(err, warn, &p, vs);
    }
}

/// `usesrc`: the clients are of the listener's family (an IPv6 wildcard listener also
/// takes IPv4 clients): a real server of the other family could never be reached, and with
/// real servers of both families, a client sent to one of the other family would fail. An
/// IPv6 wildcard listener in front of IPv4 real servers serves its IPv4 clients only: a
/// warning.
fn validate_usesrc(
    err: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
    p: &str,
    vs: &VirtualServer,
) {
    let v4 = vs.backends.iter().find(|b| b.address.is_ipv4());
    let v6 = vs.backends.iter().find(|b| b.address.is_ipv6());
    if let (Some(a), Some(b)) = (v4, v6) {
        err(
            format!("{p}.usesrc"),
            format!(
                "usesrc: real servers {} and {} are of two address families; a client reaches only those of its own",
                a.address, b.address
            ),
        );
        return;
    }
    let listen = vs.listen.ip();
    let v4_clients = listen.is_ipv4() || listen.is_unspecified();
    let v6_clients = listen.is_ipv6();
    if let Some(b) = vs.backends.iter().find(|b| {
        if b.address.is_ipv4() {
            !v4_clients
        } else {
            !v6_clients
        }
    }) {
        err(
            format!("{p}.usesrc"),
            format!(
                "usesrc: real server {} cannot be reached from the address of a client of {} (another address family)",
                b.address, vs.listen
            ),
        );
    } else if listen.is_ipv6() && listen.is_unspecified() {
        if let Some(b) = v4 {
            warn(
                format!("{p}.usesrc"),
                format!(
                    "usesrc: {} also takes IPv6 clients, which cannot reach IPv4 real server {} from their address: their connections fail",
                    vs.listen, b.address
                ),
            );
        }
    }
}

/// `[virtual_server.udp]`: only with `protocol = "udp"`, values lb-proxy accepts.
fn validate_udp(
    err: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
    i: usize,
    vs: &VirtualServer,
) {
    let Some(u) = &vs.udp else { return };
    let p = format!("virtual_server[{i}].udp");
    if vs.protocol != Protocol::Udp {
        err(
            p,
            format!(
                "[virtual_server.udp] applies to protocol = \"udp\" only (virtual server {} is {})",
                vs.name, vs.protocol
            ),
        );
        return;
    }
    if u.idle_timeout.is_zero() {
        err(
            format!("{p}.idle_timeout"),
            "idle_timeout must be above 0 s".into(),
        );
    }
    if u.max_sessions == 0 || u32::try_from(u.max_sessions).is_err() {
        err(
            format!("{p}.max_sessions"),
            format!(
                "max_sessions {} is outside 1..={}",
                u.max_sessions,
                u32::MAX
            ),
        );
    }
    if u.usesrc.is_some() {
        validate_usesrc(err, warn, &p, vs);
    }
}

/// An access log's file: its directory must exist, and it must not be one.
fn validate_access_log(err: &mut impl FnMut(String, String), at: &str, path: &std::path::Path) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if dir.is_some_and(|d| !d.is_dir()) {
        err(
            at.to_owned(),
            format!(
                "access_log {}: no directory {}",
                path.display(),
                dir.map(|d| d.display().to_string()).unwrap_or_default()
            ),
        );
    } else if path.is_dir() {
        err(
            at.to_owned(),
            format!("access_log {} is a directory", path.display()),
        );
    }
}

/// `[virtual_server.http]`: only with `protocol = "http"`, values lb-proxy accepts, routes to
/// other HTTP virtual servers.
fn validate_http(
    err: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
    cfg: &Config,
    i: usize,
    vs: &VirtualServer,
) {
    let Some(h) = &vs.http else { return };
    let p = format!("virtual_server[{i}].http");
    if vs.protocol != Protocol::Http {
        err(
            p,
            format!(
                "[virtual_server.http] applies to protocol = \"http\" only (virtual server {} is {})",
                vs.name, vs.protocol
            ),
        );
        return;
    }
    for (key, d) in [
        ("accept_proxy_timeout", h.accept_proxy_timeout),
        ("timeout_http_request", h.timeout_http_request),
        ("timeout_http_keep_alive", h.timeout_http_keep_alive),
        ("timeout_server", h.timeout_server),
        ("backend_idle_timeout", h.backend_idle_timeout),
        ("timeout_client", h.timeout_client),
    ] {
        if d.is_zero() {
            err(format!("{p}.{key}"), format!("{key} must be above 0 s"));
        }
    }
    if h.max_header_bytes < 8_192 {
        err(
            format!("{p}.max_header_bytes"),
            format!(
                "max_header_bytes {} is below the minimum of 8192",
                h.max_header_bytes
            ),
        );
    }
    if h.max_headers == 0 {
        err(
            format!("{p}.max_headers"),
            "max_headers must be at least 1".into(),
        );
    }
    if h.max_concurrent_streams == 0 {
        err(
            format!("{p}.max_concurrent_streams"),
            "max_concurrent_streams must be at least 1".into(),
        );
    }
    if h.maxconn == 0 || u32::try_from(h.maxconn).is_err() {
        err(
            format!("{p}.maxconn"),
            format!("maxconn {} is outside 1..={}", h.maxconn, u32::MAX),
        );
    }
    if let Err(e) = h.hash_key.to_source() {
        err(format!("{p}.hash_key"), e);
    }
    if h.redirect_https_port == 0 {
        err(
            format!("{p}.redirect_https_port"),
            "redirect_https_port 0".into(),
        );
    }
    if h.redirect_https && h.tls_certificate.is_some() && h.redirect_https_port == vs.listen.port()
    {
        err(
            format!("{p}.redirect_https"),
            format!(
                "redirect_https on the HTTPS listener it redirects to ({}) would send clients round in a loop",
                vs.listen
            ),
        );
    }
    if h.redirect_https && !h.routes.is_empty() {
        warn(
            format!("{p}.redirect_https"),
            "redirect_https answers every request: the routes are not used".into(),
        );
    }
    if h.tls_certificate.is_none() {
        if h.tls_key.is_some() {
            err(
                format!("{p}.tls_key"),
                "tls_key needs tls_certificate".into(),
            );
        }
        if !h.tls_sni.is_empty() {
            err(
                format!("{p}.tls_sni"),
                "tls_sni needs tls_certificate (the certificate for clients no other one covers)"
                    .into(),
            );
        }
    } else if let Err(e) = h.tls_termination() {
        err(format!("{p}.{}", e.at), e.message);
    }
    match &h.access_log {
        Some(path) => validate_access_log(err, &format!("{p}.access_log"), path),
        None if h.access_log_format != AccessLogFormat::default() => err(
            format!("{p}.access_log_format"),
            "access_log_format needs access_log (the file to write)".into(),
        ),
        None => {}
    }
    if h.backend_http2 {
        // The checks are HTTP/1.1: a real server that takes only HTTP/2 (gRPC servers,
        // nginx's `listen … http2` without TLS) fails them.
        for (j, b) in vs.backends.iter().enumerate() {
            for (k, c) in b.checks.iter().enumerate() {
                let traffic_port = c.connect_port.is_none_or(|port| port == b.address.port())
                    && c.connect_ip.is_none_or(|ip| ip == b.address.ip());
                let http1 = matches!(&c.kind, CheckKind::Http(h) | CheckKind::Ssl(h) if !h.http2);
                if http1 && traffic_port {
                    warn(
                        format!("virtual_server[{i}].backend[{j}].check[{k}].type"),
                        format!(
                            "this check speaks HTTP/1.1 to {}, which backend_http2 speaks HTTP/2 to: \
                             against a real server that takes only HTTP/2 it fails, and the real \
                             server is taken out; add check_proto = \"h2\" (HAProxy's \
                             check-proto h2), or use a connect_port that answers HTTP/1.1",
                            b.address
                        ),
                    );
                }
            }
        }
    }
    if h.backend_tls {
        if let Err(e) = h.backend_tls() {
            err(format!("{p}.{}", e.at), e.message);
        }
        if h.backend_key.is_some() && h.backend_certificate.is_none() {
            err(
                format!("{p}.backend_key"),
                "backend_key needs backend_certificate".into(),
            );
        }
        // HAProxy checks an `ssl` server over TLS; here the checks are configured apart.
        for (j, b) in vs.backends.iter().enumerate() {
            for (k, c) in b.checks.iter().enumerate() {
                let traffic_port = c.connect_port.is_none_or(|port| port == b.address.port())
                    && c.connect_ip.is_none_or(|ip| ip == b.address.ip());
                if matches!(c.kind, CheckKind::Http(_)) && traffic_port {
                    warn(
                        format!("virtual_server[{i}].backend[{j}].check[{k}].type"),
                        format!(
                            "this http check speaks plain HTTP to {}, which backend_tls speaks TLS to: \
                             against a real server that takes only TLS it fails, and the real server \
                             is taken out; use type = \"ssl\" (keepalived SSL_GET)",
                            b.address
                        ),
                    );
                }
            }
        }
        if h.backend_verify == Some(BackendVerify::None) && h.backend_ca_file.is_some() {
            warn(
                format!("{p}.backend_ca_file"),
                "backend_ca_file is not used: backend_verify = \"none\" takes any certificate"
                    .into(),
            );
        }
    } else {
        for (key, set) in [
            ("backend_verify", h.backend_verify.is_some()),
            ("backend_ca_file", h.backend_ca_file.is_some()),
            ("backend_sni", h.backend_sni.is_some()),
            ("backend_certificate", h.backend_certificate.is_some()),
            ("backend_key", h.backend_key.is_some()),
        ] {
            if set {
                err(
                    format!("{p}.{key}"),
                    format!("{key} needs backend_tls = true (the real servers are spoken to in plain HTTP)"),
                );
            }
        }
    }
    for (j, r) in h.routes.iter().enumerate() {
        let rp = format!("{p}.route[{j}]");
        if let Some(host) = &r.host {
            if let Err(e) = host.parse::<HostMatch>() {
                err(format!("{rp}.host"), e.to_string());
            }
        }
        if let Some(prefix) = &r.path_prefix {
            if !prefix.starts_with('/') {
                err(
                    format!("{rp}.path_prefix"),
                    format!("path_prefix {prefix:?} must start with /"),
                );
            }
        }
        match cfg.virtual_server(&r.virtual_server) {
            None => err(
                format!("{rp}.virtual_server"),
                format!(
                    "route names unknown virtual server {:?}",
                    r.virtual_server
                ),
            ),
            Some(t) if t.name == vs.name => err(
                format!("{rp}.virtual_server"),
                format!(
                    "a route cannot name its own virtual server {:?} (requests no route matches go to its backends already)",
                    vs.name
                ),
            ),
            Some(t) if t.protocol != Protocol::Http => err(
                format!("{rp}.virtual_server"),
                format!(
                    "route target {:?} is a {} virtual server; routes need protocol = \"http\"",
                    t.name, t.protocol
                ),
            ),
            Some(_) => {}
        }
        if r.host.is_none() && r.path_prefix.is_none() && j + 1 < h.routes.len() {
            warn(
                rp,
                "this route has neither host nor path_prefix: it takes every request, the routes after it never match".into(),
            );
        }
    }
}

fn check_weight(err: &mut impl FnMut(String, String), path: String, w: i32) {
    if !(-254..=254).contains(&w) {
        err(path, format!("weight {w} is out of range -254..=254"));
    }
}

/// Reports a `user`/`group` pair that does not resolve: at `{p}.{prefix}user` or
/// `{p}.{prefix}group`, the message starting with `what`.
fn check_user(
    err: &mut dyn FnMut(String, String),
    p: &str,
    prefix: &str,
    what: &str,
    user: &Option<String>,
    group: &Option<String>,
) {
    if let Some(g) = group.as_deref().filter(|g| g.starts_with(':')) {
        err(
            format!("{p}.{prefix}group"),
            format!(
                "{what}: keepalived's {g:?} (a group that also sets the user's supplementary groups) is not supported: lb-node runs scripts with one group and no supplementary group; name the group without ':'"
            ),
        );
        return;
    }
    match (user, group) {
        (Some(user), group) => match RunAs::resolve(user, None) {
            Err(m) => err(format!("{p}.{prefix}user"), format!("{what}: {m}")),
            Ok(_) => {
                if let Some(Err(m)) = group.as_deref().map(|g| RunAs::resolve(user, Some(g))) {
                    err(format!("{p}.{prefix}group"), format!("{what}: {m}"));
                }
            }
        },
        (None, Some(_)) => err(
            format!("{p}.{prefix}group"),
            format!("{what}: group needs a user"),
        ),
        (None, None) => {}
    }
}

/// A url's `regex` and its settings: compiled as the check will run it.
fn validate_regex(
    err: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
    p: &str,
    u: &UrlCheck,
) {
    let Some(pattern) = &u.regex else {
        if u.regex_no_match
            || !u.regex_options.is_empty()
            || u.regex_min_offset.is_some()
            || u.regex_max_offset.is_some()
        {
            warn(
                format!("{p}.path"),
                "regex_no_match, regex_options and the regex offsets are ignored without regex, as keepalived ignores them".into(),
            );
        }
        return;
    };
    match u.regex_check() {
        Ok((_, no_effect)) => {
            for o in no_effect {
                warn(
                    format!("{p}.regex_options"),
                    format!("regex option {o:?} tunes PCRE2 only: no effect in lb-node"),
                );
            }
        }
        Err((setting, m)) => err(format!("{p}.{setting}"), format!("regex {pattern:?}: {m}")),
    }
}

fn validate_check(
    err: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
    p: &str,
    c: &HealthCheck,
) {
    if c.connect_timeout.is_zero() {
        err(
            format!("{p}.connect_timeout"),
            "connect_timeout must be above 0 s".into(),
        );
    }
    if c.connect_port == Some(0) {
        err(format!("{p}.connect_port"), "connect_port 0".into());
    }
    if let (Some(port), CheckKind::Ping) = (c.connect_port, &c.kind) {
        err(
            format!("{p}.connect_port"),
            format!("connect_port {port} does not apply to a ping check (ICMP has no ports)"),
        );
    }
    if let (Some(ip), CheckKind::Misc(_)) = (c.connect_ip, &c.kind) {
        err(
            format!("{p}.connect_ip"),
            format!("connect_ip {ip} does not apply to a misc check (it runs a program)"),
        );
    }
    if let (Some(to), Some(from)) = (c.connect_ip, c.bindto) {
        if to.is_ipv4() != from.is_ipv4() {
            err(
                format!("{p}.connect_ip"),
                format!("connect_ip {to} and bindto {from} are of different address families"),
            );
        }
    }
    for (name, v) in [("rise", c.rise), ("fall", c.fall)] {
        if v == Some(0) {
            err(format!("{p}.{name}"), format!("{name} must be at least 1"));
        }
    }
    for (name, v) in [
        ("delay_loop", c.delay_loop),
        ("inter", c.inter),
        ("fastinter", c.fastinter),
        ("downinter", c.downinter),
    ] {
        if v.is_some_and(|d| d.is_zero()) {
            err(format!("{p}.{name}"), format!("{name} must be above 0 s"));
        }
    }
    match &c.kind {
        CheckKind::Tcp | CheckKind::Dns(_) | CheckKind::Ping => {}
        CheckKind::Grpc(g) => {
            if let Some(a) = &g.authority {
                if let Err(e) = a.parse::<http::uri::Authority>() {
                    err(
                        format!("{p}.virtualhost"),
                        format!("virtualhost {a:?} is not an authority (host[:port]) for a grpc check: {e}"),
                    );
                }
            }
            if c.check_send_proxy == Some(true) {
                err(
                    format!("{p}.check_send_proxy"),
                    "a grpc check sends no PROXY header".into(),
                );
            }
        }
        CheckKind::Bfd(_) => {
            if c.retry != 0
                || c.rise.is_some()
                || c.fall.is_some()
                || c.fastinter.is_some()
                || c.downinter.is_some()
                || c.delay_before_retry.is_some()
                || c.delay_loop.is_some()
                || c.inter.is_some()
                || c.warmup.is_some()
                || c.connect_port.is_some()
                || c.connect_ip.is_some()
                || c.bindto.is_some()
            {
                warn(
                    format!("{p}.name"),
                    "a BFD check follows its session: retry, delay_before_retry, rise, fall, intervals, warmup and connect options do not apply, ignored".into(),
                );
            }
        }
        CheckKind::File(f) => {
            if c.retry != 0
                || c.rise.is_some()
                || c.fall.is_some()
                || c.fastinter.is_some()
                || c.downinter.is_some()
                || c.alpha.is_some()
                || c.delay_before_retry.is_some()
                || c.warmup.is_some()
            {
                warn(
                    format!("{p}.track_file"),
                    "retry, delay_before_retry, rise, fall, fastinter, downinter, alpha and warmup do not apply to a file check (its file's value is the verdict at once), ignored".into(),
                );
            }
            if f.file.is_none() {
                err(
                    format!("{p}.track_file"),
                    format!("FILE_CHECK: track_file {:?} is not defined", f.track_file),
                );
            }
            if let Some(w) = f.weight.filter(|w| !(-65_535..=65_535).contains(w)) {
                err(
                    format!("{p}.weight"),
                    format!("FILE_CHECK weight {w} is out of range -65535..=65535"),
                );
            }
        }
        CheckKind::Smtp(s) => {
            if s.helo_name.is_empty()
                || s.helo_name
                    .contains(|c: char| c.is_whitespace() || c.is_control())
            {
                err(
                    format!("{p}.helo_name"),
                    format!(
                        "helo_name {:?} must be one word (a domain name or an address literal)",
                        s.helo_name
                    ),
                );
            }
        }
        CheckKind::Http(h) | CheckKind::Ssl(h) => {
            if h.url.is_empty() {
                err(
                    format!("{p}.url"),
                    "an HTTP check needs at least one url".into(),
                );
            }
            if h.http2 {
                let hosts = h
                    .virtualhost
                    .iter()
                    .map(|v| (format!("{p}.virtualhost"), v));
                let url_hosts = h.url.iter().enumerate().filter_map(|(j, u)| {
                    let v = u.virtualhost.as_ref()?;
                    Some((format!("{p}.url[{j}].virtualhost"), v))
                });
                for (at, v) in hosts.chain(url_hosts) {
                    if let Err(e) = v.parse::<http::uri::Authority>() {
                        err(
                            at,
                            format!("virtualhost {v:?} is not an authority (host[:port]) for an HTTP/2 check: {e}"),
                        );
                    }
                }
            }
            for (j, u) in h.url.iter().enumerate() {
                if !u.path.starts_with('/') {
                    err(
                        format!("{p}.url[{j}].path"),
                        format!("url path {:?} must start with /", u.path),
                    );
                }
                if let Some(d) = &u.digest {
                    if d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                        err(
                            format!("{p}.url[{j}].digest"),
                            format!("digest {d:?} is not an MD5 sum (32 hex digits)"),
                        );
                    }
                }
                validate_regex(err, warn, &format!("{p}.url[{j}]"), u);
            }
        }
        // Split as the check will run it (keepalived's quotes and escapes), so that an
        // unterminated quote is a configuration error, not a check that always fails.
        CheckKind::Misc(m) => match lb_health::probe::split_command_line(&m.misc_path) {
            Ok(words) if words.is_empty() => {
                err(format!("{p}.misc_path"), "misc_path is empty".into());
            }
            Ok(_) => {}
            Err(e) => err(format!("{p}.misc_path"), e.to_string()),
        },
        CheckKind::Udp(u) => {
            if u.payload.as_ref().is_some_and(Vec::is_empty) {
                err(format!("{p}.payload"), "payload has no octet".into());
            }
            if u.reply.is_some() && !u.require_reply {
                err(
                    format!("{p}.require_reply"),
                    "a reply pattern needs require_reply".into(),
                );
            }
            if u.min_reply_length > u.max_reply_length {
                err(
                    format!("{p}.min_reply_length"),
                    format!(
                        "min_reply_length {} is above max_reply_length {}: every reply would fail",
                        u.min_reply_length, u.max_reply_length
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_syntax_round_trips() {
        let v: VirtualIp = "172.16.2.250/24 dev eth0 label eth0:1".parse().unwrap();
        assert_eq!(v.prefix_len, Some(24));
        assert_eq!(v.dev.as_deref(), Some("eth0"));
        assert_eq!(v.label.as_deref(), Some("eth0:1"));
        assert_eq!(v.to_string(), "172.16.2.250/24 dev eth0 label eth0:1");
        assert!("172.16.2.250/33".parse::<VirtualIp>().is_err());
        assert!("172.16.2.300".parse::<VirtualIp>().is_err());
        assert!("10.0.0.1 scope link".parse::<VirtualIp>().is_err());
        assert!("2001:db8::1 label x".parse::<VirtualIp>().is_err());
    }

    #[test]
    fn virtual_servers_map_onto_lb_core() {
        let mut vs = VirtualServer::new("198.18.0.250:80".parse().unwrap());
        vs.persistence_timeout = Some(Duration::from_secs(300));
        vs.delay_loop = Duration::from_secs(6);
        let mut a = BackendConfig::new("198.18.0.151:82".parse().unwrap());
        a.weight = Weight::new(3).unwrap();
        let mut check = HealthCheck::new(CheckKind::Tcp);
        check.alpha = Some(true);
        a.checks.push(check);
        let mut b = BackendConfig::new("198.18.0.153:83".parse().unwrap());
        b.backup = true;
        vs.backends = vec![a, b];
        assert_eq!(
            vs.pool_config().persistence_timeout,
            Some(Duration::from_secs(300))
        );
        let set = vs.backend_set().unwrap();
        let first = set.get(BackendId(1)).unwrap();
        assert_eq!((first.weight().get(), first.health()), (3, Health::Down));
        let second = set.get(BackendId(2)).unwrap();
        assert!(second.is_backup());
        assert_eq!(second.health(), Health::Up);
        let c = &vs.backends[0].checks[0];
        assert_eq!(c.interval(&vs), Duration::from_secs(6));
        assert_eq!((c.rise(), c.fall()), (1, 1));
    }

    #[test]
    fn every_priority_is_classified() {
        for p in 0..=255u8 {
            let mut vi = instance("VI", "eth0", 1);
            vi.priority = p;
            let cfg = Config {
                vrrp_instances: vec![vi],
                ..Config::default()
            };
            let errs = cfg.validate().errors;
            assert_eq!(errs.is_empty(), p != 0, "priority {p}: {errs:?}");
        }
    }

    #[test]
    fn duplicate_vrid_and_unknown_member_are_found() {
        let cfg = Config {
            vrrp_instances: vec![instance("A", "eth0", 51), instance("B", "eth0", 51)],
            sync_groups: vec![SyncGroup {
                name: "G".into(),
                group: vec!["A".into(), "C".into()],
                notify_master: None,
                notify_backup: None,
                notify_fault: None,
                notify_stop: None,
                notify: None,
            }],
            ..Config::default()
        };
        let errs = cfg.validate().errors;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "vrrp_instance[1].virtual_router_id",
                "vrrp_sync_group[0].group[1]"
            ]
        );
    }

    #[test]
    fn route_targets_start_first_and_cycles_are_refused() {
        let vs = |name: &str, port: u16, targets: &[&str]| {
            let mut v = VirtualServer::new(SocketAddr::from(([198, 18, 0, 250], port)));
            v.name = name.into();
            v.protocol = Protocol::Http;
            v.backends = vec![BackendConfig::new(SocketAddr::from((
                [198, 18, 0, 1],
                port,
            )))];
            v.http = Some(HttpSettings {
                routes: targets
                    .iter()
                    .map(|t| HttpRoute {
                        host: None,
                        path_prefix: Some(format!("/{t}")),
                        virtual_server: (*t).into(),
                    })
                    .collect(),
                ..HttpSettings::default()
            });
            v
        };
        let mut cfg = Config {
            virtual_servers: vec![
                vs("x", 1, &["y", "z"]),
                vs("y", 2, &["z", "z"]),
                vs("z", 3, &[]),
                vs("w", 4, &[]),
            ],
            ..Config::default()
        };
        assert!(cfg.validate().errors.is_empty(), "{:?}", cfg.validate());
        assert_eq!(cfg.virtual_servers[1].route_targets(), ["z"]);
        assert_eq!(cfg.start_order(), [2, 1, 0, 3]);
        cfg.virtual_servers[2] = vs("z", 3, &["x"]);
        let errs = cfg.validate().errors;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].path,
            "virtual_server[0].http.route[0].virtual_server"
        );
        assert!(errs[0].message.contains("(x -> y -> z -> x)"), "{errs:?}");
        // Still a complete order, for callers that did not validate.
        assert_eq!(cfg.start_order(), [0, 1, 2, 3]);
    }

    pub(crate) fn instance(name: &str, ifname: &str, vrid: u8) -> VrrpInstance {
        let mut vi = VrrpInstance::new(name, ifname, vrid);
        vi.virtual_ipaddress = vec!["198.18.0.250".parse().unwrap()];
        vi
    }
}
