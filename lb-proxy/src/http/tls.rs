//! TLS termination for HTTPS listeners (HAProxy `bind … ssl crt`, nginx `listen … ssl`, the
//! HTTPS listeners of cloud load balancers): the client's TLS session ends at the proxy,
//! requests go on to the backends in plain HTTP, and the backends learn the scheme from
//! `X-Forwarded-Proto: https` and `Forwarded: …;proto=https`.
//!
//! On rustls with the ring provider: TLS 1.3 and 1.2 (rustls's safe defaults: ECDHE key
//! exchange, AEAD ciphers only), ALPN `http/1.1` (`h2` first with
//! [`HttpProxyConfig::http2`](super::HttpProxyConfig::http2)), no client certificates.
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

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

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
    /// nothing; with [`HttpProxyConfig::http2`](super::HttpProxyConfig::http2) the proxy
    /// offers `h2` and `http/1.1` instead, whatever the list.
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
        Self::from_pems(&[(chain, key)])
    }

    /// Terminates TLS with several certificates, each a PEM chain and key as
    /// [`from_pem`](Self::from_pem) reads them, chosen by the name the client asks for
    /// (SNI), as HAProxy's `crt-list` and nginx's `server_name` choose: the first whose
    /// subject alternative names cover it (exact, or a `*.` wildcard for one label), in
    /// order; the first certificate for a client that sends no name or one none covers.
    /// Among those, the first whose key signs with a scheme the client offers: an RSA and
    /// an ECDSA certificate for one name each serve the clients that can verify them (as
    /// nginx's two `ssl_certificate`s).
    ///
    /// # Errors
    /// As [`from_pem`](Self::from_pem) for any of them (the message names which, from 1,
    /// when there are several); [`Error::InvalidConfig`] (`tls certificate`) for none,
    /// (`tls sni certificate`) for one after the first with no DNS name in its subject
    /// alternative names (SNI would never choose it).
    pub fn from_pems(pairs: &[(&[u8], &[u8])]) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let several = pairs.len() > 1;
        let mut certs = Vec::with_capacity(pairs.len());
        for (i, (chain, key)) in pairs.iter().enumerate() {
            let which = |setting: &'static str, reason: String| Error::InvalidConfig {
                setting,
                reason: if several {
                    format!("certificate {}: {reason}", i + 1)
                } else {
                    reason
                },
            };
            let cert = certified(chain, key, &provider, which)?;
            if i > 0 && !has_dns_name(&cert) {
                return Err(which("tls sni certificate", NO_SNI_NAME.into()));
            }
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(Error::InvalidConfig {
                setting: "tls certificate",
                reason: "no certificate given".into(),
            });
        }
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig {
                setting: "tls",
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { certs }));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self::new(Arc::new(config)))
    }

    /// Checks that the PEM `chain`'s certificate can be chosen by SNI when it is not the
    /// first of [`from_pems`](Self::from_pems): it names a DNS name in its subject
    /// alternative names.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (`tls certificate`) for an unreadable chain, (`tls sni
    /// certificate`) for one with no DNS name.
    pub fn check_sni_certificate(chain: &[u8]) -> Result<()> {
        let bad = |setting, reason: String| Error::InvalidConfig { setting, reason };
        let der = CertificateDer::pem_slice_iter(chain)
            .next()
            .ok_or_else(|| bad("tls certificate", "no PEM certificate found".into()))?
            .map_err(|e| bad("tls certificate", format!("unreadable PEM: {e}")))?;
        let named = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| bad("tls certificate", format!("malformed certificate: {e}")))?
            .valid_dns_names()
            .next()
            .is_some();
        if named {
            Ok(())
        } else {
            Err(bad("tls sni certificate", NO_SNI_NAME.into()))
        }
    }

    /// The rustls configuration.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// One certificate with its key, checked to belong together.
pub(super) fn certified(
    chain: &[u8],
    key: &[u8],
    provider: &rustls::crypto::CryptoProvider,
    which: impl Fn(&'static str, String) -> Error,
) -> Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| which("tls certificate", format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(which(
            "tls certificate",
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        ));
    }
    if let Err(e) = webpki::EndEntityCert::try_from(&certs[0]) {
        return Err(which(
            "tls certificate",
            format!("malformed certificate: {e}"),
        ));
    }
    // Said as such: the PEM reader skips an encrypted PKCS#8 block ("no key") and fails on
    // an encrypted traditional one's headers (a base64 error).
    let text = String::from_utf8_lossy(key);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(which(
            "tls key",
            "the private key is encrypted (a passphrase), which is not supported: decrypt it \
             (openssl pkey -in KEY -out KEY.plain) and keep the file readable by root only"
                .into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        which(
            "tls key",
            match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no PEM private key (PKCS#8, RSA or EC) found".into()
                }
                e => format!("unreadable PEM: {e}"),
            },
        )
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        which(
            "tls key",
            format!(
                "unsupported private key ({e}): RSA of 2048 to 8192 bits, ECDSA P-256 or P-384, \
                 or Ed25519"
            ),
        )
    })?;
    let key = CertifiedKey::new(certs, signing);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(which(
                "tls key",
                format!("does not go with the certificate: {e}"),
            ))
        }
    }
    Ok(Arc::new(key))
}

/// Why a certificate after the first is refused when it names no DNS name: chosen only by
/// the names in its subject alternative names (the first one also serves clients none
/// covers), it would never be served.
const NO_SNI_NAME: &str = "no DNS name in its subject alternative names: SNI would never choose \
     it (a name only in the subject's CN is not matched, as clients do not match it either, \
     RFC 6125 §6.4.4)";

/// Whether `cert`'s end-entity certificate names a DNS name (or wildcard) in its subject
/// alternative names.
fn has_dns_name(cert: &CertifiedKey) -> bool {
    cert.end_entity_cert().ok().is_some_and(|der| {
        webpki::EndEntityCert::try_from(der).is_ok_and(|ee| ee.valid_dns_names().next().is_some())
    })
}

/// Picks a certificate by the client's SNI name ([`TlsTermination::from_pems`]).
#[derive(Debug)]
struct BySni {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let default = self.certs.first().cloned();
        if self.certs.len() == 1 {
            return default;
        }
        // A certificate whose key can sign with a scheme the client offers: of an RSA and an
        // ECDSA certificate for one name, the one the client can verify (as nginx's two
        // `ssl_certificate`, HAProxy's multi-certificate bundles).
        let schemes = hello.signature_schemes();
        let usable = |c: &Arc<CertifiedKey>| c.key.choose_scheme(schemes).is_some();
        let name = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok());
        if let Some(name) = name {
            let covering: Vec<&Arc<CertifiedKey>> = self
                .certs
                .iter()
                .filter(|c| {
                    c.end_entity_cert().ok().is_some_and(|der| {
                        webpki::EndEntityCert::try_from(der)
                            .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                    })
                })
                .collect();
            if let Some(c) = covering.iter().find(|c| usable(c)).or(covering.first()) {
                return Some(Arc::clone(c));
            }
        }
        // No name, or none covering it: the first certificate, or the first the client can
        // verify when it cannot verify that one.
        self.certs
            .first()
            .filter(|c| usable(c))
            .or_else(|| self.certs.iter().find(|c| usable(c)))
            .cloned()
            .or(default)
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
