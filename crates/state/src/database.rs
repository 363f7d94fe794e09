//! Managed databases in the desired state: placing a database's members, choosing its
//! endpoint addresses and keeping its passwords. Pure: passwords come from the caller.
//!
//! Placement rules, all hard: a member goes only to a node that is alive, matches the
//! database's `node_selector`, reports the engine (`NodeRecord.software["postgres"]`) and
//! has room for its `resources` (after the services placed there and other databases'
//! members); two members of one database never share a node; and all members run on
//! nodes of one architecture and one PostgreSQL major version (a standby replays the
//! primary's files byte for byte). That (arch, version) group is, for a new database, the
//! one with the most eligible nodes (ties alphabetical); an existing database stays in
//! its primary's group while that group can hold it (no needless moves), else the
//! largest group. New members go to the site with the fewest members first, then the
//! lowest node id.
//!
//! Members keep their nodes while those stay valid. A member on a node that is down is
//! re-placed, **except the primary's**: the leader's failover promotes a standby first
//! (a new term), after which the old primary's member is an ordinary standby and moves
//! like any other. A planning change that would move a live primary (a new selector, a
//! fewer `instances` that drops it) is refused: switch over first.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use holdfast_placement::{Capacity, NodeId};
use holdfast_spec::{DatabaseSpec, DbEndpoint, DbEngine};

use crate::model::{ClusterState, DatabaseRecord, DbAddresses, DbCredentials, NodeRecord, ServiceRecord};
use crate::plan::{service_address, PlanError};

/// The request of one member of `spec`.
pub fn member_request(spec: &DatabaseSpec) -> Capacity {
    Capacity {
        cpu_millis: spec.resources.cpu_millis.map(u64::from).unwrap_or(0),
        memory_bytes: spec.resources.memory_bytes.unwrap_or(0),
    }
}

/// What the members of `databases` reserve on each node.
pub fn reserved_by(databases: &BTreeMap<String, DatabaseRecord>) -> BTreeMap<NodeId, Capacity> {
    let mut out: BTreeMap<NodeId, Capacity> = BTreeMap::new();
    for db in databases.values() {
        let request = member_request(&db.spec);
        for node in &db.members {
            let slot = out.entry(*node).or_default();
            *slot = slot.add(&request);
        }
    }
    out
}

/// What the replicas of `services` placed by `state` reserve on each node.
fn reserved_by_services(
    state: &ClusterState,
    services: &BTreeMap<String, ServiceRecord>,
) -> BTreeMap<NodeId, Capacity> {
    let mut out: BTreeMap<NodeId, Capacity> = BTreeMap::new();
    for (name, nodes) in &state.desired.placements {
        let Some(svc) = services.get(name) else { continue };
        let request = Capacity {
            cpu_millis: svc.spec.resources.cpu_millis.map(u64::from).unwrap_or(0),
            memory_bytes: svc.spec.resources.memory_bytes.unwrap_or(0),
        };
        for node in nodes {
            let slot = out.entry(*node).or_default();
            *slot = slot.add(&request);
        }
    }
    out
}

/// Where a database's members run, and the (architecture, engine version) chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Member `i` on `nodes[i]`.
    pub nodes: Vec<NodeId>,
    pub arch: String,
    pub version: String,
    /// True when the architecture was chosen by holdfast (the selector does not fix it).
    pub arch_chosen: bool,
}

impl Members {
    /// `arm64, PostgreSQL 15` (with `(chosen: most nodes)` when holdfast chose the arch);
    /// `Redis 7` for an engine that does not tie members to one architecture.
    pub fn describe_group(&self, engine: DbEngine) -> String {
        if !engine.one_architecture() {
            return format!("{} {}", engine.product(), self.version);
        }
        let chosen = if self.arch_chosen { " (architecture chosen by holdfast)" } else { "" };
        format!("{}, {} {}{chosen}", self.arch, engine.product(), self.version)
    }
}

/// The group a node's members of `engine` belong to: (architecture, engine version);
/// the architecture is `any` for an engine that replicates a portable format.
fn group_of(engine: DbEngine, n: &NodeRecord) -> Option<(String, String)> {
    let version = n.software.get(engine.as_str())?;
    let arch = if engine.one_architecture() { n.arch.clone() } else { "any".to_string() };
    Some((arch, version.clone()))
}

fn node_matches(node: &NodeRecord, selector: &BTreeMap<String, String>) -> bool {
    let labels = crate::labels::node_labels(node);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Places the members of database `name`: `previous` is its current record, `used` what
/// everything else (services, other databases) reserves on each node.
pub fn place_members(
    state: &ClusterState,
    name: &str,
    spec: &DatabaseSpec,
    previous: Option<&DatabaseRecord>,
    used: &BTreeMap<NodeId, Capacity>,
) -> Result<Members, PlanError> {
    let engine = spec.engine;
    let product = engine.product();
    let selector = &spec.placement.node_selector;
    let instances = spec.instances as usize;
    let prev_members: &[NodeId] = previous.map(|p| p.members.as_slice()).unwrap_or(&[]);
    let primary_slot = previous.map(|p| p.primary as usize);
    let primary_node = previous.and_then(|p| p.primary_node());

    // Eligible: alive, matching, with the engine; new members also need a schedulable node.
    let mut groups: BTreeMap<(String, String), Vec<&NodeRecord>> = BTreeMap::new();
    let mut without_engine = Vec::new();
    for n in state.nodes.values() {
        if n.down || !node_matches(n, selector) {
            continue;
        }
        let may_take = !n.cordoned || prev_members.contains(&n.id);
        if !may_take {
            continue;
        }
        match group_of(engine, n) {
            Some(g) => groups.entry(g).or_default().push(n),
            None => without_engine.push(n.name.clone()),
        }
    }
    let primary_group = primary_node.and_then(|id| state.nodes.get(&id)).and_then(|n| group_of(engine, n));
    // An existing database stays in its primary's group (moving it would lose the
    // primary); a new one, or one whose primary's node is gone, takes the largest.
    let chosen = primary_group.clone().or_else(|| {
        groups.iter().max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0))).map(|(k, _)| k.clone())
    });
    let describe_groups = || -> String {
        let mut parts: Vec<String> = groups
            .iter()
            .map(|((arch, v), nodes)| {
                let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
                if engine.one_architecture() {
                    format!("{arch} with {product} {v} has {}", names.join(", "))
                } else {
                    format!("{product} {v} on {}", names.join(", "))
                }
            })
            .collect();
        if !without_engine.is_empty() {
            parts.push(format!(
                "{} report no {product} (install it there, or keep the database off them with a node_selector)",
                without_engine.join(", ")
            ));
        }
        if parts.is_empty() {
            "no node is alive and schedulable".to_string()
        } else {
            parts.join("; ")
        }
    };
    let among = if selector.is_empty() {
        String::new()
    } else {
        format!(" matching node_selector {}", holdfast_placement::format_selector(selector))
    };
    let Some(group) = chosen.filter(|g| {
        let alive = groups.get(g).map_or(0, Vec::len);
        let primary_down = primary_node.is_some_and(|p| state.nodes.get(&p).is_some_and(|n| n.down));
        alive + usize::from(primary_down) >= instances || primary_group.as_ref() == Some(g)
    }) else {
        return Err(PlanError::Database(format!(
            "database `{name}` needs {instances} instances on nodes{among} {}, one node each: {}; add nodes or lower instances",
            if engine.one_architecture() { format!("of one architecture with {product}") } else { format!("with {product}") },
            describe_groups()
        )));
    };
    let in_group: Vec<&NodeRecord> = groups.get(&group).cloned().unwrap_or_default();
    let arch_chosen = engine.one_architecture() && !selector.contains_key(holdfast_placement::LABEL_ARCH);

    // The primary's member stays where it is: on a down node the failover moves the
    // primary first; on a live node that no longer qualifies it would lose the primary.
    if let (Some(slot), Some(node)) = (primary_slot, primary_node) {
        let alive = state.nodes.get(&node).is_some_and(|n| !n.down);
        if alive && !in_group.iter().any(|n| n.id == node) {
            return Err(PlanError::Database(format!(
                "database `{name}`: the primary (member {slot}) runs on {}, which no longer qualifies for the database ({}); switch the primary over to another member first",
                state.node_name(node),
                describe_groups()
            )));
        }
        if slot >= instances {
            return Err(PlanError::Database(format!(
                "database `{name}`: instances {instances} would drop member {slot}, the primary; switch the primary over to a member below {instances} first"
            )));
        }
    }

    let request = member_request(spec);
    let free = |n: &NodeRecord| -> Capacity {
        let u = used.get(&n.id).copied().unwrap_or_default();
        Capacity {
            cpu_millis: n.capacity.cpu_millis.saturating_sub(u.cpu_millis),
            memory_bytes: n.capacity.memory_bytes.saturating_sub(u.memory_bytes),
        }
    };
    let fits =
        |n: &NodeRecord| request.cpu_millis <= free(n).cpu_millis && request.memory_bytes <= free(n).memory_bytes;

    let mut nodes: Vec<Option<NodeId>> = vec![None; instances];
    let mut taken: BTreeSet<NodeId> = BTreeSet::new();
    for (i, node) in prev_members.iter().enumerate().take(instances) {
        let keep = if Some(i) == primary_slot {
            true
        } else {
            in_group.iter().any(|n| n.id == *node) && !taken.contains(node)
        };
        if keep && taken.insert(*node) {
            nodes[i] = Some(*node);
        }
    }
    for i in 0..instances {
        if nodes[i].is_some() {
            continue;
        }
        let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
        for id in nodes.iter().flatten() {
            if let Some(n) = state.nodes.get(id) {
                *per_site.entry(n.site.as_str()).or_default() += 1;
            }
        }
        let pick = in_group
            .iter()
            .filter(|n| !n.cordoned && !taken.contains(&n.id) && fits(n))
            .min_by_key(|n| (per_site.get(n.site.as_str()).copied().unwrap_or(0), n.id));
        let Some(pick) = pick else {
            let detail: Vec<String> = in_group
                .iter()
                .map(|n| {
                    if taken.contains(&n.id) {
                        format!("{} runs another member", n.name)
                    } else if n.cordoned {
                        format!("{} is cordoned", n.name)
                    } else {
                        format!("{} has {} free", n.name, free(n))
                    }
                })
                .collect();
            return Err(PlanError::Database(format!(
                "database `{name}`: no node for member {i} (needs {request}) among the {}nodes with {product} {}: {}; add nodes, free room or lower instances",
                if engine.one_architecture() { format!("{} ", group.0) } else { String::new() },
                group.1,
                detail.join(", ")
            )));
        };
        taken.insert(pick.id);
        nodes[i] = Some(pick.id);
    }
    Ok(Members { nodes: nodes.into_iter().flatten().collect(), arch: group.0, version: group.1, arch_chosen })
}

/// Where member `slot` of database `name` goes when it leaves its node (a drain): the
/// node [`place_members`] picks for it when every other member stays where it is (same
/// architecture and PostgreSQL major, not cordoned, room for its `resources`, sites with
/// the fewest members first). The database's record with that one member moved, or why
/// no node can take it. Never the primary's member (a drain switches it over first).
pub fn move_member(state: &ClusterState, name: &str, slot: u32) -> Result<DatabaseRecord, PlanError> {
    let record = state
        .desired
        .databases
        .get(name)
        .ok_or_else(|| PlanError::Database(format!("database `{name}` does not exist")))?;
    if slot == record.primary {
        return Err(PlanError::Database(format!(
            "database `{name}`: member {slot} is the primary; switch it over before it moves"
        )));
    }
    if slot as usize >= record.members.len() {
        return Err(PlanError::Database(format!("database `{name}` has no member {slot}")));
    }
    let mut previous = record.clone();
    // Not a node: the member is placed anew, the others keep their nodes.
    previous.members[slot as usize] = NodeId::MAX;
    let used = used_except(state, &state.desired.services, &state.desired.databases, name);
    let members = place_members(state, name, &record.spec, Some(&previous), &used)?;
    let to = members.nodes.get(slot as usize).copied().unwrap_or(NodeId::MAX);
    let mut next = record.clone();
    // Only this member moves (the others are re-placed by their own rules, if at all).
    next.members[slot as usize] = to;
    Ok(next)
}

/// A database's passwords: the previous ones where they exist, a new one from
/// `passwords` for each role that has none; users no longer in the spec are dropped.
/// `passwords` returns `None` when the caller has no source (plain `plan_deploy`).
pub fn credentials(
    name: &str,
    previous: Option<&DbCredentials>,
    users: &[String],
    passwords: &mut dyn FnMut() -> Option<String>,
) -> Result<DbCredentials, PlanError> {
    let mut next = |role: &str| {
        passwords().ok_or_else(|| PlanError::NoPasswordSource { database: name.to_string(), role: role.to_string() })
    };
    let superuser = match previous {
        Some(p) => p.superuser.clone(),
        None => next("holdfast")?,
    };
    let replication = match previous {
        Some(p) => p.replication.clone(),
        None => next("holdfast_replication")?,
    };
    let mut out = BTreeMap::new();
    for user in users {
        let pw = match previous.and_then(|p| p.users.get(user)) {
            Some(pw) => pw.clone(),
            None => next(user)?,
        };
        out.insert(user.clone(), pw);
    }
    Ok(DbCredentials { superuser, replication, users: out })
}

/// The endpoint addresses of a new database of `engine`, past every address in `taken`
/// (which they are added to); each from the hash of its endpoint's service name.
pub fn addresses(project: &str, name: &str, engine: DbEngine, taken: &mut Vec<Ipv4Addr>) -> DbAddresses {
    let mut one = |endpoint: DbEndpoint| {
        let a = service_address(project, &engine.endpoint_name(name, endpoint), taken);
        taken.push(a);
        a
    };
    let rw = one(DbEndpoint::Rw);
    let ro = one(DbEndpoint::Ro);
    let r = one(DbEndpoint::R);
    let sentinel = engine.endpoints().contains(&DbEndpoint::Sentinel).then(|| one(DbEndpoint::Sentinel));
    DbAddresses { rw, ro, r, sentinel }
}

/// Every address in use by services and databases.
pub fn addresses_in_use(
    services: &BTreeMap<String, ServiceRecord>,
    databases: &BTreeMap<String, DatabaseRecord>,
) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = services.values().map(|s| s.address).collect();
    for db in databases.values() {
        out.extend(DbEndpoint::ALL.iter().filter_map(|e| db.addresses.get(*e)));
    }
    out
}

/// Capacity used on each node by `services` (as placed in `state`) and by `databases`
/// except `except`.
pub fn used_except(
    state: &ClusterState,
    services: &BTreeMap<String, ServiceRecord>,
    databases: &BTreeMap<String, DatabaseRecord>,
    except: &str,
) -> BTreeMap<NodeId, Capacity> {
    let mut used = reserved_by_services(state, services);
    let others: BTreeMap<String, DatabaseRecord> =
        databases.iter().filter(|(k, _)| k.as_str() != except).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (node, c) in reserved_by(&others) {
        let slot = used.entry(node).or_default();
        *slot = slot.add(&c);
    }
    used
}

/// True when a change from `old` to `new` rewrites the members' configuration.
pub fn needs_new_generation(old: &DatabaseSpec, new: &DatabaseSpec) -> bool {
    let mut a = old.clone();
    a.instances = new.instances;
    a.placement = new.placement.clone();
    &a != new
}

/// Settings a hot standby must have at least as high as its primary's, with
/// PostgreSQL 15's defaults. Members apply changed settings by restarting standbys first
/// (then the primary by a switchover), which suits raising them, not lowering them.
const STANDBY_AT_LEAST_PRIMARY: &[(&str, i64)] = &[
    ("max_connections", 100),
    ("max_locks_per_transaction", 64),
    ("max_prepared_transactions", 0),
    ("max_worker_processes", 8),
];

/// Why a change from `old` to `new` cannot be applied to database `name`'s members, if
/// it cannot: lowering a setting a standby must hold at least as high as its primary's,
/// with more than one member (a standby restarted first with the lower value stops
/// replaying until the primary has it too).
pub fn refused_decrease(name: &str, old: &DatabaseSpec, new: &DatabaseSpec) -> Option<String> {
    if old.instances.max(new.instances) <= 1 {
        return None;
    }
    let value = |spec: &DatabaseSpec, key: &str, default: i64| -> i64 {
        spec.parameters.get(key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    };
    STANDBY_AT_LEAST_PRIMARY.iter().find_map(|(key, default)| {
        let (a, b) = (value(old, key, *default), value(new, key, *default));
        (b < a).then(|| {
            format!(
                "database `{name}`: lowering {key} ({a} -> {b}) cannot be rolled out: a standby must keep {key} at least as high as its primary's, and members restart standbys first; to lower it, deploy the database with `instances: 1` first (its standbys are dropped), then with the lower value, then scale back"
            )
        })
    })
}

/// Human-readable changes of a database's spec (passwords and parameter values are never
/// shown).
pub fn describe_change(old: &DatabaseSpec, new: &DatabaseSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.instances != new.instances {
        out.push(format!("instances: {} -> {}", old.instances, new.instances));
    }
    if old.sync != new.sync {
        if new.engine == DbEngine::Redis {
            let word = |sync: u32| if sync == 0 { "none" } else { "replicated" };
            out.push(format!("durability: {} -> {}", word(old.sync), word(new.sync)));
        } else {
            out.push(format!("sync: {} -> {}", old.sync, new.sync));
        }
    }
    let (a, b) = (old.redis_options(), new.redis_options());
    if new.engine == DbEngine::Redis && a.persistence != b.persistence {
        out.push(format!("persistence: {} -> {}", a.persistence, b.persistence));
    }
    if new.engine == DbEngine::Redis && a.maxmemory != b.maxmemory {
        let show = |m: Option<u64>| m.map_or("no limit".to_string(), holdfast_spec::units::format_bytes);
        out.push(format!("maxmemory: {} -> {}", show(a.maxmemory), show(b.maxmemory)));
    }
    if old.on_sync_loss != new.on_sync_loss {
        out.push(format!("on_sync_loss: {} -> {}", old.on_sync_loss, new.on_sync_loss));
    }
    for (field, a, b) in [("databases", &old.databases, &new.databases), ("users", &old.users, &new.users)] {
        let mut d: Vec<String> = b.iter().filter(|x| !a.contains(x)).map(|x| format!("+{x}")).collect();
        d.extend(a.iter().filter(|x| !b.contains(x)).map(|x| format!("-{x}")));
        if !d.is_empty() {
            out.push(format!("{field}: {}", d.join(" ")));
        }
    }
    let mut params = Vec::new();
    for (k, v) in &new.parameters {
        match old.parameters.get(k) {
            None => params.push(format!("+{k}")),
            Some(o) if o != v => params.push(format!("~{k}")),
            Some(_) => {}
        }
    }
    params.extend(old.parameters.keys().filter(|k| !new.parameters.contains_key(*k)).map(|k| format!("-{k}")));
    if !params.is_empty() {
        out.push(format!("parameters: {}", params.join(" ")));
    }
    if old.bin_dir != new.bin_dir {
        out.push(format!("bin_dir: {:?} -> {:?}", old.bin_dir, new.bin_dir));
    }
    if old.placement != new.placement {
        out.push("placement: changed".into());
    }
    if old.resources != new.resources {
        out.push("resources: changed".into());
    }
    out
}

#[cfg(test)]
mod tests;
