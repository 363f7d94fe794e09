//! The status view: the replicated desired state joined with what this node's agent
//! observes, plus plain-language warnings.
use std::collections::BTreeMap;

use holdfast_agent::{InstanceId, InstanceState, InstanceStatus};
use holdfast_api::types::{ControlPlaneSummary, ExitView, InstanceView, NodeSummary, ServiceView, StatusResponse};
use holdfast_state::ClusterState;

use crate::NodeContext;

/// The lowercase name shown for an agent state.
pub fn state_name(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Starting => "starting",
        InstanceState::Ready => "ready",
        InstanceState::Unready => "unready",
        InstanceState::Backoff => "backoff",
        InstanceState::CrashLoop => "crash-loop",
        InstanceState::Stopping => "stopping",
        InstanceState::Exited => "exited",
    }
}

/// Which cgroup hierarchy this machine offers.
pub fn cgroup_mode() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        "v1"
    } else {
        "unavailable"
    }
}

/// Builds `GET /v1/status`.
pub async fn build(ctx: &NodeContext) -> StatusResponse {
    let state = ctx.control.state();
    let metrics = {
        use holdfast_raft::WatchReceiver;
        ctx.control.raft.metrics().borrow_watched().clone()
    };
    let observed = crate::peer::heartbeat::observed_by_node(ctx).await;
    let role = format!("{:?}", metrics.state).to_lowercase();
    let voters = metrics.membership_config.membership().voter_ids().count();
    let control_plane = ControlPlaneSummary {
        leader: metrics.current_leader,
        term: metrics.current_term,
        role,
        voters,
        revision: state.revision,
        last_applied: metrics.last_applied.as_ref().map(|l| l.index),
    };
    let node = NodeSummary {
        id: ctx.identity.node_id,
        name: ctx.identity.name.clone(),
        addr: ctx.listen.to_string(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        cgroups: cgroup_mode().to_string(),
    };
    let (services, mut warnings) = services_view(&state, &observed);
    warnings.extend(crate::api::nodes::cluster_warnings(ctx));
    warnings.extend(ctx.workers.warnings());
    for n in state.nodes.values().filter(|n| n.down) {
        warnings.push(format!("node {} is down; its replicas were placed elsewhere", n.name));
    }
    warnings.extend(database_drain_warnings(&state));
    if ctx.control.is_leader() {
        warnings.extend(ctx.database_waits.lock().map(|w| w.clone()).unwrap_or_default());
    }
    StatusResponse { node, control_plane, services, routes: state.desired.routes.clone(), warnings }
}

/// Database members on draining nodes, which the leader moves away (the primary by a
/// switchover first).
pub fn database_drain_warnings(state: &ClusterState) -> Vec<String> {
    let mut out = Vec::new();
    for (name, db) in &state.desired.databases {
        for (i, node) in db.members.iter().enumerate() {
            let Some(n) = state.nodes.get(node).filter(|n| n.draining && !n.down) else { continue };
            let how = if i as u32 == db.primary {
                "the primary: switched over to a standby first, then moved"
            } else {
                "a standby: moved once the other members carry the commits without it"
            };
            out.push(format!("database {name} member {i} is leaving {} (drain): {how}", n.name));
        }
    }
    out
}

/// Replicas that break their placement rules where they run (no other node may take
/// them), and `spread: sites` services that ended up in one site.
pub fn placement_warnings(state: &ClusterState) -> Vec<String> {
    let workloads = holdfast_state::plan::workloads(&state.desired.services);
    let nodes = state.node_views();
    let mut out = Vec::new();
    for v in holdfast_placement::violations(&workloads, &nodes, &state.desired.placements) {
        out.push(format!(
            "{}-{} breaks its placement rules: {}; it stays there until another node may take it",
            v.service, v.replica, v.reason
        ));
    }
    for e in holdfast_state::drain::stuck(state) {
        out.push(format!("drain: {}; the node keeps it until a node may take it", e.describe(state)));
    }
    let sites: std::collections::BTreeSet<&str> = state.nodes.values().map(|n| n.site.as_str()).collect();
    for (service, site) in holdfast_placement::unspread_sites(&workloads, &nodes, &state.desired.placements) {
        let count = state.desired.placements.get(&service).map_or(0, Vec::len);
        out.push(format!(
            "`{service}` asks for spread: sites, but all {count} replicas run in site `{site}` although the cluster has sites {}: losing site `{site}` takes them all down (no node of another site could take one when they were placed: node_selector, anti_affinity or room)",
            sites.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

/// The pure part of status: services and warnings from state + observations.
pub fn services_view(
    state: &ClusterState,
    observed: &BTreeMap<u64, Vec<InstanceStatus>>,
) -> (Vec<ServiceView>, Vec<String>) {
    let by_id: BTreeMap<(u64, &InstanceId), &InstanceStatus> =
        observed.iter().flat_map(|(node, v)| v.iter().map(move |s| ((*node, &s.id), s))).collect();
    let node_name = |id: u64| state.nodes.get(&id).map(|n| n.name.clone()).unwrap_or_else(|| format!("node {id}"));
    let mut warnings = Vec::new();
    let mut services = Vec::new();
    for (name, record) in &state.desired.services {
        let placed = state.desired.placements.get(name).cloned().unwrap_or_default();
        let mut instances = Vec::new();
        for (replica, node) in placed.iter().enumerate() {
            let id = InstanceId::new(name.clone(), replica as u32);
            let seen = by_id.get(&(*node, &id)).copied();
            let view = match seen {
                Some(s) => {
                    if s.state == InstanceState::CrashLoop {
                        warnings.push(format!(
                            "{id} is crash-looping ({} restarts){}",
                            s.restarts,
                            s.last_exit.as_ref().map(|e| format!(": last exit {}", e.description)).unwrap_or_default()
                        ));
                    }
                    if let Some(e) = s.last_exit.as_ref().filter(|e| e.oom_killed) {
                        warnings.push(format!("{id} was killed for running out of memory ({})", e.description));
                    }
                    for w in &s.warnings {
                        warnings.push(format!("{id}: {w}"));
                    }
                    InstanceView {
                        name: id.to_string(),
                        replica: replica as u32,
                        node: node_name(*node),
                        generation: s.generation,
                        state: if !state.is_current(*node, name, replica as u32, s.generation)
                            && s.state != InstanceState::Stopping
                        {
                            "outdated".to_string()
                        } else {
                            state_name(s.state).to_string()
                        },
                        ready: s.ready,
                        pid: s.pid,
                        restarts: s.restarts,
                        ports: s.ports.clone(),
                        started_at_ms: s.started_at_ms,
                        last_exit: s.last_exit.as_ref().map(|e| ExitView {
                            code: e.code,
                            signal: e.signal,
                            oom_killed: e.oom_killed,
                            at_ms: e.at_ms,
                            description: e.description.clone(),
                        }),
                        last_health_error: s.last_health_error.clone(),
                        adopted: s.adopted,
                        memory_bytes: s.memory_bytes,
                        cpu_usage_ns: s.cpu_usage_ns,
                    }
                }
                None => InstanceView {
                    name: id.to_string(),
                    replica: replica as u32,
                    node: node_name(*node),
                    generation: state.instance_generation(name, replica as u32).unwrap_or(record.generation),
                    state: if observed.contains_key(node) { "pending" } else { "unknown" }.to_string(),
                    ready: false,
                    pid: None,
                    restarts: 0,
                    ports: BTreeMap::new(),
                    started_at_ms: None,
                    last_exit: None,
                    last_health_error: None,
                    adopted: false,
                    memory_bytes: None,
                    cpu_usage_ns: None,
                },
            };
            instances.push(view);
        }
        let ready = instances
            .iter()
            .filter(|i| i.ready && state.instance_generation(name, i.replica) == Some(i.generation))
            .count() as u32;
        let rollout = record.rollout.as_ref().map(|r| {
            let total = instances.len() as u32;
            let rolled = r.rolled.min(total);
            let waiting = instances.iter().find(|i| {
                i.replica < rolled && !(i.ready && state.instance_generation(name, i.replica) == Some(i.generation))
            });
            let mut text = format!("rolling: {rolled} of {total} replicas on generation {}", record.generation);
            if let Some(w) = waiting {
                text.push_str(&format!("; waiting for {} to be ready", w.name));
                if let Some(h) = &w.last_health_error {
                    text.push_str(&format!(" (health check: {h})"));
                }
                text.push_str(" before the next replica");
            }
            text
        });
        services.push(ServiceView {
            rollout,
            name: name.clone(),
            project: record.project.clone(),
            replicas: record.spec.replicas,
            ready,
            generation: record.generation,
            address: record.address.to_string(),
            ports: record.spec.ports.clone(),
            placement: record.spec.placement.clone(),
            image: record.spec.image.clone(),
            instances,
        });
    }
    for (service, moves) in &state.desired.moves {
        for (replica, to) in moves {
            let id = InstanceId::new(service.clone(), *replica);
            let from = state.desired.placements.get(service).and_then(|p| p.get(*replica as usize)).copied();
            let new_state = match by_id.get(&(*to, &id)) {
                Some(s) if s.ready => "ready, switching over",
                Some(s) => state_name(s.state),
                None => "pending",
            };
            warnings.push(format!(
                "{id} is moving from {} to {} (drain): new instance {new_state}; the old one stops once it is ready",
                from.map(node_name).unwrap_or_default(),
                node_name(*to)
            ));
        }
    }
    warnings.extend(placement_warnings(state));
    for (service, node, count) in holdfast_placement::shared_nodes(&state.desired.placements) {
        if state.nodes.len() > 1 {
            warnings.push(format!(
                "{count} replicas of `{service}` share node {}: losing that machine takes them all down",
                node_name(node)
            ));
        }
    }
    if state.nodes.len() == 1 && !state.desired.services.is_empty() {
        warnings.push(
            "single-node cluster: if this machine fails, every service goes down (add nodes to survive a machine loss)"
                .into(),
        );
    }
    (services, warnings)
}

#[cfg(test)]
mod tests {
    //! Placement warnings from a state: replicas stuck against their rules, services
    //! asking for site spread that all run in one site.
    use super::*;
    use holdfast_state::{Command, NodeRecord, Request};

    /// (id, site, labels) of a test node.
    type TestNode<'a> = (u64, &'a str, &'a [(&'a str, &'a str)]);

    fn state(yaml: &str, nodes: &[TestNode<'_>]) -> ClusterState {
        let mut s = ClusterState::default();
        for (id, site, labels) in nodes {
            s.apply(&Request::new(Command::UpsertNode(NodeRecord {
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..NodeRecord::new(
                    *id,
                    format!("n{id}"),
                    format!("127.0.0.{id}:1"),
                    site.to_string(),
                    "amd64",
                    holdfast_placement::Capacity { cpu_millis: 4000, memory_bytes: 4 << 30 },
                )
            })));
        }
        let stack = holdfast_spec::parse_str("t.yaml", yaml).expect("spec parses");
        let (_, desired) = holdfast_state::plan::plan_deploy(&s, &stack).expect("plan");
        s.apply(&Request::new(Command::SetDesired { expected_revision: s.revision, desired }));
        s
    }

    const SITES: &str =
        "project: p\nservices:\n  web:\n    run: [x]\n    replicas: 2\n    placement: {spread: sites, node_selector: {disk: ssd}}\n";

    #[test]
    fn site_spread_that_could_not_be_honoured_is_reported() {
        // only site a has ssd nodes
        let s = state(SITES, &[(1, "a", &[("disk", "ssd")]), (2, "a", &[("disk", "ssd")]), (3, "b", &[])]);
        assert_eq!(
            placement_warnings(&s),
            ["`web` asks for spread: sites, but all 2 replicas run in site `a` although the cluster has sites a, b: losing site `a` takes them all down (no node of another site could take one when they were placed: node_selector, anti_affinity or room)"]
        );
        // honoured: one per site
        let s =
            state(SITES, &[(1, "a", &[("disk", "ssd")]), (2, "a", &[("disk", "ssd")]), (3, "b", &[("disk", "ssd")])]);
        assert_eq!(s.desired.placements["web"].len(), 2);
        assert!(placement_warnings(&s).is_empty(), "{:?}", placement_warnings(&s));
        // one site only: nothing to warn about
        let s = state(SITES, &[(1, "a", &[("disk", "ssd")]), (2, "a", &[("disk", "ssd")])]);
        assert!(placement_warnings(&s).is_empty());
    }

    #[test]
    fn replicas_stuck_against_their_rules_are_reported() {
        let mut s = state(SITES, &[(1, "a", &[("disk", "ssd")]), (2, "b", &[("disk", "ssd")])]);
        s.apply(&Request::new(Command::SetNodeLabels {
            id: 2,
            set: Default::default(),
            remove: ["disk".to_string()].into(),
            start_id: None,
        }));
        assert_eq!(
            placement_warnings(&s),
            ["web-1 breaks its placement rules: n2 does not match node_selector {disk=ssd}; it stays there until another node may take it"]
        );
    }

    #[test]
    fn a_drain_that_cannot_finish_says_why() {
        // Only n2 has an ssd: draining it leaves web-0 nowhere to go.
        let yaml = "project: p\nservices:\n  web:\n    run: [x]\n    placement: {node_selector: {disk: ssd}}\n";
        let mut s = state(yaml, &[(1, "a", &[]), (2, "b", &[("disk", "ssd")])]);
        assert_eq!(s.desired.placements["web"], [2]);
        assert!(placement_warnings(&s).is_empty());
        s.apply(&Request::new(Command::SetNodeFlags { id: 2, cordoned: Some(true), down: None, draining: Some(true) }));
        let w = placement_warnings(&s);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("drain: web-0 cannot leave n2: "), "{w:?}");
        assert!(w[0].contains("node_selector {disk=ssd}"), "{w:?}");
    }
}
