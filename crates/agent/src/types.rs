//! Public data types of the agent: what the daemon asks for (`InstanceSpec` and
//! friends) and what it reads back (`InstanceStatus`, `ExitInfo`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identity of one workload instance on this node: replica `replica` of `service`.
/// Displays as `"<service>-<replica>"`, e.g. `web-0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub service: String,
    pub replica: u32,
}

impl InstanceId {
    pub fn new(service: impl Into<String>, replica: u32) -> Self {
        Self { service: service.into(), replica }
    }

    /// Name used for files and cgroups: the display form with every character
    /// outside `[A-Za-z0-9._-]` replaced by `_` (so it is always one safe path
    /// component).
    pub fn file_stem(&self) -> String {
        let raw = self.to_string();
        let mut s: String = raw
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '_' })
            .collect();
        if s.starts_with('.') {
            s.replace_range(0..1, "_");
        }
        s
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.service, self.replica)
    }
}

/// Resource limits enforced through cgroups (when the controllers are usable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU bandwidth in thousandths of a core (1000 = one full core).
    pub cpu_millis: Option<u32>,
    /// Hard memory limit in bytes; the kernel OOM-kills the instance above it.
    pub memory_bytes: Option<u64>,
}

/// What to do when the instance's main process exits on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart on any exit (with backoff).
    #[default]
    Always,
    /// Restart unless it exited with code 0.
    OnFailure,
    /// Never restart: the instance goes to `Exited`.
    Never,
}

/// How readiness of an instance is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthProbe {
    /// `GET http://127.0.0.1:<port><path>`; 2xx and 3xx pass.
    Http { port: String, path: String },
    /// TCP connect to `127.0.0.1:<port>` succeeds.
    Tcp { port: String },
    /// Run `argv` (same env and workdir as the instance); exit code 0 passes.
    Exec { argv: Vec<String> },
}

/// Health checking of an instance. Health only drives readiness: an unhealthy
/// instance is reported `Unready`, it is NOT restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    pub check: HealthProbe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes needed to become ready.
    pub healthy_threshold: u32,
    /// Consecutive failures needed to become unready.
    pub unhealthy_threshold: u32,
    /// Failures within this time after the process started do not count
    /// toward unreadiness.
    pub start_grace: Duration,
}

impl HealthConfig {
    /// A config with common defaults: every 2s, 1s timeout, thresholds 1/3,
    /// no start grace.
    pub fn new(check: HealthProbe) -> Self {
        Self {
            check,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            start_grace: Duration::ZERO,
        }
    }
}

/// Everything needed to run one instance. Produced by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub id: InstanceId,
    /// Bumped by the control plane when the instance must be replaced; an
    /// instance running another generation than the desired one is replaced.
    pub generation: u64,
    /// Program and arguments, already resolved (shell strings arrive as
    /// `["/bin/sh", "-c", s]`). A program without `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Environment of the process. The agent's own environment is NOT
    /// inherited, except `PATH` when this map does not set it.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    /// Named listen ports; each gets its own port from the agent's range.
    /// Env: `PORT` = the first, `PORT_<NAME>` (uppercased, `-` -> `_`) = each.
    pub ports: Vec<String>,
    pub health: Option<HealthConfig>,
    pub limits: Limits,
    pub restart: RestartPolicy,
    /// Signal sent to the process group to stop it (e.g. 15 = SIGTERM).
    pub stop_signal: i32,
    /// Time between `stop_signal` and SIGKILL.
    pub stop_grace: Duration,
    /// The OS user (and group) the process runs as; `None`: the agent's own. PostgreSQL,
    /// for one, refuses to run as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
    /// Send `stop_signal` to the main process only, not its whole process group and
    /// cgroup: for servers that stop their own children in order (PostgreSQL's fast
    /// shutdown lets its WAL senders hand the last WAL to the standbys; a SIGINT to each
    /// of them would cancel that). SIGKILL after the grace period still reaches all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_main_only: bool,
    /// Secrets the process reads, by reference (name and version, never the value):
    /// opened through the agent's [`crate::SecretSource`] each time the process starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretUse>,
    /// Run `argv` (empty: the image's own command) in a container of this image, by the
    /// OCI driver ([`crate::oci`]), instead of on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::oci::OciImage>,
}

/// One secret an instance reads, and how it gets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretUse {
    /// `project/name`.
    pub secret: String,
    /// The version the instance was started for (a restart opens the same one).
    pub version: u64,
    pub target: SecretTarget,
}

/// Where a secret goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretTarget {
    /// An environment variable.
    Env(String),
    /// A file at this absolute path, in the instance's own view of its directory.
    File(PathBuf),
}

/// A numeric OS user and group to run a process as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl InstanceSpec {
    /// A spec with defaults: generation 1, no env/ports/health/limits,
    /// restart `Always`, SIGTERM with 10s grace.
    pub fn new(id: InstanceId, argv: Vec<String>) -> Self {
        Self {
            id,
            generation: 1,
            argv,
            env: BTreeMap::new(),
            workdir: None,
            ports: Vec::new(),
            health: None,
            limits: Limits::default(),
            restart: RestartPolicy::Always,
            stop_signal: 15,
            stop_grace: Duration::from_secs(10),
            run_as: None,
            stop_main_only: false,
            secrets: Vec::new(),
            image: None,
        }
    }
}

/// Lifecycle state of an instance as reported by [`crate::AgentHandle::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Process running, not (yet) ready.
    Starting,
    /// Process running and passing health checks (or has none).
    Ready,
    /// Process running but failing health checks.
    Unready,
    /// Process exited; waiting to restart.
    Backoff,
    /// Like `Backoff`, after `crash_loop_after` consecutive failures. Still
    /// retried (with the capped backoff).
    CrashLoop,
    /// Being stopped (stop or replace in progress).
    Stopping,
    /// Exited and the restart policy says not to restart.
    Exited,
}

/// How the last run of an instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Unix time in milliseconds when the exit was noticed.
    pub at_ms: u64,
    /// Human readable, e.g. `killed by SIGKILL (out of memory: limit 64Mi)`.
    pub description: String,
}

/// Observable status of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: InstanceId,
    pub generation: u64,
    pub pid: Option<u32>,
    pub state: InstanceState,
    pub ready: bool,
    /// Restarts of this generation (crash restarts; a replace starts at 0).
    pub restarts: u32,
    /// Exits of this generation that were out-of-memory kills.
    #[serde(default)]
    pub oom_kills: u32,
    /// Allocated listen ports by name.
    pub ports: BTreeMap<String, u16>,
    /// Unix ms when the current process started.
    pub started_at_ms: Option<u64>,
    pub last_exit: Option<ExitInfo>,
    /// Error of the most recent health probe; `None` once a probe passes.
    pub last_health_error: Option<String>,
    /// True if the current process was re-adopted after an agent restart.
    pub adopted: bool,
    /// From the instance cgroup, when available.
    pub memory_bytes: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
    /// Things the user should know, e.g. limits that could not be enforced.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl InstanceStatus {
    pub(crate) fn new(id: InstanceId, generation: u64) -> Self {
        Self {
            id,
            generation,
            pid: None,
            state: InstanceState::Starting,
            ready: false,
            restarts: 0,
            oom_kills: 0,
            ports: BTreeMap::new(),
            started_at_ms: None,
            last_exit: None,
            last_health_error: None,
            adopted: false,
            memory_bytes: None,
            cpu_usage_ns: None,
            warnings: Vec::new(),
        }
    }
}

/// What [`crate::AgentHandle::shutdown`] does with running workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShutdownMode {
    /// Gracefully stop every instance, remove cgroups and records.
    StopWorkloads,
    /// Leave workloads running and records on disk, for a re-exec upgrade or
    /// a later agent to re-adopt.
    Detach,
}

/// Unix time now, in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_display_and_stem() {
        let id = InstanceId::new("web", 0);
        assert_eq!(id.to_string(), "web-0");
        assert_eq!(id.file_stem(), "web-0");
        assert_eq!(InstanceId::new("a/b c", 2).file_stem(), "a_b_c-2");
        assert_eq!(InstanceId::new("..x", 1).file_stem(), "_.x-1");
    }
}
