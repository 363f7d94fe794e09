//! `GET /metrics` on the holdfast port: this node's numbers in the OpenMetrics text format
//! (prometheus-client), built on each scrape from what the node already keeps — the
//! agent's instance status, the networking's counters, Raft's view, the links, the local
//! database members and the edge's certificates. Nothing is kept for metrics alone.
//!
//! Names follow Prometheus' conventions: base units (`_seconds`, `_bytes`), `_total` for
//! counters, `_info` for facts as labels. Scrape it as Prometheus scrapes a kubelet: HTTPS
//! with the cluster CA and a bearer token (the admin token, or a `read` API token).
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::NodeContext;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeInfo {
    node: String,
    site: String,
    arch: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    service: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCodeLabels {
    route: String,
    service: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    project: String,
    service: String,
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    database: String,
    member: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    edge: String,
    address: String,
}

/// A histogram's sum, count and per-bucket counts (upper bound, count).
type HistogramValues = (f64, u64, Vec<(f64, u64)>);

/// A histogram whose buckets were counted elsewhere (the ingress's route counters).
#[derive(Debug, Default)]
struct Counted {
    inner: Mutex<HistogramValues>,
}

impl Counted {
    /// Sets the histogram from `count` observations summing to `sum_us` microseconds,
    /// `per_bucket[i]` of them at most `bounds[i]` seconds (not cumulative: the encoder
    /// adds them up); the rest, slower than every bound, go to the `+Inf` bucket.
    fn set(&self, sum_us: u64, count: u64, bounds: &[f64], per_bucket: impl IntoIterator<Item = u64>) {
        let mut buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(per_bucket).collect();
        let counted: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(counted))); // written `+Inf`
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (sum_us as f64 / 1e6, count, buckets);
    }
}

impl prometheus_client::metrics::TypedMetric for Counted {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Counted {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = &*self.inner.lock().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type GaugeF = Gauge<f64, AtomicU64>;
type CounterF = Counter<f64, AtomicU64>;

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge_f(v: f64) -> GaugeF {
    let g = GaugeF::default();
    g.set(v);
    g
}

/// The 1-minute load average (`/proc/loadavg`), when readable.
fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Everything this node knows, as a registry.
fn registry(ctx: &NodeContext) -> Registry {
    let mut r = Registry::with_prefix("holdfast");
    let state = ctx.control.state();
    let me = state.nodes.get(&ctx.identity.node_id);

    // The node.
    let info = Info::new(NodeInfo {
        node: ctx.identity.name.clone(),
        site: ctx.site.clone(),
        arch: crate::identity::arch().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    });
    r.register("node", "This node: its name, site, architecture and holdfast version", info);
    let capacity = crate::identity::capacity();
    r.register_with_unit(
        "node_cpu_capacity",
        "CPU cores this node offers to workloads",
        Unit::Other("cores".into()),
        gauge_f(capacity.cpu_millis as f64 / 1000.0),
    );
    r.register_with_unit(
        "node_memory_capacity",
        "Memory this node offers to workloads",
        Unit::Bytes,
        gauge_f(capacity.memory_bytes as f64),
    );
    if let Some(l) = load1() {
        r.register("node_load1", "The node's 1-minute load average", gauge_f(l));
    }
    r.register(
        "node_down",
        "1 while the cluster has declared this node down",
        gauge_f(if me.is_some_and(|n| n.down) { 1.0 } else { 0.0 }),
    );

    // Instances.
    let cpu = Family::<InstanceLabels, CounterF>::default();
    let memory = Family::<InstanceLabels, GaugeF>::default();
    let restarts = Family::<InstanceLabels, Counter>::default();
    let ready = Family::<InstanceLabels, GaugeF>::default();
    let oom = Family::<InstanceLabels, GaugeF>::default();
    let oom_kills = Family::<InstanceLabels, Counter>::default();
    for s in ctx.agent.status() {
        let labels = InstanceLabels { service: s.id.service.clone(), instance: s.id.to_string() };
        if let Some(ns) = s.cpu_usage_ns {
            cpu.get_or_create(&labels).inc_by(ns as f64 / 1e9);
        }
        if let Some(b) = s.memory_bytes {
            memory.get_or_create(&labels).set(b as f64);
        }
        restarts.get_or_create(&labels).inc_by(u64::from(s.restarts));
        ready.get_or_create(&labels).set(if s.ready { 1.0 } else { 0.0 });
        let oom_killed = s.last_exit.as_ref().is_some_and(|e| e.oom_killed);
        oom.get_or_create(&labels).set(if oom_killed { 1.0 } else { 0.0 });
        oom_kills.get_or_create(&labels).inc_by(u64::from(s.oom_kills));
    }
    r.register_with_unit("instance_cpu", "CPU time used by the instance (its cgroup)", Unit::Seconds, cpu);
    r.register_with_unit("instance_memory", "Memory the instance uses now (its cgroup)", Unit::Bytes, memory);
    r.register("instance_restarts", "Restarts of the instance by the agent", restarts);
    r.register("instance_ready", "1 while the instance passes its health check", ready);
    r.register("instance_last_exit_oom", "1 when the instance's last exit was an out-of-memory kill", oom);
    r.register("instance_oom_kills", "Out-of-memory kills of the instance (this generation)", oom_kills);

    // Networking.
    if let Some(net) = ctx.net.get() {
        let stats = net.stats();
        let requests = Family::<RouteCodeLabels, Counter>::default();
        let retries = Family::<RouteLabels, Counter>::default();
        let timeouts = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteLabels, Counted>::default();
        for rs in net.route_stats() {
            let labels = RouteLabels { route: rs.route.clone(), service: rs.service.clone() };
            let classes = [rs.http_1xx, rs.http_2xx, rs.http_3xx, rs.http_4xx, rs.http_5xx];
            for (i, n) in classes.iter().enumerate().filter(|(_, n)| **n > 0) {
                let code = format!("{}xx", i + 1);
                let l = RouteCodeLabels { route: rs.route.clone(), service: rs.service.clone(), code };
                requests.get_or_create(&l).inc_by(*n);
            }
            retries.get_or_create(&labels).inc_by(rs.retries);
            timeouts.get_or_create(&labels).inc_by(rs.timeouts);
            latency.get_or_create(&labels).set(
                rs.latency_us_sum,
                rs.requests,
                &holdfast_net::LATENCY_BUCKETS_S,
                rs.latency_buckets,
            );
        }
        r.register(
            "http_requests",
            "HTTP requests answered by this node's ingress, by route and status class",
            requests,
        );
        r.register("http_retries", "Attempts on another instance after a failure, by route", retries);
        r.register("http_timeouts", "Requests answered 504 (no response head within the route's timeout)", timeouts);
        r.register_with_unit(
            "http_request_duration",
            "Time from a request to its response head, by route",
            Unit::Seconds,
            latency,
        );
        r.register("proxy_connections", "Connections accepted by the TCP service proxy", counter(stats.connections));
        let (conns, refused, failed) = (
            Family::<ProxyLabels, Counter>::default(),
            Family::<ProxyLabels, Counter>::default(),
            Family::<ProxyLabels, Counter>::default(),
        );
        for p in net.proxy_stats() {
            let labels = ProxyLabels { project: p.project, service: p.service, port: p.port };
            conns.get_or_create(&labels).inc_by(p.connections);
            refused.get_or_create(&labels).inc_by(p.refused);
            failed.get_or_create(&labels).inc_by(p.failed_connects);
        }
        r.register("proxy_service_connections", "Connections the TCP proxy accepted, by service port", conns);
        r.register(
            "proxy_service_connections_refused",
            "Proxy connections closed at once (no ready instance, or no lease for a single writer), by service port",
            refused,
        );
        r.register(
            "proxy_service_connect_failures",
            "Connects to the service port's instances that failed or timed out",
            failed,
        );
        r.register(
            "proxy_connections_refused",
            "Proxy connections closed at once: no ready instance",
            counter(stats.connections_refused),
        );
        r.register(
            "backend_connect_failures",
            "Connects to instances that failed or timed out (proxy and ingress)",
            counter(stats.failed_connects),
        );
        r.register("dns_queries", "DNS queries answered (internal and edge)", counter(stats.dns_queries));
        r.register("dns_nxdomain", "DNS queries answered NXDOMAIN", counter(stats.dns_nxdomain));
        r.register("dns_refused", "DNS queries refused (outside every zone)", counter(stats.dns_refused));
        r.register(
            "tls_handshake_failures",
            "Edge HTTPS handshakes that failed (no certificate for the name, not TLS, timeout)",
            counter(stats.tls_handshake_failures),
        );
        r.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer was behind",
            counter(stats.access_log_dropped),
        );
    }

    // The control plane.
    r.register(
        "state_revision",
        "The replicated state's revision this node has applied",
        gauge_f(state.revision as f64),
    );
    r.register(
        "raft_leader",
        "1 while this node leads the control plane",
        gauge_f(if ctx.control.is_leader() { 1.0 } else { 0.0 }),
    );
    let (voters, learners) = ctx.control.membership();
    r.register("raft_voters", "Voting members of the control plane", gauge_f(voters.len() as f64));
    r.register("raft_learners", "Non-voting members of the control plane", gauge_f(learners.len() as f64));
    if let Some(term) = ctx.control.term() {
        r.register("raft_term", "The control plane's current Raft term", gauge_f(term as f64));
    }
    let raft = ctx.control.stats();
    let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    r.register(
        "raft_leader_changes",
        "Times the leader this node knows of changed since it started",
        counter(get(&raft.leader_changes)),
    );
    let commits = Counted::default();
    commits.set(
        get(&raft.commit_latency_us_sum),
        get(&raft.commits),
        &holdfast_raft::COMMIT_BUCKETS_S,
        raft.commit_buckets.iter().map(get),
    );
    r.register_with_unit(
        "raft_commit_duration",
        "Time from this node proposing a change to it being committed and applied here",
        Unit::Seconds,
        commits,
    );

    // Links to other nodes.
    let up = Family::<PeerLabels, GaugeF>::default();
    let connects = Family::<PeerLabels, Counter>::default();
    let streams = Family::<PeerLabels, GaugeF>::default();
    let rtt = Family::<PeerLabels, GaugeF>::default();
    for l in ctx.links.view().links {
        let labels = PeerLabels { peer: l.peer.clone() };
        up.get_or_create(&labels).set(if l.up { 1.0 } else { 0.0 });
        connects.get_or_create(&labels).inc_by(l.connects);
        streams.get_or_create(&labels).set(l.streams_open as f64);
        if let Some(ms) = l.rtt_ms {
            rtt.get_or_create(&labels).set(ms / 1000.0);
        }
    }
    r.register_with_unit(
        "link_round_trip",
        "The last round trip of a request through the link to the peer (measured every check round)",
        Unit::Seconds,
        rtt,
    );
    r.register("link_up", "1 while this node's link to the peer answers", up);
    r.register("link_connects", "Links established to the peer since this node started", connects);
    r.register("link_streams_open", "Streams open through the link now", streams);

    // Databases: the members on this node, and each database's term (failovers = term - 1).
    let member = Family::<MemberLabels, GaugeF>::default();
    let position = Family::<MemberLabels, GaugeF>::default();
    let replayed = Family::<MemberLabels, GaugeF>::default();
    for m in ctx.dbs.statuses() {
        let role = format!("{:?}", m.role).to_ascii_lowercase();
        let labels = MemberLabels { database: m.database.clone(), member: m.member.to_string(), role };
        member.get_or_create(&labels).set(if m.answering { 1.0 } else { 0.0 });
        position.get_or_create(&labels).set(m.lsn as f64);
        replayed.get_or_create(&labels).set(m.replay_lsn as f64);
    }
    r.register("database_member_answering", "1 while a database member on this node answers, by its role", member);
    r.register_with_unit(
        "database_member_position",
        "The member's write or receive position (PostgreSQL LSN, Redis replication offset); a replica's lag is the primary's minus its own",
        Unit::Bytes,
        position,
    );
    r.register_with_unit(
        "database_member_replayed_position",
        "The position a replica has replayed up to",
        Unit::Bytes,
        replayed,
    );
    let term = Family::<DatabaseLabels, GaugeF>::default();
    for (name, db) in &state.desired.databases {
        term.get_or_create(&DatabaseLabels { database: name.clone() }).set(db.term as f64);
    }
    r.register("database_term", "A managed database's primary term (every failover or switchover adds one)", term);

    // The edge.
    let live = Family::<EdgeLabels, GaugeF>::default();
    let failures = ctx.edge_failures.borrow().clone();
    let answered = holdfast_control::edges::live_edges(&state, &failures);
    for (id, e) in holdfast_control::edges::edge_nodes(&state) {
        let labels = EdgeLabels { edge: state.node_name(id), address: e.public_address.to_string() };
        let on = !answered.failing_open && answered.addresses.contains(&e.public_address);
        live.get_or_create(&labels).set(if on { 1.0 } else { 0.0 });
    }
    r.register("edge_in_dns", "1 while this node's DNS names the edge (it answers its probes)", live);
    let expiry = Family::<HostLabels, GaugeF>::default();
    for (host, cert) in &state.acme.certs {
        expiry.get_or_create(&HostLabels { host: host.clone() }).set(cert.not_after_ms as f64 / 1000.0);
    }
    r.register_with_unit(
        "certificate_expiry_timestamp",
        "When the ACME certificate of a host expires (Unix time)",
        Unit::Seconds,
        expiry,
    );
    let failed = Family::<HostLabels, GaugeF>::default();
    for (host, order) in &state.acme.orders {
        failed.get_or_create(&HostLabels { host: host.clone() }).set(f64::from(order.failures));
    }
    r.register("certificate_order_failures", "Failed ACME orders in a row for a host", failed);
    r
}

/// `GET /metrics`.
pub async fn metrics(State(ctx): State<NodeContext>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry(&ctx)) {
        Ok(()) => {
            ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
        }
        Err(e) => crate::api::ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}"))
            .into_response(),
    }
}
