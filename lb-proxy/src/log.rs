//! Access logs' common parts: HAProxy's termination states ([`Termination`]), and the
//! dates and escaping the HTTP ([`crate::http::access_log`]) and TCP ([`TcpLogEntry`])
//! lines share. Sans-IO: a sink ([`TcpLog`], [`crate::http::AccessLog`]) decides where
//! lines go.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use lb_proxy::log::{TcpLogEntry, TcpTimings, Termination};
//!
//! let entry = TcpLogEntry {
//!     virtual_server: "mysql",
//!     client: "198.18.0.7:33317".parse().unwrap(),
//!     started: UNIX_EPOCH + Duration::from_millis(1_795_484_200_624),
//!     backend: Some("198.18.0.161:3306".parse().unwrap()),
//!     timings: TcpTimings {
//!         queue: Some(Duration::ZERO),
//!         connect: Some(Duration::from_millis(1)),
//!         total: Duration::from_millis(5030),
//!     },
//!     bytes_to_client: 2750,
//!     bytes_to_backend: 310,
//!     retries: 0,
//!     termination: Termination::NORMAL,
//! };
//! let mut line = String::new();
//! entry.write_tcplog(&mut line);
//! assert_eq!(
//!     line,
//!     "198.18.0.7:33317 [24/Nov/2026:01:36:40.624] mysql mysql/198.18.0.161:3306 0/1/5030 2750 -- 0 310"
//! );
//! ```

use std::fmt::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a request or connection ended, as the first two letters of HAProxy's termination state: who ended
/// it (`-` nobody: it completed; `C` the client; `S` the backend; `P` the proxy, refusing
/// it; `L` the proxy, answering it itself; `c` / `s` the client's / backend's timeout) and
/// in which phase (`-` none; `R` waiting for the request; `C` connecting to a backend;
/// `H` waiting for the response head; `D` transferring the body). Written with HAProxy's
/// last two letters (persistence cookies, not used here) as `--`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    /// Who: `-`, `C`, `S`, `P`, `L`, `c` or `s`.
    pub by: char,
    /// When: `-`, `R`, `C`, `H` or `D`.
    pub phase: char,
}

impl Termination {
    /// The response went out whole (`----`).
    pub const NORMAL: Self = Self::new('-', '-');

    /// A termination state from its two letters.
    pub const fn new(by: char, phase: char) -> Self {
        Self { by, phase }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}--", self.by, self.phase)
    }
}

/// A TCP connection's times, HAProxy's `Tw/Tc/Tt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTimings {
    /// `Tw`: waiting in the `maxconn` queue (until the first connect attempt, or the queue
    /// timeout); `None` (`-1`) when the connection ended before.
    pub queue: Option<Duration>,
    /// `Tc`: from the first connect attempt to the one that succeeded, retries included
    /// (HAProxy's); `None` (`-1`) when none did.
    pub connect: Option<Duration>,
    /// `Tt`: from accept to close.
    pub total: Duration,
}

/// One TCP connection, as logged when it ends (HAProxy `option tcplog`).
#[derive(Debug, Clone)]
pub struct TcpLogEntry<'a> {
    /// The virtual server's name (HAProxy's frontend and backend).
    pub virtual_server: &'a str,
    /// The client, from the socket or its PROXY header.
    pub client: SocketAddr,
    /// When the connection was accepted.
    pub started: SystemTime,
    /// The backend that took it, `None` when none did.
    pub backend: Option<SocketAddr>,
    /// Its times.
    pub timings: TcpTimings,
    /// Bytes sent to the client (HAProxy's `bytes_read`).
    pub bytes_to_client: u64,
    /// Bytes sent to the backend (HAProxy's `%U`).
    pub bytes_to_backend: u64,
    /// Connect attempts after the first (HAProxy's `retries`).
    pub retries: u32,
    /// How it ended (written in two letters, as HAProxy's TCP logs): `--` both sides
    /// closed; `CD`/`SD` the client/backend reset or failed mid-stream; `cD` the idle
    /// timeout; `KD`/`KQ`/`KC` the proxy stopped (transferring, queued, connecting);
    /// `SC`/`sC` no backend could be connected (refused or unreachable / timed out); `sQ`
    /// the queue timeout; `PQ` the queue was full; `PR` a bad PROXY header, `cR` none in
    /// time, `CR` the client gone before one; `RC` this host could not set up the
    /// connection (descriptors, source address).
    pub termination: Termination,
}

impl TcpLogEntry<'_> {
    /// Appends HAProxy's `option tcplog` line without the syslog header and the
    /// connection counts: `client:port [date] virtual_server virtual_server/backend
    /// Tw/Tc/Tt bytes_to_client termination retries bytes_to_backend` (the names escaped
    /// as client text is). The date is UTC
    /// with milliseconds; a time that did not happen is `-1`, a backend not reached
    /// `<NOSRV>` (HAProxy's).
    pub fn write_tcplog(&self, out: &mut String) {
        write_client_and_date(out, self.client, self.started);
        escape(out, self.virtual_server.as_bytes());
        out.push(' ');
        escape(out, self.virtual_server.as_bytes());
        out.push('/');
        write_server(out, self.backend);
        let t = &self.timings;
        let _ = write!(
            out,
            " {}/{}/{} {} {}{} {} {}",
            ms(t.queue),
            ms(t.connect),
            ms(Some(t.total)),
            self.bytes_to_client,
            // Two letters in TCP mode (HAProxy extends it to four in HTTP mode only).
            self.termination.by,
            self.termination.phase,
            self.retries,
            self.bytes_to_backend
        );
    }
}

/// `d` in whole milliseconds; `-1` for `None` (HAProxy's time that did not happen).
pub(crate) fn ms(d: Option<Duration>) -> i64 {
    d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Appends `client:port [date] ` (an IPv4-mapped client as IPv4; the date UTC, with
/// milliseconds), as HAProxy's logs start.
pub(crate) fn write_client_and_date(out: &mut String, client: SocketAddr, started: SystemTime) {
    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    let _ = write!(out, "{client} [");
    write_date(out, started, true);
    out.push_str("] ");
}

/// Appends the backend, or HAProxy's `<NOSRV>` when none was reached.
pub(crate) fn write_server(out: &mut String, backend: Option<SocketAddr>) {
    match backend {
        Some(b) => {
            let _ = write!(out, "{b}");
        }
        None => out.push_str("<NOSRV>"),
    }
}

/// Where a TCP virtual server's connection entries go ([`crate::tcp::TcpProxyConfig::log`]).
/// Called on the proxy's own tasks, once per connection as it ends: it must not block.
pub trait TcpLog: Send + Sync + fmt::Debug {
    /// Takes one entry.
    fn log(&self, entry: &TcpLogEntry<'_>);
}

/// Appends `s` with `"`, `\` and bytes outside printable ASCII written `\xHH` (nginx's
/// escaping): nothing a client sends can break a line or a field.
pub(crate) fn escape(out: &mut String, s: &[u8]) {
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Appends `t` in UTC as `24/Nov/2026:01:36:40.624` (`millis`) or `24/Nov/2026:01:36:40
/// +0000`. A time before 1970 is written as 1970's first instant.
pub(crate) fn write_date(out: &mut String, t: SystemTime, millis: bool) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    let _ = write!(
        out,
        "{d:02}/{}/{y}:{:02}:{:02}:{:02}",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if millis {
        let _ = write!(out, ".{:03}", since.subsec_millis());
    } else {
        out.push_str(" +0000");
    }
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of `days` days after 1970-01-01
/// (Howard Hinnant's `civil_from_days`, "chrono-Compatible Low-Level Date Algorithms",
/// restricted to dates after the epoch). For logs and status lines that show UTC dates.
///
/// ```
/// assert_eq!(lb_proxy::log::civil_from_days(0), (1970, 1, 1));
/// assert_eq!(lb_proxy::log::civil_from_days(11_016), (2000, 2, 29));
/// ```
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        let at = |secs: u64, millis: bool| {
            let mut s = String::new();
            write_date(&mut s, UNIX_EPOCH + Duration::from_secs(secs), millis);
            s
        };
        assert_eq!(at(0, true), "01/Jan/1970:00:00:00.000");
        // 2000-02-29 (a leap day of a century leap year), 2100-03-01 (2100 is not leap).
        assert_eq!(at(951_782_400, false), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(
            at(4_107_542_400 + 86_399, false),
            "01/Mar/2100:23:59:59 +0000"
        );
        assert_eq!(at(1_735_689_599, false), "31/Dec/2024:23:59:59 +0000");
        let mut s = String::new();
        write_date(&mut s, UNIX_EPOCH - Duration::from_secs(1), true);
        assert_eq!(s, "01/Jan/1970:00:00:00.000");
    }

    #[test]
    fn client_text_cannot_break_a_line() {
        let mut s = String::new();
        escape(&mut s, "a\"b\\c\nd\u{e9}".as_bytes());
        assert_eq!(s, "a\\x22b\\x5Cc\\x0Ad\\xC3\\xA9");
    }
}
