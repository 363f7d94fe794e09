//! Placement: a pure, deterministic function from (workloads, nodes, previous assignment)
//! to a new assignment of every replica to a node.
//!
//! Rules, in order of strength:
//! - **hard**: a replica goes only to a schedulable node that matches its workload's
//!   `selector` (every key=value among the node's labels, built-ins `name`, `site`, `arch`
//!   included), has room for its request, and hosts no replica of a service it is
//!   anti-affine with (in either direction);
//! - **spread**: replicas of one service share a node only when no other node is allowed;
//!   with [`Spread::Sites`] the site with the fewest replicas of the service comes first;
//!   ties go to the node with the fewest replicas of all services;
//! - **minimal moves**: a replica that may stay where it is stays there, also on a
//!   cordoned node that is alive ([`NodeView::keeps_replicas`]).
//!
//! Replicas that stay are kept first; the others are placed service by service, the
//! service with the fewest allowed nodes (by selector) first, then by name, so a service
//! that can only run on a few nodes is not crowded out of them by one that could run
//! anywhere. The hard rules are met greedily: a cluster where only another order would
//! fit is refused with an explanation, never bent.
//!
//! Invariants, all checked by tests: never over capacity, selectors and anti-affinity
//! always honoured, spread honoured when possible, deterministic, idempotent (placing an
//! assignment again changes nothing), minimal moves.
//!
//! Cost: nodes are kept in ordered sets per distinct selector (and per site), keyed by
//! (replicas placed, id), so a choice is O(sites × log nodes) in the common case; only
//! nodes that cannot take the replica are skipped on the way.
//!
//! This crate does no IO and knows nothing of Raft, processes or the network.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

mod explain;

pub use explain::{format_selector, unspread_sites, violations, Violation};

/// Identifier of a node, the same number Raft uses.
pub type NodeId = u64;

/// Built-in label: the node's name.
pub const LABEL_NAME: &str = "name";
/// Built-in label: the node's site (`--site`); [`Spread::Sites`] spreads over its values.
pub const LABEL_SITE: &str = "site";
/// Built-in label: the node's CPU architecture (`amd64`, `arm64`, …).
pub const LABEL_ARCH: &str = "arch";
/// Separates the alternatives of a selector value (see [`NodeView::matches`]).
pub const ANY_OF: char = '|';
/// Labels every node has, set by holdfast; users cannot set or remove them.
pub const BUILTIN_LABELS: [&str; 3] = [LABEL_NAME, LABEL_SITE, LABEL_ARCH];

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
    /// The sum of two amounts (saturating).
    pub fn add(&self, other: &Capacity) -> Capacity {
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
    /// Every label selectors match against: the user's labels plus the built-ins
    /// [`LABEL_NAME`], [`LABEL_SITE`] and [`LABEL_ARCH`].
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NodeView {
    /// The node's site (the `site` label; empty when it has none).
    pub fn site(&self) -> &str {
        self.labels.get(LABEL_SITE).map(String::as_str).unwrap_or("")
    }

    /// True when every key=value of `selector` is among the node's labels. A value may
    /// list alternatives separated by [`ANY_OF`] (`arch=amd64|arm64`: the architectures
    /// an image offers); label values never contain it.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k).is_some_and(|l| v.split(ANY_OF).any(|alt| alt == l)))
    }
}

/// How replicas of one service are spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Over nodes: two replicas share a node only when no other node is allowed.
    #[default]
    Nodes,
    /// Over sites first (the site with the fewest replicas of the service), then nodes.
    Sites,
}

/// One service to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub service: String,
    pub replicas: u32,
    /// Resources reserved per replica.
    pub request: Capacity,
    /// Labels a node must have, all of them, for a replica to go there.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub spread: Spread,
    /// Services whose replicas never share a node with this one's. The relation is
    /// symmetric: naming it on either side is enough. Unknown names are ignored.
    #[serde(default)]
    pub anti_affinity: BTreeSet<String>,
}

impl Workload {
    /// A workload with no selector, node spread and no anti-affinity.
    pub fn new(service: impl Into<String>, replicas: u32, request: Capacity) -> Workload {
        Workload {
            service: service.into(),
            replicas,
            request,
            selector: BTreeMap::new(),
            spread: Spread::Nodes,
            anti_affinity: BTreeSet::new(),
        }
    }
}

/// Replica index `i` of a service runs on `assignment[service][i]`.
pub type Assignment = BTreeMap<String, Vec<NodeId>>;

/// Why a replica could not be placed. The message names the rule that excluded nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no node to run `{service}` on: the cluster has no schedulable node")]
    NoNodes { service: String },
    #[error("cannot place replica {replica} of `{service}`: no node matches node_selector {selector}{hint}")]
    NoMatchingNode {
        service: String,
        replica: u32,
        /// The selector, e.g. `{gpu=true}`.
        selector: String,
        /// Why, e.g. `: no schedulable node has label `gpu``.
        hint: String,
    },
    #[error("cannot place replica {replica} of `{service}`: anti_affinity excludes every node{among} ({detail})")]
    AntiAffinity {
        service: String,
        replica: u32,
        /// ` matching node_selector {...}` or empty.
        among: String,
        /// Which node runs which excluded service, e.g. "n1 runs `db`; n2 runs `db`".
        detail: String,
    },
    #[error("cannot place replica {replica} of `{service}` (needs {request}): no node{among} has room ({detail})")]
    Unschedulable {
        service: String,
        replica: u32,
        request: Capacity,
        /// The nodes considered, e.g. ` matching node_selector {gpu=true} and not running `db``.
        among: String,
        /// Free capacity per node, e.g. "node-1: 0.20 CPU, 100Mi memory free".
        detail: String,
    },
}

impl PlacementError {
    /// The service the error is about.
    pub fn service(&self) -> &str {
        match self {
            PlacementError::NoNodes { service }
            | PlacementError::NoMatchingNode { service, .. }
            | PlacementError::AntiAffinity { service, .. }
            | PlacementError::Unschedulable { service, .. } => service,
        }
    }

    /// The replica the error is about (none when the cluster has no node at all).
    pub fn replica(&self) -> Option<u32> {
        match self {
            PlacementError::NoNodes { .. } => None,
            PlacementError::NoMatchingNode { replica, .. }
            | PlacementError::AntiAffinity { replica, .. }
            | PlacementError::Unschedulable { replica, .. } => Some(*replica),
        }
    }
}

/// Places every replica of every workload. Deterministic and idempotent; fails if one
/// replica cannot be placed (nothing is half-placed).
pub fn place(workloads: &[Workload], nodes: &[NodeView], previous: &Assignment) -> Result<Assignment, PlacementError> {
    Placer::new(workloads, nodes).run(previous, false).map(|r| r.assignment)
}

/// The result of [`reschedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescheduled {
    pub assignment: Assignment,
    /// Replicas that had to stay on a node that no longer suits them, because no other
    /// node may take them, with the reason.
    pub stuck: Vec<PlacementError>,
}

/// Like [`place`], for moving replicas after the cluster changed (a node down, drained,
/// relabelled): a replica that cannot be placed anywhere else stays where it was and is
/// reported in `stuck`, so one service that cannot move never blocks the others. Fails
/// only for a replica that has no previous node.
pub fn reschedule(
    workloads: &[Workload],
    nodes: &[NodeView],
    previous: &Assignment,
) -> Result<Rescheduled, PlacementError> {
    Placer::new(workloads, nodes).run(previous, true)
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

/// Sites in a group at most this many are searched one by one, larger ones in the
/// global order.
const SMALL_GROUP: usize = 8;

/// Node (dense index into the sorted nodes) ordered by (replicas placed, index): the
/// index order is the id order.
type Ranked = (u64, u32);

/// The schedulable nodes matching one selector, least loaded first.
struct Index {
    all: BTreeSet<Ranked>,
    by_site: BTreeMap<u32, BTreeSet<Ranked>>,
}

/// The working state of one placement.
struct Placer<'a> {
    /// Sorted by id; a node's index is its position here.
    nodes: Vec<&'a NodeView>,
    by_id: HashMap<NodeId, u32>,
    site_of: Vec<u32>,
    used: Vec<Capacity>,
    load: Vec<u64>,
    /// Sorted by service name.
    wls: Vec<&'a Workload>,
    /// Workload index → indices of the workloads it must not share a node with.
    anti: Vec<Vec<u32>>,
    /// Workload index → node index → replicas of it there.
    hosts: Vec<HashMap<u32, u32>>,
    /// Workload index → site → replicas of it there.
    per_site: Vec<HashMap<u32, u32>>,
    /// Workload index → (replicas of it, site) for the sites of its index where it has
    /// replicas; kept only for `spread: sites` workloads that are being placed.
    site_order: Vec<BTreeSet<(u32, u32)>>,
    /// Workload index → whether `site_order` is kept, and its index.
    tracked: Vec<Option<u32>>,
    indexes: Vec<Index>,
    /// Node index → the indexes it is a member of.
    member_of: Vec<Vec<u32>>,
}

impl<'a> Placer<'a> {
    fn new(workloads: &'a [Workload], nodes: &'a [NodeView]) -> Placer<'a> {
        let mut nodes: Vec<&NodeView> = nodes.iter().collect();
        nodes.sort_by_key(|n| n.id);
        let mut wls: Vec<&Workload> = workloads.iter().collect();
        wls.sort_by(|a, b| a.service.cmp(&b.service));
        let sites: BTreeSet<&str> = nodes.iter().map(|n| n.site()).collect();
        let site_ids: HashMap<&str, u32> = sites.iter().enumerate().map(|(i, s)| (*s, i as u32)).collect();
        let site_of = nodes.iter().map(|n| site_ids.get(n.site()).copied().unwrap_or(0)).collect();
        let by_id = nodes.iter().enumerate().map(|(i, n)| (n.id, i as u32)).collect();
        let wl_ids: HashMap<&str, u32> = wls.iter().enumerate().map(|(i, w)| (w.service.as_str(), i as u32)).collect();
        let mut anti: Vec<Vec<u32>> = vec![Vec::new(); wls.len()];
        for (i, w) in wls.iter().enumerate() {
            for other in &w.anti_affinity {
                if let Some(&j) = wl_ids.get(other.as_str()) {
                    if j as usize != i {
                        anti[i].push(j);
                        anti[j as usize].push(i as u32);
                    }
                }
            }
        }
        for a in &mut anti {
            a.sort_unstable();
            a.dedup();
        }
        let n = nodes.len();
        Placer {
            site_of,
            by_id,
            used: vec![Capacity::default(); n],
            load: vec![0; n],
            hosts: vec![HashMap::new(); wls.len()],
            per_site: vec![HashMap::new(); wls.len()],
            site_order: vec![BTreeSet::new(); wls.len()],
            tracked: vec![None; wls.len()],
            anti,
            wls,
            nodes,
            indexes: Vec::new(),
            member_of: vec![Vec::new(); n],
        }
    }

    fn fits(&self, w: usize, n: u32) -> bool {
        let free = self.nodes[n as usize].capacity.saturating_sub(&self.used[n as usize]);
        self.wls[w].request.fits_in(&free)
    }

    /// True when `n` runs a replica of a service `w` must not share a node with.
    fn excluded(&self, w: usize, n: u32) -> bool {
        self.anti[w].iter().any(|a| self.hosts[*a as usize].contains_key(&n))
    }

    fn allowed(&self, w: usize, n: u32) -> bool {
        let node = self.nodes[n as usize];
        node.schedulable && node.matches(&self.wls[w].selector) && self.fits(w, n) && !self.excluded(w, n)
    }

    /// True when a replica of `w` already on `n` may stay there: like a new one, except
    /// that a cordoned node that is alive keeps its replicas.
    fn may_stay(&self, w: usize, n: u32) -> bool {
        let node = self.nodes[n as usize];
        (node.schedulable || node.keeps_replicas)
            && node.matches(&self.wls[w].selector)
            && self.fits(w, n)
            && !self.excluded(w, n)
    }

    /// Records a replica of `w` on `n`, keeping the indexes ordered.
    fn add(&mut self, w: usize, n: u32) {
        let ni = n as usize;
        self.used[ni] = self.used[ni].add(&self.wls[w].request);
        let before = self.load[ni];
        self.load[ni] += 1;
        let site = self.site_of[ni];
        for ix in &self.member_of[ni] {
            let index = &mut self.indexes[*ix as usize];
            index.all.remove(&(before, n));
            index.all.insert((before + 1, n));
            if let Some(set) = index.by_site.get_mut(&site) {
                set.remove(&(before, n));
                set.insert((before + 1, n));
            }
        }
        *self.hosts[w].entry(n).or_default() += 1;
        let count = self.per_site[w].entry(site).or_default();
        *count += 1;
        if let Some(ix) = self.tracked[w] {
            if self.indexes.get(ix as usize).is_some_and(|i| i.by_site.contains_key(&site)) {
                self.site_order[w].remove(&(*count - 1, site));
                self.site_order[w].insert((*count, site));
            }
        }
    }

    /// One index per distinct selector among the workloads in `needed`; returns the index
    /// of each workload (by position in `self.wls`).
    fn build_indexes(&mut self, needed: &[bool]) -> Vec<u32> {
        let mut label_index: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        let any_selector = self.wls.iter().zip(needed).any(|(w, n)| *n && !w.selector.is_empty());
        let schedulable: Vec<u32> =
            (0..self.nodes.len() as u32).filter(|n| self.nodes[*n as usize].schedulable).collect();
        if any_selector {
            for n in &schedulable {
                for (k, v) in &self.nodes[*n as usize].labels {
                    label_index.entry((k.as_str(), v.as_str())).or_default().push(*n);
                }
            }
        }
        let mut by_selector: BTreeMap<&BTreeMap<String, String>, u32> = BTreeMap::new();
        let mut index_of = vec![u32::MAX; self.wls.len()];
        for w in 0..self.wls.len() {
            if !needed[w] {
                continue;
            }
            let selector = &self.wls[w].selector;
            if let Some(ix) = by_selector.get(selector) {
                index_of[w] = *ix;
                continue;
            }
            let members: Vec<u32> = if selector.is_empty() {
                schedulable.clone()
            } else {
                // The nodes with one key's value (any of its alternatives).
                let with = |k: &str, v: &str| -> Vec<u32> {
                    let mut out: Vec<u32> = v
                        .split(ANY_OF)
                        .flat_map(|alt| label_index.get(&(k, alt)).map(Vec::as_slice).unwrap_or(&[]).iter().copied())
                        .collect();
                    out.sort_unstable();
                    out.dedup();
                    out
                };
                let smallest = selector.iter().map(|(k, v)| with(k, v)).min_by_key(|l| l.len()).unwrap_or_default();
                smallest.into_iter().filter(|n| self.nodes[*n as usize].matches(selector)).collect()
            };
            let ix = self.indexes.len() as u32;
            let mut index = Index { all: BTreeSet::new(), by_site: BTreeMap::new() };
            for n in members {
                let ranked = (self.load[n as usize], n);
                index.all.insert(ranked);
                index.by_site.entry(self.site_of[n as usize]).or_default().insert(ranked);
                self.member_of[n as usize].push(ix);
            }
            self.indexes.push(index);
            by_selector.insert(selector, ix);
            index_of[w] = ix;
        }
        index_of
    }

    /// The best node for one more replica of `w`, if any is allowed.
    fn choose(&self, w: usize, index: &Index) -> Option<u32> {
        let fresh = |n: &u32| !self.hosts[w].contains_key(n) && self.fits(w, *n) && !self.excluded(w, *n);
        let found = match self.wls[w].spread {
            Spread::Nodes => index.all.iter().map(|(_, n)| *n).find(fresh),
            Spread::Sites => {
                // Sites with the fewest replicas of `w` first; within equally used sites,
                // the least loaded node wins. Sites without a replica of `w` are not in
                // `site_order` (usually most of them): that group comes first.
                let order = &self.site_order[w];
                let unused = index.by_site.len().saturating_sub(order.len());
                let mut found = None;
                if unused > SMALL_GROUP {
                    found = self.best_in_sites(w, index, 0, None, &fresh);
                } else if unused > 0 {
                    let sites: Vec<u32> =
                        index.by_site.keys().copied().filter(|s| !self.per_site[w].contains_key(s)).collect();
                    found = self.best_in_sites(w, index, 0, Some(&sites), &fresh);
                }
                let mut next = order.first().map(|(c, _)| *c);
                while let (None, Some(count)) = (found, next) {
                    let group: Vec<u32> =
                        order.range((count, 0)..(count + 1, 0)).take(SMALL_GROUP + 1).map(|(_, s)| *s).collect();
                    let sites = (group.len() <= SMALL_GROUP).then_some(group.as_slice());
                    found = self.best_in_sites(w, index, count, sites, &fresh);
                    next = order.range((count + 1, 0)..).next().map(|(c, _)| *c);
                }
                found
            }
        };
        found.or_else(|| {
            // Every allowed node already runs a replica of `w`: share the one with the
            // fewest (then the emptiest site, then the least loaded node).
            let sites = self.wls[w].spread == Spread::Sites;
            self.hosts[w]
                .iter()
                .filter(|(n, _)| self.allowed(w, **n))
                .map(|(n, c)| {
                    let site =
                        if sites { self.per_site[w].get(&self.site_of[*n as usize]).copied().unwrap_or(0) } else { 0 };
                    (*c, site, self.load[*n as usize], *n)
                })
                .min()
                .map(|(_, _, _, n)| n)
        })
    }

    /// The least loaded node that `fresh` accepts among the sites where `w` has `count`
    /// replicas: those listed in `sites`, or with `None` (a large group) found in the
    /// index's global order. Both ways find the same node.
    fn best_in_sites(
        &self,
        w: usize,
        index: &Index,
        count: u32,
        sites: Option<&[u32]>,
        fresh: &impl Fn(&u32) -> bool,
    ) -> Option<u32> {
        match sites {
            None => {
                let in_group =
                    |n: &u32| self.per_site[w].get(&self.site_of[*n as usize]).copied().unwrap_or(0) == count;
                index.all.iter().map(|(_, n)| *n).find(|n| in_group(n) && fresh(n))
            }
            Some(sites) => sites
                .iter()
                .filter_map(|s| index.by_site.get(s)?.iter().find(|(_, n)| fresh(n)).copied())
                .min()
                .map(|(_, n)| n),
        }
    }

    fn run(mut self, previous: &Assignment, lenient: bool) -> Result<Rescheduled, PlacementError> {
        // Pass 1: keep every replica that may stay where it is.
        let mut slots: Vec<Vec<Option<NodeId>>> = Vec::with_capacity(self.wls.len());
        for w in 0..self.wls.len() {
            let wl = self.wls[w];
            let mut mine = vec![None; wl.replicas as usize];
            if let Some(prev) = previous.get(&wl.service) {
                for (i, id) in prev.iter().take(wl.replicas as usize).enumerate() {
                    if let Some(&n) = self.by_id.get(id) {
                        if self.may_stay(w, n) {
                            mine[i] = Some(*id);
                            self.add(w, n);
                        }
                    }
                }
            }
            slots.push(mine);
        }

        // Pass 2: place what is left, service by service.
        let needed: Vec<bool> = slots.iter().map(|s| s.iter().any(Option::is_none)).collect();
        let index_of = self.build_indexes(&needed);
        for w in 0..self.wls.len() {
            let Some(index) = self.indexes.get(index_of[w] as usize) else { continue };
            if needed[w] && self.wls[w].spread == Spread::Sites {
                self.site_order[w] = self.per_site[w]
                    .iter()
                    .filter(|(s, c)| **c > 0 && index.by_site.contains_key(s))
                    .map(|(s, c)| (*c, *s))
                    .collect();
                self.tracked[w] = Some(index_of[w]);
            }
        }
        let mut stuck = Vec::new();
        // Most constrained first: the services with the fewest nodes to choose from take
        // their pick before the others fill those nodes; then by name.
        let mut order: Vec<usize> = (0..self.wls.len()).filter(|w| needed[*w]).collect();
        order.sort_by_key(|w| (self.indexes.get(index_of[*w] as usize).map_or(0, |i| i.all.len()), *w));
        for w in order {
            for i in 0..slots[w].len() {
                if slots[w][i].is_some() {
                    continue;
                }
                let chosen = match self.indexes.get(index_of[w] as usize) {
                    Some(index) => self.choose(w, index),
                    None => None,
                };
                match chosen {
                    Some(n) => {
                        slots[w][i] = Some(self.nodes[n as usize].id);
                        self.add(w, n);
                    }
                    None => {
                        let err = self.explain(w, i as u32);
                        let before = previous.get(&self.wls[w].service).and_then(|p| p.get(i)).copied();
                        match before {
                            Some(id) if lenient => {
                                slots[w][i] = Some(id);
                                if let Some(&n) = self.by_id.get(&id) {
                                    self.add(w, n);
                                }
                                stuck.push(err);
                            }
                            _ => return Err(err),
                        }
                    }
                }
            }
        }
        let assignment =
            self.wls.iter().zip(slots).map(|(w, s)| (w.service.clone(), s.into_iter().flatten().collect())).collect();
        Ok(Rescheduled { assignment, stuck })
    }

    /// Why no node may take replica `replica` of `w` (the cold path: O(nodes)).
    fn explain(&self, w: usize, replica: u32) -> PlacementError {
        let wl = self.wls[w];
        let service = wl.service.clone();
        let schedulable: Vec<u32> =
            (0..self.nodes.len() as u32).filter(|n| self.nodes[*n as usize].schedulable).collect();
        if schedulable.is_empty() {
            return PlacementError::NoNodes { service };
        }
        let matching: Vec<u32> =
            schedulable.iter().copied().filter(|n| self.nodes[*n as usize].matches(&wl.selector)).collect();
        let selector = format_selector(&wl.selector);
        if matching.is_empty() {
            let hint = explain::no_match_hint(&self.nodes, &wl.selector);
            return PlacementError::NoMatchingNode { service, replica, selector, hint };
        }
        let by_selector =
            if wl.selector.is_empty() { String::new() } else { format!(" matching node_selector {selector}") };
        let free: Vec<u32> = matching.iter().copied().filter(|n| !self.excluded(w, *n)).collect();
        let names_on = |n: u32| -> String {
            let names: Vec<String> = self.anti[w]
                .iter()
                .filter(|a| self.hosts[**a as usize].contains_key(&n))
                .map(|a| format!("`{}`", self.wls[*a as usize].service))
                .collect();
            names.join(", ")
        };
        if free.is_empty() {
            let detail = explain::capped(
                matching.iter().map(|n| format!("{} runs {}", self.nodes[*n as usize].name, names_on(*n))),
                "; ",
            );
            return PlacementError::AntiAffinity { service, replica, among: by_selector, detail };
        }
        let mut among = by_selector;
        if free.len() < matching.len() {
            let excluded: BTreeSet<String> = matching
                .iter()
                .filter(|n| self.excluded(w, **n))
                .flat_map(|n| {
                    self.anti[w]
                        .iter()
                        .filter(|a| self.hosts[**a as usize].contains_key(n))
                        .map(|a| format!("`{}`", self.wls[*a as usize].service))
                        .collect::<Vec<_>>()
                })
                .collect();
            let list: Vec<String> = excluded.into_iter().collect();
            among.push_str(if among.is_empty() { " " } else { " and " });
            among.push_str(&format!("not running {} (anti_affinity)", list.join(" or ")));
        }
        let detail = explain::capped(
            free.iter().map(|n| {
                let v = self.nodes[*n as usize];
                format!("{}: {} free", v.name, v.capacity.saturating_sub(&self.used[*n as usize]))
            }),
            "; ",
        );
        PlacementError::Unschedulable { service, replica, request: wl.request, among, detail }
    }
}

#[cfg(test)]
mod tests;
