//! Cluster-wide rolls (`holdfast restart`, a new secret version): the leader lets one
//! replica at a time onto the service's new generation, the next only once the last one
//! it let go runs the new generation and is ready. Every node's agent replaces what it
//! is told, so without this the replicas on different nodes would all restart at once.
//!
//! A replica that never becomes ready (its health check fails on the new version) stops
//! the roll there: the other replicas keep the old generation, and the leader says what
//! it waits for. A replica whose node is down does not hold the roll up (re-placement
//! starts it anew elsewhere). Pure: a function of the state and the instances the nodes
//! report.
use holdfast_placement::NodeId;
use holdfast_state::{ClusterState, Command};

use crate::Note;

/// `(node, service, replica)` → the (generation, ready) its node last reported.
pub type Observed<'a> = dyn Fn(NodeId, &str, u32) -> Option<(u64, bool)> + 'a;

/// The next step of every roll in progress: commands to propose (compare-and-set on the
/// generation), and what each stopped roll waits for. `observed(node, service, replica)`
/// is the (generation, ready) of that instance as its node last reported it.
pub fn step(state: &ClusterState, observed: &Observed<'_>) -> (Vec<Command>, Vec<Note>) {
    let (mut cmds, mut notes) = (Vec::new(), Vec::new());
    for (service, rec) in &state.desired.services {
        let Some(roll) = &rec.rollout else { continue };
        let placed = state.desired.placements.get(service).map(Vec::as_slice).unwrap_or(&[]);
        let total = placed.len() as u32;
        let mut rolled = roll.rolled;
        // Every replica let go so far must be ready on its new generation; go on past
        // replicas on nodes that are down.
        let waiting = (0..rolled.min(total)).find(|&i| {
            let node = placed[i as usize];
            let down = state.nodes.get(&node).is_none_or(|n| n.down);
            let generation = state.instance_generation(service, i).unwrap_or(rec.generation);
            !down && observed(node, service, i) != Some((generation, true))
        });
        match waiting {
            Some(i) => {
                let node = placed[i as usize];
                let wanted = state.instance_generation(service, i).unwrap_or(rec.generation);
                let why = match observed(node, service, i) {
                    None => "not reported running yet".to_string(),
                    Some((g, _)) if g != wanted => format!("still on generation {g}"),
                    Some(_) => "running but not ready: its health check fails".to_string(),
                };
                notes.push(Note::info(format!(
                    "rolling {service}: waiting for {service}-{i} on {} to be ready on generation {wanted} before the next replica ({}); {} of {total} rolled",
                    state.node_name(node),
                    why,
                    rolled.min(total)
                )));
                continue;
            }
            None => rolled += 1,
        }
        let cmd = if rolled > total {
            Command::AdvanceRollout { service: service.clone(), generation: rec.generation, rolled: None }
        } else {
            Command::AdvanceRollout { service: service.clone(), generation: rec.generation, rolled: Some(rolled) }
        };
        cmds.push(cmd);
    }
    (cmds, notes)
}
