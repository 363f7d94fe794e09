//! Join tokens: `hfjoin1.<base64url(JSON)>`, carrying where to join, the CA fingerprint
//! to pin, and a one-time secret. The cluster stores only the secret's hash.
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::PkiError;

const PREFIX: &str = "hfjoin1.";

/// A decoded join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// `host:port` of a node to join through.
    pub addr: String,
    /// The other members' addresses when the token was made, tried in turn when `addr`
    /// cannot be reached (tokens made before this field existed have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// SHA-256 of the cluster CA certificate (hex).
    pub ca: String,
    /// Token id (public; names the token in the cluster state).
    pub id: String,
    /// One-time secret (hex).
    pub secret: String,
    /// Unix milliseconds after which the token is refused.
    pub expires_at_ms: u64,
}

impl JoinToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Result<JoinToken, PkiError> {
        let body = text.trim().strip_prefix(PREFIX).ok_or_else(|| {
            PkiError::Token(format!(
                "a join token starts with `{PREFIX}` (copy the whole output of `holdfast token create`)"
            ))
        })?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| PkiError::Token("the token is damaged (not base64); copy it again".into()))?;
        serde_json::from_slice(&json)
            .map_err(|_| PkiError::Token("the token is damaged (bad content); copy it again".into()))
    }
}

/// The hash under which the cluster stores a token secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let t = JoinToken {
            addr: "10.0.0.1:7946".into(),
            addrs: vec!["10.0.0.2:7946".into()],
            ca: "ab".into(),
            id: "t1".into(),
            secret: "s".into(),
            expires_at_ms: 5,
        };
        assert_eq!(JoinToken::decode(&t.encode()).unwrap(), t);
        assert!(JoinToken::decode("nope").unwrap_err().to_string().contains("starts with `hfjoin1.`"));
        assert!(JoinToken::decode("hfjoin1.%%%").unwrap_err().to_string().contains("damaged"));
        assert_ne!(hash_secret("a"), hash_secret("b"));
        // A token made before `addrs` existed still reads.
        let old = format!(
            "hfjoin1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"addr":"10.0.0.1:7946","ca":"ab","id":"t1","secret":"s","expires_at_ms":5}"#)
        );
        assert!(JoinToken::decode(&old).unwrap().addrs.is_empty());
    }
}
