//! The dashboard's pages and the fragments htmx refreshes in them (every 5 s, each from
//! its own `/ui/fragments/...` URL). A fragment is rendered from one or two [`Source`]s;
//! a failed source renders as "<what> unavailable: <why>" in its place, so one slow or
//! failing read never blanks the page. Pages embed fragments rendered here, never raw
//! input: everything else goes through askama's HTML escaping.
use std::collections::BTreeMap;

use askama::Template;
use holdfast_api::types::{
    DatabaseView, DatabasesResponse, EventView, EventsResponse, InstanceUsage, NodeView, NodesResponse, RoutesResponse,
    ServiceView, StatusResponse, UsageResponse,
};

use crate::{chart, format, UiError};

/// One data source of a page: its answer, or why there is none (shown on the page).
pub type Source<T> = Result<T, String>;

/// What the top bar shows: the node that answers, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub node: String,
    pub now_ms: u64,
}

/// Everything `/ui/` shows.
#[derive(Debug, Clone)]
pub struct Overview {
    pub nodes: Source<NodesResponse>,
    /// Current use per instance (no history needed), summed per node.
    pub usage: Source<UsageResponse>,
    pub status: Source<StatusResponse>,
    pub routes: Source<RoutesResponse>,
    pub databases: Source<DatabasesResponse>,
    pub events: Source<EventsResponse>,
}

/// Everything `/ui/services/{name}` shows.
#[derive(Debug, Clone)]
pub struct ServicePage {
    pub name: String,
    pub status: Source<StatusResponse>,
    /// This service's instances with their history.
    pub usage: Source<UsageResponse>,
    /// Recent events of the whole cluster; the page keeps this service's.
    pub events: Source<EventsResponse>,
}

impl ServicePage {
    /// The status answered and names no such service (the page answers 404).
    pub fn unknown(&self) -> bool {
        self.status.as_ref().is_ok_and(|s| !s.services.iter().any(|v| v.name == self.name))
    }
}

/// How many events the overview lists.
pub const OVERVIEW_EVENTS: usize = 20;
/// How many of a service's events its page lists.
pub const SERVICE_EVENTS: usize = 50;

fn render(what: &'static str, t: &impl Template) -> Result<String, UiError> {
    t.render().map_err(|source| UiError::Render { what, source })
}

fn why<T>(what: &str, source: &Source<T>) -> Option<String> {
    source.as_ref().err().map(|e| format!("{what} unavailable: {e}"))
}

// ---- nodes ----

struct SiteGroup<'a> {
    site: &'a str,
    nodes: Vec<NodeRow<'a>>,
}

struct NodeRow<'a> {
    n: &'a NodeView,
    /// `cordoned`, `draining`, `removing`, as they apply.
    flags: Vec<&'static str>,
    cpu_reserved: String,
    memory_reserved: String,
    /// What its instances use now (from the usage source), or `?`.
    cpu_used: String,
    memory_used: String,
    cpu_percent: u64,
    memory_percent: u64,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesSection<'a> {
    error: Option<String>,
    usage_error: Option<String>,
    sites: Vec<SiteGroup<'a>>,
    warnings: &'a [String],
}

fn percent(part: u64, whole: u64) -> u64 {
    part.saturating_mul(100).checked_div(whole).unwrap_or(0).min(100)
}

/// Per node name: the summed CPU (millicores) and memory (bytes) its instances use now.
fn used_by_node(usage: &UsageResponse) -> BTreeMap<&str, (u64, u64)> {
    let mut out: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for i in &usage.instances {
        let e = out.entry(i.node.as_str()).or_default();
        e.0 += i.cpu_millis.map(u64::from).unwrap_or(0);
        e.1 += i.memory_bytes.unwrap_or(0);
    }
    out
}

fn node_row<'a>(n: &'a NodeView, used: Option<(u64, u64)>) -> NodeRow<'a> {
    let flags = [(n.cordoned, "cordoned"), (n.draining, "draining"), (n.removing, "removing")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    NodeRow {
        n,
        flags,
        cpu_reserved: format!(
            "{} / {}",
            format::millicores(n.cpu_reserved_millis),
            format::millicores(n.cpu_capacity_millis)
        ),
        memory_reserved: format!(
            "{} / {}",
            format::bytes(n.memory_reserved_bytes),
            format::bytes(n.memory_capacity_bytes)
        ),
        cpu_used: used.map_or_else(|| "?".into(), |(c, _)| format::millicores(c)),
        memory_used: used.map_or_else(|| "?".into(), |(_, m)| format::bytes(m)),
        cpu_percent: percent(n.cpu_reserved_millis, n.cpu_capacity_millis),
        memory_percent: percent(n.memory_reserved_bytes, n.memory_capacity_bytes),
    }
}

/// The nodes, grouped by site: state, role, reserved and used CPU and memory.
pub fn nodes_section(nodes: &Source<NodesResponse>, usage: &Source<UsageResponse>) -> Result<String, UiError> {
    let used = usage.as_ref().map(used_by_node).unwrap_or_default();
    let mut by_site: BTreeMap<&str, Vec<NodeRow>> = BTreeMap::new();
    if let Ok(list) = nodes {
        for n in &list.nodes {
            let row = node_row(n, usage.is_ok().then(|| used.get(n.name.as_str()).copied().unwrap_or_default()));
            by_site.entry(n.site.as_str()).or_default().push(row);
        }
    }
    let sites = by_site.into_iter().map(|(site, nodes)| SiteGroup { site, nodes }).collect();
    render(
        "nodes",
        &NodesSection {
            error: why("nodes", nodes),
            usage_error: why("usage", usage),
            sites,
            warnings: nodes.as_ref().map(|n| n.warnings.as_slice()).unwrap_or_default(),
        },
    )
}

// ---- services ----

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesSection<'a> {
    error: Option<String>,
    services: &'a [ServiceView],
    warnings: &'a [String],
}

/// Every service: ready of replicas, a roll in progress, each instance's state, health
/// and node.
pub fn services_section(status: &Source<StatusResponse>) -> Result<String, UiError> {
    let (services, warnings) = match status {
        Ok(s) => (s.services.as_slice(), s.warnings.as_slice()),
        Err(_) => (&[][..], &[][..]),
    };
    render("services", &ServicesSection { error: why("services", status), services, warnings })
}

// ---- routes ----

struct RouteRow<'a> {
    host: &'a str,
    path: &'a str,
    service: &'a str,
    port: &'a str,
    tls: &'a str,
    requests: u64,
    errors: u64,
}

#[derive(Template)]
#[template(path = "routes.html")]
struct RoutesSection<'a> {
    error: Option<String>,
    routes: Vec<RouteRow<'a>>,
    unreachable: &'a [String],
}

/// Every route with its TLS and the requests (and 5xx answers) every node counted.
pub fn routes_section(routes: &Source<RoutesResponse>) -> Result<String, UiError> {
    let (rows, unreachable) = match routes {
        Ok(r) => {
            let rows = r
                .routes
                .iter()
                .map(|v| {
                    let key = format!("{}{}", v.host, v.path);
                    let counted = r.nodes.iter().flat_map(|n| &n.routes).filter(|c| c.route == key);
                    let (requests, errors) = counted.fold((0, 0), |(req, err), c| (req + c.requests, err + c.http_5xx));
                    RouteRow {
                        host: &v.host,
                        path: &v.path,
                        service: &v.service,
                        port: &v.port,
                        tls: &v.tls,
                        requests,
                        errors,
                    }
                })
                .collect();
            (rows, r.unreachable.as_slice())
        }
        Err(_) => (Vec::new(), &[][..]),
    };
    render("routes", &RoutesSection { error: why("routes", routes), routes: rows, unreachable })
}

// ---- databases ----

struct MemberRow<'a> {
    member: u32,
    node: &'a str,
    role: &'a str,
    lag: String,
    streaming: bool,
    detail: &'a str,
}

struct DatabaseRow<'a> {
    d: &'a DatabaseView,
    members: Vec<MemberRow<'a>>,
}

#[derive(Template)]
#[template(path = "databases.html")]
struct DatabasesSection<'a> {
    error: Option<String>,
    databases: Vec<DatabaseRow<'a>>,
}

/// The managed databases: term, primary, and each member's role and lag.
pub fn databases_section(databases: &Source<DatabasesResponse>) -> Result<String, UiError> {
    let rows = databases
        .as_ref()
        .map(|r| {
            r.databases
                .iter()
                .map(|d| DatabaseRow {
                    d,
                    members: d
                        .members
                        .iter()
                        .map(|m| MemberRow {
                            member: m.member,
                            node: &m.node,
                            role: &m.role,
                            lag: m.lag_bytes.map_or_else(|| "-".into(), format::bytes),
                            streaming: m.streaming,
                            detail: &m.detail,
                        })
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    render("databases", &DatabasesSection { error: why("databases", databases), databases: rows })
}

// ---- events ----

struct EventRow<'a> {
    time: String,
    ago: String,
    e: &'a EventView,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsSection<'a> {
    error: Option<String>,
    events: Vec<EventRow<'a>>,
    unreachable: &'a [String],
}

fn event_rows<'a>(
    events: impl DoubleEndedIterator<Item = &'a EventView>,
    limit: usize,
    now_ms: u64,
) -> Vec<EventRow<'a>> {
    events
        .rev()
        .take(limit)
        .map(|e| EventRow { time: format::utc(e.at_ms), ago: format::ago(e.at_ms, now_ms), e })
        .collect()
}

/// The newest `limit` events, newest first.
pub fn events_section(events: &Source<EventsResponse>, limit: usize, now_ms: u64) -> Result<String, UiError> {
    let (rows, unreachable) = match events {
        Ok(r) => (event_rows(r.events.iter(), limit, now_ms), r.unreachable.as_slice()),
        Err(_) => (Vec::new(), &[][..]),
    };
    render("events", &EventsSection { error: why("events", events), events: rows, unreachable })
}

// ---- one service ----

struct InstanceRow<'a> {
    i: &'a holdfast_api::types::InstanceView,
    health: String,
    cpu: String,
    memory: String,
    started: String,
}

#[derive(Template)]
#[template(path = "service.html")]
struct ServiceSection<'a> {
    name: &'a str,
    error: Option<String>,
    service: Option<&'a ServiceView>,
    instances: Vec<InstanceRow<'a>>,
    usage_error: Option<String>,
    cpu_chart: String,
    memory_chart: String,
    events: String,
}

fn instance_row<'a>(
    i: &'a holdfast_api::types::InstanceView,
    usage: Option<&InstanceUsage>,
    now_ms: u64,
) -> InstanceRow<'a> {
    let health = match (&i.last_health_error, i.ready) {
        (_, true) => "passing".to_string(),
        (Some(e), false) => e.clone(),
        (None, false) => "-".to_string(),
    };
    InstanceRow {
        i,
        health,
        cpu: usage.and_then(|u| u.cpu_millis).map_or_else(|| "-".into(), |c| format::millicores(u64::from(c))),
        memory: usage.and_then(|u| u.memory_bytes).map_or_else(|| "-".into(), format::bytes),
        started: i.started_at_ms.map_or_else(|| "-".into(), |t| format!("{} ago", format::ago(t, now_ms))),
    }
}

/// A service's instances, its CPU and memory over the last hour, and its recent events.
pub fn service_section(page: &ServicePage, now_ms: u64) -> Result<String, UiError> {
    let service = page.status.as_ref().ok().and_then(|s| s.services.iter().find(|v| v.name == page.name));
    let error = why("status", &page.status)
        .or_else(|| service.is_none().then(|| format!("no service named {} in the cluster", page.name)));
    let own: Vec<&InstanceUsage> = match &page.usage {
        Ok(u) => u.instances.iter().filter(|i| i.service == page.name).collect(),
        Err(_) => Vec::new(),
    };
    let instances = service
        .map(|s| {
            s.instances
                .iter()
                .map(|i| instance_row(i, own.iter().copied().find(|u| u.instance == i.name), now_ms))
                .collect()
        })
        .unwrap_or_default();
    let (cpu_chart, memory_chart) = match &page.usage {
        Ok(u) => {
            let own: Vec<InstanceUsage> = own.into_iter().cloned().collect();
            (
                chart::cpu_chart(&own, now_ms, u.window_ms, u.interval_ms),
                chart::memory_chart(&own, now_ms, u.window_ms, u.interval_ms),
            )
        }
        Err(_) => (String::new(), String::new()),
    };
    let subject = format!("service {}", page.name);
    let events = match &page.events {
        Ok(r) => {
            let mine = r.events.iter().filter(|e| e.subject == subject);
            let rows = event_rows(mine, SERVICE_EVENTS, now_ms);
            render("events", &EventsSection { error: None, events: rows, unreachable: &r.unreachable })?
        }
        Err(_) => events_section(&page.events, 0, now_ms)?,
    };
    render(
        "service",
        &ServiceSection {
            name: &page.name,
            error,
            service,
            instances,
            usage_error: why("usage", &page.usage),
            cpu_chart,
            memory_chart,
            events,
        },
    )
}

// ---- pages ----

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    nav: bool,
    node: &'a str,
    time: String,
    nodes: String,
    services: String,
    routes: String,
    databases: String,
    events: String,
}

/// `/ui/`.
pub fn overview_page(header: &Header, o: &Overview) -> Result<String, UiError> {
    render(
        "overview",
        &OverviewPage {
            nav: true,
            node: &header.node,
            time: format::utc_time(header.now_ms),
            nodes: nodes_section(&o.nodes, &o.usage)?,
            services: services_section(&o.status)?,
            routes: routes_section(&o.routes)?,
            databases: databases_section(&o.databases)?,
            events: events_section(&o.events, OVERVIEW_EVENTS, header.now_ms)?,
        },
    )
}

#[derive(Template)]
#[template(path = "service_page.html")]
struct ServicePageTemplate<'a> {
    nav: bool,
    node: &'a str,
    time: String,
    name: &'a str,
    body: String,
}

/// `/ui/services/{name}`.
pub fn service_page(header: &Header, page: &ServicePage) -> Result<String, UiError> {
    render(
        "service page",
        &ServicePageTemplate {
            nav: true,
            node: &header.node,
            time: format::utc_time(header.now_ms),
            name: &page.name,
            body: service_section(page, header.now_ms)?,
        },
    )
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage<'a> {
    nav: bool,
    node: &'a str,
    time: String,
    events: String,
}

/// How many events `/ui/events` lists.
pub const HISTORY_EVENTS: usize = 500;

/// `/ui/events`: the event history, newest first.
pub fn events_page(header: &Header, events: &Source<EventsResponse>) -> Result<String, UiError> {
    render(
        "events page",
        &HistoryPage {
            nav: true,
            node: &header.node,
            time: format::utc_time(header.now_ms),
            events: events_section(events, HISTORY_EVENTS, header.now_ms)?,
        },
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    nav: bool,
    node: &'a str,
    time: String,
    error: Option<&'a str>,
}

/// `/ui/login`: the token form, with why the last attempt was refused.
pub fn login_page(error: Option<&str>) -> Result<String, UiError> {
    render("login page", &LoginPage { nav: false, node: "", time: String::new(), error })
}

#[cfg(test)]
mod tests;
