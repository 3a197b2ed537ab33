//! TLS termination for HTTPS listeners (HAProxy `bind … ssl crt`, nginx `listen … ssl`, the
//! HTTPS listeners of cloud load balancers): the client's TLS session ends at the proxy,
//! requests go on to the backends in plain HTTP, and the backends learn the scheme from
//! `X-Forwarded-Proto: https` and `Forwarded: …;proto=https`.
//!
//! On rustls with the ring provider: TLS 1.3 and 1.2 (rustls's safe defaults: ECDHE key
//! exchange, AEAD ciphers only), ALPN `http/1.1`, no client certificates.
//!
//! # Examples
//!
//! ```
//! use lb_proxy::http::TlsTermination;
//!
//! let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
//! let tls = TlsTermination::from_pem(
//!     cert.cert.pem().as_bytes(),
//!     cert.key_pair.serialize_pem().as_bytes(),
//! )
//! .unwrap();
//! assert_eq!(tls.server_config().alpn_protocols, [b"http/1.1".to_vec()]);
//! // A key that does not belong to the certificate is refused.
//! let other = rcgen::KeyPair::generate().unwrap();
//! let e = TlsTermination::from_pem(cert.cert.pem().as_bytes(), other.serialize_pem().as_bytes());
//! assert!(e.is_err());
//! ```

use std::fmt;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{Error, Result};

/// The TLS side of an HTTPS listener ([`HttpProxyConfig::tls`](super::HttpProxyConfig::tls)):
/// a rustls server configuration, shared by every connection. Two are equal when they are
/// the same configuration (the same `Arc`).
#[derive(Clone)]
pub struct TlsTermination {
    config: Arc<ServerConfig>,
}

impl TlsTermination {
    /// Terminates TLS with `config` as it is (certificate resolver, versions, ALPN, client
    /// authentication are the caller's). Its ALPN list should offer `http/1.1` only, or
    /// nothing: this listener speaks HTTP/1.1.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self { config }
    }

    /// Terminates TLS with one certificate chain and its private key, both PEM (what
    /// HAProxy's `crt` and nginx's `ssl_certificate`/`ssl_certificate_key` read): the
    /// chain's first certificate is the server's, the ones after it intermediates; the key
    /// is PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Both may be one file's text (the key found
    /// among the certificates, as in a HAProxy `.pem`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (`tls certificate` or `tls key`) when the chain holds no
    /// certificate or a malformed one, no private key is found, or the key does not
    /// belong to the certificate or is of a kind the ring provider cannot sign with.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(chain)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidConfig {
                setting: "tls certificate",
                reason: format!("unreadable PEM: {e}"),
            })?;
        if certs.is_empty() {
            return Err(Error::InvalidConfig {
                setting: "tls certificate",
                reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| Error::InvalidConfig {
            setting: "tls key",
            reason: match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no PEM private key (PKCS#8, RSA or EC) found".into()
                }
                e => format!("unreadable PEM: {e}"),
            },
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig {
                setting: "tls",
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::InvalidConfig {
                setting: "tls key",
                reason: format!("does not go with the certificate: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self::new(Arc::new(config)))
    }

    /// The rustls configuration.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl fmt::Debug for TlsTermination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTermination")
            .field("alpn_protocols", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsTermination {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}
