//! rustls configurations for the holdfast port (ring provider, no C code).
//!
//! Servers present `[node cert, CA cert]` and accept an optional client certificate
//! signed by the CA; the HTTP layer decides per route whether one is required (node
//! routes) or the admin token suffices (the `/v1` API). Clients verify the server's chain
//! against the CA and the fixed name [`NODE_SERVER_NAME`], so nodes are reachable by any
//! address.
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::ca::{fingerprint_of_der, NODE_SERVER_NAME};
use crate::PkiError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))
}

fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem)? {
        roots.add(c)?;
    }
    Ok(roots)
}

const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server side of the holdfast port.
pub fn server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ServerConfig, PkiError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let mut chain = certs(cert_pem)?;
    chain.extend(certs(ca_pem)?);
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key(key_pem)?)?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A node talking to another node: verifies the server, presents its own certificate.
pub fn node_client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ClientConfig, PkiError> {
    let verifier = NodeVerifier::ca(ca_pem)?;
    // ALPN is left to the HTTP client (hyper-rustls sets h2/http1.1 itself).
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)?)
}

/// The CLI: verifies the server against the CA; authenticates with the admin token.
pub fn cli_client_config(ca_pem: &str) -> Result<ClientConfig, PkiError> {
    let verifier = NodeVerifier::ca(ca_pem)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A joining node that knows only the CA fingerprint from its token: accepts the server
/// only if the CA certificate it sends has that fingerprint and its certificate chains
/// to it.
pub fn pinned_client_config(ca_fingerprint: &str) -> Result<ClientConfig, PkiError> {
    let verifier = NodeVerifier::pinned(ca_fingerprint);
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The server name every node certificate carries.
pub fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(NODE_SERVER_NAME).expect("constant is a valid DNS name").to_owned(),
    )
}

/// Fingerprint of a peer's end-entity certificate (for member checks).
pub fn peer_fingerprint(cert: &CertificateDer<'_>) -> String {
    fingerprint_of_der(cert)
}

/// How a client decides to trust a server's chain.
#[derive(Debug)]
enum Trust {
    /// Chains to the cluster CA the client already has.
    Ca(Arc<WebPkiServerVerifier>),
    /// Chains to the CA the server sends, if that CA has this fingerprint (joining).
    Pinned(String),
}

/// Verifies servers against [`NODE_SERVER_NAME`] whatever address was dialled.
#[derive(Debug)]
struct NodeVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl NodeVerifier {
    fn ca(ca_pem: &str) -> Result<Self, PkiError> {
        let provider = provider();
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider.clone())
            .build()
            .map_err(|e| PkiError::Pem(e.to_string()))?;
        Ok(NodeVerifier { trust: Trust::Ca(inner), provider })
    }

    fn pinned(fingerprint: &str) -> Self {
        NodeVerifier { trust: Trust::Pinned(fingerprint.to_lowercase()), provider: provider() }
    }
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Ca(inner) => inner.verify_server_cert(end_entity, intermediates, &server_name(), ocsp, now),
            Trust::Pinned(pin) => {
                let Some(ca) = intermediates.iter().find(|c| &fingerprint_of_der(c) == pin) else {
                    return Err(rustls::Error::General(
                        "the server's cluster CA does not match the token's fingerprint (wrong cluster, or someone in between)"
                            .into(),
                    ));
                };
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone().into_owned())?;
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                inner.verify_server_cert(end_entity, &[], &server_name(), ocsp, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, NodeKey};

    fn node(ca: &Ca, name: &str) -> (String, String) {
        let key = NodeKey::generate().unwrap();
        let cert =
            ca.issue_node_cert(name, 1, &["127.0.0.1".parse().unwrap()], &key.public_key_pem().unwrap()).unwrap();
        (cert, key.key_pem)
    }

    /// Runs one in-memory handshake; returns the client certificate the server saw, or
    /// the error prefixed with the side that raised it (`client: ` or `server: `).
    fn handshake(client: ClientConfig, server: ServerConfig) -> Result<Option<String>, String> {
        let mut c = rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("10.1.2.3").unwrap())
            .map_err(|e| format!("client: {e}"))?;
        let mut s = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| format!("server: {e}"))?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).map_err(|e| format!("client: {e}"))?;
            s.read_tls(&mut &buf[..]).map_err(|e| format!("server: {e}"))?;
            s.process_new_packets().map_err(|e| format!("server: {e}"))?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).map_err(|e| format!("server: {e}"))?;
            c.read_tls(&mut &buf[..]).map_err(|e| format!("client: {e}"))?;
            c.process_new_packets().map_err(|e| format!("client: {e}"))?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(s.peer_certificates().map(|p| peer_fingerprint(&p[0])));
            }
        }
        Err("handshake did not finish".into())
    }

    #[test]
    fn mutual_tls_between_nodes_of_one_cluster() {
        let ca = Ca::generate("a").unwrap();
        let (sc, sk) = node(&ca, "server");
        let (cc, ck) = node(&ca, "client");
        let peer = handshake(
            node_client_config(&ca.cert_pem, &cc, &ck).unwrap(),
            server_config(&ca.cert_pem, &sc, &sk).unwrap(),
        )
        .expect("handshake");
        assert_eq!(peer, Some(crate::fingerprint_of_pem(&cc).unwrap()), "server sees the client's certificate");
        // The CLI (no client cert) is accepted at the TLS layer too.
        assert_eq!(
            handshake(cli_client_config(&ca.cert_pem).unwrap(), server_config(&ca.cert_pem, &sc, &sk).unwrap()),
            Ok(None)
        );
    }

    /// A handshake between a server of cluster `a` and a client holding a certificate of
    /// cluster `b`; the client trusts its own CA (b) or the server's (a).
    fn intruder(client_trusts_own_ca: bool) -> Result<Option<String>, String> {
        let ca = Ca::generate("a").unwrap();
        let other = Ca::generate("b").unwrap();
        let (sc, sk) = node(&ca, "server");
        let (cc, ck) = node(&other, "intruder");
        let trusted = if client_trusts_own_ca { &other.cert_pem } else { &ca.cert_pem };
        handshake(node_client_config(trusted, &cc, &ck).unwrap(), server_config(&ca.cert_pem, &sc, &sk).unwrap())
    }

    #[test]
    fn a_client_refuses_a_server_of_another_cluster() {
        // The intruder trusts only its own CA: it refuses the server's chain.
        let err = intruder(true).expect_err("refused");
        assert!(err.starts_with("client: ") && err.contains("UnknownIssuer"), "{err}");
        let ca = Ca::generate("a").unwrap();
        let (_, key) = node(&ca, "y");
        assert!(node_client_config(&ca.cert_pem, &node(&ca, "x").0, &key).is_err(), "certificate/key mismatch refused");
    }

    #[test]
    fn the_server_refuses_a_client_certificate_of_another_cluster() {
        // The client trusts the right CA (so it accepts the server), but presents a
        // certificate of another CA: only the server can refuse, and it does.
        let err = intruder(false).expect_err("refused");
        assert!(err.starts_with("server: ") && err.contains("UnknownIssuer"), "{err}");
        // A client with a member certificate gets through: the refusal was the
        // certificate's issuer, nothing else.
        let ca = Ca::generate("a").unwrap();
        let (sc, sk) = node(&ca, "server");
        let (mc, mk) = node(&ca, "member");
        let seen = handshake(
            node_client_config(&ca.cert_pem, &mc, &mk).unwrap(),
            server_config(&ca.cert_pem, &sc, &sk).unwrap(),
        );
        assert_eq!(seen, Ok(Some(crate::fingerprint_of_pem(&mc).unwrap())));
    }

    #[test]
    fn join_pins_the_ca_fingerprint() {
        let ca = Ca::generate("a").unwrap();
        let (sc, sk) = node(&ca, "server");
        let ok = handshake(
            pinned_client_config(&ca.fingerprint().unwrap()).unwrap(),
            server_config(&ca.cert_pem, &sc, &sk).unwrap(),
        );
        assert_eq!(ok, Ok(None));
        let other = Ca::generate("b").unwrap();
        let err = handshake(
            pinned_client_config(&other.fingerprint().unwrap()).unwrap(),
            server_config(&ca.cert_pem, &sc, &sk).unwrap(),
        )
        .expect_err("wrong pin refused");
        assert!(err.contains("does not match the token's fingerprint"), "{err}");
    }
}
