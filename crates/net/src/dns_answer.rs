//! The DNS decision, a pure function of the table: [`answer`] says what the server replies to
//! one question. `dns.rs` turns the result into wire records.
//!
//! Names in the zone (default `internal.`):
//! - `<service>.<project>.<zone>`: `A` → the service address (its stable proxy address, so it
//!   does not depend on which instances are ready);
//! - `_<port>._tcp.<service>.<project>.<zone>`: `SRV 0 0 <port> <service>.<project>.<zone>.`,
//!   with that name's `A` record in the additional section;
//! - `<service>.<zone>` and `_<port>._tcp.<service>.<zone>`: the same, as short names, when
//!   exactly one project has a service of that name;
//! - the apex answers `SOA`; names that exist only as parents of the above (`<project>.<zone>`,
//!   `_tcp.<service>.<project>.<zone>`) and other types at existing names get an empty
//!   NOERROR answer (NODATA); both NODATA and NXDOMAIN carry the zone's SOA in authority.
//!
//! Unknown names in the zone → NXDOMAIN; names outside it → REFUSED (we are no resolver).

use std::net::Ipv4Addr;

use crate::{NetTable, ServiceNet};

/// The zone the server is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    /// Lowercase, without leading or trailing dot, e.g. `internal`.
    pub domain: String,
    pub ttl: u32,
    pub serial: u32,
}

/// The query types the decision distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QType {
    A,
    Srv,
    Soa,
    Any,
    /// Anything else (AAAA, NS, TXT, ...): NODATA at existing names.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rcode {
    NoError,
    NxDomain,
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RData {
    A(Ipv4Addr),
    /// Priority and weight are 0; `target` is a fully qualified name with trailing dot.
    Srv {
        port: u16,
        target: String,
    },
    /// The zone's SOA (built from [`Zone`]).
    Soa,
}

/// One resource record; `name` is fully qualified, lowercase, with a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rr {
    pub name: String,
    pub data: RData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub rcode: Rcode,
    /// Whether we are authoritative for the name (everything but REFUSED).
    pub authoritative: bool,
    pub answers: Vec<Rr>,
    /// The zone SOA in the authority section (NXDOMAIN and NODATA).
    pub soa_in_authority: bool,
    pub additionals: Vec<Rr>,
}

impl Answer {
    fn refused() -> Self {
        Answer {
            rcode: Rcode::Refused,
            authoritative: false,
            answers: vec![],
            soa_in_authority: false,
            additionals: vec![],
        }
    }

    fn negative(rcode: Rcode) -> Self {
        Answer { rcode, authoritative: true, answers: vec![], soa_in_authority: true, additionals: vec![] }
    }

    fn records(answers: Vec<Rr>, additionals: Vec<Rr>) -> Self {
        Answer { rcode: Rcode::NoError, authoritative: true, answers, soa_in_authority: false, additionals }
    }
}

/// What a name in the zone is.
enum Node<'a> {
    Apex,
    Service(&'a ServiceNet),
    Srv(&'a ServiceNet, u16),
    /// Exists only as the parent of other names.
    Empty,
}

/// The reply to the question `name` (any case, with or without trailing dot) of type `qtype`.
pub(crate) fn answer(zone: &Zone, table: &NetTable, name: &str, qtype: QType) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let relative = if name == zone.domain {
        Some("")
    } else {
        name.strip_suffix(zone.domain.as_str()).and_then(|p| p.strip_suffix('.')).filter(|p| !p.is_empty())
    };
    let Some(relative) = relative else { return Answer::refused() };
    let labels: Vec<&str> = if relative.is_empty() { vec![] } else { relative.split('.').collect() };
    let owner = format!("{name}.");
    match find(table, &labels) {
        None => Answer::negative(Rcode::NxDomain),
        Some(Node::Apex) => match qtype {
            QType::Soa | QType::Any => {
                Answer::records(vec![Rr { name: format!("{}.", zone.domain), data: RData::Soa }], vec![])
            }
            _ => Answer::negative(Rcode::NoError),
        },
        Some(Node::Service(svc)) => match qtype {
            QType::A | QType::Any => Answer::records(vec![Rr { name: owner, data: RData::A(svc.address) }], vec![]),
            _ => Answer::negative(Rcode::NoError),
        },
        Some(Node::Srv(svc, port)) => match qtype {
            QType::Srv | QType::Any => {
                let target = format!("{}.{}.{}.", svc.name, svc.project, zone.domain).to_ascii_lowercase();
                Answer::records(
                    vec![Rr { name: owner, data: RData::Srv { port, target: target.clone() } }],
                    vec![Rr { name: target, data: RData::A(svc.address) }],
                )
            }
            _ => Answer::negative(Rcode::NoError),
        },
        Some(Node::Empty) => Answer::negative(Rcode::NoError),
    }
}

/// Resolves the labels below the zone apex (leftmost first).
fn find<'a>(table: &'a NetTable, labels: &[&str]) -> Option<Node<'a>> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let full = |svc: &str, project: &str| table.services.iter().find(|s| eq(&s.name, svc) && eq(&s.project, project));
    let short = |svc: &str| {
        let mut it = table.services.iter().filter(|s| eq(&s.name, svc));
        match (it.next(), it.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    };
    let port = |svc: &'a ServiceNet, label: &str| {
        let name = label.strip_prefix('_')?;
        svc.ports.iter().find(|(n, _)| eq(n, name)).map(|(_, p)| Node::Srv(svc, *p))
    };
    match labels {
        [] => Some(Node::Apex),
        [svc, project] if !svc.starts_with('_') => full(svc, project).map(Node::Service),
        [one] => match short(one) {
            Some(svc) => Some(Node::Service(svc)),
            None => table.services.iter().any(|s| eq(&s.project, one) || eq(&s.name, one)).then_some(Node::Empty),
        },
        [p, tcp, svc, project] if eq(tcp, "_tcp") => full(svc, project).and_then(|s| port(s, p)),
        [p, tcp, svc] if eq(tcp, "_tcp") => short(svc).and_then(|s| port(s, p)),
        [tcp, svc, project] if eq(tcp, "_tcp") => {
            full(svc, project).filter(|s| !s.ports.is_empty()).map(|_| Node::Empty)
        }
        [tcp, svc] if eq(tcp, "_tcp") => short(svc).filter(|s| !s.ports.is_empty()).map(|_| Node::Empty),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn table() -> NetTable {
        let svc = |project: &str, name: &str, last: u8, ports: &[(&str, u16)]| ServiceNet {
            project: project.into(),
            name: name.into(),
            address: Ipv4Addr::new(127, 77, 0, last),
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect::<BTreeMap<_, _>>(),
            endpoints: vec![],
            single_writer: false,
            redis_wait: None,
        };
        NetTable {
            services: vec![
                svc("demo", "web", 1, &[("http", 8080), ("admin", 9000)]),
                svc("demo", "db", 2, &[("pg", 5432)]),
                svc("shop", "db", 3, &[("pg", 5432)]),
                svc("shop", "cart", 4, &[]),
            ],
            routes: vec![],
            ..NetTable::default()
        }
    }

    /// Renders an answer as `RCODE[ aa]; answers; auth SOA; + additionals`.
    fn render(a: &Answer) -> String {
        let rr = |r: &Rr| match &r.data {
            RData::A(ip) => format!("{} A {ip}", r.name),
            RData::Srv { port, target } => format!("{} SRV {port} {target}", r.name),
            RData::Soa => format!("{} SOA", r.name),
        };
        let mut s = format!("{:?}", a.rcode).to_uppercase();
        if !a.authoritative {
            s.push_str(" noaa");
        }
        for r in &a.answers {
            s.push_str(&format!("; {}", rr(r)));
        }
        if a.soa_in_authority {
            s.push_str("; auth SOA");
        }
        for r in &a.additionals {
            s.push_str(&format!("; + {}", rr(r)));
        }
        s
    }

    fn check(name: &str, qtype: QType, expected: &str) {
        let zone = Zone { domain: "internal".into(), ttl: 5, serial: 1 };
        assert_eq!(render(&answer(&zone, &table(), name, qtype)), expected, "{name} {qtype:?}");
    }

    #[test]
    fn answers() {
        use QType::*;
        check("web.demo.internal.", A, "NOERROR; web.demo.internal. A 127.77.0.1");
        check("web.demo.internal", A, "NOERROR; web.demo.internal. A 127.77.0.1");
        check("WEB.Demo.INTERNAL.", A, "NOERROR; web.demo.internal. A 127.77.0.1");
        check("web.demo.internal.", Any, "NOERROR; web.demo.internal. A 127.77.0.1");
        check("web.demo.internal.", Other, "NOERROR; auth SOA");
        check("web.demo.internal.", Srv, "NOERROR; auth SOA");
        check("nope.demo.internal.", A, "NXDOMAIN; auth SOA");
        check("web.nope.internal.", A, "NXDOMAIN; auth SOA");
        check("x.web.demo.internal.", A, "NXDOMAIN; auth SOA");
        check(
            "_http._tcp.web.demo.internal.",
            Srv,
            "NOERROR; _http._tcp.web.demo.internal. SRV 8080 web.demo.internal.; + web.demo.internal. A 127.77.0.1",
        );
        check(
            "_admin._tcp.web.demo.internal.",
            Srv,
            "NOERROR; _admin._tcp.web.demo.internal. SRV 9000 web.demo.internal.; + web.demo.internal. A 127.77.0.1",
        );
        check(
            "_HTTP._TCP.web.demo.internal.",
            Srv,
            "NOERROR; _http._tcp.web.demo.internal. SRV 8080 web.demo.internal.; + web.demo.internal. A 127.77.0.1",
        );
        check("_http._tcp.web.demo.internal.", A, "NOERROR; auth SOA");
        check("_nope._tcp.web.demo.internal.", Srv, "NXDOMAIN; auth SOA");
        check("_http._udp.web.demo.internal.", Srv, "NXDOMAIN; auth SOA");
        check("http._tcp.web.demo.internal.", Srv, "NXDOMAIN; auth SOA");
        check("_tcp.web.demo.internal.", Srv, "NOERROR; auth SOA");
        check("_tcp.cart.shop.internal.", Srv, "NXDOMAIN; auth SOA");
        check("demo.internal.", A, "NOERROR; auth SOA");
        check("internal.", Soa, "NOERROR; internal. SOA");
        check("internal.", Any, "NOERROR; internal. SOA");
        check("internal.", A, "NOERROR; auth SOA");
        check("web.internal.", A, "NOERROR; web.internal. A 127.77.0.1");
        check(
            "_http._tcp.web.internal.",
            Srv,
            "NOERROR; _http._tcp.web.internal. SRV 8080 web.demo.internal.; + web.demo.internal. A 127.77.0.1",
        );
        check("_tcp.web.internal.", Srv, "NOERROR; auth SOA");
        check("db.internal.", A, "NOERROR; auth SOA");
        check("_pg._tcp.db.internal.", Srv, "NXDOMAIN; auth SOA");
        check("db.shop.internal.", A, "NOERROR; db.shop.internal. A 127.77.0.3");
        check("cart.internal.", A, "NOERROR; cart.internal. A 127.77.0.4");
        check("unknown.internal.", A, "NXDOMAIN; auth SOA");
        check("example.com.", A, "REFUSED noaa");
        check("xinternal.", A, "REFUSED noaa");
        check("internal.example.", A, "REFUSED noaa");
        check(".", A, "REFUSED noaa");
        check("", A, "REFUSED noaa");
    }

    #[test]
    fn other_domain() {
        let zone = Zone { domain: "hf.lan".into(), ttl: 5, serial: 1 };
        let a = |name: &str| render(&answer(&zone, &table(), name, QType::A));
        assert_eq!(a("web.demo.hf.lan."), "NOERROR; web.demo.hf.lan. A 127.77.0.1");
        assert_eq!(a("web.demo.internal."), "REFUSED noaa");
        assert_eq!(a("lan."), "REFUSED noaa");
    }
}
