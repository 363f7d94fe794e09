//! Node records as the nodes report them, and `--label` flags applied once per start.
//!
//! A node knows its own address, site, architecture, capacity and certificate; the
//! cluster owns its flags (cordoned, draining, removing, down) and its labels. A report
//! never changes what the cluster owns, never registers a node that did not join (except
//! the leader itself, the founder's first registration), never brings back a removed
//! node, and never clears a recorded certificate fingerprint.
use std::collections::BTreeSet;

use holdfast_placement::NodeId;
use holdfast_state::labels::{format_labels, user_label_problem};
use holdfast_state::{ClusterState, Command, NodeRecord};

use crate::{NodeReport, Note};

/// The record to write for `reported`, or None when the state already has it.
pub fn merge(state: &ClusterState, me: NodeId, reported: &NodeRecord) -> Option<NodeRecord> {
    if state.removed_nodes.contains_key(&reported.id) {
        return None;
    }
    match state.nodes.get(&reported.id) {
        Some(existing) => {
            let mut rec = reported.clone();
            rec.cordoned = existing.cordoned;
            rec.draining = existing.draining;
            rec.down = existing.down;
            rec.removing = existing.removing;
            rec.labels = existing.labels.clone();
            rec.labels_start_id = existing.labels_start_id;
            if rec.cert_fingerprint.is_empty() {
                rec.cert_fingerprint = existing.cert_fingerprint.clone();
            }
            (&rec != existing).then_some(rec)
        }
        None if reported.id == me => Some(reported.clone()),
        None => None,
    }
}

/// The `--label` flags of `report`'s start, when that start's flags were not applied yet:
/// the command, and a note per flag that breaks the label rules (those are left out).
pub fn start_labels(state: &ClusterState, report: &NodeReport) -> Option<(Command, Vec<Note>)> {
    let start = report.start_labels.as_ref()?;
    let node = state.nodes.get(&report.record.id)?;
    if node.labels_start_id == start.start_id {
        return None;
    }
    let mut notes = Vec::new();
    let set = start
        .labels
        .iter()
        .filter(|(k, v)| match user_label_problem(k, Some(v)) {
            Some(problem) => {
                notes.push(Note::warn(format!("node {}: ignoring --label {k}={v}: {problem}", node.name)));
                false
            }
            None => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    notes.push(Note::info(format!("node {}: applying its --label flags {}", node.name, format_labels(&set))));
    Some((Command::SetNodeLabels { id: node.id, set, remove: BTreeSet::new(), start_id: Some(start.start_id) }, notes))
}
