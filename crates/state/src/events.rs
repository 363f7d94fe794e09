//! What happened in the cluster, in words, from the replicated log: every node applies
//! the same commands in the same order, so every node derives the same events from
//! them (the node keeps them in its journal, keyed by the entry's log index). Pure:
//! [`describe`] looks at the state before and after one command.
//!
//! Events are for people (`holdfast events`): node down/up, cordon/drain/removal, joins,
//! deploys and removals of services and databases, replicas moved, database failovers
//! and switchovers, synchronous-standby changes, members moved or restarted, settings,
//! secrets set or removed (never their values), API tokens created or removed.
//! Routine writes (node records refreshed, tokens, the CA) say nothing.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::model::{ClusterState, SwitchoverPhase};

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Happened {
    pub level: Level,
    /// A short stable word for scripts: `node-down`, `failover`, `switchover`, ...
    pub kind: String,
    /// What it is about: `node n2`, `database db`, `service web`.
    pub subject: String,
    pub message: String,
}

fn one(level: Level, kind: &str, subject: String, message: String) -> Happened {
    Happened { level, kind: kind.to_string(), subject, message }
}

/// Whether [`describe`] can say anything about `cmd` (the caller keeps a copy of the
/// state before applying only for these).
pub fn may_describe(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::SetCa(_)
            | Command::AddJoinToken { .. }
            | Command::SetNodeLabels { .. }
            | Command::PutAcmeChallenge { .. }
            | Command::RemoveAcmeChallenge { .. }
    )
}

/// The events of one applied command: `before` and `after` are the state around it
/// (equal when it was refused, which says nothing).
pub fn describe(before: &ClusterState, cmd: &Command, after: &ClusterState) -> Vec<Happened> {
    if before.revision == after.revision {
        return Vec::new();
    }
    let mut out = Vec::new();
    match cmd {
        Command::UpsertNode(n) if !before.nodes.contains_key(&n.id) => out.push(one(
            Level::Info,
            "node-joined",
            format!("node {}", n.name),
            format!("node {} joined (site {}, {}, {})", n.name, n.site, n.arch, n.capacity),
        )),
        Command::SetNodeFlags { id, .. } => {
            let (Some(a), Some(b)) = (before.nodes.get(id), after.nodes.get(id)) else { return out };
            let subject = format!("node {}", b.name);
            if !a.down && b.down {
                out.push(one(Level::Warn, "node-down", subject.clone(), format!("node {} is down", b.name)));
            }
            if a.down && !b.down {
                out.push(one(Level::Info, "node-up", subject.clone(), format!("node {} is back", b.name)));
            }
            if !a.draining && b.draining {
                out.push(one(
                    Level::Info,
                    "node-draining",
                    subject.clone(),
                    format!("node {} is draining: its replicas and database members move away", b.name),
                ));
            } else if !a.cordoned && b.cordoned {
                out.push(one(
                    Level::Info,
                    "node-cordoned",
                    subject.clone(),
                    format!("node {} is cordoned: nothing new is placed there", b.name),
                ));
            }
            if (a.cordoned || a.draining) && !b.cordoned && !b.draining {
                out.push(one(Level::Info, "node-uncordoned", subject, format!("node {} takes replicas again", b.name)));
            }
        }
        Command::SetRemoving { id, removing } => {
            if let Some(n) = after.nodes.get(id) {
                let message = if *removing {
                    format!("node {} is being removed: drained, then removed", n.name)
                } else {
                    format!("the removal of node {} was cancelled", n.name)
                };
                out.push(one(Level::Info, "node-removing", format!("node {}", n.name), message));
            }
        }
        Command::RemoveNode { id, .. } => {
            if let Some(n) = before.nodes.get(id) {
                out.push(one(
                    Level::Info,
                    "node-removed",
                    format!("node {}", n.name),
                    format!("node {} was removed and its certificate revoked", n.name),
                ));
            }
        }
        Command::SetSettings(s) => out.push(one(
            Level::Info,
            "settings",
            "cluster".into(),
            format!(
                "cluster settings changed: heartbeat {} ms, suspect after {} ms, down after {} ms",
                s.heartbeat_ms, s.suspect_after_ms, s.down_after_ms
            ),
        )),
        Command::SetDesired { .. } => desired(before, after, &mut out),
        Command::PutAcmeCert { host, cert, .. } => out.push(one(
            Level::Info,
            "certificate-issued",
            format!("certificate {host}"),
            format!(
                "certificate for {host} issued by {}, valid until {}",
                cert.directory,
                holdfast_spec::format_utc_ms(cert.not_after_ms)
            ),
        )),
        Command::AcmeOrderFailed { host, error, at_ms } => {
            let next = after.acme.orders.get(host).map_or(*at_ms, |o| o.next_attempt_ms);
            out.push(one(
                Level::Warn,
                "certificate-order-failed",
                format!("certificate {host}"),
                format!(
                    "ordering a certificate for {host} failed: {error}; next attempt at {}",
                    holdfast_spec::format_utc_ms(next)
                ),
            ))
        }
        Command::RenewAcmeCert { host } => out.push(one(
            Level::Info,
            "certificate-renew",
            format!("certificate {host}"),
            format!("a new certificate for {host} was asked for"),
        )),
        Command::SetAcmeConfig { config } => out.push(one(
            Level::Info,
            "settings",
            "cluster".into(),
            format!("certificates are now ordered from {}", config.directory),
        )),
        Command::SetDatabasePrimary { database, term, primary, .. } => {
            let (Some(a), Some(b)) = (before.desired.databases.get(database), after.desired.databases.get(database))
            else {
                return out;
            };
            let on = |m: u32| b.members.get(m as usize).map_or("?".to_string(), |n| after.node_name(*n));
            let old = format!("member {} on {}", a.primary, on(a.primary));
            let subject = format!("database {database}");
            if a.switchover.is_some() {
                out.push(one(
                    Level::Info,
                    "switchover",
                    subject,
                    format!(
                        "{database}: member {primary} on {} is the primary (term {term}), switched over from {old}",
                        on(*primary)
                    ),
                ));
            } else {
                let why = match a.primary_node().and_then(|n| after.nodes.get(&n)) {
                    Some(n) if n.down => format!("its node {} is down", n.name),
                    Some(_) => "it stopped answering or its node went silent".to_string(),
                    None => "its node is gone".to_string(),
                };
                out.push(one(
                    Level::Warn,
                    "failover",
                    subject,
                    format!("{database}: failover: member {primary} on {} promoted (term {term}); the primary was {old}: {why}", on(*primary)),
                ));
            }
        }
        Command::SetDatabaseSwitchover { database, switchover, .. } => {
            let (Some(a), Some(b)) = (before.desired.databases.get(database), after.desired.databases.get(database))
            else {
                return out;
            };
            let subject = format!("database {database}");
            match (&a.switchover, switchover) {
                (None, Some(sw)) if sw.phase == SwitchoverPhase::Requested => {
                    let to = sw.to.map_or("the most advanced standby".to_string(), |m| {
                        format!(
                            "member {m} on {}",
                            b.members.get(m as usize).map_or("?".into(), |n| after.node_name(*n))
                        )
                    });
                    out.push(one(
                        Level::Info,
                        "switchover-requested",
                        subject,
                        format!("{database}: switchover to {to} requested"),
                    ));
                }
                (Some(_), None) if a.term == b.term => out.push(one(
                    Level::Warn,
                    "switchover-aborted",
                    subject,
                    format!("{database}: switchover aborted or refused; the primary takes writes again"),
                )),
                _ => {}
            }
        }
        Command::SetDatabaseSyncSet { database, .. } => {
            if let Some(b) = after.desired.databases.get(database) {
                let names: Vec<String> = b
                    .sync_names(b.primary)
                    .iter()
                    .map(|m| {
                        format!(
                            "member {m} on {}",
                            b.members.get(*m as usize).map_or("?".into(), |n| after.node_name(*n))
                        )
                    })
                    .collect();
                out.push(one(
                    Level::Info,
                    "sync-standbys",
                    format!("database {database}"),
                    format!("{database}: a commit waits for ANY {} of: {}", b.spec.sync, names.join(", ")),
                ));
            }
        }
        Command::MoveDatabaseMember { database, member, from, to, .. } => out.push(one(
            Level::Info,
            "member-moved",
            format!("database {database}"),
            format!(
                "{database}: member {member} moves from {} to {} (drain)",
                before.node_name(*from),
                after.node_name(*to)
            ),
        )),
        Command::SetDatabaseRestart { database, member: Some(m), .. } => {
            if let Some(b) = after.desired.databases.get(database) {
                let on = b.members.get(*m as usize).map_or("?".into(), |n| after.node_name(*n));
                out.push(one(
                    Level::Info,
                    "member-restart",
                    format!("database {database}"),
                    format!("{database}: member {m} on {on} restarts for settings that need a restart"),
                ));
            }
        }
        Command::PutSecret { project, name, version } => {
            let users = crate::secrets::consumers(after, project, name);
            let roll = if users.is_empty() {
                "no service reads it yet".to_string()
            } else {
                format!("rolling {} one instance at a time", users.join(", "))
            };
            out.push(one(
                Level::Info,
                "secret-set",
                format!("secret {project}/{name}"),
                format!("secret {project}/{name} version {} set by {}: {roll}", version.version, version.set_by),
            ));
        }
        Command::AdvanceRollout { service, generation, rolled } => {
            let total = after.desired.placements.get(service).map_or(0, Vec::len);
            let message = match rolled {
                Some(n) => format!("rolling {service}: {n} of {total} replicas on generation {generation}"),
                None => format!("rolled {service}: every replica on generation {generation}"),
            };
            out.push(one(Level::Info, "rollout", format!("service {service}"), message));
        }
        Command::StartRun { job, run } => {
            let what = match run.slot_ms {
                Some(s) => format!("for its slot at {}", crate::jobs::format_utc_ms(s)),
                None => format!("asked by {}", run.by),
            };
            let (level, kind, message) = match run.state {
                crate::jobs::RunState::Skipped => (
                    Level::Warn,
                    "run-skipped",
                    format!("job {job}: run #{} {what} {}", run.id, run.result.as_deref().unwrap_or("skipped")),
                ),
                // A scheduled run that goes as planned is in `holdfast jobs`, not in the
                // history of what happened (a schedule every minute would crowd it out).
                _ if run.slot_ms.is_some() => return out,
                _ => (Level::Info, "run-started", format!("job {job}: run #{} {what}", run.id)),
            };
            out.push(one(level, kind, format!("job {job}"), message));
        }
        Command::PutRun { job, attempt, run } => {
            let on = run.node.map(|n| after.node_name(n)).unwrap_or_default();
            let result = run.result.clone().unwrap_or_default();
            let (level, kind, message) = match run.state {
                crate::jobs::RunState::Succeeded if run.slot_ms.is_none() || run.attempt > 1 => {
                    (Level::Info, "run-succeeded", format!("job {job}: run #{} succeeded on {on}", run.id))
                }
                crate::jobs::RunState::Failed | crate::jobs::RunState::TimedOut => (
                    Level::Warn,
                    "run-failed",
                    format!("job {job}: run #{} failed after {} attempt(s): {result}", run.id, run.attempt),
                ),
                crate::jobs::RunState::Cancelled => {
                    (Level::Info, "run-cancelled", format!("job {job}: run #{} {result}", run.id))
                }
                crate::jobs::RunState::Pending if run.attempt > *attempt => (
                    Level::Warn,
                    "run-retry",
                    format!(
                        "job {job}: run #{} attempt {attempt} failed ({result}); attempt {} follows",
                        run.id, run.attempt
                    ),
                ),
                _ => return out,
            };
            out.push(one(level, kind, format!("job {job}"), message));
        }
        Command::RekeySecrets { to, resealed, .. } => out.push(one(
            Level::Info,
            "secrets-key-rotated",
            "secrets key".to_string(),
            format!(
                "secrets key rotated to {to}: {} versions resealed; every node fetches the new key",
                resealed.len()
            ),
        )),
        Command::RemoveSecret { project, name } => out.push(one(
            Level::Info,
            "secret-removed",
            format!("secret {project}/{name}"),
            format!("secret {project}/{name} removed with its history"),
        )),
        Command::AddApiToken { id, token } => out.push(one(
            Level::Info,
            "token-created",
            format!("token {id}"),
            format!("API token {id} ({}) created with scope {}", token.name, token.scope),
        )),
        Command::RemoveApiToken { id } => {
            out.push(one(Level::Info, "token-removed", format!("token {id}"), format!("API token {id} removed")))
        }
        _ => {}
    }
    out
}

/// `<label i> <old node> -> <new node>` for every slot `i` whose node changed.
fn changed_nodes(
    after: &ClusterState,
    old: &[holdfast_placement::NodeId],
    new: &[holdfast_placement::NodeId],
    label: impl Fn(usize) -> String,
) -> Vec<String> {
    old.iter()
        .zip(new)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| format!("{} {} -> {}", label(i), after.node_name(*x), after.node_name(*y)))
        .collect()
}

/// Services and databases deployed, changed or removed; replicas and members moved.
fn desired(before: &ClusterState, after: &ClusterState, out: &mut Vec<Happened>) {
    let (a, b) = (&before.desired, &after.desired);
    for (name, svc) in &b.services {
        let subject = format!("service {name}");
        match a.services.get(name) {
            None => out.push(one(
                Level::Info,
                "deployed",
                subject,
                format!("service {name} deployed: {} replica(s), generation {}", svc.spec.replicas, svc.generation),
            )),
            Some(old) if old.generation != svc.generation => out.push(one(
                Level::Info,
                "deployed",
                subject,
                format!("service {name} updated: generation {} -> {}", old.generation, svc.generation),
            )),
            Some(old) if old.spec.replicas != svc.spec.replicas => out.push(one(
                Level::Info,
                "scaled",
                subject,
                format!("service {name} scaled: {} -> {} replica(s)", old.spec.replicas, svc.spec.replicas),
            )),
            Some(_) => {}
        }
    }
    for name in a.services.keys().filter(|n| !b.services.contains_key(*n)) {
        out.push(one(Level::Info, "removed", format!("service {name}"), format!("service {name} removed")));
    }
    for (name, zone) in &b.zones {
        let what = format!("{} static record(s), ttl {}s", zone.spec.records.len(), zone.spec.ttl);
        match a.zones.get(name) {
            None => {
                out.push(one(Level::Info, "deployed", format!("zone {name}"), format!("zone {name} deployed: {what}")))
            }
            Some(old) if old != zone => {
                out.push(one(Level::Info, "deployed", format!("zone {name}"), format!("zone {name} updated: {what}")))
            }
            Some(_) => {}
        }
    }
    for name in a.zones.keys().filter(|n| !b.zones.contains_key(*n)) {
        out.push(one(Level::Info, "removed", format!("zone {name}"), format!("zone {name} removed")));
    }
    // Replicas that changed node without a deploy of their service (a node down, a
    // drain step, a relabel).
    for (name, placed) in &b.placements {
        let (Some(old), Some(svc_a), Some(svc_b)) =
            (a.placements.get(name), a.services.get(name), b.services.get(name))
        else {
            continue;
        };
        if svc_a.generation != svc_b.generation {
            continue;
        }
        let moved = changed_nodes(after, old, placed, |i| format!("{name}-{i}"));
        if !moved.is_empty() {
            out.push(one(
                Level::Info,
                "replicas-moved",
                format!("service {name}"),
                format!("replicas moved: {}", moved.join(", ")),
            ));
        }
    }
    for (name, moves) in &b.moves {
        for (replica, to) in moves {
            if a.moves.get(name).and_then(|m| m.get(replica)) != Some(to) {
                out.push(one(
                    Level::Info,
                    "drain-move",
                    format!("service {name}"),
                    format!("{name}-{replica}: a new instance starts on {} (drain)", after.node_name(*to)),
                ));
            }
        }
    }
    let names: BTreeSet<&String> = a.databases.keys().chain(b.databases.keys()).collect();
    for name in names {
        let subject = format!("database {name}");
        match (a.databases.get(name), b.databases.get(name)) {
            (None, Some(db)) => {
                let nodes: Vec<String> = db.members.iter().map(|n| after.node_name(*n)).collect();
                out.push(one(
                    Level::Info,
                    "deployed",
                    subject,
                    format!("database {name} deployed: {} member(s) on {}", db.members.len(), nodes.join(", ")),
                ));
            }
            (Some(_), None) => out.push(one(Level::Info, "removed", subject, format!("database {name} removed"))),
            (Some(x), Some(y)) => {
                if x.generation != y.generation || x.spec.instances != y.spec.instances {
                    out.push(one(
                        Level::Info,
                        "deployed",
                        subject.clone(),
                        format!(
                            "database {name} updated: generation {} -> {}, {} member(s)",
                            x.generation,
                            y.generation,
                            y.members.len()
                        ),
                    ));
                }
                let moved = changed_nodes(after, &x.members, &y.members, |i| format!("member {i}"));
                if !moved.is_empty() {
                    out.push(one(
                        Level::Info,
                        "member-moved",
                        subject,
                        format!("{name}: {} (re-placed)", moved.join(", ")),
                    ));
                }
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests;
