//! The fencing verdict in a heartbeat answer: which of the sender's instances are
//! superseded by a newer placement, so it stops them at once — before its own Raft log
//! has caught up (see `holdfast_state::fencing`).
use holdfast_placement::NodeId;
use holdfast_state::ClusterState;

use crate::InstanceReport;

/// The instances `node` reports that the leader's `state` knows to be superseded, as
/// (service, replica, generation).
pub fn stale(state: &ClusterState, node: NodeId, instances: &[InstanceReport]) -> Vec<(String, u32, u64)> {
    instances
        .iter()
        .filter(|i| state.is_stale(node, &i.service, i.replica, i.generation))
        .map(|i| (i.service.clone(), i.replica, i.generation))
        .collect()
}
