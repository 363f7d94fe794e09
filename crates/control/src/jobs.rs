//! Jobs: the leader starts each scheduled slot once, places runs on nodes, follows each
//! attempt through what its node reports, stops a run that outlives its timeout, and
//! retries a failed attempt with backoff.
//!
//! Exactly once per slot: a slot's run is proposed together with the cursor move past it
//! (`StartRun` is compare-and-set on the cursor), so a new leader never starts a slot its
//! predecessor started, and after a time without a leader only the latest missed slot
//! runs (the older ones are reported as missed). Pure: the state, what the nodes report
//! and the wall clock in, commands out.
use holdfast_placement::NodeId;
use holdfast_state::jobs::{instance_service, JobRecord, Run, RunState};
use holdfast_state::{ClusterState, Command};

use crate::Note;

/// What a node reports about a run's instance: (generation, running, exit).
pub type RunSeen = (u64, bool, Option<(Option<i32>, String)>);

/// `(node, instance service, replica)` → what its node last reported, if anything.
pub type SeenFn<'a> = dyn Fn(NodeId, &str, u32) -> Option<RunSeen> + 'a;

/// How long a placed attempt may go unreported by a live node before it counts as lost.
pub const START_GRACE_MS: u64 = 60_000;

/// The wait before retry `attempt + 1`: 10 s doubling, at most 10 minutes.
pub fn backoff_ms(attempt: u32) -> u64 {
    (10_000u64 << attempt.saturating_sub(1).min(6)).min(600_000)
}

/// The next step of every active run, in job order: placed, seen running, finished,
/// timed out, retried, lost.
pub fn follow_runs(state: &ClusterState, wall: u64, seen: &SeenFn<'_>) -> (Vec<Command>, Vec<Note>) {
    let (mut cmds, mut notes) = (Vec::new(), Vec::new());
    let mut place = Placing { load: active_per_node(state), room: room(state) };
    for (job, rec) in &state.desired.jobs {
        let Some(runs) = state.runs.get(job) else { continue };
        for run in runs.runs.iter().filter(|r| r.state.active()) {
            if let Some(cmd) = follow(state, job, rec, run, wall, seen, &mut place, &mut notes) {
                cmds.push(cmd);
            }
        }
    }
    (cmds, notes)
}

/// The scheduled slots due, in job order (after [`follow_runs`], so a run that just
/// finished does not make its job's next slot skip).
pub fn start_slots(state: &ClusterState, wall: u64) -> (Vec<Command>, Vec<Note>) {
    let (mut cmds, mut notes) = (Vec::new(), Vec::new());
    for (job, rec) in &state.desired.jobs {
        let runs = state.runs.get(job).cloned().unwrap_or_default();
        if let Some(s) = &rec.spec.schedule {
            match runs.cursor_ms {
                None => {
                    let from = s.latest_at_or_before(wall).unwrap_or(wall);
                    cmds.push(Command::SetJobCursor { job: job.clone(), cursor_ms: from });
                }
                Some(cursor) => {
                    if let Some(next) = s.next_after(cursor).filter(|n| *n <= wall) {
                        let slot = s.latest_at_or_before(wall).unwrap_or(next).max(next);
                        if slot != next {
                            notes.push(Note::warn(format!(
                                "job {job}: slots from {} to before {} were missed (no leader could start them); running only the latest, {}",
                                utc(next),
                                utc(slot),
                                utc(slot)
                            )));
                        }
                        cmds.extend(start_slot(job, rec, &runs.runs, runs.next_id, slot, wall));
                    }
                }
            }
        }
    }
    (cmds, notes)
}

fn utc(ms: u64) -> String {
    holdfast_state::jobs::format_utc_ms(ms)
}

fn start_slot(job: &str, rec: &JobRecord, runs: &[Run], next_id: u64, slot: u64, wall: u64) -> Vec<Command> {
    let active: Vec<&Run> = runs.iter().filter(|r| r.state.active()).collect();
    let mut run = Run::new(next_id, Some(slot), "schedule".into(), wall);
    let mut out = Vec::new();
    match rec.spec.concurrency {
        holdfast_state::jobs::Concurrency::Forbid if !active.is_empty() => {
            run.state = RunState::Skipped;
            run.finished_at_ms = Some(wall);
            let ids: Vec<String> = active.iter().map(|r| format!("#{}", r.id)).collect();
            run.result = Some(format!("skipped: run {} was still going (concurrency: forbid)", ids.join(", ")));
        }
        holdfast_state::jobs::Concurrency::Replace => {
            for a in active {
                let mut stopped = a.clone();
                stopped.state = RunState::Cancelled;
                stopped.finished_at_ms = Some(wall);
                stopped.result = Some(format!("cancelled: replaced by run #{next_id} (concurrency: replace)"));
                out.push(Command::PutRun { job: job.to_string(), attempt: a.attempt, run: stopped });
            }
        }
        _ => {}
    }
    out.push(Command::StartRun { job: job.to_string(), run });
    out
}

/// Active runs per node (the least loaded eligible node takes the next run).
fn active_per_node(state: &ClusterState) -> std::collections::BTreeMap<NodeId, usize> {
    let mut load = std::collections::BTreeMap::new();
    for runs in state.runs.values() {
        for r in runs.runs.iter().filter(|r| r.state.active()) {
            if let Some(n) = r.node {
                *load.entry(n).or_insert(0) += 1;
            }
        }
    }
    load
}

/// What a job's run asks of its node: (millicores, bytes).
fn request(spec: &holdfast_state::jobs::Spec) -> (u64, u64) {
    (spec.resources.cpu_millis.map(u64::from).unwrap_or(0), spec.resources.memory_bytes.unwrap_or(0))
}

/// Each node's room left: its capacity less its database members' and service replicas'
/// requests and the requests of the runs active there.
fn room(state: &ClusterState) -> std::collections::BTreeMap<NodeId, (u64, u64)> {
    let mut room: std::collections::BTreeMap<NodeId, (u64, u64)> =
        state.node_views().into_iter().map(|v| (v.id, (v.capacity.cpu_millis, v.capacity.memory_bytes))).collect();
    let mut take = |node: NodeId, (cpu, mem): (u64, u64)| {
        if let Some(r) = room.get_mut(&node) {
            *r = (r.0.saturating_sub(cpu), r.1.saturating_sub(mem));
        }
    };
    for (service, nodes) in &state.desired.placements {
        let Some(rec) = state.desired.services.get(service) else { continue };
        let asks =
            (rec.spec.resources.cpu_millis.map(u64::from).unwrap_or(0), rec.spec.resources.memory_bytes.unwrap_or(0));
        for n in nodes {
            take(*n, asks);
        }
    }
    for (job, runs) in &state.runs {
        let Some(rec) = state.desired.jobs.get(job) else { continue };
        for r in runs.runs.iter().filter(|r| r.state.active()) {
            if let Some(n) = r.node {
                take(n, request(&rec.spec));
            }
        }
    }
    room
}

/// What placing runs keeps track of within one pass: active runs and room per node.
struct Placing {
    load: std::collections::BTreeMap<NodeId, usize>,
    room: std::collections::BTreeMap<NodeId, (u64, u64)>,
}

/// A node for a run: alive, schedulable, with every label of the job's node selector and
/// room for its requests; the least loaded one (then the lowest id), which the run then
/// takes. `Err`: why none can.
fn choose_node(state: &ClusterState, rec: &JobRecord, place: &mut Placing) -> Result<NodeId, String> {
    let matching: Vec<NodeId> = state
        .nodes
        .values()
        .filter(|n| !n.down && !n.cordoned && !n.draining && !n.removing)
        .filter(|n| {
            let labels = holdfast_state::labels::node_labels(n);
            rec.spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|n| n.id)
        .collect();
    if matching.is_empty() {
        return Err(if rec.spec.node_selector.is_empty() {
            "no node is up and schedulable".to_string()
        } else {
            format!(
                "no node that is up and schedulable matches node_selector {}",
                holdfast_state::labels::format_labels(&rec.spec.node_selector)
            )
        });
    }
    let (cpu, mem) = request(&rec.spec);
    let chosen = matching
        .into_iter()
        .filter(|id| place.room.get(id).is_some_and(|(c, m)| *c >= cpu && *m >= mem))
        .min_by_key(|id| (place.load.get(id).copied().unwrap_or(0), *id));
    if let Some(n) = chosen {
        *place.load.entry(n).or_insert(0) += 1;
        if let Some(r) = place.room.get_mut(&n) {
            *r = (r.0.saturating_sub(cpu), r.1.saturating_sub(mem));
        }
    }
    chosen.ok_or_else(|| {
        format!(
            "no node it may use has room for its requests (cpu {}m, memory {}) besides what runs there now",
            cpu,
            holdfast_state::jobs::format_bytes(mem)
        )
    })
}

/// The attempt ended: success, a retry, or the run's end.
fn finish(rec: &JobRecord, run: &Run, wall: u64, ok: bool, timed_out: bool, text: String, code: Option<i32>) -> Run {
    let mut next = run.clone();
    // A run that ended between two looks was never seen running: it started when placed.
    next.started_at_ms = run.started_at_ms.or(run.assigned_at_ms);
    next.result = Some(text);
    next.exit_code = code;
    if ok {
        next.state = RunState::Succeeded;
        next.finished_at_ms = Some(wall);
    } else if run.attempt <= rec.spec.retries {
        next.attempt = run.attempt + 1;
        next.state = RunState::Pending;
        next.node = None;
        next.assigned_at_ms = None;
        next.started_at_ms = None;
        next.retry_at_ms = Some(wall + backoff_ms(run.attempt));
    } else {
        next.state = if timed_out { RunState::TimedOut } else { RunState::Failed };
        next.finished_at_ms = Some(wall);
    }
    next
}

#[allow(clippy::too_many_arguments)]
fn follow(
    state: &ClusterState,
    job: &str,
    rec: &JobRecord,
    run: &Run,
    wall: u64,
    seen: &SeenFn<'_>,
    place: &mut Placing,
    notes: &mut Vec<Note>,
) -> Option<Command> {
    let put = |r: Run| Command::PutRun { job: job.to_string(), attempt: run.attempt, run: r };
    let Some(node) = run.node else {
        if run.retry_at_ms.is_some_and(|t| t > wall) {
            return None;
        }
        return match choose_node(state, rec, place) {
            Ok(n) => {
                let mut r = run.clone();
                r.node = Some(n);
                r.generation = u64::from(run.attempt);
                r.assigned_at_ms = Some(wall);
                r.retry_at_ms = None;
                Some(put(r))
            }
            Err(why) => {
                notes.push(Note::warn(format!("job {job}: run #{} waits: {why}", run.id)));
                None
            }
        };
    };
    let name = state.node_name(node);
    if state.nodes.get(&node).is_none_or(|n| n.down) {
        let text = format!("node {name} went down during attempt {}", run.attempt);
        return Some(put(finish(rec, run, wall, false, false, text, None)));
    }
    let report = seen(node, &instance_service(job), run.id as u32).filter(|(g, _, _)| *g == run.generation);
    match report {
        Some((_, _, Some((code, how)))) => {
            let ok = code == Some(0);
            Some(put(finish(rec, run, wall, ok, false, how, code)))
        }
        Some((_, true, None)) if run.state == RunState::Pending => {
            let mut r = run.clone();
            r.state = RunState::Running;
            r.started_at_ms = Some(wall);
            Some(put(r))
        }
        Some(_) if run.started_at_ms.is_some_and(|t| t + rec.spec.timeout_ms <= wall) => {
            let text = format!("timed out after {}", holdfast_state::jobs::format_duration_ms(rec.spec.timeout_ms));
            Some(put(finish(rec, run, wall, false, true, text, None)))
        }
        Some(_) => None,
        None => {
            let since = run.started_at_ms.or(run.assigned_at_ms).unwrap_or(wall);
            let grace = if run.state == RunState::Running { 5_000 } else { START_GRACE_MS };
            (since + grace <= wall).then(|| {
                let text = format!("node {name} stopped reporting attempt {}", run.attempt);
                put(finish(rec, run, wall, false, false, text, None))
            })
        }
    }
}
