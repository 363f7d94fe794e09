//! The cluster's desired state: what the Raft log replicates and every node acts on.
//!
//! - [`model`]: [`ClusterState`] and its parts (services with generations, routes,
//!   placements, nodes). Versioned: everything here is written to disk and the Raft log.
//! - [`command`]: the commands a Raft entry carries and the deterministic
//!   [`ClusterState::apply`].
//! - [`plan`]: pure planning of a change (deploy, scale, restart, remove): from the current
//!   state and the user's request to a human-readable [`plan::Plan`] and the next desired
//!   state, with placement computed by `holdfast-placement`.
//! - [`fencing`]: instance generations from placement epochs: which instance of a
//!   replica is current, and which ones a returning node must stop.
//! - [`database`]: managed databases: placing members (one node each, one architecture
//!   and PostgreSQL major version), endpoint addresses, kept passwords.
//! - [`events`]: what happened, in words, derived from each applied command (every node
//!   derives the same events from the same log).
//! - [`drain`]: moving a draining node's replicas away one at a time, start before stop.
//! - [`voters`]: which nodes are Raft voters, spread over sites.
//! - [`labels`]: node label rules (`--label`, `holdfast node label`) and a node's full
//!   label set as selectors see it.
//!
//! - [`secrets`]: sealed secret versions, who reads them, the roll a new version starts.
//! - [`jobs`]: jobs and their runs (attempts, nodes, results), the schedule cursor that
//!   makes a slot run once.
//! - [`acl`]: API token scopes and what each call needs.
//!
//! No IO, no async, no clocks: the same input always yields the same state.
#![forbid(unsafe_code)]

pub mod acl;
pub mod acme;
pub mod command;
pub mod database;
pub mod drain;
pub mod events;
pub mod fencing;
pub mod jobs;
pub mod labels;
pub mod model;
pub mod plan;
pub mod secrets;
pub mod voters;

pub use command::{Command, Request, Response};
/// The database engines, for crates that read records without depending on the spec.
pub use holdfast_spec::{format_utc_ms, DbEngine};
pub use model::{
    ClusterSettings, ClusterState, DatabaseRecord, DbAddresses, DbCredentials, Desired, NodeRecord, ServiceRecord,
    Switchover, SwitchoverPhase, SyncSet, FORMAT_VERSION, POSTGRES_PORT,
};
pub use plan::{Plan, PlanError};
