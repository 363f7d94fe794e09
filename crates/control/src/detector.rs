//! The failure detector: a node silent for `suspect_after` is suspect (an event; database
//! sync lists stop waiting for it), silent for `down_after` it is declared down (its
//! replicas are placed elsewhere), a down node heard from again within `suspect_after` is
//! back.
//!
//! A new leader knows nothing of anyone's silence, so it gives every node `down_after`
//! from the moment it took over before judging it.
use std::collections::BTreeMap;

use holdfast_placement::NodeId;
use holdfast_state::{ClusterSettings, ClusterState};

use crate::Millis;

/// A change of a node's `down` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub node: NodeId,
    pub down: bool,
    /// How long the node has been silent (from the leader's point of view).
    pub silent_ms: Millis,
}

/// How long `node` has been silent at `now`: since its last heartbeat, or since this
/// leader took over if that is later.
pub fn silence(seen_at: Option<Millis>, leader_since: Millis, now: Millis) -> Millis {
    let last = seen_at.unwrap_or(leader_since).max(leader_since);
    now.saturating_sub(last)
}

/// The verdicts that change a node's flag. `me` (the leader) is alive by definition.
pub fn verdicts(
    state: &ClusterState,
    me: NodeId,
    seen: &BTreeMap<NodeId, Millis>,
    leader_since: Millis,
    now: Millis,
) -> Vec<Verdict> {
    let ClusterSettings { suspect_after_ms, down_after_ms, .. } = state.settings;
    let mut out = Vec::new();
    for (id, node) in &state.nodes {
        if *id == me {
            if node.down {
                out.push(Verdict { node: *id, down: false, silent_ms: 0 });
            }
            continue;
        }
        let silent_ms = silence(seen.get(id).copied(), leader_since, now);
        if !node.down && silent_ms >= down_after_ms {
            out.push(Verdict { node: *id, down: true, silent_ms });
        } else if node.down && silent_ms < suspect_after_ms {
            out.push(Verdict { node: *id, down: false, silent_ms });
        }
    }
    out
}

/// A node turning suspect (silent for `suspect_after` but not yet down) or answering
/// again before it was declared down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspicion {
    pub node: NodeId,
    pub suspect: bool,
    pub silent_ms: Millis,
}

/// Which nodes are suspect now, and the changes from `was` (the set at the last tick).
/// A suspect node that went down leaves the set without a change: its down verdict says
/// it. `me` is never suspect.
pub fn suspicion(
    state: &ClusterState,
    me: NodeId,
    seen: &BTreeMap<NodeId, Millis>,
    leader_since: Millis,
    now: Millis,
    was: &std::collections::BTreeSet<NodeId>,
) -> (std::collections::BTreeSet<NodeId>, Vec<Suspicion>) {
    let suspect_after = state.settings.suspect_after_ms;
    let mut now_suspect = std::collections::BTreeSet::new();
    let mut changes = Vec::new();
    for (id, node) in &state.nodes {
        if *id == me || node.down {
            continue;
        }
        let silent_ms = silence(seen.get(id).copied(), leader_since, now);
        let suspect = silent_ms >= suspect_after;
        if suspect {
            now_suspect.insert(*id);
        }
        if suspect != was.contains(id) {
            changes.push(Suspicion { node: *id, suspect, silent_ms });
        }
    }
    (now_suspect, changes)
}

/// `alive`, `suspect` or `down`, as `holdfast nodes` shows a node.
pub fn node_state(down: bool, silent_ms: Option<Millis>, settings: &ClusterSettings) -> &'static str {
    if down {
        "down"
    } else if silent_ms.is_some_and(|ms| ms >= settings.suspect_after_ms) {
        "suspect"
    } else {
        "alive"
    }
}
