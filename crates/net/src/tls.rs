//! HTTPS on the edge: certificates parsed from PEM ([`ServedCert::from_pem`]) and the
//! SNI choice among them ([`CertSet`], a pure lookup), handed to rustls by [`SniResolver`].
//!
//! A certificate serves exactly the names in its subject alternative names (`*.example.com`
//! covers one label below `example.com`, as browsers check). When several certificates
//! cover a name the one that expires last wins, so a renewed certificate takes over as
//! soon as it is installed. A client naming no host, or a host no certificate covers, gets
//! a handshake failure (`unrecognized_name`), never another site's certificate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate and key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate is not PEM (expected `-----BEGIN CERTIFICATE-----`): {0}")]
    CertPem(String),
    #[error("no certificate found in the PEM text (expected `-----BEGIN CERTIFICATE-----`)")]
    NoCert,
    #[error("the private key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    KeyPem(String),
    #[error("the private key's algorithm is not supported (use ECDSA P-256/P-384, Ed25519 or RSA 2048+): {0}")]
    KeyType(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("the certificate names no DNS name (subject alternative names)")]
    NoNames,
}

/// A certificate chain with its key, ready to serve.
#[derive(Clone)]
pub struct ServedCert {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ServedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCert").field("names", &self.names).field("not_after", &self.not_after).finish()
    }
}

impl ServedCert {
    /// Parses a PEM chain (leaf first) and its PEM private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<ServedCert, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::CertPem(e.to_string()))?;
        let leaf = chain.first().ok_or(TlsError::NoCert)?;
        let (names, not_before, not_after) = leaf_names(leaf)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::KeyPem(e.to_string()))?;
        let signer = any_supported_type(&key).map_err(|e| TlsError::KeyType(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(TlsError::KeyMismatch),
            // A key whose public half cannot be derived (rare types) is not refused.
            Err(_) => {}
        }
        Ok(ServedCert { names, not_before, not_after, key: Arc::new(certified) })
    }

    /// The DNS names the certificate serves, lowercase (`*.example.com` for a wildcard).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Start of validity, seconds since the Unix epoch.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// Expiry, seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Whether the certificate serves `host` (lowercase, no trailing dot).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_covers(n, host))
    }
}

/// Whether certificate name `pattern` covers `host`: equal, or `*.suffix` and `host` is
/// exactly one label below `suffix`.
pub fn name_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|below| below.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn leaf_names(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::Parse(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    if names.is_empty() {
        return Err(TlsError::NoNames);
    }
    Ok((names, cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// The certificates of the edge, indexed by name (pure; rebuilt on every change).
#[derive(Debug, Default, Clone)]
pub struct CertSet {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    certs: Vec<ServedCert>,
}

impl CertSet {
    /// Indexes `certs`; for a name covered by several, the one expiring last.
    pub fn new(certs: Vec<ServedCert>) -> CertSet {
        let mut set = CertSet { exact: HashMap::new(), wildcard: HashMap::new(), certs };
        for (i, cert) in set.certs.iter().enumerate() {
            for name in &cert.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut set.wildcard, suffix.to_string()),
                    None => (&mut set.exact, name.clone()),
                };
                let later = |j: &usize| set.certs[*j].not_after < cert.not_after;
                match map.get(&key) {
                    Some(j) if !later(j) => {}
                    _ => {
                        map.insert(key, i);
                    }
                }
            }
        }
        set
    }

    /// The certificate for `host` (any case, trailing dot allowed): an exact name first,
    /// then a wildcard one label up.
    pub fn choose(&self, host: &str) -> Option<&ServedCert> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(i) = self.exact.get(&host) {
            return self.certs.get(*i);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent).and_then(|i| self.certs.get(*i))
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }
}

/// rustls' view of the current [`CertSet`], swapped atomically.
#[derive(Debug, Default)]
pub(crate) struct SniResolver {
    set: RwLock<Arc<CertSet>>,
}

impl SniResolver {
    pub fn replace(&self, set: CertSet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    pub fn current(&self) -> Arc<CertSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.current().choose(name).map(|c| c.key.clone())
    }
}

/// The rustls server configuration of the edge's HTTPS listener: ALPN h2 and http/1.1,
/// certificates chosen by SNI.
pub(crate) fn server_config(resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` expiring on 1 January of `2030 + years`.
    fn cert(names: &[&str], years: i32) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.not_after = rcgen::date_time_ymd(2030 + years, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let c = params.self_signed(&key).expect("self-signed");
        (c.pem(), key.serialize_pem())
    }

    fn served(names: &[&str], years: i32) -> ServedCert {
        let (c, k) = cert(names, years);
        ServedCert::from_pem(c.as_bytes(), k.as_bytes()).expect("served")
    }

    #[test]
    fn parses_names_and_expiry() {
        let c = served(&["Shop.Example.com", "*.example.com"], 0);
        assert_eq!(c.names(), ["shop.example.com", "*.example.com"]);
        assert!(c.not_after() > 1_800_000_000);
        assert!(c.covers("shop.example.com"));
        assert!(c.covers("a.example.com"));
        assert!(!c.covers("a.b.example.com"));
        assert!(!c.covers("example.com"));
    }

    #[test]
    fn refuses_bad_input() {
        let (c1, _) = cert(&["a.example"], 0);
        let (_, k2) = cert(&["a.example"], 0);
        assert_eq!(ServedCert::from_pem(c1.as_bytes(), k2.as_bytes()).unwrap_err(), TlsError::KeyMismatch);
        assert_eq!(ServedCert::from_pem(b"hello", k2.as_bytes()).unwrap_err(), TlsError::NoCert);
        assert!(matches!(ServedCert::from_pem(c1.as_bytes(), b"nope").unwrap_err(), TlsError::KeyPem(_)));
        // A key given where the certificate belongs.
        assert_eq!(ServedCert::from_pem(k2.as_bytes(), k2.as_bytes()).unwrap_err(), TlsError::NoCert);
    }

    #[test]
    fn sni_choice() {
        let set = CertSet::new(vec![
            served(&["a.example"], 0),
            served(&["*.example"], 0),
            served(&["a.example"], 1), // later: wins for a.example
            served(&["b.other"], 0),
        ]);
        let pick = |h: &str| set.choose(h).map(|c| (c.names()[0].clone(), c.not_after()));
        let later = set.certs[2].not_after();
        assert_eq!(pick("a.example"), Some(("a.example".into(), later)));
        assert_eq!(pick("A.Example."), Some(("a.example".into(), later)));
        assert_eq!(pick("c.example").map(|p| p.0), Some("*.example".into()));
        assert_eq!(pick("x.c.example"), None);
        assert_eq!(pick("example"), None);
        assert_eq!(pick("b.other").map(|p| p.0), Some("b.other".into()));
        assert_eq!(pick("nothing.test"), None);
    }

    #[test]
    fn covers_is_one_label() {
        assert!(name_covers("*.a.b", "x.a.b"));
        assert!(!name_covers("*.a.b", "a.b"));
        assert!(!name_covers("*.a.b", ".a.b"));
        assert!(!name_covers("*.a.b", "y.x.a.b"));
        assert!(name_covers("a.b", "A.B"));
    }
}
