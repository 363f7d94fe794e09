//! The crate's typed errors.
use std::path::PathBuf;

/// What can go wrong sealing, opening or loading a key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or written.
    #[error("secrets key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The envelope was sealed under another cluster key than the one this node holds.
    #[error(
        "sealed under cluster key {sealed}, but this node holds key {held}: give it the cluster's secrets key file"
    )]
    WrongKey {
        /// The key id in the envelope.
        sealed: String,
        /// This node's key id.
        held: String,
    },
    /// The envelope does not authenticate: tampered with, truncated, or moved to another
    /// secret's name or version.
    #[error("the sealed value does not open: it was altered or belongs to another secret")]
    Corrupt,
    /// The value is larger than [`crate::MAX_SECRET_BYTES`].
    #[error("a secret value may be at most {max} bytes; this one has {len}")]
    TooLarge {
        /// The value's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}
