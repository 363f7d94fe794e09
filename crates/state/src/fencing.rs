//! Fencing by generation numbers: which instance of a replica is the current one.
//!
//! Every replica slot has an *epoch*: the revision at which it was assigned to the node it
//! is on now (and every move to another node has its own). An instance's generation is
//! the larger of its service's generation and that epoch, so it changes exactly when the
//! instance must be a new process: the spec changed, or the replica went to another node
//! (even back to one it ran on before). Generations only grow with the revision.
//!
//! A node whose view is old (it was cut off, frozen, or powered off while its replicas
//! were placed elsewhere) may still run an instance of an older generation. The leader
//! tells it so in its first heartbeat answer ([`ClusterState::is_stale`]), before the node
//! has even caught up with the Raft log, and the node stops it; no other node routes to
//! an instance whose generation is not the current one.
use std::collections::BTreeMap;

use holdfast_placement::NodeId;

use crate::model::{ClusterState, Desired, Epochs};

/// One instance a node should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedInstance {
    pub service: String,
    pub replica: u32,
    pub generation: u64,
    /// True for the new instance of a replica being moved here from a draining node.
    pub moving_in: bool,
}

impl ClusterState {
    /// The generation of replica `replica` of `service` where it is placed now.
    pub fn instance_generation(&self, service: &str, replica: u32) -> Option<u64> {
        let record = self.desired.services.get(service)?;
        self.desired.placements.get(service)?.get(replica as usize)?;
        let epoch = self.epochs.slots.get(service).and_then(|e| e.get(replica as usize)).copied().unwrap_or(0);
        Some(record.replica_generation(replica).max(epoch))
    }

    /// Where replica `replica` of `service` is being moved to, and the generation of the
    /// instance started there.
    pub fn move_target(&self, service: &str, replica: u32) -> Option<(NodeId, u64)> {
        let record = self.desired.services.get(service)?;
        let node = *self.desired.moves.get(service)?.get(&replica)?;
        let epoch = self.epochs.moves.get(service).and_then(|m| m.get(&replica)).copied().unwrap_or(0);
        Some((node, record.generation.max(epoch)))
    }

    /// Every instance `node` should run: its placed replicas and the replicas moving to it.
    pub fn instances_on(&self, node: NodeId) -> Vec<PlacedInstance> {
        let mut out = Vec::new();
        for (service, nodes) in &self.desired.placements {
            for (i, n) in nodes.iter().enumerate() {
                if *n != node {
                    continue;
                }
                if let Some(generation) = self.instance_generation(service, i as u32) {
                    out.push(PlacedInstance {
                        service: service.clone(),
                        replica: i as u32,
                        generation,
                        moving_in: false,
                    });
                }
            }
            let moving: Vec<u32> =
                self.desired.moves.get(service).map(|m| m.keys().copied().collect()).unwrap_or_default();
            for replica in moving {
                if let Some((target, generation)) = self.move_target(service, replica) {
                    if target == node {
                        out.push(PlacedInstance { service: service.clone(), replica, generation, moving_in: true });
                    }
                }
            }
        }
        out
    }

    /// True when `node` running `generation` of the replica is what this state wants.
    pub fn is_current(&self, node: NodeId, service: &str, replica: u32, generation: u64) -> bool {
        if let Some(job) = crate::jobs::job_of_instance(service) {
            // A job run's instance: current while its run is active on that node, for its
            // attempt.
            return crate::jobs::active_run(self, job, u64::from(replica))
                .is_some_and(|r| r.node == Some(node) && r.generation == generation);
        }
        let placed = self.desired.placements.get(service).and_then(|n| n.get(replica as usize)) == Some(&node)
            && self.instance_generation(service, replica) == Some(generation);
        placed || self.move_target(service, replica) == Some((node, generation))
    }

    /// True when an instance `node` reports is known to be superseded: this state was
    /// written after that instance's generation was assigned, and does not want it. An
    /// instance newer than this state (the reporting node has applied more of the log)
    /// is never judged stale.
    pub fn is_stale(&self, node: NodeId, service: &str, replica: u32, generation: u64) -> bool {
        generation <= self.revision && !self.is_current(node, service, replica, generation)
    }
}

/// The epochs after `next` is applied at `revision`: slots and moves that keep their node
/// keep their epoch; a move that becomes the placement hands over its epoch (its instance
/// is already running there); anything else starts at `revision`.
pub(crate) fn next_epochs(before: &ClusterState, next: &Desired, revision: u64) -> Epochs {
    let old = &before.desired;
    let mut epochs = Epochs::default();
    for (service, nodes) in &next.placements {
        let old_nodes = old.placements.get(service);
        let old_epochs = before.epochs.slots.get(service);
        let old_moves = old.moves.get(service);
        let slots = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let idx = i as u32;
                if old_nodes.and_then(|o| o.get(i)) == Some(node) {
                    old_epochs.and_then(|e| e.get(i)).copied().unwrap_or(0)
                } else if old_moves.and_then(|m| m.get(&idx)) == Some(node) {
                    before.epochs.moves.get(service).and_then(|m| m.get(&idx)).copied().unwrap_or(revision)
                } else {
                    revision
                }
            })
            .collect();
        epochs.slots.insert(service.clone(), slots);
    }
    for (service, moves) in &next.moves {
        let mut out = BTreeMap::new();
        for (replica, node) in moves {
            let same = old.moves.get(service).and_then(|m| m.get(replica)) == Some(node);
            let epoch = if same {
                before.epochs.moves.get(service).and_then(|m| m.get(replica)).copied().unwrap_or(revision)
            } else {
                revision
            };
            out.insert(*replica, epoch);
        }
        epochs.moves.insert(service.clone(), out);
    }
    epochs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::model::ServiceRecord;

    fn record(generation: u64) -> ServiceRecord {
        let spec = holdfast_spec::ServiceSpec::new(holdfast_spec::RunCommand::Argv(vec!["x".into()]));
        ServiceRecord::new("p".into(), spec, std::net::Ipv4Addr::new(127, 64, 0, 1), generation)
    }

    fn set(state: &mut ClusterState, placements: Vec<u64>, moves: &[(u32, u64)]) {
        let mut desired = state.desired.clone();
        if desired.services.is_empty() {
            desired.services.insert("web".into(), record(state.revision + 1));
        }
        desired.placements.insert("web".into(), placements);
        desired.moves.clear();
        if !moves.is_empty() {
            desired.moves.insert("web".into(), moves.iter().copied().collect());
        }
        let r = state.apply(&Request::new(Command::SetDesired { expected_revision: state.revision, desired }));
        assert!(matches!(r, crate::Response::Applied { .. }), "{r:?}");
    }

    #[test]
    fn a_replica_that_moves_gets_a_new_generation_and_the_old_one_is_stale() {
        let mut s = ClusterState::default();
        set(&mut s, vec![1, 2], &[]);
        let g0 = s.instance_generation("web", 0).expect("placed");
        assert_eq!(g0, 1);
        assert!(s.is_current(1, "web", 0, g0));
        // Node 1 is lost: replica 0 goes to node 3.
        set(&mut s, vec![3, 2], &[]);
        let g1 = s.instance_generation("web", 0).expect("placed");
        assert!(g1 > g0);
        assert!(s.is_stale(1, "web", 0, g0), "node 1's old instance is fenced");
        assert!(!s.is_stale(3, "web", 0, g1));
        assert_eq!(s.instance_generation("web", 1), Some(1), "an untouched replica keeps its generation");
        // Replica 0 comes back to node 1: a new instance, and the one that ran through
        // the outage is still stale.
        set(&mut s, vec![1, 2], &[]);
        let g2 = s.instance_generation("web", 0).expect("placed");
        assert!(g2 > g1);
        assert!(s.is_stale(1, "web", 0, g0));
        assert!(s.is_current(1, "web", 0, g2));
    }

    #[test]
    fn a_committed_move_keeps_the_generation_of_the_instance_already_running() {
        let mut s = ClusterState::default();
        set(&mut s, vec![1, 2], &[]);
        set(&mut s, vec![1, 2], &[(0, 3)]);
        let (target, gm) = s.move_target("web", 0).expect("moving");
        assert_eq!(target, 3);
        let on3 = s.instances_on(3);
        assert_eq!(on3.len(), 1);
        assert!(on3[0].moving_in);
        assert!(s.is_current(1, "web", 0, 1), "the old instance keeps running during the move");
        assert!(s.is_current(3, "web", 0, gm));
        set(&mut s, vec![3, 2], &[]);
        assert_eq!(s.instance_generation("web", 0), Some(gm), "no restart when the move completes");
        assert!(s.is_stale(1, "web", 0, 1));
    }

    #[test]
    fn instances_newer_than_the_judging_state_are_never_stale() {
        let mut s = ClusterState::default();
        set(&mut s, vec![1], &[]);
        assert!(!s.is_stale(2, "web", 0, s.revision + 5));
        assert!(s.is_stale(2, "web", 0, s.revision));
        assert!(s.is_stale(1, "gone", 0, 1), "an instance of a removed service is stale");
    }
}
