//! Service networking of this node: builds the `holdfast-net` routing table from the
//! replicated state, the instances' observed readiness and this node's own view of its
//! links to other nodes, and hands it to the node's proxy, DNS server and HTTP ingress
//! whenever anything changes.
//!
//! [`net_table`], [`remote_ports`] and [`reachable_only`] are pure. An instance that fails
//! its health check becomes unready in the agent's status, which wakes [`run`] at once, so
//! it leaves rotation within one check interval.
//!
//! Endpoints are this node's own instances (at their loopback ports) and the instances of
//! other nodes that are not down, as [`Target::Remote`] ports reached through this node's
//! link to that node ([`crate::links`], dialed by [`crate::tunnel::TunnelDialer`]). Their
//! readiness is what those nodes last reported to the leader, *and* what this node sees
//! itself: a remote endpoint is unready while the link to its node is down (no answer to
//! pings for about 1.5 s), and a port whose last check failed is left out, so traffic
//! leaves a dead or frozen node before the leader has declared it down.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use holdfast_agent::{InstanceId, InstanceStatus};
use holdfast_api::peer::{MemberRole, MemberStatus};
use holdfast_net::{Endpoint, NetHandle, NetTable, Route, ServiceNet, Target};
use holdfast_spec::DbEndpoint;
use holdfast_state::{ClusterState, DbEngine};
use tokio_util::sync::CancellationToken;

use crate::links::Reachability;
use crate::NodeContext;

/// The complete routing table for `this_node`: every service with its stable address and
/// ports, and as endpoints the instances running here and the instances of other nodes
/// that are not down (as ports on those nodes, named by their addresses).
pub fn net_table(state: &ClusterState, this_node: u64, observed: &BTreeMap<u64, Vec<InstanceStatus>>) -> NetTable {
    let by_id: BTreeMap<(u64, &InstanceId), &InstanceStatus> =
        observed.iter().flat_map(|(n, v)| v.iter().map(move |s| ((*n, &s.id), s))).collect();
    let mut peers: BTreeMap<u64, Arc<str>> = BTreeMap::new();
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
            let id = InstanceId::new(name.clone(), replica);
            let Some(s) = by_id.get(&(node, &id)) else { continue };
            let ports: BTreeMap<String, Target> = if node == this_node {
                s.ports
                    .iter()
                    .map(|(p, port)| (p.clone(), Target::Addr(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))))
                    .collect()
            } else {
                let Some(n) = state.nodes.get(&node).filter(|n| !n.down) else { continue };
                let peer = peers.entry(node).or_insert_with(|| Arc::from(n.addr.as_str())).clone();
                s.ports
                    .iter()
                    .map(|(p, port)| (p.clone(), Target::Remote { peer: peer.clone(), port: *port }))
                    .collect()
            };
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
            single_writer: false,
            redis_wait: None,
        });
    }
    let routes = state
        .desired
        .routes
        .iter()
        .map(|r| Route {
            https_redirect: r.https_redirect,
            timeout: r.timeout_ms.map_or(holdfast_net::DEFAULT_ROUTE_TIMEOUT, std::time::Duration::from_millis),
            ..Route::new(&r.host, &r.path, &r.service, &r.port)
        })
        .collect();
    NetTable { services, routes, ..NetTable::default() }
}

/// The endpoint services of every database for `this_node`, from the members' reports
/// (pure). PostgreSQL: `<db>-rw`, `-ro`, `-r` (port 5432) and `-wal` (the `-rw` address,
/// port 5433); Redis: `<db>` (the master), `-ro`, `-r` (port 6379) and `-repl` (the
/// master's address, port 6380). The master endpoint (`-rw`, Redis's `<db>`) leads only
/// to the member holding the current term that reports itself primary of it — a stale
/// primary, or a promoted replica before it says so, gets nothing — and is
/// single-writer: connections to a member that loses it are cut. `-ro` leads to
/// answering replicas, `-r` to both. The replication endpoint (`-wal`, `-repl`) is what
/// replicas stream from: the same primary, but not cut, so a primary shutting down or
/// fenced for a switchover still hands its last changes to them.
pub fn database_services(
    state: &ClusterState,
    this_node: u64,
    members: &BTreeMap<u64, Vec<MemberStatus>>,
) -> Vec<ServiceNet> {
    let mut out = Vec::new();
    for (name, rec) in &state.desired.databases {
        let engine = rec.spec.engine;
        let port_name = match engine {
            DbEngine::Postgres => "pg",
            DbEngine::Redis => "redis",
        };
        let (mut rw, mut ro, mut any, mut wal) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, node) in rec.members.iter().enumerate() {
            let i = i as u32;
            let Some(st) = members.get(node).and_then(|v| v.iter().find(|m| &m.database == name && m.member == i))
            else {
                continue;
            };
            let Some(port) = st.port else { continue };
            let target = if *node == this_node {
                Target::Addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            } else {
                let Some(n) = state.nodes.get(node).filter(|n| !n.down) else { continue };
                Target::Remote { peer: Arc::from(n.addr.as_str()), port }
            };
            let primary = i == rec.primary && st.role == MemberRole::Primary && st.term == rec.term && st.answering;
            let replica = st.role == MemberRole::Replica && st.answering;
            let endpoint = |ready: bool| Endpoint {
                instance: holdfast_postgres::conf::member_name(name, i),
                ports: BTreeMap::from([(port_name.to_string(), target.clone())]),
                ready,
            };
            rw.push(endpoint(primary));
            wal.push(endpoint(primary));
            ro.push(endpoint(replica));
            any.push(endpoint(primary || replica));
        }
        let service =
            |service: String, address: Ipv4Addr, port: u16, endpoints: Vec<Endpoint>, single_writer: bool| ServiceNet {
                project: rec.project.clone(),
                name: service,
                address,
                ports: BTreeMap::from([(port_name.to_string(), port)]),
                endpoints,
                single_writer,
                redis_wait: None,
            };
        let ep = |e: DbEndpoint| engine.endpoint_name(name, e);
        let port = engine.port(DbEndpoint::Rw);
        let mut master = service(ep(DbEndpoint::Rw), rec.addresses.rw, port, rw, true);
        if engine == DbEngine::Redis && rec.spec.sync > 0 {
            // `durability: replicated`: a write is acknowledged once a replica has it.
            master.redis_wait = Some(holdfast_net::resp::RedisWait {
                replicas: rec.spec.sync,
                timeout: std::time::Duration::from_millis(REDIS_WAIT_MS),
            });
        }
        out.push(master);
        out.push(service(ep(DbEndpoint::Ro), rec.addresses.ro, port, ro, false));
        out.push(service(ep(DbEndpoint::R), rec.addresses.r, port, any, false));
        // Replication: the primary, at the master address on its own port, never cut.
        let (suffix, repl_port) = match engine {
            DbEngine::Postgres => ("wal", holdfast_postgres::WAL_PORT),
            DbEngine::Redis => ("repl", holdfast_redis::REPL_PORT),
        };
        let mut repl = service(format!("{name}-{suffix}"), rec.addresses.rw, repl_port, wal, false);
        if engine == DbEngine::Redis {
            // A second port to the same master (see `holdfast_redis::REPL_PORT_ALT`).
            let alt = "redis-alt".to_string();
            repl.ports.insert(alt.clone(), holdfast_redis::REPL_PORT_ALT);
            for e in &mut repl.endpoints {
                if let Some(t) = e.ports.get(port_name).cloned() {
                    e.ports.insert(alt.clone(), t);
                }
            }
        }
        out.push(repl);
    }
    out
}

/// How long a write to a Redis database with `durability: replicated` waits for a replica
/// before it is answered with an error (a live replica answers within a round trip).
pub const REDIS_WAIT_MS: u64 = 1000;

/// What each Redis database's Sentinel-compatible endpoint on this node tells (pure):
/// the master and replicas endpoints, whether a master of the current term answers and
/// how many replicas do, and the term.
pub fn sentinel_table(
    state: &ClusterState,
    members: &BTreeMap<u64, Vec<MemberStatus>>,
) -> holdfast_redis::sentinel_server::Table {
    let mut out = BTreeMap::new();
    for (name, rec) in &state.desired.databases {
        let Some(address) = rec.addresses.sentinel.filter(|_| rec.spec.engine == DbEngine::Redis) else { continue };
        let report = |i: usize| {
            rec.members
                .get(i)
                .and_then(|n| members.get(n))
                .and_then(|v| v.iter().find(|m| &m.database == name && m.member == i as u32))
        };
        let master_up = report(rec.primary as usize)
            .is_some_and(|m| m.role == MemberRole::Primary && m.term == rec.term && m.answering);
        let replicas_up =
            (0..rec.members.len()).filter_map(report).filter(|m| m.role == MemberRole::Replica && m.answering).count()
                as u32;
        let port = DbEngine::Redis.port(DbEndpoint::Rw);
        out.insert(
            SocketAddr::from((address, holdfast_spec::SENTINEL_PORT)),
            holdfast_redis::sentinel::MasterView {
                name: name.clone(),
                master: (rec.addresses.rw, port),
                master_up,
                replicas: (rec.addresses.ro, port),
                replicas_up,
                term: rec.term,
            },
        );
    }
    out
}

/// Why each database's `-rw` endpoint has no member right now (empty when it has its
/// primary): one line per database, naming what each member looks like from here.
pub fn rw_gaps(state: &ClusterState, this_node: u64, members: &BTreeMap<u64, Vec<MemberStatus>>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, rec) in &state.desired.databases {
        let mut why = Vec::new();
        let mut ok = false;
        for (i, node) in rec.members.iter().enumerate() {
            let i = i as u32;
            let who = format!("member {i} on {}", state.node_name(*node));
            let st = members.get(node).and_then(|v| v.iter().find(|m| &m.database == name && m.member == i));
            let down = *node != this_node && state.nodes.get(node).is_none_or(|n| n.down);
            match st {
                None => why.push(format!("{who}: no report heard")),
                Some(st) if i == rec.primary => {
                    if st.role == MemberRole::Primary
                        && st.term == rec.term
                        && st.answering
                        && st.port.is_some()
                        && !down
                    {
                        ok = true;
                    } else {
                        why.push(format!(
                            "{who} (the primary of term {}): reports {:?} of term {}, {}{}{}",
                            rec.term,
                            st.role,
                            st.term,
                            if st.answering { "answering" } else { "not answering" },
                            if st.port.is_none() { ", no port" } else { "" },
                            if down { ", its node is down" } else { "" }
                        ))
                    }
                }
                Some(_) => {}
            }
        }
        if !ok {
            out.push(format!(
                "{} has no endpoint: {}",
                rec.spec.engine.endpoint_name(name, DbEndpoint::Rw),
                why.join("; ")
            ));
        }
    }
    out
}

/// The remote endpoint ports of `table` by peer: the links this node needs and the ports
/// to check through them.
pub fn remote_ports(table: &NetTable) -> BTreeMap<String, BTreeSet<u16>> {
    let mut out: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for target in table.services.iter().flat_map(|s| &s.endpoints).flat_map(|e| e.ports.values()) {
        if let Target::Remote { peer, port } = target {
            out.entry(peer.to_string()).or_default().insert(*port);
        }
    }
    out
}

/// `table` as this node can serve it now: remote endpoints behind a link that is down are
/// unready; remote ports whose last check failed are left out.
pub fn reachable_only(mut table: NetTable, reach: &Reachability) -> NetTable {
    for endpoint in table.services.iter_mut().flat_map(|s| &mut s.endpoints) {
        let remote = |t: &Target| match t {
            Target::Remote { peer, port } => Some((peer.clone(), *port)),
            Target::Addr(_) => None,
        };
        if endpoint.ports.values().filter_map(remote).any(|(peer, _)| !reach.link_up(&peer)) {
            endpoint.ready = false; // kept (with its counters), but gets no new traffic
            continue;
        }
        endpoint.ports.retain(|_, t| remote(t).is_none_or(|(peer, port)| reach.port_ok(&peer, port)));
    }
    table
}

/// Environment for instances of `project`: `<SERVICE>_HOST`, `<SERVICE>_<PORT>_ADDR` for
/// every service of the project, and `HOLDFAST_DNS_DOMAIN`.
pub fn service_env(state: &ClusterState, project: &str) -> BTreeMap<String, String> {
    holdfast_net::service_env(&net_table(state, u64::MAX, &BTreeMap::new()), project)
}

/// Keeps the node's networking in step with state and readiness.
pub async fn run(ctx: NodeContext, net: NetHandle, cancel: CancellationToken) {
    let mut states = ctx.control.subscribe();
    let mut agent = ctx.agent.subscribe();
    let mut links = ctx.links.subscribe();
    let mut members_changed = ctx.members_changed.subscribe();
    let mut edge_failures = ctx.edge_failures.subscribe();
    let mut last = NetTable::default();
    let mut last_gaps: Vec<String> = Vec::new();
    // Redis databases' Sentinel-compatible endpoints; the server stops when `sentinels`
    // is dropped with this loop.
    let (sentinels, table) = tokio::sync::watch::channel(holdfast_redis::sentinel_server::Table::new());
    tokio::spawn(holdfast_redis::sentinel_server::run(table));
    loop {
        let state = states.borrow_and_update().clone();
        links.borrow_and_update();
        members_changed.borrow_and_update();
        let observed = crate::peer::heartbeat::observed_by_node(&ctx).await;
        let members = crate::peer::heartbeat::members_by_node(&ctx).await;
        let mut full = net_table(&state, ctx.identity.node_id, &observed);
        full.services.extend(database_services(&state, ctx.identity.node_id, &members));
        let sentinel = sentinel_table(&state, &members);
        sentinels.send_if_modified(|t| {
            let changed = *t != sentinel;
            *t = sentinel;
            changed
        });
        let gaps = rw_gaps(&state, ctx.identity.node_id, &members);
        if gaps != last_gaps {
            for gap in &gaps {
                tracing::info!("{gap}");
            }
            if gaps.is_empty() && !last_gaps.is_empty() {
                tracing::info!("every database's -rw endpoint has its primary again");
            }
            last_gaps = gaps;
        }
        ctx.links.sync(&remote_ports(&full));
        let mut table = reachable_only(full, &ctx.links.reachability());
        // ACME challenges are answered by every ingress (an edge's, or the internal one a
        // router's port-forward may lead to).
        table.acme_challenges = state.acme.challenges.clone();
        if ctx.edge.is_some() {
            let failures = edge_failures.borrow_and_update().clone();
            table.zones = crate::edge::public_zones(&state);
            table.edge_addresses = holdfast_control::edges::live_edges(&state, &failures).addresses;
        }
        let changed = table != last;
        if changed {
            net.update(table.clone());
            last = table;
        }
        report(&ctx, &net, &last, changed);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = states.changed() => if r.is_err() { break },
            r = agent.changed() => if r.is_err() { break },
            // A link went up or down, or an endpoint check changed its verdict.
            r = links.changed() => if r.is_err() { break },
            // A database member changed role somewhere (its `-rw` endpoint moves).
            r = members_changed.changed() => if r.is_err() { break },
            // An edge started or stopped answering its probes (DNS answers change).
            r = edge_failures.changed() => if r.is_err() { break },
            // Other nodes' readiness arrives with heartbeats.
            _ = tokio::time::sleep(ctx.heartbeat_period()) => {}
        }
    }
    net.shutdown().await;
}

/// Reports this pass of the networking loop and the state of the links to the workers.
fn report(ctx: &NodeContext, net: &NetHandle, table: &NetTable, changed: bool) {
    use crate::workers::Pass;
    // A service port this node cannot bind (several nodes on one machine share its
    // loopback) is logged by the proxy and shown here; the loop itself still works.
    let failed: Vec<String> =
        net.bound().into_iter().filter_map(|(what, addr, err)| err.map(|e| format!("{what} on {addr}: {e}"))).collect();
    let unbound = if failed.is_empty() { String::new() } else { format!("; cannot listen: {}", failed.join("; ")) };
    let pass = if changed {
        Pass::Progress(format!(
            "routing table updated: {} service(s), {} route(s){unbound}",
            table.services.len(),
            table.routes.len()
        ))
    } else {
        Pass::Steady
    };
    ctx.workers.report("service networking", pass);
    let links = ctx.links.view().links;
    let down: Vec<String> = links
        .iter()
        .filter(|l| !l.up)
        .map(|l| format!("{} ({})", l.peer, l.last_error.as_deref().unwrap_or("connecting")))
        .collect();
    let detail = if down.is_empty() {
        format!("{} link(s) up", links.len())
    } else {
        format!("{} link(s) up, down: {}", links.len() - down.len(), down.join(", "))
    };
    ctx.workers.report("links", Pass::Progress(detail));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_current_generation_ready_instances_are_ready_endpoints() {
        let mut state = ClusterState::default();
        state.apply(&holdfast_state::Request::new(holdfast_state::Command::UpsertNode(
            holdfast_state::NodeRecord::new(
                1,
                "n1",
                "127.0.0.1:1",
                "a",
                "amd64",
                holdfast_placement::Capacity { cpu_millis: 4000, memory_bytes: 4 << 30 },
            ),
        )));
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
        let on = |n: u64, v: Vec<InstanceStatus>| BTreeMap::from([(n, v)]);
        let t = net_table(&state, 1, &on(1, vec![s0.clone(), s1.clone()]));
        assert_eq!(t.services.len(), 1);
        assert_eq!(t.services[0].ports["http"], 8080);
        assert_eq!(t.routes[0].host, "a.example");
        check(&t, "web-0 http=127.0.0.1:20001 ready | web-1 http=127.0.0.1:20002");
        s0.generation = 0;
        check(&net_table(&state, 1, &on(1, vec![s0])), "web-0 http=127.0.0.1:20001");
        let remote = net_table(&state, 2, &on(1, vec![s1.clone()]));
        check(&remote, "web-1 http=20002@127.0.0.1:1");
        assert_eq!(remote_ports(&remote), BTreeMap::from([("127.0.0.1:1".to_string(), BTreeSet::from([20002]))]));
        state.nodes.get_mut(&1).expect("node").down = true;
        check(&net_table(&state, 2, &on(1, vec![s1])), "");
        let env = service_env(&state, "p");
        assert_eq!(env.get("WEB_HTTP_ADDR"), Some(&format!("{}:8080", state.desired.services["web"].address)));
    }

    /// The endpoints of the first service as `instance port=target [ready]`, joined by ` | `;
    /// a remote target is `port@peer`.
    fn check(t: &NetTable, expected: &str) {
        let got: Vec<String> = t.services[0]
            .endpoints
            .iter()
            .map(|e| {
                let mut words = vec![e.instance.clone()];
                for (name, target) in &e.ports {
                    words.push(match target {
                        Target::Addr(a) => format!("{name}={a}"),
                        Target::Remote { peer, port } => format!("{name}={port}@{peer}"),
                    });
                }
                if e.ready {
                    words.push("ready".into());
                }
                words.join(" ")
            })
            .collect();
        assert_eq!(got.join(" | "), expected);
    }

    fn ep(instance: &str, ports: &[(&str, &str, u16)]) -> Endpoint {
        let ports = ports
            .iter()
            .map(|(name, peer, port)| {
                let target = if peer.is_empty() {
                    Target::Addr(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
                } else {
                    Target::Remote { peer: Arc::from(*peer), port: *port }
                };
                (name.to_string(), target)
            })
            .collect();
        Endpoint { instance: instance.into(), ports, ready: true }
    }

    #[test]
    fn reachability_filters_remote_endpoints_only() {
        let table = NetTable {
            services: vec![ServiceNet {
                project: "p".into(),
                name: "web".into(),
                address: Ipv4Addr::new(127, 64, 0, 1),
                ports: BTreeMap::from([("http".to_string(), 80), ("admin".to_string(), 81)]),
                endpoints: vec![
                    ep("web-0", &[("http", "", 20001), ("admin", "", 20002)]),
                    ep("web-1", &[("http", "n2", 20101), ("admin", "n2", 20102)]),
                    ep("web-2", &[("http", "n3", 20201)]),
                ],
                single_writer: false,
                redis_wait: None,
            }],
            ..NetTable::default()
        };
        assert_eq!(
            remote_ports(&table),
            BTreeMap::from([
                ("n2".to_string(), BTreeSet::from([20101, 20102])),
                ("n3".to_string(), BTreeSet::from([20201])),
            ])
        );
        let reach = |up: &[(&str, &[u16])]| Reachability {
            up: up.iter().map(|(p, failed)| (p.to_string(), failed.iter().copied().collect())).collect(),
        };
        let all = "web-0 admin=127.0.0.1:20002 http=127.0.0.1:20001 ready | web-1 admin=20102@n2 http=20101@n2 ready | web-2 http=20201@n3 ready";
        check(&reachable_only(table.clone(), &reach(&[("n2", &[]), ("n3", &[])])), all);
        check(
            &reachable_only(table.clone(), &reach(&[("n2", &[])])),
            "web-0 admin=127.0.0.1:20002 http=127.0.0.1:20001 ready | web-1 admin=20102@n2 http=20101@n2 ready | web-2 http=20201@n3",
        );
        check(
            &reachable_only(table.clone(), &reach(&[("n2", &[20102]), ("n3", &[20201])])),
            "web-0 admin=127.0.0.1:20002 http=127.0.0.1:20001 ready | web-1 http=20101@n2 ready | web-2 ready",
        );
        check(
            &reachable_only(table, &reach(&[])),
            "web-0 admin=127.0.0.1:20002 http=127.0.0.1:20001 ready | web-1 admin=20102@n2 http=20101@n2 | web-2 http=20201@n3",
        );
    }
}
