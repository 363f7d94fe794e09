//! The controller runner: on the leader, every heartbeat period, snapshot → tick → execute
//! → report. The decisions are `holdfast_control::Engine::tick` (pure); this file only
//! gathers the observations, proposes each command in order (stopping at the first that
//! does not apply; a compare-and-set conflict ticks again at once on the new state),
//! applies the membership changes, logs the engine's notes once, and reports the pass to
//! [`crate::workers`].
use std::collections::BTreeMap;
use std::time::Instant;

use holdfast_control::{Engine, Input, Level, MembershipChange, NodeReport, Observations, Output};
use holdfast_state::{Request, Response as Applied};
use tokio_util::sync::CancellationToken;

use crate::peer::heartbeat::{instance_report, own_heartbeat};
use crate::workers::Pass;
use crate::NodeContext;

/// The worker name the leader's duties report under.
pub const WORKER: &str = "leader duties";

/// Ticks in a row after compare-and-set conflicts before the pass gives up until the next
/// period.
const CONFLICT_RETRIES: usize = 3;

/// Runs the leader's duties until `cancel` fires.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut engine = Engine::new();
    let epoch = Instant::now();
    let mut members = ctx.members_changed.subscribe();
    loop {
        let period = ctx.heartbeat_period();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            // A database member changed role (a switchover step, a promotion): decide
            // the next step now rather than at the next period.
            r = members.changed() => if r.is_err() { return },
        }
        if !ctx.control.is_leader() {
            if engine.leader_since().is_some() {
                engine.step_down();
            }
            ctx.workers.report(WORKER, Pass::Idle("not the leader"));
            continue;
        }
        let pass = pass(&ctx, &mut engine, epoch).await;
        ctx.workers.report(WORKER, pass);
    }
}

fn millis(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_millis() as u64
}

/// What the engine needs of a member's status.
fn member_report(m: &holdfast_api::peer::MemberStatus) -> holdfast_control::MemberReport {
    use holdfast_api::peer::MemberRole as R;
    use holdfast_control::MemberRole;
    holdfast_control::MemberReport {
        database: m.database.clone(),
        member: m.member,
        term: m.term,
        role: match m.role {
            R::Primary => MemberRole::Primary,
            R::Replica => MemberRole::Replica,
            R::Starting => MemberRole::Starting,
            R::Stopped => MemberRole::Stopped,
            R::Fenced => MemberRole::Fenced,
            R::Failed => MemberRole::Failed,
        },
        timeline: m.timeline,
        lsn: m.lsn,
        replay_lsn: m.replay_lsn,
        answering: m.answering,
        streaming: m.streaming,
        sync_applied: m.sync_applied.clone(),
        down_since: None,
        pending_restart: m.pending_restart,
        config_generation: m.config_generation,
    }
}

/// What the leader observed, for the engine.
pub async fn observe(ctx: &NodeContext, epoch: Instant) -> Observations {
    let mut nodes = BTreeMap::new();
    {
        let mut live = ctx.liveness.lock().await;
        // The leader's own report is always fresh.
        live.seen.insert(ctx.identity.node_id, (Instant::now(), own_heartbeat(ctx)));
        for (id, (at, hb)) in &live.seen {
            nodes.insert(
                *id,
                NodeReport {
                    seen_at: millis(epoch, *at),
                    record: hb.node.clone(),
                    instances: hb.instances.iter().map(instance_report).collect(),
                    start_labels: hb.start_labels.clone(),
                    // Filled in by the database side of the heartbeat (not reported yet).
                    databases: hb.databases.iter().map(member_report).collect(),
                },
            );
        }
    }
    let (voters, learners) = ctx.control.membership();
    Observations {
        nodes,
        membership: holdfast_control::Membership { voters, learners },
        lag: ctx.control.replication_lag(),
    }
}

async fn pass(ctx: &NodeContext, engine: &mut Engine, epoch: Instant) -> Pass {
    let _guard = ctx.change_lock.lock().await;
    let own_ca = ctx
        .identity
        .ca_key_pem
        .as_ref()
        .map(|key| holdfast_state::model::CaRecord { cert_pem: ctx.identity.ca_pem.clone(), key_pem: key.clone() });
    let mut done = Vec::new();
    for _ in 0..CONFLICT_RETRIES {
        let state = ctx.control.state();
        let observations = observe(ctx, epoch).await;
        let input = Input {
            now: millis(epoch, Instant::now()),
            me: ctx.identity.node_id,
            state: &state,
            observations: &observations,
            own_ca: own_ca.as_ref(),
            wall_ms: crate::peer::now_ms(),
        };
        let out = engine.tick(input);
        if let Ok(mut p) = ctx.promotion.lock() {
            *p = engine.promotion_blockers(input);
        }
        if let Ok(mut w) = ctx.database_waits.lock() {
            *w = engine.database_waits().iter().map(|n| n.text.clone()).collect();
        }
        for note in &out.notes {
            match note.level {
                Level::Warn => tracing::warn!("{}", note.text),
                Level::Info => tracing::info!("{}", note.text),
            }
        }
        for o in &out.observed {
            tracing::info!("{}", o.message);
            crate::events::record_local(ctx, o.level, o.kind, o.subject.clone(), o.message.clone());
        }
        match execute(ctx, &state, &out).await {
            Ok(mut lines) => {
                done.append(&mut lines);
                return if done.is_empty() { Pass::Steady } else { Pass::Progress(done.join("; ")) };
            }
            Err(Failure::Conflict(mut lines)) => done.append(&mut lines),
            Err(Failure::Error(e)) => return Pass::Error(e),
        }
    }
    Pass::Error(format!("the state kept changing under {CONFLICT_RETRIES} passes in a row"))
}

enum Failure {
    /// A compare-and-set lost against another write: tick again on the new state.
    Conflict(Vec<String>),
    Error(String),
}

/// Proposes the commands in order, then (only if they all applied) changes the
/// membership. Returns one short line per action done.
async fn execute(
    ctx: &NodeContext,
    state: &holdfast_state::ClusterState,
    out: &Output,
) -> Result<Vec<String>, Failure> {
    let mut done = Vec::new();
    for cmd in &out.proposals {
        let req = Request::new(cmd.clone());
        let line = req.to_string();
        match ctx.control.propose(req).await {
            Ok(Applied::Applied { .. }) => done.push(line),
            Ok(Applied::Conflict { .. }) => return Err(Failure::Conflict(done)),
            Ok(other) => return Err(Failure::Error(format!("{line}: {other:?}"))),
            Err(e) => return Err(Failure::Error(format!("{line}: {e}"))),
        }
    }
    let name = |id: &u64| state.node_name(*id);
    for change in &out.membership {
        let (line, result) = match change {
            MembershipChange::AddLearner { id, addr } => {
                (format!("add learner {}", name(id)), ctx.control.add_learner(*id, addr).await)
            }
            MembershipChange::Remove(ids) => {
                let names: Vec<String> = ids.iter().map(name).collect();
                (format!("remove members {}", names.join(", ")), ctx.control.remove_members(ids.clone()).await)
            }
            MembershipChange::SetVoters(ids) => {
                let names: Vec<String> = ids.iter().map(name).collect();
                tracing::info!(voters = %names.join(", "), "changing the control-plane voters");
                (format!("voters {}", names.join(", ")), ctx.control.set_voters(ids.clone()).await)
            }
        };
        match result {
            Ok(()) => done.push(line),
            Err(e) => return Err(Failure::Error(format!("{line}: {e}"))),
        }
    }
    Ok(done)
}
