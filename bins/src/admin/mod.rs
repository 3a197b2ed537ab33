//! The admin API: what `lbctl` asks a running `lb-node`, over a Unix socket.
//!
//! # Protocol
//!
//! Line-delimited JSON on a Unix stream socket (mode 0600, so only the daemon's user and
//! root can use it). The client writes one [`Request`] per line; the daemon answers each
//! with one [`Response`] line, in order, and keeps the connection open for more. Lines are
//! at most [`MAX_LINE`] bytes.
//!
//! ```text
//! → {"command":"status"}
//! ← {"result":"status","status":{"node":{…},"vrrp":[…],"virtual_servers":[…]}}
//! → {"command":"set_backend_admin","virtual_server":"web","backend":"198.18.0.151:82","state":"drain"}
//! ← {"result":"ok"}
//! → {"command":"set_backend_admin","virtual_server":"web","backend":"198.18.0.9:82","state":"drain"}
//! ← {"result":"error","message":"virtual server web has no backend 198.18.0.9:82"}
//! ```
//!
//! The daemon implements [`AdminHandler`] and runs [`server::serve`]; `lbctl` uses
//! [`client::Client`] and [`render::status_table`].
//!
//! # Examples
//!
//! ```
//! use lb_bins::admin::{Request, Response, AdminState};
//!
//! let line = r#"{"command":"set_backend_admin","virtual_server":"web","backend":"198.18.0.151:82","state":"maint"}"#;
//! let req: Request = serde_json::from_str(line)?;
//! assert_eq!(req, Request::SetBackendAdmin {
//!     virtual_server: "web".into(),
//!     backend: "198.18.0.151:82".into(),
//!     state: AdminState::Maint,
//! });
//! assert_eq!(serde_json::to_string(&Response::Ok)?, r#"{"result":"ok"}"#);
//! # Ok::<(), serde_json::Error>(())
//! ```

pub mod client;
pub mod render;
pub mod server;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::model::Protocol;
use crate::config::Config;

/// The longest request or response line accepted, in bytes (16 MiB: a status with many
/// thousands of backends fits).
pub const MAX_LINE: usize = 16 << 20;

/// What a running daemon offers its admin socket. Implemented by `lb-node`; calls come from
/// the server's tasks, so they must be quick and must not block on IO.
pub trait AdminHandler: Send + Sync + 'static {
    /// A snapshot of every VRRP instance and virtual server.
    fn status(&self) -> Status;

    /// Sets the admin state of `backend` (its `ip:port`) in `virtual_server` (its name).
    ///
    /// # Errors
    /// A message for the operator, e.g. when the virtual server or backend is unknown.
    fn set_backend_admin(
        &self,
        virtual_server: &str,
        backend: &str,
        state: AdminState,
    ) -> Result<(), String>;

    /// Sets the configured weight of `backend` (its `ip:port`) in `virtual_server` (its
    /// name), 0..=65535, as HAProxy's `set weight` and `ipvsadm -e -w` do: from now on,
    /// through reloads (also those that restart the virtual server), until the
    /// configuration file changes that backend's weight. 0 takes no new client (the
    /// backend stays up; persistent clients keep reaching it, as with a drain).
    ///
    /// # Errors
    /// A message for the operator: an unknown virtual server or backend, a weight out of
    /// range.
    fn set_backend_weight(
        &self,
        virtual_server: &str,
        backend: &str,
        weight: u32,
    ) -> Result<(), String>;

    /// Resolves once the weights set so far by [`set_backend_weight`](Self::set_backend_weight)
    /// have taken effect, for a daemon that applies them in another task: the admin socket
    /// answers `ok` after it (within [`server::APPLY_TIMEOUT`]), so that a `status` right
    /// after shows the new weight, as HAProxy's `set weight` then `show stat` do. Default:
    /// at once (a handler that applies them in `set_backend_weight`).
    fn weights_applied(&self) -> Applied {
        Box::pin(std::future::ready(()))
    }
}

/// What [`AdminHandler::weights_applied`] returns: a future that ends once the changes are
/// applied.
pub type Applied = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Ask for a [`Status`].
    Status,
    /// Change a backend's admin state.
    SetBackendAdmin {
        /// The virtual server's name.
        virtual_server: String,
        /// The backend's `ip:port`.
        backend: String,
        /// The new state.
        state: AdminState,
    },
    /// Change a backend's configured weight.
    SetBackendWeight {
        /// The virtual server's name.
        virtual_server: String,
        /// The backend's `ip:port`.
        backend: String,
        /// The new weight, 0..=65535.
        weight: u32,
    },
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The answer to [`Request::Status`].
    Status {
        /// The snapshot (boxed: it is much larger than the other answers).
        status: Box<Status>,
    },
    /// The command was applied.
    Ok,
    /// The command was refused, or the request was not understood.
    Error {
        /// Why, for the operator.
        message: String,
    },
}

/// The operator's wish for a backend (HAProxy `set server state`); maps onto
/// [`lb_core::AdminState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new connections when healthy.
    #[default]
    Ready,
    /// No new connections; existing ones continue.
    Drain,
    /// Out of service.
    Maint,
}

impl From<AdminState> for lb_core::AdminState {
    fn from(s: AdminState) -> Self {
        match s {
            AdminState::Ready => Self::Ready,
            AdminState::Drain => Self::Drain,
            AdminState::Maint => Self::Maint,
        }
    }
}

impl From<lb_core::AdminState> for AdminState {
    fn from(s: lb_core::AdminState) -> Self {
        match s {
            lb_core::AdminState::Ready => Self::Ready,
            lb_core::AdminState::Drain => Self::Drain,
            lb_core::AdminState::Maint => Self::Maint,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        })
    }
}

impl FromStr for AdminState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ready" => Ok(Self::Ready),
            "drain" => Ok(Self::Drain),
            "maint" => Ok(Self::Maint),
            _ => Err(format!("unknown admin state {s:?} (ready, drain, maint)")),
        }
    }
}

/// What health checking concluded about a backend; maps from [`lb_core::Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passing (or not checked).
    #[default]
    Up,
    /// Failing.
    Down,
}

impl From<lb_core::Health> for Health {
    fn from(h: lb_core::Health) -> Self {
        match h {
            lb_core::Health::Up => Self::Up,
            lb_core::Health::Down => Self::Down,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// A VRRP instance's state as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpState {
    /// Starting (RFC 5798 Initialize).
    Init,
    /// Backup.
    Backup,
    /// Master: owns the VIPs.
    Master,
    /// Fault (a non-RFC extension): a tracked interface, script or service is down.
    Fault,
    /// Stopped (priority 0 sent, VIPs removed).
    Stop,
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Init => "INIT",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
            Self::Stop => "STOP",
        })
    }
}

/// A snapshot of the whole node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Status {
    /// The node itself.
    pub node: NodeStatus,
    /// Every VRRP instance.
    pub vrrp: Vec<VrrpStatus>,
    /// Every virtual server.
    pub virtual_servers: Vec<VirtualServerStatus>,
    /// Every BFD session (`bfd_instance`).
    #[serde(default)]
    pub bfd: Vec<BfdStatus>,
    /// Every open access log file (`access_log`), by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logs: Vec<AccessLogStatus>,
}

/// One access log file's counters since it was opened (HAProxy's `show info` counts
/// `DroppedLogs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogStatus {
    /// The file.
    pub path: String,
    /// Lines written to the file (flushed).
    pub lines_written: u64,
    /// Lines dropped because the writer's queue was full (the disk did not keep up).
    pub lines_dropped: u64,
    /// Lines lost to failed writes or flushes (a full disk).
    pub lines_lost: u64,
}

/// One BFD session (keepalived `bfd_instance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdStatus {
    /// The `bfd_instance` name.
    pub name: String,
    /// The neighbour.
    pub neighbor_ip: IpAddr,
    /// Our session state (RFC 5880 §4.1 names: `AdminDown`, `Down`, `Init`, `Up`).
    pub state: String,
    /// The state the neighbour last reported.
    pub remote_state: String,
    /// Why our session last left Up, or was refused (RFC 5880 §4.1 diagnostic text).
    pub diagnostic: String,
    /// Seconds since the state last changed.
    pub since_secs: u64,
    /// Packets from the neighbour the session accepted.
    #[serde(default)]
    pub packets_in: u64,
    /// Packets sent to the neighbour.
    #[serde(default)]
    pub packets_out: u64,
    /// Packets from the neighbour dropped: malformed, a TTL or hop limit too low, another
    /// session's discriminator, or received while AdminDown.
    #[serde(default)]
    pub dropped: u64,
}

impl Status {
    /// What a node reports right after loading `config`: every instance in INIT at its base
    /// priority, every backend ready at its configured weight (down when its checks use
    /// `alpha`), counters at zero. The daemon starts from it and fills in the runtime fields.
    pub fn from_config(config: &Config) -> Self {
        let sync_group = |name: &str| {
            config
                .sync_groups
                .iter()
                .find(|g| g.group.iter().any(|m| m == name))
                .map(|g| g.name.clone())
        };
        Self {
            node: NodeStatus {
                router_id: config.global.router_id.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_secs: 0,
                config: None,
                busy_polling: config.global.busy_polling,
                busy_polls: 0,
                last_reload: None,
            },
            vrrp: config
                .vrrp_instances
                .iter()
                .map(|vi| VrrpStatus::initial(vi, sync_group(&vi.name)))
                .collect(),
            virtual_servers: config
                .virtual_servers
                .iter()
                .map(|vs| VirtualServerStatus {
                    quorum: vs
                        .backends
                        .iter()
                        .filter(|b| !b.backup && !b.starts_down(vs))
                        .map(|b| u64::from(b.weight.get()))
                        .sum::<u64>()
                        // A virtual server starts without quorum and gains it at
                        // quorum + hysteresis (keepalived; `lb_core::PoolConfig::hysteresis`).
                        >= vs.quorum.saturating_add(vs.hysteresis),
                    http: (vs.protocol == Protocol::Http).then(HttpVsCounters::default),
                    backends: vs
                        .backends
                        .iter()
                        .map(|b| BackendStatus {
                            address: b.address,
                            health: if b.starts_down(vs) {
                                Health::Down
                            } else {
                                Health::Up
                            },
                            admin: AdminState::Ready,
                            backup: b.backup,
                            weight: b.weight.get(),
                            effective_weight: b.weight.get(),
                            active_connections: 0,
                            total_connections: 0,
                            bytes_to_backend: 0,
                            bytes_to_client: 0,
                            http: (vs.protocol == Protocol::Http).then(HttpCounters::default),
                            health_reason: None,
                            health_changed: None,
                        })
                        .collect(),
                    ..VirtualServerStatus::frame(vs)
                })
                .collect(),
            bfd: config
                .bfd_instances
                .iter()
                .map(|b| BfdStatus {
                    name: b.name.clone(),
                    neighbor_ip: b.neighbor_ip,
                    state: "Down".into(),
                    remote_state: "Down".into(),
                    diagnostic: "No Diagnostic".into(),
                    since_secs: 0,
                    packets_in: 0,
                    packets_out: 0,
                    dropped: 0,
                })
                .collect(),
            access_logs: Vec::new(),
        }
    }
}

/// The node itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `router_id` from the configuration.
    pub router_id: Option<String>,
    /// The daemon's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The configuration file in use.
    pub config: Option<String>,
    /// `[global] busy_polling` is on (HAProxy `busy-polling`).
    #[serde(default)]
    pub busy_polling: bool,
    /// Zero-timeout polls made by busy polling since start: it climbs while connections
    /// are open and stands still while the node is idle.
    #[serde(default)]
    pub busy_polls: u64,
    /// The last SIGHUP reload, if there was one since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<ReloadStatus>,
}

/// How a SIGHUP reload ended (HAProxy's master CLI answers a `reload` alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// When it ended, seconds since the Unix epoch.
    pub at: u64,
    /// `done`; `partial` (applied, but virtual servers do not run: their `error` says why);
    /// `rejected` (the file did not load: the running configuration stays).
    pub result: String,
    /// Why, for `rejected` (the loader's `file:line:column` messages) and `partial`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    /// Instance name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// VRID.
    pub virtual_router_id: u8,
    /// Current state.
    pub state: VrrpState,
    /// Configured priority.
    pub base_priority: u8,
    /// Priority after tracked interfaces, scripts and services.
    pub effective_priority: u8,
    /// The current master's address (this node's when master), if known.
    pub master_address: Option<IpAddr>,
    /// The virtual addresses, as configured (`198.18.0.250/24 dev eth0`).
    pub virtual_ips: Vec<String>,
    /// The sync group, if any.
    pub sync_group: Option<String>,
    /// What the instance tracks and what each does to it now, in the order
    /// `track_service`, `track_interface`, `track_bfd`, `track_script`, `track_process`,
    /// `track_file`.
    #[serde(default)]
    pub tracks: Vec<TrackedStatus>,
    /// Adverts in and out, transitions and dropped adverts (keepalived's
    /// `/tmp/keepalived.stats`).
    #[serde(default)]
    pub counters: VrrpCounters,
}

/// One VRRP instance's counters since it started (a reload that keeps the instance keeps
/// them), as [`lb_vrrp::machine::Counters`] counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpCounters {
    /// Adverts received that passed validation.
    pub adverts_in: u64,
    /// Adverts sent (priority 0 included).
    pub adverts_out: u64,
    /// Accepted adverts of priority 0 (a master resigning).
    pub priority_zero_in: u64,
    /// Priority-0 adverts sent.
    pub priority_zero_out: u64,
    /// Times this instance became MASTER.
    pub became_master: u64,
    /// Accepted adverts whose address list differs from ours (`skip_check_adv_addr`, or
    /// a VRRPv2 address owner's).
    pub address_list_mismatch: u64,
    /// Adverts of lower priority received while MASTER (another router acting as master).
    pub lower_priority_in: u64,
    /// Dropped adverts by reason ([`lb_vrrp::machine::Discard::name`]: `auth`,
    /// `interval`, `address_list`, `ttl`…); reasons with none are left out.
    #[serde(default)]
    pub dropped: std::collections::BTreeMap<String, u64>,
}

impl VrrpCounters {
    /// From a running instance's counters.
    pub fn from_machine(c: &lb_vrrp::machine::Counters) -> Self {
        Self {
            adverts_in: c.adverts_rx,
            adverts_out: c.adverts_tx,
            priority_zero_in: c.priority_zero_rx,
            priority_zero_out: c.priority_zero_tx,
            became_master: c.became_master,
            address_list_mismatch: c.address_list_mismatch,
            lower_priority_in: c.lower_priority_rx,
            dropped: lb_vrrp::machine::Discard::ALL
                .iter()
                .filter(|&&d| c.discards(d) > 0)
                .map(|&d| (d.name().to_owned(), c.discards(d)))
                .collect(),
        }
    }

    /// All dropped adverts.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// One check a VRRP instance tracks (keepalived's `track_*`), and its effect now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedStatus {
    /// `service`, `interface`, `bfd`, `script`, `process` or `file`.
    pub kind: String,
    /// The tracked name (a virtual server, interface, `bfd_instance`, `vrrp_script`,
    /// `vrrp_track_process` or `track_file`).
    pub name: String,
    /// The weight (for a file: the multiplier of its value); 0 means FAULT on failure.
    pub weight: i32,
    /// keepalived `weight … reverse`: the weight applies to the opposite state.
    pub reverse: bool,
    /// The check's own state: `up`, `down` or `unknown` (a script before its first
    /// result); for a file, `ok` or `fault`.
    pub state: String,
    /// What it adds to the base priority now (the address owner's priority stays 255).
    pub priority_change: i32,
    /// Whether it holds the instance in FAULT now.
    pub fault: bool,
}

impl VrrpStatus {
    /// An instance as it starts: INIT at its base priority, no master known yet.
    pub fn initial(vi: &crate::config::model::VrrpInstance, sync_group: Option<String>) -> Self {
        Self {
            name: vi.name.clone(),
            interface: vi.interface.clone(),
            virtual_router_id: vi.virtual_router_id,
            state: VrrpState::Init,
            base_priority: vi.priority,
            effective_priority: vi.priority,
            master_address: None,
            virtual_ips: vi
                .virtual_ipaddress
                .iter()
                .map(ToString::to_string)
                .collect(),
            sync_group,
            tracks: Vec::new(),
            counters: VrrpCounters::default(),
        }
    }
}

/// One virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualServerStatus {
    /// Name.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// Scheduler name (`rr`, `wlc`, …).
    pub scheduler: String,
    /// Whether the primary backends have quorum (keepalived `quorum`): without it, the
    /// backup backends (sorry servers) take the new connections. Absent in older output:
    /// true.
    #[serde(default = "quorum_default")]
    pub quorum: bool,
    /// The HTTP proxy's own counters, for `protocol = "http"` virtual servers (absent in
    /// older output and for L4 virtual servers).
    #[serde(default)]
    pub http: Option<HttpVsCounters>,
    /// The TCP or UDP proxy's own counters, for L4 virtual servers (absent in older output
    /// and for HTTP virtual servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4VsCounters>,
    /// The backends.
    pub backends: Vec<BackendStatus>,
    /// Set for a virtual server of the configuration that does not run: why its start
    /// failed at the last reload (its address taken, say); the next reload tries again.
    /// Absent for a running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an HTTP virtual server counted besides its backends' responses: the proxy's own
/// error responses and why connections were closed (lb-proxy's `VirtualServerStats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpVsCounters {
    /// Client connections accepted.
    pub connections: u64,
    /// Client connections open now (upgraded tunnels included).
    pub active_connections: u64,
    /// Requests received.
    pub requests: u64,
    /// 503s: no route or no live backend.
    pub no_backend: u64,
    /// 502s: backend connect failures (after retries) and broken backend connections.
    pub bad_gateway: u64,
    /// 504s: backend response timeouts.
    pub gateway_timeout: u64,
    /// Malformed requests (400/431) and client aborts.
    pub bad_requests: u64,
    /// Connections cut off by the request-head timeout (slowloris).
    pub header_timeouts: u64,
    /// Keep-alive connections closed for idleness.
    pub idle_timeouts: u64,
    /// Connections closed by the client timeout (a stalled upload gets 408).
    pub client_timeouts: u64,
    /// Connections closed for a missing, late or malformed PROXY header (`accept_proxy`).
    #[serde(default)]
    pub proxy_header_errors: u64,
    /// HTTPS: connections closed for a failed or late TLS handshake.
    #[serde(default)]
    pub tls_handshake_errors: u64,
    /// Requests sent to another backend after a failure.
    pub retries: u64,
    /// Protocol switches (WebSocket) passed through.
    pub upgrades: u64,
    /// Client connections served in HTTP/2 (`http2`), of `connections`.
    #[serde(default)]
    pub http2_connections: u64,
}

/// What a TCP or UDP virtual server counted (lb-proxy's `StatsSnapshot`): connections
/// (UDP: sessions), the client-visible failures and why, the `maxconn` queue (HAProxy's
/// `qtot`-like totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct L4VsCounters {
    /// Client connections (UDP: sessions) accepted.
    pub connections: u64,
    /// Open now.
    pub active_connections: u64,
    /// Closed because no backend could be reached: what clients saw fail.
    pub failed: u64,
    /// Backend connect attempts that failed (each retried while retries remained).
    pub connect_failures: u64,
    /// Connect attempts made after a failure.
    pub retries: u64,
    /// Connections that waited for a backend slot (every backend at its `maxconn`).
    pub queued: u64,
    /// Refused because the queue was full or its `timeout_queue` ran out.
    pub queue_refused: u64,
    /// Closed for a missing, late or malformed PROXY header (`accept_proxy`).
    pub proxy_header_errors: u64,
    /// Closed by the idle timeout.
    pub idle_timeouts: u64,
    /// UDP datagrams dropped because the session table was full.
    pub sessions_refused: u64,
    /// Backend connections (UDP: session sockets) this host could not set up (descriptors,
    /// `source` address or ephemeral ports ran out); each dropped its client connection or
    /// datagram.
    #[serde(default)]
    pub local_errors: u64,
    /// UDP datagrams to a backend dropped because the path to it was congested (its
    /// session socket's send buffer full).
    #[serde(default)]
    pub send_drops: u64,
}

impl From<lb_proxy::stats::StatsSnapshot> for L4VsCounters {
    fn from(s: lb_proxy::stats::StatsSnapshot) -> Self {
        Self {
            connections: s.accepted,
            active_connections: s.active,
            failed: s.failed,
            connect_failures: s.connect_failures,
            retries: s.retries,
            queued: s.queued,
            queue_refused: s.queue_refused,
            proxy_header_errors: s.proxy_header_errors,
            idle_timeouts: s.idle_timeouts,
            sessions_refused: s.sessions_refused,
            local_errors: s.local_errors,
            send_drops: s.send_drops,
        }
    }
}

fn quorum_default() -> bool {
    true
}

impl VirtualServerStatus {
    /// `vs` as configured: name, listen address, protocol and scheduler; quorum, no HTTP
    /// counters, no backend, no error (the caller fills in what it knows).
    pub fn frame(vs: &crate::config::model::VirtualServer) -> Self {
        Self {
            name: vs.name.clone(),
            listen: vs.listen,
            protocol: vs.protocol,
            scheduler: vs.lb_algo.name().to_owned(),
            quorum: true,
            http: None,
            l4: None,
            backends: Vec::new(),
            error: None,
        }
    }

    /// Backends that can take a new connection now (up, ready, weight > 0).
    pub fn live_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.is_live()).count()
    }
}

/// One backend with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address.
    pub address: SocketAddr,
    /// Health.
    pub health: Health,
    /// Admin state.
    pub admin: AdminState,
    /// A backup (sorry) backend.
    pub backup: bool,
    /// Configured weight.
    pub weight: u32,
    /// Weight in use now (0 when inhibited, ramping during slow start).
    pub effective_weight: u32,
    /// Open connections; for an HTTP virtual server's backend, requests in flight (and
    /// upgraded tunnels), as HAProxy's `scur` of a server in `mode http`: 0 once a drained
    /// backend has finished.
    pub active_connections: u64,
    /// Connections since start; for an HTTP virtual server's backend, requests (and
    /// upgraded tunnels), as HAProxy's `stot`.
    pub total_connections: u64,
    /// Bytes sent to the backend.
    pub bytes_to_backend: u64,
    /// Bytes sent to clients.
    pub bytes_to_client: u64,
    /// HTTP counters, for `protocol = "http"` virtual servers.
    pub http: Option<HttpCounters>,
    /// What fails it now (HAProxy's `check_desc`): a tracked file's fault, else passive
    /// health's ejection, else its checks' failure; `None` while nothing fails it. An
    /// `inhibit_on_failure` backend that is failed stays up at weight 0 with a reason.
    #[serde(default)]
    pub health_reason: Option<String>,
    /// When that was, in seconds since the Unix epoch (HAProxy's `lastchg`, as a time).
    #[serde(default)]
    pub health_changed: Option<u64>,
}

impl BackendStatus {
    /// Whether the backend can take a new connection now.
    pub fn is_live(&self) -> bool {
        self.health == Health::Up && self.admin == AdminState::Ready && self.effective_weight > 0
    }
}

/// Requests and response classes of an HTTP backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpCounters {
    /// Requests forwarded.
    pub requests: u64,
    /// 1xx responses.
    pub responses_1xx: u64,
    /// 2xx responses.
    pub responses_2xx: u64,
    /// 3xx responses.
    pub responses_3xx: u64,
    /// 4xx responses.
    pub responses_4xx: u64,
    /// 5xx responses.
    pub responses_5xx: u64,
    /// Connects (and TLS handshakes) that failed (HAProxy's per-server `econ`).
    #[serde(default)]
    pub connect_failures: u64,
    /// Requests it did not answer within `timeout_server` (504s).
    #[serde(default)]
    pub timeouts: u64,
}
