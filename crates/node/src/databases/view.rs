//! The `db status` view (pure): each database's record joined with what its members'
//! nodes report, with the lag of each replica and what losing each node would cost now.
use std::collections::BTreeMap;

use holdfast_api::peer::{MemberRole, MemberStatus};
use holdfast_api::types::{DatabaseView, DbMemberView};
use holdfast_spec::SyncLoss;
use holdfast_state::model::SwitchoverPhase;
use holdfast_state::{ClusterState, DbEngine};

/// `text` in the engine's words: Redis has a master, replicas and writes where PostgreSQL
/// has a primary, standbys and commits.
fn words(engine: DbEngine, text: &str) -> String {
    match engine {
        DbEngine::Postgres => text.to_string(),
        DbEngine::Redis => text
            .replace("synchronous standbys", "replicas")
            .replace("a synchronous standby", "a replica")
            .replace("standbys", "replicas")
            .replace("standby", "replica")
            .replace("commits", "writes")
            .replace("commit", "write"),
    }
}

/// Every database (or only `only`), by name.
pub fn databases(
    state: &ClusterState,
    members: &BTreeMap<u64, Vec<MemberStatus>>,
    only: Option<&str>,
) -> Vec<DatabaseView> {
    let mut out = Vec::new();
    for (name, rec) in state.desired.databases.iter().filter(|(n, _)| only.is_none_or(|o| o == n.as_str())) {
        let node_name = |id: u64| state.node_name(id);
        let report = |i: u32| {
            rec.members
                .get(i as usize)
                .and_then(|n| members.get(n))
                .and_then(|v| v.iter().find(|m| &m.database == name && m.member == i))
        };
        let sync_set = rec.sync_names(rec.primary);
        let primary_lsn = report(rec.primary).filter(|r| r.role == MemberRole::Primary).map(|r| r.lsn);
        let mut views = Vec::new();
        let mut warnings = Vec::new();
        for (i, node) in rec.members.iter().enumerate() {
            let i = i as u32;
            let r = report(i);
            let role = r.map(|r| format!("{:?}", r.role).to_lowercase()).unwrap_or_else(|| "unknown".into());
            if let Some(r) = r.filter(|r| r.role == MemberRole::Failed) {
                warnings.push(format!("member {i} on {}: {}", node_name(*node), r.detail));
            }
            if let Some(r) = r.filter(|r| r.role == MemberRole::Primary && r.term < rec.term) {
                warnings.push(format!(
                    "member {i} on {} still runs as primary of term {} (the current term is {}); it takes no traffic and is being fenced",
                    node_name(*node),
                    r.term,
                    rec.term
                ));
            }
            views.push(DbMemberView {
                member: i,
                node: node_name(*node),
                role,
                term: r.map_or(0, |r| r.term),
                timeline: r.map_or(0, |r| r.timeline),
                lsn: r.map_or(0, |r| r.lsn),
                replay_lsn: r.map_or(0, |r| r.replay_lsn),
                lag_bytes: match (r, primary_lsn) {
                    (Some(r), Some(p)) if r.role == MemberRole::Replica => Some(p.saturating_sub(r.lsn)),
                    _ => None,
                },
                streaming: r.is_some_and(|r| r.streaming),
                answering: r.is_some_and(|r| r.answering),
                sync_candidate: rec.spec.sync > 0 && sync_set.contains(&i),
                pending_restart: r.is_some_and(|r| r.pending_restart),
                detail: r.map(|r| r.detail.clone()).unwrap_or_default(),
            });
        }
        let streaming: Vec<&DbMemberView> = views.iter().filter(|m| m.role == "replica" && m.streaming).collect();
        let mut losing = Vec::new();
        for m in &views {
            let cost = if m.member != rec.primary {
                "loses no commit (a replica)".to_string()
            } else if rec.spec.sync > 0 && (streaming.len() as u32) >= rec.spec.sync {
                "loses 0 acknowledged commits (synchronous standbys hold them); writes pause until a standby is promoted".into()
            } else if rec.spec.sync > 0 && rec.spec.on_sync_loss == SyncLoss::Block {
                "loses 0 acknowledged commits (writes already wait for a synchronous standby)".into()
            } else if views.len() == 1 {
                "loses the database until the node is back (one instance: no standby)".into()
            } else {
                let best = streaming.iter().filter_map(|s| s.lag_bytes).min();
                match best {
                    Some(0) => "loses 0 commits now (the most advanced replica is caught up; asynchronous)".into(),
                    Some(b) => format!("may lose up to {b} bytes of acknowledged writes (asynchronous replication)"),
                    None => "loses the database until a replica streams again (none streams now)".into(),
                }
            };
            losing.push(format!("{}: {}", m.node, words(rec.spec.engine, &cost)));
        }
        let want_sync = rec.spec.sync;
        if want_sync > 0 && (streaming.len() as u32) < want_sync && rec.spec.engine == DbEngine::Redis {
            warnings.push(format!(
                "{} of {want_sync} replicas stream: writes are answered with an error (durability: replicated) until one does",
                streaming.len()
            ));
        } else if want_sync > 0 && (streaming.len() as u32) < want_sync {
            warnings.push(format!(
                "{} of {want_sync} synchronous standbys stream: {}",
                streaming.len(),
                if rec.spec.on_sync_loss == SyncLoss::Block {
                    "commits wait"
                } else {
                    "commits no longer wait (on_sync_loss: async)"
                }
            ));
        }
        out.push(DatabaseView {
            name: name.clone(),
            project: rec.project.clone(),
            engine: rec.spec.engine.as_str().into(),
            instances: rec.spec.instances,
            sync: rec.spec.sync,
            on_sync_loss: format!("{:?}", rec.spec.on_sync_loss).to_lowercase(),
            term: rec.term,
            primary: rec.primary,
            primary_node: rec.primary_node().map(node_name).unwrap_or_default(),
            endpoints: rec
                .spec
                .engine
                .endpoints()
                .iter()
                .filter_map(|e| {
                    let addr = rec.addresses.get(*e)?;
                    Some((e.as_str().to_string(), format!("{addr}:{}", rec.spec.engine.port(*e))))
                })
                .collect(),
            members: views,
            switchover: rec.switchover.as_ref().map(|s| {
                let phase = match s.phase {
                    SwitchoverPhase::Requested => "requested",
                    SwitchoverPhase::Fencing => "fencing the primary",
                };
                match s.to {
                    Some(t) => format!("{phase}, to member {t}"),
                    None => phase.to_string(),
                }
            }),
            sync_leaving: rec.sync_set.as_ref().map(|s| s.leaving.clone()).unwrap_or_default(),
            losing,
            warnings,
        });
    }
    out
}
