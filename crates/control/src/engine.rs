//! [`Engine::tick`]: one pass of every leader duty, in order, against one simulated state.
//!
//! Each proposal is applied to a copy of the state as it is decided (with the same
//! deterministic `ClusterState::apply` every node runs), so the next duty plans on the
//! revision that proposal produces: a `SetDesired` after a node was declared down
//! carries the right `expected_revision`, and if anything else writes in between, the
//! compare-and-set fails and the runner ticks again on the new state.
//!
//! The engine keeps a little memory between ticks — when this leader took over, since
//! when nodes have been alive or down, which recurring notes were already said — and
//! forgets it all when leadership is lost ([`Engine::step_down`]).
use std::collections::{BTreeMap, BTreeSet};

use holdfast_placement::NodeId;
use holdfast_state::drain::plan_drain_step;
use holdfast_state::plan::{describe_moves, plan_reschedule};
use holdfast_state::{ClusterState, Command, Request, Response};

use crate::database::{DbDecision, DbInput, DbMemory};
use crate::membership::MemberHealth;
use holdfast_state::events::Level as EventLevel;

use crate::{database, detector, membership, records, removal, Input, Millis, Note, Observed, Output};

/// The leader's memory between ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Engine {
    leader_since: Option<Millis>,
    down_since: BTreeMap<NodeId, Millis>,
    alive_since: BTreeMap<NodeId, Millis>,
    /// Nodes suspect at the last tick.
    suspect: BTreeSet<NodeId>,
    /// Recurring notes (a stuck replica, a drain step) said on the last tick: said again
    /// only when they change.
    said: BTreeSet<Note>,
    /// The committed revision re-placement last found nothing to move at, and the notes
    /// it had: re-placement is a pure function of the state, and a committed revision
    /// names exactly one state, so at the same revision it is not computed again (an
    /// idle leader does no placement work).
    pub(crate) placed_at: Option<(u64, Vec<Note>)>,
    /// Database failover counters and switchover timers.
    databases: DbMemory,
    /// What the database duties are waiting for as of the last tick (a failover that
    /// cannot be sure yet, a drain step that cannot happen), for `status`.
    db_waiting: Vec<Note>,
}

/// Applies `cmd` to the simulated state and proposes it; a command the state would
/// refuse (a bug in a duty) is reported instead of proposed.
fn simulate(sim: &mut ClusterState, out: &mut Output, cmd: Command) -> bool {
    match sim.apply(&Request::new(cmd.clone())) {
        Response::Applied { .. } => {
            out.proposals.push(cmd);
            true
        }
        other => {
            out.notes
                .push(Note::warn(format!("not proposing `{}`: it would be refused ({other:?})", Request::new(cmd))));
            false
        }
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Leadership lost: a later term starts from scratch.
    pub fn step_down(&mut self) {
        *self = Engine::default();
    }

    /// Since when this node has been leading, if it is.
    pub fn leader_since(&self) -> Option<Millis> {
        self.leader_since
    }

    /// What the database duties were waiting for at the last tick, in plain words (for
    /// `holdfast status`; the log has each once).
    pub fn database_waits(&self) -> &[Note] {
        &self.db_waiting
    }

    /// Why each learner is not a voter yet (for `holdfast nodes`).
    pub fn promotion_blockers(&self, input: Input<'_>) -> BTreeMap<NodeId, String> {
        let health =
            MemberHealth { alive_since: &self.alive_since, down_since: &self.down_since, lag: &input.observations.lag };
        input
            .observations
            .membership
            .learners
            .iter()
            .filter_map(|id| membership::promotion_blocker(input.state, *id, health, input.now).map(|why| (*id, why)))
            .collect()
    }

    /// One pass of every duty.
    pub fn tick(&mut self, input: Input<'_>) -> Output {
        let Input { now, me, state, observations: obs, own_ca, wall_ms } = input;
        let leader_since = *self.leader_since.get_or_insert(now);
        let mut out = Output::default();
        let mut sim = state.clone();
        let mut recurring: BTreeSet<Note> = BTreeSet::new();

        // 1. The CA, once (only the founder has its key).
        if sim.ca.is_none() {
            if let Some(ca) = own_ca {
                simulate(&mut sim, &mut out, Command::SetCa(ca.clone()));
            }
        }

        // 2. Node records as the nodes report them; `--label` flags once per start.
        for report in obs.nodes.values() {
            if let Some(rec) = records::merge(&sim, me, &report.record) {
                simulate(&mut sim, &mut out, Command::UpsertNode(rec));
            }
        }
        for report in obs.nodes.values() {
            if let Some((cmd, notes)) = records::start_labels(&sim, report) {
                if simulate(&mut sim, &mut out, cmd) {
                    out.notes.extend(notes);
                }
            }
        }

        // 3. Failure detection.
        let suspect_after = sim.settings.suspect_after_ms;
        let seen: BTreeMap<NodeId, Millis> = obs.nodes.iter().map(|(id, r)| (*id, r.seen_at)).collect();
        for (id, at) in &seen {
            if now.saturating_sub(*at) < suspect_after {
                self.alive_since.entry(*id).or_insert(*at);
            } else {
                self.alive_since.remove(id);
            }
        }
        self.alive_since.retain(|id, _| seen.contains_key(id));
        self.alive_since.entry(me).or_insert(now);
        for v in detector::verdicts(&sim, me, &seen, leader_since, now) {
            let name = sim.node_name(v.node);
            let cmd = Command::SetNodeFlags { id: v.node, cordoned: None, down: Some(v.down), draining: None };
            if !simulate(&mut sim, &mut out, cmd) {
                continue;
            }
            if v.down {
                out.notes.push(Note::warn(format!(
                    "node {name} is down (silent for {}ms); placing its replicas elsewhere",
                    v.silent_ms
                )));
                self.down_since.insert(v.node, now);
            } else {
                out.notes.push(Note::info(format!("node {name} is back")));
                self.down_since.remove(&v.node);
            }
        }
        self.down_since.retain(|id, _| sim.nodes.get(id).is_some_and(|n| n.down));
        let (suspect, changes) = detector::suspicion(&sim, me, &seen, leader_since, now, &self.suspect);
        self.suspect = suspect;
        for c in changes {
            let name = sim.node_name(c.node);
            out.observed.push(if c.suspect {
                Observed {
                    level: EventLevel::Warn,
                    kind: "node-suspect",
                    subject: format!("node {name}"),
                    message: format!("node {name} is suspect: no heartbeat for {}ms", c.silent_ms),
                }
            } else {
                Observed {
                    level: EventLevel::Info,
                    kind: "node-answers",
                    subject: format!("node {name}"),
                    message: format!("node {name} answers again before it was declared down"),
                }
            });
        }

        // 4. Re-place replicas that may not stay where they are (down, gone, relabelled).
        match &self.placed_at {
            Some((revision, notes)) if *revision == sim.revision => recurring.extend(notes.iter().cloned()),
            _ => {
                let mut notes = Vec::new();
                let mut settled = true;
                match plan_reschedule(&sim) {
                    Ok(r) => {
                        for e in &r.stuck {
                            notes.push(Note::warn(format!("a replica cannot move; it stays where it is: {e}")));
                        }
                        if let Some(desired) = r.desired {
                            settled = false;
                            let moves = describe_moves(&sim, &r.moves).join(", ");
                            let cmd = Command::SetDesired { expected_revision: sim.revision, desired };
                            if simulate(&mut sim, &mut out, cmd) {
                                out.notes.push(Note::info(format!("re-placed replicas: {moves}")));
                            }
                        }
                    }
                    Err(e) => notes.push(Note::warn(format!("cannot re-place replicas: {e}"))),
                }
                recurring.extend(notes.iter().cloned());
                // Only a revision the log has committed names one state (a simulated one
                // may never be reached if a proposal fails).
                let committed = sim.revision == state.revision;
                self.placed_at = (settled && committed).then_some((sim.revision, notes));
            }
        }

        // 5. Drains (and removals): one replica per service at a time, new instance
        //    ready before the old one stops.
        if !sim.desired.moves.is_empty() || sim.nodes.values().any(|n| n.draining) {
            let ready = |node: NodeId, service: &str, replica: u32, generation: u64| {
                obs.nodes.get(&node).is_some_and(|r| {
                    r.instances
                        .iter()
                        .any(|i| i.service == service && i.replica == replica && i.generation == generation && i.ready)
                })
            };
            let (next, events) = plan_drain_step(&sim, &ready);
            for e in &events {
                let stuck = matches!(e, holdfast_state::drain::DrainEvent::Stuck { .. });
                let text = format!("drain: {}", e.describe(&sim));
                recurring.insert(if stuck { Note::warn(text) } else { Note::info(text) });
            }
            if let Some(desired) = next {
                let cmd = Command::SetDesired { expected_revision: sim.revision, desired };
                simulate(&mut sim, &mut out, cmd);
            }
        }
        // 5b. Rolls: one replica at a time onto a service's new generation.
        if sim.desired.services.values().any(|r| r.rollout.is_some()) {
            let observed = |node: NodeId, service: &str, replica: u32| {
                obs.nodes.get(&node).and_then(|r| {
                    r.instances
                        .iter()
                        .filter(|i| i.service == service && i.replica == replica)
                        .max_by_key(|i| (i.generation, i.ready))
                        .map(|i| (i.generation, i.ready))
                })
            };
            let (cmds, notes) = crate::rollout::step(&sim, &observed);
            for cmd in cmds {
                simulate(&mut sim, &mut out, cmd);
            }
            recurring.extend(notes);
        }
        // 5c. Jobs: scheduled slots, placing runs, following attempts.
        if !sim.desired.jobs.is_empty() {
            let seen = |node: NodeId, service: &str, replica: u32| {
                obs.nodes.get(&node).and_then(|r| {
                    r.instances
                        .iter()
                        .filter(|i| i.service == service && i.replica == replica)
                        .max_by_key(|i| i.generation)
                        .map(|i| (i.generation, i.running, i.exited.clone()))
                })
            };
            // Attempts first (a run that just ended frees its job's next slot), then the
            // slots due, then placing the runs those started.
            let (cmds, notes) = crate::jobs::follow_runs(&sim, wall_ms, &seen);
            for cmd in cmds {
                simulate(&mut sim, &mut out, cmd);
            }
            recurring.extend(notes);
            let (cmds, notes) = crate::jobs::start_slots(&sim, wall_ms);
            let started = !cmds.is_empty();
            for cmd in cmds {
                simulate(&mut sim, &mut out, cmd);
            }
            out.notes.extend(notes);
            if started {
                let (cmds, notes) = crate::jobs::follow_runs(&sim, wall_ms, &seen);
                for cmd in cmds {
                    simulate(&mut sim, &mut out, cmd);
                }
                recurring.extend(notes);
            }
        }
        if let Some((cmd, note)) = removal::finish(&sim) {
            if simulate(&mut sim, &mut out, cmd) {
                out.notes.push(note);
            }
        }

        // 6. Database failovers and switchovers (after re-placement, so a promoted
        //    primary's old member is re-placed on a later tick, never in the same one).
        let db_input = DbInput { now, leader_since, state: &sim.clone(), observations: obs };
        self.db_waiting.clear();
        for d in database::decide(db_input, &mut self.databases) {
            match d {
                DbDecision::Propose(cmd) => {
                    simulate(&mut sim, &mut out, *cmd);
                }
                DbDecision::Note(n) => out.notes.push(n),
                DbDecision::Recurring(n) => {
                    self.db_waiting.push(n.clone());
                    recurring.insert(n);
                }
            }
        }

        // 7. Raft membership, against the state as it will be after the proposals.
        let health = MemberHealth { alive_since: &self.alive_since, down_since: &self.down_since, lag: &obs.lag };
        out.membership = membership::plan(&sim, me, &obs.membership, health, now);

        out.notes.extend(recurring.difference(&self.said).cloned());
        self.said = recurring;
        out
    }
}
