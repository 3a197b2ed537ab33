//! keepalived `HTTP_GET` and `SSL_GET`: one GET request over a fresh connection, with the
//! hyper 1.x client and rustls (ring provider).
//!
//! The probe passes when the status is in the expected set (default 200-299, keepalived's
//! default) and, if asked, the body contains a string or its MD5 equals keepalived's
//! `digest` (as printed by keepalived's `genhash`). A response hyper cannot parse is a
//! failure with hyper's reason.
//!
//! # Examples
//!
//! ```
//! use lb_health::probe::http::{HttpProbe, TlsOptions};
//!
//! // keepalived: HTTP_GET { url { path /health  digest 9e107d9d372bb6826bd81d3542a419d6 } }
//! let probe = HttpProbe::builder("/health")
//!     .host("www.example.com")
//!     .status_code("200-299,302")?
//!     .digest("9e107d9d372bb6826bd81d3542a419d6")?
//!     .build()?;
//! // keepalived SSL_GET against a self-signed backend: verification off.
//! let tls = HttpProbe::builder("/").tls(TlsOptions::new().verify(false)).build()?;
//! assert_eq!(lb_health::Probe::kind(&tls), "https");
//! assert!(HttpProbe::builder("/").status_code("2xx").is_err());
//! # let _ = probe;
//! # Ok::<(), lb_health::Error>(())
//! ```

use std::fmt;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::{Digest, Md5};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;

use super::{elapsed, io_reason, target, tcp_connect, Probe, ProxyHeader};
use crate::error::{Error, Result};
use crate::status::StatusSet;
use crate::tracker::ProbeOutcome;

/// What the response body must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BodyCheck {
    /// Nothing: the body is not read.
    #[default]
    Ignore,
    /// The body must contain these bytes (HAProxy `http-check expect string`).
    Contains(Vec<u8>),
    /// The body's MD5 must equal this (keepalived `digest`).
    Md5([u8; 16]),
}

/// How a [`BodyRegex`] reads its pattern: the keepalived `regex_options` (PCRE2 options)
/// that have a counterpart in Rust's `regex` crate. All off by default, as in PCRE2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegexFlags {
    /// `caseless`: letters match either case.
    pub caseless: bool,
    /// `multiline`: `^` and `$` match at line starts and ends too.
    pub multiline: bool,
    /// `dotall`: `.` matches a newline too.
    pub dotall: bool,
    /// `extended`: whitespace in the pattern is ignored and `#` starts a comment.
    pub extended: bool,
    /// `ungreedy`: quantifiers are lazy unless followed by `?`.
    pub ungreedy: bool,
    /// `utf` (or `ucp`): the body is read as UTF-8 and classes like `\w` are Unicode's;
    /// otherwise `.` matches any byte and classes are ASCII, as PCRE2 without `utf`.
    pub utf: bool,
}

/// keepalived `regex` on a `url`'s body (check_http.c with PCRE2): the check passes when
/// the pattern matches the body with the match starting within
/// `regex_min_offset..=regex_max_offset` (octets), or, with `regex_no_match`, when it does
/// not.
///
/// The pattern is Rust `regex` syntax, which is PCRE's for what health checks use
/// (classes, alternation, anchors, repetition) but has no look-around and no
/// back-references: such a pattern is refused when built, not misread. The body searched
/// is its first [`max_body_bytes`](HttpProbeBuilder::max_body_bytes) (1 MiB by default);
/// keepalived searches the whole body as it streams.
///
/// # Examples
///
/// ```
/// use lb_health::probe::http::{BodyRegex, RegexFlags};
///
/// let r = BodyRegex::new("status: *ok", RegexFlags { caseless: true, ..RegexFlags::default() })?;
/// assert!(r.passes(b"Status:  OK".as_slice()).is_ok());
/// let r = BodyRegex::new("error", RegexFlags::default())?.no_match(true);
/// assert!(r.passes(b"all fine".as_slice()).is_ok());
/// assert!(BodyRegex::new("(?<=a)b", RegexFlags::default()).is_err());
/// # Ok::<(), lb_health::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BodyRegex {
    pattern: String,
    flags: RegexFlags,
    re: regex::bytes::Regex,
    no_match: bool,
    min_offset: usize,
    max_offset: Option<usize>,
}

impl PartialEq for BodyRegex {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.pattern,
            self.flags,
            self.no_match,
            self.min_offset,
            self.max_offset,
        ) == (
            &other.pattern,
            other.flags,
            other.no_match,
            other.min_offset,
            other.max_offset,
        )
    }
}

impl Eq for BodyRegex {}

impl BodyRegex {
    /// Compiles `pattern` with `flags`; the match may start anywhere, and must be found.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (setting `regex`) for a pattern that does not compile,
    /// with the regex crate's explanation (look-around and back-references among them).
    pub fn new(pattern: &str, flags: RegexFlags) -> Result<Self> {
        let re = regex::bytes::RegexBuilder::new(pattern)
            .case_insensitive(flags.caseless)
            .multi_line(flags.multiline)
            .dot_matches_new_line(flags.dotall)
            .ignore_whitespace(flags.extended)
            .swap_greed(flags.ungreedy)
            .unicode(flags.utf)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| Error::InvalidConfig {
                setting: "regex",
                reason: format!(
                    "{pattern:?} does not compile (Rust regex syntax: no look-around, no back-references): {e}"
                ),
            })?;
        Ok(Self {
            pattern: pattern.to_owned(),
            flags,
            re,
            no_match: false,
            min_offset: 0,
            max_offset: None,
        })
    }

    /// keepalived `regex_no_match`: pass when the pattern does not match.
    #[must_use]
    pub fn no_match(mut self, no_match: bool) -> Self {
        self.no_match = no_match;
        self
    }

    /// keepalived `regex_min_offset` and `regex_max_offset`: the match must start at or
    /// after `min` and at or before `max` (octets into the body; `None`: anywhere after
    /// `min`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `min` is above `max` (keepalived ignores both then).
    pub fn offsets(mut self, min: usize, max: Option<usize>) -> Result<Self> {
        if max.is_some_and(|m| min > m) {
            return Err(Error::InvalidConfig {
                setting: "regex_min_offset",
                reason: format!(
                    "{min} is above regex_max_offset {}: no match could start there",
                    max.unwrap_or_default()
                ),
            });
        }
        self.min_offset = min;
        self.max_offset = max;
        Ok(self)
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Judges a body: `Ok` with what matched (or that nothing did, with `no_match`),
    /// `Err` with why it fails.
    ///
    /// # Errors
    /// A message when the body fails the check.
    pub fn passes(&self, body: &[u8]) -> std::result::Result<String, String> {
        let found = if self.min_offset > body.len() {
            None
        } else {
            self.re
                .find_at(body, self.min_offset)
                .filter(|m| self.max_offset.is_none_or(|max| m.start() <= max))
        };
        let window = match self.max_offset {
            Some(max) => format!(" starting at {}..={max}", self.min_offset),
            None if self.min_offset > 0 => format!(" starting at {} or later", self.min_offset),
            None => String::new(),
        };
        match (found, self.no_match) {
            (Some(m), false) => Ok(format!("regex {:?} matched at {}", self.pattern, m.start())),
            (None, true) => Ok(format!("regex {:?} did not match{window}", self.pattern)),
            (Some(m), true) => Err(format!(
                "regex {:?} matched at {} (regex_no_match)",
                self.pattern,
                m.start()
            )),
            (None, false) => Err(format!(
                "regex {:?} did not match{window} in {} body bytes",
                self.pattern,
                body.len()
            )),
        }
    }
}

/// TLS settings of an HTTPS probe (keepalived `SSL_GET`).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    verify: bool,
    roots: Option<RootCertStore>,
    sni: Option<String>,
    send_sni: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsOptions {
    /// Defaults:
    ///
    /// - certificate verification on, against the Mozilla roots (`webpki-roots`);
    /// - SNI and the verified name: the probe's `host` (without port), else the backend IP.
    ///
    /// A `host` that is neither a DNS name nor an IP address rustls accepts (a wildcard
    /// `*.example.com`, an IPv6 literal with a zone `fe80::1%eth0`, a name with a space)
    /// is not an error: the backend IP is the server name instead, as when there is no
    /// `host` (rustls sends no SNI for an IP; with verification on, the certificate must be
    /// valid for that IP). keepalived's `SSL_GET` sends no SNI at all unless `enable_sni`.
    pub fn new() -> Self {
        Self {
            verify: true,
            roots: None,
            sni: None,
            send_sni: true,
        }
    }

    /// `false` accepts any certificate (self-signed backends). The handshake signature is
    /// still checked, so the peer holds the certificate's key.
    #[must_use]
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Trusts these roots instead of the Mozilla set (a private CA).
    #[must_use]
    pub fn roots(mut self, roots: RootCertStore) -> Self {
        self.roots = Some(roots);
        self
    }

    /// `false` sends no Server Name Indication at all (keepalived's `SSL_GET` without
    /// `enable_sni`); the certificate, when verified, is still checked against the server
    /// name. Default `true`.
    #[must_use]
    pub fn send_sni(mut self, send: bool) -> Self {
        self.send_sni = send;
        self
    }

    /// The server name to send (SNI) and verify, instead of the probe's `host`. Unlike a
    /// name taken from `host`, one given here that rustls cannot use is an error at
    /// [`HttpProbeBuilder::build`] while verification is on (the name to verify cannot be
    /// expressed); with verification off it is replaced by the backend IP.
    #[must_use]
    pub fn sni(mut self, name: impl Into<String>) -> Self {
        self.sni = Some(name.into());
        self
    }
}

/// Accepts any certificate and any handshake signature (verification off), as keepalived's
/// `SSL_GET` (OpenSSL's `SSL_VERIFY_NONE`): an X.509 v1 certificate, an RSA-1024 key or a
/// P-521 one are all fine. Checking the signature of a certificate nobody vouches for
/// proves nothing, and it refused those servers for good.
#[derive(Debug)]
struct AcceptAnyCert;

/// Every signature scheme, offered when nothing is verified (a server whose key needs one
/// the provider cannot verify must not be refused for it).
const ANY_SCHEME: [SignatureScheme; 13] = [
    SignatureScheme::RSA_PKCS1_SHA1,
    SignatureScheme::ECDSA_SHA1_Legacy,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::ED25519,
    SignatureScheme::ED448,
];

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ANY_SCHEME.to_vec()
    }
}

#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    sni: Option<ServerName<'static>>,
    verify: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

fn tls_error(reason: impl fmt::Display) -> Error {
    Error::InvalidConfig {
        setting: "tls",
        reason: reason.to_string(),
    }
}

impl Tls {
    /// The handshake over `stream` to `to`, with the configured server name (else `to`'s
    /// IP); the reason when it fails.
    pub(crate) async fn connect<S>(
        &self,
        to: SocketAddr,
        stream: S,
    ) -> std::result::Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(to.ip().into()));
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    }

    /// [`connect`](Self::connect) for HTTP/2: the handshake fails, saying so, unless the
    /// server chose ALPN `h2` (offered alone by a [`alpn_h2`](Self::alpn_h2) setting).
    pub(crate) async fn connect_h2<S>(
        &self,
        to: SocketAddr,
        stream: S,
    ) -> std::result::Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.connect(to, stream).await?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("TLS handshake: the server did not choose ALPN h2".into());
        }
        Ok(stream)
    }

    /// The same settings offering ALPN `h2` alone (gRPC, HTTP/2 checks).
    pub(crate) fn alpn_h2(mut self) -> Self {
        let mut config = rustls::ClientConfig::clone(self.connector.config());
        config.alpn_protocols = vec![b"h2".to_vec()];
        self.connector = TlsConnector::from(Arc::new(config));
        self
    }

    pub(crate) fn build(opts: TlsOptions, host: Option<&str>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let mut config = if opts.verify {
            let roots = opts.roots.unwrap_or_else(|| RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
                .with_no_client_auth()
        };
        config.enable_sni = opts.send_sni;
        // `None`: the backend IP, chosen per connection.
        let sni = match (opts.sni, host) {
            (Some(n), _) => match ServerName::try_from(n.clone()) {
                Ok(name) => Some(name),
                Err(_) if !opts.verify => None,
                Err(_) => return Err(tls_error(format!("invalid server name {n:?}"))),
            },
            (None, Some(h)) => ServerName::try_from(strip_port(h).to_owned()).ok(),
            (None, None) => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            sni,
            verify: opts.verify,
        })
    }
}

/// `host:port` → `host`; `[v6]:port` → `v6`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// An HTTP or HTTPS GET probe. Build it with [`HttpProbe::builder`].
#[derive(Debug, Clone)]
pub struct HttpProbe {
    path: String,
    host: Option<String>,
    expect: StatusSet,
    body: BodyCheck,
    regex: Option<BodyRegex>,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
    send_proxy: Option<ProxyHeader>,
    tls: Option<Tls>,
    max_body: usize,
    per_step: bool,
    http2: bool,
}

/// The step an exchange is in, for the reason its timeout gives.
const STEP_CONNECT: u8 = 0;
const STEP_TLS: u8 = 1;
const STEP_HEAD: u8 = 2;
const STEP_BODY: u8 = 3;

/// With [`HttpProbeBuilder::timeout_per_step`], the whole exchange is bounded by this many
/// timeouts (keepalived sets no bound: a backend trickling its answer would hold the check).
pub const PER_STEP_BOUND: u32 = 10;

/// One direction's stall timer of [`StepTimed`].
#[derive(Debug, Default)]
struct Stall {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl Stall {
    /// Notes a poll's readiness; `true` once a wait has lasted `timeout`.
    fn expired(&mut self, cx: &mut Context<'_>, timeout: Duration, pending: bool) -> bool {
        if !pending {
            self.waiting = false;
            return false;
        }
        if !self.waiting {
            self.waiting = true;
            // A timeout past what an instant holds (the tracker allows `Duration::MAX`)
            // never runs out.
            let Some(at) = tokio::time::Instant::now().checked_add(timeout) else {
                self.sleep = None;
                return false;
            };
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

/// A stream whose every wait — for data from the backend, for it to take what is written —
/// fails with [`io::ErrorKind::TimedOut`] after `timeout` without progress (keepalived
/// re-arms `connect_timeout` for each read and write of a check), noting it in `timed_out`.
/// Without a timeout it only passes through.
struct StepTimed<S> {
    inner: S,
    timeout: Option<Duration>,
    read: Stall,
    write: Stall,
    timed_out: Arc<AtomicBool>,
}

impl<S> StepTimed<S> {
    fn check<T>(
        stall: &mut Stall,
        timeout: Option<Duration>,
        timed_out: &AtomicBool,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(t) = timeout else {
            return r;
        };
        if stall.expired(cx, t, r.is_pending()) {
            timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing for {t:?}"),
            )));
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StepTimed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        Self::check(&mut this.read, this.timeout, &this.timed_out, cx, r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StepTimed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        Self::check(&mut this.write, this.timeout, &this.timed_out, cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        Self::check(&mut this.write, this.timeout, &this.timed_out, cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl HttpProbe {
    /// A builder for `GET path` with these defaults:
    ///
    /// - `Host`: the backend's `ip:port`;
    /// - expected status 200-299 (keepalived's default);
    /// - body ignored; at most 1 MiB read when a body check is set;
    /// - plain HTTP (add [`tls`](HttpProbeBuilder::tls) for `SSL_GET`);
    /// - the backend's address and port, the default source address.
    pub fn builder(path: impl Into<String>) -> HttpProbeBuilder {
        HttpProbeBuilder {
            path: path.into(),
            host: None,
            expect: Ok(StatusSet::success()),
            body: Ok(BodyCheck::Ignore),
            regex: None,
            connect_port: None,
            connect_ip: None,
            bindto: None,
            send_proxy: None,
            tls: None,
            max_body: 1 << 20,
            per_step: false,
            http2: false,
        }
    }

    async fn exchange<S>(
        &self,
        io: S,
        authority: &str,
        step: &AtomicU8,
    ) -> std::result::Result<String, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // keepalived reads the status line and Content-Length of a head of up to 4 KiB,
        // whatever the count of header lines: more than hyper's default 100 is fine.
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_headers(MAX_RESPONSE_HEADERS)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let req = ::http::Request::get(self.path.as_str())
            .header(
                ::http::header::HOST,
                self.host.as_deref().unwrap_or(authority),
            )
            .header(::http::header::USER_AGENT, "lb-health")
            .header(::http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("invalid HTTP response: {e}"))?;
            self.judge(resp, step).await
        };
        drive(conn, exchange, "invalid HTTP response").await
    }

    /// [`exchange`](Self::exchange) over HTTP/2 with prior knowledge (HAProxy's
    /// `check-proto h2`): the `Host` is the `:authority` (RFC 9113 §8.3.1), with `scheme`.
    async fn exchange_h2<S>(
        &self,
        io: S,
        authority: &str,
        scheme: &str,
        step: &AtomicU8,
    ) -> std::result::Result<String, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let authority = self.host.as_deref().unwrap_or(authority);
        let uri = ::http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(self.path.as_str())
            .build()
            .map_err(|e| format!("authority {authority:?}: {e}"))?;
        let req = ::http::Request::get(uri)
            .header(::http::header::USER_AGENT, "lb-health")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("invalid HTTP/2 response: {e}"))?;
            self.judge(resp, step).await
        };
        drive(conn, exchange, "HTTP/2 connection").await
    }

    /// The check of a response: its status, then its body as configured.
    async fn judge(
        &self,
        resp: ::http::Response<hyper::body::Incoming>,
        step: &AtomicU8,
    ) -> std::result::Result<String, String> {
        step.store(STEP_BODY, Ordering::Relaxed);
        let status = resp.status().as_u16();
        if !self.expect.contains(status) {
            return Err(format!("status {status} not in {}", self.expect));
        }
        match (&self.body, &self.regex) {
            // keepalived reads the response to its end (a read timeout fails it):
            // a body that stalls is no pass.
            (BodyCheck::Ignore, None) => drain_body(resp.into_body(), self.max_body)
                .await
                .map(|cut| format!("status {status}{cut}")),
            (check, regex) => check_body(check, regex.as_ref(), resp.into_body(), self.max_body)
                .await
                .map(|ok| format!("status {status}, {ok}")),
        }
    }

    /// Connects and runs the exchange, noting its step in `step`; with per-step timeouts,
    /// each step is bounded by `timeout` and one that runs out sets `timed_out`.
    async fn run(
        &self,
        to: SocketAddr,
        timeout: Duration,
        step: &AtomicU8,
        timed_out: &Arc<AtomicBool>,
    ) -> std::result::Result<String, String> {
        let connect = tcp_connect(to, self.bindto, self.send_proxy);
        let stream = if self.per_step {
            match tokio::time::timeout(timeout, connect).await {
                Ok(s) => s,
                Err(_) => {
                    timed_out.store(true, Ordering::Relaxed);
                    return Err(String::new());
                }
            }
        } else {
            connect.await
        }
        .map_err(|e| io_reason(&format!("connect to {to}"), &e))?;
        let stream = StepTimed {
            inner: stream,
            timeout: self.per_step.then_some(timeout),
            read: Stall::default(),
            write: Stall::default(),
            timed_out: Arc::clone(timed_out),
        };
        let authority = to.to_string();
        match (&self.tls, self.http2) {
            (None, false) => {
                step.store(STEP_HEAD, Ordering::Relaxed);
                self.exchange(stream, &authority, step).await
            }
            (None, true) => {
                step.store(STEP_HEAD, Ordering::Relaxed);
                self.exchange_h2(stream, &authority, "http", step).await
            }
            (Some(tls), false) => {
                step.store(STEP_TLS, Ordering::Relaxed);
                let stream = tls.connect(to, stream).await?;
                step.store(STEP_HEAD, Ordering::Relaxed);
                self.exchange(stream, &authority, step).await
            }
            (Some(tls), true) => {
                step.store(STEP_TLS, Ordering::Relaxed);
                let stream = tls.connect_h2(to, stream).await?;
                step.store(STEP_HEAD, Ordering::Relaxed);
                self.exchange_h2(stream, &authority, "https", step).await
            }
        }
    }

    /// Why an exchange at `step` ran out of time: `timeout` for that step alone (per-step
    /// timeouts) or for the whole exchange.
    fn timed_out_reason(&self, to: SocketAddr, step: u8, timeout: Duration) -> String {
        let per = if self.per_step {
            ""
        } else {
            " (whole exchange)"
        };
        match step {
            STEP_CONNECT => format!("connect to {to}: no answer within {timeout:?}{per}"),
            STEP_TLS => format!("TLS handshake with {to} not done within {timeout:?}{per}"),
            STEP_HEAD => format!("no HTTP response from {to} within {timeout:?}{per}"),
            _ if self.per_step => {
                format!("HTTP response body from {to} stalled for {timeout:?}")
            }
            _ => format!("HTTP response body from {to} not complete within {timeout:?}{per}"),
        }
    }
}

/// Drives a hyper client connection and the exchange on it together, the exchange's result
/// the answer (a connection error `what: …`); once the exchange is done the connection is
/// dropped (closed), even if the backend would keep it alive.
pub(crate) async fn drive(
    conn: impl std::future::Future<Output = std::result::Result<(), hyper::Error>>,
    exchange: impl std::future::Future<Output = std::result::Result<String, String>>,
    what: &str,
) -> std::result::Result<String, String> {
    let mut conn = std::pin::pin!(conn);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        biased; // a finished exchange wins over a connection error that follows it
        r = &mut exchange => r,
        c = &mut conn => match c {
            Err(e) => Err(format!("{what}: {e}")),
            Ok(()) => exchange.await,
        },
    }
}

/// The most header lines of a response (hyper's default is 100).
const MAX_RESPONSE_HEADERS: usize = 1000;

/// Reads a body the check does not look at, to its end or `max_body` bytes: what keepalived
/// reads before judging (a body that stalls fails by the probe's timeout). A body that
/// ends early (shorter than its `Content-Length`, a connection closed without TLS
/// `close_notify`) still passes, as keepalived only logs it; the reason says so.
async fn drain_body<B>(mut body: B, max_body: usize) -> std::result::Result<String, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                read += f.data_ref().map_or(0, Bytes::len);
                if read >= max_body {
                    break;
                }
            }
            Err(e) => return Ok(cut_short(&e)),
        }
    }
    Ok(String::new())
}

/// What a reason says of a body that ended in an error after some bytes: keepalived judges
/// what it received (`http_handle_response` only logs a length mismatch).
fn cut_short(e: &dyn fmt::Display) -> String {
    format!(" (body cut short: {e})")
}

/// Reads `body` as far as `check` needs, frame by frame.
///
/// `Contains` searches the first `max_body` bytes and stops at a match, as HAProxy's
/// `http-check expect string` looks at the start of the response it has buffered: a match
/// there passes whatever follows. `Md5` hashes the whole body as it streams, as keepalived
/// does (memory stays constant; the probe's timeout bounds the time).
async fn check_body<B>(
    check: &BodyCheck,
    regex: Option<&BodyRegex>,
    mut body: B,
    max_body: usize,
) -> std::result::Result<String, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let Some(regex) = regex else {
        return check_body_alone(check, body, max_body).await;
    };
    // One pass: the first `max_body` bytes kept for the regex, the whole body hashed for
    // a digest (a `Contains` searches the kept bytes too).
    let mut kept: Vec<u8> = Vec::new();
    let mut md5 = Md5::new();
    let mut cut = String::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                cut = cut_short(&e);
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if matches!(check, BodyCheck::Md5(_)) {
            md5.update(&data);
        } else if kept.len() == max_body {
            break;
        }
        let take = data.len().min(max_body - kept.len());
        kept.extend_from_slice(&data[..take]);
    }
    let mut said = Vec::new();
    match check {
        BodyCheck::Ignore => {}
        BodyCheck::Contains(needle) => {
            if !needle.is_empty() && !kept.windows(needle.len()).any(|w| w == needle.as_slice()) {
                return Err(format!(
                    "no {:?} in the first {} bytes of the body",
                    String::from_utf8_lossy(needle),
                    kept.len()
                ));
            }
            said.push("body matches".to_owned());
        }
        BodyCheck::Md5(want) => {
            let got: [u8; 16] = md5.finalize().into();
            if got != *want {
                return Err(format!("digest {} != expected {}", hex(&got), hex(want)));
            }
            said.push(format!("digest {}", hex(&got)));
        }
    }
    said.push(regex.passes(&kept)?);
    Ok(said.join(", ") + &cut)
}

/// [`check_body`] without a regex: `Contains` stops reading at a match.
async fn check_body_alone<B>(
    check: &BodyCheck,
    mut body: B,
    max_body: usize,
) -> std::result::Result<String, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    match check {
        BodyCheck::Ignore => Ok(String::new()),
        BodyCheck::Contains(needle) if needle.is_empty() => Ok("body matches".to_owned()),
        BodyCheck::Contains(needle) => {
            // The bytes searched: what arrived, less what can no longer start a match.
            let mut window: Vec<u8> = Vec::new();
            let mut read = 0usize;
            let mut cut = String::new();
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        cut = cut_short(&e);
                        break;
                    }
                };
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                let take = data.len().min(max_body - read);
                read += take;
                window.extend_from_slice(&data[..take]);
                if window.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    return Ok("body matches".to_owned());
                }
                if read == max_body {
                    return Err(format!(
                        "no {:?} in the first {max_body} bytes of the body",
                        String::from_utf8_lossy(needle)
                    ));
                }
                let keep = needle.len() - 1;
                if window.len() > keep {
                    window.drain(..window.len() - keep);
                }
            }
            Err(format!(
                "body ({read} bytes) lacks {:?}{cut}",
                String::from_utf8_lossy(needle)
            ))
        }
        BodyCheck::Md5(want) => {
            let mut md5 = Md5::new();
            let mut cut = String::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            md5.update(&data);
                        }
                    }
                    Err(e) => {
                        cut = cut_short(&e);
                        break;
                    }
                }
            }
            let got: [u8; 16] = md5.finalize().into();
            if got == *want {
                Ok(format!("digest {}{cut}", hex(&got)))
            } else {
                Err(format!(
                    "digest {} != expected {}{cut}",
                    hex(&got),
                    hex(want)
                ))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse_digest(s: &str) -> Result<[u8; 16]> {
    let bad = || Error::InvalidDigest(s.to_owned());
    let t = s.trim();
    if t.len() != 32 || !t.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[async_trait]
impl Probe for HttpProbe {
    /// # Cancel safety
    /// Cancel safe: a dropped probe closes its connection.
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let to = target(addr, self.connect_ip, self.connect_port);
        let start = tokio::time::Instant::now();
        let step = AtomicU8::new(STEP_CONNECT);
        let timed_out = Arc::new(AtomicBool::new(false));
        let bound = self.max_duration(timeout);
        let run = self.run(to, timeout, &step, &timed_out);
        match tokio::time::timeout(bound, run).await {
            // A step that ran out of time fails the check, also a body that stalled (a
            // body cut short otherwise passes on what arrived); hyper's error would only
            // say "timed out".
            Ok(_) if timed_out.load(Ordering::Relaxed) => ProbeOutcome::down(
                self.timed_out_reason(to, step.load(Ordering::Relaxed), timeout),
                elapsed(start),
            ),
            Ok(Ok(reason)) => ProbeOutcome::up(reason, elapsed(start)),
            Ok(Err(reason)) => ProbeOutcome::down(reason, elapsed(start)),
            Err(_) if self.per_step => ProbeOutcome::down(
                format!(
                    "HTTP exchange with {to} not done within {bound:?} ({PER_STEP_BOUND} timeouts)"
                ),
                elapsed(start),
            ),
            Err(_) => ProbeOutcome::down(
                self.timed_out_reason(to, step.load(Ordering::Relaxed), timeout),
                elapsed(start),
            ),
        }
    }

    /// [`PER_STEP_BOUND`] timeouts with per-step timeouts, else the timeout.
    fn max_duration(&self, timeout: Duration) -> Duration {
        if self.per_step {
            timeout.saturating_mul(PER_STEP_BOUND)
        } else {
            timeout
        }
    }

    fn kind(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Builds an [`HttpProbe`]; invalid settings surface in [`build`](Self::build) (or at once,
/// from the fallible setters).
#[derive(Debug)]
#[must_use]
pub struct HttpProbeBuilder {
    path: String,
    host: Option<String>,
    expect: Result<StatusSet>,
    body: Result<BodyCheck>,
    regex: Option<BodyRegex>,
    connect_port: Option<u16>,
    connect_ip: Option<IpAddr>,
    bindto: Option<IpAddr>,
    send_proxy: Option<ProxyHeader>,
    tls: Option<TlsOptions>,
    max_body: usize,
    per_step: bool,
    http2: bool,
}

impl HttpProbeBuilder {
    /// keepalived's timing: the probe's timeout bounds each step — the connect, the TLS
    /// handshake's and the exchange's every wait for the backend to send or take data —
    /// not the whole exchange (the default), as keepalived re-arms `connect_timeout` for
    /// each read of `HTTP_GET`/`SSL_GET`. A backend that answers slowly but steadily
    /// passes; the whole exchange is still bounded, by [`PER_STEP_BOUND`] timeouts.
    pub fn timeout_per_step(mut self) -> Self {
        self.per_step = true;
        self
    }

    /// The `Host` header (keepalived `virtualhost`); also the default TLS server name.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Expected statuses, as keepalived `status_code` / HAProxy `http-check expect status`:
    /// `"200"`, `"200-299,302"`.
    ///
    /// # Errors
    /// [`Error::InvalidStatusRange`] when the list does not parse.
    pub fn status_code(mut self, list: &str) -> Result<Self> {
        self.expect = Ok(list.parse()?);
        Ok(self)
    }

    /// Expected statuses, already parsed.
    pub fn expect(mut self, statuses: StatusSet) -> Self {
        self.expect = Ok(statuses);
        self
    }

    /// The body must contain `needle`.
    pub fn body_contains(mut self, needle: impl Into<Vec<u8>>) -> Self {
        self.body = Ok(BodyCheck::Contains(needle.into()));
        self
    }

    /// keepalived `digest`: the body's MD5, as 32 hex digits.
    ///
    /// # Errors
    /// [`Error::InvalidDigest`] when it is not 32 hex digits.
    pub fn digest(mut self, md5_hex: &str) -> Result<Self> {
        self.body = Ok(BodyCheck::Md5(parse_digest(md5_hex)?));
        Ok(self)
    }

    /// keepalived `regex` (with `regex_no_match`, `regex_options` and the offsets, in
    /// [`BodyRegex`]): the body must match it too. It combines with `digest` or
    /// `body_contains`, as keepalived checks a url's digest and regex both.
    pub fn regex(mut self, regex: BodyRegex) -> Self {
        self.regex = Some(regex);
        self
    }

    target_options! {
        connect_port,
        connect_ip,
        bindto,
        /// It goes before the TLS handshake and the request.
        send_proxy,
    }

    /// Use TLS (keepalived `SSL_GET`).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// HAProxy `check-proto h2`: speak HTTP/2 instead of HTTP/1.1, for a backend that takes
    /// only HTTP/2 (a gRPC server, nginx `listen … http2` without TLS). Over plain TCP with
    /// prior knowledge (h2c, RFC 9113 §3.3); with [`tls`](Self::tls), ALPN offers `h2`
    /// alone and a backend that does not choose it fails the check at the TLS step. The
    /// request is the same GET with the [`host`](Self::host) (default the backend's
    /// `ip:port`) as its `:authority`; the status and body checks are the same.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// The most body bytes a `Contains` check searches (default 1 MiB): a match within them
    /// passes, whatever follows; none fails. A `digest` hashes the whole body. 0 is taken
    /// as 1.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max.max(1);
        self
    }

    /// Builds the probe.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a path not starting with `/`, a TLS setting rustls
    /// refuses (a server name given with [`TlsOptions::sni`] that rustls cannot use, while
    /// verification is on), or, with [`http2`](Self::http2), a [`host`](Self::host) that
    /// is no URI authority (`host` or `host:port`); and the errors deferred from the
    /// setters.
    pub fn build(self) -> Result<HttpProbe> {
        if !self.path.starts_with('/') {
            return Err(Error::InvalidConfig {
                setting: "path",
                reason: format!("{:?} does not start with '/'", self.path),
            });
        }
        if ::http::uri::PathAndQuery::try_from(self.path.as_str()).is_err() {
            return Err(Error::InvalidConfig {
                setting: "path",
                reason: format!("{:?} is not a valid request path", self.path),
            });
        }
        if let (true, Some(host)) = (self.http2, &self.host) {
            if ::http::uri::Authority::try_from(host.as_str()).is_err() {
                return Err(Error::InvalidConfig {
                    setting: "host",
                    reason: format!("{host:?} is no HTTP/2 :authority (host or host:port)"),
                });
            }
        }
        let tls = match self.tls {
            Some(opts) if self.http2 => Some(Tls::build(opts, self.host.as_deref())?.alpn_h2()),
            Some(opts) => Some(Tls::build(opts, self.host.as_deref())?),
            None => None,
        };
        Ok(HttpProbe {
            path: self.path,
            host: self.host,
            expect: self.expect?,
            body: self.body?,
            regex: self.regex,
            connect_port: self.connect_port,
            connect_ip: self.connect_ip,
            bindto: self.bindto,
            send_proxy: self.send_proxy,
            tls,
            max_body: self.max_body,
            per_step: self.per_step,
            http2: self.http2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse() {
        assert_eq!(
            hex(&parse_digest("9E107D9D372BB6826BD81D3542A419D6").unwrap()),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        for bad in [
            "",
            "9e10",
            "zz107d9d372bb6826bd81d3542a419d6",
            "é9107d9d372bb6826bd81d3542a419d",
        ] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8443"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("::1"), "::1");
    }

    /// A body of `chunks`, one frame each.
    fn frames(
        chunks: &[&[u8]],
    ) -> impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn body_checks() {
        let digest = parse_digest("9e107d9d372bb6826bd81d3542a419d6").unwrap();
        let fox: &[&[u8]] = &[b"The quick bro", b"wn fox jumps over the lazy dog"];
        let check = |c: BodyCheck, chunks: &'static [&'static [u8]], max: usize| async move {
            check_body(&c, None, frames(chunks), max).await
        };
        assert!(
            check(BodyCheck::Md5(digest), fox, 4).await.is_ok(),
            "hashed past max_body"
        );
        assert!(check(BodyCheck::Md5(digest), &[b"other"], 1 << 20)
            .await
            .is_err());
        // Across a frame boundary.
        let brown = BodyCheck::Contains(b"brown".to_vec());
        assert!(check(brown.clone(), fox, 1 << 20).await.is_ok());
        assert!(check(BodyCheck::Contains(b"cat".to_vec()), fox, 1 << 20)
            .await
            .is_err());
        // Within the first 17 bytes, not within the first 14.
        assert!(check(brown.clone(), fox, 17).await.is_ok());
        let e = check(brown, fox, 14).await.unwrap_err();
        assert!(e.contains("first 14 bytes"), "{e}");
        assert!(check(BodyCheck::Contains(Vec::new()), &[], 1).await.is_ok());
    }
}
