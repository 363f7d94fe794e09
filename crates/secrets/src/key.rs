//! The cluster key: 32 random bytes, its public id, and its file.
use std::io::Write;
use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use crate::SecretError;

/// The key file's name in a node's data directory (when it is kept there).
pub const KEY_FILE: &str = "secrets.key";

const FILE_PREFIX: &str = "hfkey1:";

/// The cluster key every secret's data key is wrapped under. Zeroed on drop; its
/// `Debug` shows only the id.
#[derive(Clone)]
pub struct ClusterKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.id())
    }
}

impl ClusterKey {
    /// A new random key.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(ClusterKey { bytes })
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        ClusterKey { bytes: Zeroizing::new(raw) }
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A public name for the key (16 hex digits of a hash of it): stored with every
    /// envelope and in the cluster state, so a node holding another key says so instead
    /// of failing to decrypt.
    pub fn id(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"holdfast secrets key id\0");
        ctx.update(self.bytes.as_ref());
        hex::encode(&ctx.finish().as_ref()[..8])
    }

    /// An HMAC-SHA256 tag (hex) of `message` under a key derived from this one for
    /// `purpose` (e.g. job tokens): anyone holding the cluster key can make and check it,
    /// nobody else can forge it, and the cluster key itself is never used directly.
    pub fn tag(&self, purpose: &str, message: &str) -> String {
        let derived =
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.bytes.as_ref()), purpose.as_bytes());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref());
        hex::encode(ring::hmac::sign(&key, message.as_bytes()).as_ref())
    }

    /// The key as text (`hfkey1:<base64>`), for the key file and the join answer.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{FILE_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(self.bytes.as_ref())
        ))
    }

    /// Reads [`ClusterKey::encode`]'s text (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Option<Self> {
        let b64 = text.trim().strip_prefix(FILE_PREFIX)?;
        let raw = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(b64).ok()?);
        let arr: [u8; 32] = raw.as_slice().try_into().ok()?;
        Some(Self::from_bytes(arr))
    }

    /// Loads a key file. A file readable by group or others is refused: the key opens
    /// every secret of the cluster.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let err = |message: String| SecretError::KeyFile { path: path.to_path_buf(), message };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets other users read it; chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        Self::decode(&text)
            .ok_or_else(|| err("not a holdfast secrets key (expected `hfkey1:` and 32 bytes of base64)".into()))
    }

    /// Writes the key file atomically with mode 0600 (never replacing an existing one).
    pub fn write_new(&self, path: &Path) -> Result<(), SecretError> {
        if path.exists() {
            let message = "already exists; refusing to replace a cluster key".to_string();
            return Err(SecretError::KeyFile { path: path.to_path_buf(), message });
        }
        self.write_replacing(path)
    }

    /// Writes the key file atomically with mode 0600, replacing what is there (the key
    /// the cluster moved to, after a rotation).
    pub fn write_replacing(&self, path: &Path) -> Result<(), SecretError> {
        let err = |message: String| SecretError::KeyFile { path: path.to_path_buf(), message };
        let tmp = path.with_extension("key.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(self.encode().as_bytes()).map_err(|e| err(e.to_string()))?;
            f.write_all(b"\n").map_err(|e| err(e.to_string()))?;
            f.sync_all().map_err(|e| err(e.to_string()))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_mode_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let key = ClusterKey::generate().unwrap();
        key.write_new(&path).unwrap();
        let back = ClusterKey::load(&path).unwrap();
        assert_eq!(back.id(), key.id());
        assert!(key.write_new(&path).unwrap_err().to_string().contains("refusing to replace"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClusterKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644 lets other users read it"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "hello").unwrap();
        assert!(ClusterKey::load(&path).unwrap_err().to_string().contains("not a holdfast secrets key"));
    }

    #[test]
    fn tags_depend_on_key_purpose_and_message() {
        let (a, b) = (ClusterKey::from_bytes([1; 32]), ClusterKey::from_bytes([2; 32]));
        let t = a.tag("job", "shop/refresh#3");
        assert_eq!(t.len(), 64);
        assert_eq!(t, a.tag("job", "shop/refresh#3"));
        assert_ne!(t, a.tag("job", "shop/refresh#4"));
        assert_ne!(t, a.tag("other", "shop/refresh#3"));
        assert_ne!(t, b.tag("job", "shop/refresh#3"));
    }

    #[test]
    fn debug_shows_only_the_id() {
        let key = ClusterKey::from_bytes([7; 32]);
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("ClusterKey({})", key.id()));
        assert_eq!(key.id().len(), 16);
        assert_ne!(ClusterKey::from_bytes([8; 32]).id(), key.id());
    }
}
