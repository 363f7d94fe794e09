//! Database failover and switchover, decided by the leader: from the replicated
//! [`DatabaseRecord`]s (members, term, primary, switchover) and what nodes report about
//! their members ([`MemberReport`]), which standby to promote and when; the node side
//! carries the decisions out (promote, reconfigure standbys, fence an old primary).
//!
//! **When.** The primary is healthy when its node is not down and was heard within
//! `db_lease_ms`, and its member reports `Primary` for the record's term and answers.
//! A failover is needed when (a) its node has not been heard for `db_lease_ms` (the
//! node itself holds every commit after `db_lease_ms - 500` without a heartbeat answer, so
//! the old primary acknowledges nothing once a new one may be promoted, and stops it a
//! lease later) — a leader that has led for
//! less than `db_lease_ms` waits, since it cannot know when the primary last heard from
//! a leader; or (b) its node is alive but the member has not answered (or reports
//! `Stopped`/`Failed`, or no report at all) for [`UNANSWERED_TICKS`] ticks in a row (the
//! engine counts; `Starting` does not count, a restart is not a failure).
//!
//! **Whom.** A member on a node that is up and heard within the lease, reporting
//! `Replica` and answering: the highest timeline, then the highest `lsn`, then the
//! highest `replay_lsn`, then the lowest member index. A replica still configured for an
//! older term is a candidate too (its data is what counts).
//!
//! **Safety.** With `sync: k` of `n` synchronous standbys (the old primary's
//! `DatabaseRecord::sync_standbys`), an acknowledged commit is on at least `k` of them,
//! so any `n - k + 1` include one holding it: the leader promotes only when that many of
//! them report as candidates, and picks the most advanced candidate (by timeline, then
//! the WAL it holds: received or replayed, whichever is further). `on_sync_loss: async`
//! changes only what the primary does while standbys are missing (the node side), not
//! this rule. Without `sync`, the most advanced reachable replica is promoted and the
//! note says how many bytes behind the old primary's last report it was.
//!
//! **Switchover** (`record.switchover`): `Requested` → the leader checks the target (or
//! picks the best replica) and moves it to `Fencing`; the primary's node stops taking
//! writes and reports `Fenced`/`Stopped` with its final `lsn` (where its shutdown
//! checkpoint record starts); once the target has *replayed past* it (`replay_lsn`
//! beyond it: the record itself is replayed, so the old primary holds no WAL the target
//! lacks and rejoins without a rewind), the target is promoted with the next term (which
//! ends the switchover). A target not caught up within [`SWITCHOVER_TIMEOUT_MS`] of fencing (as
//! this leader measures it) aborts: the switchover is cleared, and the primary takes
//! writes again in the same term.
//!
//! A member reporting `Primary` for an older term is a stale primary: warned about (its
//! node fences it; proxies only route to the record's primary).
use std::collections::BTreeMap;

use holdfast_placement::NodeId;
use holdfast_state::model::{DatabaseRecord, Switchover, SwitchoverPhase, SyncSet};
use holdfast_state::{ClusterState, Command, DbEngine};

use crate::{MemberReport, MemberRole, Millis, Note, Observations};

/// Ticks in a row a live primary's member may fail to answer before a failover.
pub const UNANSWERED_TICKS: u32 = 2;
/// How long a switchover waits for its target to catch up after fencing the primary.
pub const SWITCHOVER_TIMEOUT_MS: Millis = 10_000;

/// What the leader remembers between ticks about databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbMemory {
    /// Per database, ticks in a row its live primary did not answer.
    pub unanswered: BTreeMap<String, u32>,
    /// Per database, when this leader first saw its switchover fencing.
    pub fencing_since: BTreeMap<String, Millis>,
    /// Per (database, member) on the sync list: since when it has not been streaming.
    pub sync_unhealthy: BTreeMap<(String, u32), Millis>,
    /// Per database, when a drain or a restart last asked for a switchover (asked again only
    /// `db_drain::SWITCHOVER_RETRY_MS` later: an aborted one paused writes).
    pub planned_switchover_at: BTreeMap<String, Millis>,
}

/// How long a member on the sync list may stop streaming while its node is heard (a
/// postgres restart) before the list is changed without it.
pub const SYNC_DROP_AFTER_MS: Millis = 1_000;

/// One pass's input.
#[derive(Debug, Clone, Copy)]
pub struct DbInput<'a> {
    pub now: Millis,
    pub leader_since: Millis,
    pub state: &'a ClusterState,
    pub observations: &'a Observations,
}

/// What one database needs this tick.
#[derive(Debug, Clone, PartialEq)]
pub enum DbDecision {
    /// A command to propose (boxed: a `Command` is large, notes are small).
    Propose(Box<Command>),
    /// Said once, with the proposal it explains.
    Note(Note),
    /// Said while it stays true (deduplicated by the engine).
    Recurring(Note),
}

fn secs(ms: Millis) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// One database as the leader sees it this tick (shared with [`crate::db_drain`]).
pub(crate) struct View<'a> {
    pub(crate) input: DbInput<'a>,
    pub(crate) name: &'a str,
    pub(crate) rec: &'a DatabaseRecord,
}

impl View<'_> {
    pub(crate) fn lease(&self) -> Millis {
        self.input.state.settings.db_lease_ms
    }

    pub(crate) fn node_of(&self, member: u32) -> Option<NodeId> {
        self.rec.members.get(member as usize).copied()
    }

    /// The site of the node member `member` runs on.
    pub(crate) fn site(&self, member: u32) -> Option<&str> {
        self.node_of(member).and_then(|n| self.input.state.nodes.get(&n)).map(|n| n.site.as_str())
    }

    pub(crate) fn node_name(&self, member: u32) -> String {
        self.node_of(member).map_or_else(|| format!("member {member}"), |n| self.input.state.node_name(n))
    }

    /// How long since the node was heard (`None`: never, by this leader).
    pub(crate) fn silent(&self, node: NodeId) -> Option<Millis> {
        self.input.observations.nodes.get(&node).map(|r| self.input.now.saturating_sub(r.seen_at))
    }

    /// Up and heard within the lease.
    pub(crate) fn node_ok(&self, node: NodeId) -> bool {
        let up = self.input.state.nodes.get(&node).is_some_and(|n| !n.down);
        up && self.silent(node).is_some_and(|s| s < self.lease())
    }

    pub(crate) fn report(&self, member: u32) -> Option<&MemberReport> {
        let node = self.node_of(member)?;
        self.input
            .observations
            .nodes
            .get(&node)?
            .databases
            .iter()
            .find(|m| m.database == self.name && m.member == member)
    }

    /// A member that may be promoted: node ok, `Replica`, answering.
    pub(crate) fn candidate(&self, member: u32) -> Option<&MemberReport> {
        let node = self.node_of(member)?;
        if member == self.rec.primary || !self.node_ok(node) {
            return None;
        }
        self.report(member).filter(|r| r.role == MemberRole::Replica && r.answering)
    }

    /// A candidate that streams from the primary.
    pub(crate) fn streams(&self, member: u32) -> bool {
        self.candidate(member).is_some_and(|r| r.streaming)
    }

    /// Every candidate, best first.
    pub(crate) fn candidates(&self) -> Vec<&MemberReport> {
        let mut c: Vec<&MemberReport> = (0..self.rec.members.len() as u32).filter_map(|m| self.candidate(m)).collect();
        c.sort_by(|a, b| {
            // The WAL a standby holds is the further of received and replayed: a WAL
            // receiver that restarts reports its segment's start as received.
            let held = |r: &MemberReport| (r.timeline, r.lsn.max(r.replay_lsn), r.replay_lsn);
            held(b).cmp(&held(a)).then(a.member.cmp(&b.member))
        });
        c
    }

    fn promote(&self, member: u32) -> Command {
        Command::SetDatabasePrimary {
            database: self.name.to_string(),
            expected_term: self.rec.term,
            term: self.rec.term + 1,
            primary: member,
        }
    }

    pub(crate) fn set_switchover(&self, switchover: Option<Switchover>) -> Command {
        Command::SetDatabaseSwitchover { database: self.name.to_string(), expected_term: self.rec.term, switchover }
    }
}

/// Decides for every database; `memory` is updated.
pub fn decide(input: DbInput<'_>, memory: &mut DbMemory) -> Vec<DbDecision> {
    let mut out = Vec::new();
    for (name, rec) in &input.state.desired.databases {
        let view = View { input, name, rec };
        decide_one(&view, memory, &mut out);
    }
    let names = &input.state.desired.databases;
    memory.unanswered.retain(|k, _| names.contains_key(k));
    memory.fencing_since.retain(|k, _| names.get(k).is_some_and(|r| r.switchover.is_some()));
    memory.sync_unhealthy.retain(|(db, _), _| names.contains_key(db));
    memory.planned_switchover_at.retain(|db, _| names.contains_key(db));
    out
}

fn decide_one(v: &View<'_>, memory: &mut DbMemory, out: &mut Vec<DbDecision>) {
    let (name, rec) = (v.name, v.rec);
    for m in 0..rec.members.len() as u32 {
        if let Some(r) = v.report(m) {
            if r.role == MemberRole::Primary && r.term < rec.term {
                out.push(DbDecision::Recurring(Note::warn(format!(
                    "{name}: member {m} on {} still reports primary for term {} (current term {}, primary member {}); its node must fence it",
                    v.node_name(m),
                    r.term,
                    rec.term,
                    rec.primary
                ))));
            }
        }
    }
    let Some(primary_node) = v.node_of(rec.primary) else { return };
    let primary_name = v.node_name(rec.primary);
    let primary_report = v.report(rec.primary);

    // A switchover that is fencing a live primary.
    if let Some(sw) = &rec.switchover {
        if sw.phase == SwitchoverPhase::Fencing && v.node_ok(primary_node) {
            memory.unanswered.remove(name);
            fencing(v, sw, memory, out);
            return;
        }
    }

    let healthy = v.node_ok(primary_node)
        && primary_report.is_some_and(|r| r.role == MemberRole::Primary && r.term == rec.term && r.answering);
    if healthy {
        memory.unanswered.remove(name);
        match &rec.switchover {
            Some(sw) if sw.phase == SwitchoverPhase::Requested => requested(v, sw, memory, out),
            Some(_) => {}
            None => {
                let before = out.len();
                sync_set(v, memory, out);
                let changing = out[before..].iter().any(|d| matches!(d, DbDecision::Propose(_)));
                if !changing {
                    crate::db_drain::step(v, memory, out);
                }
                let changing = out[before..].iter().any(|d| matches!(d, DbDecision::Propose(_)));
                let draining = (0..rec.members.len() as u32)
                    .any(|m| v.node_of(m).is_some_and(|n| crate::db_drain::draining(v, n)));
                if !changing && !draining {
                    crate::db_restart::step(v, memory, out);
                }
            }
        }
        return;
    }

    let lease = v.lease();
    let silent = v.silent(primary_node);
    let node_lost = silent.is_none_or(|s| s >= lease) || v.input.state.nodes.get(&primary_node).is_none_or(|n| n.down);
    let reason = if node_lost {
        let led = v.input.now.saturating_sub(v.input.leader_since);
        if led < lease {
            out.push(DbDecision::Recurring(Note::info(format!(
                "{name}: primary {primary_name} silent; waiting: leader for only {led} ms (lease {lease} ms)"
            ))));
            return;
        }
        match silent {
            Some(s) => {
                (format!("primary {primary_name} silent for {}", secs(s)), format!("primary {primary_name} silent"))
            }
            None => {
                let r = format!("primary {primary_name} not heard since this leader took over");
                (r.clone(), r)
            }
        }
    } else {
        let failing = primary_report.is_none_or(|r| {
            !r.answering && r.role != MemberRole::Starting || matches!(r.role, MemberRole::Stopped | MemberRole::Failed)
        });
        if !failing {
            // Answering but not (yet) primary for this term: its node is reconfiguring.
            memory.unanswered.remove(name);
            return;
        }
        let count = memory.unanswered.entry(name.to_string()).or_insert(0);
        *count += 1;
        if *count < UNANSWERED_TICKS {
            return;
        }
        let r = format!("{} of primary {primary_name} not answering", rec.spec.engine.product());
        (r.clone(), r)
    };
    // `reason` says how long (for the one-off promotion note); `stable` is the same words
    // without the time, for the recurring notes (said again only when they change).
    let (reason, stable) = reason;
    if rec.members.len() <= 1 {
        // One member: nothing to fail over to; its node's runner reports what is wrong.
        return;
    }

    let candidates = v.candidates();
    // The standbys the old primary's commits waited for: `n - k + 1` of those `n`
    // include one with every acknowledged commit, and the most advanced candidate is at
    // least as far.
    let set = rec.sync_standbys(rec.primary);
    let standbys = set.len() as u32;
    let sync = rec.spec.sync.min(standbys);
    if sync > 0 {
        let need = standbys - sync + 1;
        let heard = candidates.iter().filter(|c| set.contains(&c.member)).count() as u32;
        if heard < need {
            out.push(DbDecision::Recurring(Note::warn(format!(
                "{name}: {stable}; heard from {heard} of {standbys} synchronous standbys, need {need} to be sure no acknowledged commit is lost; waiting"
            ))));
            return;
        }
    }
    let Some(best) = candidates.first() else {
        out.push(DbDecision::Recurring(Note::warn(format!(
            "{name}: {stable}; no standby can be promoted (none is up, heard within the lease and answering as a replica); waiting"
        ))));
        return;
    };
    let mut text = format!(
        "{name}: promoting member {} on {} (term {} → {}): {reason}",
        best.member,
        v.node_name(best.member),
        rec.term,
        rec.term + 1
    );
    if sync == 0 {
        if let Some(old) = primary_report.filter(|r| r.lsn > best.lsn) {
            text.push_str(&format!(
                "; may lose up to {} bytes of acknowledged writes (asynchronous replication)",
                old.lsn - best.lsn
            ));
        }
    }
    memory.unanswered.remove(name);
    out.push(DbDecision::Propose(Box::new(v.promote(best.member))));
    out.push(DbDecision::Note(Note::info(text)));
}

/// A requested switchover with a healthy primary: check the target, start fencing.
fn requested(v: &View<'_>, sw: &Switchover, memory: &mut DbMemory, out: &mut Vec<DbDecision>) {
    let name = v.name;
    let target = match sw.to {
        Some(t) => v.candidate(t).map(|r| r.member).ok_or(t),
        None => v.candidates().first().map(|r| r.member).ok_or(u32::MAX),
    };
    match target {
        Ok(t) => {
            out.push(DbDecision::Propose(Box::new(v.set_switchover(Some(Switchover {
                to: Some(t),
                requested_term: sw.requested_term,
                phase: SwitchoverPhase::Fencing,
            })))));
            out.push(DbDecision::Note(Note::info(format!(
                "{name}: switchover to member {t} on {}: fencing the primary on {}",
                v.node_name(t),
                v.node_name(v.rec.primary)
            ))));
            memory.fencing_since.insert(name.to_string(), v.input.now);
        }
        Err(t) => {
            let which = if t == u32::MAX { "no member".to_string() } else { format!("member {t}") };
            out.push(DbDecision::Propose(Box::new(v.set_switchover(None))));
            out.push(DbDecision::Note(Note::warn(format!(
                "{name}: switchover refused: {which} is a healthy replica (up, heard within the lease, answering as a replica)"
            ))));
        }
    }
}

/// A fencing switchover: promote the target once it caught up, abort after the timeout.
fn fencing(v: &View<'_>, sw: &Switchover, memory: &mut DbMemory, out: &mut Vec<DbDecision>) {
    let name = v.name;
    let now = v.input.now;
    let since = *memory.fencing_since.entry(name.to_string()).or_insert(now);
    let Some(target) = sw.to else {
        out.push(DbDecision::Propose(Box::new(v.set_switchover(None))));
        out.push(DbDecision::Note(Note::warn(format!("{name}: switchover without a target; cleared"))));
        return;
    };
    let stopped_at = v
        .report(v.rec.primary)
        .filter(|r| matches!(r.role, MemberRole::Fenced | MemberRole::Stopped) && r.term == v.rec.term)
        // Its node reports where its WAL ends once it shut down cleanly (0: not known,
        // e.g. it crashed); no target can be known to hold everything before that.
        .map(|r| r.lsn)
        .filter(|lsn| *lsn > 0);
    let target_report = v.candidate(target);
    if let (Some(final_lsn), Some(t)) = (stopped_at, target_report) {
        // PostgreSQL's final position is where its shutdown checkpoint record starts: the
        // target must have replayed that record too. A fenced Redis master reports the
        // offset it stopped taking writes at: the target must have processed it.
        let caught_up = match v.rec.spec.engine {
            DbEngine::Postgres => t.replay_lsn > final_lsn,
            DbEngine::Redis => t.replay_lsn >= final_lsn,
        };
        if caught_up {
            memory.fencing_since.remove(name);
            out.push(DbDecision::Propose(Box::new(v.promote(target))));
            out.push(DbDecision::Note(Note::info(format!(
                "{name}: switchover: promoting member {target} on {} (term {} → {}): caught up with the fenced primary at lsn {final_lsn}",
                v.node_name(target),
                v.rec.term,
                v.rec.term + 1
            ))));
            return;
        }
    }
    if now.saturating_sub(since) >= SWITCHOVER_TIMEOUT_MS {
        memory.fencing_since.remove(name);
        let at = target_report.map_or("not reporting as a replica".to_string(), |t| format!("at lsn {}", t.lsn));
        let stop = stopped_at.map_or("has not reported stopping".to_string(), |l| format!("stopped at lsn {l}"));
        out.push(DbDecision::Propose(Box::new(v.set_switchover(None))));
        out.push(DbDecision::Note(Note::warn(format!(
            "{name}: switchover to member {target} aborted: it did not catch up within {} of fencing ({at}; the primary {stop}); the primary takes writes again",
            secs(SWITCHOVER_TIMEOUT_MS)
        ))));
    }
}

/// A healthy primary's synchronous standbys (`sync: k`, members in several sites): the
/// standbys streaming in other sites than the primary's and at most `k - 1` in its own,
/// so every acknowledged commit is in another site; with no standby streaming in
/// another site, the ones streaming in its own (said as a warning). With one site, every
/// other member (`None`). A member of the list whose node is suspect is dropped at once,
/// one that stops streaming after [`SYNC_DROP_AFTER_MS`], when enough others stream: the
/// list never shrinks below `k`.
///
/// Dropping goes in two steps (`SyncSet::leaving`): the new list is recorded with the
/// dropped members still counted by a failover, then — once the primary reports running
/// with the new list and `k` of its members hold the primary's WAL as of that report —
/// the dropped members are forgotten. Adding members is one step. A list that changes
/// again before its drop is confirmed keeps counting every member still leaving.
fn sync_set(v: &View<'_>, memory: &mut DbMemory, out: &mut Vec<DbDecision>) {
    let (name, rec) = (v.name, v.rec);
    let k = rec.spec.sync as usize;
    let current = rec.sync_names(rec.primary);
    let propose = |set: Option<SyncSet>| {
        DbDecision::Propose(Box::new(Command::SetDatabaseSyncSet {
            database: name.to_string(),
            expected_term: rec.term,
            sync_set: set,
        }))
    };
    let everyone = || -> Vec<u32> { (0..rec.members.len() as u32).filter(|m| *m != rec.primary).collect() };
    // Redis's `WAIT` counts any replica: its list is always every other member.
    if k == 0 || rec.spec.engine == DbEngine::Redis {
        if rec.sync_set.is_some() {
            out.push(propose(None));
        }
        return;
    }
    // A drop under way: confirm it; else the list may still change (a member of the new
    // list may die before it is confirmed), carrying the members still leaving.
    let mut carried: Vec<u32> = Vec::new();
    if let Some(set) = rec.sync_set.as_ref().filter(|s| !s.leaving.is_empty()) {
        let confirmed = v.report(rec.primary).is_some_and(|primary| {
            let applied = primary.sync_applied.as_ref().is_some_and(|a| *a == current);
            let holding = current
                .iter()
                .filter(|m| v.report(**m).is_some_and(|r| r.role == MemberRole::Replica && r.lsn >= primary.lsn))
                .count();
            applied && holding >= k
        });
        if confirmed {
            let next = (current != everyone()).then(|| SyncSet { names: set.names.clone(), leaving: Vec::new() });
            out.push(propose(next));
            out.push(DbDecision::Note(Note::info(format!(
                "{name}: synchronous standbys: {} (no longer {})",
                list(v, &current),
                list(v, &set.leaving)
            ))));
            return;
        }
        carried = rec.sync_standbys(rec.primary).into_iter().filter(|m| !current.contains(m)).collect();
    }
    let primary_site = v.site(rec.primary);
    let sites: std::collections::BTreeSet<Option<&str>> = (0..rec.members.len() as u32).map(|m| v.site(m)).collect();
    let now = v.input.now;
    let mut streaming = Vec::new();
    let mut in_grace = false;
    let suspect_after = v.input.state.settings.suspect_after_ms;
    for m in everyone() {
        // A member whose node is suspect is dropped at once (a commit waits for it
        // meanwhile); one heard but not streaming keeps its place for a moment (a
        // postgres restart).
        let heard = v.node_of(m).and_then(|n| v.silent(n)).is_some_and(|s| s < suspect_after);
        let up = heard && v.streams(m);
        let key = (name.to_string(), m);
        if up {
            memory.sync_unhealthy.remove(&key);
            streaming.push(m);
        } else {
            let since = *memory.sync_unhealthy.entry(key).or_insert(now);
            if heard && current.contains(&m) && now.saturating_sub(since) < SYNC_DROP_AFTER_MS {
                in_grace = true;
            }
        }
    }
    if in_grace {
        // Decide once it streams again or its moment is over.
        return;
    }
    // Members on draining nodes leave the list first when enough others stream (their
    // drain waits for that).
    let staying: Vec<u32> =
        streaming.iter().copied().filter(|m| v.node_of(*m).is_none_or(|n| !crate::db_drain::draining(v, n))).collect();
    if staying.len() >= k {
        streaming = staying;
    }
    let want = if sites.len() <= 1 {
        everyone()
    } else if streaming.len() < k {
        // Too few stream to choose: the list stays (writes wait, or run async, as the
        // spec says), and a failover keeps counting it.
        return;
    } else {
        let (remote, local): (Vec<u32>, Vec<u32>) = streaming.iter().partition(|m| v.site(**m) != primary_site);
        if remote.is_empty() {
            out.push(DbDecision::Recurring(Note::warn(format!(
                "{name}: no standby in another site than the primary's ({}) streams: acknowledged commits are in that site only",
                primary_site.unwrap_or("?")
            ))));
            local
        } else {
            let mut want: Vec<u32> = remote.into_iter().chain(local.into_iter().take(k - 1)).collect();
            want.sort_unstable();
            want
        }
    };
    if want == current {
        return;
    }
    let leaving: Vec<u32> = current
        .iter()
        .chain(&carried)
        .copied()
        .filter(|m| !want.contains(m))
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    let next = if leaving.is_empty() && want == everyone() {
        None
    } else {
        Some(SyncSet { names: want.clone(), leaving: leaving.clone() })
    };
    out.push(propose(next));
    let mut text = format!("{name}: synchronous standbys: {}", list(v, &want));
    if !leaving.is_empty() {
        text.push_str(&format!(" (dropping {} once the primary runs without it)", list(v, &leaving)));
    }
    out.push(DbDecision::Note(Note::info(text)));
}

/// "member 1 on n2 (site a), member 2 on n3 (site b)".
fn list(v: &View<'_>, members: &[u32]) -> String {
    let one = |m: &u32| format!("member {m} on {} (site {})", v.node_name(*m), v.site(*m).unwrap_or("?"));
    if members.is_empty() {
        return "none".into();
    }
    members.iter().map(one).collect::<Vec<_>>().join(", ")
}
