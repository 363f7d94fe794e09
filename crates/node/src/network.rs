//! Service networking of this node: builds the `holdfast-net` routing table from the
//! replicated state and the instances' observed readiness, and hands it to the node's
//! proxy, DNS server and HTTP ingress whenever anything changes.
//!
//! [`net_table`] is pure. An instance that fails its health check becomes unready in the
//! agent's status, which wakes [`run`] at once, so it leaves rotation within one check
//! interval.
//!
//! Endpoints are this node's own instances (at their loopback ports) and the instances
//! of other nodes that are not down, reached through [`crate::tunnel`] entrances; their
//! readiness is what those nodes last reported to the leader.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use holdfast_agent::{InstanceId, InstanceStatus};
use holdfast_net::{Endpoint, NetHandle, NetTable, Route, ServiceNet};
use holdfast_state::ClusterState;
use tokio_util::sync::CancellationToken;

use crate::NodeContext;

/// The routing table for `this_node`: every service with its stable address and ports,
/// and as endpoints the instances running here and, through `entrance(node, port)`, the
/// instances of other nodes that are not down.
pub fn net_table(
    state: &ClusterState,
    this_node: u64,
    observed: &BTreeMap<u64, Vec<InstanceStatus>>,
    entrance: &dyn Fn(u64, u16) -> Option<SocketAddr>,
) -> NetTable {
    let by_id: BTreeMap<(u64, &InstanceId), &InstanceStatus> =
        observed.iter().flat_map(|(n, v)| v.iter().map(move |s| ((*n, &s.id), s))).collect();
    let mut services = Vec::new();
    for (name, record) in &state.desired.services {
        let placed = state.desired.placements.get(name).cloned().unwrap_or_default();
        // Every current instance: the placed replicas and the new instances of replicas
        // being moved off a draining node (both serve until the move completes).
        let mut current: Vec<(u32, u64)> = placed.iter().enumerate().map(|(i, n)| (i as u32, *n)).collect();
        if let Some(moves) = state.desired.moves.get(name) {
            current.extend(moves.iter().map(|(i, n)| (*i, *n)));
        }
        let mut endpoints = Vec::new();
        for (replica, node) in current {
            if node != this_node && state.nodes.get(&node).is_none_or(|n| n.down) {
                continue;
            }
            let id = InstanceId::new(name.clone(), replica);
            let Some(s) = by_id.get(&(node, &id)) else { continue };
            let ports: BTreeMap<String, SocketAddr> = if node == this_node {
                s.ports.iter().map(|(p, port)| (p.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))).collect()
            } else {
                s.ports.iter().filter_map(|(p, port)| Some((p.clone(), entrance(node, *port)?))).collect()
            };
            if ports.len() < s.ports.len() {
                continue; // a port without a way to reach it
            }
            endpoints.push(Endpoint {
                instance: id.to_string(),
                ports,
                // Only the current generation on the node the state names: an instance
                // fenced or left over on a node that was cut off takes no traffic.
                ready: s.ready && state.is_current(node, name, replica, s.generation),
            });
        }
        services.push(ServiceNet {
            project: record.project.clone(),
            name: name.clone(),
            address: record.address,
            ports: record.spec.ports.clone(),
            endpoints,
        });
    }
    let routes = state
        .desired
        .routes
        .iter()
        .map(|r| Route { host: r.host.clone(), path: r.path.clone(), service: r.service.clone(), port: r.port.clone() })
        .collect();
    NetTable { services, routes }
}

/// Environment for instances of `project`: `<SERVICE>_HOST`, `<SERVICE>_<PORT>_ADDR` for
/// every service of the project, and `HOLDFAST_DNS_DOMAIN`.
pub fn service_env(state: &ClusterState, project: &str) -> BTreeMap<String, String> {
    holdfast_net::service_env(&net_table(state, u64::MAX, &BTreeMap::new(), &|_, _| None), project)
}

/// Keeps the node's networking in step with state and readiness.
pub async fn run(ctx: NodeContext, net: NetHandle, cancel: CancellationToken) {
    let mut states = ctx.control.subscribe();
    let mut agent = ctx.agent.subscribe();
    let mut last = NetTable::default();
    loop {
        let state = states.borrow_and_update().clone();
        let observed = crate::cluster::observed_by_node(&ctx).await;
        let entrance = |node: u64, port: u16| {
            let addr = state.nodes.get(&node)?.addr.clone();
            ctx.tunnels.entrance(&addr, port)
        };
        let table = net_table(&state, ctx.identity.node_id, &observed, &entrance);
        if table != last {
            net.update(table.clone());
            last = table;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = states.changed() => if r.is_err() { break },
            r = agent.changed() => if r.is_err() { break },
            // Other nodes' readiness arrives with heartbeats.
            _ = tokio::time::sleep(ctx.timing().heartbeat) => {}
        }
    }
    net.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_current_generation_ready_instances_are_ready_endpoints() {
        let mut state = ClusterState::default();
        state.apply(&holdfast_state::Request::new(holdfast_state::Command::UpsertNode(holdfast_state::NodeRecord {
            id: 1,
            name: "n1".into(),
            addr: "127.0.0.1:1".into(),
            site: "a".into(),
            arch: "amd64".into(),
            capacity: holdfast_placement::Capacity { cpu_millis: 4000, memory_bytes: 4 << 30 },
            labels: Default::default(),
            labels_start_id: 0,
            cordoned: false,
            draining: false,
            down: false,
            cert_fingerprint: String::new(),
        })));
        let stack = holdfast_spec::parse_str(
            "t.yaml",
            "project: p\nservices:\n  web:\n    run: [x]\n    replicas: 2\n    ports: {http: 8080}\nroutes:\n  - {host: a.example, service: web}\n",
        )
        .expect("spec");
        let (_, desired) = holdfast_state::plan::plan_deploy(&state, &stack).expect("plan");
        state.apply(&holdfast_state::Request::new(holdfast_state::Command::SetDesired {
            expected_revision: state.revision,
            desired,
        }));
        let generation = state.desired.services["web"].generation;
        let mut s0: InstanceStatus = serde_json::from_value(serde_json::json!({
            "id": {"service": "web", "replica": 0}, "generation": generation, "pid": 1, "state": "Ready", "ready": true,
            "restarts": 0, "ports": {"http": 20001}, "started_at_ms": null, "last_exit": null,
            "last_health_error": null, "adopted": false, "memory_bytes": null, "cpu_usage_ns": null
        }))
        .expect("status");
        let mut s1 = s0.clone();
        s1.id = InstanceId::new("web", 1);
        s1.ready = false;
        s1.ports.insert("http".into(), 20002);
        let none = |_: u64, _: u16| None;
        let on = |n: u64, v: Vec<InstanceStatus>| BTreeMap::from([(n, v)]);
        let t = net_table(&state, 1, &on(1, vec![s0.clone(), s1.clone()]), &none);
        assert_eq!(t.services.len(), 1);
        assert_eq!(t.services[0].ports["http"], 8080);
        let ready: Vec<(String, bool)> =
            t.services[0].endpoints.iter().map(|e| (e.instance.clone(), e.ready)).collect();
        assert_eq!(ready, vec![("web-0".to_string(), true), ("web-1".to_string(), false)]);
        assert_eq!(t.services[0].endpoints[0].ports["http"], "127.0.0.1:20001".parse::<SocketAddr>().expect("addr"));
        assert_eq!(t.routes[0].host, "a.example");
        s0.generation = 0;
        let t = net_table(&state, 1, &on(1, vec![s0]), &none);
        assert!(!t.services[0].endpoints[0].ready, "an outdated instance takes no new traffic");
        assert!(
            net_table(&state, 2, &on(1, vec![s1.clone()]), &none).services[0].endpoints.is_empty(),
            "another node's instance without a tunnel entrance is not an endpoint"
        );
        let tunnel = |_: u64, port: u16| Some(SocketAddr::from(([127, 0, 0, 1], port + 1000)));
        let t = net_table(&state, 2, &on(1, vec![s1.clone()]), &tunnel);
        assert_eq!(t.services[0].endpoints[0].ports["http"], "127.0.0.1:21002".parse::<SocketAddr>().expect("addr"));
        state.nodes.get_mut(&1).expect("node").down = true;
        assert!(
            net_table(&state, 2, &on(1, vec![s1]), &tunnel).services[0].endpoints.is_empty(),
            "down nodes are skipped"
        );
        let env = service_env(&state, "p");
        assert_eq!(env.get("WEB_HTTP_ADDR"), Some(&format!("{}:8080", state.desired.services["web"].address)));
    }
}
