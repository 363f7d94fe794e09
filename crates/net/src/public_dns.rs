//! The edge's authoritative DNS decision, a pure function of the table: [`answer`] says
//! what an edge node replies to one question about its public zones. `dns.rs` turns the
//! result into wire records.
//!
//! For each zone: `SOA` and `NS` at the apex (name servers `ns1.<zone>`, `ns2.<zone>`, ...,
//! one per edge node, with their addresses as glue); `A`/`AAAA` of every routed host (exact,
//! or below a `*.` route) answered with [`crate::NetTable::edge_addresses`] (the live edges
//! as the daemon sees them); the zone's static records, with `*` wildcards answering names
//! that do not exist otherwise. A `CNAME` answers every type at its name. Names that exist
//! only as parents of others get NODATA; unknown names NXDOMAIN; both carry the zone's SOA
//! in authority. Names outside every zone are REFUSED: the edge is no resolver.

use std::net::IpAddr;

use crate::{PublicZone, RecordData};

/// The query types the decision distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubQType {
    A,
    Aaaa,
    Cname,
    Mx,
    Txt,
    Srv,
    Caa,
    Ns,
    Soa,
    Any,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubRcode {
    NoError,
    NxDomain,
    Refused,
}

/// Data of one answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PubData {
    Record(RecordData),
    Ip(IpAddr),
    /// A name server, fully qualified with trailing dot.
    Ns(String),
    /// The zone's SOA.
    Soa,
}

/// One resource record; `name` fully qualified, lowercase, with a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PubRr {
    pub name: String,
    pub ttl: u32,
    pub data: PubData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PubAnswer {
    pub rcode: PubRcode,
    /// The zone the name is in (`None`: REFUSED).
    pub zone: Option<usize>,
    pub answers: Vec<PubRr>,
    /// The zone's SOA in authority (NXDOMAIN and NODATA).
    pub soa_in_authority: bool,
    pub additionals: Vec<PubRr>,
}

fn fq(name: &str) -> String {
    format!("{name}.")
}

/// The name server names of `zone`: `ns1.<zone>` ... one per edge.
pub(crate) fn ns_name(zone: &str, i: usize) -> String {
    format!("ns{}.{zone}", i + 1)
}

fn wants(qtype: PubQType, data: &RecordData) -> bool {
    matches!(
        (qtype, data),
        (PubQType::Any, _)
            | (PubQType::A, RecordData::A(_))
            | (PubQType::Aaaa, RecordData::Aaaa(_))
            | (PubQType::Cname, RecordData::Cname(_))
            | (PubQType::Mx, RecordData::Mx { .. })
            | (PubQType::Txt, RecordData::Txt(_))
            | (PubQType::Srv, RecordData::Srv { .. })
            | (PubQType::Caa, RecordData::Caa { .. })
    )
}

fn ip_wanted(qtype: PubQType, ip: &IpAddr) -> bool {
    matches!((qtype, ip), (PubQType::Any, _) | (PubQType::A, IpAddr::V4(_)) | (PubQType::Aaaa, IpAddr::V6(_)))
}

/// Whether a route host (`a.b` or `*.b`) serves `name`.
fn routed(route: &str, name: &str) -> bool {
    match route.strip_prefix("*.") {
        Some(suffix) => name.strip_suffix(suffix).and_then(|b| b.strip_suffix('.')).is_some_and(|b| !b.is_empty()),
        None => route == name,
    }
}

/// The reply to `name` (any case, trailing dot optional) of type `qtype`.
pub(crate) fn answer(zones: &[PublicZone], edges: &[IpAddr], name: &str, qtype: PubQType) -> PubAnswer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let in_zone = |z: &PublicZone| name == z.name || name.strip_suffix(&z.name).is_some_and(|p| p.ends_with('.'));
    let Some((zi, zone)) = zones.iter().enumerate().filter(|(_, z)| in_zone(z)).max_by_key(|(_, z)| z.name.len())
    else {
        return PubAnswer {
            rcode: PubRcode::Refused,
            zone: None,
            answers: vec![],
            soa_in_authority: false,
            additionals: vec![],
        };
    };
    let owner = fq(&name);
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    let is_apex = name == zone.name;
    let ns_index = (0..zone.nameservers.len()).find(|i| ns_name(&zone.name, *i) == name);
    let is_routed = zone.routed.iter().any(|r| routed(r, &name));

    // Static records at the name itself, or else at the closest wildcard.
    let exact: Vec<&RecordData> = zone.records.iter().filter(|r| r.name == name).map(|r| &r.data).collect();
    let below = |n: &str| -> bool {
        let suffix = format!(".{n}");
        zone.records.iter().any(|r| r.name.ends_with(&suffix))
            || zone.routed.iter().any(|r| r.ends_with(&suffix))
            || (0..zone.nameservers.len()).any(|i| ns_name(&zone.name, i).ends_with(&suffix))
    };
    let exists = is_apex || ns_index.is_some() || is_routed || !exact.is_empty() || below(&name);
    let mut records: Vec<(u32, &RecordData)> =
        zone.records.iter().filter(|r| r.name == name).map(|r| (r.ttl, &r.data)).collect();
    if !exists {
        let mut parent = name.as_str();
        while let Some((_, rest)) = parent.split_once('.') {
            if rest.len() < zone.name.len() {
                break;
            }
            let wildcard = format!("*.{rest}");
            let found: Vec<(u32, &RecordData)> =
                zone.records.iter().filter(|r| r.name == wildcard).map(|r| (r.ttl, &r.data)).collect();
            if !found.is_empty() {
                records = found;
                break;
            }
            parent = rest;
        }
    }
    if records.is_empty() && !exists {
        return PubAnswer {
            rcode: PubRcode::NxDomain,
            zone: Some(zi),
            answers: vec![],
            soa_in_authority: true,
            additionals: vec![],
        };
    }

    let cname = records.iter().find(|(_, d)| matches!(d, RecordData::Cname(_)));
    if let Some((ttl, data)) = cname {
        // A CNAME is the only record at its name: it answers every type.
        answers.push(PubRr { name: owner.clone(), ttl: *ttl, data: PubData::Record((*data).clone()) });
    } else {
        for (ttl, data) in &records {
            if wants(qtype, data) {
                answers.push(PubRr { name: owner.clone(), ttl: *ttl, data: PubData::Record((*data).clone()) });
            }
        }
        if is_routed || ns_index.is_some() {
            let ips: Vec<IpAddr> = match ns_index {
                Some(i) => vec![zone.nameservers[i]],
                None => edges.to_vec(),
            };
            for ip in ips.iter().filter(|ip| ip_wanted(qtype, ip)) {
                answers.push(PubRr { name: owner.clone(), ttl: zone.ttl, data: PubData::Ip(*ip) });
            }
        }
        if is_apex {
            if matches!(qtype, PubQType::Soa | PubQType::Any) {
                answers.push(PubRr { name: owner.clone(), ttl: zone.ttl, data: PubData::Soa });
            }
            if matches!(qtype, PubQType::Ns | PubQType::Any) {
                for (i, ip) in zone.nameservers.iter().enumerate() {
                    let ns = fq(&ns_name(&zone.name, i));
                    answers.push(PubRr { name: owner.clone(), ttl: zone.ttl, data: PubData::Ns(ns.clone()) });
                    additionals.push(PubRr { name: ns, ttl: zone.ttl, data: PubData::Ip(*ip) });
                }
            }
        }
    }
    let nodata = answers.is_empty();
    PubAnswer { rcode: PubRcode::NoError, zone: Some(zi), answers, soa_in_authority: nodata, additionals }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PublicRecord;

    fn zone() -> PublicZone {
        let rec = |name: &str, data: RecordData| PublicRecord { name: name.into(), ttl: 300, data };
        PublicZone {
            name: "example.com".into(),
            ttl: 15,
            nameservers: vec!["192.0.2.1".parse().unwrap(), "2001:db8::2".parse().unwrap()],
            routed: vec!["example.com".into(), "shop.example.com".into(), "*.apps.example.com".into()],
            records: vec![
                rec("example.com", RecordData::Mx { preference: 10, exchange: "mail.example.net.".into() }),
                rec("example.com", RecordData::Txt("v=spf1 -all".into())),
                rec("www.example.com", RecordData::Cname("shop.example.com.".into())),
                rec("a.deep.example.com", RecordData::A("192.0.2.50".parse().unwrap())),
                rec("*.wild.example.com", RecordData::Txt("wild".into())),
                rec("x.wild.example.com", RecordData::Txt("exact".into())),
            ],
        }
    }

    fn edges() -> Vec<IpAddr> {
        vec!["198.51.100.1".parse().unwrap(), "198.51.100.2".parse().unwrap(), "2001:db8::9".parse().unwrap()]
    }

    /// The answer as `RCODE; answers; +SOA` with records `name type data`.
    fn render(a: &PubAnswer) -> String {
        let rr = |r: &PubRr| {
            let data = match &r.data {
                PubData::Ip(ip) => format!("{} {ip}", if ip.is_ipv4() { "A" } else { "AAAA" }),
                PubData::Ns(n) => format!("NS {n}"),
                PubData::Soa => "SOA".into(),
                PubData::Record(d) => format!("{d:?}"),
            };
            format!("{} {} {data}", r.name, r.ttl)
        };
        let mut out = format!("{:?}", a.rcode);
        for r in &a.answers {
            out.push_str(&format!("; {}", rr(r)));
        }
        if a.soa_in_authority {
            out.push_str("; +SOA");
        }
        for r in &a.additionals {
            out.push_str(&format!("; add {}", rr(r)));
        }
        out
    }

    fn check(name: &str, q: PubQType, expected: &str) {
        assert_eq!(render(&answer(&[zone()], &edges(), name, q)), expected, "{name} {q:?}");
    }

    #[test]
    fn routed_hosts_answer_the_live_edges() {
        check(
            "shop.example.com",
            PubQType::A,
            "NoError; shop.example.com. 15 A 198.51.100.1; shop.example.com. 15 A 198.51.100.2",
        );
        check("SHOP.Example.com.", PubQType::Aaaa, "NoError; shop.example.com. 15 AAAA 2001:db8::9");
        check("shop.example.com", PubQType::Mx, "NoError; +SOA");
        check(
            "x.apps.example.com",
            PubQType::A,
            "NoError; x.apps.example.com. 15 A 198.51.100.1; x.apps.example.com. 15 A 198.51.100.2",
        );
        check("y.x.apps.example.com", PubQType::Aaaa, "NoError; y.x.apps.example.com. 15 AAAA 2001:db8::9");
        // The wildcard's parent is not routed; it exists as a parent (NODATA).
        check("apps.example.com", PubQType::A, "NoError; +SOA");
    }

    #[test]
    fn apex_has_soa_ns_and_its_records() {
        check("example.com", PubQType::Soa, "NoError; example.com. 15 SOA");
        check(
            "example.com",
            PubQType::Ns,
            "NoError; example.com. 15 NS ns1.example.com.; example.com. 15 NS ns2.example.com.; add ns1.example.com. 15 A 192.0.2.1; add ns2.example.com. 15 AAAA 2001:db8::2",
        );
        check(
            "example.com",
            PubQType::Mx,
            "NoError; example.com. 300 Mx { preference: 10, exchange: \"mail.example.net.\" }",
        );
        check("example.com", PubQType::A, "NoError; example.com. 15 A 198.51.100.1; example.com. 15 A 198.51.100.2");
        check("ns1.example.com", PubQType::A, "NoError; ns1.example.com. 15 A 192.0.2.1");
        check("ns2.example.com", PubQType::A, "NoError; +SOA");
        check("ns2.example.com", PubQType::Aaaa, "NoError; ns2.example.com. 15 AAAA 2001:db8::2");
        check("ns3.example.com", PubQType::A, "NxDomain; +SOA");
    }

    #[test]
    fn static_records_cname_wildcards_and_negatives() {
        check("www.example.com", PubQType::A, "NoError; www.example.com. 300 Cname(\"shop.example.com.\")");
        check("www.example.com", PubQType::Txt, "NoError; www.example.com. 300 Cname(\"shop.example.com.\")");
        check("a.deep.example.com", PubQType::A, "NoError; a.deep.example.com. 300 A(192.0.2.50)");
        check("deep.example.com", PubQType::A, "NoError; +SOA");
        check("nope.example.com", PubQType::A, "NxDomain; +SOA");
        check("q.wild.example.com", PubQType::Txt, "NoError; q.wild.example.com. 300 Txt(\"wild\")");
        check("r.q.wild.example.com", PubQType::Txt, "NoError; r.q.wild.example.com. 300 Txt(\"wild\")");
        check("x.wild.example.com", PubQType::Txt, "NoError; x.wild.example.com. 300 Txt(\"exact\")");
        check("q.wild.example.com", PubQType::A, "NoError; +SOA");
        check("example.org", PubQType::A, "Refused");
        check("com", PubQType::A, "Refused");
        check("xexample.com", PubQType::A, "Refused");
    }

    #[test]
    fn no_live_edge_means_no_address() {
        let a = answer(&[zone()], &[], "shop.example.com", PubQType::A);
        assert_eq!(render(&a), "NoError; +SOA");
    }

    #[test]
    fn the_longest_zone_wins() {
        let mut sub = zone();
        sub.name = "shop.example.com".into();
        sub.routed = vec![];
        sub.records = vec![];
        let a = answer(&[zone(), sub], &edges(), "shop.example.com", PubQType::Soa);
        assert_eq!(a.zone, Some(1));
    }
}
