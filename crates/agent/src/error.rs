//! Error type of the agent crate.

use std::path::PathBuf;

/// Errors returned by the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration cannot be used.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every port of the range is taken.
    #[error("no free port left in {start}..{end} ({needed} needed)")]
    NoFreePort { start: u16, end: u16, needed: usize },
    /// The workload process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent has been shut down.
    #[error("agent is shut down")]
    ShutDown,
}

impl AgentError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }
}
