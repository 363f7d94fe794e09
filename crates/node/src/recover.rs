//! `holdfast cluster recover`: the way out when a majority of the voters is gone for good
//! (as etcd's `--force-new-cluster` or Consul's `peers.json`). Offline, on a stopped
//! node's data directory: the node becomes the only voter of a new configuration written
//! after everything its log holds; when it starts it elects itself, commits that
//! configuration, and the leader's duties add the other members back as learners.
use std::path::Path;

use crate::{identity, NodeError};

/// What a recovery would do, for the confirmation prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub node_id: u64,
    pub name: String,
    pub addr: String,
    /// The other nodes the state knows, by name.
    pub others: Vec<String>,
    pub revision: u64,
}

fn running_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("holdfast.pid")).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
    (!zombie && comm.trim().starts_with("holdfast")).then_some(pid)
}

/// Reads the data directory and says what [`recover`] would do; fails when the node is
/// running or the directory is not a member's.
pub fn plan(dir: &Path) -> Result<RecoveryPlan, NodeError> {
    let fail = |m: String| NodeError::DataDir { path: dir.display().to_string(), message: m };
    if let Some(pid) = running_pid(dir) {
        return Err(fail(format!("the node is running (pid {pid}): stop it first, then run `cluster recover` again")));
    }
    let id = identity::load(dir)?.ok_or_else(|| fail("not a holdfast data directory (no node identity)".into()))?;
    let path = dir.join("raft.redb");
    if !path.exists() {
        return Err(fail("no raft.redb: this node never stored the cluster state".into()));
    }
    let (_, sm) = holdfast_raft::store::open(&path).map_err(holdfast_raft::ControlPlaneError::from)?;
    let state = sm.subscribe().borrow().clone();
    let me = state.nodes.get(&id.node_id).ok_or_else(|| {
        fail("this node is not in its own copy of the cluster state (it never finished joining); recover on another node".into())
    })?;
    Ok(RecoveryPlan {
        node_id: id.node_id,
        name: id.name.clone(),
        addr: me.addr.clone(),
        others: state.nodes.values().filter(|n| n.id != id.node_id).map(|n| n.name.clone()).collect(),
        revision: state.revision,
    })
}

/// Makes this node the only voter (see the module doc). Returns the replaced voters' ids.
pub fn recover(dir: &Path, plan: &RecoveryPlan) -> Result<Vec<u64>, NodeError> {
    if let Some(pid) = running_pid(dir) {
        return Err(NodeError::DataDir {
            path: dir.display().to_string(),
            message: format!("the node is running (pid {pid}): stop it first"),
        });
    }
    let done = holdfast_raft::force_single_voter(&dir.join("raft.redb"), plan.node_id, &plan.addr)
        .map_err(holdfast_raft::ControlPlaneError::from)?;
    tracing::warn!(node = %plan.name, index = done.index, old_voters = ?done.old_voters, "control plane recovered: this node is the only voter");
    Ok(done.old_voters)
}
