//! Rendering the pages from sample API values: the names are there, every source can
//! fail on its own, and user-controlled text is escaped.
use std::collections::BTreeMap;

use holdfast_api::types::{
    ControlPlaneSummary, DatabaseView, DatabasesResponse, DbMemberView, EventView, EventsResponse, InstanceUsage,
    InstanceView, NodeRouteStats, NodeSummary, NodeView, NodesResponse, RouteCounters, RouteView, RoutesResponse,
    ServiceView, StatusResponse, UsageResponse, UsageSample,
};

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn node(name: &str, site: &str, state: &str, role: &str) -> NodeView {
    NodeView {
        id: 1,
        name: name.into(),
        addr: "127.0.0.1:7000".into(),
        site: site.into(),
        arch: "x86_64".into(),
        role: role.into(),
        state: state.into(),
        cordoned: name == "n3",
        draining: false,
        last_seen_ms: Some(100),
        instances: 2,
        cpu_reserved_millis: 500,
        cpu_capacity_millis: 2000,
        memory_reserved_bytes: 256 << 20,
        memory_capacity_bytes: 4 << 30,
        labels: BTreeMap::new(),
        removing: false,
        lag_entries: None,
        not_voting_because: None,
    }
}

fn instance(name: &str, node: &str, ready: bool) -> InstanceView {
    InstanceView {
        name: name.into(),
        replica: 0,
        node: node.into(),
        generation: 1,
        state: if ready { "ready" } else { "unready" }.into(),
        ready,
        pid: Some(42),
        restarts: 1,
        ports: BTreeMap::new(),
        started_at_ms: Some(NOW - 120_000),
        last_exit: None,
        last_health_error: (!ready).then(|| "GET /healthz: connection refused".to_string()),
        adopted: false,
        memory_bytes: None,
        cpu_usage_ns: None,
    }
}

fn service(name: &str) -> ServiceView {
    ServiceView {
        name: name.into(),
        project: "shop".into(),
        replicas: 2,
        ready: 1,
        generation: 3,
        address: "127.64.0.2".into(),
        ports: BTreeMap::from([("http".to_string(), 8080)]),
        placement: Default::default(),
        image: None,
        instances: vec![instance(&format!("{name}-0"), "n1", true), instance(&format!("{name}-1"), "n2", false)],
        rollout: None,
    }
}

fn status(services: Vec<ServiceView>) -> StatusResponse {
    StatusResponse {
        node: NodeSummary {
            id: 1,
            name: "n1".into(),
            addr: "127.0.0.1:7000".into(),
            pid: 1,
            version: "0.1.0".into(),
            cgroups: "v2".into(),
        },
        control_plane: ControlPlaneSummary {
            leader: Some(1),
            term: 2,
            role: "leader".into(),
            voters: 1,
            revision: 9,
            last_applied: Some(9),
        },
        services,
        routes: Vec::new(),
        warnings: vec!["node n4 is down; its replicas were placed elsewhere".into()],
    }
}

fn usage(service: &str) -> UsageResponse {
    let samples: Vec<UsageSample> = (0..5)
        .map(|i| UsageSample {
            at_ms: NOW - 40_000 + i * 10_000,
            cpu_millis: Some(10 * i as u32),
            memory_bytes: Some(50 << 20),
        })
        .collect();
    let one = |instance: &str, node: &str| InstanceUsage {
        instance: instance.into(),
        service: service.into(),
        project: "shop".into(),
        node: node.into(),
        cpu_request_millis: Some(250),
        memory_request_bytes: Some(128 << 20),
        cpu_millis: Some(40),
        memory_bytes: Some(50 << 20),
        cpu_avg_millis: Some(20),
        cpu_peak_millis: Some(40),
        memory_peak_bytes: Some(50 << 20),
        samples: samples.clone(),
    };
    UsageResponse {
        interval_ms: 10_000,
        window_ms: 3_600_000,
        instances: vec![one(&format!("{service}-0"), "n1"), one(&format!("{service}-1"), "n2")],
        unreachable: Vec::new(),
    }
}

fn event(at_ms: u64, subject: &str, message: &str) -> EventView {
    EventView {
        key: format!("r{at_ms}.0"),
        at_ms,
        level: "warn".into(),
        kind: "instance-exited".into(),
        subject: subject.into(),
        message: message.into(),
    }
}

fn databases() -> DatabasesResponse {
    let member = |member: u32, node: &str, role: &str| DbMemberView {
        member,
        node: node.into(),
        role: role.into(),
        term: 4,
        timeline: 2,
        lsn: 100,
        replay_lsn: 100,
        lag_bytes: (role == "replica").then_some(2048),
        streaming: role == "replica",
        answering: true,
        sync_candidate: false,
        pending_restart: false,
        detail: String::new(),
    };
    DatabasesResponse {
        databases: vec![DatabaseView {
            name: "orders".into(),
            project: "shop".into(),
            engine: "postgres".into(),
            instances: 2,
            sync: 0,
            on_sync_loss: "wait".into(),
            term: 4,
            primary: 0,
            primary_node: "n1".into(),
            endpoints: BTreeMap::new(),
            members: vec![member(0, "n1", "primary"), member(1, "n2", "replica")],
            switchover: None,
            sync_leaving: Vec::new(),
            losing: Vec::new(),
            warnings: Vec::new(),
        }],
        lease: None,
    }
}

fn routes() -> RoutesResponse {
    RoutesResponse {
        routes: vec![RouteView {
            host: "shop.example".into(),
            path: "/".into(),
            service: "web".into(),
            port: "http".into(),
            tls: "auto".into(),
            https_redirect: true,
            timeout_ms: 30_000,
        }],
        edges: Vec::new(),
        seen_by: "n1".into(),
        failing_open: false,
        nodes: ["n1", "n2"]
            .into_iter()
            .map(|n| NodeRouteStats {
                node: n.into(),
                routes: vec![RouteCounters {
                    route: "shop.example/".into(),
                    service: "web".into(),
                    requests: 21,
                    http_5xx: 2,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        unreachable: Vec::new(),
    }
}

fn overview() -> Overview {
    Overview {
        nodes: Ok(NodesResponse {
            nodes: vec![
                node("n1", "east", "alive", "leader"),
                node("n2", "west", "suspect", "voter"),
                node("n3", "east", "alive", "learner"),
            ],
            warnings: Vec::new(),
        }),
        usage: Ok(usage("web")),
        status: Ok(status(vec![service("web"), service("api")])),
        routes: Ok(routes()),
        databases: Ok(databases()),
        events: Ok(EventsResponse {
            events: (0..30)
                .map(|i| event(NOW - 60_000 + i * 1000, "service web", &format!("event number {i}")))
                .collect(),
            unreachable: Vec::new(),
        }),
    }
}

fn header() -> Header {
    Header { node: "n1".into(), now_ms: NOW }
}

#[test]
fn the_overview_shows_nodes_by_site_services_routes_databases_and_recent_events() {
    let html = overview_page(&header(), &overview()).expect("render");
    assert!(html.starts_with("<!doctype html>"));
    for want in [
        "Site east",
        "Site west",
        ">n1</td>",
        ">n3</td>",
        "suspect",
        "cordoned",
        "leader",
        "500m / 2000m",
        "256 MiB / 4.0 GiB",
        "40m",
        r#"<a href="/ui/services/web">web</a>"#,
        r#"<a href="/ui/services/api">api</a>"#,
        "1/2 ready",
        "web-1",
        "GET /healthz: connection refused",
        "node n4 is down",
        "shop.example",
        "<td>42</td><td>4</td>",
        "orders",
        "term 4, primary on n1",
        "replica",
        "2.0 KiB",
        "event number 29",
        r#"hx-get="/ui/fragments/nodes" hx-trigger="every 5s""#,
        r#"src="/ui/static/htmx.min.js""#,
    ] {
        assert!(html.contains(want), "missing {want:?} in\n{html}");
    }
    assert!(html.find("Site east") < html.find("Site west"), "sites in order");
    assert!(html.find("event number 29") < html.find("event number 28"), "newest first");
    assert!(!html.contains("event number 9<"), "only the last {OVERVIEW_EVENTS}");
    assert!(!html.contains("http://") && !html.contains("https://"), "no external assets: {html}");
}

#[test]
fn a_failed_source_is_named_and_the_rest_still_renders() {
    let mut o = overview();
    o.nodes = Err("no leader (no quorum)".into());
    o.databases = Err("HTTP 502".into());
    o.usage = Err("timed out".into());
    let html = overview_page(&header(), &o).expect("render");
    assert!(html.contains("nodes unavailable: no leader (no quorum)"), "{html}");
    assert!(html.contains("databases unavailable: HTTP 502"));
    assert!(html.contains(">web-1</td>"), "services still shown");
    let nodes = nodes_section(
        &Ok(NodesResponse { nodes: vec![node("n1", "a", "alive", "leader")], warnings: vec![] }),
        &Err("timed out".into()),
    )
    .expect("render");
    assert!(
        nodes.contains("usage unavailable: timed out") && nodes.contains(">n1</td>") && nodes.contains("<td>?</td>")
    );
}

#[test]
fn user_controlled_text_is_escaped() {
    let mut o = overview();
    o.status = Ok(status(vec![service("<script>alert(1)</script>")]));
    o.events = Ok(EventsResponse {
        events: vec![event(NOW, "service x", "<img src=x onerror=alert(1)>")],
        unreachable: vec![],
    });
    o.nodes = Err("<b>bold</b>".into());
    let html = overview_page(&header(), &o).expect("render");
    assert!(!html.contains("<script>alert") && !html.contains("<img src=x") && !html.contains("<b>bold"), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("/ui/services/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"), "the link is URL-encoded: {html}");
    let login = login_page(Some("<script>x</script>")).expect("render");
    assert!(!login.contains("<script>x") && login.contains(r#"name="token""#));
}

#[test]
fn the_service_page_has_instances_charts_and_its_own_events() {
    let page = ServicePage {
        name: "web".into(),
        status: Ok(status(vec![service("web"), service("api")])),
        usage: Ok(usage("web")),
        events: Ok(EventsResponse {
            events: vec![
                event(NOW - 5000, "service web", "web-1 on n2 exited"),
                event(NOW, "service api", "api-0 on n1 exited"),
            ],
            unreachable: vec![],
        }),
    };
    assert!(!page.unknown());
    let html = service_page(&header(), &page).expect("render");
    for want in [
        "Service web",
        "web-0",
        "web-1",
        "passing",
        "2m ago",
        "CPU (millicores)",
        "Memory",
        "limit 250m",
        "limit 128 MiB",
        "web-1 on n2 exited",
        r#"hx-get="/ui/fragments/services/web""#,
    ] {
        assert!(html.contains(want), "missing {want:?} in\n{html}");
    }
    assert_eq!(html.matches("<svg").count(), 2);
    assert_eq!(html.matches(r#"<path class="series""#).count(), 4, "two instances in each chart");
    assert!(!html.contains("api-0 on n1"), "another service's events are left out");

    let gone = ServicePage { name: "nope".into(), ..page.clone() };
    assert!(gone.unknown());
    assert!(service_page(&header(), &gone).expect("render").contains("no service named nope"));
    let failed = ServicePage { usage: Err("timed out".into()), events: Err("no answer".into()), ..page };
    let html = service_section(&failed, NOW).expect("render");
    assert!(
        html.contains("usage unavailable: timed out")
            && html.contains("events unavailable: no answer")
            && html.contains("web-1")
    );
}

#[test]
fn the_events_page_lists_the_history_newest_first() {
    let events = EventsResponse {
        events: vec![event(NOW - 1000, "node n2", "node n2 is down"), event(NOW, "node n2", "node n2 is back")],
        unreachable: vec!["n3".into()],
    };
    let html = events_page(&header(), &Ok(events)).expect("render");
    assert!(html.find("node n2 is back") < html.find("node n2 is down"), "{html}");
    assert!(html.contains("journal of n3 not read"));
    assert!(html.contains(&crate::format::utc(NOW)));
    let empty = events_page(&header(), &Ok(EventsResponse::default())).expect("render");
    assert!(empty.contains("No events."));
}
