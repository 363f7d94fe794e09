//! Rolling restarts of a database's members for settings that take effect only after a
//! restart (`shared_buffers`, `max_connections`, ...): a redeploy rewrites every member's
//! configuration and reloads it, and members whose postgres then says a setting waits for
//! a restart report `pending_restart`. Decided by the leader, one database per tick, when
//! its failover, synchronous-list and drain duties found nothing to do:
//!
//! - **Only once every member loaded the new configuration** (reports the database's
//!   generation): before that, a standby that is "not pending" may just not have
//!   reloaded yet.
//! - **Standbys first, one at a time**: the lowest standby waiting for a restart is asked
//!   to restart (`DatabaseRecord::restart`) once every other standby streams; the next
//!   only once it answers again with nothing pending (and streams).
//! - **Then the primary, by a switchover** to a standby that already runs the new
//!   settings (no acknowledged commit lost; the old primary restarts as a standby and so
//!   takes the settings too). A database of one member restarts it in place: there is no
//!   one to hand writes to, so connections drop for the seconds it takes (said as a
//!   warning).
//!
//! Lowering a setting a standby must hold at least as high as its primary's is refused at
//! planning (`state::database::refused_decrease`): standbys first would stall them.
use holdfast_state::Command;

use crate::database::{DbDecision, DbMemory, View};
use crate::db_drain::{ask_switchover, planned_switchover_target, Target};
use crate::{MemberRole, Note};

fn set_restart(v: &View<'_>, member: Option<u32>) -> DbDecision {
    DbDecision::Propose(Box::new(Command::SetDatabaseRestart {
        database: v.name.to_string(),
        expected_term: v.rec.term,
        member,
    }))
}

/// One restart step for a database whose primary is healthy and which has no switchover,
/// synchronous-list change or drain under way.
pub(crate) fn step(v: &View<'_>, memory: &mut DbMemory, out: &mut Vec<DbDecision>) {
    let (name, rec) = (v.name, v.rec);
    let n = rec.members.len() as u32;
    let pending = |m: u32| v.report(m).is_some_and(|r| r.answering && r.pending_restart);

    // A restart under way ends once the member answers again with nothing pending (a
    // standby also streams).
    if let Some(m) = rec.restart {
        let done = m >= n
            || v.report(m).is_some_and(|r| {
                let running = if m == rec.primary {
                    r.role == MemberRole::Primary && r.term == rec.term
                } else {
                    r.role == MemberRole::Replica && r.streaming
                };
                r.answering && !r.pending_restart && running
            });
        if done {
            out.push(set_restart(v, None));
            if m < n {
                out.push(DbDecision::Note(Note::info(format!(
                    "{name}: member {m} on {} restarted with the new settings",
                    v.node_name(m)
                ))));
            }
        } else {
            out.push(DbDecision::Recurring(Note::info(format!(
                "{name}: member {m} on {} is restarting for settings that need a restart",
                v.node_name(m)
            ))));
        }
        return;
    }

    // A redeploy rewrites every member's configuration, and the members say what waits for
    // a restart only once they loaded it: until every answering member reports the
    // database's generation, "not pending" may just mean "not reloaded yet" (acting then
    // hands the primary to a standby that still needs a restart: two switchovers).
    if (0..n).any(pending) {
        let behind: Vec<u32> = (0..n)
            .filter(|m| {
                v.report(*m).is_some_and(|r| r.answering && r.config_generation.is_some_and(|g| g < rec.generation))
            })
            .collect();
        if let Some(&m) = behind.first() {
            out.push(DbDecision::Recurring(Note::info(format!(
                "{name}: restarts wait until member {m} on {} has loaded the new settings",
                v.node_name(m)
            ))));
            return;
        }
    }

    let standbys: Vec<u32> = (0..n).filter(|m| *m != rec.primary).collect();
    if let Some(&m) = standbys.iter().find(|m| pending(**m)) {
        if let Some(&behind) = standbys.iter().find(|o| **o != m && !v.streams(**o)) {
            out.push(DbDecision::Recurring(Note::info(format!(
                "{name}: member {m} on {} waits to restart until member {behind} on {} streams (one member restarts at a time)",
                v.node_name(m),
                v.node_name(behind)
            ))));
            return;
        }
        let k = rec.spec.sync as usize;
        let others = standbys.len() - 1;
        let mut text =
            format!("{name}: restarting member {m} on {} (settings changed that need a restart)", v.node_name(m));
        if others < k {
            text.push_str(&format!(
                "; commits wait while it restarts (sync {k}, {others} other standby(s) to answer for them)"
            ));
        }
        out.push(set_restart(v, Some(m)));
        out.push(DbDecision::Note(Note::info(text)));
        return;
    }

    if !pending(rec.primary) {
        return;
    }
    if n == 1 {
        out.push(set_restart(v, Some(rec.primary)));
        out.push(DbDecision::Note(Note::warn(format!(
            "{name}: restarting its only member, the primary on {} (settings changed that need a restart): connections drop and writes wait until it is back",
            v.node_name(rec.primary)
        ))));
        return;
    }
    // Standbys that restarted already run the new settings: hand writes to one of them.
    match planned_switchover_target(v, memory, &|m| !pending(m)) {
        Target::Member(t) => {
            let note = format!(
                "{name}: switching the primary over from {} to member {t} on {} (settings changed that need a restart; the old primary restarts as a standby)",
                v.node_name(rec.primary),
                v.node_name(t)
            );
            ask_switchover(v, memory, t, note, out);
        }
        Target::AskedRecently => {}
        Target::None => out.push(DbDecision::Recurring(Note::warn(format!(
            "{name}: the primary on {} waits for a restart (settings changed that need one): no standby streams close enough to take over",
            v.node_name(rec.primary)
        )))),
    }
}
