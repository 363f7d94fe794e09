//! The one error type of the testbed: every fallible call returns [`TestbedError`].

use std::time::Duration;

use crate::Mode;

/// Everything that can go wrong while building, breaking or tearing down a testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A command-line tool the testbed needs is not installed. The testbed never installs
    /// anything itself.
    #[error("required tool `{tool}` not found in PATH (install the Debian package `{package}`)")]
    ToolMissing {
        /// The program name, e.g. `nft`.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// An external command ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Exit status as text.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the testbed was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The fault or operation needs network namespaces (or cgroups) that this testbed does
    /// not have.
    #[error("{operation} is not available in {mode:?} mode")]
    Unsupported {
        /// The operation asked for.
        operation: &'static str,
        /// The mode the testbed runs in.
        mode: Mode,
    },
    /// The configuration is not usable (bad name, too many nodes, unknown site, ...).
    #[error("invalid testbed configuration: {0}")]
    Config(String),
    /// A node index out of range.
    #[error("no node with index {index} (the testbed has {count} nodes)")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes there are.
        count: usize,
    },
    /// A site name that is not part of the testbed.
    #[error("no site named `{0}`")]
    NoSuchSite(String),
    /// All per-testbed subnets (10.99.1.0/24 ..= 10.99.250.0/24) are taken by live testbeds.
    #[error("no free testbed id: {0} testbeds are alive on this machine")]
    NoFreeId(usize),
    /// Something did not happen within its time bound.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// `latency_between_sites` was called while a [`crate::LatencyGuard`] is still alive.
    #[error("latency is already active on this testbed; drop the LatencyGuard first")]
    LatencyActive,
}

impl TestbedError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestbedError::Io { what: what.into(), source }
    }
}

/// Short alias used inside the crate.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;
