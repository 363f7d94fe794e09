//! Jobs in the replicated state: each job's spec (deployed with its project, like a
//! service) and its runs — one-off (`holdfast run`) and scheduled — with their attempts,
//! nodes, results and the schedule's cursor.
//!
//! The cursor makes a schedule run exactly once per slot: a slot's run is started by the
//! same entry that moves the cursor past it (`StartRun` is compare-and-set on it), so a
//! new leader that takes over mid-slot sees the slot as taken, and one that finds slots
//! missed while nobody led starts only the latest of them. A run's instance is
//! `<job>.run-<id>` on its node, generation [`Run::generation`] (new for each attempt).
use std::collections::BTreeMap;

use holdfast_placement::NodeId;
use holdfast_spec::{JobSpec, Stack};
use serde::{Deserialize, Serialize};

/// For the crates that read jobs without depending on the spec.
pub use holdfast_spec::{format_bytes, format_duration_ms, format_utc_ms, Concurrency, JobSpec as Spec};

use crate::model::ClusterState;
use crate::plan::{ChangeKind, Plan, PlanError};

/// Runs kept per job (older ones are forgotten, their logs stay on their nodes).
pub const HISTORY: usize = 20;

/// One job as the cluster runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub project: String,
    pub spec: JobSpec,
}

/// A job's runs and its schedule's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRuns {
    /// The latest scheduled slot started or skipped (ms since the epoch): no slot at or
    /// before it runs again. `None` until the leader first looks at a scheduled job (it
    /// then starts from the current slot, never from the past).
    pub cursor_ms: Option<u64>,
    /// The id the next run gets.
    pub next_id: u64,
    /// Oldest first; at most [`HISTORY`].
    pub runs: Vec<Run>,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    /// The scheduled slot it runs for; `None` for a run asked for by hand.
    pub slot_ms: Option<u64>,
    /// `schedule`, `admin`, `token <id> (<name>)`.
    pub by: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub state: RunState,
    /// The node of the current attempt, once placed.
    pub node: Option<NodeId>,
    /// The current attempt's instance generation (new for each attempt).
    pub generation: u64,
    pub created_at_ms: u64,
    /// When the current attempt was placed.
    pub assigned_at_ms: Option<u64>,
    /// When the current attempt was seen running.
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// A retry waits until then.
    pub retry_at_ms: Option<u64>,
    /// How the last attempt ended, in words (`exited with code 2`, `timed out after 10m`).
    pub result: Option<String>,
    pub exit_code: Option<i32>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Waiting for a node (or for its retry time), or placed and not seen running yet.
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// Stopped by a newer slot (`concurrency: replace`) or because its job was removed.
    Cancelled,
    /// A slot not run because another run was going (`concurrency: forbid`).
    Skipped,
}

impl RunState {
    /// Pending or running.
    pub fn active(self) -> bool {
        matches!(self, RunState::Pending | RunState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed-out",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
        }
    }
}

impl Run {
    /// A new run, waiting for a node.
    pub fn new(id: u64, slot_ms: Option<u64>, by: String, now_ms: u64) -> Run {
        Run {
            id,
            slot_ms,
            by,
            attempt: 1,
            state: RunState::Pending,
            node: None,
            generation: 0,
            created_at_ms: now_ms,
            assigned_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            retry_at_ms: None,
            result: None,
            exit_code: None,
        }
    }
}

/// The agent instance name of a job's runs (`<job>.run`; a `.` never is in a service name).
pub fn instance_service(job: &str) -> String {
    format!("{job}.run")
}

/// The job of an instance service name, if it is one.
pub fn job_of_instance(service: &str) -> Option<&str> {
    service.strip_suffix(".run")
}

/// Plans the jobs of a deploy: the project's jobs become exactly the stack's; a job name
/// may not be another project's job nor any service or database name.
pub(crate) fn plan_jobs(
    state: &ClusterState,
    stack: &Stack,
    plan: &mut Plan,
) -> Result<BTreeMap<String, JobRecord>, PlanError> {
    let project = &stack.project;
    let current = &state.desired.jobs;
    for name in stack.jobs.keys() {
        let taken = match (current.get(name), state.desired.services.get(name), state.desired.databases.get(name)) {
            (Some(j), _, _) if &j.project != project => Some(format!("job `{name}` of project `{}`", j.project)),
            (_, Some(s), _) => Some(format!("service `{name}` of project `{}`", s.project)),
            (_, _, Some(d)) => Some(format!("database `{name}` of project `{}`", d.project)),
            _ => stack.services.contains_key(name).then(|| format!("service `{name}` of this stack")),
        };
        if let Some(taken_by) = taken {
            return Err(PlanError::JobNameTaken { name: name.clone(), project: project.clone(), taken_by });
        }
    }
    let mut jobs: BTreeMap<String, JobRecord> =
        current.iter().filter(|(_, j)| &j.project != project).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, spec) in &stack.jobs {
        let (kind, details) = match current.get(name) {
            None => (ChangeKind::Create, vec![]),
            Some(old) if old.spec == *spec => (ChangeKind::Unchanged, vec![]),
            Some(_) => (ChangeKind::Update, vec!["the next run uses the new definition".to_string()]),
        };
        let mut details = details;
        if let Some(s) = &spec.schedule {
            details.push(s.describe());
        }
        plan.changes.push(crate::plan::Change {
            kind,
            target: format!("job {name}"),
            details,
            replaces_instances: false,
        });
        jobs.insert(name.clone(), JobRecord { project: project.clone(), spec: spec.clone() });
    }
    for (name, _) in current.iter().filter(|(n, j)| &j.project == project && !stack.jobs.contains_key(*n)) {
        plan.changes.push(crate::plan::Change {
            kind: ChangeKind::Delete,
            target: format!("job {name}"),
            details: vec!["a run still going is stopped".into()],
            replaces_instances: true,
        });
    }
    Ok(jobs)
}

/// Applies `StartRun`: refused unless `run.id` is the job's next id and, for a scheduled
/// run, its slot is after the cursor (which moves to it).
pub(crate) fn start(state: &mut ClusterState, job: &str, run: &Run) -> Result<(), String> {
    if !state.desired.jobs.contains_key(job) {
        return Err(format!("there is no job {job}"));
    }
    let (next_id, cursor) = state.runs.get(job).map_or((0, None), |r| (r.next_id, r.cursor_ms));
    if run.id != next_id {
        return Err(format!("run {} of {job} was taken meanwhile (the next is {next_id}); try again", run.id));
    }
    if let Some(slot) = run.slot_ms {
        if cursor.is_some_and(|c| slot <= c) {
            return Err(format!("the slot at {slot} of {job} was already taken"));
        }
    }
    // Checked: from here on nothing is refused.
    let runs = state.runs.entry(job.to_string()).or_default();
    if run.slot_ms.is_some() {
        runs.cursor_ms = run.slot_ms;
    }
    runs.next_id += 1;
    runs.runs.push(run.clone());
    let excess = runs.runs.len().saturating_sub(HISTORY);
    // Only finished runs are forgotten.
    let mut dropped = 0;
    runs.runs.retain(|r| {
        if dropped < excess && !r.state.active() {
            dropped += 1;
            false
        } else {
            true
        }
    });
    Ok(())
}

/// Applies `PutRun`: replaces an active run whose attempt is still `attempt`.
pub(crate) fn put(state: &mut ClusterState, job: &str, attempt: u32, run: &Run) -> Result<(), String> {
    let Some(cur) = state.runs.get_mut(job).and_then(|r| r.runs.iter_mut().find(|r| r.id == run.id)) else {
        return Err(format!("there is no run {} of {job}", run.id));
    };
    if cur.attempt != attempt || !cur.state.active() {
        return Err(format!("run {} of {job} moved on meanwhile", run.id));
    }
    *cur = run.clone();
    Ok(())
}

/// Applies `SetJobCursor`: the cursor only moves forward.
pub(crate) fn set_cursor(state: &mut ClusterState, job: &str, cursor_ms: u64) -> Result<(), String> {
    if !state.desired.jobs.contains_key(job) {
        return Err(format!("there is no job {job}"));
    }
    if state.runs.get(job).and_then(|r| r.cursor_ms).is_some_and(|c| cursor_ms <= c) {
        return Err(format!("the cursor of {job} is already past {cursor_ms}"));
    }
    state.runs.entry(job.to_string()).or_default().cursor_ms = Some(cursor_ms);
    Ok(())
}

/// The runs `node` should be running: (job, run) of every active run placed there.
pub fn runs_on(state: &ClusterState, node: NodeId) -> Vec<(&str, &JobRecord, &Run)> {
    let mut out = Vec::new();
    for (job, runs) in &state.runs {
        let Some(rec) = state.desired.jobs.get(job) else { continue };
        for r in runs.runs.iter().filter(|r| r.state.active() && r.node == Some(node)) {
            out.push((job.as_str(), rec, r));
        }
    }
    out
}

/// The active run `id` of `job`, if any (a job token is good only while it is).
pub fn active_run<'a>(state: &'a ClusterState, job: &str, id: u64) -> Option<&'a Run> {
    state.runs.get(job)?.runs.iter().find(|r| r.id == id && r.state.active())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request, Response};

    fn state() -> ClusterState {
        let mut st = ClusterState::default();
        let stack = holdfast_spec::parse_str(
            "t.yaml",
            "project: p\njobs:\n  tick: { run: [x], every: 10s }\n  once: { run: [y] }\n",
        )
        .expect("spec");
        let (_, desired) = crate::plan::plan_deploy(&st, &stack).expect("plan");
        st.apply(&Request::new(Command::SetDesired { expected_revision: 0, desired }));
        st
    }

    fn start(st: &mut ClusterState, job: &str, id: u64, slot: Option<u64>) -> Response {
        let by = if slot.is_some() { "schedule" } else { "admin" };
        st.apply(&Request::new(Command::StartRun { job: job.into(), run: Run::new(id, slot, by.into(), 5) }))
    }

    #[test]
    fn a_slot_and_an_id_are_taken_once_and_a_refusal_changes_nothing() {
        let mut st = state();
        assert!(matches!(start(&mut st, "tick", 0, Some(10_000)), Response::Applied { .. }));
        let before = st.clone();
        for (job, id, slot, why) in [
            ("tick", 1, Some(10_000), "the slot at 10000 of tick was already taken"),
            ("tick", 1, Some(5_000), "the slot at 5000 of tick was already taken"),
            ("tick", 0, Some(20_000), "run 0 of tick was taken meanwhile (the next is 1); try again"),
            ("nope", 0, None, "there is no job nope"),
        ] {
            assert_eq!(start(&mut st, job, id, slot), Response::Refused { reason: why.into() });
            assert_eq!(st, before, "{why}");
        }
        // A first refused start of another job leaves no trace either.
        assert_eq!(
            start(&mut st, "once", 3, None),
            Response::Refused { reason: "run 3 of once was taken meanwhile (the next is 0); try again".into() }
        );
        assert_eq!(st, before);
        assert!(matches!(start(&mut st, "tick", 1, Some(20_000)), Response::Applied { .. }));
        assert_eq!(st.runs["tick"].cursor_ms, Some(20_000));
    }

    #[test]
    fn put_is_compare_and_set_on_the_attempt_and_history_keeps_active_runs() {
        let mut st = state();
        start(&mut st, "once", 0, None);
        let mut r = st.runs["once"].runs[0].clone();
        r.attempt = 2;
        let put = |st: &mut ClusterState, attempt, run: &Run| {
            st.apply(&Request::new(Command::PutRun { job: "once".into(), attempt, run: run.clone() }))
        };
        assert!(matches!(put(&mut st, 1, &r), Response::Applied { .. }));
        assert_eq!(put(&mut st, 1, &r), Response::Refused { reason: "run 0 of once moved on meanwhile".into() });
        r.state = RunState::Succeeded;
        assert!(matches!(put(&mut st, 2, &r), Response::Applied { .. }));
        assert_eq!(put(&mut st, 2, &r), Response::Refused { reason: "run 0 of once moved on meanwhile".into() });
        // Past HISTORY runs, finished ones are forgotten, oldest first; active ones stay.
        for id in 1..=(HISTORY as u64 + 3) {
            start(&mut st, "once", id, None);
        }
        let ids: Vec<u64> = st.runs["once"].runs.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), HISTORY + 3, "all still pending: none forgotten");
        assert_eq!(ids[0], 1, "the finished run 0 went first");
    }

    #[test]
    fn scheduled_runs_that_go_as_planned_make_no_events() {
        let mut st = state();
        let before = st.clone();
        let cmd = Command::StartRun { job: "tick".into(), run: Run::new(0, Some(10_000), "schedule".into(), 5) };
        st.apply(&Request::new(cmd.clone()));
        assert!(crate::events::describe(&before, &cmd, &st).is_empty());
        let before = st.clone();
        let cmd = Command::StartRun { job: "once".into(), run: Run::new(0, None, "token ab (ci)".into(), 5) };
        st.apply(&Request::new(cmd.clone()));
        let ev = crate::events::describe(&before, &cmd, &st);
        assert_eq!(
            ev.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["job once: run #0 asked by token ab (ci)"]
        );
    }

    #[test]
    fn a_removed_job_takes_its_runs_along() {
        let mut st = state();
        start(&mut st, "once", 0, None);
        let stack =
            holdfast_spec::parse_str("t.yaml", "project: p\njobs:\n  tick: { run: [x], every: 10s }\n").expect("spec");
        let (plan, desired) = crate::plan::plan_deploy(&st, &stack).expect("plan");
        assert!(plan.changes.iter().any(|c| c.target == "job once" && c.kind == ChangeKind::Delete));
        st.apply(&Request::new(Command::SetDesired { expected_revision: st.revision, desired }));
        assert!(!st.runs.contains_key("once"));
        // A service may not take a job's name, nor a job a service's.
        let stack = holdfast_spec::parse_str("t.yaml", "project: q\nservices:\n  tick: { run: [x] }\n").expect("spec");
        assert_eq!(
            crate::plan::plan_deploy(&st, &stack).unwrap_err().to_string(),
            "the name `tick` of service `tick` of project `q` is already taken by job `tick` of project `p`; rename one"
        );
        let stack = holdfast_spec::parse_str("t.yaml", "project: q\njobs:\n  tick: { run: [x] }\n").expect("spec");
        assert_eq!(
            crate::plan::plan_deploy(&st, &stack).unwrap_err().to_string(),
            "the name `tick` of job `tick` of project `q` is already taken by job `tick` of project `p`; rename one"
        );
    }
}
