//! Sealing secret values for the replicated state.
//!
//! A secret value never enters the Raft log in the clear: the node that receives it seals
//! it into an [`Sealed`] envelope — a fresh 256-bit data key per value encrypts it with
//! XChaCha20-Poly1305, and the data key is itself encrypted (wrapped) under the cluster
//! key — and only the envelope is proposed. The envelope's associated data binds it to its
//! secret's name and version, so a ciphertext copied onto another secret does not open.
//! Only a node that runs a consumer opens it, into memory that is zeroed on drop
//! ([`Plain`]).
//!
//! The cluster key ([`ClusterKey`]) is 32 random bytes in a key file: by default
//! `secrets.key` in each node's data directory (mode 0600), handed to joining nodes over
//! the join's TLS connection; or a file kept elsewhere (another disk, a tmpfs filled at
//! boot) that the node reads at start and never copies. [`reseal`] re-wraps a data key
//! under a new cluster key without touching the ciphertext, which is how the key is
//! rotated. XChaCha20 needs no AES instructions (the Raspberry Pi 4 has none) and its
//! 192-bit nonces are safe to pick at random.
mod envelope;
mod error;
mod key;

pub use envelope::{open, reseal, seal, Plain, Sealed};
pub use error::SecretError;
pub use key::{ClusterKey, KEY_FILE};

/// The largest secret value accepted (64 KiB): secrets are keys, tokens and small
/// certificates; the Raft log is not a file store.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
