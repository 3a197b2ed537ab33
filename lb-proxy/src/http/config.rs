//! [`HttpProxyConfig`]: everything an HTTP virtual server is told, as plain data.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lb_proxy::http::{HashKeySource, HttpProxyConfig, Route};
//!
//! let mut config = HttpProxyConfig::new("web");
//! config.default_pool = Some("www".into());
//! config.routes.push(Route::new("api").host("*.api.example.com".parse()?).path_prefix("/v1/"));
//! config.hash_key = HashKeySource::Cookie("session".into());
//! config.timeouts.backend_response = Duration::from_secs(5);
//! config.validate()?;
//! # Ok::<(), lb_proxy::http::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;

use super::error::{Error, Result};
use crate::busy_poll::BusyPolling;
use crate::proxy_protocol::AcceptProxy;

/// Which client-identity headers the proxy adds to every request it forwards. Each can be
/// switched off on its own (HAProxy `option forwardfor`, nginx `proxy_set_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// Append the client address to `X-Forwarded-For`, keeping what earlier proxies wrote
    /// (default on). IPv6 addresses are written bare (`2001:db8::1`), as nginx and HAProxy do.
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto: http`, replacing a client-supplied value (default on).
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Port` to the port the client connected to, replacing a
    /// client-supplied value (default on).
    pub x_forwarded_port: bool,
    /// Append an [RFC 7239] `Forwarded` element `for="…";proto=http;host=…` (default off).
    /// IPv6 nodes are quoted and bracketed: `for="[2001:db8::1]:4711"` (§6).
    ///
    /// [RFC 7239]: https://www.rfc-editor.org/rfc/rfc7239
    pub forwarded: bool,
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        Self {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_port: true,
            forwarded: false,
        }
    }
}

impl ForwardedHeaders {
    /// Every header off: the request reaches the backend as the client sent it (less
    /// hop-by-hop headers).
    pub const NONE: Self = Self {
        x_forwarded_for: false,
        x_forwarded_proto: false,
        x_forwarded_port: false,
        forwarded: false,
    };
}

/// What the `Host` of a request must be for a [`Route`] to apply.
///
/// Parsed from `example.com` (exact) or `*.example.com` (any name ending in `.example.com`,
/// at any depth, as nginx `server_name *.example.com`; not `example.com` itself). Matching is
/// case-insensitive and ignores the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// This name exactly (stored lowercase).
    Exact(String),
    /// Any name ending in this suffix; stored lowercase with its leading dot (`.example.com`).
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (lowercase, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// Parses `example.com` or `*.example.com`.
///
/// # Errors
/// [`Error::InvalidConfig`] for an empty name, a `*` anywhere but a leading `*.`, or a name
/// with a port, a slash or whitespace.
impl FromStr for HostMatch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidConfig {
            setting: "route host",
            reason: format!("{s:?}: {reason}"),
        };
        // A fully qualified `example.com.` names `example.com`: request hosts are compared
        // without their trailing dot.
        let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.is_empty() {
            return Err(bad("empty host name"));
        }
        if name
            .bytes()
            .any(|b| b == b'*' || b == b':' || b == b'/' || b.is_ascii_whitespace())
        {
            return Err(bad(
                "only a leading `*.` wildcard is allowed, and no port, slash or space",
            ));
        }
        Ok(if wild {
            Self::Suffix(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// One routing rule: requests whose host and path match go to `pool`. Rules are tried in
/// order; the first match wins; when none matches, [`HttpProxyConfig::default_pool`] takes
/// the request (Edge-LB `linkBackend.defaultBackend`, HAProxy `default_backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The host condition; `None` matches any host.
    pub host: Option<HostMatch>,
    /// The path condition, a plain byte prefix of the request path as received (HAProxy
    /// `path_beg`): `/api` matches `/api`, `/api/x` and `/apix`. The path is not normalised
    /// first, as nginx's prefix `location` does: `/static/../admin` and
    /// `/static/%2e%2e/admin` match `/static/`, so a route must not be the only guard of
    /// what a backend serves. `None` matches any path.
    pub path_prefix: Option<String>,
    /// The name of the pool that serves matching requests.
    pub pool: String,
}

impl Route {
    /// A rule sending every request to `pool`; narrow it with [`Route::host`] and
    /// [`Route::path_prefix`].
    pub fn new(pool: impl Into<String>) -> Self {
        Self {
            host: None,
            path_prefix: None,
            pool: pool.into(),
        }
    }

    /// Adds a host condition.
    #[must_use]
    pub fn host(mut self, host: HostMatch) -> Self {
        self.host = Some(host);
        self
    }

    /// Adds a path-prefix condition.
    #[must_use]
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }
}

/// What hash schedulers (`sh`, `mh`, `ring_hash`) key on in HTTP mode. A request without
/// the header or cookie is placed by a count of such requests instead, so that they spread
/// over the backends by weight as HAProxy's fallback to round robin does (the client
/// address would send every such client behind one NAT to one backend).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKeySource {
    /// The client address (default; HAProxy `balance source`).
    #[default]
    ClientAddr,
    /// The value of this request header (HAProxy `balance hdr(name)`).
    Header(HeaderName),
    /// The value of this cookie (nginx `hash $cookie_name`).
    Cookie(String),
    /// The path, without the query (HAProxy `balance uri`: the part before the `?`).
    Uri,
    /// The path and query (HAProxy `balance uri whole`; nginx `hash $request_uri`).
    UriWhole,
}

/// Time limits. All are wall-clock durations; a zero duration is refused by
/// [`HttpProxyConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a client may take to send a complete request head (default 10 s; HAProxy
    /// `timeout http-request`): for a connection's first request, from the moment it is
    /// accepted; for a later one, from the first byte after the previous response.
    /// A slowloris client (part of a head came) gets 408 and the connection is closed, as
    /// from HAProxy; a connection that sent nothing is closed without an answer (HAProxy's
    /// `option http-ignore-probes`: a browser's idle pre-connection would otherwise show an
    /// unasked-for 408). Both count in `header_timeouts`. One timer per connection enforces
    /// it, not one per request.
    pub header_read: Duration,
    /// How long a keep-alive client connection may wait for the first byte of its next
    /// request before it is closed (default 60 s; HAProxy `timeout http-keep-alive`;
    /// counted in `idle_timeouts`).
    pub client_idle: Duration,
    /// How long a TCP connect to a backend may take (default 3 s; HAProxy `timeout connect`).
    pub backend_connect: Duration,
    /// How long a backend may take to send its response head after the request was handed
    /// to it, or after the last bytes of a request body still being uploaded to it
    /// (default 30 s; HAProxy `timeout server`). Past it the client gets 504. Like
    /// HAProxy's, it also bounds each gap in the response body: a backend that sends
    /// nothing more of a started body for this long is cut off (the client connection
    /// closes, the backend's `timeouts` counts it and passive health hears of it).
    pub backend_response: Duration,
    /// How long an idle pooled backend connection is kept (default 60 s).
    pub backend_idle: Duration,
    /// How long the client may leave the proxy waiting while a request is under way
    /// (default 30 s; HAProxy `timeout client`, an inactivity timeout): the longest gap in
    /// a request body being uploaded (past it the client gets 408 and the connection
    /// closes), and the longest a response (or an upgraded tunnel) may wait for the client
    /// to read what was already sent (past it the connection is closed). Both count in
    /// `client_timeouts`; neither is held against the backend. An idle keep-alive
    /// connection is bounded by `client_idle` instead, and an idle tunnel is not bounded.
    pub client: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            client_idle: Duration::from_secs(60),
            backend_connect: Duration::from_secs(3),
            backend_response: Duration::from_secs(30),
            backend_idle: Duration::from_secs(60),
            client: Duration::from_secs(30),
        }
    }
}

/// Size and count limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes (default 16 384; at least
    /// 8 192, hyper's minimum buffer). Larger heads get 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Most request headers (default 100). More get 431 and the connection is closed. Also
    /// the most headers a backend's response may have: more get the client a 502 (HAProxy's
    /// `tune.http.maxhdr`, 101 by default, bounds both too).
    pub max_headers: usize,
    /// Idle keep-alive connections kept per backend (default 64; nginx `keepalive`). 0 turns
    /// backend keep-alive off: one connection per request. Not for a pool speaking HTTP/2
    /// to its backends ([`HttpPool::http2`](super::HttpPool::http2)), whose requests share
    /// its connections.
    pub max_idle_per_backend: usize,
    /// Most requests in flight at once on one HTTP/2 client connection (default 100,
    /// HAProxy's `tune.h2.max-concurrent-streams` and nginx's `http2_max_concurrent_streams`;
    /// at least 1): the `SETTINGS_MAX_CONCURRENT_STREAMS` sent to the client (RFC 9113
    /// §6.5.2); a stream past it is refused (`REFUSED_STREAM`). Only with
    /// [`HttpProxyConfig::http2`].
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16_384,
            max_headers: 100,
            max_idle_per_backend: 64,
            max_concurrent_streams: 100,
        }
    }
}

/// Passive health: which backend responses count as failures
/// ([`BackendStats::record_failure`](lb_core::BackendStats::record_failure) and what each
/// pool's [`OutcomeObserver`](crate::outcome::OutcomeObserver) is told). Connect failures,
/// response timeouts and broken connections always count, except a pooled connection that
/// broke and whose request could be sent again (a keep-alive race).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Count 5xx responses from a backend as failures, reported as
    /// [`Outcome::HttpServerError`](crate::outcome::Outcome::HttpServerError) (default on;
    /// Envoy's `consecutive_5xx`). Off, they are reported as `Success`.
    pub count_5xx: bool,
    /// The decay of the peak-EWMA latency fed to `peak_ewma` (default 10 s).
    pub latency_decay: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            count_5xx: true,
            latency_decay: Duration::from_secs(10),
        }
    }
}

/// The settings of one HTTP virtual server. Pools are handed separately to
/// [`HttpProxy::start`](super::HttpProxy::start) (as [`HttpPool`](super::HttpPool)s) and
/// referred to here by name.
///
/// [`HttpProxyConfig::new`] defaults:
/// - `forwarded`: `X-Forwarded-For`, `-Proto` and `-Port` on; `Forwarded` off
/// - `accept_proxy`: `None` (no PROXY header expected)
/// - `routes`: none; `default_pool`: none (every request gets 503 until one is set)
/// - `hash_key`: the client address
/// - `timeouts`: header read 10 s, client idle 60 s, backend connect 3 s, backend response
///   30 s, backend idle 60 s, client 30 s
/// - `limits`: 16 KiB head, 100 headers, 64 idle connections per backend, 100 HTTP/2 streams
///   per connection
/// - `retries`: 2
/// - `passive_health`: 5xx counts as a failure
/// - `busy_polling`: off
/// - `tls`: none (plain HTTP); `http2`: off; `redirect_https`: none; `access_log`: none
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProxyConfig {
    /// The virtual server's name, used in logs and stats.
    pub name: String,
    /// Client-identity headers.
    pub forwarded: ForwardedHeaders,
    /// Expect a PROXY protocol v1/v2 header at the start of every client connection (HAProxy
    /// `accept-proxy`), within its `header_timeout`, and take the client address (for
    /// `X-Forwarded-For`, `Forwarded`, hashing) and the destination port
    /// (`X-Forwarded-Port`) from it. A connection whose header is missing or malformed is
    /// closed. `None` (default): no header is expected.
    pub accept_proxy: Option<AcceptProxy>,
    /// Routing rules, tried in order.
    pub routes: Vec<Route>,
    /// The pool for requests no rule matches.
    pub default_pool: Option<String>,
    /// What hash schedulers key on.
    pub hash_key: HashKeySource,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Size and count limits.
    pub limits: Limits,
    /// HAProxy frontend `maxconn`: the most client connections open at once (a WebSocket
    /// tunnel counts as its connection until it closes). At the limit nothing more is
    /// accepted: clients wait in the kernel's accept queue (where a reload's successor
    /// takes them over) until one closes. Default 4096; at least 1.
    pub maxconn: usize,
    /// How many other backends a request may be retried on after a connect failure (any
    /// method: nothing was sent, as HAProxy's `retries` with `retry-on conn-failure`) or
    /// after a pooled connection the backend had closed (only a bodiless idempotent
    /// request, RFC 9110 §9.2.2, once it may have been sent). Other requests get 502.
    pub retries: u32,
    /// What counts as a backend failure.
    pub passive_health: PassiveHealth,
    /// HAProxy `busy-polling`: while a client connection is open, the runtime polls with a
    /// zero timeout instead of sleeping ([`crate::busy_poll`]). `None` (default): off.
    pub busy_polling: Option<BusyPolling>,
    /// Terminate TLS: an HTTPS listener (HAProxy `bind … ssl crt`). Each connection's
    /// handshake, after its PROXY header if one is expected, and its first request head
    /// must both end within `timeouts.header_read` from the handshake's start (HAProxy's
    /// `timeout http-request` covers the handshake); requests then go to the backends in plain HTTP with
    /// `X-Forwarded-Proto: https`. `None` (default): plain HTTP.
    pub tls: Option<super::TlsTermination>,
    /// Speak HTTP/2 to clients that ask for it (RFC 9113), besides HTTP/1.1: over TLS, the
    /// listener offers ALPN `h2` before `http/1.1` (HAProxy `bind … ssl alpn h2,http/1.1`,
    /// nginx `http2 on`); on a plain listener, a connection that opens with the HTTP/2
    /// preface (prior knowledge, "h2c") is served in HTTP/2, as HAProxy detects it. Each
    /// stream is a request balanced, routed, forwarded and logged as an HTTP/1.1 one;
    /// backends are still spoken to in HTTP/1.1 (`:authority` becomes `Host`, split
    /// `cookie` fields are joined, RFC 9113 §8.3.1 and §8.2.3). Per connection: at most
    /// `limits.max_concurrent_streams` streams, the first request within
    /// `timeouts.header_read`, closed (GOAWAY) after `timeouts.client_idle` without one,
    /// and a stream is reset when its response waits for the client to open its
    /// flow-control window for `timeouts.client` while no response data (DATA frames; PING
    /// answers and other control frames are none) is written to the connection (as an HTTP/1.1 write that stalls ends its connection; a stream left
    /// waiting while the client reads others is not, as HAProxy's connection-wide `timeout
    /// client`). Each stream may hold a backend connection: one client connection up to
    /// `max_concurrent_streams` of them.
    /// Not offered: WebSocket over HTTP/2 (extended CONNECT, RFC 8441: the setting is not
    /// advertised, so clients open WebSockets in HTTP/1.1), the `Upgrade: h2c` switch
    /// (refused, as HAProxy refuses it). `false` (default): HTTP/1.1 only.
    pub http2: bool,
    /// Answer every request with a redirect to the same host, path and query over https
    /// on this port (omitted from the `Location` when 443), instead of forwarding it
    /// (HAProxy `http-request redirect scheme https`, nginx `return 301
    /// https://$host$request_uri`): 301 for GET and HEAD, 308 for other methods. The
    /// plain HTTP listener in front of an HTTPS one. `None` (default): requests are
    /// forwarded.
    pub redirect_https: Option<u16>,
    /// Where each request's access entry goes once its response has ended, or once it was
    /// abandoned without one (HAProxy `option httplog`, nginx `access_log`;
    /// [`super::access_log`]). Requests refused before they were parsed whole (a malformed
    /// head: 400, 414, 431; a head not complete in time: 408) are logged without a request
    /// line, as HAProxy's `<BADREQ>`; a connection that sent nothing is not logged. An
    /// upgraded request (WebSocket) is logged when its tunnel ends, with the bytes it carried
    /// to the client. `None` (default): none.
    pub access_log: Option<super::AccessLogSink>,
}

impl HttpProxyConfig {
    /// A configuration with the defaults listed on the type.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            forwarded: ForwardedHeaders::default(),
            accept_proxy: None,
            routes: Vec::new(),
            default_pool: None,
            hash_key: HashKeySource::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            retries: 2,
            passive_health: PassiveHealth::default(),
            busy_polling: None,
            maxconn: 4096,
            tls: None,
            http2: false,
            redirect_https: None,
            access_log: None,
        }
    }

    /// Checks values that are wrong whatever the pools.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero timeout, a head limit below 8 192 bytes, a
    /// header-count limit of 0, or a path prefix not starting with `/`.
    pub fn validate(&self) -> Result<()> {
        let t = &self.timeouts;
        for (setting, d) in [
            ("timeouts.header_read", t.header_read),
            ("timeouts.client_idle", t.client_idle),
            ("timeouts.backend_connect", t.backend_connect),
            ("timeouts.backend_response", t.backend_response),
            ("timeouts.backend_idle", t.backend_idle),
            ("timeouts.client", t.client),
        ] {
            if d.is_zero() {
                return Err(Error::InvalidConfig {
                    setting,
                    reason: "must be above 0 s".into(),
                });
            }
        }
        if self.limits.max_header_bytes < 8_192 {
            return Err(Error::InvalidConfig {
                setting: "limits.max_header_bytes",
                reason: format!(
                    "{} bytes is below hyper's minimum of 8192",
                    self.limits.max_header_bytes
                ),
            });
        }
        if self.limits.max_headers == 0 {
            return Err(Error::InvalidConfig {
                setting: "limits.max_headers",
                reason: "must be at least 1".into(),
            });
        }
        if self.limits.max_concurrent_streams == 0 {
            return Err(Error::InvalidConfig {
                setting: "limits.max_concurrent_streams",
                reason: "must be at least 1".into(),
            });
        }
        if self.maxconn == 0 {
            return Err(Error::InvalidConfig {
                setting: "maxconn",
                reason: "must be at least 1".into(),
            });
        }
        for r in &self.routes {
            if let Some(p) = &r.path_prefix {
                if !p.starts_with('/') {
                    return Err(Error::InvalidConfig {
                        setting: "route path_prefix",
                        reason: format!("{p:?} does not start with `/`"),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_match_parses_and_matches() {
        let exact: HostMatch = "Example.COM".parse().unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("www.example.com"));
        let wild: HostMatch = "*.example.com".parse().unwrap();
        assert_eq!(wild.to_string(), "*.example.com");
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        // A fully qualified name matches the request hosts without their trailing dot
        // (requests are compared without it); it was kept and never matched.
        let fqdn: HostMatch = "example.com.".parse().unwrap();
        assert!(fqdn.matches("example.com"));
        let wild_fqdn: HostMatch = "*.example.org.".parse().unwrap();
        assert!(wild_fqdn.matches("a.example.org"));
        for bad in [
            "",
            ".",
            "*.",
            "*..",
            "a.*.com",
            "example.com:80",
            "*example.com",
            "a/b",
        ] {
            assert!(bad.parse::<HostMatch>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_refuses_nonsense() {
        let mut c = HttpProxyConfig::new("t");
        c.validate().unwrap();
        c.timeouts.backend_connect = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = HttpProxyConfig::new("t");
        c.limits.max_header_bytes = 100;
        assert!(c.validate().is_err());
        let mut c = HttpProxyConfig::new("t");
        c.routes.push(Route::new("p").path_prefix("api"));
        assert!(c.validate().is_err());
        let mut c = HttpProxyConfig::new("t");
        c.maxconn = 0;
        assert!(c.validate().is_err());
    }
}
