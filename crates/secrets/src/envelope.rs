//! Envelopes: a value encrypted under its own data key, the data key wrapped under the
//! cluster key, both bound to the secret's name and version.
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{ClusterKey, SecretError, MAX_SECRET_BYTES};

/// A sealed value, as stored in the replicated state (base64 fields).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The id of the cluster key the data key is wrapped under.
    pub key_id: String,
    /// The data key: 24-byte nonce, then the key encrypted under the cluster key (+ tag).
    pub wrapped_key: String,
    /// The value: 24-byte nonce, then the value encrypted under the data key (+ tag).
    pub ciphertext: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(key {}, {} bytes)", self.key_id, self.ciphertext.len())
    }
}

/// An opened value; zeroed when dropped.
pub type Plain = Zeroizing<Vec<u8>>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, SecretError> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::fill(out.as_mut()).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(out)
}

fn key_aad(context: &str) -> Vec<u8> {
    [b"holdfast data key\0".as_slice(), context.as_bytes()].concat()
}

/// Encrypts `msg` under `key` with a random nonce: nonce || ciphertext || tag.
fn encrypt(key: &[u8; 32], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecretError> {
    let nonce = random::<24>()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct =
        cipher.encrypt(XNonce::from_slice(nonce.as_ref()), Payload { msg, aad }).map_err(|_| SecretError::Corrupt)?;
    Ok([nonce.as_slice(), &ct].concat())
}

fn decrypt(key: &[u8; 32], b64: &str, aad: &[u8]) -> Result<Plain, SecretError> {
    let raw = B64.decode(b64).map_err(|_| SecretError::Corrupt)?;
    if raw.len() < 24 + 16 {
        return Err(SecretError::Corrupt);
    }
    let (nonce, ct) = raw.split_at(24);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| SecretError::Corrupt)
}

fn unwrap_key(key: &ClusterKey, sealed: &Sealed, context: &str) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    if sealed.key_id != key.id() {
        return Err(SecretError::WrongKey { sealed: sealed.key_id.clone(), held: key.id() });
    }
    let dek = decrypt(key.bytes(), &sealed.wrapped_key, &key_aad(context))?;
    let arr: [u8; 32] = dek.as_slice().try_into().map_err(|_| SecretError::Corrupt)?;
    Ok(Zeroizing::new(arr))
}

/// Seals `value` for the secret version named by `context` (e.g. `shop/oauth-key@3`).
pub fn seal(key: &ClusterKey, context: &str, value: &[u8]) -> Result<Sealed, SecretError> {
    if value.len() > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge { len: value.len(), max: MAX_SECRET_BYTES });
    }
    let dek = random::<32>()?;
    let wrapped = encrypt(key.bytes(), dek.as_ref(), &key_aad(context))?;
    let ct = encrypt(&dek, value, context.as_bytes())?;
    Ok(Sealed { key_id: key.id(), wrapped_key: B64.encode(wrapped), ciphertext: B64.encode(ct) })
}

/// Opens an envelope sealed by [`seal`] with the same `context`.
pub fn open(key: &ClusterKey, context: &str, sealed: &Sealed) -> Result<Plain, SecretError> {
    let dek = unwrap_key(key, sealed, context)?;
    decrypt(&dek, &sealed.ciphertext, context.as_bytes())
}

/// Re-wraps an envelope's data key under `new` (cluster key rotation); the ciphertext
/// is unchanged.
pub fn reseal(old: &ClusterKey, new: &ClusterKey, context: &str, sealed: &Sealed) -> Result<Sealed, SecretError> {
    let dek = unwrap_key(old, sealed, context)?;
    let wrapped = encrypt(new.bytes(), dek.as_ref(), &key_aad(context))?;
    Ok(Sealed { key_id: new.id(), wrapped_key: B64.encode(wrapped), ciphertext: sealed.ciphertext.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let key = ClusterKey::generate().unwrap();
        let s = seal(&key, "shop/oauth@1", b"hunter2").unwrap();
        assert_eq!(&open(&key, "shop/oauth@1", &s).unwrap()[..], b"hunter2");
        // The stored form never contains the value, and two seals differ.
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hunter2"));
        assert_ne!(seal(&key, "shop/oauth@1", b"hunter2").unwrap(), s);
        assert!(!format!("{s:?}").contains(&s.ciphertext));
    }

    #[test]
    fn bound_to_its_name_and_version() {
        let key = ClusterKey::generate().unwrap();
        let s = seal(&key, "shop/oauth@1", b"v").unwrap();
        assert!(matches!(open(&key, "shop/oauth@2", &s), Err(SecretError::Corrupt)));
        assert!(matches!(open(&key, "shop/other@1", &s), Err(SecretError::Corrupt)));
        let mut bad = s.clone();
        bad.ciphertext = B64.encode([0u8; 50]);
        assert!(matches!(open(&key, "shop/oauth@1", &bad), Err(SecretError::Corrupt)));
    }

    #[test]
    fn another_key_is_named() {
        let (a, b) = (ClusterKey::generate().unwrap(), ClusterKey::generate().unwrap());
        let s = seal(&a, "p/s@1", b"v").unwrap();
        let e = open(&b, "p/s@1", &s).unwrap_err();
        assert!(e.to_string().contains(&a.id()) && e.to_string().contains(&b.id()), "{e}");
    }

    #[test]
    fn reseal_moves_to_the_new_key() {
        let (a, b) = (ClusterKey::generate().unwrap(), ClusterKey::generate().unwrap());
        let s = seal(&a, "p/s@1", b"value").unwrap();
        let r = reseal(&a, &b, "p/s@1", &s).unwrap();
        assert_eq!(r.ciphertext, s.ciphertext);
        assert_eq!(&open(&b, "p/s@1", &r).unwrap()[..], b"value");
        assert!(open(&a, "p/s@1", &r).is_err());
    }

    #[test]
    fn size_limit() {
        let key = ClusterKey::generate().unwrap();
        assert!(seal(&key, "p/s@1", &vec![1u8; MAX_SECRET_BYTES]).is_ok());
        let e = seal(&key, "p/s@1", &vec![1u8; MAX_SECRET_BYTES + 1]).unwrap_err();
        assert_eq!(e.to_string(), "a secret value may be at most 65536 bytes; this one has 65537");
    }
}
