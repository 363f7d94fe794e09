//! `GET /v1/routes` (every route with its TLS, the edges and whether DNS answers with
//! them, and every node's per-route counters) and `GET /cluster/route-stats`
//! (node-to-node: this node's counters). Answered by the node asked, never forwarded.
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use holdfast_api::types::{EdgeView, NodeRouteStats, RouteCounters, RouteView, RoutesResponse};
use holdfast_spec::RouteTls;

use crate::NodeContext;

/// This node's counters.
fn own(ctx: &NodeContext) -> NodeRouteStats {
    let Some(net) = ctx.net.get() else {
        return NodeRouteStats { node: ctx.identity.name.clone(), ..Default::default() };
    };
    let stats = net.stats();
    NodeRouteStats {
        node: ctx.identity.name.clone(),
        routes: net
            .route_stats()
            .into_iter()
            .map(|r| RouteCounters {
                route: r.route,
                service: r.service,
                requests: r.requests,
                http_1xx: r.http_1xx,
                http_2xx: r.http_2xx,
                http_3xx: r.http_3xx,
                http_4xx: r.http_4xx,
                http_5xx: r.http_5xx,
                retries: r.retries,
                timeouts: r.timeouts,
                latency_us_sum: r.latency_us_sum,
            })
            .collect(),
        tls_handshake_failures: stats.tls_handshake_failures,
        access_log_dropped: stats.access_log_dropped,
    }
}

/// `GET /cluster/route-stats`.
pub async fn local(State(ctx): State<NodeContext>) -> Json<NodeRouteStats> {
    Json(own(&ctx))
}

/// `GET /v1/routes`.
pub async fn routes(State(ctx): State<NodeContext>) -> Json<RoutesResponse> {
    Json(build_routes(&ctx).await)
}

/// Every route, the edges, and every member's counters (those that answer within 2 s).
pub async fn build_routes(ctx: &NodeContext) -> RoutesResponse {
    let state = ctx.control.state();
    let routes = state
        .desired
        .routes
        .iter()
        .map(|r| RouteView {
            host: r.host.clone(),
            path: r.path.clone(),
            service: r.service.clone(),
            port: r.port.clone(),
            tls: match &r.tls {
                RouteTls::None => "none".into(),
                RouteTls::Auto => "auto".into(),
                RouteTls::Secrets { cert, key } => format!("secrets {cert} {key}"),
            },
            https_redirect: r.https_redirect,
            timeout_ms: r.timeout_ms.unwrap_or(holdfast_spec::DEFAULT_ROUTE_TIMEOUT_MS),
        })
        .collect();
    let failures = ctx.edge_failures.borrow().clone();
    let live = holdfast_control::edges::live_edges(&state, &failures);
    let edges = holdfast_control::edges::edge_nodes(&state)
        .into_iter()
        .map(|(id, e)| EdgeView {
            node: state.node_name(id),
            public_address: e.public_address.to_string(),
            http_port: e.http_port,
            https_port: e.https_port,
            dns_port: e.dns_port,
            live: !live.failing_open && live.addresses.contains(&e.public_address),
        })
        .collect();
    let others: Vec<(String, String)> = state
        .nodes
        .values()
        .filter(|n| n.id != ctx.identity.node_id && !n.down)
        .map(|n| (n.name.clone(), n.addr.clone()))
        .collect();
    let fetches = others.iter().map(|(name, addr)| {
        let ctx = ctx.clone();
        async move {
            let r = super::fetch_json::<NodeRouteStats>(&ctx, addr, "/cluster/route-stats", Duration::from_secs(2));
            (name.clone(), r.await)
        }
    });
    let mut nodes = vec![own(ctx)];
    let mut unreachable = Vec::new();
    for (name, r) in futures::future::join_all(fetches).await {
        match r {
            Ok(stats) => nodes.push(stats),
            Err(e) => unreachable.push(format!("{name}: {e}")),
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    RoutesResponse {
        routes,
        edges,
        seen_by: ctx.identity.name.clone(),
        failing_open: live.failing_open,
        nodes,
        unreachable,
    }
}
