//! The leader's decisions, as pure functions.
//!
//! Every duty the leader has — judging which nodes are down, writing the node records the
//! nodes report, applying `--label` flags once per start, re-placing replicas, stepping
//! drains, finishing node removals, and keeping the Raft membership safe — is decided
//! here from (replicated state, observations, time passed in), and comes back as a list
//! of actions. The node crate runs [`Engine::tick`] on the leader, executes the actions
//! and reports how that went; nothing here reads a clock, touches a socket or awaits.
//!
//! - [`detector`]: the failure detector (node verdicts from heartbeat silence).
//! - [`records`]: merging the records nodes report about themselves with the flags and
//!   labels the cluster owns, and `--label` flags applied once per node start.
//! - [`membership`]: Raft learners and voters: every member a learner first, promoted
//!   only once alive and caught up for a while; voters spread over sites.
//! - [`removal`]: `holdfast node rm` as a state the leader finishes.
//! - [`fence`]: the fencing verdict the leader puts in a heartbeat answer.
//! - [`database`]: database failover and switchover: which standby to promote, when,
//!   and when it is not safe to.
//! - `db_drain`: database members leaving a draining node (the primary by a switchover,
//!   standbys one at a time once the others carry the commits).
//! - `db_restart`: rolling restarts for settings that need one (standbys one at a time,
//!   then the primary by a switchover).
//! - [`jobs`]: job schedules (each slot once, across leader changes), placing runs,
//!   following attempts, timeouts, retries with backoff.
//! - [`rollout`]: cluster-wide rolls (restart, a new secret version), one replica at a
//!   time, each ready before the next goes.
//! - [`engine`]: [`Engine::tick`] sequences all of them against one simulated state, so
//!   each proposal is planned on the revision the previous one produces.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use holdfast_placement::NodeId;
use holdfast_state::labels::StartLabels;
use holdfast_state::Command;
use serde::{Deserialize, Serialize};

pub mod acme;
pub mod database;
mod db_drain;
mod db_restart;
pub mod detector;
pub mod edges;
pub mod engine;
pub mod fence;
pub mod jobs;
pub mod membership;
pub mod records;
pub mod removal;
pub mod rollout;

#[cfg(test)]
mod tests;

pub use engine::Engine;

/// Milliseconds on the runner's monotonic clock (any origin; only differences count).
pub type Millis = u64;

/// One instance as a node reports it: enough to judge readiness and fencing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub service: String,
    pub replica: u32,
    pub generation: u64,
    /// Its process is running.
    #[serde(default)]
    pub running: bool,
    /// It exited for good (a job run): the exit code, if any, and how, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<(Option<i32>, String)>,
    pub ready: bool,
}

/// What the leader last heard from one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// When the last heartbeat arrived.
    pub seen_at: Millis,
    /// The node's record as it describes itself (the cluster's flags and labels are
    /// kept when it is merged).
    pub record: holdfast_state::NodeRecord,
    pub instances: Vec<InstanceReport>,
    pub start_labels: Option<StartLabels>,
    /// The database members on the node, as its last heartbeat reported them.
    pub databases: Vec<MemberReport>,
}

/// One database member as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    pub database: String,
    pub member: u32,
    /// The term this member was configured for by its node.
    pub term: u64,
    pub role: MemberRole,
    pub timeline: u32,
    /// A primary's `pg_current_wal_flush_lsn()`; a replica's
    /// `pg_last_wal_receive_lsn()` (flushed on the standby).
    pub lsn: u64,
    pub replay_lsn: u64,
    /// PostgreSQL answered the node's last probe.
    pub answering: bool,
    /// A replica streams WAL from the primary.
    pub streaming: bool,
    /// A primary: the members its `synchronous_standby_names` names, as loaded.
    pub sync_applied: Option<Vec<u32>>,
    /// When not answering: since when, on the node's own clock (informational).
    pub down_since: Option<Millis>,
    /// A setting changed in its configuration waits for a restart.
    pub pending_restart: bool,
    /// The database generation whose configuration the member had loaded when probed;
    /// `None`: not said.
    #[serde(default)]
    pub config_generation: Option<u64>,
}

/// What a member is doing, as its node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Primary,
    Replica,
    Starting,
    Stopped,
    /// PostgreSQL stopped because the node lost its lease (or for a switchover).
    Fenced,
    Failed,
}

/// The Raft membership as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// Everything the leader observed that is not in the replicated state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Per node, its last heartbeat (the leader's own report is refreshed every tick).
    pub nodes: BTreeMap<NodeId, NodeReport>,
    pub membership: Membership,
    /// Per member, how many log entries it is behind the leader's log (absent: not known
    /// to be replicating).
    pub lag: BTreeMap<NodeId, u64>,
}

/// One tick's input.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub now: Millis,
    /// The leader (this node).
    pub me: NodeId,
    pub state: &'a holdfast_state::ClusterState,
    pub observations: &'a Observations,
    /// The CA this node can record when the state has none (the founder holds the key).
    pub own_ca: Option<&'a holdfast_state::model::CaRecord>,
    /// The leader's wall clock (ms since the Unix epoch, UTC): job schedules and the times
    /// runs record. Only schedules read it; every other duty uses `now`.
    pub wall_ms: u64,
}

/// A change of the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Replicate the log to a node that does not vote (yet).
    AddLearner { id: NodeId, addr: String },
    /// Members that are no longer nodes of the cluster.
    Remove(BTreeSet<NodeId>),
    /// Exactly these vote; the other members stay learners.
    SetVoters(BTreeSet<NodeId>),
}

/// How loud a note is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    /// Needs a human's attention.
    Warn,
}

/// Something for the log, said once where it is decided.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub level: Level,
    pub text: String,
}

impl Note {
    pub fn info(text: impl Into<String>) -> Note {
        Note { level: Level::Info, text: text.into() }
    }
    pub fn warn(text: impl Into<String>) -> Note {
        Note { level: Level::Warn, text: text.into() }
    }
}

/// Something the leader saw that changes no state but belongs in the event history (a
/// node turning suspect and answering again). Recorded in the leader's own journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub level: holdfast_state::events::Level,
    /// A stable word for scripts (`node-suspect`, `node-answers`).
    pub kind: &'static str,
    /// What it is about (`node n2`).
    pub subject: String,
    pub message: String,
}

/// One tick's decisions, to be executed in order: the proposals one after the other
/// (each planned on the state the previous one leaves, so a conflict stops the rest),
/// then — only when every proposal applied — the membership changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub proposals: Vec<Command>,
    pub membership: Vec<MembershipChange>,
    pub notes: Vec<Note>,
    /// For the event history.
    pub observed: Vec<Observed>,
}
