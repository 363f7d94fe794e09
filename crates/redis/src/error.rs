//! Errors of the Redis member operations: which step failed and why.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("no Redis found: {0}")]
    NotInstalled(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("OS user {user}: {why}")]
    User { user: String, why: String },
    #[error("Redis at {addr}: {source}")]
    Redis { addr: String, source: redis::RedisError },
    #[error("Redis at {addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("unexpected answer from Redis: {0}")]
    Answer(String),
}

impl RedisError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RedisError {
        RedisError::Io { path: path.into(), source }
    }
}
