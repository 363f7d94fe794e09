//! Secrets in the replicated state: each secret's versions, sealed (only ciphertext is
//! ever stored; see `holdfast-secrets`), who set each one and when, and which services
//! read it.
//!
//! A new version bumps the generation of every service that reads the secret, in the
//! same applied entry, and the leader rolls them one replica at a time across the
//! cluster. A version stays readable while it is current or while a replica a roll has
//! not reached yet still reads it (an instance restarting mid-roll opens the version it
//! was started with); once no replica can need it, it is retired: only its history line
//! stays.
use std::collections::BTreeMap;

use holdfast_secrets::Sealed;
use serde::{Deserialize, Serialize};

use crate::model::ClusterState;

/// History lines kept per secret.
pub const HISTORY: usize = 20;
/// The most secrets a cluster holds (the Raft log is not a file store).
pub const MAX_SECRETS: usize = 1_000;

/// One secret (`project/name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Oldest first; the last is the current version.
    pub versions: Vec<SecretVersion>,
}

/// One version of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    /// 1, 2, 3, ... per secret.
    pub version: u64,
    /// The sealed value; `None` once retired.
    pub sealed: Option<Sealed>,
    /// Size of the value in bytes.
    pub size: u32,
    /// When it was set (the proposer's clock, ms since the epoch).
    pub set_at_ms: u64,
    /// Who set it: `admin`, `token <id> (<name>)`, `job <project>/<job>`.
    pub set_by: String,
}

impl SecretRecord {
    /// The current version.
    pub fn current(&self) -> Option<&SecretVersion> {
        self.versions.last()
    }

    /// Version `v`, if it is still readable.
    pub fn readable(&self, v: u64) -> Option<&Sealed> {
        self.versions.iter().find(|x| x.version == v).and_then(|x| x.sealed.as_ref())
    }
}

/// The state key of a project's secret.
pub fn key(project: &str, name: &str) -> String {
    format!("{project}/{name}")
}

/// The text a version's envelope is bound to (its associated data).
pub fn seal_context(project: &str, name: &str, version: u64) -> String {
    format!("{project}/{name}@{version}")
}

/// Splits `project/name`; both parts must be DNS labels.
pub fn parse_key(text: &str) -> Result<(&str, &str), String> {
    let problem = || {
        format!(
            "`{}` is not a secret name: write <project>/<secret>, e.g. `shop/oauth-key` (lowercase letters, digits and `-`)",
            text.escape_debug()
        )
    };
    let (p, n) = text.split_once('/').ok_or_else(problem)?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if label(p) && label(n) {
        Ok((p, n))
    } else {
        Err(problem())
    }
}

/// The services (name → project) that read secret `name` of `project`.
pub fn consumers<'a>(state: &'a ClusterState, project: &str, name: &str) -> Vec<&'a str> {
    state
        .desired
        .services
        .iter()
        .filter(|(_, r)| r.project == project && r.spec.secrets_used().contains(name))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// The secrets a route's certificate comes from (`tls: { cert, key }`).
pub fn route_secrets(route: &holdfast_spec::RouteSpec) -> std::collections::BTreeSet<&str> {
    match &route.tls {
        holdfast_spec::RouteTls::Secrets { cert, key } => [cert.as_str(), key.as_str()].into(),
        _ => Default::default(),
    }
}

/// The routes (`host` + `path`) of `project` whose certificate comes from secret `name`.
pub fn route_consumers(state: &ClusterState, project: &str, name: &str) -> Vec<String> {
    state
        .desired
        .routes
        .iter()
        .filter(|r| state.desired.services.get(&r.service).is_some_and(|s| s.project == project))
        .filter(|r| route_secrets(r).contains(name))
        .map(|r| format!("{}{}", r.host, r.path))
        .collect()
}

/// The services, jobs and routes of a stack that read a secret with no value yet: (`service
/// web` / `job refresh`, secret).
pub fn missing_values<'a>(state: &ClusterState, stack: &'a holdfast_spec::Stack) -> Vec<(String, &'a str)> {
    let mut out = Vec::new();
    let readers = stack
        .services
        .iter()
        .map(|(n, s)| (format!("service `{n}`"), s.secrets_used()))
        .chain(stack.jobs.iter().map(|(n, j)| (format!("job `{n}`"), j.secrets_used())))
        .chain(
            stack.routes.iter().map(|r| (format!("the certificate of route `{}{}`", r.host, r.path), route_secrets(r))),
        );
    for (reader, used) in readers {
        for s in used {
            if state.secrets.get(&key(&stack.project, s)).and_then(SecretRecord::current).is_none() {
                out.push((reader.clone(), s));
            }
        }
    }
    out
}

/// Applies `PutSecret`: appends `version` (which must be the next one), retires versions
/// older than the previous one, trims the history and bumps every consumer's generation.
pub(crate) fn put(
    state: &mut ClusterState,
    project: &str,
    name: &str,
    new: &SecretVersion,
) -> Result<Vec<String>, String> {
    let k = key(project, name);
    if let (Some(held), Some(sealed)) = (&state.secrets_key_id, &new.sealed) {
        if &sealed.key_id != held {
            return Err(format!(
                "the value was sealed under key {} but this cluster's secrets key is {held}: the node that took it holds another key",
                sealed.key_id
            ));
        }
    }
    if !state.secrets.contains_key(&k) && state.secrets.len() >= MAX_SECRETS {
        return Err(format!("the cluster already holds {MAX_SECRETS} secrets; remove some first"));
    }
    let next = state.secrets.get(&k).and_then(SecretRecord::current).map_or(1, |c| c.version + 1);
    if new.version != next {
        return Err(format!(
            "secret {k} changed meanwhile (version {} is next, this write was for {}); try again",
            next, new.version
        ));
    }
    if let Some(sealed) = &new.sealed {
        state.secrets_key_id.get_or_insert_with(|| sealed.key_id.clone());
    }
    let rec = state.secrets.entry(k).or_insert_with(|| SecretRecord { versions: Vec::new() });
    rec.versions.push(new.clone());
    let n = rec.versions.len();
    if n > HISTORY {
        rec.versions.drain(..n - HISTORY);
    }
    let generation = state.revision + 1;
    let previous =
        state.secrets.get(&key(project, name)).and_then(|r| r.versions.iter().rev().nth(1)).map(|v| v.version);
    let consumers: Vec<String> = consumers(state, project, name).into_iter().map(str::to_string).collect();
    for svc in &consumers {
        let placed = state.desired.placements.get(svc).is_some_and(|p| !p.is_empty());
        if let Some(r) = state.desired.services.get_mut(svc) {
            r.begin_rollout(placed, generation, previous.map(|v| (key(project, name), v)));
        }
    }
    retire_unused(state, project);
    Ok(consumers)
}

/// Retires every version of `project`'s secrets that is not current and that no replica
/// a roll has not reached yet reads (its ciphertext is dropped; the history line stays).
pub(crate) fn retire_unused(state: &mut ClusterState, project: &str) {
    let in_use: std::collections::BTreeSet<(String, u64)> = state
        .desired
        .services
        .values()
        .filter(|r| r.project == project)
        .filter_map(|r| r.rollout.as_ref())
        .flat_map(|o| o.secrets.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    let prefix = format!("{project}/");
    for (k, rec) in state.secrets.iter_mut().filter(|(k, _)| k.starts_with(&prefix)) {
        let current = rec.current().map(|c| c.version);
        for v in rec.versions.iter_mut() {
            if Some(v.version) != current && !in_use.contains(&(k.clone(), v.version)) {
                v.sealed = None;
            }
        }
    }
}

/// Applies `RekeySecrets`: every readable version gets its envelope under the new key.
pub(crate) fn rekey(
    state: &mut ClusterState,
    from: Option<&str>,
    to: &str,
    resealed: &[(String, u64, Sealed)],
) -> Result<(), String> {
    if state.secrets_key_id.as_deref() != from {
        return Err(format!(
            "the cluster's secrets key is {}, not {} (another rotation happened)",
            state.secrets_key_id.as_deref().unwrap_or("not set"),
            from.unwrap_or("not set")
        ));
    }
    let readable: std::collections::BTreeSet<(&str, u64)> = state
        .secrets
        .iter()
        .flat_map(|(k, r)| r.versions.iter().filter(|v| v.sealed.is_some()).map(move |v| (k.as_str(), v.version)))
        .collect();
    let given: std::collections::BTreeSet<(&str, u64)> = resealed.iter().map(|(k, v, _)| (k.as_str(), *v)).collect();
    if readable != given || resealed.iter().any(|(_, _, s)| s.key_id != to) {
        return Err("the secrets changed while they were being resealed; try again".into());
    }
    for (k, v, sealed) in resealed {
        if let Some(ver) = state.secrets.get_mut(k).and_then(|r| r.versions.iter_mut().find(|x| x.version == *v)) {
            ver.sealed = Some(sealed.clone());
        }
    }
    state.secrets_key_id = Some(to.to_string());
    Ok(())
}

/// Applies `RemoveSecret`: refused while a service reads it.
pub(crate) fn remove(state: &mut ClusterState, project: &str, name: &str) -> Result<(), String> {
    let k = key(project, name);
    if !state.secrets.contains_key(&k) {
        return Err(format!("there is no secret {k}"));
    }
    let users: Vec<String> = consumers(state, project, name)
        .iter()
        .map(|s| format!("service {s}"))
        .chain(route_consumers(state, project, name).iter().map(|r| format!("route {r} (its certificate)")))
        .collect();
    if !users.is_empty() {
        return Err(format!("secret {k} is read by {}: deploy them without it first", users.join(", ")));
    }
    state.secrets.remove(&k);
    Ok(())
}

/// The listing `holdfast secret ls` shows (never a value).
pub fn listing(state: &ClusterState) -> BTreeMap<String, (u64, u64, String, Vec<String>)> {
    state
        .secrets
        .iter()
        .filter(|(k, _)| !k.starts_with(crate::acme::ACME_PROJECT))
        .filter_map(|(k, r)| {
            let c = r.current()?;
            let (p, n) = k.split_once('/')?;
            let users = consumers(state, p, n).into_iter().map(str::to_string).collect();
            Some((k.clone(), (c.version, c.set_at_ms, c.set_by.clone(), users)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request, Response};
    use crate::model::ServiceRecord;
    use holdfast_spec::{EnvValue, FileSource, RunCommand, ServiceSpec};

    fn sealed(tag: &str) -> Sealed {
        Sealed { key_id: "k1".into(), wrapped_key: format!("w{tag}"), ciphertext: format!("c{tag}") }
    }

    fn version(v: u64) -> SecretVersion {
        SecretVersion {
            version: v,
            sealed: Some(sealed(&v.to_string())),
            size: 5,
            set_at_ms: 1000 * v,
            set_by: "admin".into(),
        }
    }

    fn put_cmd(project: &str, name: &str, v: u64) -> Request {
        Request::new(Command::PutSecret { project: project.into(), name: name.into(), version: version(v) })
    }

    fn state() -> ClusterState {
        let mut st = ClusterState::default();
        let mut web = ServiceSpec::new(RunCommand::Argv(vec!["srv".into()]));
        web.env.insert("KEY".into(), EnvValue::Secret { secret: "oauth".into() });
        let mut worker = ServiceSpec::new(RunCommand::Argv(vec!["w".into()]));
        worker.files.insert("/run/secrets/k".into(), FileSource { secret: "oauth".into() });
        let other = ServiceSpec::new(RunCommand::Argv(vec!["o".into()]));
        for (name, project, spec) in [("web", "shop", web), ("worker", "shop", worker), ("other", "shop", other)] {
            st.desired
                .services
                .insert(name.into(), ServiceRecord::new(project.into(), spec, std::net::Ipv4Addr::LOCALHOST, 1));
        }
        // Another project's service with a same-named secret is not a consumer.
        let mut blog = ServiceSpec::new(RunCommand::Argv(vec!["b".into()]));
        blog.env.insert("KEY".into(), EnvValue::Secret { secret: "oauth".into() });
        st.desired
            .services
            .insert("blog".into(), ServiceRecord::new("blog".into(), blog, std::net::Ipv4Addr::LOCALHOST, 1));
        st
    }

    #[test]
    fn a_new_version_rolls_exactly_its_consumers() {
        let mut st = state();
        assert_eq!(st.apply(&put_cmd("shop", "oauth", 1)), Response::Applied { revision: 1 });
        let gens = |st: &ClusterState| {
            st.desired.services.iter().map(|(n, r)| format!("{n}@{}", r.generation)).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(gens(&st), "blog@1 other@1 web@1 worker@1");
        assert_eq!(st.apply(&put_cmd("shop", "oauth", 2)), Response::Applied { revision: 2 });
        assert_eq!(gens(&st), "blog@1 other@1 web@2 worker@2");
        let events = crate::events::describe(&state(), &put_cmd("shop", "oauth", 2).command, &st);
        assert_eq!(
            events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["secret shop/oauth version 2 set by admin: rolling web, worker one instance at a time"]
        );
    }

    #[test]
    fn versions_are_compare_and_set_and_old_ones_retire() {
        let mut st = state();
        for v in 1..=3 {
            assert!(matches!(st.apply(&put_cmd("shop", "oauth", v)), Response::Applied { .. }));
        }
        // A write planned on version 2 (another writer got there first) changes nothing.
        let before = st.clone();
        assert_eq!(
            st.apply(&put_cmd("shop", "oauth", 3)),
            Response::Refused {
                reason: "secret shop/oauth changed meanwhile (version 4 is next, this write was for 3); try again"
                    .into()
            }
        );
        assert_eq!(st, before);
        // No replica runs (nothing is placed): only the current version stays readable;
        // older ones keep their history line.
        let rec = &st.secrets["shop/oauth"];
        assert_eq!(rec.readable(3), Some(&sealed("3")));
        assert_eq!((rec.readable(2), rec.readable(1)), (None, None));
        assert_eq!(rec.versions.len(), 3);
        for v in 4..=(HISTORY as u64 + 5) {
            st.apply(&put_cmd("shop", "oauth", v));
        }
        let rec = &st.secrets["shop/oauth"];
        assert_eq!(rec.versions.len(), HISTORY);
        assert_eq!(rec.versions[0].version, 6);
        assert_eq!(rec.versions.iter().filter(|v| v.sealed.is_some()).count(), 1);
    }

    #[test]
    fn the_previous_version_stays_readable_until_the_roll_ends() {
        let mut st = state();
        st.desired.placements.insert("web".into(), vec![1, 2]);
        st.apply(&put_cmd("shop", "oauth", 1));
        st.apply(&put_cmd("shop", "oauth", 2));
        let web = &st.desired.services["web"];
        let roll = web.rollout.clone().expect("web rolls");
        assert_eq!((roll.rolled, roll.secrets.get("shop/oauth")), (1, Some(&1)));
        // web-1 still reads version 1: it stays readable during the roll.
        assert_eq!(st.secrets["shop/oauth"].readable(1), Some(&sealed("1")));
        let g = web.generation;
        let adv = |rolled| Request::new(Command::AdvanceRollout { service: "web".into(), generation: g, rolled });
        assert!(matches!(st.apply(&adv(Some(2))), Response::Applied { .. }));
        assert_eq!(st.secrets["shop/oauth"].readable(1), Some(&sealed("1")));
        assert!(matches!(st.apply(&adv(None)), Response::Applied { .. }));
        assert_eq!(st.secrets["shop/oauth"].readable(1), None, "retired once no replica reads it");
        assert_eq!(st.secrets["shop/oauth"].readable(2), Some(&sealed("2")));
    }

    #[test]
    fn rekey_must_cover_exactly_the_readable_versions() {
        let mut st = state();
        for v in 1..=3 {
            st.apply(&put_cmd("shop", "oauth", v));
        }
        let resealed = |vs: &[u64]| {
            vs.iter()
                .map(|v| ("shop/oauth".to_string(), *v, Sealed { key_id: "k2".into(), ..sealed("x") }))
                .collect::<Vec<_>>()
        };
        let rekey = |from: &str, vs: &[u64]| {
            Request::new(Command::RekeySecrets { from: Some(from.into()), to: "k2".into(), resealed: resealed(vs) })
        };
        let before = st.clone();
        for (req, why) in [
            (rekey("k0", &[3]), "the cluster's secrets key is k1, not k0 (another rotation happened)"),
            (rekey("k1", &[]), "the secrets changed while they were being resealed; try again"),
            (rekey("k1", &[2, 3]), "the secrets changed while they were being resealed; try again"),
        ] {
            assert_eq!(st.apply(&req), Response::Refused { reason: why.into() });
            assert_eq!(st, before);
        }
        assert!(matches!(st.apply(&rekey("k1", &[3])), Response::Applied { .. }));
        assert_eq!(st.secrets_key_id.as_deref(), Some("k2"));
        assert!(st.secrets["shop/oauth"].versions.iter().filter_map(|v| v.sealed.as_ref()).all(|s| s.key_id == "k2"));
        // A value sealed under the old key is refused from now on.
        let r = st.apply(&put_cmd("shop", "oauth", 4));
        assert_eq!(
            r,
            Response::Refused {
                reason: "the value was sealed under key k1 but this cluster's secrets key is k2: the node that took it holds another key".into()
            }
        );
    }

    #[test]
    fn removal_is_refused_while_read() {
        let mut st = state();
        st.apply(&put_cmd("shop", "oauth", 1));
        st.apply(&put_cmd("shop", "unused", 1));
        let before = st.clone();
        let r = st.apply(&Request::new(Command::RemoveSecret { project: "shop".into(), name: "oauth".into() }));
        assert_eq!(
            r,
            Response::Refused {
                reason: "secret shop/oauth is read by service web, service worker: deploy them without it first".into()
            }
        );
        assert_eq!(st, before);
        let r = st.apply(&Request::new(Command::RemoveSecret { project: "shop".into(), name: "unused".into() }));
        assert!(matches!(r, Response::Applied { .. }));
        assert!(!st.secrets.contains_key("shop/unused"));
    }

    #[test]
    fn a_deploy_needs_every_secret_it_reads_set() {
        let st = ClusterState::default();
        let stack = holdfast_spec::parse_str(
            "s.yaml",
            "project: shop\nsecrets: { oauth: {} }\nservices:\n  web: { run: [srv], env: { K: { secret: oauth } } }\n",
        )
        .unwrap();
        let e = crate::plan::plan_deploy(&st, &stack).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service `web` reads secret shop/oauth, which has no value yet: set it first with `holdfast secret set shop/oauth` (from stdin or --from-file)"
        );
    }

    #[test]
    fn keys_parse() {
        assert_eq!(parse_key("shop/oauth-key"), Ok(("shop", "oauth-key")));
        for bad in ["shop", "Shop/x", "shop/", "/x", "shop/x/y", "shop/x-"] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }
}
