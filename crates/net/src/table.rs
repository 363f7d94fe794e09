//! The routing table the daemon hands to the crate, and the environment variables that tell
//! workloads where their project's services are.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::dial::Target;

/// The DNS zone the crate serves unless configured otherwise.
pub const DEFAULT_DOMAIN: &str = "internal";

/// Everything the node's networking needs to know. The daemon builds a complete table and
/// replaces it (`NetHandle::update`) whenever anything changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetTable {
    pub services: Vec<ServiceNet>,
    pub routes: Vec<Route>,
    /// Zones an edge node's public DNS server answers for (empty elsewhere).
    pub zones: Vec<PublicZone>,
    /// The public addresses routed hosts resolve to: the edge nodes this node sees alive
    /// with their ingress answering (the daemon decides what to hand over when none is).
    pub edge_addresses: Vec<std::net::IpAddr>,
    /// ACME HTTP-01 challenges an edge answers on plain HTTP at
    /// `/.well-known/acme-challenge/<token>`: token → key authorization.
    pub acme_challenges: BTreeMap<String, String>,
}

/// A zone answered authoritatively by the edge nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicZone {
    /// Lowercase apex without a trailing dot, e.g. `example.com`.
    pub name: String,
    /// TTL of the zone's answers (seconds).
    pub ttl: u32,
    /// Every edge node's public address, in a stable order: `ns1.<zone>`, `ns2.<zone>`, ...
    pub nameservers: Vec<std::net::IpAddr>,
    /// Hosts in the zone that routes serve: exact names, or `*.suffix` (any name below).
    pub routed: Vec<String>,
    pub records: Vec<PublicRecord>,
}

/// A static record of a [`PublicZone`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRecord {
    /// Fully qualified, lowercase, without trailing dot; a wildcard starts with `*.`.
    pub name: String,
    pub ttl: u32,
    pub data: RecordData,
}

/// The data of a static record. Names are fully qualified with a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Cname(String),
    Mx { preference: u16, exchange: String },
    Txt(String),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Caa { flags: u8, tag: String, value: String },
}

/// One service: its stable address and ports, and the instances behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNet {
    pub project: String,
    pub name: String,
    /// Stable service address in 127.0.0.0/8, chosen by the control plane.
    pub address: Ipv4Addr,
    /// Named stable ports, e.g. `http -> 8080`.
    pub ports: BTreeMap<String, u16>,
    pub endpoints: Vec<Endpoint>,
    /// A single-writer endpoint (a database primary): every open connection to an endpoint
    /// that stops being ready is cut at once (its clients reconnect to the new one instead
    /// of writing to, or hanging on, the old), and no connection is taken while the node's
    /// lease (`NetConfig::lease`) is not held.
    pub single_writer: bool,
    /// Redis with `durability: replicated`: connections are relayed by
    /// [`crate::resp::relay`], which acknowledges a write only once `replicas` replicas
    /// have it (`WAIT`); `None`: bytes are copied as they are.
    pub redis_wait: Option<crate::resp::RedisWait>,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Instance name, e.g. `web-0`.
    pub instance: String,
    /// Where the instance is reached for each named port: a local address, or a port on
    /// another machine (dialed through `NetConfig::dialer`). A port left out gets no
    /// traffic from this node (e.g. its far end failed a check).
    pub ports: BTreeMap<String, Target>,
    /// Only ready endpoints receive new connections and requests.
    pub ready: bool,
}

/// One HTTP ingress route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lowercase host name; may start with `*.` (matches any name below that suffix).
    pub host: String,
    /// Path prefix starting with `/`, matched on segment boundaries.
    pub path: String,
    /// Target service: its name (service names are unique in a cluster), or `project/name`.
    pub service: String,
    /// Name of a port of the target service.
    pub port: String,
    /// On an edge's plain-HTTP listener, answer with a permanent redirect to HTTPS.
    pub https_redirect: bool,
    /// How long a request may wait for the backend's response head before a 504.
    pub timeout: std::time::Duration,
}

/// Request timeout of a [`Route`] made with [`Route::new`] (60 s).
pub const DEFAULT_ROUTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Route {
    /// A route with no redirect and the default timeout.
    pub fn new(host: &str, path: &str, service: &str, port: &str) -> Route {
        Route {
            host: host.to_string(),
            path: path.to_string(),
            service: service.to_string(),
            port: port.to_string(),
            https_redirect: false,
            timeout: DEFAULT_ROUTE_TIMEOUT,
        }
    }

    /// `host` + `path`, as counters and the access log name a route.
    pub fn label(&self) -> String {
        format!("{}{}", self.host, self.path)
    }
}

impl NetTable {
    /// The index of the service a route's `service` field names: `name` or `project/name`.
    pub(crate) fn find_service(&self, service: &str) -> Option<usize> {
        match service.split_once('/') {
            Some((project, name)) => self.services.iter().position(|s| s.project == project && s.name == name),
            None => self.services.iter().position(|s| s.name == service),
        }
    }
}

/// Environment variables for the workloads of `project`: for each of the project's services
/// `<NAME>_HOST=<address>` and, per named port, `<NAME>_<PORT>_ADDR=<address>:<port>` (names
/// uppercased, anything but letters and digits turned into `_`), plus
/// `HOLDFAST_DNS_DOMAIN=internal` (the default zone; see [`service_env_with_domain`]).
pub fn service_env(table: &NetTable, project: &str) -> BTreeMap<String, String> {
    service_env_with_domain(table, project, DEFAULT_DOMAIN)
}

/// [`service_env`] for a node whose DNS zone is `domain` (`NetConfig::domain`).
pub fn service_env_with_domain(table: &NetTable, project: &str, domain: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for svc in table.services.iter().filter(|s| s.project == project) {
        let name = env_name(&svc.name);
        env.insert(format!("{name}_HOST"), svc.address.to_string());
        for (port_name, port) in &svc.ports {
            env.insert(format!("{name}_{}_ADDR", env_name(port_name)), format!("{}:{port}", svc.address));
        }
    }
    env.insert("HOLDFAST_DNS_DOMAIN".to_string(), domain.trim_end_matches('.').to_string());
    env
}

fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(project: &str, name: &str, addr: [u8; 4], ports: &[(&str, u16)]) -> ServiceNet {
        ServiceNet {
            project: project.into(),
            name: name.into(),
            address: Ipv4Addr::from(addr),
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            endpoints: vec![],
            single_writer: false,
            redis_wait: None,
        }
    }

    fn table() -> NetTable {
        NetTable {
            services: vec![
                svc("demo", "web", [127, 64, 0, 1], &[("http", 8080)]),
                svc("demo", "api-v2", [127, 64, 0, 2], &[("http", 80), ("grpc-x", 9000)]),
                svc("other", "db", [127, 64, 0, 3], &[("pg", 5432)]),
            ],
            routes: vec![],
            ..NetTable::default()
        }
    }

    /// `expected` is the environment as `K=V` lines joined by spaces.
    fn check(project: &str, domain: &str, expected: &str) {
        let env = service_env_with_domain(&table(), project, domain);
        let got: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got.join(" "), expected, "project {project}");
    }

    #[test]
    fn env_vars() {
        check("demo", "internal", "API_V2_GRPC_X_ADDR=127.64.0.2:9000 API_V2_HOST=127.64.0.2 API_V2_HTTP_ADDR=127.64.0.2:80 HOLDFAST_DNS_DOMAIN=internal WEB_HOST=127.64.0.1 WEB_HTTP_ADDR=127.64.0.1:8080");
        check("other", "internal", "DB_HOST=127.64.0.3 DB_PG_ADDR=127.64.0.3:5432 HOLDFAST_DNS_DOMAIN=internal");
        check("none", "internal", "HOLDFAST_DNS_DOMAIN=internal");
        check("none", "cluster.local.", "HOLDFAST_DNS_DOMAIN=cluster.local");
        assert_eq!(service_env(&table(), "other").get("HOLDFAST_DNS_DOMAIN").map(String::as_str), Some("internal"));
    }

    #[test]
    fn find_service_by_name_or_project_slash_name() {
        let t = table();
        assert_eq!(t.find_service("db"), Some(2));
        assert_eq!(t.find_service("demo/web"), Some(0));
        assert!(t.find_service("other/web").is_none());
        assert!(t.find_service("nope").is_none());
    }
}
