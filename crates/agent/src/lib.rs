//! holdfast-agent: the node agent's process driver.
//!
//! It owns the workload instances running on THIS machine: it starts them
//! (own session/process group, env with allocated ports, output straight
//! into a log file, cgroup limits), supervises them (exit detection,
//! restart policy with exponential backoff, crash-loop detection), checks
//! their health (HTTP/TCP/exec probes drive readiness only — unhealthy
//! instances are reported `Unready`, never restarted), stops them without
//! leaving orphans, rotates their logs, and re-adopts them after the daemon
//! crashes or re-execs itself (records in `state_dir/instances`).
//!
//! Behaviour worth knowing:
//! * Nothing is started or stopped before the first `set_desired`, so
//!   re-adopted instances survive until the daemon says what it wants.
//! * When an instance's main process exits, whatever is left in its process
//!   group and cgroup is SIGKILLed before the restart: no orphans.
//! * A restart keeps the instance's ports (if still free); a generation
//!   change (`Replace`) resets `restarts` to 0.
//! * Workloads get their spec env plus `PATH` (the agent's, unless the spec
//!   sets one), `PORT`/`PORT_<NAME>` and `HOLDFAST_SERVICE`/`_INSTANCE`/
//!   `_REPLICA`; the rest of the agent's environment is not inherited.
//! * Instances in backoff when the agent dies are started afresh by the next
//!   agent (their record points to a dead pid); exited (`Never`) instances
//!   are restored as `Exited`.
//! * Dropping every `AgentHandle` without `shutdown` behaves like `Detach`
//!   once the runtime goes away.
//!
//! It knows nothing about YAML, Raft or HTTP APIs: the daemon hands it the
//! desired set of [`InstanceSpec`]s with [`AgentHandle::set_desired`] and the
//! agent reconciles toward it continuously. The decision is the pure
//! [`reconcile()`] function; IO lives in the driver modules.
//!
//! Module map: `reconcile` (pure decision), `backoff` (pure restart math),
//! `ports` (port allocation), `logs` (log files and rotation), `cgroup`
//! (v1/v2 cgroups), `oci` (the OCI driver: an instance with an image runs
//! in a container under podman), `proc` (process table, signals, exit watching),
//! `spawn` + `preexec` (launching), `health` (probes), `record`
//! (persistence), `instance` (one instance's supervisor), `agent` (the
//! agent, its handle and the reconciling supervisor), `usage` (pure: the
//! per-instance CPU and memory history rings).

mod agent;
mod backoff;
mod cgroup;
mod config;
mod error;
mod health;
mod instance;
pub mod logs;
pub mod oci;
pub mod osuser;
pub use logs::utc_timestamp;
mod ports;
mod preexec;
mod proc;
pub mod reconcile;
mod record;
mod secrets;
mod spawn;
mod types;
pub mod usage;

pub use agent::{Agent, AgentHandle};
pub use config::AgentConfig;
pub use error::AgentError;
pub use reconcile::{reconcile, Action, ObservedInstance};
pub use secrets::{SecretSource, SharedSecretSource};
pub use types::{
    ExitInfo, HealthConfig, HealthProbe, InstanceId, InstanceSpec, InstanceState, InstanceStatus, Limits,
    RestartPolicy, RunAs, SecretTarget, SecretUse, ShutdownMode,
};
