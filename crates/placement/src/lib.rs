//! Placement: a pure, deterministic function from (workloads, nodes, previous assignment)
//! to a new assignment of every replica to a node.
//!
//! Invariants, all checked by tests:
//! - no node is ever filled beyond its CPU or memory capacity;
//! - replicas of one service are spread: two share a node only when no other node fits;
//! - a replica that may stay where it is stays there (minimal moves), also on a cordoned
//!   node that is alive ([`NodeView::keeps_replicas`]);
//! - the same input always gives the same output, and placing an assignment again changes nothing.
//!
//! This crate does no IO and knows nothing of Raft, processes or the network.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifier of a node, the same number Raft uses.
pub type NodeId = u64;

/// CPU (millicores) and memory (bytes): a request or a capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Capacity {
    fn fits_in(&self, free: &Capacity) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }
    fn saturating_sub(&self, other: &Capacity) -> Capacity {
        Capacity {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
    fn add(&self, other: &Capacity) -> Capacity {
        Capacity {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.cpu_millis as f64 / 1000.0;
        let mib = self.memory_bytes as f64 / (1024.0 * 1024.0);
        write!(f, "{cpu:.2} CPU, {mib:.0}Mi memory")
    }
}

/// What the scheduler needs to know about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    /// False for cordoned, draining or down nodes: nothing new is placed there.
    pub schedulable: bool,
    /// True when the replicas already on the node may stay although it is not
    /// schedulable (a cordoned node that is alive; a draining node's replicas are moved
    /// one at a time by the caller). False for down nodes: their replicas are moved.
    #[serde(default)]
    pub keeps_replicas: bool,
    pub capacity: Capacity,
}

/// One service to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub service: String,
    pub replicas: u32,
    /// Resources reserved per replica.
    pub request: Capacity,
}

/// Replica index `i` of a service runs on `assignment[service][i]`.
pub type Assignment = BTreeMap<String, Vec<NodeId>>;

/// Why a workload could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no node to run `{service}` on: the cluster has no schedulable node")]
    NoNodes { service: String },
    #[error("cannot place replica {replica} of `{service}` (needs {request}): no node has room ({detail})")]
    Unschedulable {
        service: String,
        replica: u32,
        request: Capacity,
        /// Free capacity per node, e.g. "node-1: 0.20 CPU, 100Mi memory free".
        detail: String,
    },
}

/// Places every replica of every workload. Deterministic and idempotent.
pub fn place(workloads: &[Workload], nodes: &[NodeView], previous: &Assignment) -> Result<Assignment, PlacementError> {
    let mut nodes: Vec<&NodeView> = nodes.iter().collect();
    nodes.sort_by_key(|n| n.id);
    let mut workloads: Vec<&Workload> = workloads.iter().collect();
    workloads.sort_by(|a, b| a.service.cmp(&b.service));

    let mut used: BTreeMap<NodeId, Capacity> = nodes.iter().map(|n| (n.id, Capacity::default())).collect();
    let mut count_on: BTreeMap<NodeId, u64> = nodes.iter().map(|n| (n.id, 0)).collect();
    let schedulable: BTreeMap<NodeId, &NodeView> = nodes.iter().filter(|n| n.schedulable).map(|n| (n.id, *n)).collect();
    let keeping: BTreeMap<NodeId, &NodeView> =
        nodes.iter().filter(|n| n.schedulable || n.keeps_replicas).map(|n| (n.id, *n)).collect();

    // Pass 1: keep every replica that may stay where it is.
    let mut result: BTreeMap<String, Vec<Option<NodeId>>> = BTreeMap::new();
    for w in &workloads {
        let mut slots = vec![None; w.replicas as usize];
        if let Some(prev) = previous.get(&w.service) {
            for (i, node) in prev.iter().take(w.replicas as usize).enumerate() {
                let Some(view) = keeping.get(node) else { continue };
                let free = view.capacity.saturating_sub(&used[node]);
                if w.request.fits_in(&free) {
                    slots[i] = Some(*node);
                    add_use(&mut used, &mut count_on, *node, &w.request);
                }
            }
        }
        result.insert(w.service.clone(), slots);
    }

    // Pass 2: place what is left, spreading each service across nodes. Nodes are kept
    // ordered by (replicas placed, id); for each replica the first node without a replica
    // of this service that has room wins, so the common case is O(log nodes).
    let mut by_load: BTreeSet<(u64, NodeId)> = schedulable.keys().map(|id| (count_on[id], *id)).collect();
    for w in &workloads {
        let Some(slots) = result.get_mut(&w.service) else { continue };
        let mut same: BTreeMap<NodeId, u64> = BTreeMap::new();
        for n in slots.iter().flatten() {
            *same.entry(*n).or_default() += 1;
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            if schedulable.is_empty() {
                return Err(PlacementError::NoNodes { service: w.service.clone() });
            }
            let fits = |id: &NodeId, used: &BTreeMap<NodeId, Capacity>| {
                schedulable.get(id).is_some_and(|v| w.request.fits_in(&v.capacity.saturating_sub(&used[id])))
            };
            let fresh = by_load.iter().find(|(_, id)| !same.contains_key(id) && fits(id, &used)).map(|(_, id)| *id);
            let chosen = fresh.or_else(|| {
                let mut shared: Vec<(u64, u64, NodeId)> =
                    same.iter().filter(|(id, _)| fits(id, &used)).map(|(id, c)| (*c, count_on[id], *id)).collect();
                shared.sort();
                shared.first().map(|(_, _, id)| *id)
            });
            let Some(node) = chosen else {
                let detail = schedulable
                    .values()
                    .map(|v| format!("{}: {} free", v.name, v.capacity.saturating_sub(&used[&v.id])))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(PlacementError::Unschedulable {
                    service: w.service.clone(),
                    replica: i as u32,
                    request: w.request,
                    detail,
                });
            };
            *slot = Some(node);
            by_load.remove(&(count_on[&node], node));
            add_use(&mut used, &mut count_on, node, &w.request);
            by_load.insert((count_on[&node], node));
            *same.entry(node).or_default() += 1;
        }
    }

    Ok(result.into_iter().map(|(service, slots)| (service, slots.into_iter().flatten().collect())).collect())
}

fn add_use(
    used: &mut BTreeMap<NodeId, Capacity>,
    count_on: &mut BTreeMap<NodeId, u64>,
    node: NodeId,
    request: &Capacity,
) {
    if let Some(u) = used.get_mut(&node) {
        *u = u.add(request);
    }
    if let Some(c) = count_on.get_mut(&node) {
        *c += 1;
    }
}

/// Services whose replicas share a node although they are placed; `status` reports these
/// so a user knows a single machine failure takes more than one replica down.
pub fn shared_nodes(assignment: &Assignment) -> Vec<(String, NodeId, usize)> {
    let mut out = Vec::new();
    for (service, nodes) in assignment {
        let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in nodes {
            *counts.entry(*n).or_default() += 1;
        }
        for (n, c) in counts {
            if c > 1 {
                out.push((service.clone(), n, c));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
