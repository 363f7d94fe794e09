//! Agent configuration (`AgentConfig`) and its defaults.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration of one node agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent's own persistent directory: instance records in
    /// `state_dir/instances`, logs in `state_dir/logs`. Must be set.
    pub state_dir: PathBuf,
    /// Listen ports handed to instances. Ports held by this agent's instances
    /// or failing a bind test on 127.0.0.1 are skipped.
    pub port_range: Range<u16>,
    /// Rotate an instance log file above this size (checked about every second).
    pub log_max_bytes: u64,
    /// Rotated files kept: `web-0.log.1` (newest) .. `web-0.log.<log_keep>`.
    pub log_keep: usize,
    /// Unique per node/agent; instances live in `<root>/<cgroup_name>/<instance>`.
    pub cgroup_name: String,
    /// First restart delay; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Cap of the restart delay.
    pub backoff_max: Duration,
    /// A run at least this long resets the consecutive-failure count.
    pub backoff_reset: Duration,
    /// Consecutive failures after which the state is `CrashLoop`.
    pub crash_loop_after: u32,
    /// Where and how instances with an image run (the OCI driver).
    pub oci: crate::oci::OciConfig,
}

impl AgentConfig {
    /// Defaults with the two values that have no sensible default.
    pub fn new(state_dir: impl Into<PathBuf>, cgroup_name: impl Into<String>) -> Self {
        let state_dir = state_dir.into();
        let oci = crate::oci::OciConfig::under(&state_dir);
        Self { state_dir, cgroup_name: cgroup_name.into(), oci, ..Self::default() }
    }

    pub(crate) fn instances_dir(&self) -> PathBuf {
        self.state_dir.join("instances")
    }

    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

impl Default for AgentConfig {
    /// Note: `state_dir` is empty and must be set by the caller
    /// (`Agent::start` rejects an empty one).
    fn default() -> Self {
        Self {
            state_dir: PathBuf::new(),
            port_range: 20000..30000,
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 3,
            cgroup_name: "holdfast".to_string(),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            backoff_reset: Duration::from_secs(10),
            crash_loop_after: 5,
            oci: crate::oci::OciConfig::under(std::path::Path::new("")),
        }
    }
}
