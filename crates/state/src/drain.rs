//! Draining a node without dropping a request: its replicas move away one at a time per
//! service, and each move starts the new instance *before* the old one stops.
//!
//! A move is a [`Desired::moves`] entry: replica `i` of service `s` keeps its placement on
//! the draining node while a new instance runs on the target. The leader calls
//! [`plan_drain_step`] on every tick with what the nodes report: a move whose new instance
//! is ready becomes the placement (the old instance stops then), a move that no longer
//! makes sense is dropped, and every service that has no move in progress gets its next
//! replica on a draining node moving. Pure: the same state and readiness give the same
//! result.
use std::collections::BTreeMap;

use holdfast_placement::{Assignment, NodeId};

use crate::model::{ClusterState, Desired, ServiceRecord};
use crate::plan::PlanError;

/// What one drain step changed, for logs and for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainEvent {
    /// A new instance of `service` replica `replica` starts on `to`.
    Started { service: String, replica: u32, from: NodeId, to: NodeId },
    /// The new instance is ready: the replica now lives on `to`, the old one stops.
    Completed { service: String, replica: u32, from: NodeId, to: NodeId },
    /// The move was abandoned (node uncordoned, target lost, service changed).
    Dropped { service: String, replica: u32, to: NodeId },
    /// No node can take the replica.
    Stuck { service: String, replica: u32, from: NodeId, reason: String },
}

impl DrainEvent {
    /// One line for people, with node names from `state`.
    pub fn describe(&self, state: &ClusterState) -> String {
        let name = |id: &NodeId| state.nodes.get(id).map(|n| n.name.clone()).unwrap_or_else(|| format!("node {id}"));
        match self {
            DrainEvent::Started { service, replica, from, to } => {
                format!("{service}-{replica}: starting a new instance on {} (leaving {})", name(to), name(from))
            }
            DrainEvent::Completed { service, replica, from, to } => {
                format!("{service}-{replica}: ready on {}; stopping the one on {}", name(to), name(from))
            }
            DrainEvent::Dropped { service, replica, to } => {
                format!("{service}-{replica}: move to {} abandoned", name(to))
            }
            DrainEvent::Stuck { service, replica, from, reason } => {
                format!("{service}-{replica} cannot leave {}: {reason}", name(from))
            }
        }
    }
}

/// One step of every drain in progress. `ready(node, service, replica, generation)` says
/// whether that instance is running and ready on that node. Returns the next desired
/// state when anything changed, and what changed.
pub fn plan_drain_step(
    state: &ClusterState,
    ready: &dyn Fn(NodeId, &str, u32, u64) -> bool,
) -> (Option<Desired>, Vec<DrainEvent>) {
    let mut desired = state.desired.clone();
    let mut events = Vec::new();
    // 1. Settle the moves in progress.
    for (service, moves) in &state.desired.moves {
        for (&replica, &to) in moves {
            let from = state.desired.placements.get(service).and_then(|p| p.get(replica as usize)).copied();
            let keep = from.is_some_and(|from| move_still_wanted(state, from, to));
            let generation = state.move_target(service, replica).map(|(_, g)| g);
            let done = keep && generation.is_some_and(|g| ready(to, service, replica, g));
            if keep && !done {
                continue;
            }
            if let Some(m) = desired.moves.get_mut(service) {
                m.remove(&replica);
            }
            match (done, from) {
                (true, Some(from)) => {
                    if let Some(slot) = desired.placements.get_mut(service).and_then(|p| p.get_mut(replica as usize)) {
                        *slot = to;
                    }
                    events.push(DrainEvent::Completed { service: service.clone(), replica, from, to });
                }
                _ => events.push(DrainEvent::Dropped { service: service.clone(), replica, to }),
            }
        }
    }
    desired.moves.retain(|_, m| !m.is_empty());
    // 2. Start the next move of every service that has none in progress.
    let draining = |n: &NodeId| state.nodes.get(n).is_some_and(|r| r.draining && !r.down);
    for service in state.desired.placements.keys() {
        if desired.moves.get(service).is_some_and(|m| !m.is_empty()) {
            continue;
        }
        // A replica that just completed its move is no longer on the draining node.
        let current = desired.placements.get(service).cloned().unwrap_or_default();
        let Some(replica) = current.iter().position(draining) else { continue };
        let from = current.get(replica).copied().unwrap_or_default();
        match move_target(state, &desired, service, replica) {
            Ok(to) => {
                desired.moves.entry(service.clone()).or_default().insert(replica as u32, to);
                events.push(DrainEvent::Started { service: service.clone(), replica: replica as u32, from, to });
            }
            Err(reason) => {
                events.push(DrainEvent::Stuck { service: service.clone(), replica: replica as u32, from, reason })
            }
        }
    }
    let changed = desired != state.desired;
    (changed.then_some(desired), events)
}

/// The replicas on draining nodes that no node may take (the drain cannot finish), as the
/// next drain step would report them. Pure; for `status` and `node rm`.
pub fn stuck(state: &ClusterState) -> Vec<DrainEvent> {
    if !state.nodes.values().any(|n| n.draining) {
        return Vec::new();
    }
    let (_, events) = plan_drain_step(state, &|_, _, _, _| false);
    events.into_iter().filter(|e| matches!(e, DrainEvent::Stuck { .. })).collect()
}

/// Where the scheduler would put `replica` of `service` if it had to leave its node, with
/// every other replica staying where it is.
fn move_target(state: &ClusterState, desired: &Desired, service: &str, replica: usize) -> Result<NodeId, String> {
    let mut previous: Assignment = desired.placements.clone();
    // Replicas already moving count where they are going.
    for (s, moves) in &desired.moves {
        for (i, to) in moves {
            if let Some(slot) = previous.get_mut(s).and_then(|p| p.get_mut(*i as usize)) {
                *slot = *to;
            }
        }
    }
    if let Some(slot) = previous.get_mut(service).and_then(|p| p.get_mut(replica)) {
        *slot = NodeId::MAX; // not a node: the replica must be placed anew
    }
    let placed = holdfast_placement::place(&crate::plan::workloads(&desired.services), &state.node_views(), &previous)
        .map_err(|e| PlanError::from(e).to_string())?;
    placed
        .get(service)
        .and_then(|p| p.get(replica))
        .copied()
        .ok_or_else(|| format!("`{service}` has no replica {replica}"))
}

/// A move from `from` to `to` goes on while `from` drains and `to` can take it.
fn move_still_wanted(state: &ClusterState, from: NodeId, to: NodeId) -> bool {
    let source_draining = state.nodes.get(&from).is_some_and(|n| n.draining && !n.down);
    let target_ok = state.nodes.get(&to).is_some_and(|n| !n.down && !n.cordoned);
    source_draining && target_ok && from != to
}

/// The previous assignment for planning: a replica whose node is down or gone while its
/// move was under way counts as being where its new instance already runs.
pub(crate) fn previous_with_moves(state: &ClusterState) -> Assignment {
    let mut previous = state.desired.placements.clone();
    for (service, moves) in &state.desired.moves {
        for (replica, to) in moves {
            let Some(slot) = previous.get_mut(service).and_then(|p| p.get_mut(*replica as usize)) else { continue };
            let source_lost = state.nodes.get(slot).is_none_or(|n| n.down);
            let target_ok = state.nodes.get(to).is_some_and(|n| !n.down);
            if source_lost && target_ok {
                *slot = *to;
            }
        }
    }
    previous
}

/// The moves that survive a re-plan: same service, the replica still on the node it is
/// leaving, and the move still wanted.
pub(crate) fn carry_moves(
    state: &ClusterState,
    services: &BTreeMap<String, ServiceRecord>,
    placements: &Assignment,
) -> BTreeMap<String, BTreeMap<u32, NodeId>> {
    let mut out: BTreeMap<String, BTreeMap<u32, NodeId>> = BTreeMap::new();
    for (service, moves) in &state.desired.moves {
        if !services.contains_key(service) {
            continue;
        }
        for (replica, to) in moves {
            let before = state.desired.placements.get(service).and_then(|p| p.get(*replica as usize));
            let after = placements.get(service).and_then(|p| p.get(*replica as usize));
            if let (Some(b), Some(a)) = (before, after) {
                if a == b && move_still_wanted(state, *a, *to) {
                    out.entry(service.clone()).or_default().insert(*replica, *to);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::model::NodeRecord;
    use holdfast_placement::Capacity;

    fn node(id: u64) -> NodeRecord {
        NodeRecord::new(
            id,
            format!("n{id}"),
            format!("127.0.0.{id}:7946"),
            "s",
            "amd64",
            Capacity { cpu_millis: 4000, memory_bytes: 4 << 30 },
        )
    }

    fn cluster(yaml: &str) -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(&Request::new(Command::UpsertNode(node(id))));
        }
        let stack = holdfast_spec::parse_str("t.yaml", yaml).expect("spec");
        let (_, desired) = crate::plan::plan_deploy(&s, &stack).expect("plan");
        s.apply(&Request::new(Command::SetDesired { expected_revision: s.revision, desired }));
        s
    }

    fn drain(s: &mut ClusterState, id: u64) {
        s.apply(&Request::new(Command::SetNodeFlags { id, cordoned: Some(true), down: None, draining: Some(true) }));
    }

    fn step(s: &mut ClusterState, ready: &dyn Fn(NodeId, &str, u32, u64) -> bool) -> Vec<DrainEvent> {
        let (next, events) = plan_drain_step(s, ready);
        if let Some(desired) = next {
            let r = s.apply(&Request::new(Command::SetDesired { expected_revision: s.revision, desired }));
            assert!(matches!(r, crate::Response::Applied { .. }));
        }
        events
    }

    const TWO: &str = "services:\n  web:\n    run: [x]\n    replicas: 2\n  api:\n    run: [x]\n    replicas: 2\n";

    #[test]
    fn moves_start_before_stop_and_one_at_a_time_per_service() {
        let mut s = cluster(TWO);
        assert_eq!(s.desired.placements["web"], vec![3, 1]);
        assert_eq!(s.desired.placements["api"], vec![1, 2]);
        drain(&mut s, 1);
        assert_eq!(
            crate::plan::plan_reschedule(&s).expect("plan").desired,
            None,
            "a draining node is not emptied at once"
        );
        let never = |_: NodeId, _: &str, _: u32, _: u64| false;
        let ev = step(&mut s, &never);
        let started: Vec<_> = ev.iter().filter(|e| matches!(e, DrainEvent::Started { .. })).collect();
        assert_eq!(started.len(), 2, "one move per service: {ev:?}");
        assert_eq!(s.desired.placements["web"][1], 1, "the old instance keeps its place until the new one is ready");
        let (to, generation) = s.move_target("web", 1).expect("web-1 moving");
        assert_eq!(to, 2, "to the node without a web replica");
        assert!(s.instances_on(2).iter().any(|i| i.service == "web" && i.moving_in));
        assert!(step(&mut s, &never).is_empty(), "nothing happens while the new instance is not ready");
        let ready = move |n: NodeId, svc: &str, r: u32, g: u64| n == to && svc == "web" && r == 1 && g == generation;
        let ev = step(&mut s, &ready);
        assert!(ev.contains(&DrainEvent::Completed { service: "web".into(), replica: 1, from: 1, to: 2 }), "{ev:?}");
        assert_eq!(s.desired.placements["web"], vec![3, 2]);
        assert_eq!(s.instance_generation("web", 1), Some(generation), "the new instance is not restarted");
        assert!(s.is_stale(1, "web", 1, s.desired.services["web"].generation));
        assert_eq!(s.desired.placements["api"][0], 1, "api's move is still waiting for its instance");
    }

    #[test]
    fn uncordon_drops_the_move_and_a_dead_source_hands_over_to_the_target() {
        let mut s = cluster(TWO);
        drain(&mut s, 1);
        let never = |_: NodeId, _: &str, _: u32, _: u64| false;
        step(&mut s, &never);
        let mut undrained = s.clone();
        undrained.apply(&Request::new(Command::SetNodeFlags {
            id: 1,
            cordoned: Some(false),
            down: None,
            draining: Some(false),
        }));
        let ev = step(&mut undrained, &never);
        assert!(ev.iter().all(|e| matches!(e, DrainEvent::Dropped { .. })), "{ev:?}");
        assert!(undrained.desired.moves.is_empty());
        assert_eq!(undrained.desired.placements["web"], vec![3, 1]);
        // The draining node dies: its replicas go where their new instances run.
        let target = s.move_target("web", 1).expect("moving").0;
        s.apply(&Request::new(Command::SetNodeFlags { id: 1, cordoned: None, down: Some(true), draining: None }));
        let desired = crate::plan::plan_reschedule(&s).expect("plan").desired.expect("something moves");
        assert_eq!(desired.placements["web"][1], target);
        assert!(desired.moves.is_empty());
    }

    #[test]
    fn a_deploy_during_a_drain_keeps_the_move_and_the_draining_replicas() {
        let mut s = cluster(TWO);
        drain(&mut s, 1);
        step(&mut s, &|_, _, _, _| false);
        let stack = holdfast_spec::parse_str(
            "t.yaml",
            "services:\n  web:\n    run: [x]\n    replicas: 3\n  api:\n    run: [x]\n    replicas: 2\n",
        )
        .expect("spec");
        let (_, desired) = crate::plan::plan_deploy(&s, &stack).expect("plan");
        assert_eq!(desired.placements["web"][1], 1, "still draining gradually");
        assert_eq!(desired.placements["web"].iter().filter(|n| **n == 1).count(), 1, "nothing new on a cordoned node");
        assert_eq!(desired.moves.get("web").and_then(|m| m.get(&1)).copied(), Some(2));
    }

    #[test]
    fn a_drain_with_nowhere_to_go_says_why() {
        let mut s = cluster("services:\n  web:\n    run: [x]\n    replicas: 1\n");
        for id in 1..=3 {
            drain(&mut s, id);
        }
        assert_eq!(stuck(&s).len(), 1, "the dry step reports it too");
        let ev = step(&mut s, &|_, _, _, _| false);
        assert!(
            matches!(&ev[..], [DrainEvent::Stuck { reason, .. }] if reason.contains("no schedulable node")),
            "{ev:?}"
        );
    }
}
