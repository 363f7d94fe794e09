//! The cluster CA and node certificates.
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};

use crate::PkiError;

/// Every node certificate carries this DNS name; clients verify servers against it (the
/// node's identity is then checked by certificate fingerprint against the cluster's
/// member list, which is what revocation on `holdfast node rm` removes).
pub const NODE_SERVER_NAME: &str = "node.holdfast";

/// SHA-256 of the DER of the first certificate in `pem`, lowercase hex.
pub fn fingerprint_of_pem(pem: &str) -> Result<String, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))?;
    Ok(fingerprint_of_der(&der))
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The cluster's certificate authority.
#[derive(Clone)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("fingerprint", &self.fingerprint().unwrap_or_default()).finish_non_exhaustive()
    }
}

fn ca_params(cluster: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "holdfast");
    dn.push(DnType::CommonName, format!("holdfast cluster CA {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

impl Ca {
    /// Creates a new CA; `cluster` names it (e.g. a random cluster id).
    pub fn generate(cluster: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster)?.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The CA's fingerprint (what join tokens pin).
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        fingerprint_of_pem(&self.cert_pem)
    }

    /// Issues a certificate for a node's own public key (PEM SubjectPublicKeyInfo). The
    /// certificate serves both as server and client certificate on the holdfast port.
    pub fn issue_node_cert(
        &self,
        node_name: &str,
        node_id: u64,
        addrs: &[IpAddr],
        public_key_pem: &str,
    ) -> Result<String, PkiError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
        for ip in addrs {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "holdfast");
        dn.push(DnType::CommonName, format!("{node_name} ({node_id})"));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let public = SubjectPublicKeyInfo::from_pem(public_key_pem)?;
        Ok(params.signed_by(&public, &issuer)?.pem())
    }
}

/// A node's private key.
#[derive(Clone)]
pub struct NodeKey {
    pub key_pem: String,
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, PkiError> {
        Ok(NodeKey { key_pem: KeyPair::generate()?.serialize_pem() })
    }

    pub fn public_key_pem(&self) -> Result<String, PkiError> {
        Ok(KeyPair::from_pem(&self.key_pem)?.public_key_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Verifies `cert` with webpki (through rustls, ring provider) against `root` alone,
    /// as a server certificate for the node name and as a client certificate.
    fn verify(cert: &str, root: &Ca) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&root.cert_pem)).unwrap();
        let roots = Arc::new(roots);
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let name = ServerName::try_from(NODE_SERVER_NAME).unwrap();
        server.verify_server_cert(&der(cert), &[], &name, &[], UnixTime::now())?;
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider).build().unwrap();
        client.verify_client_cert(&der(cert), &[], UnixTime::now())?;
        Ok(())
    }

    #[test]
    fn issued_certificates_chain_to_the_ca() {
        let ca = Ca::generate("test").unwrap();
        let key = NodeKey::generate().unwrap();
        let cert =
            ca.issue_node_cert("n1", 7, &["127.0.0.1".parse().unwrap()], &key.public_key_pem().unwrap()).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(ca.fingerprint().unwrap().len(), 64);
        assert_ne!(fingerprint_of_pem(&cert).unwrap(), ca.fingerprint().unwrap());
        verify(&cert, &ca).expect("a node certificate verifies against its CA, as server and as client");
        // Another cluster's CA does not vouch for it.
        let other = Ca::generate("other").unwrap();
        let err = verify(&cert, &other).expect_err("another CA");
        assert!(matches!(err, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)), "{err:?}");
        // The CA certificate itself is no node certificate (CA certs are not end entities).
        assert!(verify(&ca.cert_pem, &ca).is_err(), "the CA certificate is not accepted as a node's");
    }
}
