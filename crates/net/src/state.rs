//! The compiled form of a [`NetTable`] that the data path reads: endpoint pools per service
//! port, looked up by proxy listen address and by route. Built once per `update` and swapped
//! in atomically; connections and requests take a snapshot (`Arc`) when they start.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::{Backend, Pool};
use crate::dial::Target;
use crate::stats::{ProxyCounters, RouteCounters};
use crate::NetTable;

/// What a proxy listener on one `address:port` serves.
#[derive(Debug, Clone)]
pub(crate) struct ListenTarget {
    /// `proxy:<project>/<service>/<port>`, as shown by `bound()`.
    pub label: String,
    pub pool: Arc<Pool>,
}

#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub table: NetTable,
    /// Bumped on every update; the DNS SOA serial.
    pub serial: u32,
    pub listen: BTreeMap<SocketAddr, ListenTarget>,
    /// Parallel to `table.routes`: the pool of each route's service port (`None`: unknown
    /// service or port).
    pub route_pools: Vec<Option<Arc<Pool>>>,
    /// Parallel to `table.routes`: each route's counters, carried over from the previous
    /// table for a route with the same host, path and service.
    pub route_counters: Vec<Arc<RouteCounters>>,
    /// Each service port's proxy counters, by (project, service, port name), carried
    /// over from the previous table.
    pub proxy_counters: BTreeMap<(String, String, String), Arc<ProxyCounters>>,
    /// Every endpoint target of the table (ready or not), reused by the next compile so
    /// in-flight counts and passive-down marks survive updates.
    /// Keyed by service too: two services may lead to the same instance port (a
    /// database's `-rw` and `-wal`), and cutting one's connections must not cut the other's.
    backends: HashMap<(String, String, Target), Arc<Backend>>,
}

impl Compiled {
    pub fn build(table: NetTable, previous: &Compiled) -> Compiled {
        let mut backends = HashMap::new();
        let mut pools: HashMap<(usize, &str), Arc<Pool>> = HashMap::new();
        let mut listen = BTreeMap::new();
        let mut proxy_counters = BTreeMap::new();
        for (si, svc) in table.services.iter().enumerate() {
            for (port_name, port) in &svc.ports {
                let mut ready = Vec::new();
                for ep in &svc.endpoints {
                    let Some(target) = ep.ports.get(port_name) else { continue };
                    let key = (svc.name.clone(), ep.instance.clone(), target.clone());
                    let backend = backends
                        .entry(key.clone())
                        .or_insert_with(|| {
                            previous.backends.get(&key).cloned().unwrap_or_else(|| Arc::new(Backend::new(key.1, key.2)))
                        })
                        .clone();
                    if ep.ready {
                        ready.push(backend);
                    }
                }
                let addr = SocketAddr::from((svc.address, *port));
                if svc.single_writer {
                    cut_the_unready(previous.listen.get(&addr), &ready);
                }
                let mut pool = Pool::new(svc.name.clone(), ready);
                let key = (svc.project.clone(), svc.name.clone(), port_name.clone());
                pool.counters = previous
                    .proxy_counters
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(ProxyCounters::new(key.0.clone(), key.1.clone(), key.2.clone())));
                proxy_counters.insert(key, pool.counters.clone());
                pool.single_writer = svc.single_writer;
                pool.redis_wait = svc.redis_wait;
                let pool = Arc::new(pool);
                pools.insert((si, port_name.as_str()), pool.clone());
                let label = format!("proxy:{}/{}/{}", svc.project, svc.name, port_name);
                listen.insert(addr, ListenTarget { label, pool });
            }
        }
        // A single-writer listener that is gone cuts everything it had.
        for (addr, old) in &previous.listen {
            if old.pool.single_writer && !listen.contains_key(addr) {
                cut_the_unready(Some(old), &[]);
            }
        }
        let route_pools = table
            .routes
            .iter()
            .map(|r| {
                let si = table.find_service(&r.service)?;
                pools.get(&(si, r.port.as_str())).cloned()
            })
            .collect();
        let old: HashMap<(&str, &str), &Arc<RouteCounters>> =
            previous.route_counters.iter().map(|c| ((c.label.as_str(), c.service.as_str()), c)).collect();
        let route_counters = table
            .routes
            .iter()
            .map(|r| {
                let label = r.label();
                match old.get(&(label.as_str(), r.service.as_str())) {
                    Some(c) => Arc::clone(c),
                    None => Arc::new(RouteCounters::new(label, r.service.clone())),
                }
            })
            .collect();
        Compiled {
            serial: previous.serial.wrapping_add(1),
            listen,
            route_pools,
            route_counters,
            proxy_counters,
            backends,
            table,
        }
    }

    /// Every endpoint target in the table (for pruning the HTTP client pool).
    pub fn endpoint_targets(&self) -> impl Iterator<Item = &Target> + '_ {
        self.backends.keys().map(|(_, _, t)| t)
    }
}

/// Cuts the connections of every endpoint the previous pool had ready that `ready` no
/// longer has.
fn cut_the_unready(previous: Option<&ListenTarget>, ready: &[Arc<Backend>]) {
    for old in previous.map(|p| p.pool.backends.as_slice()).unwrap_or_default() {
        if !ready.iter().any(|b| Arc::ptr_eq(b, old)) {
            tracing::info!(instance = %old.instance, target = %old.target, "proxy: single-writer endpoint left rotation: cutting its connections");
            old.cut_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Route, ServiceNet};
    use std::net::Ipv4Addr;

    fn ep(instance: &str, port: u16, ready: bool) -> Endpoint {
        Endpoint {
            instance: instance.into(),
            ports: [("http".to_string(), SocketAddr::from(([127, 0, 0, 1], port)).into())].into(),
            ready,
        }
    }

    fn table(endpoints: Vec<Endpoint>) -> NetTable {
        NetTable {
            services: vec![ServiceNet {
                project: "demo".into(),
                name: "web".into(),
                address: Ipv4Addr::new(127, 77, 0, 1),
                ports: [("http".to_string(), 8080), ("admin".to_string(), 9000)].into(),
                endpoints,
                single_writer: false,
                redis_wait: None,
            }],
            routes: vec![
                Route::new("a", "/", "web", "http"),
                Route::new("b", "/", "nope", "http"),
                Route::new("c", "/", "demo/web", "nope"),
            ],
            ..NetTable::default()
        }
    }

    #[test]
    fn pools_hold_ready_endpoints_of_the_port() {
        let c = Compiled::build(
            table(vec![ep("web-0", 1, true), ep("web-1", 2, false), ep("web-2", 3, true)]),
            &Compiled::default(),
        );
        let t = &c.listen[&"127.77.0.1:8080".parse().unwrap()];
        assert_eq!(t.label, "proxy:demo/web/http");
        let names: Vec<_> = t.pool.backends.iter().map(|b| b.instance.as_str()).collect();
        assert_eq!(names, ["web-0", "web-2"]);
        assert!(c.listen[&"127.77.0.1:9000".parse().unwrap()].pool.backends.is_empty());
        assert_eq!(c.route_pools.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(c.serial, 1);
    }

    #[test]
    fn backend_state_survives_updates() {
        let first = Compiled::build(table(vec![ep("web-0", 1, true)]), &Compiled::default());
        let b0 = first.listen.values().next().unwrap().pool.backends[0].clone();
        let second = Compiled::build(table(vec![ep("web-0", 1, false), ep("web-1", 2, true)]), &first);
        let third = Compiled::build(table(vec![ep("web-0", 1, true)]), &second);
        let again = &third.listen[&"127.77.0.1:8080".parse().unwrap()].pool.backends[0];
        assert!(Arc::ptr_eq(&b0, again));
        assert_eq!(third.serial, 3);
    }
}
