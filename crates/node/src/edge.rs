//! The edge role of this node: what its public DNS answers and which certificates its
//! HTTPS listener serves, from the replicated state.
//!
//! [`public_zones`] and [`record_data`] are pure: the zones of every project as
//! `holdfast-net` answers them (name servers = every edge, routed hosts = the routes whose
//! host is in the zone). [`run_probes`] probes every edge's public HTTP port twice a second
//! and publishes the consecutive failures (the decision is `control::edges::live_edges`);
//! [`run_certificates`] opens the routes' certificate secrets on this node and installs
//! them whenever a route or a secret version changes.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use holdfast_net::{NetHandle, PublicRecord, PublicZone, RecordData, ServedCert};
use holdfast_spec::{RecordSpec, RecordType, RouteTls};
use holdfast_state::ClusterState;
use tokio_util::sync::CancellationToken;

use crate::NodeContext;

/// How often every edge is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(300);
/// How long a probe's TCP connect may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// The record's data as the DNS server answers it, from the spec's canonical text (`None`
/// for text that does not parse: validation keeps it out of the state).
pub fn record_data(r: &RecordSpec) -> Option<RecordData> {
    let v = r.value.trim();
    let mut words = v.split_whitespace();
    let mut next = || words.next();
    Some(match r.rtype {
        RecordType::A => RecordData::A(v.parse().ok()?),
        RecordType::Aaaa => RecordData::Aaaa(v.parse().ok()?),
        RecordType::Cname => RecordData::Cname(absolute(v)),
        RecordType::Mx => {
            let preference = next()?.parse().ok()?;
            RecordData::Mx { preference, exchange: absolute(next()?) }
        }
        RecordType::Txt => RecordData::Txt(v.to_string()),
        RecordType::Srv => {
            let (priority, weight, port) = (next()?.parse().ok()?, next()?.parse().ok()?, next()?.parse().ok()?);
            RecordData::Srv { priority, weight, port, target: absolute(next()?) }
        }
        RecordType::Caa => {
            let flags = next()?.parse().ok()?;
            let tag = next()?.to_string();
            let rest = v.splitn(3, char::is_whitespace).nth(2)?.trim();
            let value = rest.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(rest).to_string();
            RecordData::Caa { flags, tag, value }
        }
    })
}

fn absolute(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

/// Every deployed zone as this edge answers it.
pub fn public_zones(state: &ClusterState) -> Vec<PublicZone> {
    let nameservers: Vec<IpAddr> =
        holdfast_control::edges::edge_nodes(state).iter().map(|(_, e)| e.public_address).collect();
    state
        .desired
        .zones
        .values()
        .map(|z| {
            let zone = &z.spec.name;
            let in_zone = |host: &str| {
                let h = host.strip_prefix("*.").unwrap_or(host);
                h == zone || h.strip_suffix(zone.as_str()).is_some_and(|p| p.ends_with('.'))
            };
            let routed: BTreeSet<String> =
                state.desired.routes.iter().filter(|r| in_zone(&r.host)).map(|r| r.host.clone()).collect();
            let records = z
                .spec
                .records
                .iter()
                .filter_map(|r| {
                    let name = if r.name == "@" { zone.clone() } else { format!("{}.{zone}", r.name) };
                    let data = record_data(r)?;
                    Some(PublicRecord { name, ttl: r.ttl.unwrap_or(z.spec.ttl), data })
                })
                .collect();
            PublicZone {
                name: zone.clone(),
                ttl: z.spec.ttl,
                nameservers: nameservers.clone(),
                routed: routed.into_iter().collect(),
                records,
            }
        })
        .collect()
}

/// Probes every edge's public HTTP port (a TCP connect) every [`PROBE_EVERY`] and
/// publishes each edge's consecutive failures in `ctx.edge_failures`.
pub async fn run_probes(ctx: NodeContext, cancel: CancellationToken) {
    let mut failures: BTreeMap<u64, u32> = BTreeMap::new();
    let mut was_live: Option<holdfast_control::edges::LiveEdges> = None;
    loop {
        let state = ctx.control.state();
        let edges = holdfast_control::edges::edge_nodes(&state);
        let probes = edges.iter().map(|(id, e)| {
            let addr = SocketAddr::new(e.public_address, e.http_port);
            async move {
                let ok = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                    Ok(Ok(_))
                );
                (*id, ok)
            }
        });
        let results = futures::future::join_all(probes).await;
        let mut next = BTreeMap::new();
        for (id, ok) in results {
            let before = failures.get(&id).copied().unwrap_or(0);
            next.insert(id, holdfast_control::edges::after_probe(before, ok));
        }
        failures = next;
        let live = holdfast_control::edges::live_edges(&state, &failures);
        if was_live.as_ref() != Some(&live) {
            let addrs: Vec<String> = live.addresses.iter().map(ToString::to_string).collect();
            if live.failing_open {
                tracing::warn!(edges = %addrs.join(" "), "edge: no edge answers its probes; DNS fails open and answers every edge");
            } else if was_live.is_some() {
                tracing::info!(edges = %addrs.join(" "), "edge: live edges changed");
            }
            was_live = Some(live);
        }
        ctx.edge_failures.send_if_modified(|f| {
            let changed = *f != failures;
            f.clone_from(&failures);
            changed
        });
        ctx.workers.report(
            "edge probes",
            crate::workers::Pass::Progress(format!(
                "{} edge(s), {} failing",
                edges.len(),
                failures.values().filter(|f| **f >= holdfast_control::edges::FAIL_AFTER).count()
            )),
        );
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// How often the site-address holder is decided again without a wake-up.
const SITE_ADDRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs `argv` (`ip`, `arping`); its stderr when it fails.
async fn sh(argv: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The interfaces that hold `ip` now (`ip -o addr show`: `2: eth0    inet 10.0.0.5/24 ...`).
async fn interfaces_holding(ip: &str) -> Vec<String> {
    let Ok(out) = tokio::process::Command::new("ip").args(["-o", "addr", "show"]).output().await else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let held = words.windows(2).any(|w| matches!(w[0], "inet" | "inet6") && w[1].split('/').next() == Some(ip));
            held.then(|| words.get(1).map(|i| i.trim_end_matches(':').to_string())).flatten()
        })
        .collect()
}

/// The interface the kernel routes `ip` through (`ip -o route get IP` → `dev X`).
async fn route_interface(ip: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("ip")
        .args(["-o", "route", "get", ip])
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().map(str::to_string).ok_or_else(|| format!("no interface in `{}`", text.trim()));
        }
    }
    Err(format!("no route to {ip}: give --site-address-interface"))
}

/// Holds the site's moving address while `control::edges::site_address_holder` names
/// this node: adds it to the interface and announces it with gratuitous ARP (arping),
/// and removes it as soon as another edge of the site should hold it, or at shutdown.
pub async fn run_site_address(ctx: NodeContext, address: String, interface: Option<String>, cancel: CancellationToken) {
    let ip = address.split('/').next().unwrap_or(&address).to_string();
    // A previous run may have left it (a crash): start from not holding it anywhere, before
    // asking the kernel for the route (a stale local address would answer `lo`).
    for stale in interfaces_holding(&ip).await {
        let _ = sh(&["ip", "addr", "del", &address, "dev", &stale]).await;
    }
    let interface = match interface {
        Some(i) => i,
        None => match route_interface(&ip).await {
            Ok(i) => i,
            Err(error) => {
                tracing::warn!(%address, %error, "site address: not taken part in");
                ctx.workers.report("site address", crate::workers::Pass::Progress(error));
                return;
            }
        },
    };
    if interface == "lo" {
        let error = format!("{address} routes through lo: give --site-address-interface (the LAN interface)");
        tracing::warn!(%error, "site address: not taken part in");
        ctx.workers.report("site address", crate::workers::Pass::Progress(error));
        return;
    }
    let mut holding = false;
    let mut failures = ctx.edge_failures.subscribe();
    let mut states = ctx.control.subscribe();
    loop {
        let state = states.borrow_and_update().clone();
        let seen = failures.borrow_and_update().clone();
        let site = state.nodes.get(&ctx.identity.node_id).map(|n| n.site.clone()).unwrap_or_default();
        let holder = holdfast_control::edges::site_address_holder(&state, &site, &address, &seen);
        let mine = holder == Some(ctx.identity.node_id);
        if mine && !holding {
            match sh(&["ip", "addr", "replace", &address, "dev", &interface]).await {
                Ok(()) => {
                    holding = true;
                    // Unsolicited ARP: neighbours and the router update their caches now
                    // (in the background: arping takes a second, the loop goes on).
                    let (iface, addr) = (interface.clone(), ip.clone());
                    tokio::spawn(async move {
                        if let Err(error) = sh(&["arping", "-U", "-c", "2", "-w", "1", "-I", &iface, &addr]).await {
                            tracing::warn!(%error, "site address: gratuitous ARP failed");
                        }
                    });
                    tracing::info!(%address, %interface, "site address: taken");
                }
                Err(error) => tracing::warn!(%address, %error, "site address: cannot take it"),
            }
        } else if !mine && holding {
            match sh(&["ip", "addr", "del", &address, "dev", &interface]).await {
                Ok(()) => {
                    holding = false;
                    let to = holder.map_or_else(|| "nobody live".to_string(), |h| state.node_name(h));
                    tracing::info!(%address, to = %to, "site address: released");
                }
                Err(error) => tracing::warn!(%address, %error, "site address: cannot release it"),
            }
        }
        let detail = match holder {
            Some(h) if h == ctx.identity.node_id => format!("holding {address} on {interface}"),
            Some(h) => format!("{address} held by {}", state.node_name(h)),
            None => format!("{address}: no live edge of site {site} holds it"),
        };
        ctx.workers.report("site address", crate::workers::Pass::Progress(detail));
        tokio::select! {
            () = cancel.cancelled() => break,
            r = failures.changed() => if r.is_err() { break },
            r = states.changed() => if r.is_err() { break },
            () = tokio::time::sleep(SITE_ADDRESS_EVERY) => {}
        }
    }
    if holding {
        let _ = sh(&["ip", "addr", "del", &address, "dev", &interface]).await;
        tracing::info!(%address, "site address: released at shutdown");
    }
}

/// Where a served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertSource {
    /// `tls: { cert, key }`: two secrets, as `project/name`.
    Secrets { cert: String, key: String },
    /// `tls: auto`: the issued certificate of a host (`state.acme.certs`).
    Acme { host: String },
}

impl std::fmt::Display for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertSource::Secrets { cert, key } => write!(f, "secrets {cert} and {key}"),
            CertSource::Acme { host } => write!(f, "the ACME certificate of {host}"),
        }
    }
}

/// Every certificate the routes need: their secret pairs (the project being the one of
/// the route's service) and the issued certificates of their `tls: auto` hosts.
pub fn certificate_sources(state: &ClusterState) -> BTreeSet<CertSource> {
    let mut out: BTreeSet<CertSource> = state
        .desired
        .routes
        .iter()
        .filter_map(|r| match &r.tls {
            RouteTls::Secrets { cert, key } => {
                let project = &state.desired.services.get(&r.service)?.project;
                Some(CertSource::Secrets { cert: format!("{project}/{cert}"), key: format!("{project}/{key}") })
            }
            _ => None,
        })
        .collect();
    for host in holdfast_state::acme::auto_hosts(state) {
        if state.acme.certs.contains_key(&host) {
            out.insert(CertSource::Acme { host });
        }
    }
    out
}

/// What changes when a source's content changes: secret versions, or the issue time and
/// key version of an ACME certificate.
fn source_versions(state: &ClusterState, src: &CertSource) -> (u64, u64) {
    let version = |k: &str| state.secrets.get(k).and_then(|r| r.current()).map_or(0, |c| c.version);
    match src {
        CertSource::Secrets { cert, key } => (version(cert), version(key)),
        CertSource::Acme { host } => (
            state.acme.certs.get(host).map_or(0, |c| c.issued_at_ms),
            version(&holdfast_state::secrets::key(holdfast_state::acme::ACME_PROJECT, host)),
        ),
    }
}

/// Opens and parses a source's certificate and key.
pub fn open_source(ctx: &NodeContext, state: &ClusterState, src: &CertSource) -> Result<ServedCert, String> {
    match src {
        CertSource::Secrets { cert, key } => open_certificate(ctx, state, cert, key).map(|(c, _)| c),
        CertSource::Acme { host } => {
            let issued = state.acme.certs.get(host).ok_or_else(|| format!("{host} has no issued certificate"))?;
            let key = crate::secrets::open_current(
                &ctx.keyring,
                state,
                &holdfast_state::secrets::key(holdfast_state::acme::ACME_PROJECT, host),
            )?;
            ServedCert::from_pem(issued.chain_pem.as_bytes(), &key)
                .map_err(|e| format!("the certificate of {host}: {e}"))
        }
    }
}

/// Opens the current version of `cert` and `key` and parses them.
pub fn open_certificate(
    ctx: &NodeContext,
    state: &ClusterState,
    cert: &str,
    key: &str,
) -> Result<(ServedCert, (u64, u64)), String> {
    let chain = crate::secrets::open_current(&ctx.keyring, state, cert)?;
    let private = crate::secrets::open_current(&ctx.keyring, state, key)?;
    let served =
        ServedCert::from_pem(&chain, &private).map_err(|e| format!("certificate {cert} with key {key}: {e}"))?;
    Ok((served, source_versions(state, &CertSource::Secrets { cert: cert.to_string(), key: key.to_string() })))
}

/// Checks a stack's routes against the certificates their secrets hold now: each must
/// parse, belong to its key, cover the route's host and not have expired. A secret with
/// no value yet is left to the plan (which refuses it with its own message).
pub fn check_route_certificates(
    ctx: &NodeContext,
    state: &ClusterState,
    stack: &holdfast_spec::Stack,
    now_s: i64,
) -> Result<(), String> {
    for (i, route) in stack.routes.iter().enumerate() {
        let RouteTls::Secrets { cert, key } = &route.tls else { continue };
        let (cert, key) = (format!("{}/{cert}", stack.project), format!("{}/{key}", stack.project));
        let has_value = |k: &str| state.secrets.get(k).and_then(|r| r.current()).is_some();
        if !has_value(&cert) || !has_value(&key) {
            continue;
        }
        let at = format!("routes[{i}] (host {}, path {})", route.host, route.path);
        let (served, _) = open_certificate(ctx, state, &cert, &key).map_err(|e| format!("{at}: {e}"))?;
        if !served.covers(&route.host) {
            return Err(format!(
                "{at}: the certificate in secret {cert} is for {}, not {}: set a certificate for this host with `holdfast secret set {cert} --from-file cert.pem`",
                served.names().join(", "),
                route.host
            ));
        }
        if served.not_after() <= now_s {
            return Err(format!(
                "{at}: the certificate in secret {cert} expired on {}: set a current one with `holdfast secret set {cert} --from-file cert.pem`",
                holdfast_spec::format_utc_ms(u64::try_from(served.not_after()).unwrap_or(0) * 1000)
            ));
        }
    }
    Ok(())
}

/// A route certificate as loaded: the versions last tried, and the last good
/// certificate (kept while a newer one does not parse, does not match its key or does not
/// cover its routes' hosts: setting the certificate and the key is two commands, and a
/// mistake must not take the site down).
type Loaded = ((u64, u64), Option<ServedCert>);

/// The hosts of the routes a source serves.
pub fn hosts_of(state: &ClusterState, src: &CertSource) -> Vec<String> {
    match src {
        CertSource::Acme { host } => vec![host.clone()],
        CertSource::Secrets { cert, key } => state
            .desired
            .routes
            .iter()
            .filter(|r| match &r.tls {
                RouteTls::Secrets { cert: c, key: k } => state
                    .desired
                    .services
                    .get(&r.service)
                    .is_some_and(|s| format!("{}/{c}", s.project) == *cert && format!("{}/{k}", s.project) == *key),
                _ => false,
            })
            .map(|r| r.host.clone())
            .collect(),
    }
}

/// Keeps the edge's HTTPS certificates in step with the routes, their secrets and the
/// issued ACME certificates.
pub async fn run_certificates(ctx: NodeContext, net: NetHandle, cancel: CancellationToken) {
    let mut states = ctx.control.subscribe();
    let mut loaded: BTreeMap<CertSource, Loaded> = BTreeMap::new();
    let mut failing: BTreeMap<CertSource, String> = BTreeMap::new();
    loop {
        let state = states.borrow_and_update().clone();
        let wanted = certificate_sources(&state);
        let mut changed = loaded.keys().any(|k| !wanted.contains(k));
        loaded.retain(|k, _| wanted.contains(k));
        failing.retain(|k, _| wanted.contains(k));
        for src in &wanted {
            let now = source_versions(&state, src);
            let previous = loaded.get(src).cloned();
            if previous.as_ref().is_some_and(|(v, _)| *v == now) {
                continue;
            }
            let last_good = previous.and_then(|(_, good)| good);
            let hosts = hosts_of(&state, src);
            let tried = open_source(&ctx, &state, src).and_then(|c| match hosts.iter().find(|h| !c.covers(h)) {
                Some(h) => Err(format!("the certificate from {src} is for {}, not {h}", c.names().join(", "))),
                None => Ok(c),
            });
            let good = match tried {
                Ok(c) => {
                    tracing::info!(source = %src, names = %c.names().join(" "), "edge: certificate installed");
                    failing.remove(src);
                    changed = true;
                    Some(c)
                }
                Err(error) => {
                    let kept = if last_good.is_some() { "; serving the previous certificate" } else { "" };
                    tracing::warn!(%error, "edge: cannot serve a route's certificate{kept}");
                    failing.insert(src.clone(), error);
                    last_good
                }
            };
            loaded.insert(src.clone(), (now, good));
        }
        let certs: Vec<ServedCert> = loaded.values().filter_map(|(_, c)| c.clone()).collect();
        let detail = if failing.is_empty() {
            format!("{} certificate(s) served", certs.len())
        } else {
            format!(
                "{} certificate(s) served; failing: {}",
                certs.len(),
                failing.values().cloned().collect::<Vec<_>>().join("; ")
            )
        };
        ctx.workers.report("edge certificates", crate::workers::Pass::Progress(detail));
        if changed {
            net.set_certificates(certs);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            r = states.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: RecordType, v: &str) -> RecordSpec {
        RecordSpec { name: "@".into(), rtype: t, value: v.into(), ttl: None }
    }

    #[test]
    fn record_values() {
        assert_eq!(record_data(&rec(RecordType::A, "192.0.2.1")), Some(RecordData::A("192.0.2.1".parse().unwrap())));
        assert_eq!(
            record_data(&rec(RecordType::Aaaa, "2001:db8::1")),
            Some(RecordData::Aaaa("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            record_data(&rec(RecordType::Cname, "x.example.net.")),
            Some(RecordData::Cname("x.example.net.".into()))
        );
        assert_eq!(
            record_data(&rec(RecordType::Mx, "10 mail.example.net.")),
            Some(RecordData::Mx { preference: 10, exchange: "mail.example.net.".into() })
        );
        assert_eq!(record_data(&rec(RecordType::Txt, "v=spf1 -all")), Some(RecordData::Txt("v=spf1 -all".into())));
        assert_eq!(
            record_data(&rec(RecordType::Srv, "10 5 5060 sip.example.net.")),
            Some(RecordData::Srv { priority: 10, weight: 5, port: 5060, target: "sip.example.net.".into() })
        );
        assert_eq!(
            record_data(&rec(RecordType::Caa, "0 issue \"letsencrypt.org; validationmethods=http-01\"")),
            Some(RecordData::Caa {
                flags: 0,
                tag: "issue".into(),
                value: "letsencrypt.org; validationmethods=http-01".into()
            })
        );
        assert_eq!(record_data(&rec(RecordType::A, "nope")), None);
        assert_eq!(record_data(&rec(RecordType::Mx, "10")), None);
    }
}
