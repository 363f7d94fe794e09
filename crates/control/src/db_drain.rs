//! Draining a node that holds database members (`holdfast drain`, `holdfast node rm`),
//! decided by the leader for one database per tick, after its failover and
//! synchronous-list duties found nothing to do.
//!
//! - **The primary leaves first by a switchover**, never by a failover: the leader asks
//!   for a switchover to the most advanced standby that streams on a node that is not
//!   draining and is within `SWITCHOVER_MAX_BEHIND` of the primary (the switchover
//!   itself fences, waits for the target to catch up, promotes; zero acknowledged commits
//!   lost), and asks again only `SWITCHOVER_RETRY_MS` later (an aborted switchover held
//!   writes for its timeout). With no such standby the drain waits and says why.
//! - **A standby moves once the others can carry the commits without it**: every other
//!   standby not on a draining node streams (so moves go one at a time: the member moved
//!   last must stream before the next leaves), at least `sync` of them do (a commit never
//!   waits for the copy being made), and, with a site-aware synchronous list, the member is
//!   no longer counted on it (the list drops members on draining nodes first). Then
//!   [`Command::MoveDatabaseMember`] puts it on the node [`move_member`] picks: that node
//!   clones it from the primary, the draining node stops its copy.
//!
//! A member that cannot leave (no node of the database's architecture and PostgreSQL
//! major has room, or `sync` equals the number of standbys so moving one would block
//! commits while it is copied) is said as a warning naming the way out; the drain and a
//! `node rm` wait.
use holdfast_placement::NodeId;
use holdfast_state::database::move_member;
use holdfast_state::model::{Switchover, SwitchoverPhase};
use holdfast_state::Command;

use crate::database::{DbDecision, DbMemory, View};
use crate::{MemberReport, Millis, Note};

/// How long after a drain asked for a switchover it may ask again (one that could not
/// complete was aborted after its timeout, with writes paused meanwhile).
pub const SWITCHOVER_RETRY_MS: Millis = 30_000;
/// How far (bytes of WAL) behind the primary's last report a standby may be to be the
/// target of a drain's switchover.
pub const SWITCHOVER_MAX_BEHIND: u64 = 16 << 20;

/// True when `node` is draining (and not down: a down node's members are re-placed or
/// failed over by other duties).
pub(crate) fn draining(v: &View<'_>, node: NodeId) -> bool {
    v.input.state.nodes.get(&node).is_some_and(|n| n.draining && !n.down)
}

fn member_draining(v: &View<'_>, member: u32) -> bool {
    v.node_of(member).is_some_and(|n| draining(v, n))
}

/// One drain step for a database whose primary is healthy and which has no switchover or
/// synchronous-list change under way.
pub(crate) fn step(v: &View<'_>, memory: &mut DbMemory, out: &mut Vec<DbDecision>) {
    let (name, rec) = (v.name, v.rec);
    let leaving: Vec<u32> = (0..rec.members.len() as u32).filter(|m| member_draining(v, *m)).collect();
    let Some(&first) = leaving.first() else { return };

    if leaving.contains(&rec.primary) && rec.members.len() == 1 {
        out.push(DbDecision::Recurring(Note::warn(format!(
            "{name}: drain: its only member, the primary on {}, cannot leave: there is no standby to hand writes to; deploy it with `instances: 2` (a standby is cloned on another node, then the drain switches over to it)",
            v.node_name(rec.primary)
        ))));
        return;
    }
    if leaving.contains(&rec.primary) {
        let target = planned_switchover_target(v, memory, &|m| !member_draining(v, m));
        match target {
            Target::Member(t) => ask_switchover(
                v,
                memory,
                t,
                format!("{name}: drain: switching the primary over from {} to member {t} on {}", v.node_name(rec.primary), v.node_name(t)),
                out,
            ),
            Target::AskedRecently => {}
            Target::None => out.push(DbDecision::Recurring(Note::warn(format!(
                "{name}: drain: the primary on {} cannot leave yet: no standby streams on a node that is not draining within {} MiB of it",
                v.node_name(rec.primary),
                SWITCHOVER_MAX_BEHIND >> 20
            )))),
        }
        return;
    }

    let staying: Vec<u32> =
        (0..rec.members.len() as u32).filter(|m| *m != rec.primary && !member_draining(v, *m)).collect();
    if let Some(&behind) = staying.iter().find(|m| !v.streams(**m)) {
        out.push(DbDecision::Recurring(Note::info(format!(
            "{name}: drain: member {first} on {} waits for member {behind} on {} to stream (one member moves at a time)",
            v.node_name(first),
            v.node_name(behind)
        ))));
        return;
    }
    let k = rec.spec.sync as usize;
    if staying.len() < k {
        out.push(DbDecision::Recurring(Note::warn(format!(
            "{name}: drain: member {first} on {} cannot leave: with sync {k}, commits would wait while its copy is made elsewhere ({} other standby(s) stream); raise instances by one for the drain, or lower sync",
            v.node_name(first),
            staying.len()
        ))));
        return;
    }
    if rec.sync_set.is_some() && rec.sync_standbys(rec.primary).contains(&first) {
        out.push(DbDecision::Recurring(Note::info(format!(
            "{name}: drain: member {first} on {} waits to leave the synchronous standbys",
            v.node_name(first)
        ))));
        return;
    }
    let Some(from) = v.node_of(first) else { return };
    let next = match move_member(v.input.state, name, first) {
        Ok(next) => next,
        Err(e) => {
            out.push(DbDecision::Recurring(Note::warn(format!(
                "{name}: drain: member {first} on {} cannot leave: {e}",
                v.node_name(first)
            ))));
            return;
        }
    };
    let Some(to) = next.members.get(first as usize).copied() else { return };
    out.push(DbDecision::Propose(Box::new(Command::MoveDatabaseMember {
        database: name.to_string(),
        expected_term: rec.term,
        member: first,
        from,
        to,
    })));
    out.push(DbDecision::Note(Note::info(format!(
        "{name}: drain: member {first} moves from {} to {} (cloned there from the primary; the copy on {} stops)",
        v.node_name(first),
        v.input.state.node_name(to),
        v.node_name(first)
    ))));
}

/// Whom a planned switchover (a drain, a restart) may go to.
pub(crate) enum Target {
    Member(u32),
    /// One was asked for less than [`SWITCHOVER_RETRY_MS`] ago.
    AskedRecently,
    /// No standby qualifies.
    None,
}

/// The most advanced standby that streams, is `eligible` and is within
/// [`SWITCHOVER_MAX_BEHIND`] of the primary's last report (one far behind could not catch
/// up within the switchover's timeout, with the primary fenced meanwhile).
pub(crate) fn planned_switchover_target(v: &View<'_>, memory: &DbMemory, eligible: &dyn Fn(u32) -> bool) -> Target {
    let now = v.input.now;
    if memory.planned_switchover_at.get(v.name).is_some_and(|at| now.saturating_sub(*at) < SWITCHOVER_RETRY_MS) {
        return Target::AskedRecently;
    }
    let primary_lsn = v.report(v.rec.primary).map_or(0, |r| r.lsn);
    let close = |r: &&MemberReport| r.lsn.max(r.replay_lsn).saturating_add(SWITCHOVER_MAX_BEHIND) >= primary_lsn;
    v.candidates()
        .into_iter()
        .filter(|r| r.streaming && eligible(r.member))
        .find(close)
        .map_or(Target::None, |r| Target::Member(r.member))
}

/// Asks for a switchover to `to` (remembered, so it is not asked again at once).
pub(crate) fn ask_switchover(v: &View<'_>, memory: &mut DbMemory, to: u32, note: String, out: &mut Vec<DbDecision>) {
    memory.planned_switchover_at.insert(v.name.to_string(), v.input.now);
    out.push(DbDecision::Propose(Box::new(v.set_switchover(Some(Switchover {
        to: Some(to),
        requested_term: v.rec.term,
        phase: SwitchoverPhase::Requested,
    })))));
    out.push(DbDecision::Note(Note::info(note)));
}
