//! `holdfast node rm` as a state the leader finishes: the node is marked `removing`
//! (cordoned and draining), its replicas leave as in a drain (or are re-placed at once
//! when it is down), and once nothing is placed on it or moving to it the leader removes
//! it, which revokes its certificate.
use holdfast_state::{ClusterState, Command};

use crate::Note;

/// The removals that can complete now, planned on `state`'s revision (one per tick: each
/// bumps the revision).
pub fn finish(state: &ClusterState) -> Option<(Command, Note)> {
    let node = state.nodes.values().find(|n| n.removing && replicas_on(state, n.id) == 0)?;
    let note = Note::info(format!("node {} is empty: removing it and revoking its certificate", node.name));
    Some((Command::RemoveNode { id: node.id, expected_revision: state.revision }, note))
}

/// Replicas placed on `node`, including those moving to or away from it, and database
/// members placed there (a removal waits for them too: `db_drain` moves them away).
pub fn replicas_on(state: &ClusterState, node: holdfast_placement::NodeId) -> usize {
    let placed: usize = state.desired.placements.values().map(|p| p.iter().filter(|n| **n == node).count()).sum();
    let moving_in: usize = state.desired.moves.values().map(|m| m.values().filter(|n| **n == node).count()).sum();
    placed + moving_in + state.database_members_on(node).len()
}
