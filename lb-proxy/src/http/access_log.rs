//! Access logs: one entry per request once its response has ended ([`AccessEntry`]), handed
//! to an [`AccessLog`] sink ([`HttpProxyConfig::access_log`](super::HttpProxyConfig::access_log)),
//! and written as a line in HAProxy's `option httplog` layout ([`AccessEntry::write_httplog`])
//! or nginx's `combined` ([`AccessEntry::write_combined`]). Sans-IO: the sink decides where
//! lines go (lb-node writes them to a file from a thread of its own).
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use lb_proxy::http::{AccessEntry, RequestLine, Termination, Timings};
//!
//! let method = http::Method::GET;
//! let uri: http::Uri = "/index.html".parse().unwrap();
//! let entry = AccessEntry {
//!     virtual_server: "web",
//!     client: "198.18.0.7:33317".parse().unwrap(),
//!     started: UNIX_EPOCH + Duration::from_millis(1_795_484_200_624),
//!     pool: Some("web"),
//!     backend: Some("198.18.0.161:80".parse().unwrap()),
//!     request: Some(RequestLine {
//!         method: &method,
//!         uri: &uri,
//!         version: http::Version::HTTP_11,
//!     }),
//!     referer: None,
//!     user_agent: Some(b"curl/7.88.1"),
//!     status: Some(200),
//!     bytes_to_client: 2750,
//!     timings: Timings {
//!         request: Duration::from_millis(10),
//!         connect: Some(Duration::from_millis(1)),
//!         response: Some(Duration::from_millis(30)),
//!         total: Duration::from_millis(45),
//!     },
//!     retries: 0,
//!     termination: Termination::NORMAL,
//! };
//! let mut line = String::new();
//! entry.write_httplog(&mut line);
//! assert_eq!(
//!     line,
//!     "198.18.0.7:33317 [24/Nov/2026:01:36:40.624] web web/198.18.0.161:80 10/0/1/30/45 200 2750 - - ---- 0 \"GET /index.html HTTP/1.1\""
//! );
//! line.clear();
//! entry.write_combined(&mut line);
//! assert_eq!(
//!     line,
//!     "198.18.0.7 - - [24/Nov/2026:01:36:40 +0000] \"GET /index.html HTTP/1.1\" 200 2750 \"-\" \"curl/7.88.1\""
//! );
//! // A request hyper could not parse: no request line, HAProxy's `<BADREQ>`.
//! let bad = AccessEntry { request: None, pool: None, backend: None, status: Some(400), ..entry };
//! line.clear();
//! bad.write_httplog(&mut line);
//! assert!(line.ends_with(" 400 2750 - - ---- 0 \"<BADREQ>\""), "{line}");
//! line.clear();
//! bad.write_combined(&mut line);
//! assert!(line.contains("] \"-\" 400 "), "{line}");
//! ```

use std::fmt::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub use crate::log::Termination;
use crate::log::{escape, ms, write_client_and_date, write_date, write_server};

/// Where a virtual server's access entries go. Called on the proxy's own tasks, once per
/// request, as its response ends: it must not block (queue the line, drop it when the
/// queue is full).
pub trait AccessLog: Send + Sync + fmt::Debug {
    /// Takes one entry.
    fn log(&self, entry: &AccessEntry<'_>);
}

/// An [`AccessLog`] in a configuration ([`HttpProxyConfig::access_log`](super::HttpProxyConfig::access_log)):
/// two are equal when they are the same sink (the same `Arc`).
#[derive(Debug, Clone)]
pub struct AccessLogSink(pub std::sync::Arc<dyn AccessLog>);

impl PartialEq for AccessLogSink {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A request's times, HAProxy's `TR/Tw/Tc/Tr/Ta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `TR`: receiving the request head, from its first byte.
    pub request: Duration,
    /// `Tc`: the connect (and TLS handshake) to the backend that served, 0 for a kept-alive
    /// connection, `None` (`-1`) when none was established.
    pub connect: Option<Duration>,
    /// `Tr`: from sending the request to the backend's response head, `None` (`-1`)
    /// without one.
    pub response: Option<Duration>,
    /// `Ta`: from the request head's first byte to the response's end (HAProxy's: at least
    /// `TR + Tw + Tc + Tr`).
    pub total: Duration,
}

/// A request line, as an access entry writes it.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// The request method.
    pub method: &'a http::Method,
    /// The request target (an absolute-form target as `http` prints it: `http://x/` for
    /// `http://x`; HTTP/2 requests have one, from `:scheme` and `:authority`).
    pub uri: &'a http::Uri,
    /// The client's HTTP version.
    pub version: http::Version,
}

/// One request, as logged once its response has ended.
#[derive(Debug, Clone)]
pub struct AccessEntry<'a> {
    /// The virtual server's name (HAProxy's frontend).
    pub virtual_server: &'a str,
    /// The client, from the socket or its PROXY header.
    pub client: SocketAddr,
    /// When the request head's first byte arrived (HAProxy's date).
    pub started: SystemTime,
    /// The pool a route chose (HAProxy's backend), `None` when none was (written as the
    /// virtual server's name, as HAProxy writes the frontend's).
    pub pool: Option<&'a str>,
    /// The backend that last took the request (HAProxy's server), `None` when none did
    /// (written `<NOSRV>`, as HAProxy).
    pub backend: Option<SocketAddr>,
    /// The request line; `None` for a request refused before it was parsed whole (a
    /// malformed head, one too large, one not complete in time): written `<BADREQ>`
    /// (httplog, HAProxy's) or `-` (combined, nginx's for a request line it did not get).
    pub request: Option<RequestLine<'a>>,
    /// The `Referer` header's bytes, if any.
    pub referer: Option<&'a [u8]>,
    /// The `User-Agent` header's bytes, if any.
    pub user_agent: Option<&'a [u8]>,
    /// The status the client got; `None` when it got no response (it went away first, or
    /// the proxy stopped): written `-1` (httplog) or 499 (combined, nginx's "client closed
    /// request").
    pub status: Option<u16>,
    /// Body bytes sent to the client (HAProxy counts the head too: these do not).
    pub bytes_to_client: u64,
    /// The request's times.
    pub timings: Timings,
    /// How many more backends the request was sent to after its first (HAProxy's
    /// `retries`).
    pub retries: u32,
    /// How it ended.
    pub termination: Termination,
}

impl AccessEntry<'_> {
    /// Appends HAProxy's `option httplog` line, without the syslog header and without the
    /// connection-count and queue fields: `client:port [date] virtual_server
    /// pool/backend TR/Tw/Tc/Tr/Ta status bytes - - termination retries "request line"`.
    /// The date is UTC with milliseconds (`24/Nov/2026:01:36:40.624`); `Tw` (queueing) is
    /// 0, a time that did not happen is `-1`, as is the status of a request that got no
    /// response; a pool not chosen is the virtual server's name, a backend not reached
    /// `<NOSRV>` (HAProxy's); quotes, backslashes and bytes outside printable ASCII in the
    /// request line are written `\xHH`.
    pub fn write_httplog(&self, out: &mut String) {
        let t = &self.timings;
        write_client_and_date(out, self.client, self.started);
        // Names with a space would break the fields: escaped as client text is.
        escape(out, self.virtual_server.as_bytes());
        out.push(' ');
        escape(out, self.pool.unwrap_or(self.virtual_server).as_bytes());
        out.push('/');
        write_server(out, self.backend);
        let _ = write!(
            out,
            " {}/0/{}/{}/{} {} {} - - {} {} \"",
            ms(Some(t.request)),
            ms(t.connect),
            ms(t.response),
            ms(Some(t.total)),
            self.status.map_or(-1, i32::from),
            self.bytes_to_client,
            self.termination,
            self.retries,
        );
        match &self.request {
            Some(r) => r.write(out),
            None => out.push_str("<BADREQ>"),
        }
        out.push('"');
    }

    /// Appends nginx's `combined` line: `client - - [date] "request line" status bytes
    /// "referer" "user agent"`, the date UTC (`24/Nov/2026:01:36:40 +0000`), a missing
    /// header `-`, no response 499 (nginx's), and quotes, backslashes and bytes outside
    /// printable ASCII written `\xHH` as nginx escapes them.
    pub fn write_combined(&self, out: &mut String) {
        let _ = write!(out, "{} - - [", self.client.ip().to_canonical());
        write_date(out, self.started, false);
        out.push_str("] \"");
        match &self.request {
            Some(r) => r.write(out),
            None => out.push('-'),
        }
        let _ = write!(
            out,
            "\" {} {} \"",
            self.status.unwrap_or(499),
            self.bytes_to_client
        );
        escape(out, self.referer.unwrap_or(b"-"));
        out.push_str("\" \"");
        escape(out, self.user_agent.unwrap_or(b"-"));
        out.push('"');
    }
}

impl RequestLine<'_> {
    fn write(&self, out: &mut String) {
        escape(out, self.method.as_str().as_bytes());
        out.push(' ');
        escape(out, self.uri.to_string().as_bytes());
        let _ = write!(out, " {:?}", self.version);
    }
}
