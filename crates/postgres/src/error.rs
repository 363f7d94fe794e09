//! Errors of the PostgreSQL member operations: which step failed and why, with the
//! command's own output where there is one.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("no PostgreSQL found: {0}")]
    NotInstalled(String),
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} failed ({status}): {output}")]
    Command { program: String, status: String, output: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("OS user {user}: {why}")]
    User { user: String, why: String },
    #[error("PostgreSQL at {socket}: {source}")]
    Sql { socket: String, source: tokio_postgres::Error },
    #[error("PostgreSQL at {socket} did not answer within {secs} s")]
    Timeout { socket: String, secs: u64 },
    #[error("unexpected answer from PostgreSQL: {0}")]
    Answer(String),
}

impl PgError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PgError {
        PgError::Io { path: path.into(), source }
    }
}
