//! Redis members (the runner's Redis half): every pass looks at the member (its marker,
//! the agent's instance, `INFO` over the admin connection), asks the pure
//! [`holdfast_redis::member::next`] what to do, and does it: write `redis.conf`, start
//! `redis-server` as an agent instance (run as the member's OS user), promote
//! (`REPLICAOF NO ONE`), re-point (`REPLICAOF <db>-repl`), open, hold or fence writes.
//!
//! Replicas replicate from the database's replication address (`<db>-repl`, port 6380 at
//! the master's address), which every node's proxy leads to the master of the current
//! term, so a failover re-points nobody by hand: a replica whose connection broke
//! reconnects there and continues from the new master (Redis's PSYNC keeps the old
//! history as `replid2`). A replica still attached to a former master (a frozen node's
//! connection that never broke) is told by its replication id and re-pointed.
use std::time::{Duration, Instant};

use holdfast_agent::InstanceSpec;
use holdfast_api::peer::{MemberRole, MemberStatus};
use holdfast_redis::admin::{Admin, Probe};
use holdfast_redis::conf::{self, Disk, MemberConf, Passwords, Writes};
use holdfast_redis::datadir::{Marker, MemberDir};
use holdfast_redis::install::{self, Binaries};
use holdfast_redis::member::{self, Answer, Have, Step, Want};
use holdfast_spec::Persistence;
use holdfast_state::events::Level;
use holdfast_state::model::{DatabaseRecord, SwitchoverPhase};
use holdfast_state::DbEngine;

use super::{instance_id, status, Key};
use crate::lease::Standing;
use crate::NodeContext;

/// How long a replica may follow another replication history than the current
/// master's (still attached to a former master) before it is re-pointed.
const FOLLOWING_OTHER_FOR: Duration = Duration::from_secs(3);
/// How long after a re-point a replica whose link is still down is re-pointed again (its
/// node's proxy may not have routed the replication endpoint to the new master yet).
const REPOINT_AGAIN_AFTER: Duration = Duration::from_millis(250);
/// For how long after it was found detached a replica is looked at every 50 ms (then at
/// the usual pace: a master it cannot reach is not worth a busy loop).
const REATTACH_FAST_FOR: Duration = Duration::from_secs(3);

/// What a member task remembers between passes.
#[derive(Default)]
pub(super) struct Local {
    /// The admin connection of the last pass, and the port it reached.
    admin: Option<(u16, Admin)>,
    /// Writes are paused (`CLIENT PAUSE WRITE`) by this runner.
    held: bool,
    /// Since when this replica follows another history than the current master's.
    other_since: Option<Instant>,
    /// The replication port this replica was last pointed at at runtime, and when.
    repointed: Option<(u16, Instant)>,
    /// Since when this replica is detached while a master of the term answers.
    detached_since: Option<Instant>,
    /// The live settings applied to the process with this run id.
    applied: Option<(String, Disk, Option<u64>)>,
    /// The step of the last pass (a change to a notable one is an event).
    last_step: Option<Step>,
    /// The redis-server found for the spec's `bin_dir` (looked up once, not every pass:
    /// it runs `redis-server --version`).
    bins: Option<(Option<std::path::PathBuf>, Binaries)>,
}

/// Everything a pass needs about the member.
struct Member<'a> {
    key: &'a Key,
    rec: &'a DatabaseRecord,
    bins: Binaries,
    user: holdfast_agent::osuser::OsUser,
    dir: MemberDir,
}

fn disk(p: Persistence) -> Disk {
    match p {
        Persistence::Aof => Disk::Aof,
        Persistence::Rdb => Disk::Rdb,
        Persistence::None => Disk::None,
    }
}

/// One look at the member; `true` beside the status when the next pass should follow at
/// once.
pub(super) async fn pass(ctx: &NodeContext, key: &Key, local: &mut Local) -> (MemberStatus, bool) {
    let state = ctx.control.state();
    let Some(rec) = state.desired.databases.get(&key.0) else {
        return (status(key, 0, MemberRole::Stopped, "no longer in the state"), false);
    };
    let failed = |detail: String| (status(key, rec.term, MemberRole::Failed, detail), false);
    // Fence first: a node that finds its lease gone (thawed after a freeze, cut off)
    // refuses writes on the connection it already has before anything else in the pass.
    let lease = Duration::from_millis(state.settings.db_lease_ms);
    let standing = ctx.lease.standing(lease, state.revision);
    let switchover_fence =
        rec.primary == key.1 && rec.switchover.as_ref().is_some_and(|s| s.phase == SwitchoverPhase::Fencing);
    if standing == Standing::Gone || switchover_fence {
        if let Some((_, a)) = &local.admin {
            let _ = a.set_writes(Writes::Fenced).await;
        }
    }
    let bins =
        match super::cached(&mut local.bins, &rec.spec.bin_dir, || install::discover(rec.spec.bin_dir.as_deref())) {
            Ok(b) => b,
            Err(e) => return failed(e.to_string()),
        };
    let user = match install::member_user() {
        Ok(u) => u,
        Err(e) => return failed(e.to_string()),
    };
    let dir = MemberDir::new(super::member_root(ctx, key));
    if let Err(e) = super::reachable_for(ctx, &dir.root, &user, "Redis") {
        return failed(e);
    }
    if let Err(e) = dir.create(&user) {
        return failed(e.to_string());
    }
    let id = instance_id(DbEngine::Redis, &key.0, key.1);
    let (_, running, port) = super::member_instance(ctx, &id, "redis");
    let conn = match (running, port, local.admin.take()) {
        (true, Some(p), Some((q, a))) if q == p => Some((q, a)),
        (true, Some(p), _) => {
            Admin::connect(p, &rec.credentials.superuser, Duration::from_secs(1)).await.ok().map(|a| (p, a))
        }
        _ => None,
    };
    let admin = conn.as_ref().map(|(_, a)| a);
    let probe = match admin {
        Some(a) => a.probe().await.ok().filter(|p| !p.loading),
        None => None,
    };
    let options = rec.spec.redis_options();
    let mut marker = dir.marker();
    // Without persistence a process other than the one that held the data is empty.
    let lost_data = options.persistence == Persistence::None
        && marker.ready
        && !marker.run_id.is_empty()
        && probe.as_ref().is_some_and(|p| p.run_id != marker.run_id);
    // A replica that completed a sync in this process holds the data.
    if let Some(p) = probe.as_ref().filter(|p| !p.master && p.link_up && !p.syncing) {
        if marker.primary_term == 0 && (!marker.ready || marker.run_id != p.run_id) {
            marker = Marker { ready: true, primary_term: 0, run_id: p.run_id.clone() };
            if let Err(e) = dir.set_marker(&marker) {
                return failed(e.to_string());
            }
        }
    }
    // A replica attached to another history than the current master's, for a while.
    let master_replid = super::current_primary(ctx, rec, &key.0).await.and_then(|m| m.replid);
    let other = probe
        .as_ref()
        .is_some_and(|p| !p.master && p.link_up && master_replid.as_ref().is_some_and(|r| *r != p.replid));
    let following_other = if other {
        local.other_since.get_or_insert_with(Instant::now).elapsed() >= FOLLOWING_OTHER_FOR
    } else {
        local.other_since = None;
        false
    };
    // Not attached while a master of the current term answers: Redis would retry only at
    // its next once-a-second cron; a re-point to the other port connects at once.
    // (A replica still on the history the master serves waits for that master: a new
    // connection would lead to the same one.)
    let detached_now = probe.as_ref().is_some_and(|p| {
        !p.master && !p.link_up && !p.syncing && master_replid.as_ref().is_some_and(|r| *r != p.replid)
    });
    if detached_now {
        local.detached_since.get_or_insert_with(Instant::now);
    } else {
        local.detached_since = None;
    }
    let reattaching = local.detached_since.is_some_and(|t| t.elapsed() < REATTACH_FAST_FOR);
    let detached = detached_now && local.repointed.is_none_or(|(_, at)| at.elapsed() >= REPOINT_AGAIN_AFTER);
    let following_other = following_other || detached;
    let want = Want {
        term: rec.term,
        primary: rec.primary == key.1,
        fenced: standing == Standing::Gone || switchover_fence,
        hold: standing == Standing::Lapsed,
        sole: rec.members.len() == 1,
    };
    let have = Have {
        ready: marker.ready,
        primary_term: marker.primary_term,
        running,
        answer: probe.as_ref().map(|p| Answer { master: p.master }),
        lost_data,
        following_other,
    };
    let step = member::next(want, have);
    if let Some((level, kind, text)) = notable(&step, local.last_step.as_ref()) {
        crate::events::record_local(
            ctx,
            level,
            kind,
            format!("database {}", key.0),
            format!("{}: member {} on {}: {text}", key.0, key.1, ctx.identity.name),
        );
    }
    local.last_step = Some(step.clone());
    let m = Member { key, rec, bins, user, dir };
    let outcome = execute(&m, &step, admin, probe.as_ref(), &mut marker, local).await;
    let keep_running = !matches!(step, Step::Wait { .. }) || running;
    let keep_running = keep_running && (outcome.is_ok() || running);
    if ctx.lease.age(state.revision).is_some() || keep_running {
        // Before the first contact with the leader a running (re-adopted) redis-server
        // is left to the agent as it is: the fencing verdict needs the lease.
        ctx.dbs.set_instance(key, keep_running.then(|| instance_spec(&m)));
    }
    let again = outcome.is_ok() && matches!(step, Step::Promote { .. } | Step::Demote | Step::Init);
    // A replica reattaching to a new master is looked at often until its link is up.
    let again = again || reattaching;
    let mut st = match &outcome {
        Err(e) => failed(format!("{}: {e}", describe(&step))).0,
        Ok(detail) => {
            let role = match (&probe, &step) {
                (_, Step::Fence { why }) if *why == member::LOST_DATA => MemberRole::Failed,
                (Some(p), Step::Master | Step::Hold) if p.master => MemberRole::Primary,
                (Some(p), Step::Fence { .. }) if p.master => MemberRole::Fenced,
                (Some(p), _) if p.master => MemberRole::Starting,
                (Some(p), _) => {
                    // A replica counts (may be promoted) once it holds the data: synced in
                    // this process, or kept on disk across a restart.
                    let holds = marker.ready
                        && (p.link_up || options.persistence != Persistence::None || p.run_id == marker.run_id);
                    if holds {
                        MemberRole::Replica
                    } else {
                        MemberRole::Starting
                    }
                }
                (None, Step::Wait { .. }) if !running => MemberRole::Stopped,
                (None, _) => MemberRole::Starting,
            };
            status(key, rec.term, role, detail.clone())
        }
    };
    if let Some(p) = &probe {
        st.lsn = p.received;
        st.replay_lsn = p.offset;
        st.answering = true;
        st.streaming = !p.master && p.link_up && !p.syncing;
        st.replid = Some(p.replid.clone());
        if p.master {
            st.term = marker.primary_term;
        }
    }
    st.port = if running { port } else { None };
    local.admin = if probe.is_some() && running { conn } else { None };
    (st, again)
}

/// A step worth an event when a member comes to it (only this node sees it).
fn notable(step: &Step, last: Option<&Step>) -> Option<(Level, &'static str, String)> {
    if last == Some(step) {
        return None;
    }
    Some(match step {
        Step::Hold => (
            Level::Warn,
            "member-holding",
            "holds every write: this node lost the control plane's quorum (its lease lapsed)".to_string(),
        ),
        Step::Fence { why } => (Level::Warn, "member-fenced", format!("refuses writes: {why}")),
        Step::Demote => (Level::Info, "member-demoted", "a former master rejoins as a replica".to_string()),
        Step::Repoint => {
            (Level::Info, "member-repointed", "was not following the current master: re-pointed at it".to_string())
        }
        Step::Master if matches!(last, Some(Step::Hold)) => {
            (Level::Info, "member-released", "the lease is back: held writes go on".to_string())
        }
        _ => return None,
    })
}

fn describe(step: &Step) -> String {
    match step {
        Step::Init => "the first master".into(),
        Step::Replica => "running as a replica".into(),
        Step::Repoint => "re-pointing at the current master".into(),
        Step::Master => "running as the master".into(),
        Step::Hold => "running as the master, holding every write: this node's lease lapsed".into(),
        Step::Fence { why } => format!("refusing writes: {why}"),
        Step::Promote { term } => format!("promoting (term {term})"),
        Step::Demote => "rejoining as a replica".into(),
        Step::Wait { why } => format!("waiting: {why}"),
    }
}

/// Writes `redis.conf` for the member as it is now (`replica`: with the replication
/// upstream; `writes`: open or fenced).
fn write_conf(m: &Member<'_>, replica: bool, writes: Writes) -> Result<bool, String> {
    let rec = m.rec;
    let options = rec.spec.redis_options();
    let name = format!("{}-m{}", m.key.0, m.key.1);
    let rw = rec.addresses.rw.to_string();
    let default = rec.credentials.users.get(holdfast_spec::REDIS_DEFAULT_USER).map(String::as_str).unwrap_or("");
    let text = conf::redis_conf(&MemberConf {
        name: &name,
        dir: &m.dir.data(),
        disk: disk(options.persistence),
        maxmemory: options.maxmemory,
        passwords: Passwords { default, admin: &rec.credentials.superuser, replication: &rec.credentials.replication },
        upstream: replica.then_some((rw.as_str(), holdfast_redis::REPL_PORT)),
        writes,
    });
    m.dir.write_conf(&text, &m.user).map_err(|e| e.to_string())
}

async fn execute(
    m: &Member<'_>,
    step: &Step,
    admin: Option<&Admin>,
    probe: Option<&Probe>,
    marker: &mut Marker,
    local: &mut Local,
) -> Result<String, String> {
    let rec = m.rec;
    let rw = rec.addresses.rw.to_string();
    let open = Writes::Open { min_replicas: rec.spec.sync };
    let err = |e: holdfast_redis::RedisError| e.to_string();
    let set_marker = |marker: &mut Marker, next: Marker| -> Result<(), String> {
        m.dir.set_marker(&next).map_err(|e| e.to_string())?;
        *marker = next;
        Ok(())
    };
    match step {
        Step::Init => {
            tracing::info!(database = %m.key.0, member = m.key.1, "the first master of a new Redis database");
            write_conf(m, false, open)?;
            set_marker(marker, Marker { ready: true, primary_term: rec.term, run_id: String::new() })?;
            Ok("initialised; starting".into())
        }
        Step::Replica => {
            write_conf(m, true, Writes::Fenced)?;
            if let (Some(a), Some(p)) = (admin, probe) {
                apply_settings(m, a, p, local).await?;
            }
            Ok(describe(step))
        }
        Step::Repoint => {
            let a = admin.ok_or("no admin connection")?;
            // The other port than the last one: the same endpoint, but a new address to
            // Redis, so it connects at once.
            let port = match local.repointed {
                Some((holdfast_redis::REPL_PORT_ALT, _)) => holdfast_redis::REPL_PORT,
                Some(_) => holdfast_redis::REPL_PORT_ALT,
                None => holdfast_redis::REPL_PORT_ALT,
            };
            tracing::info!(database = %m.key.0, member = m.key.1, port, "replica not following the current master: re-pointing it");
            a.replicate_from(&rw, port).await.map_err(err)?;
            local.other_since = None;
            local.repointed = Some((port, Instant::now()));
            Ok(describe(step))
        }
        Step::Master => {
            write_conf(m, false, open)?;
            if let (Some(a), Some(p)) = (admin, probe) {
                if !p.master {
                    // Promoted, then restarted before its file said so.
                    a.promote().await.map_err(err)?;
                }
                if p.min_replicas != open.settings().0 {
                    a.set_writes(open).await.map_err(err)?;
                }
                if local.held {
                    a.resume_writes().await.map_err(err)?;
                    local.held = false;
                    tracing::info!(database = %m.key.0, member = m.key.1, "the lease is back: held writes go on");
                }
                apply_settings(m, a, p, local).await?;
                if marker.run_id != p.run_id && !p.run_id.is_empty() {
                    set_marker(marker, Marker { run_id: p.run_id.clone(), ..marker.clone() })?;
                }
            }
            Ok(describe(step))
        }
        Step::Hold => {
            // A restart meanwhile comes back fenced; the file opens again with the lease.
            write_conf(m, false, Writes::Fenced)?;
            if !local.held {
                let a = admin.ok_or("no admin connection to hold writes")?;
                tracing::warn!(database = %m.key.0, member = m.key.1, "this node's lease lapsed: the master holds every write until it is renewed (writes are refused if that takes longer than another lease)");
                a.hold_writes().await.map_err(err)?;
                local.held = true;
            }
            Ok(describe(step))
        }
        Step::Fence { why } => {
            write_conf(m, marker.primary_term == 0, Writes::Fenced)?;
            if let (Some(a), Some(p)) = (admin, probe) {
                if !p.fenced() {
                    tracing::warn!(database = %m.key.0, member = m.key.1, "refusing writes: {why}");
                    a.set_writes(Writes::Fenced).await.map_err(err)?;
                }
                if local.held {
                    // Writes that waited now meet the fence and are refused.
                    a.resume_writes().await.map_err(err)?;
                    local.held = false;
                }
            }
            Ok(describe(step))
        }
        Step::Promote { term } => {
            let a = admin.ok_or("no admin connection")?;
            tracing::info!(database = %m.key.0, member = m.key.1, term, "promoting");
            a.promote().await.map_err(err)?;
            a.set_writes(open).await.map_err(err)?;
            let run_id = probe.map(|p| p.run_id.clone()).unwrap_or_default();
            set_marker(marker, Marker { ready: true, primary_term: *term, run_id })?;
            write_conf(m, false, open)?;
            Ok(format!("promoted (term {term})"))
        }
        Step::Demote => {
            // Its data is replaced by the new master's (a partial or full resync): it
            // holds the database's data again once that sync completed.
            write_conf(m, true, Writes::Fenced)?;
            if let Some(a) = admin {
                if probe.is_some_and(|p| p.master && !p.fenced()) {
                    a.set_writes(Writes::Fenced).await.map_err(err)?;
                }
                a.replicate_from(&rw, holdfast_redis::REPL_PORT).await.map_err(err)?;
                if local.held {
                    a.resume_writes().await.map_err(err)?;
                    local.held = false;
                }
            }
            tracing::info!(database = %m.key.0, member = m.key.1, "a former master rejoins as a replica");
            set_marker(marker, Marker { ready: false, primary_term: 0, run_id: String::new() })?;
            Ok(describe(step))
        }
        Step::Wait { why } => Ok(format!("waiting: {why}")),
    }
}

/// The spec's live settings (persistence, maxmemory) on the running process, once per
/// process and change: a redeploy takes effect without a restart.
async fn apply_settings(m: &Member<'_>, a: &Admin, p: &Probe, local: &mut Local) -> Result<(), String> {
    let options = m.rec.spec.redis_options();
    let want = (p.run_id.clone(), disk(options.persistence), options.maxmemory);
    if local.applied.as_ref() != Some(&want) {
        a.apply_settings(want.1, want.2).await.map_err(|e| e.to_string())?;
        tracing::info!(database = %m.key.0, member = m.key.1, persistence = ?want.1, maxmemory = ?want.2, "settings applied");
        local.applied = Some(want);
    }
    Ok(())
}

/// The agent instance that runs the member's redis-server.
fn instance_spec(m: &Member<'_>) -> InstanceSpec {
    // SIGTERM: Redis's own shutdown (AOF fsynced, or an RDB saved when configured).
    super::server_instance(
        instance_id(DbEngine::Redis, &m.key.0, m.key.1),
        r#"exec "$0" "$1" --port "$PORT""#,
        &[m.bins.server.display().to_string(), m.dir.conf().display().to_string()],
        &m.dir.root,
        "redis",
        15,
        &m.user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_coming_to_a_notable_step_is_an_event_once() {
        let kind = |step: &Step, last: Option<&Step>| notable(step, last).map(|(l, k, _)| (l, k));
        let fenced = Step::Fence { why: member::FENCED };
        assert_eq!(kind(&Step::Hold, Some(&Step::Master)), Some((Level::Warn, "member-holding")));
        assert_eq!(kind(&Step::Hold, Some(&Step::Hold)), None, "said once");
        assert_eq!(kind(&Step::Master, Some(&Step::Hold)), Some((Level::Info, "member-released")));
        assert_eq!(kind(&fenced, Some(&Step::Hold)), Some((Level::Warn, "member-fenced")));
        assert_eq!(kind(&Step::Demote, None), Some((Level::Info, "member-demoted")));
        assert_eq!(kind(&Step::Replica, None), None, "the steady state says nothing");
        assert_eq!(kind(&Step::Master, Some(&Step::Promote { term: 2 })), None);
    }
}
