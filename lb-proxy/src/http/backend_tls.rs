//! TLS towards the backends (HAProxy `server … ssl`, nginx `proxy_pass https://…`): the
//! proxy re-encrypts every request it forwards to a pool whose backends speak HTTPS, as
//! deployments that must not carry plain HTTP inside the network require.
//!
//! HAProxy's server-side settings, on rustls with the ring provider (TLS 1.3 and 1.2, ALPN
//! `http/1.1`, or `h2` alone for a pool speaking HTTP/2, sessions resumed per backend):
//!
//! | HAProxy | here |
//! |---|---|
//! | `ssl verify required ca-file F` | [`Verify::Required`] with the roots of `F` ([`BackendTls::roots_from_pem`]) |
//! | `ssl verify none` | [`Verify::None`] |
//! | `sni str(N)` (and the name verified) | `server_name` `Some(N)` |
//! | no `sni`, no `verifyhost` | `server_name` `None`: no SNI; the chain is verified, not the name |
//! | `crt F` (a client certificate: mutual TLS) | [`BackendTls::with_client_certificate`] |
//! | `alpn h2` with `proto h2` | the pool's [`HttpPool::http2`](super::HttpPool::http2) (one `BackendTls` serves both kinds of pools) |
//!
//! Without a client certificate, a backend that requires one fails the request (with TLS
//! 1.3 only after the handshake, on the request: a 502 that is not retried).
//!
//! # Examples
//!
//! ```
//! use lb_proxy::http::{BackendTls, Verify};
//!
//! let ca = rcgen::generate_simple_self_signed(vec!["api.internal".into()]).unwrap();
//! let roots = BackendTls::roots_from_pem(ca.cert.pem().as_bytes()).unwrap();
//! let tls = BackendTls::new(Verify::Required(roots), Some("api.internal")).unwrap();
//! assert!(tls.server_name().is_some());
//! // A name that is neither a DNS name nor an IP address is refused.
//! assert!(BackendTls::new(Verify::None, Some("not a name")).is_err());
//! // A file with no certificate in it is an error, not an empty trust store.
//! assert!(BackendTls::roots_from_pem(b"nothing here").is_err());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{Error, Result};

/// How a backend's certificate is checked (HAProxy's `verify`).
#[derive(Debug, Clone)]
pub enum Verify {
    /// `verify required`: the chain must lead to one of these roots (HAProxy's `ca-file`)
    /// and be valid now; the name is checked when one is given
    /// ([`BackendTls::new`]'s `server_name`).
    Required(RootCertStore),
    /// `verify none`: any certificate is taken (self-signed backends), whatever its key;
    /// the traffic is encrypted but not authenticated.
    None,
}

/// TLS to the backends of one pool ([`HttpPool::with_tls`](super::HttpPool::with_tls)):
/// a rustls client configuration shared by every connection, and the name sent as SNI.
/// Cheap to clone.
#[derive(Clone)]
pub struct BackendTls(Arc<Inner>);

struct Inner {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// With [`BackendTls::new`]: one connector per backend address and protocol, each with
    /// a session cache of its own (rustls keys resumption by server name, which all
    /// backends share when `server_name` is set: a ticket from one would be offered to the
    /// next and wasted). `None` with a caller's configuration, used as it is.
    per_backend: Option<Mutex<HashMap<(SocketAddr, bool), TlsConnector>>>,
    /// `connector`'s configuration offering ALPN `h2` alone, made on first use by a pool
    /// that speaks HTTP/2 to its backends.
    http2: std::sync::OnceLock<TlsConnector>,
}

/// Sessions kept for resumption per backend.
const SESSIONS_PER_BACKEND: usize = 32;

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.0.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BackendTls {
    /// The same one (a clone of it).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

fn invalid(reason: impl fmt::Display) -> Error {
    Error::InvalidConfig {
        setting: "backend tls",
        reason: reason.to_string(),
    }
}

impl BackendTls {
    /// TLS with HAProxy's server-side defaults: TLS 1.3 and 1.2, ALPN `http/1.1`.
    ///
    /// `server_name`: sent as SNI (HAProxy `sni`; a DNS name: TLS sends no IP address as
    /// SNI) and, with [`Verify::Required`], the name the certificate must be valid for.
    /// Sessions are resumed per backend, as HAProxy caches them per server. `None`: no SNI is sent and only the chain is
    /// verified, as HAProxy does without `sni` or `verifyhost` (backends are addressed by
    /// IP, their certificates name hosts).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (`backend tls`) for a `server_name` that is neither a DNS
    /// name nor an IP address (it could be neither sent nor verified), or an empty root
    /// store.
    pub fn new(verify: Verify, server_name: Option<&str>) -> Result<Self> {
        Self::build(verify, server_name, None)
    }

    /// [`BackendTls::new`], presenting a client certificate to backends that ask for one
    /// (HAProxy's server `crt`; mutual TLS): `chain` a PEM certificate chain (the client
    /// certificate first), `key` its PEM private key (PKCS#8, PKCS#1 or SEC1; may be the
    /// chain's own text, as in a HAProxy `.pem`).
    ///
    /// # Errors
    /// As [`BackendTls::new`]; [`Error::InvalidConfig`] (`tls certificate` or `tls key`)
    /// for a chain or key that cannot be read or used, or that do not belong together.
    pub fn with_client_certificate(
        verify: Verify,
        server_name: Option<&str>,
        chain: &[u8],
        key: &[u8],
    ) -> Result<Self> {
        Self::build(verify, server_name, Some((chain, key)))
    }

    fn build(
        verify: Verify,
        server_name: Option<&str>,
        client: Option<(&[u8], &[u8])>,
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(invalid)?;
        let name = match server_name.map(|n| (n, ServerName::try_from(n.to_owned()))) {
            None => None,
            Some((_, Ok(n))) => Some(n),
            Some((n, Err(e))) => return Err(invalid(format!("server name {n:?}: {e}"))),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            Verify::Required(roots) => {
                if roots.is_empty() {
                    return Err(invalid("no trusted certificate to verify backends with"));
                }
                let roots = Arc::new(roots);
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::clone(&roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(invalid)?;
                if name.is_some() {
                    webpki
                } else {
                    Arc::new(ChainOnly { roots, webpki })
                }
            }
            Verify::None => Arc::new(AcceptAnyCert),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let certified = super::tls::certified(chain, key, &provider, |setting, reason| {
                    Error::InvalidConfig { setting, reason }
                })?;
                builder.with_client_cert_resolver(Arc::new(ClientCertificate(certified)))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(Arc::new(Inner {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: name,
            per_backend: Some(Mutex::default()),
            http2: std::sync::OnceLock::new(),
        })))
    }

    /// TLS with `config` as it is (roots, verifier, client certificate, ALPN are the
    /// caller's: offer `http/1.1` or nothing, the backends are spoken to in HTTP/1.1; a
    /// pool that speaks HTTP/2 to its backends ([`HttpPool::http2`](super::HttpPool::http2))
    /// offers `h2` alone instead), and `server_name` sent as SNI (`None`: none, the
    /// backend's IP address is the name rustls verifies). Its session cache (`resumption`)
    /// serves every backend.
    pub fn with_config(
        config: Arc<ClientConfig>,
        server_name: Option<ServerName<'static>>,
    ) -> Self {
        Self(Arc::new(Inner {
            connector: TlsConnector::from(config),
            server_name,
            per_backend: None,
            http2: std::sync::OnceLock::new(),
        }))
    }

    /// The certificates of a PEM file (HAProxy's `ca-file`) as trusted roots.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (`backend tls`) when the text holds no certificate, a
    /// malformed one, or one that cannot be a trust anchor.
    pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| invalid(format!("certificate {}: {e}", i + 1)))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("certificate {}: {e}", i + 1)))?;
        }
        if roots.is_empty() {
            return Err(invalid("no PEM certificate found"));
        }
        Ok(roots)
    }

    /// The name sent as SNI, if any.
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.0.server_name.as_ref()
    }

    /// Tells it apart from any other live one (its clones share it): connections made
    /// with one are not reused by a pool with another.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The TLS handshake over a connected `stream` to `backend`, offering ALPN `h2` alone
    /// when `http2` (HAProxy's server `alpn h2`), else `http/1.1` (with a caller's
    /// configuration: its own).
    ///
    /// # Errors
    /// The handshake's: a certificate that does not verify, no common version or cipher,
    /// the backend closing or not speaking TLS.
    pub(crate) async fn connect(
        &self,
        backend: SocketAddr,
        stream: TcpStream,
        http2: bool,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .0
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(backend.ip().into()));
        let connector = match &self.0.per_backend {
            None if http2 => self.0.http2.get_or_init(|| self.alpn_h2(None)).clone(),
            None => self.0.connector.clone(),
            Some(map) => map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((backend, http2))
                .or_insert_with(|| {
                    let sessions = Resumption::in_memory_sessions(SESSIONS_PER_BACKEND);
                    if http2 {
                        self.alpn_h2(Some(sessions))
                    } else {
                        let mut config = ClientConfig::clone(self.0.connector.config());
                        config.resumption = sessions;
                        TlsConnector::from(Arc::new(config))
                    }
                })
                .clone(),
        };
        connector.connect(name, stream).await
    }

    /// A connector from the configuration offering ALPN `h2` alone, with `resumption` (or
    /// the configuration's own).
    fn alpn_h2(&self, resumption: Option<Resumption>) -> TlsConnector {
        let mut config = ClientConfig::clone(self.0.connector.config());
        config.alpn_protocols = vec![b"h2".to_vec()];
        if let Some(r) = resumption {
            config.resumption = r;
        }
        TlsConnector::from(Arc::new(config))
    }
}

/// The client certificate presented to every backend that asks for one.
#[derive(Debug)]
struct ClientCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify required` without a name (HAProxy without `sni` or `verifyhost`): the chain must
/// lead to a trusted root and be valid now; the names in it are not compared with
/// anything. Handshake signatures are checked as rustls's own verifier checks them.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `verify none`: any certificate and any handshake signature, as HAProxy's `verify none`
/// and lb-health's HTTPS checks take them: a backend with an RSA-1024 or P-521 key that
/// its checks find up must not fail every request here. Checking a signature made with a
/// key nobody vouches for proves nothing; the connection is encrypted, not authenticated.
#[derive(Debug)]
struct AcceptAnyCert;

/// Every signature scheme, offered when nothing is verified.
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
