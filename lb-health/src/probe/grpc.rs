//! The gRPC health checking protocol (`grpc.health.v1.Health/Check`, grpc's
//! `doc/health-checking.md`), as Envoy's `grpc_health_check` and Kubernetes' `grpc` probe
//! speak it: a unary call over HTTP/2 (h2c with prior knowledge, or TLS with ALPN `h2`),
//! passing when the server answers `SERVING` for the service asked about.
//!
//! | what the server answers | outcome |
//! |---|---|
//! | `grpc-status` 0 and `SERVING` | up |
//! | `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN` | down, the status named |
//! | another `grpc-status` (`NOT_FOUND` for an unknown service, `UNIMPLEMENTED` without the health service) | down, with the code's name and `grpc-message` |
//! | not HTTP/2, not 200, not `application/grpc`, no `grpc-status`, a malformed message | down, saying what |
//!
//! The request and response messages are encoded here (a string field, an enum field:
//! nothing that needs generated code), framed as gRPC frames every message (1 byte
//! compressed flag, 4 bytes big-endian length).
//!
//! # Examples
//!
//! ```
//! use lb_health::probe::grpc::GrpcProbe;
//! use lb_health::probe::Probe;
//!
//! let probe = GrpcProbe::new("echo.Echo").authority("echo.internal");
//! assert_eq!(probe.kind(), "grpc");
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::http::{Tls, TlsOptions};
use super::{elapsed, io_reason, target, tcp_connect, Probe};
use crate::error::Result;
use crate::tracker::ProbeOutcome;

/// The health service's `Check` method.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The most bytes of a response body read: a `HealthCheckResponse` is 2 bytes framed in 5.
const MAX_RESPONSE: usize = 64 * 1024;

/// A `HealthCheckResponse`'s `status` (grpc.health.v1 `ServingStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    /// `UNKNOWN` (0), also what a response without the field means (proto3's default).
    Unknown,
    /// `SERVING` (1): the one that passes.
    Serving,
    /// `NOT_SERVING` (2).
    NotServing,
    /// `SERVICE_UNKNOWN` (3), which `Watch` uses for a service the server does not know.
    ServiceUnknown,
    /// A value this version of the protocol does not define.
    Other(u64),
}

impl ServingStatus {
    fn from_wire(v: u64) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::Serving,
            2 => Self::NotServing,
            3 => Self::ServiceUnknown,
            v => Self::Other(v),
        }
    }
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => f.write_str("UNKNOWN"),
            Self::Serving => f.write_str("SERVING"),
            Self::NotServing => f.write_str("NOT_SERVING"),
            Self::ServiceUnknown => f.write_str("SERVICE_UNKNOWN"),
            Self::Other(v) => write!(f, "status {v}"),
        }
    }
}

/// The framed `HealthCheckRequest { string service = 1; }` for `service` (`""`: the server
/// as a whole, encoded as no field at all, as proto3 encodes a default).
pub fn encode_check_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 11);
    if !service.is_empty() {
        message.push(0x0A); // field 1, wire type 2 (length-delimited)
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint at the start of `b`: its value and length; `None` when cut short or longer than
/// 10 bytes.
fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` of a framed `HealthCheckResponse { ServingStatus status = 1; }`, unknown
/// fields skipped (a newer server's) and the last `status` taken, as protobuf parsers do.
///
/// # Errors
/// What is wrong, for the check's reason: no message, a compressed one (the request asked
/// for none), a length that does not match, malformed protobuf.
pub fn parse_check_response(body: &[u8]) -> std::result::Result<ServingStatus, String> {
    let Some((&flag, rest)) = body.split_first() else {
        return Err("no message in the response".into());
    };
    if flag != 0 {
        return Err("a compressed message (none was asked for)".into());
    }
    let Some((len, mut msg)) = rest.split_first_chunk::<4>() else {
        return Err(format!("a message frame cut short ({} bytes)", body.len()));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if msg.len() != len {
        return Err(format!(
            "a message of {} bytes where its frame says {len}",
            msg.len()
        ));
    }
    let mut status = ServingStatus::Unknown;
    while !msg.is_empty() {
        let bad = || "malformed HealthCheckResponse".to_owned();
        let (key, n) = get_varint(msg).ok_or_else(bad)?;
        msg = &msg[n..];
        let skip = match key & 7 {
            0 => {
                let (v, n) = get_varint(msg).ok_or_else(bad)?;
                if key >> 3 == 1 {
                    status = ServingStatus::from_wire(v);
                }
                n
            }
            1 => 8,
            2 => {
                let (l, n) = get_varint(msg).ok_or_else(bad)?;
                usize::try_from(l)
                    .ok()
                    .and_then(|l| l.checked_add(n))
                    .ok_or_else(bad)?
            }
            5 => 4,
            _ => return Err(bad()),
        };
        msg = msg.get(skip..).ok_or_else(bad)?;
    }
    Ok(status)
}

/// A `grpc-message` as text: gRPC percent-encodes it (`%XX` for bytes outside printable
/// ASCII and `%` itself, PROTOCOL-HTTP2.md); a `%` not followed by two hex digits stays.
fn percent_decode(m: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(m.len());
    let mut i = 0;
    while i < m.len() {
        match (
            m[i],
            m.get(i + 1).copied().and_then(hex),
            m.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The name of a gRPC status code (grpc's `doc/statuscodes.md`).
fn code_name(code: &str) -> &str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    code.parse::<usize>()
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or(code)
}

/// A gRPC health check: `grpc.health.v1.Health/Check` for one service. Build it with
/// [`GrpcProbe::new`] and the setters.
#[derive(Debug, Clone)]
pub struct GrpcProbe {
    service: String,
    authority: Option<String>,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
    tls: Option<Tls>,
}

impl GrpcProbe {
    /// A check of `service` (`""`: the server as a whole, as grpc's health service
    /// registers it), over h2c to the backend's address, `:authority` the address
    /// connected to.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            authority: None,
            connect_port: None,
            connect_ip: None,
            bindto: None,
            tls: None,
        }
    }

    /// The `:authority` sent (Envoy's `authority`), instead of the address connected to;
    /// with TLS, also the name sent as SNI and verified unless [`TlsOptions::sni`] says
    /// otherwise (set it before [`GrpcProbe::tls`]). One that is not an authority
    /// (`host[:port]`) fails every check, saying so.
    #[must_use]
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    target_options! {
        connect_port,
        connect_ip,
        bindto,
    }

    /// Speaks TLS (ALPN `h2`) with these settings, as [`HttpProbe`](super::http::HttpProbe)
    /// does for `SSL_GET`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) (`tls`) as
    /// [`HttpProbeBuilder::build`](super::http::HttpProbeBuilder::build) gives it.
    pub fn tls(mut self, tls: TlsOptions) -> Result<Self> {
        self.tls = Some(Tls::build(tls, self.authority.as_deref())?.alpn_h2());
        Ok(self)
    }

    async fn run(&self, to: SocketAddr) -> std::result::Result<String, String> {
        let stream = tcp_connect(to, self.bindto, None)
            .await
            .map_err(|e| io_reason(&format!("connect to {to}"), &e))?;
        match &self.tls {
            None => self.exchange(stream, to, "http").await,
            Some(tls) => {
                let stream = tls.connect_h2(to, stream).await?;
                self.exchange(stream, to, "https").await
            }
        }
    }

    async fn exchange<S>(
        &self,
        io: S,
        to: SocketAddr,
        scheme: &str,
    ) -> std::result::Result<String, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let authority = self.authority.clone().unwrap_or_else(|| to.to_string());
        let uri = ::http::Uri::builder()
            .scheme(scheme)
            .authority(authority.as_str())
            .path_and_query(CHECK_PATH)
            .build()
            .map_err(|e| format!("authority {authority:?}: {e}"))?;
        let req = ::http::Request::post(uri)
            .header(::http::header::CONTENT_TYPE, "application/grpc")
            .header(::http::header::TE, "trailers")
            .header(::http::header::USER_AGENT, "lb-health")
            .body(Full::new(Bytes::from(encode_check_request(&self.service))))
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("gRPC call: {e}"))?;
            let (head, body) = resp.into_parts();
            if head.status != ::http::StatusCode::OK {
                return Err(format!("HTTP status {} (not gRPC)", head.status.as_u16()));
            }
            // gRPC answers `application/grpc` (or `application/grpc+proto` and the like).
            let grpc = head
                .headers
                .get(::http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
            if !grpc {
                return Err(format!(
                    "content-type {:?} (not gRPC)",
                    head.headers
                        .get(::http::header::CONTENT_TYPE)
                        .map_or(std::borrow::Cow::Borrowed("none"), |t| {
                            String::from_utf8_lossy(t.as_bytes())
                        })
                ));
            }
            // A Trailers-Only response carries the status in its head.
            let mut status = head.headers.get("grpc-status").cloned();
            let mut message = head.headers.get("grpc-message").cloned();
            let collected = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?;
            if let Some(t) = collected.trailers() {
                status = t.get("grpc-status").cloned().or(status);
                message = t.get("grpc-message").cloned().or(message);
            }
            let Some(status) = status else {
                return Err("no grpc-status in the response".into());
            };
            let code = String::from_utf8_lossy(status.as_bytes()).into_owned();
            if code != "0" {
                let message = message
                    .map(|m| format!(": {}", percent_decode(m.as_bytes())))
                    .unwrap_or_default();
                return Err(format!("grpc-status {code} {}{message}", code_name(&code)));
            }
            match parse_check_response(&collected.to_bytes())? {
                ServingStatus::Serving => Ok(format!("{} SERVING", self.service_name())),
                other => Err(format!("{} {other}", self.service_name())),
            }
        };
        super::http::drive(conn, exchange, "HTTP/2 connection").await
    }

    fn service_name(&self) -> String {
        if self.service.is_empty() {
            "server".into()
        } else {
            format!("service {:?}", self.service)
        }
    }
}

#[async_trait]
impl Probe for GrpcProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its connection.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, self.run(to)).await {
            Ok(Ok(reason)) => ProbeOutcome::up(reason, elapsed(start)),
            Ok(Err(reason)) => ProbeOutcome::down(reason, elapsed(start)),
            Err(_) => ProbeOutcome::down(
                format!("no gRPC health answer from {to} within {timeout:?}"),
                elapsed(start),
            ),
        }
    }

    fn kind(&self) -> &'static str {
        "grpc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_are_framed_protobuf() {
        assert_eq!(encode_check_request(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            encode_check_request("echo.Echo"),
            [&[0u8, 0, 0, 0, 11, 0x0A, 9][..], b"echo.Echo"].concat()
        );
    }

    #[test]
    fn responses_give_their_status() {
        assert_eq!(
            parse_check_response(&[0, 0, 0, 0, 2, 0x08, 1]),
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            parse_check_response(&[0, 0, 0, 0, 2, 0x08, 2]),
            Ok(ServingStatus::NotServing)
        );
        // No field: proto3's default, UNKNOWN.
        assert_eq!(
            parse_check_response(&[0, 0, 0, 0, 0]),
            Ok(ServingStatus::Unknown)
        );
        // An unknown string field before the status is skipped.
        assert_eq!(
            parse_check_response(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 1]),
            Ok(ServingStatus::Serving)
        );
        assert!(parse_check_response(&[]).is_err());
        assert!(parse_check_response(&[1, 0, 0, 0, 2, 0x08, 1]).is_err());
        assert!(parse_check_response(&[0, 0, 0, 0, 3, 0x08, 1]).is_err());
        assert!(parse_check_response(&[0, 0, 0, 0, 2, 0x08, 0x80]).is_err());
        assert!(parse_check_response(&[0, 0, 0, 0, 2, 0x12, 5]).is_err());
        assert!(parse_check_response(&[0, 0, 0, 0, 1, 0x0B]).is_err());
    }

    #[test]
    fn messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"unknown service"), "unknown service");
        assert_eq!(percent_decode(b"caf%C3%A9 100%25"), "caf\u{e9} 100%");
        // A `%` without two hex digits after it stays as it is.
        assert_eq!(percent_decode(b"50% off %4"), "50% off %4");
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(code_name("12"), "UNIMPLEMENTED");
        assert_eq!(code_name("5"), "NOT_FOUND");
        assert_eq!(code_name("99"), "99");
    }

    proptest! {
        /// Whatever a server sends, parsing gives a status or a reason, never a panic.
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_check_response(&body);
        }

        /// A response with `status` (any value) among unknown fields gives that status.
        #[test]
        fn the_status_field_is_found_among_others(
            status in 0u64..1000,
            before in proptest::collection::vec(any::<u8>(), 0..20),
            after in any::<u32>(),
        ) {
            let mut msg = vec![0x1A]; // field 3, length-delimited
            put_varint(&mut msg, before.len() as u64);
            msg.extend_from_slice(&before);
            msg.push(0x08);
            put_varint(&mut msg, status);
            msg.push(0x25); // field 4, fixed32
            msg.extend_from_slice(&after.to_le_bytes());
            let mut framed = vec![0];
            framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            framed.extend_from_slice(&msg);
            prop_assert_eq!(parse_check_response(&framed), Ok(ServingStatus::from_wire(status)));
        }
    }
}
