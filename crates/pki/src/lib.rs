//! The cluster's public-key infrastructure: everything about who may talk to whom.
//!
//! - [`Ca`]: the cluster certificate authority (ECDSA P-256, created by the first node)
//!   and the issuing of node certificates for a public key the node generated itself.
//! - [`NodeKey`]: a node's private key (never leaves the node).
//! - [`JoinToken`]: what `holdfast token create` prints: the address to join, the CA's
//!   fingerprint (so the joining node can authenticate the cluster before sending
//!   anything), a token id and a one-time secret, and an expiry.
//! - [`tls`]: rustls configurations for the holdfast port: servers always present their
//!   node certificate; node-to-node clients present theirs (mutual TLS); CLI clients
//!   verify the server against the CA and authenticate with the admin token instead.
//!
//! Pure crypto and encoding; no IO.
#![forbid(unsafe_code)]

mod ca;
pub mod tls;
mod token;

pub use ca::{fingerprint_of_pem, Ca, NodeKey, NODE_SERVER_NAME};
pub use token::{hash_secret, JoinToken};

/// Errors of certificate and token handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid join token: {0}")]
    Token(String),
}
