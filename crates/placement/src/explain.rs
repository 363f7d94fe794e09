//! Explaining placements to people: selectors as text, why no node matches, and checks
//! of an existing assignment against the rules (for `status` warnings).
use std::collections::{BTreeMap, BTreeSet};

use crate::{Assignment, NodeId, NodeView, Spread, Workload};

/// At most this many items are listed in a message; the rest are counted.
const LIST_AT_MOST: usize = 8;

/// `{arch=arm64, gpu=true}`.
pub fn format_selector(selector: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Joins the first items with `sep`, then `… and N more`.
pub(crate) fn capped(items: impl Iterator<Item = String>, sep: &str) -> String {
    let all: Vec<String> = items.collect();
    let mut out = all.iter().take(LIST_AT_MOST).cloned().collect::<Vec<_>>().join(sep);
    if all.len() > LIST_AT_MOST {
        out.push_str(&format!("{sep}… and {} more", all.len() - LIST_AT_MOST));
    }
    out
}

/// Why no schedulable node matches `selector`, e.g.
/// `: no schedulable node has gpu=true (values seen: gpu=false); n3 matches but is drained or down`.
pub(crate) fn no_match_hint(nodes: &[&NodeView], selector: &BTreeMap<String, String>) -> String {
    let schedulable: Vec<&NodeView> = nodes.iter().copied().filter(|n| n.schedulable).collect();
    let mut parts = Vec::new();
    for (k, v) in selector {
        if schedulable.iter().any(|n| n.labels.get(k) == Some(v)) {
            continue;
        }
        let seen: BTreeSet<&str> = schedulable.iter().filter_map(|n| n.labels.get(k)).map(String::as_str).collect();
        if seen.is_empty() {
            parts.push(format!("no schedulable node has label `{k}`"));
        } else {
            let seen = capped(seen.iter().map(|s| format!("{k}={s}")), ", ");
            parts.push(format!("no schedulable node has {k}={v} (seen: {seen})"));
        }
    }
    if parts.is_empty() {
        parts.push("no single schedulable node has all of these labels".to_string());
    }
    let idle: Vec<String> =
        nodes.iter().filter(|n| !n.schedulable && n.matches(selector)).map(|n| n.name.clone()).collect();
    if !idle.is_empty() {
        let verb = if idle.len() == 1 { "matches" } else { "match" };
        parts.push(format!(
            "{} {verb} but {} drained or down",
            capped(idle.into_iter(), ", "),
            if verb == "matches" { "is" } else { "are" }
        ));
    }
    format!(": {}", parts.join("; "))
}

/// A placed replica that breaks a rule where it runs (its node went down, was drained or
/// relabelled, and no other node could take it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub service: String,
    pub replica: u32,
    pub node: NodeId,
    /// e.g. "n1 does not match node_selector {gpu=true}".
    pub reason: String,
}

/// Every replica of `assignment` that breaks a hard rule: on a node that is gone, not
/// schedulable, not matching the selector, or running an anti-affine service. Capacity
/// is not checked (a running replica is not moved for it).
pub fn violations(workloads: &[Workload], nodes: &[NodeView], assignment: &Assignment) -> Vec<Violation> {
    let by_id: BTreeMap<NodeId, &NodeView> = nodes.iter().map(|n| (n.id, n)).collect();
    let hosts: BTreeMap<&str, BTreeSet<NodeId>> =
        assignment.iter().map(|(s, placed)| (s.as_str(), placed.iter().copied().collect())).collect();
    let mut anti: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for w in workloads {
        for other in w.anti_affinity.iter().filter(|o| **o != w.service) {
            anti.entry(w.service.as_str()).or_default().insert(other.as_str());
            anti.entry(other.as_str()).or_default().insert(w.service.as_str());
        }
    }
    let mut out = Vec::new();
    let mut ordered: Vec<&Workload> = workloads.iter().collect();
    ordered.sort_by(|a, b| a.service.cmp(&b.service));
    for w in ordered {
        let Some(placed) = assignment.get(&w.service) else { continue };
        for (replica, id) in placed.iter().enumerate() {
            let mut push = |reason: String| {
                out.push(Violation { service: w.service.clone(), replica: replica as u32, node: *id, reason })
            };
            let Some(node) = by_id.get(id) else {
                push(format!("node {id} is not a member of the cluster"));
                continue;
            };
            if !node.schedulable && !node.keeps_replicas {
                push(format!("{} is down", node.name));
            }
            if !node.matches(&w.selector) {
                push(format!("{} does not match node_selector {}", node.name, format_selector(&w.selector)));
            }
            let sharing: Vec<String> = anti
                .get(w.service.as_str())
                .into_iter()
                .flatten()
                .filter(|o| hosts.get(*o).is_some_and(|h| h.contains(id)))
                .map(|o| format!("`{o}`"))
                .collect();
            if !sharing.is_empty() {
                push(format!("{} also runs {} (anti_affinity)", node.name, sharing.join(", ")));
            }
        }
    }
    out
}

/// Services with `spread: sites` whose replicas (two or more) all run in one site
/// although the nodes span several: (service, that site).
pub fn unspread_sites(workloads: &[Workload], nodes: &[NodeView], assignment: &Assignment) -> Vec<(String, String)> {
    let site_of: BTreeMap<NodeId, &str> = nodes.iter().map(|n| (n.id, n.site())).collect();
    let sites: BTreeSet<&str> = site_of.values().copied().collect();
    if sites.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for w in workloads.iter().filter(|w| w.spread == Spread::Sites) {
        let Some(placed) = assignment.get(&w.service).filter(|p| p.len() >= 2) else { continue };
        let used: BTreeSet<&str> = placed.iter().filter_map(|n| site_of.get(n).copied()).collect();
        if used.len() == 1 {
            if let Some(site) = used.first() {
                out.push((w.service.clone(), site.to_string()));
            }
        }
    }
    out.sort();
    out
}
